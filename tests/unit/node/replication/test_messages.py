"""Replica messages and their codec (node/replication/messages.py, codec.py)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.messages import SyncBegin, SyncDone, SyncValues
from node.errors import (
    AlreadyExists,
    DeadlineExpired,
    InvalidArgument,
    NodeError,
    NotFound,
    Outcome,
    ReplicationError,
    ReplicationIncomplete,
    Unavailable,
)
from node.replication import codec
from node.replication.errors import (
    CodecError,
    NoOwnerReachable,
    NotEnoughReplicas,
    PeerUnreachable,
    RemoteFailure,
)
from node.replication.messages import (
    ERROR_KINDS,
    Changes,
    ChangesReply,
    Done,
    Failure,
    Forward,
    ForwardGroup,
    ForwardGroupReply,
    ForwardMany,
    ForwardManyReply,
    ForwardReply,
    Merge,
    MergeMany,
    MergeManyDone,
    Observe,
    Read,
    ReadReply,
    ReplicaMessage,
    Scan,
    ScanReply,
    StoreHint,
    Sync,
    SyncReply,
    Until,
    reply_type,
)
from node.tiers.agent import AgentNotFound
from node.tiers.documents import DocOp
from node.tiers.mesh import MeshExists, MeshNotFound
from node.tiers.ops import Op

BEGIN = SyncBegin("population|n1|n2", 7, 16, 3, b"\x01" * 16)

EXAMPLES: list[ReplicaMessage] = [
    Merge("population", "job_event_log/j-1", b"\x00state"),
    MergeMany(()),
    MergeMany((Merge("population", "a/b", b"x"), Merge("mesh", "m-1", b""))),
    StoreHint("n2", "agent", "a-1", b"delta"),
    Read("mesh", "m-1"),
    Observe("population", "worker_journal/w-7"),
    Forward("population", "job_event_log/j-1", Op("counter_add", amount=-5)),
    Forward("population", "k/1", Op("set_add", elements=("a", "b"))),
    Forward(
        "population",
        "k/1",
        Op("map_set", value={"x": [1, 2.5, None, True, "s"]}, field="f", entry_id="e"),
    ),
    Forward("population", "k/1", Op("map_set", field="f", remove=True)),
    Forward("mesh", "m-1", DocOp("mesh_members", {"add": ["a1"], "remove": []})),
    Forward("agent", "a-1", DocOp("agent_capability_add", {"amounts": [[3, 0.5]]})),
    Forward("mesh", "m-1", DocOp("mesh_delete")),
    Scan("population", "job_event_log/", ""),
    Changes("mesh", "", 0, 100),
    Changes("population", "job_event_log/", 2**40, 1),
    Sync("population", ("n1", "n2"), BEGIN),
    Sync("agent", ("n1", "n3"), SyncValues("agent|n1|n3", 2, (("k", b"v"),), ("w",), True)),
    Done(),
    MergeManyDone(()),
    MergeManyDone((True, False, True)),
    ReadReply(None),
    ReadReply(b"state"),
    ForwardReply(b"state", ("n1", "n3 (hint for n2)"), ("n2",)),
    ForwardGroupReply(b"state", ("n1",), (), (False, True, False), ("", "", "the key holds a set")),
    ForwardGroup(
        "population",
        "k/1",
        ((Op("counter_add", amount=2), "r-1"), (Op("counter_add", amount=-1), "")),
    ),
    ForwardGroup("mesh", "m-1", ((DocOp("mesh_delete"), "r-2"),)),
    ForwardMany(()),
    Until(1_765_000_000_123_456_789, Forward("agent", "a-1", DocOp("agent_patch", {"doc": {}}))),
    Until(1, ForwardGroup("population", "k/1", ((Op("counter_add", amount=1), "r-9"),))),
    Until(2**63 - 1, ForwardMany((ForwardGroup("mesh", "m-1", ((DocOp("mesh_delete"), ""),)),))),
    ForwardMany(
        (
            ForwardGroup("population", "a", ((Op("counter_add", amount=1), "r"),)),
            ForwardGroup("population", "b", ((Op("set_add", elements=("x",)), ""),)),
        )
    ),
    ForwardManyReply(()),
    ForwardManyReply(
        (
            ForwardGroupReply(b"s", ("n1", "n2"), (), (False,), ("",)),
            Failure("NoOwnerReachable", Outcome.NOT_APPLIED, "down"),
        )
    ),
    ScanReply(("a", "b")),
    ChangesReply("f00d", (), 0, 0),
    ChangesReply("f00d", ((3, "a", b"state"), (9, "b", None)), 12, 2),
    SyncReply(None),
    SyncReply(SyncDone("population|n1|n2", 7)),
    Failure("NotEnoughReplicas", Outcome.APPLIED, "reached 1 of 2"),
    Failure("SomethingNewer", Outcome.UNKNOWN, "ü"),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: ReplicaMessage) -> None:
    data = codec.encode(msg)
    assert data[0] == codec.TAGS[type(msg)]
    assert codec.decode(data) == msg
    assert codec.decode(bytearray(data)) == msg  # type: ignore[arg-type]


def test_merges_with_a_base_travel_in_merge_manys_second_layout() -> None:
    base = bytes(range(16))
    msg = MergeMany((Merge("population", "a/b", b"x", base), Merge("mesh", "m-1", b"y")))
    data = codec.encode(msg)
    assert data[0] == 0x0D  # the first layout (0x02) has no place for a base
    assert codec.decode(data) == msg
    assert codec.decode_request(data) == msg
    plain = MergeMany((Merge("population", "a/b", b"x"),))
    assert codec.encode(plain)[0] == 0x02  # what a node without the second layout reads


def test_tags_are_distinct_one_byte_and_cover_every_message() -> None:
    tags = list(codec.TAGS.values())
    assert len(set(tags)) == len(tags) and all(0 < t < 256 for t in tags)
    assert {type(m) for m in EXAMPLES} == set(codec.TAGS)


def test_tags_are_frozen() -> None:
    # Append-only: changing a number breaks every node still running the old one.
    assert {k.__name__: v for k, v in codec.TAGS.items()} == {
        "Merge": 0x01,
        "MergeMany": 0x02,
        "StoreHint": 0x03,
        "Read": 0x04,
        "Forward": 0x05,
        "Scan": 0x06,
        "Sync": 0x07,
        "Observe": 0x08,
        "Changes": 0x09,
        "Done": 0x41,
        "MergeManyDone": 0x42,
        "ReadReply": 0x43,
        "ForwardReply": 0x44,
        "ScanReply": 0x45,
        "SyncReply": 0x46,
        "ChangesReply": 0x47,
        "ForwardGroup": 0x0A,
        "ForwardGroupReply": 0x48,
        "ForwardMany": 0x0B,
        "ForwardManyReply": 0x49,
        "Until": 0x0C,
        "Failure": 0x7F,
    }


def test_requests_and_replies_are_told_apart() -> None:
    request, reply = codec.encode(Read("mesh", "m")), codec.encode(Done())
    assert codec.decode_request(request) == Read("mesh", "m")
    assert codec.decode_reply(reply) == Done()
    with pytest.raises(CodecError, match="expected a replica reply"):
        codec.decode_reply(request)
    with pytest.raises(CodecError, match="expected a replica request"):
        codec.decode_request(reply)


def test_each_request_names_its_reply() -> None:
    assert reply_type(Merge("t", "k", b"")) is Done
    assert reply_type(StoreHint("n", "t", "k", b"")) is Done
    assert reply_type(MergeMany(())) is MergeManyDone
    assert reply_type(Read("t", "k")) is ReadReply
    assert reply_type(Forward("t", "k", Op("counter_add"))) is ForwardReply
    assert reply_type(Scan("t", "", "")) is ScanReply
    assert reply_type(Sync("t", ("a", "b"), BEGIN)) is SyncReply
    # A fenced forward is answered as the forward itself.
    assert reply_type(Until(5, Forward("t", "k", Op("counter_add")))) is ForwardReply
    assert reply_type(Until(5, ForwardMany(()))) is ForwardManyReply


def _frame(tag: int, body: object) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return bytes((tag,)) + packed


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"\x00", "unknown replica message tag 0x00"),
        (b"\x99\x90", "unknown replica message tag 0x99"),
        (b"\x01", "undecodable Merge"),  # no body
        (b"\x01\x93\xa1", "undecodable Merge"),  # truncated
        (_frame(0x01, ["t", "k", b"s"]) + b"\x00", "undecodable Merge"),  # trailing bytes
        (_frame(0x01, ["t", "k"]), "array of 3"),
        (_frame(0x01, ["t", "k", "not bytes"]), "expected bytes"),
        (_frame(0x01, {"tier": "t"}), "expected array"),
        (_frame(0x04, [1, "k"]), "expected str"),
        (_frame(0x02, [["t", "k"]]), "array of 3"),
        # A base travels only in MergeMany's second layout, and is a 16-byte digest.
        (_frame(0x02, [["t", "k", b"s", b"\x00" * 16]]), "array of 3"),
        (_frame(0x0D, [["t", "k", b"s"]]), "array of 4"),
        (_frame(0x0D, [["t", "k", b"s", b"short"]]), "16-byte digest"),
        (_frame(0x0D, [["t", "k", b"s", "text"]]), "expected bytes"),
        (_frame(0x05, ["t", "k", [9, "x"]]), "unknown op encoding"),
        (_frame(0x05, ["t", "k", [0, "counter_add", "5", [], None, "", "", False]]), "int"),
        (_frame(0x05, ["t", "k", [1, "mesh_put", ["not", "a", "map"]]]), "args"),
        (_frame(0x05, ["t", "k", [1, "mesh_put", {b"bytes-key": 1}]]), "args"),
        (_frame(0x07, ["t", "a", "b", None]), "without a step"),
        (_frame(0x07, ["t", "a", "b", b"\x00garbage"]), "anti-entropy step"),
        (_frame(0x42, [True, 1]), "expected bool"),
        (_frame(0x7F, ["NotFound", "maybe", "m"]), "unknown outcome"),
        (_frame(0x41, [1]), "array of 0"),
        # Until carries only a forwarded write, with a deadline in range.
        (_frame(0x0C, [5, 0x04, ["t", "k"]]), "not a forwarded write"),
        (_frame(0x0C, [5, 0x0C, [5, 0x05, ["t", "k", [1, "mesh_delete", {}]]]]), "not a forwarded"),
        (_frame(0x0C, [5, "5", ["t", "k", [1, "mesh_delete", {}]]]), "not a forwarded write"),
        (_frame(0x0C, [0, 0x05, ["t", "k", [1, "mesh_delete", {}]]]), "out of range"),
        (_frame(0x0C, [-1, 0x05, ["t", "k", [1, "mesh_delete", {}]]]), "out of range"),
        (_frame(0x0C, [2**64 - 1, 0x05, ["t", "k", [1, "mesh_delete", {}]]]), "out of range"),
        (_frame(0x0C, ["5", 0x05, ["t", "k", [1, "mesh_delete", {}]]]), "expected int"),
        (_frame(0x0C, [5, 0x05]), "array of 3"),
        (b"\x01" + msgpack.packb(msgpack.ExtType(5, b"x")), "extension type"),
        (b"\x04\x92\xa1t\xa2\xff\xfe", "undecodable Read"),  # invalid UTF-8
    ],
)
def test_bad_input_is_a_codec_error(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codec.decode(data)


def test_a_codec_error_is_a_replication_error() -> None:
    with pytest.raises(ReplicationError):
        codec.decode(b"\x00")


def test_non_bytes_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        codec.decode("text")  # type: ignore[arg-type]


def test_encoding_a_non_message_is_a_type_error() -> None:
    with pytest.raises((TypeError, KeyError)):
        codec.encode("nope")  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.binary(max_size=64))
def test_garbage_never_crashes(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.decode(data)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(EXAMPLES), st.data())
def test_mangled_frames_never_crash(msg: ReplicaMessage, data: st.DataObject) -> None:
    frame = bytearray(codec.encode(msg))
    i = data.draw(st.integers(0, len(frame) - 1))
    frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        decoded = codec.decode(bytes(frame[:cut]))
    except CodecError:
        return
    assert type(decoded) in codec.TAGS


# --- errors as replies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind", "outcome"),
    [
        (InvalidArgument("bad"), "InvalidArgument", Outcome.NOT_APPLIED),
        (NotFound("x"), "NotFound", Outcome.NOT_APPLIED),
        (MeshNotFound("x"), "MeshNotFound", Outcome.NOT_APPLIED),
        (AgentNotFound("x"), "AgentNotFound", Outcome.NOT_APPLIED),
        (AlreadyExists("x"), "AlreadyExists", Outcome.NOT_APPLIED),
        (MeshExists("x"), "MeshExists", Outcome.NOT_APPLIED),
        (Unavailable("x"), "Unavailable", Outcome.NOT_APPLIED),
        (NoOwnerReachable("x"), "NoOwnerReachable", Outcome.NOT_APPLIED),
        (ReplicationIncomplete("x"), "ReplicationIncomplete", Outcome.APPLIED),
        (NotEnoughReplicas("x"), "NotEnoughReplicas", Outcome.APPLIED),
        (ReplicationError("x"), "ReplicationError", Outcome.UNKNOWN),
        (DeadlineExpired("late"), "DeadlineExpired", Outcome.NOT_APPLIED),
        (PeerUnreachable("x"), "ReplicationError", Outcome.UNKNOWN),  # nearest listed
        (CodecError("x"), "ReplicationError", Outcome.UNKNOWN),
        (NodeError("x"), "NodeError", Outcome.UNKNOWN),
        (ValueError("x"), "ReplicationError", Outcome.UNKNOWN),  # outside the tree
        (KeyError("x"), "ReplicationError", Outcome.UNKNOWN),
    ],
)
def test_an_error_travels_as_its_class_and_outcome(
    exc: Exception, kind: str, outcome: Outcome
) -> None:
    failure = codec.decode(codec.encode(Failure.from_exception(exc)))
    assert isinstance(failure, Failure)
    assert (failure.kind, failure.outcome) == (kind, outcome)
    raised = failure.error()
    assert type(raised) is ERROR_KINDS[kind]
    assert raised.outcome is outcome
    if isinstance(exc, NodeError):
        assert str(raised) == str(exc)
    else:
        assert str(raised) == f"{type(exc).__name__}: {exc}"


def test_an_unknown_kind_keeps_the_peers_outcome() -> None:
    raised = Failure("RateLimited", Outcome.NOT_APPLIED, "slow down").error()
    assert isinstance(raised, RemoteFailure) and isinstance(raised, ReplicationError)
    assert (raised.kind, raised.outcome) == ("RateLimited", Outcome.NOT_APPLIED)
    # ...and is relayed as it came
    assert Failure.from_exception(raised) == Failure(
        "RateLimited", Outcome.NOT_APPLIED, "slow down"
    )


def test_every_error_kind_is_a_node_error_under_its_own_name() -> None:
    for name, klass in ERROR_KINDS.items():
        assert issubclass(klass, NodeError)
        assert klass.__name__ == name
