"""Per-minute and per-hour rollups, written once per minute and entity, never rescanned per batch.

Each entity's current minute (the minute of its last observation) is kept whole in memory: probes,
ok, latencies and the seconds credited to it. It is written once, when the entity's next minute
begins (its first observation there closes it, in the transaction that carries that observation), and
its hour is rebuilt from its minutes then. A batch therefore writes rollup rows for the entities whose
minute closed in it, not for every entity it touched. `checkpoint` writes the open minutes as they
stand (a flush, a clean stop); an entity that falls silent has its minute written a few minutes later.

After `kill -9` at any moment nothing is lost: the raw observations are committed with every batch,
and the written rollups agree with them up to each entity's open minute. That minute is rebuilt
from its raw observations (and the one before it, whose status holds into it) the first time this
process sees the entity again (its next probe after a start or a takeover), and written when it
closes. Until then the rollups lack at most each entity's last minute; an entity never seen again
(its check removed while the monitor was down) keeps that last minute in raw observations only.
Rebuilt seconds use the entity's current interval.

Uptime is measured in time, not in probes: an observation's status holds from its time until
the entity's next observation, but at most `expected_every` (the check's interval). A longer gap
(the monitor was down, a probe hung) is unknown time: neither up nor down. The seconds are
credited when the next observation arrives, split across minute boundaries; seconds that fall in a
minute already written are added to its row in the same transaction.

Every change a transaction makes here is undone if it rolls back (`rolled_back`), so the memory
never runs ahead of what was committed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from clusterwatch.store.db import Tx

MINUTE = 60
HOUR = 3600
DEFAULT_EXPECTED_EVERY = 60.0
# An open minute whose entity has been silent this long past its end plus its interval is written
# (readers see it; memory keeps only what may still change). Seconds that arrive later are added.
SILENT_AFTER = 60.0
SILENT_EVERY_MAX = 600.0  # a check that runs hourly does not hold its minute open for an hour

# The row's own columns are named with the table's name: PostgreSQL finds a bare name ambiguous
# beside `excluded`.
_MINUTE_PUT = (  # a whole minute, as memory holds it
    "INSERT INTO rollup_minute (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (entity, ts) DO UPDATE SET count = excluded.count, ok = excluded.ok, "
    "p50 = excluded.p50, p95 = excluded.p95, max = excluded.max, seconds_ok = excluded.seconds_ok, "
    "seconds_known = excluded.seconds_known"
)
_MINUTE_ROW = (  # a written minute's probes counted again from raw (history filed late), seconds added
    "INSERT INTO rollup_minute (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (entity, ts) DO UPDATE SET count = excluded.count, ok = excluded.ok, "
    "p50 = excluded.p50, p95 = excluded.p95, max = excluded.max, "
    "seconds_ok = COALESCE(rollup_minute.seconds_ok, 0) + excluded.seconds_ok, "
    "seconds_known = COALESCE(rollup_minute.seconds_known, 0) + excluded.seconds_known"
)
_MINUTE_SECONDS = (  # seconds added to a written minute (or one no probe fell in)
    "INSERT INTO rollup_minute (entity, ts, count, ok, seconds_ok, seconds_known) VALUES (?,?,0,0,?,?) "
    "ON CONFLICT (entity, ts) DO UPDATE SET seconds_ok = COALESCE(rollup_minute.seconds_ok, 0) + "
    "excluded.seconds_ok, seconds_known = COALESCE(rollup_minute.seconds_known, 0) + excluded.seconds_known"
)
# An hour is its minutes: counts and seconds add, max is max, p95 the worst minute's, p50 count-weighted.
_HOUR_ROW = (
    "INSERT INTO rollup_hour (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "SELECT entity, ?, SUM(count), SUM(ok), SUM(p50 * count) / SUM(CASE WHEN p50 IS NOT NULL THEN count END), "
    "MAX(p95), MAX(max), SUM(seconds_ok), SUM(seconds_known) FROM rollup_minute "
    "WHERE entity = ? AND ts >= ? AND ts < ? GROUP BY entity "
    "ON CONFLICT (entity, ts) DO UPDATE SET count = excluded.count, ok = excluded.ok, p50 = excluded.p50, "
    "p95 = excluded.p95, max = excluded.max, seconds_ok = excluded.seconds_ok, "
    "seconds_known = excluded.seconds_known"
)
# Where entities stand in the store when this process first sees them: each one's last raw
# observation and last written minute (one statement for many, each looked up in its index).
_LAST = (
    "SELECT column1, (SELECT MAX(ts) FROM observations WHERE entity = column1), "
    "(SELECT MAX(ts) FROM rollup_minute WHERE entity = column1) FROM (VALUES {}) AS named"
)
_LAST_CHUNK = 500
# A minute's raw observations and the last one before it (its status holds into the minute), in
# the order they were filed.
_REPLAY = (
    "SELECT id, ts, status, latency_ms FROM observations WHERE entity = ? AND ts >= COALESCE("
    "(SELECT MAX(ts) FROM observations WHERE entity = ? AND ts < ?), ?) AND ts < ? ORDER BY id"
)
_RAW_MINUTE = "SELECT status, latency_ms FROM observations WHERE entity = ? AND ts >= ? AND ts < ?"
_ROW_SECONDS = "SELECT seconds_ok, seconds_known FROM rollup_minute WHERE entity = ? AND ts = ?"


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest rank, as the rollups have always used."""
    if not sorted_values:
        return None
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[index]


def split_by_minute(start: float, end: float) -> Iterator[tuple[int, float]]:
    """The seconds of [start, end) that fall in each minute, as (minute start, seconds)."""
    at = start
    while at < end:
        minute = int(at // MINUTE) * MINUTE
        until = min(end, minute + MINUTE)
        yield minute, until - at
        at = until


def held_until(previous_at: float, next_at: float, expected_every: float) -> float:
    """Until when the previous observation's status counts: the next one, or its expected interval."""
    return min(next_at, previous_at + expected_every)


def minute_of(at: float) -> int:
    return int(at // MINUTE) * MINUTE


class _Bucket:
    """One entity's minute, whole: what its rollup row is made of."""

    __slots__ = ("count", "latencies", "minute", "ok", "seconds_known", "seconds_ok")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.count = 0
        self.ok = 0
        self.latencies: list[float] = []
        self.seconds_ok = 0.0
        self.seconds_known = 0.0

    def copy(self) -> _Bucket:
        other = _Bucket(self.minute)
        other.count, other.ok, other.latencies = self.count, self.ok, self.latencies.copy()
        other.seconds_ok, other.seconds_known = self.seconds_ok, self.seconds_known
        return other

    def probe(self, status: str, latency: float | None) -> None:
        self.count += 1
        self.ok += status == "ok"
        if latency is not None:
            self.latencies.append(latency)

    def credit(self, seconds: float, ok: bool) -> None:
        self.seconds_known += seconds
        if ok:
            self.seconds_ok += seconds

    def row(self, entity: str) -> tuple[Any, ...]:
        latencies = sorted(self.latencies)
        return (
            entity,
            self.minute,
            self.count,
            self.ok,
            percentile(latencies, 0.5),
            percentile(latencies, 0.95),
            latencies[-1] if latencies else None,
            self.seconds_ok,
            self.seconds_known,
        )


class _Entity:
    """What the writer knows of one entity: its last observation (the timeline), its open minute, the
    last minute it knows to have a row, and whether the open minute changed since it was written."""

    __slots__ = ("bucket", "dirty", "every", "last", "written")

    def __init__(self, written: int | None = None) -> None:
        self.last: tuple[float, str] | None = None
        self.every = DEFAULT_EXPECTED_EVERY
        self.bucket: _Bucket | None = None
        self.written = written
        self.dirty = False

    def copy(self) -> _Entity:
        other = _Entity(self.written)
        other.last, other.every, other.dirty = self.last, self.every, self.dirty
        other.bucket = self.bucket.copy() if self.bucket is not None else None
        return other


_ABSENT = object()


class Rollups:
    """The rollup side of the writer, in one transaction at a time: `observed` for each observation
    (before its raw row is inserted), `forget`, then `write` before COMMIT, then `committed` or
    `rolled_back`. `begin` names what to call before any read of raw observations, so that rows the
    writer holds back for one multi-row insert are in the database by then."""

    def __init__(self) -> None:
        self._entities: dict[str, _Entity] = {}
        self._undo: dict[str, Any] = {}  # entity -> its state before this transaction (or _ABSENT)
        self._puts: dict[tuple[str, int], tuple[Any, ...]] = {}  # whole minutes to write
        self._adds: dict[tuple[str, int], list[Any]] = {}  # written minutes: [seconds ok, known, recount]
        self._newest = 0.0  # the newest observation's time: when silent minutes are due
        self._swept = 0  # the minute of `_newest` at the last look for silent minutes
        self._saved = (0.0, 0)
        self.before_read: Callable[[], None] = lambda: None

    # --- in a transaction --------------------------------------------------------------------------

    def begin(self, before_read: Callable[[], None]) -> None:
        self._saved = (self._newest, self._swept)
        self.before_read = before_read

    def prefetch(self, conn: Tx, every: dict[str, float]) -> None:
        """Read back, in a few statements, the entities of a batch this process has not seen yet
        (`every`: each one's expected interval), before any of the batch's rows are written."""
        new = [name for name in every if name not in self._entities]
        for i in range(0, len(new), _LAST_CHUNK):
            chunk = new[i : i + _LAST_CHUNK]
            sql = _LAST.format(",".join("(?)" for _ in chunk))
            for name, raw, written in conn.execute(sql, chunk).fetchall():
                self._undo.setdefault(name, _ABSENT)
                self._entities[name] = self._restore(conn, name, every[name], raw, written)

    def observed(
        self,
        conn: Tx,
        entity: str,
        at: float,
        status: str,
        expected_every: float,
        late: bool = False,
        latency: float | None = None,
    ) -> None:
        e = self._touch(conn, entity, expected_every)
        minute = minute_of(at)
        bucket = e.bucket
        if late:  # history filed after the fact (an agent's queue after a cut): its probe counts in its
            if bucket is not None and bucket.minute == minute:  # minute, but it moves no timeline back
                bucket.probe(status, latency)
                e.dirty = True
            else:
                self._add(e, entity, minute, recount=True)
            return
        self._newest = max(self._newest, at)
        e.every = expected_every
        previous = e.last
        carried: list[tuple[float, bool]] = []  # seconds that fall in the minute this observation opens
        if previous is not None and at > previous[0]:
            start, was = previous
            ok = was == "ok"
            for m, seconds in split_by_minute(start, held_until(start, at, expected_every)):
                if bucket is not None and m == bucket.minute:
                    bucket.credit(seconds, ok)
                    e.dirty = True
                elif m == minute:
                    carried.append((seconds, ok))
                else:
                    self._add(e, entity, m, seconds_ok=seconds if ok else 0.0, seconds_known=seconds)
        # A wall clock that went back credits nothing; the new observation still counts from its time.
        e.last = (at, status)
        if bucket is not None and bucket.minute != minute:
            if minute < bucket.minute:  # the clock went back: the minute it fell in is counted again
                self._add(
                    e,
                    entity,
                    minute,
                    seconds_ok=sum(s for s, ok in carried if ok),
                    seconds_known=sum(s for s, _ in carried),
                    recount=True,
                )
                return
            self._close(e, entity)
            bucket = None
        if bucket is None:
            bucket = e.bucket = self._open(conn, e, entity, minute)
        for seconds, ok in carried:
            bucket.credit(seconds, ok)
        bucket.probe(status, latency)
        e.dirty = True

    def forget(self, conn: Tx, names: Iterable[str]) -> None:
        """Entities that are gone: their open minute is written as it stands, and they are forgotten."""
        for name in names:
            if name in self._entities:
                e = self._touch(conn, name, DEFAULT_EXPECTED_EVERY)
                if e.bucket is not None:
                    self._close(e, name)
                self._entities.pop(name)

    def write(self, conn: Tx, *, checkpoint: bool = False) -> None:
        """The minutes that closed (or, with `checkpoint`, every open minute that changed since it was
        written, which stays open), the seconds and late probes of written minutes, and their hours."""
        if self._newest >= self._swept + MINUTE:
            self._swept = minute_of(self._newest)
            self._close_silent(conn)
        if checkpoint:
            for name, e in list(self._entities.items()):
                if e.dirty and e.bucket is not None:
                    e = self._touch(conn, name, e.every)
                    self._put(e, name)
        if not self._puts and not self._adds:
            return
        conn.executemany(_MINUTE_PUT, self._puts.values())
        recount, seconds = [], []
        for (entity, minute), (ok, known, again) in self._adds.items():
            if again:
                recount.append(self._recounted(conn, entity, minute, ok, known))
            else:
                seconds.append((entity, minute, ok, known))
        conn.executemany(_MINUTE_ROW, recount)
        conn.executemany(_MINUTE_SECONDS, seconds)
        hours = {(entity, minute // HOUR * HOUR) for entity, minute in (*self._puts, *self._adds)}
        conn.executemany(_HOUR_ROW, [(hour, entity, hour, hour + HOUR) for entity, hour in hours])

    def committed(self) -> None:
        self._undo.clear()
        self._puts.clear()
        self._adds.clear()

    def rolled_back(self) -> None:
        for name, before in self._undo.items():
            if before is _ABSENT:
                self._entities.pop(name, None)
            else:
                self._entities[name] = before
        self._newest, self._swept = self._saved
        self.committed()

    def unwritten(self) -> bool:
        """Whether an open minute changed since it was written (a checkpoint would write something)."""
        return any(e.dirty and e.bucket is not None for e in self._entities.values())

    def reset(self) -> None:
        """Forget everything held in memory (this monitor stopped recording: another one may have written
        since). Each entity is read back from the store the next time it is observed."""
        self._entities.clear()
        self.committed()

    # --- the parts -----------------------------------------------------------------------------------

    def _touch(self, conn: Tx, entity: str, every: float) -> _Entity:
        """The entity's state, saved for undo the first time this transaction changes it; read back
        from the store the first time this process sees it."""
        found = self._entities.get(entity)
        if entity not in self._undo:
            self._undo[entity] = found.copy() if found is not None else _ABSENT
        if found is None:
            self.before_read()
            _, raw, written = conn.execute(_LAST.format("(?)"), (entity,)).fetchone()
            found = self._entities[entity] = self._restore(conn, entity, every, raw, written)
        return found

    def _restore(self, conn: Tx, entity: str, every: float, raw: float | None, written: int | None) -> _Entity:
        """The first time this process sees an entity: its last raw observation (at `raw`) is its timeline,
        and that observation's minute is rebuilt whole from the raw rows (it may never have been written,
        or been written before the minute was over). `written`: its last minute that has a row."""
        e = _Entity(written=written)
        if raw is None:
            return e
        minute = minute_of(raw)
        bucket = e.bucket = _Bucket(minute)
        rows = conn.execute(_REPLAY, (entity, entity, minute, minute, minute + MINUTE)).fetchall()
        rows.sort(key=lambda r: (r[1] >= minute, r[0]))  # the one before the minute first, then as filed
        for _, ts, status, latency in rows:
            if e.last is not None and ts < e.last[0]:  # filed late: counted, no timeline
                if ts >= minute:
                    bucket.probe(status, latency)
                continue
            if e.last is not None and ts > e.last[0]:
                start, was = e.last
                for m, seconds in split_by_minute(start, held_until(start, ts, every)):
                    if m == minute:
                        bucket.credit(seconds, was == "ok")
            e.last = (ts, status)
            if ts >= minute:
                bucket.probe(status, latency)
        e.every = every
        e.dirty = True
        return e

    def _open(self, conn: Tx, e: _Entity, entity: str, minute: int) -> _Bucket:
        """A minute the entity's timeline enters: new, or (seldom: history filed late, a silent minute
        written, a clock that went back) one that has a row already, counted again from raw with the
        seconds its row and this transaction hold."""
        bucket = _Bucket(minute)
        if e.written is None or minute > e.written:
            return bucket
        self.before_read()
        for status, latency in conn.execute(_RAW_MINUTE, (entity, minute, minute + MINUTE)):
            bucket.probe(status, latency)
        row = conn.execute(_ROW_SECONDS, (entity, minute)).fetchone()
        put = self._puts.get((entity, minute))
        if put is not None:  # written in this transaction already
            bucket.seconds_ok, bucket.seconds_known = put[7], put[8]
        elif row is not None:
            bucket.seconds_ok, bucket.seconds_known = row[0] or 0.0, row[1] or 0.0
        added = self._adds.pop((entity, minute), None)
        if added is not None:
            bucket.seconds_ok += added[0]
            bucket.seconds_known += added[1]
        return bucket

    def _close(self, e: _Entity, entity: str) -> None:
        self._put(e, entity)
        e.bucket = None

    def _put(self, e: _Entity, entity: str) -> None:
        assert e.bucket is not None
        self._puts[(entity, e.bucket.minute)] = e.bucket.row(entity)
        e.written = e.bucket.minute if e.written is None else max(e.written, e.bucket.minute)
        e.dirty = False

    def _add(
        self,
        e: _Entity,
        entity: str,
        minute: int,
        *,
        seconds_ok: float = 0.0,
        seconds_known: float = 0.0,
        recount: bool = False,
    ) -> None:
        """Seconds (or a probe filed late) for a minute that is not the entity's open one."""
        added = self._adds.setdefault((entity, minute), [0.0, 0.0, False])
        added[0] += seconds_ok
        added[1] += seconds_known
        added[2] = added[2] or recount
        e.written = minute if e.written is None else max(e.written, minute)

    def _recounted(self, conn: Tx, entity: str, minute: int, ok: float, known: float) -> tuple[Any, ...]:
        bucket = _Bucket(minute)
        for status, latency in conn.execute(_RAW_MINUTE, (entity, minute, minute + MINUTE)):
            bucket.probe(status, latency)
        return (*bucket.row(entity)[:7], ok, known)

    def _close_silent(self, conn: Tx) -> None:
        """Open minutes whose entity has said nothing for a while are written (and let go of)."""
        for name, e in list(self._entities.items()):
            bucket = e.bucket
            if bucket is not None and bucket.minute + MINUTE + min(e.every, SILENT_EVERY_MAX) + SILENT_AFTER <= (
                self._newest
            ):
                self._close(self._touch(conn, name, e.every), name)
