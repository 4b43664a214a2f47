"""The store's writer on a real SQLite file: a failing write (a trigger that raises) is rolled back,
retried and isolated, never wedges the writer nor costs other history; a busy database is waited
out; the queue is bounded and what it drops is counted; retention failures roll back too."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from clusterwatch.config.schema import StoreOptions
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState
from clusterwatch.model import Observation, Status
from clusterwatch.store import db as store_db
from clusterwatch.store import writer as store_sqlite
from clusterwatch.store.writer import Store
from tests.helpers import wait_until

T0 = 1_700_000_000.0 // 3600 * 3600


def obs(name: str, status: Status = Status.OK, latency: float | None = 5.0, message: str = "fine") -> Observation:
    return Observation(name, "tcp", "127.0.0.1:1", status, message, latency_ms=latency, check=name)


def rows(path: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def execute(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(sql)
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path):
    s = Store(StoreOptions(path=str(db))).open()
    yield s
    s.close()


def assert_not_in_transaction(db: Path) -> None:
    """Nobody holds the write lock: another connection can begin and commit at once."""
    conn = sqlite3.connect(db, timeout=0.5, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["ABORT", "ROLLBACK", "FAIL"])
def test_a_failing_insert_is_isolated_and_the_rest_is_written(store: Store, db: Path, mode: str):
    execute(
        db,
        "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.message = 'poison' "
        f"BEGIN SELECT RAISE({mode}, 'poisoned on purpose'); END;",
    )
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


def test_a_poisoned_observation_leaves_rollups_equal_to_raw(store: Store, db: Path):
    execute(
        db,
        "CREATE TRIGGER poison BEFORE INSERT ON observations WHEN NEW.message = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
    )
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


def test_a_busy_database_is_waited_out_not_dropped(db: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    store = Store(StoreOptions(path=str(db))).open()
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


def test_the_queue_is_bounded_and_drops_are_counted(db: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_sqlite, "QUEUE_MAX", 10)
    store = Store(StoreOptions(path=str(db)))  # not open yet: nothing drains the queue
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


def test_failing_retention_rolls_back_and_writes_go_on(db: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_sqlite, "RETENTION_EVERY", 0.0)  # after every batch
    now = {"t": T0}
    store = Store(StoreOptions(path=str(db)), clock=lambda: now["t"]).open()
    try:
        store.event(Event(EventKind.STATE_CHANGE, "a", "a", T0, "old", new=Status.OK))
        assert store.flush(30)
        execute(db, "CREATE TRIGGER keep BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'kept on purpose'); END;")
        now["t"] = T0 + 400 * 86400  # everything is past every retention
        failures = store.health()["failures"]
        store.observation(obs("a"), T0 + 1, expected_every=10)
        assert store.flush(30)
        assert store.health()["failures"] > failures  # retention failed ...
        assert len(rows(db, "SELECT * FROM events")) == 1  # ... and was rolled back whole
        assert len(rows(db, "SELECT * FROM observations")) == 1  # its first DELETE too
        assert_not_in_transaction(db)
        execute(db, "DROP TRIGGER keep;")
        store.observation(obs("a"), T0 + 2, expected_every=10)
        assert store.flush(30)
        assert rows(db, "SELECT * FROM events") == []  # retention worked this time
        assert store.health()["failed_items"] == 0
    finally:
        store.close()


def test_close_gives_up_on_a_database_that_stays_locked(db: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    store = Store(StoreOptions(path=str(db))).open()
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
