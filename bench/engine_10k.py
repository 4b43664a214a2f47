"""The engine under load: 10,000 HTTP checks at a 10 s interval against loopback targets, for 60 s.

Prints probes per second, scheduling lag p50/p99, CPU, peak RSS and database growth per hour.
Goal (issue 3) on a 2-core machine: lag p99 under 500 ms, RSS under 300 MB.
`--store postgresql` runs the same load on a PostgreSQL store (a throwaway server from tests/pg.py: needs
root and Debian's postgresql); its growth is `pg_database_size`, and the server's own CPU is shown apart.
Run: `.venv/bin/python bench/engine_10k.py [--checks 10000 --seconds 60 --store sqlite|postgresql]`
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def postgresql() -> Iterator[tuple[str, Callable[[], int], Callable[[], float]]]:
    """A throwaway PostgreSQL (stopped by PID at the end): its URL, the database's size, its processes' CPU."""
    import psutil
    import psycopg

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.pg import PostgresServer, unavailable_reason

    if (reason := unavailable_reason()) is not None:
        raise SystemExit(f"--store postgresql: {reason}")
    server = PostgresServer()
    try:
        server.start()
        url = server.create_database("engine_bench")

        def size() -> int:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else 0

        def cpu() -> float:
            total = 0.0
            with contextlib.suppress(psutil.Error):
                postmaster = psutil.Process(server.pid)
                for proc in [postmaster, *postmaster.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        total += times.user + times.system
            return total

        yield url, size, cpu
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=10000)
    parser.add_argument("--interval", default="10s")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ports", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        ports = stack.enter_context(targets(args.ports))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        db = Path(tmp) / "state.db"
        store: dict[str, str] = {"path": str(db)}
        size: Callable[[], int] = lambda: db_size(db)  # noqa: E731
        pg_cpu: Callable[[], float] | None = None
        if args.store == "postgresql":
            url, size, pg_cpu = stack.enter_context(postgresql())
            store = {"url": url}
        config = {
            "interval": args.interval,
            "concurrency": 500,
            "store": store,
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
            cpu0, size0, t0 = proc_cpu_seconds(daemon.pid), size(), time.monotonic()
            pg0 = pg_cpu() if pg_cpu else 0.0
            time.sleep(max(0.0, args.seconds - 15))
            cpu1, size1, t1 = proc_cpu_seconds(daemon.pid), size(), time.monotonic()
            pg1 = pg_cpu() if pg_cpu else 0.0
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
        f"{args.seconds:.0f} s ({t1 - t0:.0f} s measured after warm-up), {os.cpu_count()} cpus, store {args.store}"
    )
    print(f"  start: {ready} (config of {args.checks} checks validated and all scheduled)")
    print(f"  probes per second: {rate:.0f} (expected {args.checks / 10:.0f})")
    print(f"  scheduling lag: p50 {p50:.0f} ms, p99 {p99:.0f} ms (worst 10 s window)")
    print(f"  CPU: {100 * (cpu1 - cpu0) / (t1 - t0):.0f}% of one core; peak RSS {rss:.0f} MB")
    if pg_cpu is not None:
        print(f"  PostgreSQL's own CPU (all its processes): {100 * (pg1 - pg0) / (t1 - t0):.0f}% of one core")
    what = "pg_database_size" if args.store == "postgresql" else "database"
    print(
        f"  {what}: {size1 / 2**20:.0f} MB, growing {(size1 - size0) / (t1 - t0) * 3600 / 2**20:.0f} MB/hour "
        f"(raw observations are capped per check; rollups keep the long history)"
    )
    print(f"  skipped slots (a check still running at its next slot): {stats[-1]['skipped'] if stats else '?'}")
    print(f"  goal: lag p99 < 500 ms and RSS < 300 MB -> {'met' if p99 < 500 and rss < 300 else 'NOT met'}")
    print(f"  ran for {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
