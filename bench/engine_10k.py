"""The engine under load: 10,000 HTTP checks at a 10 s interval against loopback targets, for 120 s.

Prints probes per second, scheduling lag p50/p99, CPU, CPU per probe, peak RSS and database growth per hour.
In the same run, against the same targets at the same rate, the Python floor: a paced aiohttp GET loop (one
shared keep-alive session, as the monitor's, no store, no state) in a process of its own; its CPU per request
is what any Python monitor pays for the probes alone, and the monitor's CPU per probe is shown as a multiple
of it. Goals on a 2-core machine: lag p99 under 50 ms, RSS under 300 MB, CPU per probe at most 1.5x the floor.
`--store postgresql` runs the same load on a PostgreSQL store (a throwaway server from tests/pg.py: needs
root and Debian's postgresql); its growth is `pg_database_size`, and the server's own CPU is shown apart
(not counted in the monitor's CPU per probe).
It also prints how busy the rest of the machine was meanwhile ("else", in % of one core: the targets,
the database, anything else running): on a shared 2-core machine that, more than the monitor, sets the lag.
`--py-spy FILE` records the monitor with py-spy over the measured window (collapsed stacks per thread; its
sampling costs CPU, so take the numbers of a run without it).
Run: `.venv/bin/python bench/engine_10k.py [--checks 10000 --seconds 120 --store sqlite|postgresql]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _targets import targets


def proc_cpu_seconds(pid: int) -> float:
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def main_thread_cpu_seconds(pid: int) -> float:
    """The event loop's thread (its id is the process's): the rest of the process's CPU is its threads' (the
    store's writer above all)."""
    return _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))


def _stat_cpu(path: Path) -> float:
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process): how much else ran beside."""
    fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def db_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def urls(ports: list[int], checks: int) -> list[str]:
    """The same URLs the monitor's checks probe."""
    return [f"http://127.0.0.1:{ports[i % len(ports)]}/health?i={i}" for i in range(checks)]


async def floor_loop(targets: list[str], interval: float) -> None:
    """The Python floor: each URL fetched once per `interval`, spread evenly over it, through one shared
    keep-alive session (the monitor's connector settings); the answer read and its status looked at. It
    prints, once a second, how many requests have finished and how late the paced starts were."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=500, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    done = errors = 0
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def get(session: aiohttp.ClientSession, url: str) -> None:
        nonlocal done, errors
        try:
            async with asyncio.timeout(10), session.get(url) as response:
                await response.read()
                errors += response.status != 200
        except (aiohttp.ClientError, TimeoutError):
            errors += 1
        done += 1

    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.5
        step = interval / len(targets)
        slot, reported = 0, start
        print(json.dumps({"ready": True}), flush=True)
        while True:
            now = loop.time()
            while start + slot * step <= now:
                due = start + slot * step
                lags.append(now - due)
                task = asyncio.ensure_future(get(session, targets[slot % len(targets)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                slot += 1
            if now - reported >= 1.0:
                reported = now
                lags.sort()
                p99 = lags[int(0.99 * (len(lags) - 1))] if lags else 0.0
                p50 = lags[len(lags) // 2] if lags else 0.0
                print(
                    json.dumps({"t": time.monotonic(), "done": done, "errors": errors, "p50": p50, "p99": p99}),
                    flush=True,
                )
                lags = []
            await asyncio.sleep(max(0.0, min(start + slot * step - loop.time(), 0.005)))


class Floor:
    """The floor in a process of its own (stopped by its PID): its progress lines read in a thread."""

    def __init__(self, ports: list[int], checks: int, interval: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--floor-worker", str(checks), str(interval), *map(str, ports)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert json.loads(self.proc.stdout.readline()).get("ready")
        self.lines: list[dict[str, float]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def done(self) -> tuple[float, float]:
        """(requests finished, errors) as of the last progress line."""
        last = self.lines[-1] if self.lines else {"done": 0, "errors": 0}
        return last["done"], last["errors"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def measure_floor(ports: list[int], checks: int, interval: float, warm: float, window: float) -> dict[str, float]:
    floor = Floor(ports, checks, interval)
    try:
        time.sleep(warm)
        time.sleep(1.1)  # a fresh progress line
        (done0, err0), cpu0, t0 = floor.done(), proc_cpu_seconds(floor.proc.pid), time.monotonic()
        busy0 = machine_busy_seconds()
        time.sleep(window)
        time.sleep(1.1)
        (done1, err1), cpu1, t1 = floor.done(), proc_cpu_seconds(floor.proc.pid), time.monotonic()
        busy1 = machine_busy_seconds()
        rss = peak_rss_mb(floor.proc.pid)
        measured = [line for line in floor.lines if line.get("t", 0) >= t0]
    finally:
        floor.stop()
    requests = done1 - done0
    return {
        "rate": requests / (t1 - t0),
        "cpu_ms": 1000 * (cpu1 - cpu0) / max(1.0, requests),
        "cpu_share": (cpu1 - cpu0) / (t1 - t0),
        "errors": err1 - err0,
        "p50_ms": 1000 * statistics.median(line["p50"] for line in measured) if measured else float("nan"),
        "p99_ms": 1000 * max(line["p99"] for line in measured) if measured else float("nan"),
        "rss": rss,
        "others": (busy1 - busy0 - (cpu1 - cpu0)) / (t1 - t0),
    }


def store_only(store: dict[str, str], checks: int, interval: float, minutes: float) -> dict[str, float]:
    """The store's write path alone, as the pipeline hands it each observation (the observation, then the
    entity's row), for `minutes` of simulated time at `checks` every `interval`, fed as fast as the writer
    takes it. The writer thread's CPU (the process's, less the feeding thread's own) per observation."""
    sys.path.insert(0, os.getcwd())
    from clusterwatch.config.schema import StoreOptions
    from clusterwatch.engine.state import EntityState
    from clusterwatch.model import Observation, Status
    from clusterwatch.store.writer import Store

    writer = Store(StoreOptions(**store)).open()
    states = [EntityState(f"t{i}", f"t{i}", hard=Status.OK, since=1.0) for i in range(checks)]
    rounds = int(minutes * 60 / interval)
    start = (time.time() - minutes * 60 - 60) // 60 * 60 + 7.0
    cpu0, feed0, t0 = time.process_time(), time.thread_time(), time.monotonic()
    total = 0
    for r in range(rounds):
        for i, state in enumerate(states):
            at = start + r * interval + i * interval / checks
            obs = Observation(
                state.name,
                "http",
                "http://127.0.0.1:1/health",
                Status.OK,
                "HTTP 200 in 1 ms",
                latency_ms=1.0 + i % 7,
                check=state.name,
                metrics={"http_status": 200, "body_bytes": 16},
            )
            state.last, state.last_at, state.ok_streak = obs, at, state.ok_streak + 1
            state.history.append(Status.OK)
            writer.observation(obs, at, expected_every=interval * 1.5)
            writer.entity(state, "http")
            total += 1
        while writer.health()["queue_depth"] > 50_000:
            time.sleep(0.01)
    feeding = time.thread_time() - feed0
    assert writer.flush(600)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    health = writer.health()
    writer.close()
    return {
        "observations": total,
        "writer_us": 1e6 * (cpu - feeding) / total,
        "feed_us": 1e6 * feeding / total,
        "wall_s": wall,
        "failed": health["failed_items"] + health["dropped"],
    }


def seconds_of(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for unit in ("ms", "s", "m"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


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
    parser.add_argument("--seconds", type=float, default=120, help="the monitor's run, warm-up included")
    parser.add_argument("--ports", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--no-web", action="store_true", help="without the web (and its background reads)")
    parser.add_argument("--no-floor", action="store_true", help="leave the Python floor out")
    parser.add_argument("--py-spy", metavar="FILE", help="record the monitor with py-spy over the measured window")
    parser.add_argument("--floor-worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument(
        "--store-only",
        type=float,
        metavar="MINUTES",
        help="no probes: the store's write path alone for MINUTES of simulated time (writer CPU per observation)",
    )
    args = parser.parse_args()
    if args.floor_worker:  # the floor's own process: checks, interval, ports
        checks, interval, *ports = args.floor_worker
        asyncio.run(floor_loop(urls([int(p) for p in ports], int(checks)), float(interval)))
        return
    interval = seconds_of(args.interval)
    warm = 15.0  # one full interval plus the jittered start
    window = max(10.0, args.seconds - warm)

    with contextlib.ExitStack() as stack:
        ports = [] if args.store_only else stack.enter_context(targets(args.ports))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        db = Path(tmp) / "state.db"
        store: dict[str, str] = {"path": str(db)}
        size: Callable[[], int] = lambda: db_size(db)  # noqa: E731
        pg_cpu: Callable[[], float] | None = None
        if args.store == "postgresql":
            url, size, pg_cpu = stack.enter_context(postgresql())
            store = {"url": url}
        if args.store_only:
            result = store_only(store, args.checks, interval, args.store_only)
            print(
                f"store write path ({args.store}): {result['observations']} observations and entity rows of "
                f"{args.checks} checks every {args.interval}, {args.store_only:g} simulated minutes, in "
                f"{result['wall_s']:.1f} s: writer thread {result['writer_us']:.1f} us per observation "
                f"(handing over: {result['feed_us']:.1f} us), {result['failed']} lost"
            )
            return
        config = {
            "interval": args.interval,
            "concurrency": 500,
            "store": store,
            "checks": [{"name": f"t{i}", "kind": "http", "url": u} for i, u in enumerate(urls(ports, args.checks))],
        }
        if args.no_web:  # the dashboard's own reads (uptime every minute, slots every 30 s) left out
            config["web"] = {"enabled": False}
        (Path(tmp) / "c.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "CLUSTERWATCH_STATS_EVERY": "10"}
        started = time.monotonic()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "clusterwatch", "run", "--log-format", "json", "-c", str(Path(tmp) / "c.yaml")],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        spy = None
        try:
            time.sleep(warm)
            cpu0, size0, t0 = proc_cpu_seconds(daemon.pid), size(), time.monotonic()
            loop0 = main_thread_cpu_seconds(daemon.pid)
            busy0 = machine_busy_seconds()
            pg0 = pg_cpu() if pg_cpu else 0.0
            if args.py_spy:
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(daemon.pid),
                        "--threads",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--rate",
                        "100",
                        "--duration",
                        str(int(window)),
                        "-o",
                        args.py_spy,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            time.sleep(window)
            cpu1, size1, t1 = proc_cpu_seconds(daemon.pid), size(), time.monotonic()
            loop1 = main_thread_cpu_seconds(daemon.pid)
            busy1 = machine_busy_seconds()
            pg1 = pg_cpu() if pg_cpu else 0.0
            rss = peak_rss_mb(daemon.pid)
        finally:
            if spy is not None:
                spy.wait(30)
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=60)
        floor = None if args.no_floor else measure_floor(ports, args.checks, interval, warm, window)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    stats = [s for s in lines if s["message"].startswith("stats:")]
    ready = next((s["message"] for s in lines if s["message"].startswith("monitoring ")), "?")
    measured = [s for s in stats if s["ts"] >= time.time() - (time.monotonic() - t0) - 1] or stats[-1:]
    rate = sum(s["probes_per_s"] for s in measured) / max(1, len(measured))
    p50 = statistics.median(s["lag_p50_ms"] for s in measured) if measured else float("nan")
    p99 = max(s["lag_p99_ms"] for s in measured) if measured else float("nan")
    cpu_share = (cpu1 - cpu0) / (t1 - t0)
    cpu_ms = 1000 * cpu_share / max(1.0, rate)
    print(
        f"engine: {args.checks} HTTP checks every {args.interval} on {args.ports} loopback ports, "
        f"{args.seconds:.0f} s ({t1 - t0:.0f} s measured after warm-up), {os.cpu_count()} cpus, store {args.store}"
    )
    print(f"  start: {ready} (config of {args.checks} checks validated and all scheduled)")
    print(f"  probes per second: {rate:.0f} (expected {args.checks / interval:.0f})")
    print(f"  scheduling lag: p50 {p50:.1f} ms (median 10 s window), p99 {p99:.1f} ms (worst 10 s window)")
    windows = " ".join(f"{s['lag_p99_ms']:.0f}" for s in measured)
    print(f"  lag p99 of each 10 s window (ms): {windows}")
    if measured and "gc_longest_ms" in measured[0]:
        pauses = " ".join(
            f"{s['gc_longest_ms']:.0f}/g{s.get('gc_longest_generation', '?')}{'F' if s['gc_full'] else ''}"
            for s in measured
        )
        print(
            "  longest garbage-collector pause of each window (ms/its generation; F: a full collection ran): "
            + pauses
        )
    print(f"  CPU: {100 * cpu_share:.0f}% of one core, {cpu_ms:.3f} ms per probe; peak RSS {rss:.0f} MB")
    loop_ms = 1000 * (loop1 - loop0) / (t1 - t0) / max(1.0, rate)
    print(
        f"    of which the event loop's thread (probes, state, events) {loop_ms:.3f} ms, the other threads "
        f"(the store's writer, web reads) {cpu_ms - loop_ms:.3f} ms per probe"
    )
    others = (busy1 - busy0 - (cpu1 - cpu0)) / (t1 - t0)
    print(
        f"  everything else on the machine meanwhile (the targets, the database, other work): "
        f"{100 * others:.0f}% of one core, of {os.cpu_count()}"
    )
    if pg_cpu is not None:
        print(f"  PostgreSQL's own CPU (all its processes): {100 * (pg1 - pg0) / (t1 - t0):.0f}% of one core")
    what = "pg_database_size" if args.store == "postgresql" else "database"
    print(
        f"  {what}: {size1 / 2**20:.0f} MB, growing {(size1 - size0) / (t1 - t0) * 3600 / 2**20:.0f} MB/hour "
        f"(raw observations are capped per check; rollups keep the long history)"
    )
    print(f"  skipped slots (a check still running at its next slot): {stats[-1]['skipped'] if stats else '?'}")
    ratio = float("nan")
    if floor is not None:
        ratio = cpu_ms / floor["cpu_ms"]
        print(
            f"  Python floor (paced aiohttp GET loop, same targets and rate, its own process): "
            f"{floor['rate']:.0f} requests/s, {100 * floor['cpu_share']:.0f}% of one core, "
            f"{floor['cpu_ms']:.3f} ms per request, {floor['errors']:.0f} errors, pacing lag p50 "
            f"{floor['p50_ms']:.1f} ms p99 {floor['p99_ms']:.1f} ms, peak RSS {floor['rss']:.0f} MB; everything else "
            f"meanwhile {100 * floor['others']:.0f}% of one core"
        )
        print(f"  CPU per probe / floor: {ratio:.2f}x")
    met = p99 < 50 and rss < 300 and (floor is None or ratio <= 1.5)
    print(
        f"  goal: lag p99 < 50 ms, RSS < 300 MB{', CPU per probe <= 1.5x the floor' if floor else ''} -> "
        f"{'met' if met else 'NOT met'}"
    )
    print(f"  ran for {time.monotonic() - started:.0f} s")
    print(
        "| store | CPU/probe ms | floor ms | ratio | lag p50 ms | lag p99 ms | RSS MB | probes/s | else % |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.store} | {cpu_ms:.3f} | {floor['cpu_ms'] if floor else float('nan'):.3f} | {ratio:.2f} | "
        f"{p50:.1f} | {p99:.1f} | {rss:.0f} | {rate:.0f} | {100 * others:.0f} |"
    )


if __name__ == "__main__":
    main()
