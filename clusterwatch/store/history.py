"""Reading the history: what the web, /metrics and `clusterwatch report` are given instead of SQL.

SQLite: read-only connections, one per thread; PostgreSQL: a small pool (callers on an event loop
run these in a thread of their own). Uptime is by time (seconds ok / seconds known); hours written
before schema 5 have no seconds and fall back to the share of probes that were ok.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from typing import Any

from clusterwatch.store.db import Database, is_url, open_database
from clusterwatch.store.rollups import HOUR

# table -> (cursor column, columns one may filter on by equality)
PAGED: dict[str, tuple[str, frozenset[str]]] = {
    "observations": ("id", frozenset({"entity", "check_name", "kind", "node", "status"})),
    "events": ("id", frozenset({"entity", "check_name", "kind", "node", "incident"})),
    "incidents": ("rowid", frozenset({"entity", "check_name", "node", "status", "worst"})),
    "actions": ("id", frozenset({"check_name", "entity", "target", "action", "outcome"})),
}
_JSON_COLUMNS = ("metrics", "details", "matchers", "incidents")
# Sums of counts cast back to integers: PostgreSQL sums BIGINTs as NUMERIC (a Decimal in Python).
_UPTIME = (
    "SELECT entity, SUM(seconds_ok) AS seconds_ok, SUM(seconds_known) AS seconds_known, "
    "CAST(SUM(count) AS BIGINT) AS probes, "
    "CAST(SUM(CASE WHEN seconds_known IS NULL THEN ok END) AS BIGINT) AS old_ok, "
    "CAST(SUM(CASE WHEN seconds_known IS NULL THEN count END) AS BIGINT) AS old_probes, "
    "COUNT(CASE WHEN seconds_known IS NULL THEN 1 END) AS old_hours, MAX(p95) AS p95, MAX(max) AS max "
    "FROM rollup_hour WHERE ts >= ? GROUP BY entity"
)


# uptime_of's names for one window's columns in uptime_windows
_WINDOW_COLUMNS = {
    "seconds_ok": "ok",
    "seconds_known": "known",
    "old_ok": "old_ok",
    "old_probes": "old_probes",
    "old_hours": "old_hours",
}


@dataclass(frozen=True)
class Uptime:
    """One entity's uptime over a period, from its hourly rollups."""

    seconds_ok: float
    seconds_known: float
    probes: int
    p95_ms: float | None = None
    max_ms: float | None = None

    @property
    def percent(self) -> float | None:
        return 100.0 * self.seconds_ok / self.seconds_known if self.seconds_known > 0 else None


def uptime_of(row: Any) -> Uptime:
    """Time where the hours have it; hours from before (counts only) stand for a whole hour each,
    ok in the share of their probes that were — alone, that is exactly the old share of probes."""
    seconds_ok, seconds_known = row["seconds_ok"] or 0.0, row["seconds_known"] or 0.0
    if row["old_probes"]:
        seconds_known += HOUR * row["old_hours"]
        seconds_ok += HOUR * row["old_hours"] * row["old_ok"] / row["old_probes"]
    return Uptime(seconds_ok, seconds_known, row["probes"] or 0, row["p95"], row["max"])


def _decoded(row: Any) -> dict[str, Any]:
    item = {k: row[k] for k in row.keys()}  # noqa: SIM118 - a row, not a dict
    for key in _JSON_COLUMNS:
        if isinstance(item.get(key), str):
            with contextlib.suppress(ValueError):
                item[key] = json.loads(item[key])
    return item


class History:
    """The store's read side. Every method is blocking: call it from a thread, not the event loop."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location = os.fspath(location)
        self._local = threading.local()
        self._shared: Database | None = None
        if is_url(self.location):
            self._shared = open_database(self.location, pool=4, name="clusterwatch-reads")

    def _db(self) -> Database:
        if self._shared is not None:
            return self._shared
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_database(self.location, readonly=True)
        return db

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return self._db().rows(sql, args)

    def close(self) -> None:
        """Close this thread's connection (others close with their threads), or the shared pool."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    # --- the API's pages ---------------------------------------------------------------------------

    def page(
        self,
        table: str,
        *,
        limit: int,
        before: int | None = None,
        equals: dict[str, Any] | None = None,
        closed: bool | None = None,
    ) -> dict[str, Any]:
        """Cursor pagination, newest first: `next` is the cursor for the following page.
        `equals` filters columns by value; `closed` (incidents) open or closed ones."""
        if table not in PAGED:
            raise ValueError(f"no pages of {table!r}")
        order, columns = PAGED[table]
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (equals or {}).items():
            if column not in columns:
                raise ValueError(f"{table} cannot be filtered by {column!r}")
            clauses.append(f"{column} = ?")
            args.append(value)
        if closed is not None:
            if table != "incidents":
                raise ValueError("only incidents are open or closed")
            clauses.append("closed IS NOT NULL" if closed else "closed IS NULL")
        if before is not None:
            clauses.append(f"{order} < ?")
            args.append(before)
        sql = (
            f"SELECT {order} AS cursor, * FROM {table}"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + f" ORDER BY {order} DESC LIMIT ?"
        )
        rows = self._rows(sql, (*args, limit + 1))
        items = [_decoded(r) for r in rows[:limit]]
        return {"items": items, "next": items[-1]["cursor"] if len(rows) > limit and items else None}

    # --- the dashboard ------------------------------------------------------------------------------

    def recent_observations(self, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._rows(
                "SELECT ts, status, message, latency_ms FROM observations WHERE entity = ? ORDER BY id DESC LIMIT ?",
                (entity, limit),
            )
        ]

    def recent_events(self, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._rows(
                "SELECT ts, kind, old, new, message FROM events WHERE entity = ? ORDER BY id DESC LIMIT ?",
                (entity, limit),
            )
        ]

    def recent_actions(self, check: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        if check is None:
            rows = self._rows("SELECT * FROM actions ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._rows("SELECT * FROM actions WHERE check_name = ? ORDER BY id DESC LIMIT ?", (check, limit))
        return [dict(r) for r in rows]

    # --- uptime and counters -------------------------------------------------------------------------

    def uptime(self, since: float, until: float | None = None) -> dict[str, Uptime]:
        """Each entity's uptime over the hours from the one that holds `since` (to those that begin before `until`)."""
        if until is None:
            return {r["entity"]: uptime_of(r) for r in self._rows(_UPTIME, (since // HOUR * HOUR,))}
        sql = _UPTIME.replace("WHERE ts >= ?", "WHERE ts >= ? AND ts < ?")
        return {r["entity"]: uptime_of(r) for r in self._rows(sql, (since // HOUR * HOUR, until))}

    def uptime_windows(self, windows: dict[str, float], now: float) -> dict[str, dict[str, float | None]]:
        """entity -> window name -> uptime percent, for windows given in seconds back from `now`: one
        statement and one row per entity for all windows (at 10,000 entities a statement per window made
        30,000 rows a minute, and on PostgreSQL their conversion was the scheduler's worst lag)."""
        if not windows:
            return {}
        names = list(windows)
        starts = [(now - windows[n]) // HOUR * HOUR for n in names]
        columns, args = [], []
        for i, start in enumerate(starts):
            columns.append(
                f"SUM(CASE WHEN ts >= ? THEN seconds_ok END) AS ok_{i}, "
                f"SUM(CASE WHEN ts >= ? THEN seconds_known END) AS known_{i}, "
                f"CAST(SUM(CASE WHEN ts >= ? AND seconds_known IS NULL THEN ok END) AS BIGINT) AS old_ok_{i}, "
                f"CAST(SUM(CASE WHEN ts >= ? AND seconds_known IS NULL THEN count END) AS BIGINT) AS old_probes_{i}, "
                f"COUNT(CASE WHEN ts >= ? AND seconds_known IS NULL THEN 1 END) AS old_hours_{i}"
            )
            args += [start] * 5
        sql = f"SELECT entity, {', '.join(columns)} FROM rollup_hour WHERE ts >= ? GROUP BY entity"
        result: dict[str, dict[str, float | None]] = {}
        for r in self._rows(sql, (*args, min(starts))):
            shown = result[r["entity"]] = {}
            for i, name in enumerate(names):
                if r[f"known_{i}"] is None and not r[f"old_hours_{i}"]:
                    continue  # no hour of it in this window
                window = {k: r[f"{c}_{i}"] for k, c in _WINDOW_COLUMNS.items()}
                shown[name] = uptime_of({**window, "probes": 0, "p95": None, "max": None}).percent
        return result

    def counts(self) -> dict[str, list[dict[str, Any]]]:
        """/metrics' counters: the healer's actions by outcome, notifications by channel and outcome."""
        restarts = self._rows("SELECT check_name, action, outcome, COUNT(*) AS n FROM actions GROUP BY 1, 2, 3")
        alerts = self._rows(
            "SELECT channel, CASE WHEN delivered IS NOT NULL THEN 'delivered' WHEN expired IS NOT NULL "
            "THEN 'expired' ELSE 'pending' END AS outcome, COUNT(*) AS n FROM outbox GROUP BY 1, 2"
        )
        return {"restarts": [dict(r) for r in restarts], "alerts": [dict(r) for r in alerts]}

    # --- the report ------------------------------------------------------------------------------------

    def incidents_during(self, start: float) -> list[dict[str, Any]]:
        """Incidents open at any time since `start`, oldest first."""
        rows = self._rows(
            "SELECT * FROM incidents WHERE opened >= ? OR closed IS NULL OR closed >= ? ORDER BY opened",
            (start, start),
        )
        return [dict(r) for r in rows]

    def actions_since(self, start: float) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows("SELECT * FROM actions WHERE started >= ? ORDER BY started", (start,))]

    def events_since(self, kind: str, start: float) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM events WHERE kind = ? AND ts >= ? ORDER BY id", (kind, start))
        return [dict(r) for r in rows]

    # --- pictures: uptime by slot, latency over time, incidents and actions in a window ------------------

    def uptime_slots(
        self, start: float, end: float, slots: int, entities: list[str] | None = None, *, hours: bool | None = None
    ) -> dict[str, list[tuple[float, float]]]:
        """entity -> `slots` equal slices of [start, end), each (seconds ok, seconds known).

        Slices shorter than an hour read the minute rollups (kept two weeks by default), longer ones the
        hours (`hours` chooses: the hours for a period older than the minutes are kept); a minute or hour
        counts in the slice its start falls in. Rows from before schema 5 (counts, no seconds) stand for
        their whole minute or hour, ok in the share of their probes that were. The minute an entity is in
        now is not written yet, so the last slice lags by up to a minute."""
        width = max(1, int((end - start) // slots))
        by_hour = width >= HOUR if hours is None else hours
        table, size = ("rollup_hour", HOUR) if by_hour else ("rollup_minute", 60)
        first = int(start)
        sql = (
            f"SELECT entity, (ts - ?) / ? AS slot, "
            f"SUM(CASE WHEN seconds_known IS NULL THEN {size}.0 * ok / NULLIF(count, 0) ELSE seconds_ok END) AS ok_s, "
            f"SUM(CASE WHEN seconds_known IS NULL THEN {size}.0 ELSE seconds_known END) AS known_s "
            f"FROM {table} WHERE ts >= ? AND ts < ?"
        )
        args: list[Any] = [first, width, first, first + width * slots]
        if entities is not None:
            if not entities:
                return {}
            sql += f" AND entity IN ({', '.join('?' for _ in entities)})"
            args.extend(entities)
        result: dict[str, list[tuple[float, float]]] = {}
        for row in self._rows(sql + " GROUP BY entity, slot", tuple(args)):
            slot = int(row["slot"])
            if 0 <= slot < slots:
                found = result.setdefault(row["entity"], [(0.0, 0.0)] * slots)
                found[slot] = (float(row["ok_s"] or 0.0), float(row["known_s"] or 0.0))
        return result

    def latency_series(self, entity: str, start: float, end: float, buckets: int) -> list[dict[str, Any]]:
        """One entity's latency in `buckets` equal slices of [start, end) from its minute rollups, oldest
        first, slices without a probe left out: `ts` (the slice's start), `p50` (weighted by probes),
        `p95` and `max` (the worst minute's), `count`."""
        width = max(60, int((end - start) // buckets))
        first = int(start)
        rows = self._rows(
            "SELECT (ts - ?) / ? AS slot, SUM(p50 * count) / SUM(CASE WHEN p50 IS NOT NULL THEN count END) AS p50, "
            "MAX(p95) AS p95, MAX(max) AS max, CAST(SUM(count) AS BIGINT) AS count FROM rollup_minute "
            "WHERE entity = ? AND ts >= ? AND ts < ? GROUP BY slot ORDER BY slot",
            (first, width, entity, first, int(end)),
        )
        return [
            {
                "ts": first + int(r["slot"]) * width,
                "p50": None if r["p50"] is None else float(r["p50"]),
                "p95": None if r["p95"] is None else float(r["p95"]),
                "max": None if r["max"] is None else float(r["max"]),
                "count": int(r["count"] or 0),
            }
            for r in rows
        ]

    def incidents_between(self, start: float, end: float, entities: list[str] | None = None) -> list[dict[str, Any]]:
        """Incidents open at any time in [start, end), oldest first (an open one runs on to now)."""
        sql = "SELECT * FROM incidents WHERE opened < ? AND (closed IS NULL OR closed >= ?)"
        args: list[Any] = [end, start]
        if entities is not None:
            if not entities:
                return []
            sql += f" AND entity IN ({', '.join('?' for _ in entities)})"
            args.extend(entities)
        return [dict(r) for r in self._rows(sql + " ORDER BY opened", tuple(args))]

    def actions_between(self, start: float, end: float, check: str | None = None) -> list[dict[str, Any]]:
        """The healer's attempts started in [start, end), oldest first."""
        sql = "SELECT * FROM actions WHERE started >= ? AND started < ?"
        args: list[Any] = [start, end]
        if check is not None:
            sql += " AND check_name = ?"
            args.append(check)
        return [dict(r) for r in self._rows(sql + " ORDER BY started", tuple(args))]

    def events_between(self, entity: str, start: float, end: float, limit: int = 200) -> list[dict[str, Any]]:
        """One entity's events in [start, end), newest first."""
        rows = self._rows(
            "SELECT ts, kind, old, new, message FROM events WHERE entity = ? AND ts >= ? AND ts < ? "
            "ORDER BY id DESC LIMIT ?",
            (entity, start, end, limit),
        )
        return [dict(r) for r in rows]
