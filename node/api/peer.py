"""The Peer service: node-to-node traffic (Raft batches, gossip, replica messages).

Only authenticated peers reach it (:class:`node.peer.auth.PeerAuthInterceptor` runs
first). Raft frames go to the Raft backend, gossip to the gossip driver (the mixin), and
replica messages to the replication driver, each as opaque bytes it decodes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc

from consensus.raft.backend import RaftBackend
from node.audit import AuditLog
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import PEER_SERVICE_PREFIX
from node.peer.gossip import GossipDriver, GossipServicerMixin
from node.peer.traffic import PeerTraffic
from node.replication.driver import Replication
from node.tls import peer_common_name

__all__ = ["PeerServicer"]


class PeerServicer(GossipServicerMixin, pb_grpc.PeerServicer):  # type: ignore[misc]
    """Receives Raft batches and gossip messages (authenticated by the interceptor)."""

    # How long a Raft call waits for the answers to its frames (a tick or two).
    REPLY_WAIT_S = 0.2

    def __init__(
        self,
        backend: RaftBackend | None,
        peer_ids: set[str],
        gossip: GossipDriver | None = None,
        replication: Replication | None = None,
        *,
        send_raft: Callable[[str, list[bytes]], None],
        traffic: PeerTraffic | None = None,
        tls: bool = False,
        audit: AuditLog | None = None,
    ) -> None:
        self._audit = audit
        self._tls = tls  # calls arrive over mutual TLS: bind the certificate to the sender
        self._backend = backend
        self._send_raft = send_raft  # the Raft links, for answers that came too late
        self._peer_ids = peer_ids
        self.gossip = gossip
        self._replication = replication
        self._traffic = traffic

    async def _check_peer(
        self, context: grpc.aio.ServicerContext, claimed: str, method: str
    ) -> None:
        """Over TLS, a peer call must come from the certificate ``node/<claimed>`` of a
        configured peer: a valid certificate of one node does not let it speak for
        another. Checked before the payload is decoded."""
        if not self._tls:
            return
        name = peer_common_name(context)
        node = (name or "").removeprefix("node/")
        if name is None or not name.startswith("node/"):
            problem = "peer calls need a node certificate (node/<id>) signed by the cluster CA"
        elif node not in self._peer_ids:
            problem = f"certificate {name!r} is not a configured peer"
        elif claimed != node:
            problem = f"certificate {name!r} may not speak for {claimed!r}"
        else:
            return
        if self._audit is not None:
            self._audit.record(
                name or "anonymous", context.peer(), PEER_SERVICE_PREFIX + method, "denied", problem
            )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)

    async def Replica(
        self, request: pb.PeerMessage, context: grpc.aio.ServicerContext
    ) -> pb.PeerMessage:
        if self._replication is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "tiers are not served here")
        assert self._replication is not None
        await self._check_peer(context, request.from_id, "Replica")
        payload = await self._replication.on_replica(request.payload)
        if self._traffic is not None:
            self._traffic.received(request.from_id, "replica", len(request.payload))
            self._traffic.sent(request.from_id, "replica", len(payload))
        return pb.PeerMessage(from_id=self._replication.node_id, payload=payload)

    async def Raft(self, request: pb.RaftBatch, context: grpc.aio.ServicerContext) -> pb.RaftAck:
        if self._backend is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this node's system tier is not on Raft (etcd backend)",
            )
        assert self._backend is not None
        await self._check_peer(context, request.from_id, "Raft")
        if request.from_id not in self._peer_ids:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{request.from_id!r} is not a configured peer"
            )
        frames = list(request.frames)
        traffic = self._traffic
        if traffic is not None:
            traffic.received(request.from_id, "raft", sum(map(len, frames)))
        if not (request.want_replies and frames):
            self._backend.deliver(request.from_id, frames)
            return pb.RaftAck()
        answers = await self._exchange(request.from_id, frames)
        if traffic is not None:
            traffic.sent(request.from_id, "raft", sum(map(len, answers)))
        return pb.RaftAck(frames=answers)

    async def _exchange(self, peer: str, frames: list[bytes]) -> list[bytes]:
        """Deliver ``frames`` and wait (briefly) for the answers the Raft thread has for
        ``peer`` once it handled them; answers that come too late, after this call gave
        up, go out through the Raft link instead, like any other frames."""
        assert self._backend is not None
        backend = self._backend
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[bytes]] = loop.create_future()

        def settle(out: list[bytes]) -> None:
            if not answer.done():
                answer.set_result(out)
            elif out:
                self._send_raft(peer, out)

        def from_raft_thread(out: list[bytes]) -> None:
            # A closed loop (the node is shutting down) has nobody to answer.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, out)

        backend.deliver_for_reply(peer, frames, from_raft_thread)
        try:
            async with asyncio.timeout(self.REPLY_WAIT_S):
                return await answer
        except TimeoutError:  # the timeout cancelled ``answer``: settle sends them on
            return []
