from clusterwatch.cli import main

raise SystemExit(main())
