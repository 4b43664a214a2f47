"""Rollups on both engines (a real SQLite file, a real PostgreSQL): uptime by time (an outage weighs as
long as it lasted however often it was probed, a gap in monitoring is unknown time), and rollups that
equal the raw observations after a writer abandoned mid-flight (flushed) and after `kill -9` of a process
in the middle of writing: every minute but each entity's open one at once, and that one too as soon as
the next process carries on."""

from __future__ import annotations

import itertools
import math
import signal
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from clusterwatch import report
from clusterwatch.model import Observation, Status
from clusterwatch.store.db import errors
from clusterwatch.store.history import History
from clusterwatch.store.rollups import split_by_minute
from clusterwatch.store.writer import Store
from tests.helpers import ROOT, Proc, wait_until
from tests.storecheck import engine, execute, rows, store_options

T0 = 1_700_000_000.0 // 3600 * 3600  # an hour boundary


def obs(name: str, status: Status, latency: float | None = 5.0) -> Observation:
    return Observation(name, "tcp", "127.0.0.1:1", status, "m", latency_ms=latency, check=name)


def nearest_rank(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)] if values else None


def expected_minutes(raw: list[dict[str, Any]], every: float) -> dict[tuple[str, int], dict[str, Any]]:
    """The minute rollups recomputed from raw observations alone, independently of the store's code."""
    minutes: dict[tuple[str, int], dict[str, Any]] = defaultdict(
        lambda: {"count": 0, "ok": 0, "latencies": [], "seconds_ok": 0.0, "seconds_known": 0.0}
    )
    by_entity: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in raw:
        by_entity[o["entity"]].append(o)
        m = minutes[(o["entity"], int(o["ts"] // 60 * 60))]
        m["count"] += 1
        m["ok"] += o["status"] == "ok"
        if o["latency_ms"] is not None:
            m["latencies"].append(o["latency_ms"])
    for entity, items in by_entity.items():
        items.sort(key=lambda o: (o["ts"], o["id"]))
        for previous, following in itertools.pairwise(items):
            start, end = previous["ts"], min(following["ts"], previous["ts"] + every)
            first = int(start // 60 * 60)
            for minute in range(first, int(end // 60 * 60) + 60, 60):
                overlap = max(0.0, min(end, minute + 60) - max(start, minute))
                if overlap > 0:
                    m = minutes[(entity, minute)]
                    m["seconds_known"] += overlap
                    m["seconds_ok"] += overlap if previous["status"] == "ok" else 0.0
    return minutes


def assert_rollups_match_raw(db: str, every: float, *, but_open: bool = False) -> int:
    """`but_open`: leave out each entity's last minute (the one a writer killed with -9 held open, whose
    row is missing or as an earlier flush left it); every other minute, and every hour, must match."""
    raw = rows(db, "SELECT * FROM observations")
    expected = expected_minutes(raw, every)
    actual = {(r["entity"], r["ts"]): r for r in rows(db, "SELECT * FROM rollup_minute")}
    if but_open:
        last: dict[str, int] = {}
        for o in raw:
            last[o["entity"]] = max(last.get(o["entity"], 0), int(o["ts"] // 60 * 60))
        for key in [k for k in (*expected, *actual) if last.get(k[0]) == k[1]]:
            expected.pop(key, None)
            actual.pop(key, None)
    assert set(actual) == set(expected)
    for key, want in expected.items():
        got = actual[key]
        assert (got["count"], got["ok"]) == (want["count"], want["ok"]), key
        assert got["p50"] == nearest_rank(want["latencies"], 0.5), key
        assert got["p95"] == nearest_rank(want["latencies"], 0.95), key
        assert got["max"] == (max(want["latencies"]) if want["latencies"] else None), key
        assert got["seconds_ok"] == pytest.approx(want["seconds_ok"], abs=1e-6), key
        assert got["seconds_known"] == pytest.approx(want["seconds_known"], abs=1e-6), key
    hours: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    every_minute = {(r["entity"], r["ts"]): r for r in rows(db, "SELECT * FROM rollup_minute")}
    for (entity, minute), row in every_minute.items():
        hours[(entity, minute // 3600 * 3600)].append(row)
    actual_hours = {(r["entity"], r["ts"]): r for r in rows(db, "SELECT * FROM rollup_hour")}
    assert set(actual_hours) == set(hours)
    for key, minutes in hours.items():
        got = actual_hours[key]
        assert got["count"] == sum(m["count"] for m in minutes)
        assert got["ok"] == sum(m["ok"] for m in minutes)
        assert got["seconds_ok"] == pytest.approx(sum(m["seconds_ok"] for m in minutes), abs=1e-6)
        assert got["seconds_known"] == pytest.approx(sum(m["seconds_known"] for m in minutes), abs=1e-6)
        assert got["max"] == max((m["max"] for m in minutes if m["max"] is not None), default=None)
        assert got["p95"] == max((m["p95"] for m in minutes if m["p95"] is not None), default=None)
    return len(raw)


@pytest.fixture
def db(store_location: str) -> str:
    return store_location


def read_uptime(db: str, since: float) -> dict[str, Any]:
    history = History(db)
    try:
        return history.uptime(since)
    finally:
        history.close()


def test_split_by_minute():
    assert list(split_by_minute(55.0, 65.0)) == [(0, 5.0), (60, 5.0)]
    assert list(split_by_minute(30.0, 200.0)) == [(0, 30.0), (60, 60.0), (120, 60.0), (180, 20.0)]
    assert list(split_by_minute(10.0, 10.0)) == []


def test_an_outage_weighs_as_long_as_it_lasted(db: str):
    """20 minutes checked every 10 s; one minute of it down, probed every second meanwhile (retries,
    verification). By probes that minute would be a third of the time; by time it is 1 in 20."""
    store = Store(store_options(db)).open()
    t, probes = T0, {"ok": 0, "down": 0}
    while t < T0 + 600:
        store.observation(obs("api", Status.OK), t, expected_every=10)
        probes["ok"] += 1
        t += 10
    while t < T0 + 660:
        store.observation(obs("api", Status.CRITICAL), t, expected_every=10)
        probes["down"] += 1
        t += 1
    while t <= T0 + 1200:
        store.observation(obs("api", Status.OK), t, expected_every=10)
        probes["ok"] += 1
        t += 10
    assert store.flush(30)
    store.close()
    assert_rollups_match_raw(db, 10)

    uptime = read_uptime(db, T0)["api"]
    assert uptime.seconds_known == pytest.approx(1200)
    assert uptime.seconds_ok == pytest.approx(1140)
    assert uptime.percent == pytest.approx(95.0)
    by_probes = 100 * probes["ok"] / (probes["ok"] + probes["down"])
    assert by_probes < 70  # what the share of probes said

    data = report.build(db, since=3600, now=T0 + 1800)
    (api,) = data["services"]
    assert api["uptime_percent"] == pytest.approx(95.0) and api["known_s"] == pytest.approx(1200)
    assert api["probes"] == probes["ok"] + probes["down"]


def test_a_gap_in_monitoring_is_unknown_time(db: str):
    """Down at the last look before the monitor stopped for an hour: ten seconds of that are down
    (the check's interval), the rest is neither up nor down."""
    store = Store(store_options(db)).open()
    for i in range(30):
        store.observation(obs("db", Status.OK), T0 + 10 * i, expected_every=10)
    store.observation(obs("db", Status.CRITICAL), T0 + 300, expected_every=10)
    assert store.flush(30)
    store.close()

    store = Store(store_options(db)).open()  # an hour later, another process
    for i in range(30):
        store.observation(obs("db", Status.OK), T0 + 3900 + 10 * i, expected_every=10)
    assert store.flush(30)
    store.close()
    assert_rollups_match_raw(db, 10)

    uptime = read_uptime(db, T0)["db"]
    assert uptime.seconds_known == pytest.approx(300 + 10 + 290)
    assert uptime.seconds_ok == pytest.approx(300 + 290)
    minutes = rows(db, "SELECT ts, seconds_known FROM rollup_minute WHERE entity = 'db' ORDER BY ts")
    assert not [m for m in minutes if T0 + 360 <= m["ts"] < T0 + 3900]  # no row for the gap


def test_history_filed_late_moves_no_timeline_back(db: str):
    """An agent's queue, filed after the cut it was kept through: its rows count in their minutes, and the
    time around them is credited once (the silence the monitor saw meanwhile stays as it was)."""
    store = Store(store_options(db)).open()
    for i in range(12):  # what the monitor saw live: unknown while the agent was silent, then ok again
        store.observation(obs("w", Status.UNKNOWN if i < 6 else Status.OK), T0 + 10 * i, expected_every=10)
    for i in range(6):  # the agent's own rounds from the silence, arriving afterwards
        store.observation(obs("w", Status.CRITICAL), T0 + 5 + 10 * i, expected_every=10, late=True)
    store.observation(obs("w", Status.OK), T0 + 120, expected_every=10)
    assert store.flush(30)
    store.close()
    minutes = rows(db, "SELECT ts, count, seconds_known FROM rollup_minute WHERE entity = 'w' ORDER BY ts")
    assert [m["count"] for m in minutes] == [12, 6, 1]  # every raw row counts in its minute
    assert all(m["seconds_known"] <= 60.0 for m in minutes), minutes
    assert sum(m["seconds_known"] for m in minutes) == pytest.approx(120.0)


def test_the_last_observation_before_a_restart_still_counts(db: str):
    """The interval that spans a restart is credited: the previous observation is read back."""
    store = Store(store_options(db)).open()
    store.observation(obs("w", Status.CRITICAL), T0 + 55, expected_every=30)
    assert store.flush(30)  # no close: the process died here
    store = Store(store_options(db)).open()
    store.observation(obs("w", Status.OK), T0 + 75, expected_every=30)
    assert store.flush(30)
    store.close()
    minutes = {r["ts"] - T0: r for r in rows(db, "SELECT * FROM rollup_minute WHERE entity = 'w'")}
    assert minutes[0]["seconds_known"] == pytest.approx(5) and minutes[0]["seconds_ok"] == 0
    assert minutes[60]["seconds_known"] == pytest.approx(15) and minutes[60]["seconds_ok"] == 0
    assert_rollups_match_raw(db, 30)


def test_expected_every_defaults_to_a_minute(db: str):
    store = Store(store_options(db)).open()
    store.observation(obs("x", Status.OK), T0, expected_every=None)
    store.observation(obs("x", Status.OK), T0 + 600)
    assert store.flush(30)
    store.close()
    (minute,) = rows(db, "SELECT * FROM rollup_minute WHERE entity = 'x' AND ts = ?", T0)
    assert minute["seconds_known"] == pytest.approx(60)


def test_rollups_of_an_abandoned_writer_match_raw(db: str):
    """A writer left behind without close (as by a crash): every committed batch already carries its
    partial minute and hour; nothing waits in memory for the minute to end."""
    store = Store(store_options(db)).open()
    for i in range(200):
        status = Status.CRITICAL if 50 <= i < 80 else Status.OK
        store.observation(obs(f"e{i % 3}", status, float(i % 17)), T0 + 12.5 * i / 3, expected_every=5)
        if i % 37 == 0:
            assert store.flush(30)
    assert store.flush(30)
    assert assert_rollups_match_raw(db, 5) == 200
    # ... and a new store carries on from there
    again = Store(store_options(db)).open()
    for i in range(200, 260):
        again.observation(obs(f"e{i % 3}", Status.OK, 1.0), T0 + 12.5 * i / 3, expected_every=5)
    assert again.flush(30)
    again.close()
    assert assert_rollups_match_raw(db, 5) == 260


WRITER = textwrap.dedent(
    """
    import sys, time
    from clusterwatch.config.schema import StoreOptions
    from clusterwatch.model import Observation, Status
    from clusterwatch.store.writer import Store
    location, start = sys.argv[1], float(sys.argv[2])
    url = location.startswith("postgresql://")
    store = Store(StoreOptions(url=location) if url else StoreOptions(path=location)).open()
    i = 0
    while True:
        for e in range(5):
            status = Status.CRITICAL if (i // 40 + e) % 4 == 0 else Status.OK
            store.observation(Observation(f"e{e}", "tcp", "t", status, "m", latency_ms=float((i * 7 + e) % 23),
                                          check=f"e{e}"), start + i * 0.75 + e * 0.01, expected_every=1.0)
        i += 1
        if i % 50 == 0:
            time.sleep(0.01)
    """
)


def test_rollups_match_raw_after_kill_9_of_a_writing_process(db: str, tmp_path: Path):
    """Three processes writing as fast as they can, each killed with -9 once it has written more;
    each new one starts where the raw observations end. Right after each kill every minute but each
    entity's open one matches; the next process rebuilds that one from raw and carries on."""
    start = T0
    written = 0
    scale = 1 if engine(db) == "sqlite" else 4  # PostgreSQL writes slower here: fewer rows, as many kills
    for run in range(3):
        proc = Proc(
            [sys.executable, "-c", WRITER, str(db), str(start)],
            tmp_path / f"writer-{run}.log",
            env={"PYTHONPATH": str(ROOT)},
        )
        try:
            target = written + (2000 + 700 * run) // scale
            wait_until(
                lambda target=target: count(db) >= target,
                timeout=120,
                interval=0.02,
                what=f"{target} observations\n{proc.tail()}",
            )
            proc.signal(signal.SIGKILL)
            proc.popen.wait(10)
        finally:
            proc.stop()
        written = count(db)
        assert assert_rollups_match_raw(db, 1.0, but_open=True) == written
        start = rows(db, "SELECT MAX(ts) AS ts FROM observations")[0]["ts"] + 0.5
    assert written >= (2000 + 2700 + 3400) // scale
    # The monitor comes back and carries on (a few probes of each, in the minute the last kill left open
    # and into the next), then stops.
    again = Store(store_options(db)).open()
    for i in range(100):
        for e in range(5):
            again.observation(obs(f"e{e}", Status.OK, 2.0), start + i + e * 0.01, expected_every=1.0)
    again.close()
    assert assert_rollups_match_raw(db, 1.0) == written + 500


def count(db: str) -> int:
    if engine(db) == "sqlite" and not Path(db).exists():
        return 0
    try:
        return rows(db, "SELECT COUNT(*) AS n FROM observations")[0]["n"]
    except errors():
        return 0  # not migrated yet


def test_old_rows_without_seconds_fall_back_to_counts(db: str):
    Store(store_options(db)).open().close()
    execute(
        db,
        ("INSERT INTO rollup_hour (entity, ts, count, ok) VALUES ('old', ?, 10, 7)", (T0,)),
        ("INSERT INTO rollup_hour (entity, ts, count, ok) VALUES ('old', ?, 30, 30)", (T0 + 3600,)),
        ("INSERT INTO rollup_hour (entity, ts, count, ok) VALUES ('mixed', ?, 60, 30)", (T0,)),
        (
            "INSERT INTO rollup_hour (entity, ts, count, ok, seconds_ok, seconds_known) "
            "VALUES ('mixed', ?, 360, 360, 3600, 3600)",
            (T0 + 3600,),
        ),
    )
    uptime = read_uptime(db, T0)
    assert uptime["old"].percent == pytest.approx(100 * 37 / 40)  # exactly the old share of probes
    assert uptime["mixed"].percent == pytest.approx(75.0)  # the old hour as half up, the new one up
    assert uptime["old"].probes == 40 and isinstance(uptime["old"].probes, int)


def test_the_raw_cap_spares_the_minutes_being_rolled_up(db: str, monkeypatch: pytest.MonkeyPatch):
    """`raw_per_check` may be as small as 10; an entity probed every second must still roll up whole."""
    from clusterwatch.store import writer as store_sqlite

    monkeypatch.setattr(store_sqlite, "RETENTION_EVERY", 0.0)  # after every batch
    now = {"t": T0 + 30}
    store = Store(store_options(db, raw_per_check=10), clock=lambda: now["t"]).open()
    try:
        for i in range(30):
            store.observation(obs("fast", Status.OK, float(i)), T0 + i, expected_every=1)
            assert store.flush(30)
        (minute,) = rows(db, "SELECT * FROM rollup_minute WHERE entity = 'fast'")
        assert minute["count"] == 30 and minute["max"] == 29.0
        assert_rollups_match_raw(db, 1)
        now["t"] = T0 + 600  # later, the cap applies
        store.observation(obs("fast", Status.OK, 1.0), T0 + 600, expected_every=1)
        assert store.flush(30)
        assert len(rows(db, "SELECT * FROM observations WHERE entity = 'fast'")) == 10
        (minute,) = rows(db, "SELECT * FROM rollup_minute WHERE entity = 'fast' AND ts = ?", T0)
        assert minute["count"] == 30  # the finished minute keeps what it was
    finally:
        store.close()


def test_a_barrier_flush_writes_what_was_queued_but_no_open_minute(db: str):
    """An agent's push (and an alert) waits for its own writes only: the open minutes of every entity are
    written by a checkpoint flush or a stop, not by each push."""
    store = Store(store_options(db)).open()
    try:
        for i in range(3):
            store.observation(obs("api", Status.OK), T0 + 10 * i, expected_every=10)
        assert store.flush(30, checkpoint=False)
        assert len(rows(db, "SELECT * FROM observations WHERE entity = 'api'")) == 3
        assert rows(db, "SELECT * FROM rollup_minute WHERE entity = 'api'") == []
        assert store.flush(30)
        (minute,) = rows(db, "SELECT * FROM rollup_minute WHERE entity = 'api'")
        assert minute["count"] == 3 and minute["seconds_known"] == pytest.approx(20)
    finally:
        store.close()
