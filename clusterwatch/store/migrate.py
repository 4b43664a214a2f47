"""`clusterwatch store migrate`: one store's contents copied into another, fresh one: SQLite to
PostgreSQL (to run a group of monitors on it), back, or SQLite to another SQLite file.

Ids are kept, because the API's page cursors, the outbox's per-channel order and the healer's
attempts refer to them; on PostgreSQL each identity sequence is then moved past the copied ids, so
the next write gets a new one instead of a duplicate key. SQLite's incidents have an implicit rowid
(the API pages incidents by it): it is read explicitly and copied into PostgreSQL's `rowid` column.
Not copied: `meta` (each store's own schema version), the leader lease and the group's members
(they describe the monitors of one store, and a new group elects its leader afresh).

Every table is read in key order, a batch at a time (bounded memory however long the history), and
each batch is written in a transaction of its own; at the end every table is counted on both sides.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from clusterwatch.store.db import PG_CONNECT_TIMEOUT_S, Database, errors, is_url, open_database, run_all, shown
from clusterwatch.store.schema import MIGRATIONS, PG_MIGRATIONS, migrate

BATCH = 5000
LEFT_OUT = ("meta", "ha_lease", "ha_members")
# The key each table is read in order of (keyset pagination: no OFFSET that slows down as it goes).
# A table not named here (a later schema's) is read in the order of all its columns, page by page.
KEYS: dict[str, tuple[str, ...]] = {
    "observations": ("id",),
    "rollup_minute": ("entity", "ts"),
    "rollup_hour": ("entity", "ts"),
    "events": ("id",),
    "incidents": ("rowid",),
    "actions": ("id",),
    "entities": ("name",),
    "commands": ("id",),
    "outbox": ("id",),
    "silences": ("id",),
    "alert_state": ("incident",),
    "heal_budgets": ("target",),
}
# SQLite tables whose rowid is implicit there and an identity column named `rowid` on PostgreSQL.
IMPLICIT_ROWID = frozenset({"incidents"})
_PG_IDENTITY = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND is_identity = 'YES'"
)


class MigrateError(Exception):
    """Why the copy cannot go on (a store unreachable, a URL that is not one, a failed write): one line."""


class Refused(MigrateError):
    """The copy was not started because it would do harm or nothing: a target with rows, no source."""


@dataclass
class Copied:
    table: str
    rows: int
    seconds: float


@dataclass
class Outcome:
    """What was copied, and each table whose counts differ at the end: table -> (source, target)."""

    source: str
    target: str
    copied: list[Copied] = field(default_factory=list)
    mismatched: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.copied)


def tables() -> list[str]:
    """Every table the schema defines (both engines, every migration), in order, but those left out:
    a table a later migration adds is copied without anyone having to remember to list it here."""
    created: list[str] = []
    for sql in (*MIGRATIONS, *PG_MIGRATIONS):
        for name in re.findall(r"CREATE TABLE (\w+)", sql):
            if name not in created:
                created.append(name)
    dropped = {name for sql in MIGRATIONS for name in re.findall(r"DROP TABLE (\w+)\s*;", sql)}
    return [t for t in created if t not in dropped and t not in LEFT_OUT]


# --- where a store is --------------------------------------------------------------------------------


def location(text: str) -> str:
    """`sqlite:///abs/path`, a plain path or a postgresql:// URL -> what open_database takes."""
    text = text.strip()
    if not text:
        raise MigrateError("an empty store location: give sqlite:///path, a path, or a postgresql:// URL")
    if is_url(text):
        _check_url(text)
        return text
    if text.startswith("sqlite://"):
        path = text[len("sqlite://") :]
        if not path.startswith("/"):
            raise MigrateError(
                f"{text}: a sqlite:// URL takes an absolute path (sqlite:///var/lib/clusterwatch/state.db)"
            )
        return "/" + path.lstrip("/")
    if "://" in text:
        scheme = text.partition("://")[0]
        raise MigrateError(f"{scheme}:// is not a store: give sqlite:///path, a path, or a postgresql:// URL")
    return os.path.abspath(os.path.expanduser(text))


def _password(url: str) -> list[str]:
    """The URL's password as written and as decoded: neither may appear in anything printed."""
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    raw = userinfo.partition(":")[2]
    return [p for p in {raw, unquote(raw)} if p]


def _safe(url: str) -> str:
    """shown(url), or what can be shown of a URL too broken for it (a port that is not a number)."""
    try:
        return shown(url)
    except ValueError:
        parts = urlsplit(url)
        userinfo, at, host = parts.netloc.rpartition("@")
        return f"{parts.scheme}://{userinfo.partition(':')[0]}{at}{host}{parts.path}"


def _scrub(message: str, *urls: str) -> str:
    """A driver's message on one line, without the URLs' passwords."""
    for secret in (s for url in urls for s in _password(url)):
        message = message.replace(secret, "***")
    return " ".join(message.split())


def _check_url(url: str) -> None:
    """A URL libpq can parse, with a port that is a number: else a clear line, not a traceback later."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        urlsplit(url).port  # noqa: B018 - raises on a port that is not a number
        conninfo_to_dict(url)
    except (ValueError, psycopg.Error) as exc:
        raise MigrateError(f"{_safe(url)}: not a usable PostgreSQL URL: {_scrub(str(exc), url)}") from None


def _reach(url: str) -> None:
    """One plain connection first: the driver's own reason (refused, no such database, a wrong
    password) rather than the pool's "no connection in 10 s"."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=PG_CONNECT_TIMEOUT_S).close()
    except psycopg.Error as exc:
        raise MigrateError(f"cannot reach {_safe(url)}: {_scrub(str(exc), url)}") from None


@contextlib.contextmanager
def _trouble(what: str, *urls: str) -> Iterator[None]:
    """A database's refusal as a MigrateError that says what was being done."""
    try:
        yield
    except errors() as exc:
        raise MigrateError(f"{what}: {_scrub(str(exc), *urls) or type(exc).__name__}") from None


def _open(where: str, role: str) -> Database:
    with _trouble(f"{role} {shown(where)}", where):
        db = open_database(where, pool=1, name="clusterwatch-migrate")
        try:
            migrate(db)
        except RuntimeError as exc:  # a schema newer than this clusterwatch
            db.close()
            raise MigrateError(f"{role} {shown(where)}: {exc}") from None
        except BaseException:
            db.close()
            raise
    return db


def _same(a: str, b: str) -> bool:
    if is_url(a) or is_url(b):
        return is_url(a) and is_url(b) and _safe(a) == _safe(b)
    return os.path.realpath(a) == os.path.realpath(b)


# --- the copy ----------------------------------------------------------------------------------------


def count(db: Database, table: str) -> int:
    return int(db.rows(f"SELECT COUNT(*) FROM {table}")[0][0])


def _columns(db: Database, table: str) -> str:
    return "rowid AS rowid, *" if table in IMPLICIT_ROWID and db.dialect == "sqlite" else "*"


def batches(db: Database, table: str, size: int) -> Iterator[list[Any]]:
    """The table's rows, `size` at a time, in the order of its key."""
    columns = _columns(db, table)
    key = KEYS.get(table)
    if key is None:
        first = db.rows(f"SELECT {columns} FROM {table} LIMIT 1")
        if not first:
            return
        order, offset = ", ".join(first[0].keys()), 0
        while rows := db.rows(f"SELECT {columns} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?", (size, offset)):
            yield rows
            offset += len(rows)
        return
    names = ", ".join(key)
    after: tuple[Any, ...] | None = None
    while True:
        where = "" if after is None else f" WHERE ({names}) > ({', '.join('?' * len(key))})"
        rows = db.rows(f"SELECT {columns} FROM {table}{where} ORDER BY {names} LIMIT ?", (*(after or ()), size))
        if rows:
            yield rows
        if len(rows) < size:
            return
        after = tuple(rows[-1][k] for k in key)


def _write(db: Database, table: str, rows: list[Any]) -> None:
    names = list(rows[0].keys())
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    with db.transaction() as tx:
        tx.executemany(sql, [tuple(r) for r in rows])


def _advance(db: Database, table: str, identity: dict[str, list[str]]) -> None:
    """PostgreSQL: the table's identity sequences past the copied ids (SQLite takes max(rowid) + 1 itself)."""
    for column in identity.get(table, []):
        run_all(db, [(f"SELECT setval(pg_get_serial_sequence(?, ?), MAX({column})) FROM {table}", (table, column))])


def copy_store(source: str, target: str, *, batch: int = BATCH, say: Callable[[str], None] = print) -> Outcome:
    """Copy every table but those left out from `source` into the empty `target`; `say` hears a line
    per table. Raises Refused before anything is written, MigrateError when a store fails."""
    if batch < 1:
        raise MigrateError(f"a batch of {batch} rows: give at least 1")
    src_at, dst_at = location(source), location(target)
    if _same(src_at, dst_at):
        raise Refused("--from and --to are the same store")
    if not is_url(src_at) and not os.path.isfile(src_at):
        raise Refused(f"no store at {src_at} (a SQLite file that `clusterwatch run` wrote)")
    for where in (src_at, dst_at):
        if is_url(where):
            _reach(where)
    names = tables()
    src = _open(src_at, "the source")
    try:
        dst = _open(dst_at, "the target")
        try:
            return _copy(src, dst, names, batch, say)
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: Database, dst: Database, names: list[str], batch: int, say: Callable[[str], None]) -> Outcome:
    outcome = Outcome(shown(src.location), shown(dst.location))
    urls = (src.location, dst.location)
    with _trouble(f"the target {outcome.target}", dst.location):
        held = {t: n for t in names if (n := count(dst, t))}
    if held:
        raise Refused(
            f"the target {outcome.target} already holds rows ("
            + ", ".join(f"{t}: {n}" for t, n in held.items())
            + "): point --to at a fresh, empty database (a new PostgreSQL database, or a SQLite path with no file)"
        )
    identity: dict[str, list[str]] = {}
    if dst.dialect == "postgresql":
        with _trouble(f"the target {outcome.target}", dst.location):
            for row in dst.rows(_PG_IDENTITY):
                identity.setdefault(row[0], []).append(row[1])
    say(f"copying {outcome.source} ({src.dialect}) to {outcome.target} ({dst.dialect}), {batch} rows a transaction")
    began = time.monotonic()
    for table in names:
        started, done = time.monotonic(), 0
        try:
            for rows in batches(src, table, batch):
                _write(dst, table, rows)
                done += len(rows)
            if dst.dialect == "postgresql":
                _advance(dst, table, identity)
        except errors() as exc:
            raise MigrateError(
                f"copying {table} stopped after {done} rows: {_scrub(str(exc), *urls) or type(exc).__name__}; "
                f"the target {outcome.target} holds a partial copy: empty it (or point --to at a new one) "
                "before trying again"
            ) from None
        outcome.copied.append(Copied(table, done, time.monotonic() - started))
        say(f"  {table:<14} {done:>10} rows {time.monotonic() - started:8.2f} s")
    with _trouble("counting the copy", *urls):
        for copied in outcome.copied:
            theirs, ours = count(src, copied.table), count(dst, copied.table)
            if not theirs == ours == copied.rows:
                outcome.mismatched[copied.table] = (theirs, ours)
    outcome.seconds = time.monotonic() - began
    return outcome
