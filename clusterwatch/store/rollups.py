"""Per-minute and per-hour rollups, kept equal to the raw observations in the same transaction.

Each batch of observations rewrites the rollup rows it touched (and only those), so a `kill -9`
at any moment leaves rollups that agree with the raw observations committed with them.

Uptime is measured in time, not in probes: an observation's status holds from its time until
the entity's next observation, but at most `expected_every` (the check's interval). A longer gap
(the monitor was down, a probe hung) is unknown time: neither up nor down. The seconds are
credited when the next observation arrives, split across minute boundaries.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

MINUTE = 60
HOUR = 3600
DEFAULT_EXPECTED_EVERY = 60.0

# The row's own columns are named with the table's name: PostgreSQL finds a bare name ambiguous
# beside `excluded`.
_MINUTE_ROW = (
    "INSERT INTO rollup_minute (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (entity, ts) DO UPDATE SET count = excluded.count, ok = excluded.ok, "
    "p50 = excluded.p50, p95 = excluded.p95, max = excluded.max, "
    "seconds_ok = COALESCE(rollup_minute.seconds_ok, 0) + excluded.seconds_ok, "
    "seconds_known = COALESCE(rollup_minute.seconds_known, 0) + excluded.seconds_known"
)
_MINUTE_SECONDS = (
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


@dataclass
class _Minute:
    """One entity's minute as its raw observations say: what its rollup row is made of."""

    count: int = 0
    ok: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class _Batch:
    last: dict[str, tuple[float, str]] = field(default_factory=dict)  # entity -> (ts, status), this batch
    minutes: set[tuple[str, int]] = field(default_factory=set)  # minutes with new observations
    seconds: dict[tuple[str, int], list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))


class Rollups:
    """The rollup side of the writer: `observed` for each observation of a batch (before its raw
    row is inserted), `write` before COMMIT, then `committed` or `rolled_back`."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[float, str]] = {}  # committed: each entity's last (time, status)
        self._batch = _Batch()

    def observed(
        self, conn: sqlite3.Connection, entity: str, at: float, status: str, expected_every: float, late: bool = False
    ) -> None:
        if late:  # history filed after the fact (an agent's queue after a cut): its raw row counts in its minute,
            self._batch.minutes.add((entity, int(at // MINUTE) * MINUTE))  # but it moves no timeline back
            return
        previous = self._previous(conn, entity)
        if previous is not None and at > previous[0]:
            start, was = previous
            for minute, seconds in split_by_minute(start, held_until(start, at, expected_every)):
                bucket = self._batch.seconds[(entity, minute)]
                bucket[0] += seconds if was == "ok" else 0.0
                bucket[1] += seconds
        # A wall clock that went back credits nothing; the new observation still counts from its time.
        self._batch.last[entity] = (at, status)
        self._batch.minutes.add((entity, int(at // MINUTE) * MINUTE))

    def _previous(self, conn: sqlite3.Connection, entity: str) -> tuple[float, str] | None:
        found = self._batch.last.get(entity) or self.last.get(entity)
        if found is None:
            # After a restart: the last raw observation, committed with the rollups it fed.
            row = conn.execute(
                "SELECT ts, status FROM observations WHERE entity = ? ORDER BY ts DESC LIMIT 1", (entity,)
            ).fetchone()
            found = (row[0], row[1]) if row else None
        return found

    def write(self, conn: sqlite3.Connection) -> None:
        """Rewrite the minute rows this batch touched from their raw observations, add the seconds
        credited, and rebuild the hours those minutes belong to from their minutes."""
        batch = self._batch
        minute_rows = []
        for entity, minute in batch.minutes:
            bucket = self._read_minute(conn, entity, minute)  # the raw rows, this batch's included
            latencies = bucket.latencies
            seconds_ok, seconds_known = batch.seconds.pop((entity, minute), (0.0, 0.0))
            minute_rows.append(
                (
                    entity,
                    minute,
                    bucket.count,
                    bucket.ok,
                    percentile(latencies, 0.5),
                    percentile(latencies, 0.95),
                    latencies[-1] if latencies else None,
                    seconds_ok,
                    seconds_known,
                )
            )
        conn.executemany(_MINUTE_ROW, minute_rows)
        conn.executemany(_MINUTE_SECONDS, [(e, m, ok, known) for (e, m), (ok, known) in batch.seconds.items()])
        hours = {(entity, minute // HOUR * HOUR) for entity, minute in (*batch.minutes, *batch.seconds)}
        conn.executemany(_HOUR_ROW, [(hour, entity, hour, hour + HOUR) for entity, hour in hours])

    @staticmethod
    def _read_minute(conn: sqlite3.Connection, entity: str, minute: int) -> _Minute:
        bucket = _Minute()
        for status, latency in conn.execute(
            "SELECT status, latency_ms FROM observations WHERE entity = ? AND ts >= ? AND ts < ?",
            (entity, minute, minute + MINUTE),
        ):
            bucket.count += 1
            bucket.ok += status == "ok"
            if latency is not None:
                bucket.latencies.append(latency)
        bucket.latencies.sort()
        return bucket

    def committed(self) -> None:
        self.last.update(self._batch.last)
        self._batch = _Batch()

    def rolled_back(self) -> None:
        self._batch = _Batch()

    def forget(self, names: list[str]) -> None:
        for name in names:
            self.last.pop(name, None)
