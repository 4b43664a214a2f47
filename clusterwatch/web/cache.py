"""Stale-while-revalidate snapshots for the heaviest answers (the overview, the full status,
/metrics at 10,000 checks): a request gets the latest snapshot at once, and a fresh one is
built in the background, at most once per `ttl`, only while somebody keeps asking."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any


class Snapshot:
    def __init__(self, build: Callable[[], Awaitable[Any]], ttl: float) -> None:
        self._build = build
        self.ttl = ttl
        self.value: Any = None
        self.built_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def get(self) -> Any:
        age = time.monotonic() - self.built_at
        if self.value is None or age > self.ttl * 10:
            await self.refresh()  # nothing, or too old to show: wait for a fresh one
        elif age >= self.ttl and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self.refresh())
        return self.value

    async def refresh(self) -> None:
        self.value = await self._build()
        self.built_at = time.monotonic()

    def warm(self) -> None:
        """Build the first snapshot now, in the background, so no request has to wait for it."""
        if self._task is None:
            self._task = asyncio.create_task(self.refresh())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
