"""The store's writer on both engines (a real SQLite file, a real PostgreSQL): a failing write (a
trigger that raises) is rolled back, retried and isolated, never wedges the writer nor costs other
history nor leaves a transaction open; the queue is bounded and what it drops is counted; retention
failures roll back too. SQLite only: its RAISE modes, and a busy database (another process holding
the write lock) waited out."""

from __future__ import annotations

import sqlite3
import time

import pytest

from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState
from clusterwatch.model import Observation, Status
from clusterwatch.store import db as store_db
from clusterwatch.store import writer as store_sqlite
from clusterwatch.store.writer import Store
from tests.helpers import wait_until
from tests.storecheck import drop_trigger, engine, execute, fail_when, open_transactions, rows, store_options

T0 = 1_700_000_000.0 // 3600 * 3600


def obs(name: str, status: Status = Status.OK, latency: float | None = 5.0, message: str = "fine") -> Observation:
    return Observation(name, "tcp", "127.0.0.1:1", status, message, latency_ms=latency, check=name)


sqlite_only = pytest.mark.parametrize("store_location", ["sqlite"], indirect=True)


@pytest.fixture
def db(store_location: str) -> str:
    return store_location


@pytest.fixture
def store(db: str):
    s = Store(store_options(db)).open()
    yield s
    s.close()


def assert_not_in_transaction(db: str) -> None:
    """SQLite: nobody holds the write lock (another connection can begin and commit at once);
    PostgreSQL: none of the store's connections is idle in a transaction."""
    assert open_transactions(db) == 0


@pytest.mark.parametrize(
    ("store_location", "mode"),
    [("sqlite", "ABORT"), ("sqlite", "ROLLBACK"), ("sqlite", "FAIL"), ("postgresql", "EXCEPTION")],
    indirect=["store_location"],
)
def test_a_failing_insert_is_isolated_and_the_rest_is_written(store: Store, db: str, mode: str):
    if engine(db) == "sqlite":
        execute(
            db,
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.message = 'poison' "
            f"BEGIN SELECT RAISE({mode}, 'poisoned on purpose'); END",
        )
    else:  # RAISE EXCEPTION: the statement fails and the whole transaction with it
        fail_when(db, "poison", "INSERT", "events", "NEW.message = 'poison'", "poisoned on purpose")
    store.observation(obs("a"), T0, expected_every=10)
    store.event(Event(EventKind.STATE_CHANGE, "a", "a", T0, "poison", new=Status.CRITICAL))
    store.event(Event(EventKind.STATE_CHANGE, "a", "a", T0 + 1, "fine", new=Status.OK))
    store.observation(obs("a"), T0 + 10, expected_every=10)
    store.command("heal_reset", "a")
    assert store.flush(30)
    health = store.health()
    assert health["failed_items"] == 1
    assert health["failures"] > store_sqlite.RETRIES  # the whole batch was retried before it was split
    assert health["writer_alive"] and health["queue_depth"] == 0
    assert [r["message"] for r in rows(db, "SELECT message FROM events")] == ["fine"]
    assert len(rows(db, "SELECT * FROM observations")) == 2
    assert len(rows(db, "SELECT * FROM commands")) == 1
    assert_not_in_transaction(db)

    # The writer goes on: later batches are written, nothing else is lost.
    for i in range(20):
        store.observation(obs("b"), T0 + 20 + i, expected_every=10)
    store.event(Event(EventKind.STATE_CHANGE, "b", "b", T0 + 40, "later", new=Status.OK))
    assert store.flush(30)
    assert len(rows(db, "SELECT * FROM observations WHERE entity = 'b'")) == 20
    assert [r["message"] for r in rows(db, "SELECT message FROM events ORDER BY id")] == ["fine", "later"]
    assert store.health()["failed_items"] == 1
    minute = rows(db, "SELECT count FROM rollup_minute WHERE entity = 'b'")
    assert sum(r["count"] for r in minute) == 20


def test_a_poisoned_observation_leaves_rollups_equal_to_raw(store: Store, db: str):
    fail_when(db, "poison", "INSERT", "observations", "NEW.message = 'poison'", "poisoned")
    for i in range(30):
        message = "poison" if i == 7 else "fine"
        status = Status.CRITICAL if i == 7 else Status.OK
        store.observation(obs("a", status, float(i), message), T0 + i, expected_every=10)
    assert store.flush(30)
    raw = rows(db, "SELECT status FROM observations WHERE entity = 'a'")
    assert len(raw) == 29 and all(r["status"] == "ok" for r in raw)
    (minute,) = rows(db, "SELECT * FROM rollup_minute WHERE entity = 'a'")
    assert (minute["count"], minute["ok"]) == (29, 29)
    # The lost observation never held: from 6 to 8 the status was the one observed at 6.
    assert minute["seconds_ok"] == pytest.approx(29.0) and minute["seconds_known"] == pytest.approx(29.0)
    assert store.health()["failed_items"] == 1


@sqlite_only
def test_a_busy_database_is_waited_out_not_dropped(db: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    store = Store(store_options(db)).open()
    try:
        store.observation(obs("warmup"), T0, expected_every=10)
        assert store.flush(30)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            for i in range(10):
                store.observation(obs("a"), T0 + i, expected_every=10)
            wait_until(lambda: store.health()["failures"] > store_sqlite.RETRIES + 1, timeout=60, what="retries")
            assert store.health()["failed_items"] == 0  # not split, not given up: the database is busy
            assert store.health()["queue_depth"] >= 0 and store.health()["writer_alive"]
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert store.flush(60)
        assert len(rows(db, "SELECT * FROM observations WHERE entity = 'a'")) == 10
        assert store.health()["failed_items"] == 0
    finally:
        store.close()


def test_the_queue_is_bounded_and_drops_are_counted(db: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_sqlite, "QUEUE_MAX", 10)
    store = Store(store_options(db))  # not open yet: nothing drains the queue
    state = EntityState("a", "a")
    for i in range(12):
        store.observation(obs("a"), T0 + i, expected_every=10)
    store.entity(state, "tcp")
    health = store.health()
    assert health["queue_depth"] == 10 and health["dropped"] == 3 and not health["writer_alive"]
    store.open()
    try:
        assert store.flush(30)
        assert len(rows(db, "SELECT * FROM observations")) == 10
        health = store.health()
        assert health["written"] == 10 and health["dropped"] == 3 and health["queue_depth"] == 0
        assert health["writer_alive"] and health["last_commit_age_s"] < 30
    finally:
        store.close()


def test_failing_retention_rolls_back_and_writes_go_on(db: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_sqlite, "RETENTION_EVERY", 0.0)  # after every batch
    now = {"t": T0}
    store = Store(store_options(db), clock=lambda: now["t"]).open()
    try:
        store.event(Event(EventKind.STATE_CHANGE, "a", "a", T0, "old", new=Status.OK))
        assert store.flush(30)
        fail_when(db, "keep", "DELETE", "events", message="kept on purpose")
        now["t"] = T0 + 400 * 86400  # everything is past every retention
        failures = store.health()["failures"]
        store.observation(obs("a"), T0 + 1, expected_every=10)
        assert store.flush(30)
        assert store.health()["failures"] > failures  # retention failed ...
        assert len(rows(db, "SELECT * FROM events")) == 1  # ... and was rolled back whole
        assert len(rows(db, "SELECT * FROM observations")) == 1  # its first DELETE too
        assert_not_in_transaction(db)
        drop_trigger(db, "keep", "events")
        store.observation(obs("a"), T0 + 2, expected_every=10)
        assert store.flush(30)
        assert rows(db, "SELECT * FROM events") == []  # retention worked this time
        assert store.health()["failed_items"] == 0
    finally:
        store.close()


@sqlite_only
def test_close_gives_up_on_a_database_that_stays_locked(db: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    store = Store(store_options(db)).open()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        store.observation(obs("a"), T0, expected_every=10)
        wait_until(lambda: store.health()["failures"] >= 1, timeout=30, what="a failed attempt")
        started = time.monotonic()
        store.close(timeout=0.5)
        assert time.monotonic() - started < 10
        assert not store.health()["writer_alive"]
        assert store.health()["failed_items"] == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
