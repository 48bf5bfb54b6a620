"""Batch work runs the cyclic garbage collector between batches, and still frees cycles."""

from __future__ import annotations

import gc
import weakref

from runtime.pacing import CollectBetweenBatches


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_cycles_wait_for_the_end_of_the_batch_and_are_freed_then() -> None:
    assert gc.isenabled()
    with CollectBetweenBatches(full_every=3600) as collector:
        assert not gc.isenabled()
        node = Node()
        gone = weakref.ref(node)
        del node
        allocated = [[] for _ in range(100_000)]  # far past the automatic thresholds
        del allocated
        assert gone() is not None  # no collection in the middle of a batch
        collector.between_batches()
        assert gone() is None
    assert gc.isenabled()


def test_long_lived_cycles_are_freed_by_the_periodic_full_collection() -> None:
    with CollectBetweenBatches(full_every=0) as collector:
        node = Node()
        gc.collect(1)  # survived the young generations: now an old object
        gone = weakref.ref(node)
        del node
        collector.between_batches()
        assert gone() is None
