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
import ctypes.util
import gc

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


def _trim_heap() -> None:
    """glibc keeps freed memory mapped; malloc_trim returns it (~2 MB after start-up). Elsewhere: nothing."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)
