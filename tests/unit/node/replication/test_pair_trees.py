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
from node.replication.store import ReplicaStore, TierStore, digest_of
from node.replication.sync import MERKLE_LAYOUT, DivergenceCheck, PairSpace, PairTrees
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


async def test_the_feed_of_digests_is_the_feed_of_values_hashed(store: ReplicaStore) -> None:
    # What the trees catch up from: each changed key's digest as the store keeps it,
    # equal to hashing the value the plain feed reports (None for a deleted key).
    for i in range(40):
        await store.update(
            "population", f"job_resource_ledger/d{i % 15}", lambda _, i=i: bytes([i])
        )
    await store.update("population", "job_resource_ledger/d3", lambda _: None)
    for after, limit in ((0, 1000), (0, 7), (22, 5)):
        values = store.changes("population", "", after, limit)
        digests = store.changes("population", "", after, limit, digests=True)
        assert (digests.feed, digests.through) == (values.feed, values.through)
        assert digests.entries == [
            (seq, key, None if value is None else digest_of(value))
            for seq, key, value in values.entries
        ]
        if limit == 1000:  # the whole feed: the deleted key is there, as None
            assert ("job_resource_ledger/d3", None) in [(k, d) for _, k, d in digests.entries]


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


async def test_a_session_never_puts_a_key_outside_the_pair_space_into_its_tree(
    store: ReplicaStore,
) -> None:
    """A peer with another view of the live set may send a key this node holds but does
    not share with that peer. Joining it changes nothing here (the same state), so the
    feed records nothing; the tree must still not take the key in: a key left in a
    pair tree that placement keeps out of it differs from the peer's tree forever, and
    every session pushed it to a node that does not own it, which handed it back
    (found by the chaos run, seed 202)."""
    live = frozenset({"n1", "n2", "n3"})
    outside = next(
        f"job_resource_ledger/k{i}"
        for i in range(100)
        if set(place(f"job_resource_ledger/k{i}", live)) == {"n1", "n3"}
    )
    await store.update("population", outside, lambda _: b"same")
    trees = PairTrees(store, "population", "n1")
    trees.refresh(live, place)

    async def merge(tier: str, key: str, value: bytes) -> bytes | None:
        return await store.update(tier, key, lambda old: old if old is not None else value)

    space = PairSpace(store, merge, "population", "population:n1:n2", trees.tree("n2"))
    space.merge_values({outside: b"same"})
    await space.flush()
    trees.refresh(live, place)
    assert trees.tree("n2").root() == scratch(store, "n2", live)
    assert outside not in trees.strays


def test_divergence_counts_only_a_key_differing_again_with_both_copies_unchanged() -> None:
    check = DivergenceCheck()
    a, b, c, d = b"a" * 16, b"b" * 16, b"c" * 16, b"d" * 16
    found, left = {"k": a, "j": None, "w": a}, {"k": b, "j": c, "w": b}
    assert check.session("agent", "n2", found, left, {"k": d, "j": a, "w": d}) == []
    # k: this copy is still what the join left, and the peer sends what it sent
    #    before: neither side changed, yet they differ -> persisting.
    # j: written here since (c -> a): a new difference, not a broken join.
    # w: the peer's copy changed (d -> c): a write of the peer's, still on its way
    #    here as a replica write, not a broken join.
    found = {"k": b, "j": a, "w": b}
    assert check.session("agent", "n2", found, found, {"k": d, "j": a, "w": c}) == ["k"]
    assert check.session("agent", "n3", {"k": b}, {"k": b}, {"k": d}) == []  # per peer
    check.forget("agent", "n2")  # a failed session: what it sent may not have arrived
    assert check.session("agent", "n2", {"k": b}, {"k": b}, {"k": d}) == []
    check.keep_only({"n2"})
    assert check.session("agent", "n3", {"k": b}, {"k": b}, {"k": d}) == []
    # a peer that holds no copy, twice: it keeps nothing it is sent
    assert check.session("agent", "n2", {"k": b}, {"k": b}, {"k": None}) == []
    assert check.session("agent", "n2", {"k": b}, {"k": b}, {"k": None}) == ["k"]
    assert check.detected == 2
