"""Pair-space Merkle trees (and the stray keys) kept current from the change feed equal
what a scan of every key gives, whatever was written, deleted or trimmed in between; a
live-set change or a feed that cannot tell what changed rebuilds them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from gossip.merkle import MerkleTree
from node.replication import coordinator
from node.replication.memory import MemoryStore
from node.replication.store import ReplicaStore, TierStore
from node.replication.sync import MERKLE_LAYOUT, PairTrees
from node.tiers.ops import TIERS

SPEC = TIERS["population"]


def place(key: str, live: frozenset[str]) -> Sequence[str]:
    return coordinator.owners(SPEC, key, live)


def scratch(store: ReplicaStore, peer: str, live: frozenset[str]) -> bytes:
    items = coordinator.pair_keys(SPEC, store.keys_and_digests("population"), "n1", peer, live)
    return MerkleTree.from_items(items, MERKLE_LAYOUT).root()


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        yield MemoryStore()
        return
    tier_store = TierStore(str(tmp_path / "tiers.db"))
    yield tier_store
    await tier_store.aclose()


async def test_incremental_trees_match_trees_built_from_every_key(store: ReplicaStore) -> None:
    rng = random.Random(11)
    trees = PairTrees(store, "population", "n1")
    live = frozenset({"n1", "n2", "n3"})
    for step in range(6):
        for _ in range(150):
            key = f"job_resource_ledger/k{rng.randrange(300)}"
            value = None if rng.random() < 0.2 else rng.randbytes(8)
            await store.update("population", key, lambda _old, v=value: v)
        if step == 3:
            live = frozenset({"n1", "n2", "n3", "n4"})  # placement moves: rebuilt
        trees.refresh(live, place)
        for peer in live - {"n1"}:
            assert trees.tree(peer).root() == scratch(store, peer, live), (step, peer)
        held = [k for k, _ in store.keys_and_digests("population")]
        assert trees.strays == {k for k in held if "n1" not in place(k, live)}, step
    assert trees.rebuilds == 2 and trees.applied > 0


async def test_nothing_changed_means_nothing_read_again(store: ReplicaStore) -> None:
    trees = PairTrees(store, "population", "n1")
    live = frozenset({"n1", "n2"})
    await store.update("population", "job_resource_ledger/a", lambda _: b"1")
    trees.refresh(live, place)
    applied = trees.applied
    trees.refresh(live, place)
    assert (trees.rebuilds, trees.applied) == (1, applied)


async def test_a_trimmed_feed_rebuilds(tmp_path: Path) -> None:
    store = TierStore(str(tmp_path / "tiers.db"), feed_keep=10)
    try:
        trees = PairTrees(store, "population", "n1")
        live = frozenset({"n1", "n2"})
        trees.refresh(live, place)
        for i in range(3000):  # far past the feed's 10 kept changes (trimmed every 1024)
            await store.update("population", f"job_resource_ledger/t{i}", lambda _: b"x")
        trees.refresh(live, place)
        assert trees.rebuilds == 2
        assert trees.tree("n2").root() == scratch(store, "n2", live)
    finally:
        await store.aclose()
