"""The web's reads: the store's history, off the event loop (each in a thread, on that thread's
read-only connection), and an uptime cache recomputed in the background so pages never scan
months of rollups. No SQL here: the store owns it (clusterwatch.store.history)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from clusterwatch.store.history import History as StoreHistory

log = logging.getLogger("clusterwatch.web")
WINDOWS = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
UPTIME_EVERY = 60.0
MAX_LIMIT = 1000
_EQUALS = re.compile(r"^(\w+) = \?$")


def _filters(where: list[str], args: list[Any]) -> tuple[dict[str, Any], bool | None]:
    """The filters older callers spell as clauses ("entity = ?", "closed IS NULL"), as the store's
    keyword arguments; anything else is refused rather than passed on as SQL."""
    equals: dict[str, Any] = {}
    closed: bool | None = None
    values = iter(args)
    for clause in where:
        if match := _EQUALS.match(clause):
            equals[match.group(1)] = next(values)
        elif clause == "closed IS NULL":
            closed = False
        elif clause == "closed IS NOT NULL":
            closed = True
        else:
            raise ValueError(f"unsupported filter {clause!r}")
    return equals, closed


class History:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = StoreHistory(path)
        self.uptime: dict[str, dict[str, float | None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def page(
        self,
        table: str,
        *,
        limit: int,
        before: int | None,
        equals: dict[str, Any] | None = None,
        closed: bool | None = None,
        where: list[str] | None = None,
        args: list[Any] | None = None,
        order: str | None = None,
    ) -> dict[str, Any]:
        """Cursor pagination, newest first (see StoreHistory.page). `where`/`args`/`order` are the
        older spelling, still understood for the filters the API uses."""
        if where:
            more, closed_too = _filters(where, list(args or []))
            equals = {**(equals or {}), **more}
            closed = closed if closed_too is None else closed_too
        return await asyncio.to_thread(self.reads.page, table, limit=limit, before=before, equals=equals, closed=closed)

    async def recent_observations(self, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.reads.recent_observations, entity, limit)

    async def recent_events(self, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.reads.recent_events, entity, limit)

    async def recent_actions(self, check: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.reads.recent_actions, check, limit)

    def counts(self) -> dict[str, list[dict[str, Any]]]:
        """Blocking: /metrics' counters, refreshed by the server in a thread."""
        return self.reads.counts()

    async def refresh_uptime(self) -> None:
        try:
            self.uptime = await asyncio.to_thread(self.reads.uptime_windows, WINDOWS, time.time())
        except sqlite3.Error:
            log.exception("uptime refresh failed")

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
