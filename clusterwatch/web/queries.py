"""The web's reads: the store's history, off the event loop (each in a thread, on that thread's
read-only connection), and an uptime cache recomputed in the background so pages never scan
months of rollups. No SQL here: the store owns it (clusterwatch.store.history)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from clusterwatch import redact
from clusterwatch.store.db import errors
from clusterwatch.store.healing import HealingHistory

log = logging.getLogger("clusterwatch.web")
WINDOWS = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
UPTIME_EVERY = 60.0
NEEDS_PERSON_EVERY = 2.0  # a banner shows (and goes) within this long of the store saying so
MAX_LIMIT = 1000
READS = ThreadPoolExecutor(2, thread_name_prefix="clusterwatch-web-read")
T = TypeVar("T")


class History:
    def __init__(self, location: str) -> None:
        self.reads = HealingHistory(location)
        self.uptime: dict[str, dict[str, float | None]] = {}
        self.needs_person: list[dict[str, Any]] = []  # the healer gave up on these: a person is needed
        self.needs_person_error: str | None = None  # why the last read of it failed
        self._task: asyncio.Task[None] | None = None
        self._needs_task: asyncio.Task[None] | None = None

    async def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Off the event loop, in the web's own threads (the default executor's are DNS lookups')."""
        return await asyncio.get_running_loop().run_in_executor(READS, partial(fn, *args, **kwargs))

    async def page(
        self,
        table: str,
        *,
        limit: int,
        before: int | None,
        equals: dict[str, Any] | None = None,
        closed: bool | None = None,
    ) -> dict[str, Any]:
        """Cursor pagination, newest first (see the store's History.page)."""
        return await self._read(self.reads.page, table, limit=limit, before=before, equals=equals, closed=closed)

    async def recent_observations(self, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self._read(self.reads.recent_observations, entity, limit)

    async def recent_events(self, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self._read(self.reads.recent_events, entity, limit)

    async def recent_actions(self, check: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        return await self._read(self.reads.recent_actions, check, limit)

    async def refresh_needs_person(self) -> None:
        """The targets the healer gave up on (the store's `needs_person`), read by one loop: pages and
        the API only look at this copy, so no number of open dashboards reads the store more often."""
        try:
            self.needs_person = await self._read(self.reads.needs_person)
        except errors() as exc:  # the store away: the last read stands, and the answer says why
            self.needs_person_error = redact.text(f"{type(exc).__name__}: {exc}")[:300]
            log.debug("reading the targets the healer gave up on failed: %s", self.needs_person_error)
            return
        self.needs_person_error = None

    def counts(self) -> dict[str, list[dict[str, Any]]]:
        """Blocking: /metrics' counters, refreshed by the server in a thread."""
        return self.reads.counts()

    async def refresh_uptime(self) -> None:
        try:
            self.uptime = await self._read(self.reads.uptime_windows, WINDOWS, time.time())
        except errors() as exc:  # the store away: the last figures stay, said in one line
            log.error("uptime refresh failed: %s", exc)

    async def uptime_slots(
        self, start: float, end: float, slots: int, entities: list[str] | None = None
    ) -> dict[str, list[tuple[float, float]]]:
        """entity -> (seconds ok, seconds known) in each of `slots` equal slices (the store's uptime_slots)."""
        return await self._read(self.reads.uptime_slots, start, end, slots, entities)

    async def latency_series(self, entity: str, start: float, end: float, buckets: int) -> list[dict[str, Any]]:
        return await self._read(self.reads.latency_series, entity, start, end, buckets)

    async def incidents_between(
        self, start: float, end: float, entities: list[str] | None = None
    ) -> list[dict[str, Any]]:
        return await self._read(self.reads.incidents_between, start, end, entities)

    async def actions_between(self, start: float, end: float, check: str | None = None) -> list[dict[str, Any]]:
        return await self._read(self.reads.actions_between, start, end, check)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.refresh_uptime()
                await asyncio.sleep(UPTIME_EVERY)

        async def needs_person() -> None:
            while True:
                try:
                    await self.refresh_needs_person()
                except Exception:  # the web's own bug: logged, and the banner's loop goes on
                    log.exception("reading the targets the healer gave up on failed unexpectedly")
                await asyncio.sleep(NEEDS_PERSON_EVERY)

        self._task = asyncio.create_task(loop())
        self._needs_task = asyncio.create_task(needs_person())

    async def stop(self) -> None:
        for task in (self._task, self._needs_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
