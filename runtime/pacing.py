"""Pacing Python's cyclic garbage collector by batches of work instead of by allocations."""

from __future__ import annotations

import gc
import time


class CollectBetweenBatches:
    """The cyclic garbage collector paced by batches instead of by allocations.

    Batch work (the Kafka consumer, a view rebuild) keeps many objects for long (aggregates
    kept between batches, view rows) and makes many short-lived ones per event. Triggered by
    allocation counts, the collector runs in the middle of batches and walks the long-lived
    objects again and again: about a third of the consumer's CPU time in ``bench/ingest.py``, a
    sixth of a rebuild's in ``bench/replay.py``. Inside this context the automatic collector is
    off; :meth:`between_batches` collects the young generations (what the last batch left) and,
    every ``full_every`` seconds, everything. Cycles are still freed, only at known moments.

    The switch is process-wide: other threads' garbage waits for the next ``between_batches``
    too. Nested or concurrent uses leave the collector on once the outermost one ends.
    """

    def __init__(self, full_every: float = 60.0) -> None:
        self.full_every = full_every
        self.last_full = time.monotonic()
        self.was_enabled = True

    def __enter__(self) -> CollectBetweenBatches:
        self.was_enabled = gc.isenabled()
        gc.disable()
        self.last_full = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            gc.enable()

    def between_batches(self) -> None:
        if time.monotonic() - self.last_full >= self.full_every:
            gc.collect()
            self.last_full = time.monotonic()
        else:
            gc.collect(1)
