"""Node-to-node traffic: authentication, the Peer servicer, outgoing Raft links.

Authentication happens in a server interceptor, before the request is even
parsed: every ``/tadpole.v1.Peer/*`` call must carry
``authorization: Bearer <token>`` where the token is derived from the shared
cluster secret (``NodeConfig.peer_token``). A call without it is answered
``UNAUTHENTICATED`` by a handler that never deserializes the request body, so
an unauthenticated sender can't get a single pickle byte decoded.

Outgoing Raft traffic uses one :class:`RaftLink` per peer: a task that sends
the peer's held frames in order, one call in flight at a time. Frames queued
while a call is in flight go out together in the next call, so the batch
size grows with load (and with the peer's latency) by itself.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Awaitable, Callable

import grpc

from consensus.raft.backend import RaftBackend
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.gossip import AUTH_HEADER, GossipDriver, GossipServicerMixin, auth_metadata
from node.replication.driver import Replication

log = logging.getLogger(__name__)

PEER_SERVICE_PREFIX = "/tadpole.v1.Peer/"


class PeerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuse Peer-service calls that lack the cluster credential."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode() if token else b""
        self.rejected = 0

        async def deny(_request: bytes, context: grpc.aio.ServicerContext) -> None:
            self.rejected += 1
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "peer call without a valid cluster credential",
            )

        # No request_deserializer: the body stays opaque bytes, never parsed.
        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(PEER_SERVICE_PREFIX):
            presented = b""
            for key, value in details.invocation_metadata or ():
                if key == AUTH_HEADER:
                    presented = value.encode() if isinstance(value, str) else value
            if not self._expected or not hmac.compare_digest(presented, self._expected):
                log.warning("refused unauthenticated peer call %s", details.method)
                return self._deny
        return await continuation(details)


class PeerServicer(GossipServicerMixin, pb_grpc.PeerServicer):  # type: ignore[misc]
    """Receives Raft batches and gossip messages (authenticated by the interceptor)."""

    def __init__(
        self,
        backend: RaftBackend | None,
        peer_ids: set[str],
        gossip: GossipDriver | None = None,
        replication: Replication | None = None,
    ) -> None:
        self._backend = backend
        self._peer_ids = peer_ids
        self.gossip = gossip
        self._replication = replication

    async def Replica(
        self, request: pb.PeerMessage, context: grpc.aio.ServicerContext
    ) -> pb.PeerMessage:
        if self._replication is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "tiers are not served here")
        assert self._replication is not None
        payload = await self._replication.on_replica(request.payload)
        return pb.PeerMessage(from_id=self._replication.node_id, payload=payload)

    async def Raft(self, request: pb.RaftBatch, context: grpc.aio.ServicerContext) -> pb.RaftAck:
        if self._backend is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this node's system tier is not on Raft (etcd backend)",
            )
        assert self._backend is not None
        if request.from_id not in self._peer_ids:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{request.from_id!r} is not a configured peer"
            )
        self._backend.deliver(request.from_id, list(request.frames))
        return pb.RaftAck()


class RaftLink:
    """Ordered delivery of one peer's Raft frames over gRPC, on its own thread.

    The link deliberately does not use the node's event loop: under heavy
    client load that loop runs hundreds of request handlers, and a heartbeat
    queued behind them can miss the followers' election timeout (150 ms),
    deposing a healthy leader. A dedicated thread with a blocking channel
    sends as soon as the tick thread hands frames over (``submit`` is
    thread-safe and never blocks); gRPC releases the GIL while it waits on
    the network.

    One call is in flight at a time, so frames arrive in order; frames queued
    meanwhile go out together in the next call (batches grow with load).
    While the peer is unreachable, frames are dropped: Raft retransmits from
    its own state once the peer answers, and stale messages would only be
    rejected.
    """

    MAX_QUEUED_FRAMES = 10_000

    def __init__(
        self,
        self_id: str,
        peer_id: str,
        address: str,
        token: str,
        backend: RaftBackend,
        *,
        call_timeout_s: float = 1.0,
        keepalive_s: float = 0.25,
    ) -> None:
        self.peer_id = peer_id
        self._self_id = self_id
        self._address = address
        self._metadata = auth_metadata(token)
        self._backend = backend
        self._call_timeout_s = call_timeout_s
        self._keepalive_s = keepalive_s
        self._frames: list[bytes] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._up = False
        self._thread: threading.Thread | None = None

    def submit(self, frames: list[bytes]) -> None:
        with self._lock:
            if len(self._frames) + len(frames) > self.MAX_QUEUED_FRAMES:
                log.warning(
                    "raft link to %s: queue full, dropping %d frames", self.peer_id, len(frames)
                )
                return
            self._frames.extend(frames)
        self._ready.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"raft->{self.peer_id}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stopping.set()
        self._ready.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._call_timeout_s + 1.0)

    def _take(self) -> list[bytes]:
        with self._lock:
            frames, self._frames = self._frames, []
        return frames

    def _run(self) -> None:
        channel = grpc.insecure_channel(
            self._address,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
                ("grpc.max_send_message_length", 64 << 20),
                # Notice a dead connection (e.g. after a partition) in about a
                # second instead of waiting on TCP's retransmission schedule.
                ("grpc.keepalive_time_ms", 1000),
                ("grpc.keepalive_timeout_ms", 1000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        stub = pb_grpc.PeerStub(channel)
        backoff = 0.05
        try:
            while not self._stopping.is_set():
                self._ready.wait(self._keepalive_s)
                self._ready.clear()
                if self._stopping.is_set():
                    return
                frames = self._take()
                try:
                    stub.Raft(
                        pb.RaftBatch(from_id=self._self_id, frames=frames),
                        metadata=self._metadata,
                        timeout=self._call_timeout_s,
                    )
                except grpc.RpcError as exc:
                    if self._up:
                        log.info("raft link to %s down: %s", self.peer_id, exc.code().name)
                    self._up = False
                    self._backend.peer_down(self.peer_id)
                    self._take()
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 0.5)
                    continue
                backoff = 0.05
                if not self._up:
                    log.info("raft link to %s up", self.peer_id)
                    self._up = True
                self._backend.peer_up(self.peer_id)
        finally:
            channel.close()
