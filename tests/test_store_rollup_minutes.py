"""Rollups written once per minute and entity, on both engines (a real SQLite file, a real PostgreSQL):
a batch writes no rollup row for a minute still open, the first observation of an entity's next minute
writes its last one whole, a silent entity's minute is written a while later, a forgotten one's at
once, a flush writes the open minutes as they stand; a monitor that stopped recording while another
one recorded reads the entities back instead of trusting its memory; a restart in the middle of a
minute carries on in it. Throughout, the rows equal what the raw observations say."""

from __future__ import annotations

import pytest

from clusterwatch.model import Observation, Status
from clusterwatch.store.writer import Store
from tests.helpers import wait_until
from tests.storecheck import rows, store_options
from tests.test_store_rollups import assert_rollups_match_raw

T0 = 1_700_000_000.0 // 3600 * 3600  # an hour boundary


def obs(name: str, status: Status = Status.OK, latency: float | None = 5.0) -> Observation:
    return Observation(name, "tcp", "127.0.0.1:1", status, "m", latency_ms=latency, check=name)


@pytest.fixture
def db(store_location: str) -> str:
    return store_location


def committed(store: Store, items: int) -> None:
    """Wait until the writer has committed `items` writes, without a flush (a flush writes open minutes)."""
    wait_until(lambda: store.health()["written"] >= items, timeout=60, what=f"{items} writes committed")


def minutes(db: str, entity: str) -> dict[float, dict]:
    return {r["ts"] - T0: r for r in rows(db, "SELECT * FROM rollup_minute WHERE entity = ?", entity)}


def test_a_minute_is_written_when_the_next_one_begins(db: str):
    store = Store(store_options(db)).open()
    try:
        for i in range(5):  # five rounds of 20 entities, all in the first minute
            for e in range(20):
                store.observation(obs(f"e{e}", Status.OK, float(i)), T0 + 10 * i + e * 0.1, expected_every=15)
        committed(store, 100)
        assert len(rows(db, "SELECT * FROM observations")) == 100
        assert rows(db, "SELECT * FROM rollup_minute") == []  # open: in memory, nothing rewritten per batch
        assert rows(db, "SELECT * FROM rollup_hour") == []
        for e in range(10):  # half of them reach the next minute
            store.observation(obs(f"e{e}", Status.CRITICAL, 9.0), T0 + 62 + e * 0.1, expected_every=15)
        committed(store, 110)
        written = {r["entity"] for r in rows(db, "SELECT * FROM rollup_minute WHERE ts = ?", T0)}
        assert written == {f"e{e}" for e in range(10)}  # only those whose minute closed
        assert rows(db, "SELECT * FROM rollup_minute WHERE ts > ?", T0) == []
        (first,) = minutes(db, "e0").values()
        assert (first["count"], first["ok"], first["max"]) == (5, 5, 4.0)
        assert first["seconds_known"] == pytest.approx(55.0)  # 4 x 10 s, then 15 s held; 55-60 s is unknown
        assert len(rows(db, "SELECT * FROM rollup_hour")) == 10
        assert_rollups_match_raw(db, 15, but_open=True)
    finally:
        store.close()
    assert_rollups_match_raw(db, 15)  # a clean stop writes the open minutes


def test_a_silent_entity_is_written_later_and_a_forgotten_one_at_once(db: str):
    store = Store(store_options(db)).open()
    try:
        store.observation(obs("quiet"), T0 + 5, expected_every=10)
        store.observation(obs("gone"), T0 + 6, expected_every=10)
        store.observation(obs("busy"), T0 + 7, expected_every=10)
        store.forget(["gone"])
        committed(store, 4)
        assert [r["entity"] for r in rows(db, "SELECT * FROM rollup_minute")] == ["gone"]
        written = 4
        for i in range(1, 30):  # busy goes on for five minutes; quiet says nothing
            store.observation(obs("busy"), T0 + 7 + 10 * i, expected_every=10)
            written += 1
        committed(store, written)
        (quiet,) = minutes(db, "quiet").values()
        assert (quiet["count"], quiet["seconds_known"]) == (1, 0.0)  # its status holds until it is seen again
        assert_rollups_match_raw(db, 10, but_open=True)
        store.observation(obs("quiet", Status.CRITICAL), T0 + 300, expected_every=10)
        assert store.flush(30)
        assert minutes(db, "quiet")[0]["seconds_known"] == pytest.approx(10.0)  # added to the written minute
        assert_rollups_match_raw(db, 10)
    finally:
        store.close()


def test_a_flush_writes_open_minutes_as_they_stand(db: str):
    store = Store(store_options(db)).open()
    try:
        for i in range(3):
            store.observation(obs("a", Status.OK, float(i)), T0 + 10 * i, expected_every=10)
        assert store.flush(30)
        assert (minutes(db, "a")[0]["count"], minutes(db, "a")[0]["seconds_known"]) == (3, 20.0)
        for i in range(3, 5):
            store.observation(obs("a", Status.CRITICAL, float(i)), T0 + 10 * i, expected_every=10)
        assert store.flush(30)
        row = minutes(db, "a")[0]
        assert (row["count"], row["ok"], row["seconds_known"], row["seconds_ok"]) == (5, 3, 40.0, 30.0)
        assert_rollups_match_raw(db, 10)
    finally:
        store.close()


def test_a_restart_in_the_middle_of_a_minute_carries_on_in_it(db: str):
    store = Store(store_options(db)).open()
    for i in range(3):
        store.observation(obs("a", Status.OK, float(i)), T0 + 10 * i, expected_every=10)
    store.close()
    store = Store(store_options(db)).open()
    for i in range(3, 9):  # the same minute, then the next
        store.observation(obs("a", Status.CRITICAL if i == 4 else Status.OK, float(i)), T0 + 10 * i, expected_every=10)
    store.close()
    row = minutes(db, "a")[0]
    assert (row["count"], row["ok"], row["seconds_known"], row["seconds_ok"]) == (6, 5, 60.0, 50.0)
    assert_rollups_match_raw(db, 10)


def test_a_monitor_that_stopped_recording_reads_back_what_another_recorded(db: str):
    """Two monitors in turn on one store (as a group's leaders are): the first's memory of an entity is
    stale once the second has recorded it; it reads the entity back and credits nothing twice."""
    leading = {"a": True}
    first = Store(store_options(db)).open()
    first.recording = lambda: leading["a"]
    second = Store(store_options(db)).open()
    try:
        for i in range(3):
            first.observation(obs("x"), T0 + 10 * i, expected_every=10)
        assert first.flush(30)
        leading["a"] = False  # the second leads now; the first's observations are not recorded
        first.observation(obs("x"), T0 + 30, expected_every=10)
        for i in range(3, 9):
            second.observation(obs("x", Status.CRITICAL if i < 5 else Status.OK), T0 + 10 * i, expected_every=10)
        assert second.flush(30)
        leading["a"] = True  # and the first again
        for i in range(9, 12):
            first.observation(obs("x"), T0 + 10 * i, expected_every=10)
        assert first.flush(30)
    finally:
        first.close()
        second.close()
    assert_rollups_match_raw(db, 10)
    total = sum(r["seconds_known"] for r in rows(db, "SELECT * FROM rollup_minute WHERE entity = 'x'"))
    assert total == pytest.approx(110.0)
