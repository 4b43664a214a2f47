"""The monitor watching itself: no background task may die quietly, and "healthy" means progress.

A monitor that runs on half-alive (the scheduler dead, the web still answering `ok`) is worse
than one that stops: systemd restarts a process that exits non-zero, and nobody restarts a
task that died inside a live one. So a task that ends or raises while the monitor runs stops
the whole process with a failure; and the watchdog, the heartbeat and /healthz say healthy only
while the scheduler keeps making progress and the store keeps writing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("clusterwatch.engine")
STALL_AFTER = 15.0  # seconds without a scheduler beat before the monitor calls itself unhealthy
GIVE_UP_AFTER = 60.0  # ... and before it exits, for the service manager to start it afresh
LAG_LIMIT = 5.0  # p99 scheduling lag (seconds) above which it is degraded
STORE_STALL = 30.0  # seconds with writes waiting and none committed: the store is not keeping history
EXIT_FAILURE = 3


class Supervisor:
    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._stopping = False
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.failure: str | None = None
        self._seq = itertools.count(1)

    def spawn(self, name: str, work: Coroutine[Any, Any, Any], *, oneshot: bool = False) -> asyncio.Task[Any]:
        """A loop (must run until the monitor stops) or a one-shot job (may end, must not raise)."""
        if oneshot:
            name = f"{name}#{next(self._seq)}"
        task = asyncio.create_task(work, name=f"clusterwatch:{name}")
        self.tasks[name] = task
        task.add_done_callback(lambda t, name=name: self._ended(name, t, oneshot))
        return task

    def _ended(self, name: str, task: asyncio.Task[Any], oneshot: bool) -> None:
        if self._stopping:
            return
        if oneshot:
            self.tasks.pop(name, None)
            if task.cancelled() or task.exception() is None:
                return
        if task.cancelled():
            why = "it was cancelled"
        elif (exc := task.exception()) is not None:
            why = f"{type(exc).__name__}: {exc}"
            log.critical("background task %s died", name, exc_info=exc)
        else:
            why = "it returned"
        self.fail(f"background task {name} stopped ({why}); exiting so that the service manager restarts clusterwatch")

    def fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            log.critical("%s", why)
        self._stop.set()

    async def stop(self) -> None:
        self._stopping = True
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


class Health:
    """One answer to "is the monitor doing its job", for the watchdog, the heartbeat and /healthz."""

    def __init__(
        self,
        *,
        beat: Callable[[], float],
        has_work: Callable[[], bool],
        lag_p99: Callable[[], float],
        store: Callable[[], dict[str, Any]],
        supervisor: Supervisor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._beat, self._has_work, self._lag, self._store = beat, has_work, lag_p99, store
        self._supervisor = supervisor
        self._clock = clock

    def failures(self) -> list[str]:
        """What no amount of waiting fixes: systemd's watchdog and the heartbeat stop on these."""
        found = []
        if self._supervisor.failure:
            found.append(self._supervisor.failure)
        stalled = self._clock() - self._beat()
        if self._has_work() and stalled > STALL_AFTER:
            found.append(f"the scheduler has made no progress for {stalled:.0f}s")
        store = self._store()
        if not store.get("writer_alive", True):
            found.append("the store's writer has stopped: history is not being kept")
        elif store.get("queue_depth", 0) and store.get("last_commit_age_s", 0.0) > STORE_STALL:
            found.append(f"the store has committed nothing for {store['last_commit_age_s']:.0f}s")
        return found

    def problems(self) -> list[str]:
        """Failures, and being far behind (an overloaded monitor is degraded, not dead): /healthz."""
        found = self.failures()
        lag = self._lag()
        if lag > LAG_LIMIT:
            found.append(f"checks start {lag:.1f}s late (p99)")
        return found

    def alive(self) -> bool:
        return not self.failures()

    def stuck(self) -> str | None:
        """Why the monitor cannot go on (no scheduler progress for long), or None."""
        stalled = self._clock() - self._beat()
        if self._has_work() and stalled > GIVE_UP_AFTER:
            return f"the scheduler has made no progress for {stalled:.0f}s"
        return None
