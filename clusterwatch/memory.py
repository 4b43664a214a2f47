"""How the long-running monitor keeps Python's cyclic garbage collector out of its schedule.

At 10,000 checks a full collection walked every object the process holds (modules, the config, the plan,
every entity's state): 61 of them in two minutes, 247 ms each at the median, and each one a pause in which
no probe starts (the scheduler's lag p99). Objects that live as long as the process are moved out of the
collector's sight (`gc.freeze`) once the monitor has started and after each reload, and young collections
run less often: the monitor allocates many short-lived objects that are freed by reference counting and
never form cycles. What is freed at start-up (import and validation scratch) is handed back to the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import time
from typing import Any

# gen0 after 50,000 new container objects (default 700); gen1 every 20 gen0 runs, gen2 every 100 gen1 runs
# (and, as always, only when the objects that survived into it have grown by a quarter since the last one)
THRESHOLDS = (50_000, 20, 100)


def settle() -> None:
    """What lives now lives on: collect what is garbage, freeze the rest, return the freed heap."""
    gc.unfreeze()  # a reload's replaced config may now be garbage
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    _trim_heap()


class Pauses:
    """The collector's pauses since the last read, for the stats line: the scheduler's lag p99 and these
    side by side tell a full collection from a busy loop."""

    def __init__(self) -> None:
        self._began = 0.0
        self.collections = self.full = 0
        self.longest_ms = 0.0
        self.longest_generation = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = (time.perf_counter() - self._began) * 1000
        self.collections += 1
        self.full += info.get("generation") == 2
        if took > self.longest_ms:
            self.longest_ms, self.longest_generation = took, int(info.get("generation", 0))

    def read(self) -> dict[str, float]:
        """What happened since the last read; the counts start again."""
        out = {
            "gc_collections": self.collections,
            "gc_full": self.full,
            "gc_longest_ms": round(self.longest_ms, 1),
            "gc_longest_generation": self.longest_generation,
        }
        self.collections = self.full = self.longest_generation = 0
        self.longest_ms = 0.0
        return out


pauses = Pauses()


def watch_pauses() -> None:
    if pauses not in gc.callbacks:
        gc.callbacks.append(pauses)


def _trim_heap() -> None:
    """glibc keeps freed memory mapped; malloc_trim returns it (~1 MB after start-up). Elsewhere (no
    malloc_trim in the process's own symbols): nothing. No find_library: it runs ldconfig, on the event loop."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
