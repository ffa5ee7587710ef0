"""Key-defined chunking: a change touches only the chunk that holds its key."""

from __future__ import annotations

import random

import msgpack
import pytest

from node.backup import chunks


def records(n: int, seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [(f"key/{i:06d}", rng.randbytes(64)) for i in range(n)]


def ids(recs: list[tuple[str, bytes]]) -> list[str]:
    return [chunks.chunk_id(chunks.encode(c)) for c in chunks.cut(recs)]


def test_records_round_trip_through_chunks() -> None:
    recs = records(2000)
    cut = list(chunks.cut(recs))
    assert [r for c in cut for r in chunks.decode(chunks.encode(c))] == recs
    # ~16 records a chunk on average (one key in 2**4 ends one)
    assert 2000 / 32 < len(cut) < 2000 / 8


def test_a_changed_value_changes_exactly_one_chunk() -> None:
    recs = records(2000)
    before = ids(recs)
    changed = list(recs)
    changed[1234] = (changed[1234][0], b"new value")
    after = ids(changed)
    assert len(after) == len(before)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 1


def test_an_inserted_or_deleted_key_leaves_the_other_chunks_alone() -> None:
    recs = records(2000)
    before = set(ids(recs))
    inserted = sorted([*recs, ("key/000500.5", b"x")])
    deleted = recs[:700] + recs[701:]
    for variant in (inserted, deleted):
        after = set(ids(variant))
        # the chunk holding the key is replaced (by two if the new key ends a chunk)
        assert len(before - after) == 1
        assert 1 <= len(after - before) <= 2


def test_a_chunk_is_cut_at_the_size_cap_too() -> None:
    big = [(f"k{i}", b"v" * 1000) for i in range(100)]
    cut = list(chunks.cut(big, bits=30, max_bytes=10_000))  # no key boundary in practice
    assert all(sum(len(k) + len(v) for k, v in c) <= 10_000 + 1004 for c in cut)
    assert len(cut) >= 9


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb([2, []]), "format 2"),
        (msgpack.packb([1, [["k"]]]), "malformed"),
        (msgpack.packb([1, [[1, b"v"]]]), "malformed"),
        (msgpack.packb([1, [["k", "not bytes"]]]), "malformed"),
        (msgpack.packb("x"), "undecodable"),
    ],
)
def test_a_bad_chunk_is_refused_with_its_problem(data: bytes, problem: str) -> None:
    with pytest.raises(chunks.ChunkError, match=problem):
        chunks.decode(data)
