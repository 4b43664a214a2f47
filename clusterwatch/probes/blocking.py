"""Blocking calls a probe cannot avoid (statvfs on a mount, NVML), off the event loop and bounded.

A hung NFS mount blocks `statvfs` forever, and a wedged GPU driver blocks NVML the same way.
Run on the event loop, such a call stops every probe; run in the default executor, it takes
the threads DNS lookups need. So each kind of call gets a small lane of threads of its own:

- the caller waits at most its timeout, then gets `Blocked` (an observation, not a hang);
- a call still stuck from an earlier round is not started again, so one bad mount holds one
  thread, not one per round;
- the threads are daemon threads, not a ThreadPoolExecutor's: Python joins those at exit, so
  one stuck statvfs would keep `clusterwatch check` from ever exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Blocked(Exception):
    """The call did not return in time (or is still stuck from before); `str()` says so in one line."""


class Lane:
    """At most `size` threads for one kind of blocking call, one per key (a mount point, "nvml")."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self._stuck_since: dict[str, float] = {}  # key -> when its running call started (monotonic)
        self._lock = threading.Lock()

    def busy(self) -> dict[str, float]:
        """Seconds each call still running has been running, by key."""
        now = time.monotonic()
        with self._lock:
            return {key: now - since for key, since in self._stuck_since.items()}

    async def run(self, key: str, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread of this lane; its result or exception, or `Blocked` after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._claim(key):
            if loop.time() >= deadline:
                raise Blocked(f"all {self.size} {self.name} threads busy for {timeout:g}s (blocked calls)")
            await asyncio.sleep(0.05)  # a full lane is rare: only calls stuck in the kernel keep it full
        future: asyncio.Future[T] = loop.create_future()

        def work() -> None:
            outcome: tuple[Any, BaseException | None]
            try:
                outcome = (fn(*args), None)
            except BaseException as exc:  # handed to the waiting coroutine, which decides
                outcome = (None, exc)
            finally:
                with self._lock:
                    self._stuck_since.pop(key, None)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, outcome)

        threading.Thread(target=work, name=f"clusterwatch-{self.name}", daemon=True).start()
        try:
            async with asyncio.timeout_at(deadline):
                return await future
        except TimeoutError:
            raise Blocked(f"no answer within {timeout:g}s") from None

    def _claim(self, key: str) -> bool:
        """Take a thread for `key`; False while the lane is full. Blocked if `key` is still stuck from before."""
        with self._lock:
            since = self._stuck_since.get(key)
            if since is not None:
                raise Blocked(f"still blocked: the call started {time.monotonic() - since:.0f}s ago has not returned")
            if len(self._stuck_since) >= self.size:
                return False
            self._stuck_since[key] = time.monotonic()
            return True


def _settle(future: asyncio.Future[Any], outcome: tuple[Any, BaseException | None]) -> None:
    if future.done():
        return
    result, error = outcome
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


disks = Lane("disk", 4)  # statvfs per mount point
nvml = Lane("nvml", 1)  # NVML is process-global: one call at a time
