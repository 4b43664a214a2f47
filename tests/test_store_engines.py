"""The store's database layer (clusterwatch/store/db.py) on both engines, a real SQLite file and a real
PostgreSQL: rows by position and by name, portable placeholders, transactions that roll back whole,
RETURNING, migrations that run once (and one at a time when monitors start together), and on
PostgreSQL a server that stops and comes back, and a statement that runs too long."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from clusterwatch.store import db as store_db
from clusterwatch.store.db import Database, errors, open_database, run_all, transient
from clusterwatch.store.schema import MIGRATIONS, migrate, schema_version
from tests.helpers import wait_until
from tests.pg import PostgresServer
from tests.storecheck import engine, rows

pg_only = pytest.mark.parametrize("store_location", ["postgresql"], indirect=True)


@pytest.fixture
def db(store_location: str) -> Iterator[Database]:
    database = open_database(store_location)
    migrate(database)
    yield database
    database.close()


def add_command(db: Database, kind: str, target: str = "api", ts: float = 1.0) -> int:
    """A row in `commands` (an id the database gives), by RETURNING."""
    result = run_all(
        db, [("INSERT INTO commands (ts, kind, target) VALUES (?, ?, ?) RETURNING id", (ts, kind, target))]
    )
    return int(result[0].rows[0][0])


def test_rows_by_position_and_by_name(db: Database, store_location: str) -> None:
    assert db.dialect == engine(store_location)
    add_command(db, "heal_reset", "api", 5.5)
    (row,) = db.rows("SELECT id, ts, kind, target, done FROM commands")
    assert row[2] == "heal_reset" and row["kind"] == "heal_reset"
    assert row[1] == row["ts"] == 5.5 and row["done"] is None
    assert list(row.keys()) == ["id", "ts", "kind", "target", "done"]
    assert dict(row) == {"id": row[0], "ts": 5.5, "kind": "heal_reset", "target": "api", "done": None}
    assert isinstance(row["id"], int)
    (count,) = db.rows("SELECT COUNT(*) AS n FROM commands")
    assert count["n"] == 1 and isinstance(count["n"], int)


def test_placeholders_and_a_literal_percent(db: Database) -> None:
    (row,) = db.rows("SELECT ? AS a, ? AS b, '100%' AS pct, 7 % 3 AS mod, '?' AS q, ':x' AS named", ("one", 2))
    assert dict(row) == {"a": "one", "b": 2, "pct": "100%", "mod": 1, "q": "?", "named": ":x"}
    add_command(db, "50% done")
    add_command(db, "it's :kind")
    found = db.rows("SELECT kind FROM commands WHERE kind LIKE '%\\%%' ESCAPE '\\' ORDER BY id")
    assert [r["kind"] for r in found] == ["50% done"]
    found = db.rows("SELECT kind FROM commands WHERE kind = :kind OR kind = 'it''s :kind'", {"kind": "50% done"})
    assert sorted(r["kind"] for r in found) == ["50% done", "it's :kind"]
    with db.transaction() as tx:
        tx.executemany(
            "INSERT INTO commands (ts, kind, target) VALUES (:ts, :kind, '%')",
            [
                {"ts": 2.0, "kind": "a"},
                {"ts": 3.0, "kind": "b"},
            ],
        )
        assert tx.execute("SELECT COUNT(*) FROM commands WHERE target = '%'").fetchone()[0] == 2


def test_a_transaction_that_raises_is_rolled_back_and_the_next_one_works(db: Database, store_location: str) -> None:
    first = add_command(db, "kept")
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute("INSERT INTO commands (ts, kind, target) VALUES (?, ?, ?)", (1.0, "lost", "api"))
        raise RuntimeError("a bug half-way")
    with pytest.raises(errors()) as refused, db.transaction() as tx:  # the database itself says no
        tx.execute("INSERT INTO commands (ts, kind, target) VALUES (?, ?, ?)", (1.0, "lost too", "api"))
        tx.execute("INSERT INTO commands (id, ts, kind, target) VALUES (?, ?, ?, ?)", (first, 1.0, "dup", "api"))
    assert not transient(refused.value)  # one statement's trouble, not the database's
    assert [r["kind"] for r in db.rows("SELECT kind FROM commands ORDER BY id")] == ["kept"]
    assert add_command(db, "next") > first
    assert [r["kind"] for r in rows(store_location, "SELECT kind FROM commands ORDER BY id")] == ["kept", "next"]


def test_returning_and_rowcount(db: Database) -> None:
    ids = [add_command(db, f"k{i}") for i in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    taken, untouched = run_all(
        db,
        [
            ("UPDATE commands SET done = ? WHERE done IS NULL AND id <> ? RETURNING id, kind", (9.0, ids[1])),
            ("UPDATE commands SET done = ? WHERE kind = 'nothing'", (9.0,)),
        ],
    )
    assert sorted((r["id"], r["kind"]) for r in taken.rows) == [(ids[0], "k0"), (ids[2], "k2")]
    assert taken.rowcount == 2 and untouched.rowcount == 0 and untouched.rows == []


def test_migrate_twice_is_a_no_op(db: Database) -> None:
    add_command(db, "kept")
    before = schema_version(db)
    assert before == len(MIGRATIONS)
    assert migrate(db) == len(MIGRATIONS) == schema_version(db)
    assert [r["kind"] for r in db.rows("SELECT kind FROM commands")] == ["kept"]


@pg_only
def test_monitors_starting_together_migrate_one_at_a_time(store_location: str) -> None:
    """Four monitors open a fresh database at once: the advisory lock lets one migrate, the others
    find it done; none fails on a table another has just made."""
    start = threading.Barrier(4)
    outcomes: list[Any] = []

    def monitor() -> None:
        database = open_database(store_location, pool=1)
        try:
            start.wait(30)
            outcomes.append(migrate(database))
        except Exception as exc:
            outcomes.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=monitor) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes == [len(MIGRATIONS)] * 4
    (version,) = rows(store_location, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert int(version["value"]) == len(MIGRATIONS)


@pg_only
def test_a_stopped_server_is_transient_and_the_same_database_works_after_it_is_back(
    store_location: str, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "PG_POOL_TIMEOUT_S", 2.0)  # a request gives up in 2 s, not 10
    db = open_database(store_location, pool=1)  # as the writer and the ledger have
    try:
        migrate(db)
        add_command(db, "before")
        postgres_server.halt()
        with pytest.raises(errors()) as failed:
            db.rows("SELECT kind FROM commands")
        assert transient(failed.value), repr(failed.value)
        postgres_server.start_again()
        # The pool connects again on the next request: the same object, not reopened.
        found = wait_until(lambda: db.rows("SELECT kind FROM commands"), timeout=60, what="the store again")
        assert [r["kind"] for r in found] == ["before"]
        add_command(db, "after")
        assert len(db.rows("SELECT kind FROM commands")) == 2
    finally:
        postgres_server.ensure_running()
        db.close()


@pg_only
def test_a_statement_slower_than_the_timeout_is_cancelled(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_db, "PG_STATEMENT_TIMEOUT_MS", 300)
    db = open_database(store_location)
    try:
        started = time.monotonic()
        with pytest.raises(errors()) as cancelled:
            db.rows("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 20  # bounded by the timeout, not by the statement
        assert "statement timeout" in str(cancelled.value)
        assert db.rows("SELECT 1 AS one")[0]["one"] == 1  # the connection is fine afterwards
    finally:
        db.close()
