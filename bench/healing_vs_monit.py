"""Healing side by side with Monit: the same kind of service killed with -9, each watcher restarting it.

clusterwatch: `interval: 1s`, `fall: 2`, an HTTP check, `restart: {command: ...}`.
Monit: `set daemon 1`, `check process ... if failed port ... for 2 cycles then restart`.
Measured from the kill: time until the watcher noticed, and until the port serves again.
Goal (issue 3): detected within 2.5 s, serving again within the service's start time + 1 s, never slower than Monit.
Kills are spaced further apart than the flapping window (21 observations at 1 s), with a random
phase, so every trial measures a heal, not the flapping guard holding restarts back (a service killed
every 5-6 s is flapping, and clusterwatch rightly waits for it to settle: that was the 6.8 s maximum).
Run: `.venv/bin/python bench/healing_vs_monit.py [--trials 10]` (needs Debian's `monit`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "real" / "restart_helper.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        if s.connect_ex(("127.0.0.1", port)) != 0:
            return False
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            return s.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False


def wait(predicate, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def start_time(port: int, tmp: Path) -> float:
    """The service's own start time: from exec to serving."""
    pidfile = tmp / "probe.pid"
    started = time.monotonic()
    subprocess.run([sys.executable, str(HELPER), "--serve", str(port), "--pidfile", str(pidfile)], check=True)
    took = wait(lambda: serving(port)) - started
    os.kill(read_pid(pidfile), signal.SIGKILL)
    return took


SPACING = 25.0  # seconds between kills: longer than the flapping window (21 observations at 1 s)


def trial(port: int, pidfile: Path, noticed) -> tuple[float, float]:
    wait(lambda: serving(port))
    time.sleep(SPACING + random.uniform(0, 1.0))  # settled, and at a random phase of both watchers' cycles
    killed_wall, killed = time.time(), time.monotonic()
    os.kill(read_pid(pidfile), signal.SIGKILL)
    wait(lambda: not serving(port), 5)
    back = wait(lambda: serving(port), 30) - killed
    result = noticed(killed_wall), back
    print(f"    trial: detected {result[0]:.2f} s, serving again {result[1]:.2f} s", flush=True)
    return result


def run_clusterwatch(tmp: Path, trials: int) -> list[tuple[float, float]]:
    port, pidfile, db = free_port(), tmp / "cw-svc.pid", tmp / "cw.db"
    serve = [sys.executable, str(HELPER), "--serve", str(port), "--pidfile", str(pidfile)]
    subprocess.run(serve, check=True)
    config = {
        "interval": "1s",
        "fall": 2,
        "rise": 1,
        "store": {"path": str(db)},
        "checks": [
            {
                "name": "svc",
                "kind": "http",
                "url": f"http://127.0.0.1:{port}/",
                "restart": {"command": serve, "max_attempts": 100, "verify_timeout": "10s"},
            }
        ],
    }
    (tmp / "cw.yaml").write_text(yaml.safe_dump(config))
    daemon_log = open(tmp / "cw.log", "wb")  # noqa: SIM115
    daemon = subprocess.Popen(
        [sys.executable, "-m", "clusterwatch", "run", "-c", str(tmp / "cw.yaml")], stderr=daemon_log
    )

    def noticed(since: float) -> float:
        def found() -> float | None:
            conn = sqlite3.connect(db)
            try:
                row = conn.execute(
                    "SELECT MIN(ts) FROM events WHERE kind = 'state_change' AND new = 'critical' AND ts > ?", (since,)
                ).fetchone()
            finally:
                conn.close()
            return row[0]

        wait(lambda: found() is not None, 10)
        return found() - since

    try:
        return [trial(port, pidfile, noticed) for _ in range(trials)]
    except TimeoutError:
        print((tmp / "cw.log").read_text()[-3000:])
        raise
    finally:
        daemon.terminate()
        daemon.wait(10)
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(read_pid(pidfile), signal.SIGKILL)


def run_monit(tmp: Path, trials: int) -> list[tuple[float, float]]:
    port, pidfile = free_port(), tmp / "monit-svc.pid"
    serve = f"{sys.executable} {HELPER} --serve {port} --pidfile {pidfile}"
    subprocess.run(serve.split(), check=True)
    log = tmp / "monit.log"
    control = tmp / "monitrc"
    control.write_text(f"""\
set daemon 1
set logfile {log}
set pidfile {tmp / "monit.pid"}
set statefile {tmp / "monit.state"}
set idfile {tmp / "monit.id"}
check process svc with pidfile {pidfile}
  start program = "{serve}" with timeout 10 seconds
  stop program = "/bin/kill -9 $MONIT_PROCESS_PID"
  if failed host 127.0.0.1 port {port} protocol http for 2 cycles then restart
""")
    control.chmod(0o600)
    monit = subprocess.Popen(["monit", "-c", str(control), "-I"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def noticed(since: float) -> float:
        def found() -> float | None:
            for line in log.read_text().splitlines() if log.exists() else []:
                match = re.match(
                    r"\[(.+?)\] error\s+: '?svc'? (process is not running|failed protocol test|"
                    r"connection failed)",
                    line,
                )
                if match:
                    stamp = (
                        datetime.strptime(
                            match.group(1).rsplit(" ", 1)[0] if match.group(1).count(":") > 2 else match.group(1),
                            "%Y-%m-%dT%H:%M:%S%z",
                        ).timestamp()
                        if "T" in match.group(1)
                        else _syslog_time(match.group(1))
                    )
                    if stamp >= since - 1:
                        return stamp - since
            return None

        wait(lambda: found() is not None, 10)
        return max(0.0, found())

    try:
        time.sleep(2)
        return [trial(port, pidfile, noticed) for _ in range(trials)]
    finally:
        monit.terminate()
        monit.wait(10)
        if pidfile.exists():
            os.kill(read_pid(pidfile), signal.SIGKILL)


def _syslog_time(text: str) -> float:
    for fmt in ("%b %d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            parsed = datetime.strptime(text.strip(), fmt)
            if fmt.startswith("%b"):
                parsed = parsed.replace(year=datetime.now().year)
            return parsed.timestamp()
        except ValueError:
            continue
    raise ValueError(text)


def summary(name: str, results: list[tuple[float, float]], start: float) -> tuple[float, float, float]:
    detect = [r[0] for r in results]
    back = [r[1] for r in results]
    print(
        f"  {name:12s} detected: median {statistics.median(detect):.2f} s, max {max(detect):.2f} s | "
        f"serving again: median {statistics.median(back):.2f} s, max {max(back):.2f} s "
        f"(start time + {statistics.median(back) - start:.2f} s)"
    )
    return statistics.median(detect), statistics.median(back), max(back)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("monit"):
        raise SystemExit("monit is not installed (apt-get install monit)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        start = statistics.median(start_time(free_port(), tmp) for _ in range(3))
        print(f"healing a killed HTTP service ({args.trials} trials each); the service's own start time: {start:.2f} s")
        cw = summary("clusterwatch", run_clusterwatch(tmp, args.trials), start)
        mo = summary("monit", run_monit(tmp, args.trials), start)
    print("  (Monit logs in whole seconds: its detection times are rounded accordingly)")
    ok = cw[0] <= 2.5 and cw[2] <= start + 1 and cw[1] <= mo[1]
    print(
        f"  goal: detected <= 2.5 s, serving again (max) <= start + 1 s, not slower than Monit -> "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
