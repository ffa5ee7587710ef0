from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import codec
from gossip.errors import CodecError
from gossip.messages import (
    Ack,
    Alive,
    Dead,
    Delta,
    Gossip,
    MemberMeta,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Rpc,
    Status,
    Suspect,
    SyncBegin,
    SyncDone,
    SyncLeaves,
    SyncNodes,
    SyncValues,
    rpc_for,
)

META = MemberMeta.make(
    "n1", "10.0.0.1:7000", version="0.1.0", tiers=["mesh", "metrics"], tags={"raft": "leader"}
)
UPDATES = (
    Alive(META, 3),
    Suspect("n2", 1, "n1"),
    Dead("n3", 0, "n3"),
    Delta("metrics/n1", 7, "n1", b"\x00\xff"),
)
SAMPLES: list[Message] = [
    Ping(1, "n1", "a:1", "n2", UPDATES),
    Ack(2, "n2", UPDATES[:1]),
    Nack(3, "n4"),
    PingReq(4, "n1", "a:1", "n2", "b:2", ()),
    Gossip("n1", UPDATES),
    PushPull("n1", "a:1", True, False, (MemberState(META, 3, Status.SUSPECT),)),
    SyncBegin("mesh", 9, 16, 4, b"\x01" * 16),
    SyncNodes("mesh", 9, 2, (0, 5), b"\x02" * 512),
    SyncLeaves("mesh", 9, (7, 8), ((("k", b"d"),), ())),
    SyncValues("mesh", 9, (("k", b"v"),), ("j",), False),
    SyncDone("mesh", 9),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    assert codec.decode(codec.encode(msg)) == msg


def test_rpc_mapping() -> None:
    assert [rpc_for(m) for m in SAMPLES] == [
        Rpc.PING, Rpc.PING, Rpc.PING, Rpc.PING_REQ, Rpc.GOSSIP, Rpc.GOSSIP,
        Rpc.SYNC, Rpc.SYNC, Rpc.SYNC, Rpc.SYNC, Rpc.SYNC,
    ]  # fmt: skip


def test_compact() -> None:
    assert len(codec.encode(Ping(1, "n1", "a:1", "n2"))) < 20
    assert len(codec.encode(SAMPLES[0])) < 150


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        msgpack.packb([99, 1, 1, "a", "b", "c", []]),
        msgpack.packb([1, 1, 1, "a"]),
        msgpack.packb([1, 1, "x", "a", "b", "c", []]),
        msgpack.packb([1, 77]),
        msgpack.packb({"a": 1}),
        codec.encode(SAMPLES[0])[:-3],
        codec.encode(SAMPLES[0]) + b"\x00",
        msgpack.packb([1, 1, -1, "a", "b", "c", []]),
        msgpack.packb([1, 5, "n1", [[9, "x"]]]),
    ],
)
def test_garbage_raises_codec_error(raw: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(raw)


def test_kind_checks() -> None:
    with pytest.raises(CodecError):
        codec.decode_sync(codec.encode(SAMPLES[0]))
    with pytest.raises(CodecError):
        codec.decode_swim(codec.encode(SAMPLES[-1]))
    assert codec.decode_sync(codec.encode(SAMPLES[-1])) == SAMPLES[-1]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.decode(raw)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_mutated_frames_never_escape(data: st.DataObject) -> None:
    raw = bytearray(codec.encode(data.draw(st.sampled_from(SAMPLES))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CodecError):
        codec.decode(bytes(raw))
