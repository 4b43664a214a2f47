import sys

try:
    from clusterwatch.cli import main
except KeyboardInterrupt:  # Ctrl-C while the program is still loading: a line, not a traceback
    print("clusterwatch: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
