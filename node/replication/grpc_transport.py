"""The node's :class:`~node.replication.transport.PeerTransport`: the ``Peer.Replica`` RPC.

Each message is one unary call carrying ``PeerMessage(from_id, payload)``, the payload
being one :mod:`node.replication.codec` frame; the reply's payload is the reply frame.
Calls carry the cluster credential (``authorization: Bearer <token>``, checked by
``node.peer.auth.PeerAuthInterceptor`` before anything is parsed) and a deadline. One
channel per peer address, opened on first use and kept.

Any RPC failure — connection refused, deadline exceeded, UNAUTHENTICATED, a peer that
does not serve the tiers — is :class:`~node.replication.errors.PeerUnreachable`; a reply
that does not decode is :class:`~node.replication.errors.CodecError`.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.replication import codec
from node.replication.errors import PeerUnreachable
from node.replication.messages import Reply, Request

__all__ = ["GrpcTransport"]

log = logging.getLogger(__name__)


class GrpcTransport:
    def __init__(self, node_id: str, token: str, *, timeout_s: float = 2.0) -> None:
        self._node_id = node_id
        self._metadata = auth_metadata(token)
        self._timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> Any:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address)
            self._channels[address] = channel
        return pb_grpc.PeerStub(channel)

    async def call(self, peer: str, address: str, message: Request) -> Reply:
        request = pb.PeerMessage(from_id=self._node_id, payload=codec.encode(message))
        try:
            response = await self._stub(address).Replica(
                request, metadata=self._metadata, timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("replica %s to %s failed: %s", type(message).__name__, peer, exc.code().name)
            raise PeerUnreachable(
                f"{type(message).__name__} to {peer} ({address}): {exc.code().name}"
            ) from exc
        return codec.decode_reply(response.payload)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
