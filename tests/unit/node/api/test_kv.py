"""The KV servicer over the in-memory backend, served by a real gRPC server on loopback:
the request contract (what is refused, with which status and outcome) without a cluster."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from consensus.memory import MemorySystem
from node.api.guard import DecodeGuard
from node.api.kv import KVServicer
from node.api.status import OUTCOME_KEY
from node.config import NodeConfig
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

S = grpc.StatusCode


class Node:
    def __init__(self, channel: grpc.aio.Channel, system: MemorySystem) -> None:
        self.channel = channel
        self.kv = pb_grpc.KVStub(channel)
        self.system = system

    async def put(self, key: str, value: bytes = b"v") -> None:
        await self.kv.Put(pb.PutRequest(key=key, value=value))

    async def keys(self) -> list[str]:
        resp = await self.kv.Range(pb.RangeRequest(prefix=""))
        return [kv.key for kv in resp.kvs]


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    system = MemorySystem()
    server = grpc.aio.server(interceptors=[DecodeGuard()])
    pb_grpc.add_KVServicer_to_server(KVServicer(NodeConfig(), system), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Node(channel, system)
    await server.stop(None)


def outcome(exc: grpc.aio.AioRpcError) -> str:
    return dict(exc.trailing_metadata() or ()).get(OUTCOME_KEY, "")


async def test_an_empty_prefix_deletes_nothing(node: Node) -> None:
    """Issue 17, defect 2: Delete(key="", prefix=True) deleted every key."""
    for key in ("a", "b/c", "z"):
        await node.put(key)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.kv.Delete(pb.DeleteRequest(key="", prefix=True))
    assert info.value.code() is S.INVALID_ARGUMENT
    assert "prefix is empty" in (info.value.details() or "")
    assert outcome(info.value) == "not-applied"
    assert await node.keys() == ["a", "b/c", "z"]


async def test_an_empty_prefix_in_a_transaction_deletes_nothing(node: Node) -> None:
    await node.put("a")
    op = pb.RequestOp(delete=pb.DeleteRequest(key="", prefix=True))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.kv.Txn(pb.TxnRequest(success=[op]))
    assert info.value.code() is S.INVALID_ARGUMENT
    assert await node.keys() == ["a"]


async def test_deleting_everything_takes_the_explicit_field(node: Node) -> None:
    for key in ("a", "b"):
        await node.put(key)
    for bad in (
        pb.DeleteRequest(key="a", all_keys=True),
        pb.DeleteRequest(prefix=True, all_keys=True),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await node.kv.Delete(bad)
        assert info.value.code() is S.INVALID_ARGUMENT
    assert await node.keys() == ["a", "b"]
    resp = await node.kv.Delete(pb.DeleteRequest(all_keys=True))
    assert resp.deleted == 2
    assert await node.keys() == []


async def test_a_prefix_delete_still_works(node: Node) -> None:
    for key in ("job/1", "job/2", "jobs"):
        await node.put(key)
    resp = await node.kv.Delete(pb.DeleteRequest(key="job/", prefix=True))
    assert resp.deleted == 2
    assert await node.keys() == ["jobs"]


async def _raw_put(node: Node, body: bytes) -> grpc.aio.AioRpcError:
    call = node.channel.unary_unary(
        "/tadpole.v1.KV/Put",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(body)
    return info.value


@pytest.mark.parametrize(
    "body",
    [
        bytes(range(256)) * 2,  # random bytes
        b"\x0a\x02\xff\xfe",  # key = b"\xff\xfe": a string field that is not UTF-8
        b"\x0a\x7f",  # a field longer than the body
    ],
)
async def test_an_undecodable_body_is_invalid_argument_in_one_log_line(
    node: Node, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17, defect 4: random bytes gave UNKNOWN "Unexpected <class 'DecodeError'>" and
    an ERROR traceback; a non-UTF-8 key gave UNKNOWN."""
    with caplog.at_level(logging.DEBUG):
        err = await _raw_put(node, body)
    assert err.code() is S.INVALID_ARGUMENT
    assert (err.details() or "").startswith(
        "request body is not a valid tadpole.v1.PutRequest message"
    )
    assert outcome(err) == "not-applied"
    ours = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(ours) == 1 and ours[0].exc_info is None
    assert await node.keys() == []


async def test_an_unknown_consistency_is_invalid_argument(node: Node) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.kv.Get(pb.GetRequest(key="a", consistency=42))  # type: ignore[arg-type]
    assert info.value.code() is S.INVALID_ARGUMENT


async def test_watch_still_streams_through_the_guard(node: Node) -> None:
    await node.put("w", b"1")
    stream = node.kv.Watch(pb.WatchRequest(key="w", start_revision=1))
    first = await stream.read()
    assert [e.kv.value for e in first.events] == [b"1"]
    stream.cancel()


async def test_the_guard_wraps_a_method_once_and_keeps_guarding() -> None:
    """gRPC asks the interceptor for a handler on every call; the wrapped handler is
    built once per method and reused, and a bad body after a good one is still caught."""
    guard = DecodeGuard()
    server = grpc.aio.server(interceptors=[guard])
    pb_grpc.add_KVServicer_to_server(KVServicer(NodeConfig(), MemorySystem()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            node = Node(channel, MemorySystem())
            wrapped = set()
            for i in range(3):
                await node.put(f"k{i}")
                wrapped.add(id(guard._wrapped["/tadpole.v1.KV/Put"][1]))
            assert len(wrapped) == 1
            assert (await _raw_put(node, b"\xff")).code() is S.INVALID_ARGUMENT
    finally:
        await server.stop(None)
