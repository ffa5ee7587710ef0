"""Garbage-collection pauses per generation, and settling what a node keeps."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from node.observe.gcpause import GcPauses, settle


@pytest.fixture
def pauses() -> Iterator[GcPauses]:
    p = GcPauses()
    p.install()
    try:
        yield p
    finally:
        p.uninstall()


def counts(p: GcPauses) -> dict[int, int]:
    return {g: h.snapshot()[0][-1][1] for g, h in p.seconds.items()}


def test_each_collection_is_timed_in_its_generation(pauses: GcPauses) -> None:
    before = counts(pauses)
    gc.collect(0)
    gc.collect(2)
    gc.collect(2)
    after = counts(pauses)
    assert after[0] - before[0] >= 1
    assert after[2] - before[2] == 2  # nothing else runs a full collection here
    buckets, total = pauses.seconds[2].snapshot()
    assert total > 0 and buckets[-1][0] == float("inf")


def test_uninstalled_it_records_nothing() -> None:
    p = GcPauses()
    p.install()
    p.uninstall()
    p.uninstall()  # twice is harmless
    gc.collect()
    assert counts(p) == {0: 0, 1: 0, 2: 0}
    assert p._callback not in gc.callbacks


def test_settle_takes_what_is_alive_out_of_full_collections() -> None:
    kept = [[i] for i in range(50_000)]  # tracked objects a node would keep for good
    try:
        done = settle()
        assert done.frozen == gc.get_freeze_count() >= len(kept)
        assert done.seconds >= 0
        # A full collection no longer walks them, and a frozen object is still freed
        # by reference counting when its last reference goes.
        assert len(gc.get_objects(generation=2)) < len(kept)
        kept.clear()
        assert gc.get_freeze_count() <= done.frozen - 50_000  # freed, not leaked
    finally:
        gc.unfreeze()
