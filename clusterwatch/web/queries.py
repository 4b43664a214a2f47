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

from clusterwatch.store.db import errors
from clusterwatch.store.history import History as StoreHistory

log = logging.getLogger("clusterwatch.web")
WINDOWS = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
UPTIME_EVERY = 60.0
MAX_LIMIT = 1000
READS = ThreadPoolExecutor(2, thread_name_prefix="clusterwatch-web-read")
T = TypeVar("T")


class History:
    def __init__(self, location: str) -> None:
        self.reads = StoreHistory(location)
        self.uptime: dict[str, dict[str, float | None]] = {}
        self._task: asyncio.Task[None] | None = None

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

    def counts(self) -> dict[str, list[dict[str, Any]]]:
        """Blocking: /metrics' counters, refreshed by the server in a thread."""
        return self.reads.counts()

    async def refresh_uptime(self) -> None:
        try:
            self.uptime = await self._read(self.reads.uptime_windows, WINDOWS, time.time())
        except errors() as exc:  # the store away: the last figures stay, said in one line
            log.error("uptime refresh failed: %s", exc)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.refresh_uptime()
                await asyncio.sleep(UPTIME_EVERY)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
