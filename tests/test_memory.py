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


def test_pauses_are_counted_and_read_once() -> None:
    pauses = memory.Pauses()
    gc.callbacks.append(pauses)
    try:
        gc.collect()
        gc.collect(0)
    finally:
        gc.callbacks.remove(pauses)
    seen = pauses.read()
    assert seen["gc_collections"] >= 2 and seen["gc_full"] >= 1 and seen["gc_longest_ms"] >= 0
    assert seen["gc_longest_generation"] in (0, 1, 2)
    assert pauses.read() == {"gc_collections": 0, "gc_full": 0, "gc_longest_ms": 0.0, "gc_longest_generation": 0}
