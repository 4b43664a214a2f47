"""One store interface, two engines: SQLite (a file, nothing to install: one machine) and PostgreSQL
(a server several monitors share: high availability).

The store's modules write portable SQL with `?` and `:name` placeholders and ask for a transaction
or for rows; the engine-specific parts (placeholders, how a transaction starts, which errors are a
passing trouble worth waiting out, the clock) live here and in each engine's schema. Rows answer
both `row[0]` and `row["column"]`, on both engines.

PostgreSQL: psycopg 3 (maintained by the PostgreSQL driver's own team, a sync and an async API on
one C-accelerated core, server-side binding) with a bounded psycopg_pool per user; every
connection has a statement timeout, an idle-in-transaction timeout and TCP keepalives, so a
database that hangs or a cut network becomes an error in seconds, not a thread stuck for ever.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

SQLITE_BUSY_TIMEOUT_S = 10.0
PG_CONNECT_TIMEOUT_S = 5
PG_STATEMENT_TIMEOUT_MS = 15_000
PG_POOL_TIMEOUT_S = 5.0
PG_IDLE_IN_TRANSACTION_MS = 5_000
PG_LOCK_TIMEOUT_MS = 5_000
# A database-wide trouble, not one item's: worth waiting out rather than splitting a batch over.
_SQLITE_TRANSIENT = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
)


class Fenced(Exception):
    """A write this monitor may no longer make: it does not hold the leader lease (or not with this
    epoch). Raised by the database's own check in the transaction, so a stale leader cannot act."""


def store_location(options: Any) -> str:
    """Where the store lives (StoreOptions): PostgreSQL's URL when one is set, else the SQLite file."""
    return options.url or os.path.expanduser(options.path)


def is_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def shown(location: str) -> str:
    """A location fit for logs and pages: a URL without its password."""
    if not is_url(location):
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


class Row(tuple):
    """A result row read by position or by column name, like sqlite3.Row."""

    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@functools.lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"_index": {n: i for i, n in enumerate(names)}})


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """What a transaction offers: statements in it commit together or not at all."""

    def execute(self, sql: str, args: Any = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Any]) -> Any: ...


class Database(Protocol):
    dialect: str
    location: str

    def transaction(self) -> contextlib.AbstractContextManager[Tx]: ...

    def rows(self, sql: str, args: Any = ()) -> list[Any]: ...

    def probe(self, timeout: float) -> None: ...

    def close(self) -> None: ...


def transient(error: BaseException) -> bool:
    """A trouble of the whole database (busy, full, gone) rather than of one statement."""
    if isinstance(error, sqlite3.OperationalError):
        return (getattr(error, "sqlite_errorname", "") or "").startswith(_SQLITE_TRANSIENT)
    with contextlib.suppress(ImportError):
        import psycopg
        import psycopg_pool

        e = psycopg.errors
        # A standby answering during a failover, a deadlock, a lock or a statement timeout: wait it out.
        return isinstance(
            error,
            psycopg.OperationalError
            | psycopg_pool.PoolTimeout
            | e.SerializationFailure
            | e.DeadlockDetected
            | e.ReadOnlySqlTransaction
            | e.LockNotAvailable,
        )
    return False


def errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the database said no" (on either engine), for callers that carry on."""
    found: list[type[BaseException]] = [sqlite3.Error, Fenced]
    with contextlib.suppress(ImportError):
        import psycopg
        import psycopg_pool

        found += [psycopg.Error, psycopg_pool.PoolTimeout]
    return tuple(found)


def open_database(
    location: str | os.PathLike[str], *, readonly: bool = False, pool: int = 2, name: str = "clusterwatch"
) -> Database:
    """`location`: a SQLite file's path or a postgresql:// URL. The schema is not touched here."""
    location = os.fspath(location)
    if is_url(location):
        return Postgres(location, size=pool, name=name)
    return SQLite(location, readonly=readonly)


# --- SQLite ---------------------------------------------------------------------------------------


def sqlite_connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    conn.row_factory = sqlite3.Row
    return conn


class SQLite:
    """One connection, serialised by a lock; WAL lets other connections (other users) read meanwhile."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self.location = str(self.path)
        self.readonly = readonly
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite_connect(self.path, readonly=self.readonly)
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Rolled back on any error (unless SQLite already did: a trigger's RAISE(ROLLBACK), a full
        disk), so a failed write never leaves the connection half-way; one that cannot roll back is
        replaced."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error:
                    conn.close()
                    self._conn = None
                raise

    def rows(self, sql: str, args: Any = ()) -> list[Any]:
        with self._lock:
            return self._connection().execute(sql, args).fetchall()

    def script(self, sql: str) -> None:
        with self._lock:
            self._connection().executescript(sql)

    def probe(self, timeout: float) -> None:
        """Raises unless the file answers (a file has no connection that a network could break)."""
        self.rows("SELECT 1")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# --- PostgreSQL -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|::|\?|:[A-Za-z_][A-Za-z0-9_]*|%")


@functools.lru_cache(maxsize=1024)
def to_pg(sql: str) -> str:
    """Portable placeholders to psycopg's: `?` -> %s, `:name` -> %(name)s, a literal % doubled (in
    quoted text too: psycopg reads every % of a statement it binds); `::` casts are left alone."""

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token[0] in "'\"":
            return token.replace("%", "%%")
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if token.startswith(":") and token != "::":
            return f"%({token[1:]})s"
        return token

    return _TOKEN.sub(swap, sql)


def _rows_factory(cursor: Any) -> Any:
    names = tuple(c.name for c in cursor.description or ())
    cls = _row_class(names)
    return lambda values: cls(values)


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Any = ()) -> Cursor:
        return self._conn.execute(to_pg(sql), args)

    def executemany(self, sql: str, rows: Iterable[Any]) -> Any:
        rows = list(rows)
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(to_pg(sql), rows)


class Postgres:
    """A bounded pool of connections; a transaction holds one connection for its length."""

    dialect = "postgresql"

    def __init__(self, url: str, *, size: int = 2, name: str = "clusterwatch") -> None:
        import psycopg_pool

        self.location = url
        self.path = shown(url)
        # A monitor cut off in the middle of a transaction must not hold its locks (the lease row's
        # among them) for long: the server ends a session idle in a transaction, or whose client stopped
        # answering its keepalives, within seconds. The store's transactions never wait on anything but
        # their own statements, so a few idle seconds mean the client is gone.
        options = (
            f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS} "
            f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_MS} "
            f"-c lock_timeout={PG_LOCK_TIMEOUT_MS} "
            "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
        )
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": PG_CONNECT_TIMEOUT_S,
            "application_name": name,
            "options": options,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
        }
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, size),
            timeout=PG_POOL_TIMEOUT_S,
            open=False,
            check=psycopg_pool.ConnectionPool.check_connection,
            configure=self._configure,
            kwargs=self._kwargs,
            name=name,
            reconnect_timeout=0,  # no retries in the background: each request that finds no connection connects anew
        )
        self._pool.open(wait=False)

    @staticmethod
    def _configure(conn: Any) -> None:
        conn.row_factory = _rows_factory

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._pool.connection() as conn, conn.transaction():
            yield _PgTx(conn)

    def rows(self, sql: str, args: Any = ()) -> list[Any]:
        with self._pool.connection() as conn:
            return conn.execute(to_pg(sql), args).fetchall()

    def script(self, sql: str) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(sql)

    def probe(self, timeout: float) -> None:
        """`SELECT 1` on a connection of its own, opened now and closed after; raises unless the
        server answers within about `timeout` seconds (libpq counts whole seconds, 2 at least).

        Not the pool's: after a network cut its connections may be broken, or it may still be waiting
        on a connect begun while the link was down, so a request through it can fail after the link
        is back. A connection opened now says whether the server answers now."""
        import psycopg

        kwargs = {**self._kwargs, "connect_timeout": max(2, math.ceil(timeout))}
        kwargs["application_name"] = f"{kwargs['application_name']}-probe"
        with psycopg.connect(self.location, **kwargs) as conn:
            conn.execute("SELECT 1").fetchall()

    def close(self) -> None:
        self._pool.close(timeout=2.0)


class Result:
    """What a statement of `run_all` gave: its rows (RETURNING, SELECT) and how many rows it changed."""

    def __init__(self, cursor: Any) -> None:
        self.rows: list[Any] = cursor.fetchall() if cursor.description else []
        self.rowcount: int = cursor.rowcount  # after the rows: SQLite counts a RETURNING's rows as it steps


def run_all(db: Database, statements: Sequence[tuple[str, Any]]) -> list[Result]:
    """Statements in one transaction, read before it ends (a pooled connection goes back after)."""
    with db.transaction() as tx:
        return [Result(tx.execute(sql, args)) for sql, args in statements]
