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
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from consensus.raft import RaftBackend
from node.gossip_driver import AUTH_HEADER, GossipDriver, GossipServicerMixin, auth_metadata
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

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
    ) -> None:
        self._backend = backend
        self._peer_ids = peer_ids
        self.gossip = gossip

    async def Raft(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
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
    """Ordered delivery of one peer's Raft frames over gRPC.

    ``submit`` runs in the event loop (the tick thread reaches it through
    ``call_soon_threadsafe``). While the peer is unreachable, frames are
    dropped: Raft retransmits from its own state once the peer answers, and
    stale messages would only be rejected.
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
        self._ready = asyncio.Event()
        self._up = False
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None

    def submit(self, frames: list[bytes]) -> None:
        if len(self._frames) + len(frames) > self.MAX_QUEUED_FRAMES:
            log.warning(
                "raft link to %s: queue full, dropping %d frames", self.peer_id, len(frames)
            )
            return
        self._frames.extend(frames)
        self._ready.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"raft->{self.peer_id}"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()

    async def _run(self) -> None:
        self._channel = grpc.aio.insecure_channel(
            self._address,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
                ("grpc.max_send_message_length", 64 << 20),
            ],
        )
        stub = pb_grpc.PeerStub(self._channel)
        backoff = 0.05
        while True:
            if not self._frames:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), self._keepalive_s)
            self._ready.clear()
            frames, self._frames = self._frames, []
            try:
                await stub.Raft(
                    pb.RaftBatch(from_id=self._self_id, frames=frames),
                    metadata=self._metadata,
                    timeout=self._call_timeout_s,
                )
            except grpc.aio.AioRpcError as exc:
                if self._up:
                    log.info("raft link to %s down: %s", self.peer_id, exc.code().name)
                self._up = False
                self._backend.peer_down(self.peer_id)
                self._frames.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            backoff = 0.05
            if not self._up:
                log.info("raft link to %s up", self.peer_id)
                self._up = True
            self._backend.peer_up(self.peer_id)
