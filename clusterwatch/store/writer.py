"""History writes: batched, in a thread of their own, off the event loop; SQLite or PostgreSQL.

Survives `kill -9` at any moment: every batch is one transaction that carries its raw observations
(one multi-row insert), the entities' rows and the rollup rows of the minutes that closed in it
(SQLite: WAL with synchronous=NORMAL keeps every committed batch across a crash of the process).
What a crash loses from memory, each entity's open minute, is rebuilt from the raw observations when
the entity is next observed (rollups.py says how). A failed transaction is rolled back, retried with
backoff, and then split so that one bad item cannot cost the rest of its batch; a database that is
busy, full, failing or away is retried for as long as it takes, while the bounded queue in front of
the writer drops (and counts) what does not fit. In a high-availability group only the leader records
history: each batch is fenced by the leader lease in its own transaction, so a stale leader's writes
are refused, and a monitor that stopped recording for a while reads its entities back from the store.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from clusterwatch.config.schema import StoreOptions
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState
from clusterwatch.model import Observation, Status
from clusterwatch.store.db import Database, Fenced, Tx, open_database, run_all, shown, store_location, transient
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
_RANK = "CASE {} WHEN 'critical' THEN 0 WHEN 'unknown' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END"
_ENTITY_COLUMNS = (
    "name, check_name, kind, node, status, hard, since, message, latency_ms, updated, incident, incident_started, "
    "flapping, affected_by, fail_streak, ok_streak, history, down"
)
_OBSERVATION_INSERT = (
    "INSERT INTO observations (ts, entity, check_name, kind, node, status, message, latency_ms, metrics, details) "
    "VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_ENTITY_UPSERT = (
    f"INSERT INTO entities ({_ENTITY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (name) "
    "DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (c.strip() for c in _ENTITY_COLUMNS.split(",")) if c != "name")
)


class _Held:
    """Rows a transaction holds back to write as one multi-row statement per table: a batch of a
    thousand observations is two statements, not two thousand (one round trip each on PostgreSQL)."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.observations: list[tuple[Any, ...]] = []
        self.entities: dict[str, tuple[Any, ...]] = {}  # the last row of each: one upsert per entity

    def flush(self) -> None:
        if self.observations:
            self.tx.executemany(_OBSERVATION_INSERT, self.observations)
            self.observations = []
        if self.entities:
            self.tx.executemany(_ENTITY_UPSERT, list(self.entities.values()))
            self.entities = {}


class _Barrier(threading.Event):
    """flush(checkpoint=False): waits for what was queued before it and writes no open minute."""


class Store:
    def __init__(self, options: StoreOptions, *, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.location = store_location(options)
        self.path = shown(self.location)  # for logs and pages: a URL without its password
        self.clock = clock
        # High availability: `fence` (the leader lease) guards every batch; `recording` says whether
        # this monitor records history now (the leader does; a follower only probes).
        self.fence: Any = None
        self.recording: Callable[[], bool] = lambda: True
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._reads: Database | None = None
        self._db: Database | None = None
        self._rollups = Rollups()
        self._held: _Held | None = None
        self._lapsed = False  # set while not recording: what memory holds may be stale by the next batch
        self._last_retention = time.monotonic()
        self._last_commit = time.monotonic()
        self.written = 0  # items committed
        self.failures = 0  # transactions that failed (each attempt)
        self.failed_items = 0  # items given up: they failed alone, or while stopping
        self.dropped = 0  # items refused because the queue was full
        self.fenced = 0  # items refused because this monitor no longer leads

    # --- life cycle -------------------------------------------------------------------------

    def open(self) -> Store:
        self._db = open_database(self.location, pool=1, name="clusterwatch-writer")
        migrate(self._db)
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
        for db in (self._reads, self._db):
            if db is not None:
                db.close()
        self._reads = None

    def flush(self, timeout: float = 10.0, *, checkpoint: bool = True) -> bool:
        """Wait until everything queued so far is written or given up (tests, `--once`). `checkpoint`: also
        write every entity's open minute as it stands, so that readers find it; an agent's push, which only
        needs its own rounds written, does without (at 10,000 entities that is 10,000 rows a push)."""
        done = threading.Event() if checkpoint else _Barrier()
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
            "fenced": self.fenced,
            "last_commit_age_s": round(time.monotonic() - self._last_commit, 3),
        }

    # --- writes (non-blocking, from the event loop) -------------------------------------------

    def _put(self, item: tuple[Any, ...]) -> None:
        if not self.recording():
            self._lapsed = True
            return  # a follower: the leader records
        if self._queue.qsize() >= QUEUE_MAX:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("store: the writer is %d items behind; %d dropped so far", QUEUE_MAX, self.dropped)
            return
        self._queue.put(item)

    def observation(
        self, obs: Observation, at: float, *, expected_every: float | None = None, late: bool = False
    ) -> None:
        """`expected_every`: the check's interval — how long an observation's status may be taken to
        hold until the next one; a longer gap is unknown time in the uptime (None: 60 s)."""
        every = expected_every if expected_every is not None and expected_every > 0 else DEFAULT_EXPECTED_EVERY
        self._put(("obs", obs, at, every, late))

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

    def agent_filed(self, name: str, seq: int, seen: float, addr: str | None) -> None:
        """An agent's queue is filed up to `seq`: in the transaction of the rounds queued before it."""
        self._put(("agent", (seq, seq, seen, addr, name)))

    # --- the writer thread ---------------------------------------------------------------------

    def _writer(self) -> None:
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
            # A flush or a stop writes the open minutes as they stand, so that readers find them.
            checkpoint = any(not isinstance(i, tuple | _Barrier) for i in batch)
            try:
                if self._lapsed:
                    self._lapsed = False
                    self._rollups.reset()
                if items or (checkpoint and self._rollups.unwritten()):
                    self._commit(items, checkpoint=checkpoint)
                if time.monotonic() - self._last_retention > RETENTION_EVERY:
                    self._retention()
            except Exception:  # a bug here must not end history keeping
                log.exception("store: the writer failed on a batch of %d", len(items))
            for i in batch:
                if isinstance(i, threading.Event):
                    i.set()
            if any(i is _STOP for i in batch):
                return

    def _commit(self, items: list[tuple[Any, ...]], retries: int = RETRIES, *, checkpoint: bool = False) -> None:
        """Write `items`: retried with backoff, a busy or failing database for as long as it lasts,
        then split in halves until the item that fails alone is found and given up."""
        delay, attempts = RETRY_DELAY, 0
        while True:
            error = self._transaction(items, checkpoint)
            if error is None:
                return
            if isinstance(error, Fenced):
                self.fenced += len(items)
                self._rollups.reset()  # another monitor records now: what memory holds goes stale
                return  # not the leader any more: the one who is records
            attempts += 1
            if self._stopping.is_set() or (attempts > retries and not transient(error)):
                break
            self._stopping.wait(delay)
            delay = min(delay * 2, RETRY_DELAY_MAX)
        if len(items) <= 1 or self._stopping.is_set():
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
        self._commit(items[:middle], retries=0, checkpoint=checkpoint)
        self._commit(items[middle:], retries=0, checkpoint=checkpoint)

    def _transaction(self, items: list[tuple[Any, ...]], checkpoint: bool = False) -> BaseException | None:
        """One transaction; on any error it is rolled back and the error returned."""
        assert self._db is not None, "not open"
        try:
            with self._db.transaction() as tx:
                held = self._held = _Held(tx)
                self._rollups.begin(held.flush)
                every: dict[str, float] = {}
                for item in items:
                    if item[0] == "obs":
                        every.setdefault(item[1].name, item[3])
                self._rollups.prefetch(tx, every)
                for item in items:
                    getattr(self, f"_w_{item[0]}")(tx, *item[1:])
                held.flush()
                self._rollups.write(tx, checkpoint=checkpoint)
                if self.fence is not None:  # last, just before COMMIT: the lease row is locked only that long
                    self.fence.check(tx)
        except Exception as exc:
            self._rollups.rolled_back()
            self.failures += 1
            if not isinstance(exc, Fenced):
                log.warning("store: a transaction of %d write(s) failed and was rolled back: %s", len(items), exc)
            return exc
        self._rollups.committed()
        self.written += len(items)
        self._last_commit = time.monotonic()
        return None

    def _w_obs(self, conn: Tx, obs: Observation, at: float, expected_every: float, late: bool = False) -> None:
        self._rollups.observed(conn, obs.name, at, obs.status.value, expected_every, late, obs.latency_ms)
        assert self._held is not None
        self._held.observations.append(
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
            )
        )

    def _w_entity(self, conn: Tx, row: tuple[Any, ...]) -> None:
        assert self._held is not None
        self._held.entities[row[0]] = row

    def _w_forget(self, conn: Tx, names: list[str]) -> None:
        assert self._held is not None
        self._held.flush()  # an entity's row written before it goes (and one written after comes back)
        conn.executemany("DELETE FROM entities WHERE name = ?", [(n,) for n in names])
        self._rollups.forget(conn, names)

    def _w_event(self, conn: Tx, e: Event) -> None:
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
                "INSERT INTO incidents (id, entity, check_name, node, opened, status, worst, message, "
                "last_message) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
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

    def _w_agent(self, conn: Tx, row: tuple[Any, ...]) -> None:
        conn.execute(
            "UPDATE agents SET acked = CASE WHEN acked < ? THEN ? ELSE acked END, last_seen = ?, last_addr = ? "
            "WHERE name = ?",
            row,
        )

    def _w_command(self, conn: Tx, row: tuple[Any, ...]) -> None:
        conn.execute("INSERT INTO commands (ts, kind, target) VALUES (?,?,?)", row)

    def _retention(self) -> None:
        """Old history out, one transaction; a failure is rolled back and tried again next time."""
        self._last_retention = time.monotonic()
        now = self.clock()
        o = self.options
        assert self._db is not None, "not open"
        try:
            with self._db.transaction() as conn:
                conn.execute("DELETE FROM observations WHERE ts < ?", (now - o.raw_max_age,))
                # The cap per entity spares the minutes still being rolled up: their rows are rebuilt from raw.
                conn.execute(
                    "DELETE FROM observations WHERE id IN (SELECT id FROM (SELECT id, ts, ROW_NUMBER() OVER "
                    "(PARTITION BY entity ORDER BY id DESC) AS n FROM observations) AS ranked WHERE n > ? AND ts < ?)",
                    (o.raw_per_check, now - RAW_KEPT_FOR_ROLLUPS),
                )
                conn.execute("DELETE FROM rollup_minute WHERE ts < ?", (now - o.minute_rollups_max_age,))
                conn.execute("DELETE FROM rollup_hour WHERE ts < ?", (now - o.hour_rollups_max_age,))
                conn.execute("DELETE FROM events WHERE ts < ?", (now - o.events_max_age,))
                conn.execute("DELETE FROM actions WHERE started < ?", (now - o.events_max_age,))
                conn.execute("DELETE FROM incidents WHERE closed IS NOT NULL AND closed < ?", (now - o.events_max_age,))
                conn.execute("DELETE FROM commands WHERE done IS NOT NULL AND done < ?", (now - 86400,))
                if self.fence is not None:
                    self.fence.check(conn)
        except Fenced:
            pass
        except Exception:
            self.failures += 1
            log.exception("store: retention failed and was rolled back")

    # --- reads (main thread; small) -------------------------------------------------------------

    @property
    def reads(self) -> Database:
        if self._reads is None:
            self._reads = open_database(self.location, pool=2, name="clusterwatch-reads")
        return self._reads

    def load_entities(self) -> list[Any]:
        return self.reads.rows("SELECT * FROM entities")

    def close_stray_incidents(self, still_open: set[str], at: float) -> list[str]:
        """At start (and at a takeover): incidents the table holds open that no entity does (their
        close was in the batch a crash lost) are closed, so they neither stay open for ever nor lose
        their resolved notice."""
        rows = self.reads.rows("SELECT id FROM incidents WHERE closed IS NULL")
        stray = [r[0] for r in rows if r[0] not in still_open]
        if stray:
            (self.fence.run if self.fence is not None else run_all)(
                self.reads,
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

    def pending_commands(self) -> list[Any]:
        """A person's commands (`heal reset`), taken once: by this monitor, or in a group by the leader."""
        rows = (self.fence.run if self.fence is not None else run_all)(
            self.reads,
            [("UPDATE commands SET done = ? WHERE done IS NULL RETURNING id, ts, kind, target", (self.clock(),))],
        )[0].rows
        return sorted(rows, key=lambda r: r["id"])
