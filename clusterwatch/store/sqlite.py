"""History in SQLite, WAL mode: batched writes in a thread of their own, off the event loop.

Survives `kill -9` at any moment: every batch is one transaction that carries its raw observations
and the rollup rows they change, and WAL with synchronous=NORMAL keeps every committed batch across
a crash of the process. A failed transaction is rolled back (the connection is never left inside
one), retried with backoff, and then split so that one bad item cannot cost the rest of its batch;
a database that is busy, full or failing is retried for as long as it takes, while the bounded
queue in front of the writer drops (and counts) what does not fit.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from clusterwatch.config.schema import StoreOptions
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState
from clusterwatch.model import Observation, Status
from clusterwatch.store.rollups import DEFAULT_EXPECTED_EVERY, Rollups
from clusterwatch.store.schema import migrate

log = logging.getLogger("clusterwatch.store")
_STOP = object()
BATCH = 5000
LINGER = 0.05  # seconds the writer lets writes gather after the first of a batch
QUEUE_MAX = 100_000  # items waiting for the writer; beyond this they are dropped and counted
RETRIES = 3  # further attempts of a failed batch before it is split to find the bad item
RETRY_DELAY = 0.05  # seconds before the first retry; doubles each time
RETRY_DELAY_MAX = 5.0
RETENTION_EVERY = 600.0
RAW_KEPT_FOR_ROLLUPS = 180.0  # seconds of raw observations the per-entity cap never removes
BUSY_TIMEOUT_S = 10.0
# A database-wide trouble, not one item's: worth waiting out rather than splitting the batch over.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")
_RANK = "CASE {} WHEN 'critical' THEN 0 WHEN 'unknown' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END"


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    conn.row_factory = sqlite3.Row
    return conn


def transaction(conn: sqlite3.Connection, statements: Iterable[tuple[str, Any]]) -> list[sqlite3.Cursor]:
    """Statements in one transaction, rolled back on any error (unless SQLite already did: a trigger's
    RAISE(ROLLBACK), a full disk), so a failed write never leaves the connection half-way."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursors = [conn.execute(sql, args) for sql, args in statements]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return cursors


def _transient(error: BaseException) -> bool:
    name = getattr(error, "sqlite_errorname", "") or ""
    return isinstance(error, sqlite3.OperationalError) and name.startswith(_TRANSIENT)


class Store:
    def __init__(self, options: StoreOptions, *, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.path = Path(os.path.expanduser(options.path))
        self.clock = clock
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._reader: sqlite3.Connection | None = None
        self._conn: sqlite3.Connection | None = None
        self._rollups = Rollups()
        self._last_retention = time.monotonic()
        self._last_commit = time.monotonic()
        self.written = 0  # items committed
        self.failures = 0  # transactions that failed (each attempt)
        self.failed_items = 0  # items given up: they failed alone, or while stopping
        self.dropped = 0  # items refused because the queue was full

    # --- life cycle -------------------------------------------------------------------------

    def open(self) -> Store:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        conn = connect(self.path)
        try:
            migrate(conn)
        finally:
            conn.close()
        self._last_commit = time.monotonic()
        self._thread = threading.Thread(target=self._writer, name="store-writer", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 4.0) -> None:
        """Finish the writes in flight, then stop; a database that keeps failing is given up on."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._stopping.set()
                self._thread.join(1.0)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written or given up (tests, `--once`)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def health(self) -> dict[str, Any]:
        """What /healthz and /metrics say about history keeping. `last_commit_age_s` grows while
        nothing is written too: it means trouble together with a queue that is not empty."""
        return {
            "writer_alive": self._thread is not None and self._thread.is_alive(),
            "queue_depth": self._queue.qsize(),
            "queue_max": QUEUE_MAX,
            "written": self.written,
            "failures": self.failures,
            "failed_items": self.failed_items,
            "dropped": self.dropped,
            "last_commit_age_s": round(time.monotonic() - self._last_commit, 3),
        }

    # --- writes (non-blocking, from the event loop) -------------------------------------------

    def _put(self, item: tuple[Any, ...]) -> None:
        if self._queue.qsize() >= QUEUE_MAX:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("store: the writer is %d items behind; %d dropped so far", QUEUE_MAX, self.dropped)
            return
        self._queue.put(item)

    def observation(self, obs: Observation, at: float, *, expected_every: float | None = None) -> None:
        """`expected_every`: the check's interval — how long an observation's status may be taken to
        hold until the next one; a longer gap is unknown time in the uptime (None: 60 s)."""
        every = expected_every if expected_every is not None and expected_every > 0 else DEFAULT_EXPECTED_EVERY
        self._put(("obs", obs, at, every))

    def entity(self, state: EntityState, kind: str) -> None:
        last = state.last
        self._put(
            (
                "entity",
                (
                    state.name,
                    state.check,
                    kind,
                    state.node,
                    last.status.value if last else "unknown",
                    state.hard.value if state.hard else None,
                    state.since,
                    last.message if last else "",
                    last.latency_ms if last else None,
                    state.last_at,
                    state.incident,
                    state.incident_started,
                    1 if state.flapping else 0,
                    state.affected_by,
                    state.fail_streak,
                    state.ok_streak,
                    ",".join(s.value for s in state.history),
                    1 if last and last.down else 0,
                ),
            )
        )

    def forget(self, names: list[str]) -> None:
        self._put(("forget", names))

    def event(self, event: Event) -> None:
        self._put(("event", event))

    def command(self, kind: str, target: str) -> None:
        self._put(("command", (self.clock(), kind, target)))

    # --- the writer thread ---------------------------------------------------------------------

    def _writer(self) -> None:
        self._conn = connect(self.path)
        try:
            while True:
                batch = [self._queue.get()]
                if isinstance(batch[0], tuple) and self._queue.qsize() < BATCH:
                    self._stopping.wait(LINGER)  # let a batch gather: one transaction for many writes
                while len(batch) < BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                items = [i for i in batch if isinstance(i, tuple)]
                try:
                    if items:
                        self._commit(items)
                    if time.monotonic() - self._last_retention > RETENTION_EVERY:
                        self._retention()
                except Exception:  # a bug here must not end history keeping
                    log.exception("store: the writer failed on a batch of %d", len(items))
                for i in batch:
                    if isinstance(i, threading.Event):
                        i.set()
                if any(i is _STOP for i in batch):
                    return
        finally:
            if self._conn is not None:
                self._conn.close()

    def _commit(self, items: list[tuple[Any, ...]], retries: int = RETRIES) -> None:
        """Write `items`: retried with backoff, a busy or failing database for as long as it lasts,
        then split in halves until the item that fails alone is found and given up."""
        delay, attempts = RETRY_DELAY, 0
        while True:
            error = self._transaction(items)
            if error is None:
                return
            attempts += 1
            if self._stopping.is_set() or (attempts > retries and not _transient(error)):
                break
            self._stopping.wait(delay)
            delay = min(delay * 2, RETRY_DELAY_MAX)
        if len(items) == 1 or self._stopping.is_set():
            self.failed_items += len(items)
            log.error(
                "store: gave up %d write(s) (%s) after %d attempt(s): %s",
                len(items),
                ", ".join(sorted({str(i[0]) for i in items})),
                attempts,
                error,
            )
            return
        middle = len(items) // 2
        self._commit(items[:middle], retries=0)
        self._commit(items[middle:], retries=0)

    def _transaction(self, items: list[tuple[Any, ...]]) -> BaseException | None:
        """One transaction; on any error it is rolled back and the error returned."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in items:
                getattr(self, f"_w_{item[0]}")(conn, *item[1:])
            self._rollups.write(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            self._rollback(conn)
            self._rollups.rolled_back()
            self.failures += 1
            log.warning("store: a transaction of %d write(s) failed and was rolled back: %s", len(items), exc)
            return exc
        self._rollups.committed()
        self.written += len(items)
        self._last_commit = time.monotonic()
        return None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    def _rollback(self, conn: sqlite3.Connection) -> None:
        """Never leave the connection inside a transaction; one that cannot roll back is replaced."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("store: rollback failed; reconnecting")
            try:
                conn.close()
            finally:
                self._conn = None

    def _w_obs(self, conn: sqlite3.Connection, obs: Observation, at: float, expected_every: float) -> None:
        self._rollups.observed(conn, obs.name, at, obs.status.value, expected_every)
        conn.execute(
            "INSERT INTO observations (ts, entity, check_name, kind, node, status, message, latency_ms, metrics, "
            "details) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                at,
                obs.name,
                obs.check or obs.name,
                obs.kind,
                obs.node,
                obs.status.value,
                obs.message,
                obs.latency_ms,
                json.dumps(obs.metrics) if obs.metrics else None,
                json.dumps(obs.details, default=str) if obs.details else None,
            ),
        )

    def _w_entity(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO entities (name, check_name, kind, node, status, hard, since, message, "
            "latency_ms, updated, incident, incident_started, flapping, affected_by, fail_streak, ok_streak, "
            "history, down) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            row,
        )

    def _w_forget(self, conn: sqlite3.Connection, names: list[str]) -> None:
        conn.executemany("DELETE FROM entities WHERE name = ?", [(n,) for n in names])
        self._rollups.forget(names)

    def _w_event(self, conn: sqlite3.Connection, e: Event) -> None:
        conn.execute(
            "INSERT INTO events (ts, kind, entity, check_name, node, old, new, message, incident, "
            "affected_by, details) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                e.at,
                e.kind.value,
                e.entity,
                e.check,
                e.node,
                e.old and e.old.value,
                e.new and e.new.value,
                e.message,
                e.incident,
                e.affected_by,
                json.dumps(e.details, default=str),
            ),
        )
        if not e.incident:
            return
        severity = e.new.value if e.new is not None and e.new is not Status.OK else None
        if e.kind is EventKind.INCIDENT_OPENED:
            severity = severity or Status.CRITICAL.value
            conn.execute(
                "INSERT OR IGNORE INTO incidents (id, entity, check_name, node, opened, status, worst, message, "
                "last_message) VALUES (?,?,?,?,?,?,?,?,?)",
                (e.incident, e.entity, e.check, e.node, e.at, severity, severity, e.message, e.message),
            )
        elif e.kind is EventKind.INCIDENT_CLOSED:
            # `status` keeps the severity it ended with: a closed incident is not 'ok', it was resolved.
            conn.execute(
                "UPDATE incidents SET closed = ?, duration = ? - opened, last_message = ? WHERE id = ?",
                (e.at, e.at, e.message, e.incident),
            )
        elif e.kind is EventKind.STATE_CHANGE and severity is not None:
            conn.execute(
                f"UPDATE incidents SET status = :new, last_message = :message, worst = CASE WHEN worst IS NULL "
                f"OR {_RANK.format(':new')} < {_RANK.format('worst')} THEN :new ELSE worst END "
                "WHERE id = :id AND closed IS NULL",
                {"new": severity, "message": e.message, "id": e.incident},
            )

    def _w_command(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        conn.execute("INSERT INTO commands (ts, kind, target) VALUES (?,?,?)", row)

    def _retention(self) -> None:
        """Old history out, one transaction; a failure is rolled back and tried again next time."""
        self._last_retention = time.monotonic()
        now = self.clock()
        o = self.options
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM observations WHERE ts < ?", (now - o.raw_max_age,))
            # The cap per entity spares the minutes still being rolled up: their rows are rebuilt from raw.
            conn.execute(
                "DELETE FROM observations WHERE id IN (SELECT id FROM (SELECT id, ts, ROW_NUMBER() OVER "
                "(PARTITION BY entity ORDER BY id DESC) AS n FROM observations) WHERE n > ? AND ts < ?)",
                (o.raw_per_check, now - RAW_KEPT_FOR_ROLLUPS),
            )
            conn.execute("DELETE FROM rollup_minute WHERE ts < ?", (now - o.minute_rollups_max_age,))
            conn.execute("DELETE FROM rollup_hour WHERE ts < ?", (now - o.hour_rollups_max_age,))
            conn.execute("DELETE FROM events WHERE ts < ?", (now - o.events_max_age,))
            conn.execute("DELETE FROM actions WHERE started < ?", (now - o.events_max_age,))
            conn.execute("DELETE FROM incidents WHERE closed IS NOT NULL AND closed < ?", (now - o.events_max_age,))
            conn.execute("DELETE FROM commands WHERE done IS NOT NULL AND done < ?", (now - 86400,))
            conn.execute("COMMIT")
        except Exception:
            self.failures += 1
            log.exception("store: retention failed and was rolled back")
            self._rollback(conn)

    # --- reads (main thread; small) -------------------------------------------------------------

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = connect(self.path)
        return self._reader

    def load_entities(self) -> list[sqlite3.Row]:
        return self.reader.execute("SELECT * FROM entities").fetchall()

    def close_stray_incidents(self, still_open: set[str], at: float) -> list[str]:
        """At start: incidents the table holds open that no entity does (their close was in the batch a
        crash lost) are closed, so they neither stay open for ever nor lose their resolved notice."""
        rows = self.reader.execute("SELECT id FROM incidents WHERE closed IS NULL").fetchall()
        stray = [r[0] for r in rows if r[0] not in still_open]
        transaction(
            self.reader,
            [
                (
                    "UPDATE incidents SET closed = ?, duration = ? - opened, last_message = ? "
                    "WHERE id = ? AND closed IS NULL",
                    (at, at, "recovered while the monitor was restarting", incident),
                )
                for incident in stray
            ],
        )
        return stray

    def pending_commands(self) -> list[sqlite3.Row]:
        rows = self.reader.execute("SELECT * FROM commands WHERE done IS NULL ORDER BY id").fetchall()
        if rows:
            self.reader.execute(
                f"UPDATE commands SET done = ? WHERE id IN ({','.join('?' * len(rows))})",
                (self.clock(), *[r["id"] for r in rows]),
            )
        return rows
