"""The agent's local queue: what it observed and did, kept in order until the monitor has filed it.

One SQLite file in WAL mode, one commit per insert: a kill -9 loses nothing that was queued. One
`seq` (INTEGER PRIMARY KEY AUTOINCREMENT) across rounds and events gives the total order the
monitor files them in, and AUTOINCREMENT never hands out a seq again, even after everything up to
it was acknowledged and the agent restarted (the monitor drops what it has already filed by seq).

Bounded by rows and by age: when it is full, or a round is older than `max_age`, the oldest rounds
go first (a gap in history); events (what the agent did while cut off) are dropped only when no
round is left to drop. What was dropped is counted, for one log line.

The same file keeps small values the agent needs to start without the monitor (the last
AgentConfig, the monitor's restart budgets) in a key/value table.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_ROWS = 100_000
MAX_AGE = 24 * 3600.0
MAX_BATCH_BYTES = 1_500_000  # of one push's rounds and events; protocol.MAX_BODY (2 MB) is the hard limit
AGE_EVERY = 60.0  # seconds between sweeps for rounds past `max_age`


@dataclass
class Row:
    seq: int
    at: float
    kind: str  # "round" or "event"
    body: dict[str, Any]


@dataclass
class Batch:
    rounds: list[Row]
    events: list[Row]
    last: int  # the highest seq in the batch: acknowledging it drops the batch

    def __bool__(self) -> bool:
        return bool(self.rounds or self.events)


@dataclass
class Dropped:
    rounds: int = 0
    events: int = 0
    oldest: float | None = None  # the earliest `at` dropped
    newest: float | None = None

    def __bool__(self) -> bool:
        return bool(self.rounds or self.events)


class AgentQueue:
    """Thread-safe: the runner calls it from one I/O thread and, for rare events, from the loop."""

    def __init__(
        self,
        path: str,
        *,
        max_rows: int = MAX_ROWS,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_rows < 1 or max_age <= 0:
            raise ValueError("the queue needs room for at least one row and a positive age")
        self.path = path
        self.max_rows = max_rows
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._rounds = 0
        self._swept = float("-inf")
        self._dropped = Dropped()

    # --- life cycle -------------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._db is not None:
                return
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a process killed at any point loses no commit
            db.execute(
                "CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "
                "kind TEXT NOT NULL CHECK (kind IN ('round', 'event')), tag TEXT, body TEXT NOT NULL)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db = db
            self._count = db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
            self._rounds = db.execute("SELECT COUNT(*) FROM queue WHERE kind = 'round'").fetchone()[0]
            self._bound()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the agent's queue is not open")
        return self._db

    # --- adding -------------------------------------------------------------------------------------

    def put_round(self, at: float, check: str, body: dict[str, Any]) -> int:
        """A round (its check, observations) as JSON without its seq, which is given here."""
        return self._put(at, "round", check, body)

    def put_event(self, at: float, check: str | None, body: dict[str, Any]) -> int:
        return self._put(at, "event", check, body)

    def _put(self, at: float, kind: str, check: str | None, body: dict[str, Any]) -> int:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        with self._lock:
            db = self._conn()
            seq = db.execute(
                "INSERT INTO queue (at, kind, tag, body) VALUES (?, ?, ?, ?)", (at, kind, check, text)
            ).lastrowid
            self._count += 1
            if kind == "round":
                self._rounds += 1
            self._bound()
            assert seq is not None
            return seq

    def _bound(self) -> None:
        """Rounds past `max_age` (swept once a minute), then the oldest rows over `max_rows`."""
        db = self._conn()
        now = self._clock()
        if now - self._swept >= AGE_EVERY:
            self._swept = now
            self._drop(
                db,
                "SELECT seq, at, kind FROM queue WHERE kind = 'round' AND at < ? ORDER BY seq",
                (now - self.max_age,),
            )
        excess = self._count - self.max_rows
        if excess > 0:
            self._drop(db, "SELECT seq, at, kind FROM queue WHERE kind = 'round' ORDER BY seq LIMIT ?", (excess,))
        excess = self._count - self.max_rows
        if excess > 0:  # nothing but events left: the oldest of them go
            self._drop(db, "SELECT seq, at, kind FROM queue ORDER BY seq LIMIT ?", (excess,))

    def _drop(self, db: sqlite3.Connection, select: str, args: tuple[Any, ...]) -> None:
        rows = db.execute(select, args).fetchall()
        if not rows:
            return
        db.execute("BEGIN")
        try:
            db.executemany("DELETE FROM queue WHERE seq = ?", [(r[0],) for r in rows])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        rounds = sum(1 for r in rows if r[2] == "round")
        self._count -= len(rows)
        self._rounds -= rounds
        dropped = self._dropped
        dropped.rounds += rounds
        dropped.events += len(rows) - rounds
        times = [r[1] for r in rows]
        dropped.oldest = min(times) if dropped.oldest is None else min(dropped.oldest, *times)
        dropped.newest = max(times) if dropped.newest is None else max(dropped.newest, *times)

    # --- sending ------------------------------------------------------------------------------------

    def batch(self, *, max_rounds: int, max_events: int, max_bytes: int = MAX_BATCH_BYTES) -> Batch:
        """The oldest rows, in seq order, up to any of the limits: one contiguous seq range, so that
        acknowledging its last seq drops exactly this batch (at least one row, whatever its size)."""
        rounds: list[Row] = []
        events: list[Row] = []
        size, last = 0, 0
        with self._lock:
            cursor = self._conn().execute("SELECT seq, at, kind, body FROM queue ORDER BY seq")
            try:
                for seq, at, kind, body in cursor:
                    if (kind == "round" and len(rounds) >= max_rounds) or (
                        kind == "event" and len(events) >= max_events
                    ):
                        break
                    if last and size + len(body) > max_bytes:
                        break
                    size += len(body)
                    (rounds if kind == "round" else events).append(Row(seq, at, kind, json.loads(body)))
                    last = seq
            finally:
                cursor.close()
        return Batch(rounds, events, last)

    def ack(self, accepted: int) -> int:
        """The monitor filed everything up to `accepted`: those rows go. Returns how many rounds went."""
        with self._lock:
            db = self._conn()
            rounds = db.execute("SELECT COUNT(*) FROM queue WHERE seq <= ? AND kind = 'round'", (accepted,)).fetchone()
            gone = db.execute("DELETE FROM queue WHERE seq <= ?", (accepted,)).rowcount
            self._count -= gone
            self._rounds -= rounds[0]
            return int(rounds[0])

    def drop_checks(self, known: set[str]) -> int:
        """Rows of checks the config no longer has: the monitor would refuse them (and all after them)."""
        with self._lock:
            db = self._conn()
            tags = [r[0] for r in db.execute("SELECT DISTINCT tag FROM queue WHERE tag IS NOT NULL")]
            gone = [t for t in tags if t not in known]
            dropped = rounds = 0
            for tag in gone:
                rounds += db.execute("SELECT COUNT(*) FROM queue WHERE tag = ? AND kind = 'round'", (tag,)).fetchone()[
                    0
                ]
                dropped += db.execute("DELETE FROM queue WHERE tag = ?", (tag,)).rowcount
            self._count -= dropped
            self._rounds -= rounds
            return dropped

    def last_issued(self) -> int:
        """The highest seq this queue ever gave (AUTOINCREMENT's own record), 0 for none."""
        with self._lock:
            row = self._conn().execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
        return int(row[0]) if row else 0

    def renumber_after(self, filed: int) -> None:
        """The monitor has filed seqs up to `filed`, past anything this queue gave (its state dir was
        lost): every queued row moves past it, in order, and new rows follow, so none is taken for a
        resend of something already filed."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                # Every new seq (old + filed) is above every old one (<= filed): no collision on the way.
                db.execute("UPDATE queue SET seq = seq + ?", (filed,))
                top = db.execute("SELECT MAX(seq) FROM queue").fetchone()[0] or filed
                if not db.execute(
                    "UPDATE sqlite_sequence SET seq = ? WHERE name = 'queue'", (max(top, filed),)
                ).rowcount:
                    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('queue', ?)", (max(top, filed),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        return self._count

    @property
    def rounds(self) -> int:
        return self._rounds

    def take_dropped(self) -> Dropped:
        """What the bounds dropped since the last call (for one log line), and start counting afresh."""
        with self._lock:
            dropped, self._dropped = self._dropped, Dropped()
            return dropped

    # --- what the agent keeps to start without the monitor -----------------------------------------------

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._conn().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        with self._lock:
            self._conn().execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, text),
            )
