"""The engine under load: 10,000 HTTP checks at a 10 s interval against loopback targets, for 60 s.

Prints probes per second, scheduling lag p50/p99, CPU, peak RSS and database growth per hour.
Goal (issue 3) on a 2-core machine: lag p99 under 500 ms, RSS under 300 MB.
Run: `.venv/bin/python bench/engine_10k.py [--checks 10000 --seconds 60]`
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _targets import targets


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def db_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=10000)
    parser.add_argument("--interval", default="10s")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ports", type=int, default=50)
    args = parser.parse_args()

    with targets(args.ports) as ports, tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "state.db"
        config = {
            "interval": args.interval,
            "concurrency": 500,
            "store": {"path": str(db)},
            "checks": [
                {"name": f"t{i}", "kind": "http", "url": f"http://127.0.0.1:{ports[i % len(ports)]}/health?i={i}"}
                for i in range(args.checks)
            ],
        }
        (Path(tmp) / "c.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "CLUSTERWATCH_STATS_EVERY": "10"}
        started = time.monotonic()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "clusterwatch", "run", "--log-format", "json", "-c", str(Path(tmp) / "c.yaml")],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            time.sleep(15)  # warm-up: one full interval plus the jittered start
            cpu0, size0, t0 = proc_cpu_seconds(daemon.pid), db_size(db), time.monotonic()
            time.sleep(max(0.0, args.seconds - 15))
            cpu1, size1, t1 = proc_cpu_seconds(daemon.pid), db_size(db), time.monotonic()
            rss = peak_rss_mb(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    stats = [s for s in lines if s["message"].startswith("stats:")]
    ready = next((s["message"] for s in lines if s["message"].startswith("monitoring ")), "?")
    measured = [s for s in stats if s["ts"] >= time.time() - (time.monotonic() - t0) - 1] or stats[-1:]
    rate = sum(s["probes_per_s"] for s in measured) / max(1, len(measured))
    p50 = max(s["lag_p50_ms"] for s in measured) if measured else float("nan")
    p99 = max(s["lag_p99_ms"] for s in measured) if measured else float("nan")
    print(
        f"engine: {args.checks} HTTP checks every {args.interval} on {args.ports} loopback ports, "
        f"{args.seconds:.0f} s ({t1 - t0:.0f} s measured after warm-up), {os.cpu_count()} cpus"
    )
    print(f"  start: {ready} (config of {args.checks} checks validated and all scheduled)")
    print(f"  probes per second: {rate:.0f} (expected {args.checks / 10:.0f})")
    print(f"  scheduling lag: p50 {p50:.0f} ms, p99 {p99:.0f} ms (worst 10 s window)")
    print(f"  CPU: {100 * (cpu1 - cpu0) / (t1 - t0):.0f}% of one core; peak RSS {rss:.0f} MB")
    print(
        f"  database: {size1 / 2**20:.0f} MB, growing {(size1 - size0) / (t1 - t0) * 3600 / 2**20:.0f} MB/hour "
        f"(raw observations are capped per check; rollups keep the long history)"
    )
    print(f"  skipped slots (a check still running at its next slot): {stats[-1]['skipped'] if stats else '?'}")
    print(f"  goal: lag p99 < 500 ms and RSS < 300 MB -> {'met' if p99 < 500 and rss < 300 else 'NOT met'}")
    print(f"  ran for {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
