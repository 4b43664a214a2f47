"""History in SQLite, WAL mode: batched writes in a thread of their own, off the event loop.

Survives `kill -9` at any moment: every batch is one transaction, and WAL with
synchronous=NORMAL keeps every committed batch across a crash of the process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from clusterwatch.config.schema import StoreOptions
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState
from clusterwatch.model import Observation, Status
from clusterwatch.store.schema import migrate

log = logging.getLogger("clusterwatch.store")
_STOP = object()
BATCH = 5000
RETENTION_EVERY = 600.0


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.row_factory = sqlite3.Row
    return conn


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[index]


class Store:
    def __init__(self, options: StoreOptions) -> None:
        self.options = options
        self.path = Path(os.path.expanduser(options.path))
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._buckets: dict[tuple[str, int], list[Any]] = defaultdict(lambda: [0, 0, []])
        self._last_retention = time.monotonic()
        self.written = 0
        self.failures = 0

    # --- life cycle -------------------------------------------------------------------------

    def open(self) -> Store:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        conn = connect(self.path)
        try:
            migrate(conn)
        finally:
            conn.close()
        self._thread = threading.Thread(target=self._writer, name="store-writer", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 4.0) -> None:
        """Finish the writes in flight, then stop."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is committed (tests, `--once`)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    # --- writes (non-blocking, from the event loop) -------------------------------------------

    def observation(self, obs: Observation, at: float) -> None:
        self._queue.put(("obs", obs, at))

    def entity(self, state: EntityState, kind: str) -> None:
        last = state.last
        self._queue.put(
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
        self._queue.put(("forget", names))

    def event(self, event: Event) -> None:
        self._queue.put(("event", event))

    def action(self, row: dict[str, Any]) -> None:
        self._queue.put(("action", row))

    def command(self, kind: str, target: str) -> None:
        self._queue.put(("command", (time.time(), kind, target)))

    # --- the writer thread ---------------------------------------------------------------------

    def _writer(self) -> None:
        conn = connect(self.path)
        try:
            while True:
                item = self._queue.get()
                batch = [item]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(i is _STOP for i in batch)
                self._write(conn, [i for i in batch if isinstance(i, tuple)], final=stop)
                for i in batch:
                    if isinstance(i, threading.Event):
                        i.set()
                if stop:
                    return
                if time.monotonic() - self._last_retention > RETENTION_EVERY:
                    self._retention(conn)
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]], *, final: bool = False) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                getattr(self, f"_w_{item[0]}")(conn, *item[1:])
            self._flush_rollups(conn, everything=final)
            conn.execute("COMMIT")
            self.written += len(batch)
        except sqlite3.Error:
            self.failures += 1
            log.exception("store: a batch of %d writes failed", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _w_obs(self, conn: sqlite3.Connection, obs: Observation, at: float) -> None:
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
        bucket = self._buckets[(obs.name, int(at // 60) * 60)]
        bucket[0] += 1
        bucket[1] += 1 if obs.status is Status.OK else 0
        if obs.latency_ms is not None:
            bucket[2].append(obs.latency_ms)

    def _w_entity(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO entities (name, check_name, kind, node, status, hard, since, message, "
            "latency_ms, updated, incident, incident_started, flapping, affected_by, fail_streak, ok_streak, "
            "history, down) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            row,
        )

    def _w_forget(self, conn: sqlite3.Connection, names: list[str]) -> None:
        conn.executemany("DELETE FROM entities WHERE name = ?", [(n,) for n in names])

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
        if e.kind is EventKind.INCIDENT_OPENED and e.incident:
            conn.execute(
                "INSERT OR IGNORE INTO incidents (id, entity, check_name, node, opened, status, message, "
                "last_message) VALUES (?,?,?,?,?,?,?,?)",
                (e.incident, e.entity, e.check, e.node, e.at, (e.new or Status.CRITICAL).value, e.message, e.message),
            )
        elif e.kind is EventKind.INCIDENT_CLOSED and e.incident:
            conn.execute(
                "UPDATE incidents SET closed = ?, duration = ? - opened, last_message = ? WHERE id = ?",
                (e.at, e.at, e.message, e.incident),
            )
        elif e.kind is EventKind.STATE_CHANGE and e.incident and e.new:
            conn.execute(
                "UPDATE incidents SET status = ?, last_message = ? WHERE id = ? AND closed IS NULL",
                (e.new.value, e.message, e.incident),
            )

    def _w_action(self, conn: sqlite3.Connection, row: dict[str, Any]) -> None:
        conn.execute(
            "INSERT INTO actions (started, finished, check_name, entity, target, action, reason, attempt, "
            "outcome, detail, duration, dry_run) VALUES (:started, :finished, :check, :entity, :target, "
            ":action, :reason, :attempt, :outcome, :detail, :duration, :dry_run)",
            row,
        )

    def _w_command(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        conn.execute("INSERT INTO commands (ts, kind, target) VALUES (?,?,?)", row)

    def _flush_rollups(self, conn: sqlite3.Connection, *, everything: bool) -> None:
        current = int(time.time() // 60) * 60
        for key in [k for k in self._buckets if everything or k[1] < current]:
            count, ok, latencies = self._buckets.pop(key)
            latencies.sort()
            row = (
                key[0],
                key[1],
                count,
                ok,
                _percentile(latencies, 0.5),
                _percentile(latencies, 0.95),
                latencies[-1] if latencies else None,
            )
            for table, ts in (("rollup_minute", key[1]), ("rollup_hour", key[1] // 3600 * 3600)):
                # Merging: counts add, max is max; p50 is count-weighted, p95 the worst minute's.
                conn.execute(
                    f"INSERT INTO {table} (entity, ts, count, ok, p50, p95, max) VALUES (?,?,?,?,?,?,?) "
                    "ON CONFLICT (entity, ts) DO UPDATE SET "
                    "p50 = CASE WHEN p50 IS NULL THEN excluded.p50 WHEN excluded.p50 IS NULL THEN p50 "
                    "  ELSE (p50 * count + excluded.p50 * excluded.count) / (count + excluded.count) END, "
                    "p95 = MAX(COALESCE(p95, excluded.p95), COALESCE(excluded.p95, p95)), "
                    "max = MAX(COALESCE(max, excluded.max), COALESCE(excluded.max, max)), "
                    "count = count + excluded.count, ok = ok + excluded.ok",
                    (row[0], ts, *row[2:]),
                )

    def _retention(self, conn: sqlite3.Connection) -> None:
        self._last_retention = time.monotonic()
        now = time.time()
        o = self.options
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM observations WHERE ts < ?", (now - o.raw_max_age,))
            conn.execute(
                "DELETE FROM observations WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
                "(PARTITION BY entity ORDER BY id DESC) AS n FROM observations) WHERE n > ?)",
                (o.raw_per_check,),
            )
            conn.execute("DELETE FROM rollup_minute WHERE ts < ?", (now - o.minute_rollups_max_age,))
            conn.execute("DELETE FROM rollup_hour WHERE ts < ?", (now - o.hour_rollups_max_age,))
            conn.execute("DELETE FROM events WHERE ts < ?", (now - o.events_max_age,))
            conn.execute("DELETE FROM actions WHERE started < ?", (now - o.events_max_age,))
            conn.execute("DELETE FROM incidents WHERE closed IS NOT NULL AND closed < ?", (now - o.events_max_age,))
            conn.execute("DELETE FROM commands WHERE done IS NOT NULL AND done < ?", (now - 86400,))
            conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("store: retention failed")
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    # --- reads (main thread; small) -------------------------------------------------------------

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = connect(self.path)
        return self._reader

    def load_entities(self) -> list[sqlite3.Row]:
        return self.reader.execute("SELECT * FROM entities").fetchall()

    def pending_commands(self) -> list[sqlite3.Row]:
        rows = self.reader.execute("SELECT * FROM commands WHERE done IS NULL ORDER BY id").fetchall()
        if rows:
            self.reader.execute(
                f"UPDATE commands SET done = ? WHERE id IN ({','.join('?' * len(rows))})",
                (time.time(), *[r["id"] for r in rows]),
            )
        return rows
