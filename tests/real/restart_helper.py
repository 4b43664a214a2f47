"""What a restart action runs in the tests: counts its calls, and can (re)start a small HTTP service.

`--serve PORT` starts `python -m http.server PORT` detached (its PID in PIDFILE), so the
"restarted" service really serves again, and the test stops it by that PID.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", help="append one line per call to this file")
    parser.add_argument("--serve", type=int, help="start an HTTP server on this loopback port")
    parser.add_argument("--pidfile")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the service takes to start")
    args = parser.parse_args()
    if args.count:
        with open(args.count, "a") as f:
            f.write(f"{time.time()}\n")
    if args.serve:
        time.sleep(args.delay)
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(args.serve), "--bind", "127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
        if args.pidfile:
            with open(args.pidfile, "w") as f:
                f.write(f"{proc.pid}\n")
        os._exit(0)


if __name__ == "__main__":
    main()
