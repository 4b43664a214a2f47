"""What the overview's pictures are drawn from, read from the store in the background so that no page waits.

- Uptime by time in slots per entity, for 24 h (48 slots of 30 min, from the minute rollups) and, once
  somebody asks for them, 7 d / 30 d / 90 d (from the hourly rollups). Slots are aligned to their width,
  so a finished slot never changes: after the first read only the last two slots are read again
  (entities in chunks, each a primary-key range seek), and a new slot shifts the others along.
- The incidents and the healer's attempts of the last 7 days for the timeline, and the silences, read every
  few seconds; open incidents come from the live state as well, so a new one is drawn at once. A page is
  built from these copies and never waits on the store (whose read threads the slot reads keep busy).

The SQL is the store's (clusterwatch.store.history); each read runs in the web's read threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clusterwatch.store.db import errors
from clusterwatch.web import history_svg
from clusterwatch.web.svg import Mark, Slot, Span
from clusterwatch.web.view import MONITOR

if TYPE_CHECKING:
    from clusterwatch.alerting.routing import Silence
    from clusterwatch.web.view import MonitorView as Monitor

log = logging.getLogger("clusterwatch.web")
HOUR, DAY = 3600, 86400
# name -> (slot width in seconds, number of slots): each width a whole number of the rollups read
WINDOWS: dict[str, tuple[int, int]] = {
    "24h": (1800, 48),
    "7d": (3 * HOUR, 56),
    "30d": (12 * HOUR, 60),
    "90d": (DAY, 90),
}
DEFAULT_WINDOW = "24h"
CHUNK = 500  # entities per read: one statement of primary-key seeks each
REFRESH = {"24h": 30.0}  # seconds between reads of the newest slots; longer windows: LONG_REFRESH
LATE = 600.0  # the slot before the open one is read again this long after it ended
LONG_REFRESH = 300.0
LONG_IDLE = 900.0  # a long window nobody asked for this long is no longer kept fresh
TIMELINE_SPAN = 7 * DAY
TIMELINE_EVERY = 2.0
TIMELINE_INCIDENTS = 2000  # the newest this many incidents of the 7 days are kept for the strip


@dataclass
class SlotWindow:
    """One window's slots for every entity: entity -> seconds ok, seconds known, slot after slot, in an
    array of doubles (10,000 entities x 48 slots as tuples of floats were 1.4 million objects, ~55 MB, for
    the collector to walk; as arrays ~10 MB that it never walks)."""

    name: str
    width: int
    count: int
    first: float = 0.0  # the start of slot 0
    values: dict[str, array[float]] = field(default_factory=dict)
    ready: bool = False
    asked: float = 0.0  # monotonic: when a page last asked for this window
    read_at: float = 0.0  # monotonic: when it was last read
    drawn: dict[str, str] = field(default_factory=dict)  # entity -> its bars as last drawn (until the next read)

    def aligned_first(self, now: float) -> float:
        """Slot 0's start: slots aligned to whole widths in local time (days at local midnight)."""
        offset = time.localtime(now).tm_gmtoff
        current = (now + offset) // self.width * self.width - offset
        return current - (self.count - 1) * self.width

    def slot(self, entity: str, i: int) -> tuple[float, float]:
        """Slot i's (seconds ok, seconds known); (0, 0) for an entity not read yet."""
        found = self.values.get(entity)
        return (found[2 * i], found[2 * i + 1]) if found else (0.0, 0.0)

    def slots(self, entity: str) -> list[Slot]:
        out = []
        for i in range(self.count):
            start = self.first + i * self.width
            ok, known = self.slot(entity, i)
            share = None if known <= 0 else max(0.0, min(1.0, 1 - ok / known))
            out.append(Slot(start, start + self.width, share, known=known or None))
        return out

    def share_up(self, entity: str) -> float | None:
        found = self.values.get(entity)
        if not found:
            return None
        ok, known = sum(found[0::2]), sum(found[1::2])
        return ok / known if known > 0 else None


def _flat(found: list[tuple[float, float]] | None, count: int) -> array[float]:
    """The store's (ok, known) per slot as one array: ok, known, ok, known, ..."""
    return array("d", chain.from_iterable(found)) if found else array("d", bytes(16 * count))


class OverviewData:
    """The overview's data, one per web server, kept fresh by its own loops (started with the app)."""

    def __init__(self, monitor: Monitor) -> None:
        self.m = monitor
        self.windows = {name: SlotWindow(name, width, count) for name, (width, count) in WINDOWS.items()}
        self.windows[DEFAULT_WINDOW].asked = time.monotonic()
        self.incidents: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.timeline_read_at = 0.0
        self.viewed = 0.0  # monotonic: when a page last drew the timeline
        self.silences: list[Silence] = []  # read with the timeline: a page build waits on no store
        self.error: str | None = None
        self.snapshots: dict[str, Any] = {}  # the live fragment's answers at many checks (cache.Snapshot)
        self.parts: dict[str, tuple[float, dict[str, str]]] = {}  # span -> (when built, the live parts)
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self._timeline_wake: asyncio.Event | None = None

    async def _read(self, fn: Any, *args: Any) -> Any:
        return await self.m.web.read(fn, *args)

    # --- uptime slots ----------------------------------------------------------------------------------

    def window(self, name: str) -> SlotWindow:
        """The window a page shows; asking for a long one starts keeping it fresh (its first read follows)."""
        found = self.windows.get(name) or self.windows[DEFAULT_WINDOW]
        found.asked = time.monotonic()
        if not found.ready and self._wake is not None:
            self._wake.set()
        return found

    async def wait_ready(self, name: str, timeout: float = 2.0) -> SlotWindow:
        """The window, once read (a long one's first read starts when asked), or as it is after `timeout`."""
        found = self.window(name)
        deadline = time.monotonic() + timeout
        while not found.ready and self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return found

    async def refresh_window(self, w: SlotWindow) -> None:
        """Read what changed: every slot of entities not read yet, the newest slot or two of the others."""
        first = w.aligned_first(time.time())
        if first != w.first:
            shift = round((first - w.first) / w.width) if w.first else 0
            if shift == 1:  # the usual step: one slot done, a new one begun
                for values in w.values.values():
                    del values[:2]
                    values.extend((0.0, 0.0))
            else:  # the first read, or a web that slept through slots: read all again
                w.values.clear()
            w.first = first
        names = list(self.m.entities)
        new = [n for n in names if n not in w.values]
        old = [n for n in names if n in w.values]
        reads = self.m.web.history.reads
        end = first + w.count * w.width
        for chunk in (new[i : i + CHUNK] for i in range(0, len(new), CHUNK)):
            found = await self._read(reads.uptime_slots, first, end, w.count, chunk)
            for name in chunk:
                w.values[name] = _flat(found.get(name), w.count)
        # The slot now open, and the one before while minutes of it may still be written (a silent entity's
        # last minute is written a few minutes on): a read of a slot or two per entity, not the window.
        fresh = time.time() - (end - w.width) < LATE
        tail = 2 if fresh else 1
        for chunk in (old[i : i + CHUNK] for i in range(0, len(old), CHUNK)):
            found = await self._read(reads.uptime_slots, end - tail * w.width, end, tail, chunk)
            for name in chunk:
                values = w.values.get(name)
                if values is not None:
                    values[-2 * tail :] = _flat(found.get(name), tail)
        for gone in set(w.values) - set(names):
            del w.values[gone]
        w.ready, w.read_at = True, time.monotonic()
        w.drawn = {}  # drawn again from what was read

    async def _slots_loop(self) -> None:
        assert self._wake is not None
        while True:
            now = time.monotonic()
            for w in self.windows.values():
                every = REFRESH.get(w.name, LONG_REFRESH)
                wanted = w.name == DEFAULT_WINDOW or (w.asked and now - w.asked < LONG_IDLE)
                unread = len(w.values) < len(self.m.entities)  # entities new since the last read: read them soon
                if wanted and (not w.ready or unread or now - w.read_at >= every):
                    try:
                        await self.refresh_window(w)
                        self.error = None
                    except errors() as exc:  # the store away: the last slots stay, said once
                        error = f"{type(exc).__name__}: {exc}"[:300]
                        if error != self.error:
                            log.error("reading uptime slots (%s) failed: %s", w.name, error)
                        self.error = error
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 5.0)

    # --- the timeline --------------------------------------------------------------------------------

    async def refresh_timeline(self) -> None:
        reads = self.m.web.history.reads
        now = time.time()
        incidents = await self._read(reads.incidents_between, now - TIMELINE_SPAN, now + 60)
        self.incidents = incidents[-TIMELINE_INCIDENTS:]
        self.actions = await self._read(reads.actions_between, now - TIMELINE_SPAN, now + 60)
        self.silences = await self.m.silences()
        self.timeline_read_at = time.monotonic()

    async def _timeline_loop(self) -> None:
        while True:
            try:
                await self.refresh_timeline()
            except errors() as exc:
                log.debug("reading the timeline failed: %s", exc)
            watched = time.monotonic() - self.viewed < 60  # nobody looking: read it now and then only
            assert self._timeline_wake is not None
            self._timeline_wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # a page looking again wakes it at once
                await asyncio.wait_for(self._timeline_wake.wait(), TIMELINE_EVERY if watched else 30.0)

    def timeline_data(self, start: float, end: float) -> tuple[list[Span], list[Mark]]:
        """Incidents as spans (from the store, and open ones from the live state, so a new one shows at once)
        and the healer's attempts as marks on their incident's lane, drawn as the check's page and the
        report draw them (history_svg)."""
        if time.monotonic() - self.viewed >= 60 and self._timeline_wake is not None:
            self._timeline_wake.set()  # its reads had slowed down: read now
        self.viewed = time.monotonic()
        rows = [r for r in self.incidents if r.get("closed") is None or r["closed"] >= start]
        stored = {r["id"] for r in rows}
        for e in self.m.entities.values():
            if e.incident and e.incident not in stored and e.incident_started is not None:
                rows.append(
                    {
                        "id": e.incident,
                        "entity": e.name,
                        "opened": e.incident_started,
                        "closed": None,
                        "status": e.last.status.value if e.last else "critical",
                        "message": e.last.message if e.last else "",
                    }
                )
        actions = [a for a in self.actions if start <= float(a["started"]) <= end]
        return history_svg.spans(rows), history_svg.marks(actions, rows)

    def last_action(self, check: str, entity: str | None = None) -> dict[str, Any] | None:
        """The healer's newest attempt for an entity (or else its check) in the last 7 days: what was tried."""
        for a in reversed(self.actions):
            if a["check_name"] == check and (entity is None or a["entity"] in (entity, check)):
                return a
        return None

    # --- life cycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._wake, self._timeline_wake = asyncio.Event(), asyncio.Event()
        self._tasks = [asyncio.create_task(self._slots_loop()), asyncio.create_task(self._timeline_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for snapshot in self.snapshots.values():
            await snapshot.stop()


_BY_MONITOR: weakref.WeakKeyDictionary[Any, OverviewData] = weakref.WeakKeyDictionary()


def of(m: Monitor) -> OverviewData:
    """The monitor's overview data (made here when the app did not start it: a page rendered without a server)."""
    found = _BY_MONITOR.get(m)
    if found is None:
        found = _BY_MONITOR[m] = OverviewData(m)
    return found


async def lifespan(app: web.Application) -> AsyncIterator[None]:
    """Start the reads with the web server, stop them with it."""
    data = of(app[MONITOR])
    data.start()
    yield
    await data.stop()
