"""The web side at 10,000 checks with a day of history: overview page, /api/v1/status, /metrics.

The monitor runs for real (10,000 HTTP checks every 10 s against loopback targets) on a store
pre-filled with a day of hourly rollups, three hours of minute rollups (what the 24 h uptime bars read)
and recent observations, so pages are measured under load. The overview is timed as a person meets it:
the first page after start apart, then one request every 0.5 s for a minute (spanning the 30 s reads of
the newest uptime slots, after which a page draws its rows' bars again). Then what each part of the
overview's picture costs, built in process.
Goal: overview p99 under 300 ms, /metrics under 1 s.
Run: `.venv/bin/python bench/web_10k.py [--checks 10000 --requests 40 --every 0.5 --overview-requests 120]`
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
import urllib.error
import urllib.request
from array import array
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _targets import free_ports, targets

from clusterwatch.store.db import open_database
from clusterwatch.store.schema import migrate


def prefill(db: Path, names: list[str], minutes: int) -> None:
    """A day of hourly rollups, the last `minutes` of minute rollups (what the 24 h uptime bars read) and a
    few recent observations for every check; one in 97 hours and minutes has some down time."""
    database = open_database(str(db))
    migrate(database)
    database.close()
    conn = sqlite3.connect(db)
    now = time.time()
    hour = int(now // 3600 * 3600)
    minute = int(now // 60 * 60)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO rollup_hour (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (
            (
                n,
                hour - h * 3600,
                360,
                360 if (i + h) % 97 else 350,
                1.2,
                3.5,
                9.0,
                3600.0 if (i + h) % 97 else 3500.0,
                3600.0,
            )
            for i, n in enumerate(names)
            for h in range(1, 25)
        ),
    )
    conn.executemany(
        "INSERT INTO rollup_minute (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (
            (n, minute - k * 60, 6, 6 if (i + k) % 97 else 3, 1.2, 3.5, 9.0, 60.0 if (i + k) % 97 else 30.0, 60.0)
            for i, n in enumerate(names)
            for k in range(1, minutes + 1)
        ),
    )
    conn.executemany(
        "INSERT INTO observations (ts, entity, check_name, kind, status, message, latency_ms) VALUES (?,?,?,?,?,?,?)",
        ((now - k * 10, n, n, "http", "ok", "HTTP 200 in 1 ms", 1.0) for n in names for k in range(10)),
    )
    conn.execute("COMMIT")
    conn.close()


def timed(url: str, count: int, every: float = 0.0) -> tuple[list[float], int]:
    """`count` requests one after another, or one every `every` seconds (as a page polling would)."""
    times, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            size = len(resp.read())
        took = time.perf_counter() - started
        times.append(took * 1000)
        time.sleep(max(0.0, every - took))
    return sorted(times), size


def picture_cost(n: int) -> list[str]:
    """What the overview's picture costs to build at `n` entities, in process (the monitor's state and the slots
    read as the web holds them; one entity in 500 critical with an open incident): each part's median of 10."""
    import asyncio
    import types

    from clusterwatch.config.schema import Config
    from clusterwatch.engine.state import EntityState
    from clusterwatch.model import Observation, Status
    from clusterwatch.web import dashboard, overview_data, overview_parts

    config = Config.model_validate(
        {"checks": [{"name": f"t{i}", "kind": "http", "url": f"http://127.0.0.1:1/{i}"} for i in range(n)]}
    )
    now = time.time()
    entities = {}
    for i in range(n):
        status = Status.CRITICAL if i % 500 == 0 else Status.OK
        e = EntityState(name=f"t{i}", check=f"t{i}", hard=status, since=now - 100)
        e.last = Observation(f"t{i}", "http", "x", status, "HTTP 200 in 1 ms", 1.0, check=f"t{i}")
        if status is Status.CRITICAL:
            e.incident, e.incident_started = f"i{i}", now - 50
        entities[e.name] = e

    class History:
        needs_person: list = []  # noqa: RUF012 - a stand-in
        needs_person_error = None

        async def recent_actions(self, check: object = None, limit: int = 10) -> list:
            return []

    async def silences() -> list:
        return []

    class View(types.SimpleNamespace):
        __hash__ = object.__hash__
        __eq__ = object.__eq__

    m = View(
        entities=entities,
        kinds=dict.fromkeys(entities, "http"),
        items={c.name: c for c in config.checks},
        config=config,
        version=1,
        latencies={},
        ha_enabled=False,
        silences=silences,
        web=types.SimpleNamespace(history=History(), counts={}, snapshots={}),
    )
    data = overview_data.of(m)
    w = data.windows["24h"]
    w.first, w.ready = w.aligned_first(now), True
    for name in entities:
        w.values[name] = array("d", [1800.0, 1800.0] * 47 + [900.0, 1000.0])  # ok, known per slot
    loop = asyncio.new_event_loop()

    async def page() -> str:
        return await dashboard.render_overview(m)

    def median(fn: object, k: int = 10) -> tuple[float, int]:
        times, out = [], ""
        for _ in range(k):
            started = time.perf_counter()
            out = fn()  # type: ignore[operator]
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times), len(out)

    lines = []
    for label, fn in (
        ("cluster boxes", lambda: overview_parts.cluster_html(m)),
        ("attention", lambda: loop.run_until_complete(overview_parts.attention_html(m, now, ""))),
        ("timeline (2 widths)", lambda: overview_parts.timeline_html(m, "24h", now)),
        (
            "500 rows' bars, first",
            lambda: (w.drawn.clear(), "".join(overview_parts.row_uptime(m, f"t{i}") for i in range(500)))[1],
        ),
        ("500 rows' bars, kept", lambda: "".join(overview_parts.row_uptime(m, f"t{i}") for i in range(500))),
        ("whole page, parts rebuilt", lambda: (data.parts.clear(), loop.run_until_complete(page()))[1]),
    ):
        ms, size = median(fn)
        lines.append(f"  {label:28s} {ms:6.1f} ms  {size / 1024:6.0f} KiB")
    loop.close()
    return lines


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between overview requests")
    parser.add_argument("--overview-requests", type=int, default=120, help="overview requests (one every --every)")
    parser.add_argument("--minutes", type=int, default=180, help="minutes of minute rollups per check to prefill")
    args = parser.parse_args()
    web_port = free_ports(1)[0]
    with targets(50) as ports, tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "state.db"
        names = [f"t{i}" for i in range(args.checks)]
        started = time.perf_counter()
        prefill(db, names, args.minutes)
        print(f"prefilled {args.minutes} min of minute rollups per check in {time.perf_counter() - started:.0f} s")
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
            first, _ = timed(f"{base}/", 1)  # the first page after start: the slots' first read and drawing
            # then one every 0.5 s for a while: it spans the 30 s reads of the newest slots, after each of
            # which a page draws its rows' bars again
            overview, overview_size = timed(f"{base}/", args.overview_requests, every=args.every)
            status, status_size = timed(f"{base}/api/v1/status", args.requests)
            delta, _ = timed(f"{base}/api/v1/status?since_version=999999999", args.requests)
            first_scrape, _ = timed(f"{base}/metrics", 1)  # imports prometheus_client (a monitor never scraped doesn't)
            metrics, metrics_size = timed(f"{base}/metrics", max(5, args.requests // 4))
            check_page, _ = timed(f"{base}/checks/t123", args.requests)
            try:  # the live picture (attention, cluster, timeline) the page fetches every 1.5 s
                picture, picture_size = timed(f"{base}/fragments/overview", args.requests)
            except urllib.error.HTTPError:  # a build without it
                picture, picture_size = [0.0], 0
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    print(
        f"web at {args.checks} checks (monitor running them every 10 s meanwhile), {args.requests} requests each, "
        f"{os.cpu_count()} cpus"
    )
    for name, values, size in (
        ("overview, first after start", first, 0),
        (f"overview, one every {args.every:g} s", overview, overview_size),
        ("/api/v1/status", status, status_size),
        ("/api/v1/status (live delta)", delta, 0),
        ("/checks/t123", check_page, 0),
        ("picture /fragments/overview", picture, picture_size),
        ("/metrics, first scrape", first_scrape, 0),
        ("/metrics, then", metrics, metrics_size),
    ):
        extra = f", {size / 1024:.0f} KiB" if size else ""
        print(f"  {name:28s} p50 {statistics.median(values):6.0f} ms  p99 {pct(values, 0.99):6.0f} ms{extra}")
    try:
        cost = picture_cost(args.checks)
    except ImportError:  # a build without the overview's picture
        cost = []
    if cost:
        print(f"the overview's picture built in process at {args.checks} entities (median of 10):")
        print("\n".join(cost))
    ok = pct(overview, 0.99) < 300 and pct(metrics, 0.99) < 1000
    print(f"  goal: overview p99 < 300 ms, /metrics < 1 s (after the first) -> {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
