"""Looking into a store from the outside, on either engine (a SQLite file or a postgresql:// URL):
rows to assert on, statements to set a scene, a trigger that makes one kind of write fail, and
whether the store left a transaction open. Each call opens its own connection and closes it."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from clusterwatch.config.schema import StoreOptions
from clusterwatch.store.db import is_url, open_database, run_all
from clusterwatch.store.schema import migrate

_PG_FAIL = (
    "CREATE OR REPLACE FUNCTION cw_test_fail() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$"
)


def engine(location: str | os.PathLike[str]) -> str:
    return "postgresql" if is_url(os.fspath(location)) else "sqlite"


def store_options(location: str | os.PathLike[str], **extra: Any) -> StoreOptions:
    """The options that point a Store at `location`."""
    location = os.fspath(location)
    return StoreOptions(url=location, **extra) if is_url(location) else StoreOptions(path=location, **extra)


def rows(location: str | os.PathLike[str], sql: str, *args: Any) -> list[dict[str, Any]]:
    """Portable SQL (`?` placeholders), its rows as dicts."""
    db = open_database(location, pool=1, name="clusterwatch-test")
    try:
        return [dict(r) for r in db.rows(sql, args)]
    finally:
        db.close()


def execute(location: str | os.PathLike[str], *statements: str | tuple[str, Any]) -> None:
    """Statements (SQL, or (SQL, args)) in one transaction."""
    db = open_database(location, pool=1, name="clusterwatch-test")
    try:
        run_all(db, [(s, ()) if isinstance(s, str) else s for s in statements])
    finally:
        db.close()


def migrated(location: str | os.PathLike[str]) -> None:
    """The store's schema, as a store opening it would make it."""
    db = open_database(location, pool=1, name="clusterwatch-test")
    try:
        migrate(db)
    finally:
        db.close()


def fail_when(
    location: str | os.PathLike[str], name: str, event: str, table: str, when: str | None = None, message: str = "no"
) -> None:
    """A trigger that makes the database itself refuse a row (`event`: 'INSERT' or 'DELETE'), as a
    broken schema or a full disk would: SQLite's RAISE(ABORT), PostgreSQL's RAISE EXCEPTION."""
    if engine(location) == "sqlite":
        condition = f" WHEN {when}" if when else ""
        execute(
            location,
            f"CREATE TRIGGER {name} BEFORE {event} ON {table}{condition} BEGIN SELECT RAISE(ABORT, '{message}'); END",
        )
    else:
        condition = f" WHEN ({when})" if when else ""
        execute(
            location,
            _PG_FAIL,
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW{condition} "
            f"EXECUTE FUNCTION cw_test_fail('{message}')",
        )


def drop_trigger(location: str | os.PathLike[str], name: str, table: str) -> None:
    execute(location, f"DROP TRIGGER {name}" + ("" if engine(location) == "sqlite" else f" ON {table}"))


def open_transactions(location: str | os.PathLike[str]) -> int:
    """How many of the store's connections sit inside a transaction (0 is what a store must leave).
    SQLite: whether another connection can take the write lock at once; PostgreSQL: pg_stat_activity."""
    if engine(location) == "sqlite":
        conn = sqlite3.connect(os.fspath(location), timeout=0.5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
            return 0
        except sqlite3.OperationalError:
            return 1
        finally:
            conn.close()
    found = rows(
        location,
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'clusterwatch%' AND application_name <> 'clusterwatch-test' "
        "AND state LIKE 'idle in transaction%'",
    )
    return int(found[0]["n"])
