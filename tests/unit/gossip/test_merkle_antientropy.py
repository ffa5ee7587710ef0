"""Merkle diffing and anti-entropy against a naive set-difference oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import codec
from gossip.antientropy import DictStore, SyncPeer
from gossip.errors import ConfigError, SyncError
from gossip.merkle import MerkleLayout, MerkleTree
from gossip.messages import SyncBegin, SyncMessage, SyncNodes, SyncValues

LAYOUTS = st.sampled_from([MerkleLayout(2, 1), MerkleLayout(4, 2), MerkleLayout(16, 2)])
KEYS = st.text(alphabet="abcdefgh/0123", min_size=1, max_size=6)
STORES = st.dictionaries(KEYS, st.binary(min_size=1, max_size=4), max_size=40)


def run_session(a: DictStore, b: DictStore) -> tuple[int, int, list[SyncMessage]]:
    """Drive a full session a -> b through the codec; return (bytes, messages, log)."""
    pa, pb = SyncPeer({"s": a}), SyncPeer({"s": b})
    msg: SyncMessage | None = pa.begin("s", 1)
    turn, nbytes, log = pb, 0, []
    while msg is not None:
        raw = codec.encode(msg)
        nbytes += len(raw)
        log.append(msg)
        msg = turn.handle(codec.decode_sync(raw))
        turn = pa if turn is pb else pb
    return nbytes, len(log), log


def store(layout: MerkleLayout, data: dict[str, bytes]) -> DictStore:
    s = DictStore(MerkleTree(layout))
    for k, v in data.items():
        s.put(k, v)
    return s


@settings(max_examples=150, deadline=None, derandomize=True)
@given(LAYOUTS, STORES, STORES)
def test_sync_equals_union_merge_and_ships_only_differing_keys(
    layout: MerkleLayout, left: dict[str, bytes], right: dict[str, bytes]
) -> None:
    a, b = store(layout, left), store(layout, right)
    _, _, log = run_session(a, b)
    # Oracle: keys present on one side only, or with different values.
    differing = {k for k in left.keys() | right.keys() if left.get(k) != right.get(k)}
    expected = {
        k: max(v for v in (left.get(k), right.get(k)) if v is not None)
        for k in left.keys() | right.keys()
    }
    assert a.data == b.data == expected
    assert a.tree.root() == b.tree.root()
    shipped = {k for m in log if isinstance(m, SyncValues) for k, _ in m.values}
    assert shipped == differing
    if not differing:
        assert len(log) == 2  # Begin, Done


@settings(max_examples=100, deadline=None, derandomize=True)
@given(LAYOUTS, STORES, st.lists(st.tuples(KEYS, st.binary(max_size=3) | st.none()), max_size=30))
def test_incremental_tree_equals_rebuilt_tree(
    layout: MerkleLayout, initial: dict[str, bytes], ops: list[tuple[str, bytes | None]]
) -> None:
    tree = MerkleTree.from_items(initial.items(), layout)
    tree.root()  # force caching, so later writes exercise the dirty marking
    final = dict(initial)
    for key, digest in ops:
        if digest is None:
            tree.delete(key)
            final.pop(key, None)
        else:
            tree.set(key, digest)
            final[key] = digest
        tree.node_hash(1, 0)
    rebuilt = MerkleTree.from_items(sorted(final.items()), layout)
    assert tree.root() == rebuilt.root()
    assert len(tree) == len(final)
    assert dict(tree.items()) == final


def test_equal_trees_need_one_round_trip() -> None:
    data = {f"k{i}": b"v" for i in range(100)}
    nbytes, n, _ = run_session(store(MerkleLayout(), data), store(MerkleLayout(), data))
    assert n == 2 and nbytes < 60


def test_single_difference_descends_one_path() -> None:
    layout = MerkleLayout(16, 3)
    data = {f"k{i}": b"v" for i in range(5000)}
    a, b = store(layout, data), store(layout, data)
    b.put("k42", b"w")
    _, n, log = run_session(a, b)
    nodes = [m for m in log if isinstance(m, SyncNodes)]
    assert [len(m.parents) for m in nodes] == [1, 1, 1]
    assert a.data == b.data
    assert n == 7  # Begin, Nodes x3, Leaves, Values(want), Values(final)


def test_layout_mismatch_is_a_sync_error() -> None:
    a = SyncPeer({"s": DictStore(MerkleTree(MerkleLayout(16, 2)))})
    with pytest.raises(SyncError):
        a.handle(SyncBegin("s", 1, 16, 3, b"\x00" * 16))
    with pytest.raises(SyncError):
        a.handle(SyncBegin("other", 1, 16, 2, b"\x00" * 16))
    with pytest.raises(SyncError):
        a.handle(SyncNodes("s", 1, 1, (3,), b"\x00" * 256))
    with pytest.raises(SyncError):
        a.handle(SyncNodes("s", 1, 1, (0,), b"\x00" * 10))


def test_layout_bounds() -> None:
    with pytest.raises(ConfigError):
        MerkleLayout(1, 2)
    with pytest.raises(ConfigError):
        MerkleLayout(16, 7)
    assert MerkleLayout.for_size(10_000).depth == 3
    assert MerkleLayout.for_size(1_000_000).depth == 4


def test_buckets_line_up_across_trees() -> None:
    layout = MerkleLayout(16, 2)
    assert {layout.bucket(f"k{i}") for i in range(50)} == {
        MerkleLayout(16, 2).bucket(f"k{i}") for i in range(50)
    }
    t = MerkleTree(layout)
    empty_root = t.root()
    t.set("x", b"1")
    assert t.root() != empty_root
    t.delete("x")
    assert t.root() == empty_root


def test_ten_diffs_in_a_hundred_thousand_keys_stay_small() -> None:
    layout = MerkleLayout.for_size(100_000)
    base = MerkleTree.from_items((f"key/{i}", i.to_bytes(16, "big")) for i in range(100_000))
    base = MerkleTree.from_items(base.items(), layout)
    left, right = DictStore(base.copy()), DictStore(base.copy())
    for i in range(0, 100_000, 10_000):
        left.put(f"key/{i}", b"changed")
    nbytes, n, _ = run_session(left, right)
    assert left.tree.root() == right.tree.root()
    assert nbytes < 16 * 1024
    assert n <= 8
