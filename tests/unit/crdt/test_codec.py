"""The codec: canonical bytes, and a decoder that never returns a wrong value."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crdt
from crdt import (
    CODEC_VERSION,
    CapabilityVector,
    CodecError,
    EventLog,
    GCounter,
    GSet,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Timestamp,
    UnsupportedVersionError,
    VectorClock,
)

from .kinds import KINDS, Kind, histories

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def frame(obj: Any, version: int = CODEC_VERSION, raw: bytes | None = None) -> bytes:
    """A frame with a *valid* header and checksum around an arbitrary body."""
    body = raw if raw is not None else msgpack.packb(obj, use_bin_type=True)
    head = b"TS" + bytes([version])
    return head + body + struct.pack(">I", zlib.crc32(head + body))


def sample_states() -> list[crdt.CRDTBase]:
    s = ORSet()
    s = s.apply_delta(s.add("a", "x"))
    m = ORMap()
    m = m.apply_delta(m.update("a", "k", lambda c: c.increment("a"), GCounter()))
    log = EventLog().compact(Timestamp(1))
    log = log.apply_delta(log.append(Timestamp(2), "n", "e", [1, {"b": 2}]))
    cap = CapabilityVector(dims=2)
    return [
        GCounter({"a": 1}),
        PNCounter({"a": 2}, {"b": 1}),
        GSet(frozenset({"x", 2})),
        s,
        LWWRegister().assign({"k": 1.5}, Timestamp(3, 1), "n"),
        MVRegister().assign("n", b"bytes"),
        m,
        LWWMap().put("k", "v", Timestamp(1), "n").merge(LWWMap().remove("j", Timestamp(1), "n")),
        log,
        cap.apply_delta(cap.add("n", 1, -0.25)),
        VectorClock({"a": 3}),
    ]


@pytest.mark.parametrize("state", sample_states(), ids=lambda s: type(s).__name__)
def test_every_sample_round_trips(state: crdt.CRDTBase) -> None:
    blob = state.to_bytes()
    assert blob[:3] == b"TS\x01"
    assert type(state).from_bytes(blob) == state
    assert crdt.decode(bytearray(blob)) == state
    assert crdt.decode(memoryview(blob)) == state


def test_truncated_or_flipped_encodings_are_refused() -> None:
    for state in sample_states():
        blob = state.to_bytes()
        for cut in range(len(blob)):
            with pytest.raises(CodecError):
                crdt.decode(blob[:cut])
        for i in range(len(blob)):
            for bit in (0x01, 0x80):
                bad = bytearray(blob)
                bad[i] ^= bit
                with pytest.raises(CodecError):
                    crdt.decode(bytes(bad))


def test_newer_version_is_refused_with_a_clear_error() -> None:
    blob = GCounter({"a": 1}).to_bytes()
    newer = blob[:2] + bytes([CODEC_VERSION + 1]) + blob[3:]
    with pytest.raises(UnsupportedVersionError) as info:
        crdt.decode(newer)
    assert info.value.version == CODEC_VERSION + 1
    assert info.value.supported == CODEC_VERSION
    assert f"version {CODEC_VERSION + 1}" in str(info.value)
    with pytest.raises(CodecError, match="invalid codec version 0"):
        crdt.decode(frame([2, []], version=0))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"XX\x01\x92\x02\x90\x00\x00\x00\x00", "bad magic"),
        (b"TS\x01\x92\x02\x90\x00\x00\x00\x00", "checksum"),
        ("not bytes", "expected bytes"),
    ],
)
def test_garbage_is_refused_with_a_clear_error(data: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        crdt.decode(data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "pair"),
        ([2], "pair"),
        (["2", []], "tag must be an integer"),
        ([True, []], "tag must be an integer"),
        ([999, []], "unknown type tag"),
        ([2, [["a", 0]]], ">= 1"),
        ([2, [["b", 1], ["a", 1]]], "canonical"),
        ([2, [["a", 1], ["a", 2]]], "canonical"),
        ([2, [[1, 1]]], "node id must be a string"),
        ([2, [["a", True]]], "integer"),
        ([2, {"a": 1}], "must be an array"),
        ([4, [True]], "not bool"),
        ([4, ["b", "a"]], "canonical"),
        ([5, [[[], []], [["x", [["a", 1]]]]]], "outside its causal context"),
        ([5, [[[["a", 1]], []], [["x", []]]]], "without dots"),
        ([5, [[[["a", 2]], []], [["x", [["a", 1]]], ["y", [["a", 1]]]]]], "used twice"),
        ([5, [[[], [["a", 1]]], []]], "not compacted"),
        ([5, [[[["a", 1]], [["a", 1]]], []]], "not compacted"),
        ([6, [[1, 0], "", b"\xc0"]], "without a node id"),
        ([6, [[1, 0], "n", b"\xc1"]], "not valid msgpack"),
        ([6, [[1, 0], "n", b"\x82\xa1b\x01\xa1a\x02"]], "canonical form"),
        ([6, [[1, 0], "n", "str-not-bin"]], "msgpack bin"),
        ([6, [[-1, 0], "n", b"\xc0"]], ">= 0"),
        ([7, [[[], []], [[["a", 1], b"\xc0"]]]], "outside its causal context"),
        ([8, [[[], []], [["k", [[["a", 1], [2, []]]]]]]], "outside its causal context"),
        ([8, [[[["a", 1]], []], [["k", []]]]], "without contributions"),
        ([8, [[[["a", 1]], []], [["k", [[["a", 1], [2]]]]]]], "pair"),
        ([9, [["k", [1, 0], "", None]]], "without a node id"),
        ([10, [[5, 0], [[[1, 0], "n", "e", b"\xc0"]]]], "below the compaction watermark"),
        ([10, [[], [[[1, 0], "n", "e", b"\xc0"], [[2, 0], "n", "e", b"\xc0"]]]], "twice"),
        ([10, [[], [[[1, 0], "", "e", b"\xc0"]]]], "without node id"),
        ([11, [2, [["n", 1, [0]]]]], "must have 2 items"),
        ([11, [2, [["n", 1, [0, 2**62]]]]], "out of range"),
        ([11, [2, [["", 1, [0, 1]]]]], "without a node id"),
        ([11, [2, [["n", 0, [0, 1]]]]], ">= 1"),
        ([11, [0, []]], ">= 1"),
    ],
)
def test_structurally_invalid_bodies_are_refused(body: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        crdt.decode(frame(body))


def test_invalid_msgpack_body_is_refused() -> None:
    with pytest.raises(CodecError, match="not valid msgpack"):
        crdt.decode(frame(None, raw=b"\xc1\xc1"))
    with pytest.raises(CodecError, match="not valid msgpack"):
        crdt.decode(frame(None, raw=b"\x92\x02\x90\x01"))  # trailing data


def test_from_bytes_checks_the_type() -> None:
    with pytest.raises(CodecError, match="expected ORSet bytes, found a GCounter"):
        ORSet.from_bytes(GCounter({"a": 1}).to_bytes())


# Arbitrary msgpack trees, for fuzzing bodies that pass the checksum.
TREES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 2**63),
        st.floats(allow_nan=False),
        st.sampled_from(["", "a", "n", "x"]),
        st.binary(max_size=4),
    ),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.integers(1, 12), TREES)
def test_fuzzed_bodies_never_decode_to_a_wrong_value(tag: int, body: Any) -> None:
    """Anything that decodes must re-encode to exactly the input (canonical, no silent fixes)."""
    data = frame([tag, body])
    try:
        state = crdt.decode(data)
    except CodecError:
        return
    assert state.to_bytes() == data


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_mutated_real_encodings_never_decode_to_a_wrong_value(
    kind: Kind, data: st.DataObject
) -> None:
    """Take a real state's body, rewrite one leaf, refresh the checksum: decode or refuse."""
    state = data.draw(histories(kind)).states[0]
    tag, body = msgpack.unpackb(state.to_bytes()[3:-4], raw=False)

    def leaves(node: Any, path: tuple[int, ...]) -> list[tuple[int, ...]]:
        if isinstance(node, list):
            out = [path]
            for i, child in enumerate(node):
                out += leaves(child, (*path, i))
            return out
        return [path]

    paths = leaves(body, ())
    path = data.draw(st.sampled_from(paths))
    replacement = data.draw(TREES)

    def put(node: Any, p: tuple[int, ...]) -> Any:
        if not p:
            return replacement
        copy = list(node)
        copy[p[0]] = put(copy[p[0]], p[1:])
        return copy

    mutated = frame([tag, put(body, path)])
    try:
        back = crdt.decode(mutated)
    except CodecError:
        return
    assert back.to_bytes() == mutated


def test_verified_bytes_skip_only_the_canonical_check() -> None:
    # A stored copy whose digest was just checked need not be re-encoded to prove it is
    # canonical (an encode per write); it still decodes to the state it spells, and
    # every other check still holds.
    unsorted = frame([2, [["b", 1], ["a", 2]]])
    with pytest.raises(CodecError, match="canonical"):
        crdt.decode(unsorted)
    state = crdt.decode(unsorted, verified=True)
    assert state == GCounter({"a": 2, "b": 1})
    assert crdt.encode(state) != unsorted  # what the next write stores is canonical
    with pytest.raises(CodecError, match=">= 1"):
        crdt.decode(frame([2, [["a", 0]]]), verified=True)
    corrupt = bytearray(crdt.encode(state))
    corrupt[-6] ^= 1
    with pytest.raises(CodecError, match="checksum"):
        crdt.decode(bytes(corrupt), verified=True)
