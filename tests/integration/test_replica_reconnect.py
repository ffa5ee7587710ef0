"""A peer back from an outage gets replica calls again within about a second.

Real gRPC on loopback: the replication transport (node/replication/grpc_transport.py)
calls a peer, the peer goes away for 10 s while calls keep failing, and comes back on
the same address. gRPC's default reconnect back-off had grown to several seconds by
then (it reaches 2 minutes), and every call made meanwhile failed at once: a node back
from a restart got no replica writes, hints or anti-entropy for that long.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from node.pb import tadpole_pb2 as pb
from node.replication import codec, grpc_transport
from node.replication.errors import PeerUnreachable
from node.replication.grpc_transport import GrpcTransport
from node.replication.messages import Done, Merge

MERGE = Merge("population", "job_event_log/j-1", b"x")


async def _peer(port: int) -> grpc.aio.Server:
    """A server whose Replica method answers Done, on ``port`` (0: any)."""

    async def replica(request: pb.PeerMessage, context: grpc.aio.ServicerContext) -> pb.PeerMessage:
        return pb.PeerMessage(from_id="n2", payload=codec.encode(Done()))

    handler = grpc.method_handlers_generic_handler(
        "tadpole.v1.Peer",
        {
            "Replica": grpc.unary_unary_rpc_method_handler(
                replica,
                request_deserializer=pb.PeerMessage.FromString,
                response_serializer=pb.PeerMessage.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    server.port = bound  # type: ignore[attr-defined]
    return server


async def _call(transport: GrpcTransport, address: str) -> bool:
    try:
        return isinstance(await transport.call("n2", address, MERGE), Done)
    except PeerUnreachable:
        return False


@pytest.mark.timeout(60)
async def test_a_peer_back_from_an_outage_is_called_again_within_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The channel options alone: no reopening of a channel not ready for a while,
    # whose new channel would start a new back-off.
    monkeypatch.setattr(grpc_transport, "REOPEN_AFTER_S", 3600.0)
    server = await _peer(0)
    address = f"127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    transport = GrpcTransport("n1", "t", timeout_s=0.5)
    try:
        assert await _call(transport, address)
        await server.stop(None)
        down_until = time.monotonic() + 10.0
        while time.monotonic() < down_until:  # the node keeps trying, as its rounds do
            assert not await _call(transport, address)
            await asyncio.sleep(0.2)
        assert transport.reopened == 0
        server = await _peer(int(address.rsplit(":", 1)[1]))
        back = time.monotonic()
        while not await _call(transport, address):
            assert time.monotonic() - back < 2.0, "calls still fail 2 s after the peer is back"
            await asyncio.sleep(0.1)
    finally:
        await transport.close()
        await server.stop(None)
