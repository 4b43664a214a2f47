"""The web side at 10,000 checks with a day of history: overview page, /api/v1/status, /metrics.

The monitor runs for real (10,000 HTTP checks every 10 s against loopback targets) on a store
pre-filled with a day of hourly rollups and recent observations, so pages are measured under load.
Goal (issue 5): overview p99 under 300 ms, /metrics under 1 s.
Run: `.venv/bin/python bench/web_10k.py [--checks 10000 --requests 40]`
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _targets import free_ports, targets

from clusterwatch.store.schema import migrate


def prefill(db: Path, names: list[str]) -> None:
    """A day of hourly rollups and a few recent observations for every check."""
    conn = sqlite3.connect(db)
    migrate(conn)
    now = time.time()
    hour = int(now // 3600 * 3600)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO rollup_hour VALUES (?,?,?,?,?,?,?)",
        (
            (n, hour - h * 3600, 360, 360 if (i + h) % 97 else 350, 1.2, 3.5, 9.0)
            for i, n in enumerate(names)
            for h in range(24)
        ),
    )
    conn.executemany(
        "INSERT INTO observations (ts, entity, check_name, kind, status, message, latency_ms) VALUES (?,?,?,?,?,?,?)",
        ((now - k * 10, n, n, "http", "ok", "HTTP 200 in 1 ms", 1.0) for n in names for k in range(10)),
    )
    conn.execute("COMMIT")
    conn.close()


def timed(url: str, count: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            size = len(resp.read())
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times), size


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    web_port = free_ports(1)[0]
    with targets(50) as ports, tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "state.db"
        names = [f"t{i}" for i in range(args.checks)]
        prefill(db, names)
        config = {
            "interval": "10s",
            "concurrency": 500,
            "store": {"path": str(db)},
            "web": {"listen": f"127.0.0.1:{web_port}"},
            "checks": [
                {"name": n, "kind": "http", "url": f"http://127.0.0.1:{ports[i % 50]}/health?i={i}"}
                for i, n in enumerate(names)
            ],
        }
        (Path(tmp) / "c.yaml").write_text(yaml.safe_dump(config))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "clusterwatch", "run", "-c", str(Path(tmp) / "c.yaml")],
            stderr=subprocess.DEVNULL,
            env={**os.environ},
        )
        base = f"http://127.0.0.1:{web_port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # every check observed once, uptime cache filled
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
                        if b'"entities": ' + str(args.checks).encode() in resp.read():
                            break
                except OSError:
                    pass
                time.sleep(1)
            time.sleep(2)
            overview, overview_size = timed(f"{base}/", args.requests)
            status, status_size = timed(f"{base}/api/v1/status", args.requests)
            delta, _ = timed(f"{base}/api/v1/status?since_version=999999999", args.requests)
            metrics, metrics_size = timed(f"{base}/metrics", max(5, args.requests // 4))
            check_page, _ = timed(f"{base}/checks/t123", args.requests)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    print(
        f"web at {args.checks} checks (monitor running them every 10 s meanwhile), {args.requests} requests each, "
        f"{os.cpu_count()} cpus"
    )
    for name, values, size in (
        ("overview page /", overview, overview_size),
        ("/api/v1/status", status, status_size),
        ("/api/v1/status (live delta)", delta, 0),
        ("/checks/t123", check_page, 0),
        ("/metrics", metrics, metrics_size),
    ):
        extra = f", {size / 1024:.0f} KiB" if size else ""
        print(f"  {name:28s} p50 {statistics.median(values):6.0f} ms  p99 {pct(values, 0.99):6.0f} ms{extra}")
    ok = pct(overview, 0.99) < 300 and pct(metrics, 0.99) < 1000
    print(f"  goal: overview p99 < 300 ms, /metrics < 1 s -> {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
