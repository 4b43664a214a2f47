"""memory.settle: what lives at start-up is frozen out of the collector's way, and a later settle (a reload)
frees what was frozen and has since become garbage, cycles included."""

from __future__ import annotations

import gc
import weakref

from clusterwatch import memory


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_settle_freezes_the_living_and_a_later_settle_frees_what_died() -> None:
    before = gc.get_threshold()
    try:
        old = Node()
        gone = weakref.ref(old)
        memory.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == memory.THRESHOLDS
        del old
        gc.collect()
        assert gone() is not None  # frozen: a full collection does not look at it
        memory.settle()  # as after a reload
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
