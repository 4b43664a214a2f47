"""`clusterwatch check` over 1,000 HTTP targets on loopback: wall time and peak memory.

Goal (issue 2): under 3 s and 150 MB on a 2-core machine. Run: `.venv/bin/python bench/check_http_targets.py`
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _targets import targets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--ports", type=int, default=100, help="listening ports the targets spread over")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with targets(args.ports) as ports:
        checks = [
            {"name": f"t{i}", "kind": "http", "url": f"http://127.0.0.1:{ports[i % len(ports)]}/health?i={i}"}
            for i in range(args.targets)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "clusterwatch.yaml"
            config.write_text(yaml.safe_dump({"checks": checks}))
            walls, rss = [], []
            for _ in range(args.runs):
                before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                started = time.perf_counter()
                result = subprocess.run(
                    [sys.executable, "-m", "clusterwatch", "check", "--json", "-c", str(config)],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                walls.append(time.perf_counter() - started)
                # ru_maxrss of children is the max over all waited children: the server is not waited yet.
                rss.append(max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)
                if result.returncode != 0:
                    print(result.stdout[-2000:], result.stderr[-2000:])
                    raise SystemExit(f"check exited {result.returncode}")
    print(
        f"check over {args.targets} HTTP targets on {args.ports} loopback ports, {args.runs} runs, "
        f"{os.cpu_count()} cpus"
    )
    print(f"  wall time: median {statistics.median(walls):.2f} s, min {min(walls):.2f} s, max {max(walls):.2f} s")
    print(f"  peak RSS of the check process: {max(rss):.0f} MB")
    print(f"  goal: < 3 s and < 150 MB -> {'met' if max(walls) < 3 and max(rss) < 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
