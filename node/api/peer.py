"""The Peer service: node-to-node traffic (Raft batches, gossip, replica messages).

Only authenticated peers reach it (:class:`node.peer.auth.PeerAuthInterceptor` runs
first). Raft frames go to the Raft backend, gossip to the gossip driver (the mixin), and
replica messages to the replication driver, each as opaque bytes it decodes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

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
        self.stream_batches = 0  # Raft batches received on RaftStreams, for /metrics

    async def _check_peer(
        self, context: grpc.aio.ServicerContext, claimed: str, method: str
    ) -> None:
        """Abort the call with PERMISSION_DENIED on :meth:`_peer_problem`."""
        problem = self._peer_problem(context, claimed, method)
        if problem:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)

    def _peer_problem(self, context: grpc.aio.ServicerContext, claimed: str, method: str) -> str:
        """Over TLS, a peer call must come from the certificate ``node/<claimed>`` of a
        configured peer: a valid certificate of one node does not let it speak for
        another. Checked before the payload is decoded. Returns why not (recorded in
        the audit log), or ``""``."""
        if not self._tls:
            return ""
        name = peer_common_name(context)
        node = (name or "").removeprefix("node/")
        if name is None or not name.startswith("node/"):
            problem = "peer calls need a node certificate (node/<id>) signed by the cluster CA"
        elif node not in self._peer_ids:
            problem = f"certificate {name!r} is not a configured peer"
        elif claimed != node:
            problem = f"certificate {name!r} may not speak for {claimed!r}"
        else:
            return ""
        if self._audit is not None:
            self._audit.record(
                name or "anonymous", context.peer(), PEER_SERVICE_PREFIX + method, "denied", problem
            )
        return problem

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
        try:
            self._admit(request, context, "Raft")
        except _Refused as refused:
            await context.abort(refused.code, refused.details)
        answer = self._hand_over(request)
        return pb.RaftAck(frames=await self._answers(request.from_id, answer))

    async def RaftStream(
        self, requests: AsyncIterator[pb.RaftBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RaftAck]:
        """:meth:`Raft` on one long-lived stream: a RaftAck per RaftBatch, in order.

        Batches are read ahead of their answers: each is handed to the Raft thread as it
        arrives, so one tick handles every batch that came meanwhile, and its answers
        ride on the newest batch's RaftAck (the older ones get theirs empty:
        ``deliver_for_reply`` keeps one answer slot per peer). The first batch's sender
        is checked like a :meth:`Raft` call's; every later one must name the same."""
        pending: asyncio.Queue[asyncio.Future[list[bytes]] | Exception | None] = asyncio.Queue()

        sender = ""

        async def read() -> None:
            nonlocal sender
            try:
                async for request in requests:
                    if not sender:
                        self._admit(request, context, "RaftStream")
                        sender = request.from_id
                    elif request.from_id != sender:
                        raise _Refused(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"a Raft stream carries one sender's batches: {sender!r}, "
                            f"then {request.from_id!r}",
                        )
                    self.stream_batches += 1
                    pending.put_nowait(self._hand_over(request))
            except Exception as exc:  # _Refused, or DecodeGuard's refusal: the stream ends
                pending.put_nowait(exc)  # with it, from the handler's own task
            finally:
                pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await pending.get()) is not None:
                if isinstance(item, _Refused):
                    await context.abort(item.code, item.details)
                    return
                if isinstance(item, Exception):
                    raise item
                yield pb.RaftAck(frames=await self._answers(sender, item))
        finally:
            reader.cancel()
            while not pending.empty():  # answers nobody reads now go out on the link
                if isinstance(left := pending.get_nowait(), asyncio.Future):
                    left.cancel()

    def _admit(self, request: pb.RaftBatch, context: grpc.aio.ServicerContext, method: str) -> None:
        """Raise :class:`_Refused` for a Raft batch this node does not take: no Raft
        here, or a sender that is not a configured peer or, over TLS, not the node its
        certificate names. Reads nothing but ``from_id``."""
        if self._backend is None:
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this node's system tier is not on Raft (etcd backend)",
            )
        problem = self._peer_problem(context, request.from_id, method)
        if problem:
            raise _Refused(grpc.StatusCode.PERMISSION_DENIED, problem)
        if request.from_id not in self._peer_ids:
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED, f"{request.from_id!r} is not a configured peer"
            )

    def _hand_over(self, request: pb.RaftBatch) -> asyncio.Future[list[bytes]]:
        """Give ``request``'s frames to the Raft thread; the future holds the answers
        for the sender (``[]`` at once when it did not ask for them)."""
        assert self._backend is not None
        frames = list(request.frames)
        if self._traffic is not None:
            self._traffic.received(request.from_id, "raft", sum(map(len, frames)))
        if not (request.want_replies and frames):
            self._backend.deliver(request.from_id, frames)
            done: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done
        return self._exchange(request.from_id, frames)

    async def _answers(self, peer: str, answer: asyncio.Future[list[bytes]]) -> list[bytes]:
        """What ``answer`` brings, counted as sent; ``[]`` if the Raft thread took longer
        than ``REPLY_WAIT_S`` (the timeout cancels ``answer``, and its answers go out
        through the Raft link when they come)."""
        try:
            async with asyncio.timeout(self.REPLY_WAIT_S):
                frames = await answer
        except TimeoutError:
            return []
        if self._traffic is not None and frames:
            self._traffic.sent(peer, "raft", sum(map(len, frames)))
        return frames

    def _exchange(self, peer: str, frames: list[bytes]) -> asyncio.Future[list[bytes]]:
        """Deliver ``frames``; the future holds the answers the Raft thread has for
        ``peer`` once it handled them. Answers that come after the future was cancelled
        (its call gave up waiting) go out through the Raft link instead, like any other
        frames."""
        assert self._backend is not None
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

        self._backend.deliver_for_reply(peer, frames, from_raft_thread)
        return answer


class _Refused(Exception):
    """A Raft batch this node does not take: the status the call ends with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
