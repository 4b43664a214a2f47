"""When checks run: each at its own interval, on a fixed grid (no drift), never overlapping itself.

One heap and one loop for any number of checks: starting 10,000 is pushing 10,000 entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("clusterwatch.scheduler")
BEAT = 1.0  # the loop turns at least this often, so a stuck loop is told from an idle one
MIN_INTERVAL = 0.05  # a guard: the config refuses zero, but a zero here would spin or divide by it


@dataclass
class Job:
    key: str
    item: Any
    interval: float
    generation: int
    running: bool = False
    runs: int = 0
    skipped: int = 0


class Scheduler:
    def __init__(self, run: Callable[[Job], Awaitable[None]], concurrency: int, max_first_delay: float = 10.0) -> None:
        self._run = run
        self._semaphore = asyncio.Semaphore(concurrency)
        self._heap: list[tuple[float, int, str, int, bool]] = []
        self._jobs: dict[str, Job] = {}
        self._seq = itertools.count()
        self._generation = itertools.count()
        self._waiter: asyncio.Future[None] | None = None  # the loop's sleep, while it sleeps
        self._tasks: set[asyncio.Task[None]] = set()
        self.max_first_delay = max_first_delay
        self.lags: deque[float] = deque(maxlen=10000)  # seconds late, at probe start
        self.started = 0
        self.skipped = 0
        self.beat = time.monotonic()  # the loop's last turn: how self-supervision sees progress

    @property
    def jobs(self) -> dict[str, Job]:
        return self._jobs

    def add(self, key: str, item: Any, interval: float, *, first_delay: float | None = None) -> None:
        """Schedule (or reschedule) a check; its first run is jittered so checks don't run in lockstep."""
        job = Job(key, item, max(interval, MIN_INTERVAL), next(self._generation))
        old = self._jobs.get(key)
        if old is not None:
            job.running = old.running
        self._jobs[key] = job
        delay = random.uniform(0, min(interval, self.max_first_delay)) if first_delay is None else first_delay
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), key, job.generation, False))
        self._wake()

    def run_soon(self, key: str, delay: float) -> None:
        """One extra run off the grid (a retry after a soft failure); the grid itself stays as it is."""
        job = self._jobs.get(key)
        if job is not None:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), key, job.generation, True))
            self._wake()

    def remove(self, key: str) -> None:
        self._jobs.pop(key, None)  # its heap entry is skipped when it comes up

    async def run_forever(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._wake())
        try:
            await self._loop(stop)
        finally:
            stopping.cancel()

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.beat = time.monotonic()
            if not self._heap:
                await self._sleep(BEAT, stop)
                continue
            due, _, key, generation, oneshot = self._heap[0]
            now = time.monotonic()
            if due > now:
                await self._sleep(min(due - now, BEAT), stop)
                continue
            heapq.heappop(self._heap)
            job = self._jobs.get(key)
            if job is None or job.generation != generation:
                continue
            if job.running:
                if not oneshot:
                    job.skipped += 1  # never overlaps itself: this slot is dropped
                    self.skipped += 1
            else:
                job.running = True
                task = asyncio.create_task(self._guarded(job, due))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if oneshot:
                continue
            # The next slot stays on the grid: missed slots are skipped, never bunched up.
            slots = max(1, math.ceil((now - due) / job.interval)) if now - due >= job.interval else 1
            heapq.heappush(self._heap, (due + slots * job.interval, next(self._seq), key, generation, False))

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        """Until `seconds` pass, a job comes in or `stop` is set: one future and one timer (two tasks and an
        asyncio.wait per sleep were a tenth of the event loop's CPU at 1,000 probes a second)."""
        if stop.is_set():
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(seconds, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _guarded(self, job: Job, due: float) -> None:
        try:
            async with self._semaphore:
                self.lags.append(max(0.0, time.monotonic() - due))
                self.started += 1
                job.runs += 1
                await self._run(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("check %s: unexpected error in its run", job.key)
        finally:
            current = self._jobs.get(job.key)
            if current is not None:
                current.running = False

    async def cancel_running(self, timeout: float = 1.0) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)

    def lag_percentiles(self) -> tuple[float, float]:
        values = sorted(self.lags)
        if not values:
            return 0.0, 0.0
        return values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.99))]
