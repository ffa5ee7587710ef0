"""The thin I/O driver for the SWIM protocol in ``gossip/``.

``gossip.swim.Swim`` is pure: it takes ``now`` and decoded messages and
returns messages to send. This module gives it a clock (the event loop's
monotonic time), a timer task, and the Peer RPCs (Ping, PingReq, Gossip,
Sync) on the node's gRPC port, authenticated like every peer call.

* Sends are fire-and-forget tasks; a failed RPC is a lost message, which
  SWIM's timeouts already handle. A reply payload is fed back to ``handle``.
* The incarnation is persisted in the data directory and bumped at every
  start, so a restarted node always rejoins above what others remember.
* The node advertises its Raft role as the ``raft`` tag; it is refreshed when
  the role changes.
* Membership transitions are logged at INFO; user deltas (``DeltaEvent``)
  go to registered handlers (the metrics and mesh tiers use them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from typing import Any

import grpc

from consensus.durable import atomic_write
from gossip.codec import decode_swim, decode_sync, encode
from gossip.config import GossipConfig
from gossip.errors import GossipError
from gossip.messages import Gossip, MemberMeta, Ping, PingReq, PushPull, Rpc
from gossip.swim import DeltaEvent, MemberView, Outgoing, Swim
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.peer.traffic import PeerTraffic
from node.tls import Renewal, TlsFiles, aio_channel, close_later

log = logging.getLogger(__name__)

DeltaHandler = Callable[[DeltaEvent], None]


class GossipDriver:
    def __init__(
        self,
        *,
        node_id: str,
        address: str,
        seeds: list[str],
        token: str,
        data_dir: str,
        version: str,
        tiers: list[str],
        config: GossipConfig | None = None,
        role: Callable[[], str] = lambda: "",
        sync_handler: Callable[[bytes], bytes] | None = None,
        traffic: PeerTraffic | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self._tls = tls
        self._renewal = Renewal(tls)
        self.config = config or GossipConfig.lan()
        self._seeds = seeds
        self._metadata = auth_metadata(token)
        self._data_dir = data_dir
        self._version = version
        self._tiers = tiers
        self._role = role
        self._sync_handler = sync_handler
        self._swim: Swim | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._delta_handlers: list[DeltaHandler] = []
        self._advertised_role = ""
        self._traffic = traffic
        self._ids: dict[str, str] = {}  # address -> member id, for per-peer traffic
        self.sent = 0
        self.send_failures = 0

    # -- lifecycle -------------------------------------------------------------

    def _next_incarnation(self) -> int:
        path = os.path.join(self._data_dir, "gossip.incarnation")
        try:
            with open(path) as f:
                previous = int(f.read().strip() or 0)
        except (OSError, ValueError):
            previous = 0
        os.makedirs(self._data_dir, exist_ok=True)
        # Leave room above the last run: a node refutes (incarnation + 1) and
        # changes its meta (incarnation + 1) while running.
        incarnation = previous + 1000
        atomic_write(path, f"{incarnation}\n".encode())
        return incarnation

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._advertised_role = self._role()
        meta = MemberMeta.make(
            self.node_id,
            self.address,
            version=self._version,
            tiers=self._tiers,
            tags={"raft": self._advertised_role} if self._advertised_role else {},
        )
        self._swim = Swim(
            self.config,
            meta,
            rng=random.Random(),
            now=now,
            incarnation=self._next_incarnation(),
        )
        if self._traffic is not None:
            self._swim.on_round_trip = self._traffic.round_trip
        self._send_all(self._swim.join(self._seeds, now))
        self._task = self._loop.create_task(self._run(), name="gossip-timer")
        log.info(
            "node %s gossip started at incarnation %d, seeds %s",
            self.node_id,
            self._swim.incarnation,
            ",".join(self._seeds) or "none",
        )

    async def stop(self) -> None:
        swim, loop = self._swim, self._loop
        if swim is not None and loop is not None and not swim.left:
            self._send_all(swim.leave(loop.time()))
            # Give the departure a few gossip rounds to spread.
            deadline = loop.time() + 3 * self.config.gossip_interval_s
            while loop.time() < deadline:
                self._send_all(swim.tick(loop.time()))
                await asyncio.sleep(self.config.gossip_interval_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()

    # -- timer -----------------------------------------------------------------

    async def _run(self) -> None:
        swim, loop = self._swim, self._loop
        assert swim is not None and loop is not None
        while True:
            now = loop.time()
            role = self._role()
            if role != self._advertised_role:
                self._advertised_role = role
                swim.set_meta(now, tags={"raft": role})
            self._send_all(swim.tick(now))
            self._dispatch_events()
            delay = max(0.0, min(swim.next_deadline() - loop.time(), 0.5))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- sending ---------------------------------------------------------------

    def _stub(self, address: str) -> Any:
        if self._renewal.due():
            old, self._channels = self._channels, {}
            close_later(old.values(), 2.0)  # calls in flight finish on the old ones
        channel = self._channels.get(address)
        if channel is None:
            channel = aio_channel(
                address,
                self._tls,
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
            self._channels[address] = channel
        return pb_grpc.PeerStub(channel)

    def _send_all(self, outgoing: list[Outgoing]) -> None:
        assert self._loop is not None
        for out in outgoing:
            if out.reply:
                continue  # replies travel as RPC responses, not new calls
            task = self._loop.create_task(self._send(out))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _send(self, out: Outgoing) -> None:
        swim, loop = self._swim, self._loop
        assert swim is not None and loop is not None
        method = getattr(self._stub(out.to), str(out.rpc))
        request = pb.PeerMessage(
            from_id=self.node_id, from_address=self.address, payload=encode(out.msg)
        )
        self.sent += 1
        try:
            response = await method(
                request, metadata=self._metadata, timeout=max(self.config.probe_timeout_s, 0.5)
            )
        except grpc.aio.AioRpcError as exc:
            self.send_failures += 1
            self._count(self._peer_id(out.to), len(request.payload), 0)
            log.debug(
                "gossip %s to %s failed: %s %s", out.rpc, out.to, exc.code().name, exc.details()
            )
            if exc.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED,
            ):
                log.warning("gossip %s to %s refused: %s", out.rpc, out.to, exc.details())
            return
        # Counted once answered: a seed's reply names the member behind the address.
        self._count(response.from_id or self._peer_id(out.to), len(request.payload),
                    len(response.payload))  # fmt: skip
        if response.payload:
            try:
                msg = decode_swim(response.payload)
            except GossipError:
                log.warning("undecodable gossip reply from %s", out.to)
                return
            self._after_handle(swim.handle(out.to, msg, loop.time()))

    def _count(self, peer: str, sent: int, received: int) -> None:
        if self._traffic is not None:
            self._traffic.sent(peer, "gossip", sent)
            self._traffic.received(peer, "gossip", received)

    def _peer_id(self, address: str) -> str:
        """The member at ``address`` (the address itself for one not known yet)."""
        found = self._ids.get(address)
        if found is None:
            self._ids = {m.address: m.id for m in self.members()}
            found = self._ids.get(address, address)
        return found

    def _after_handle(self, outgoing: list[Outgoing]) -> Outgoing | None:
        reply = next((o for o in outgoing if o.reply), None)
        self._send_all(outgoing)
        self._dispatch_events()
        self._wake.set()
        return reply

    # -- receiving (called by the Peer servicer) --------------------------------

    def on_message(self, request: pb.PeerMessage) -> bytes:
        """Handle one Ping/PingReq/Gossip payload; return the reply payload (or b"")."""
        swim, loop = self._swim, self._loop
        if swim is None or loop is None:
            return b""
        msg = decode_swim(request.payload)
        if isinstance(msg, Ping | PingReq | Gossip | PushPull) and msg.src != request.from_id:
            # These speak for their sender: over TLS from_id is bound to the caller's
            # certificate, so the message must be from_id's own.
            raise GossipError(
                f"a {type(msg).__name__} from {msg.src!r} sent by {request.from_id!r}"
            )
        reply = self._after_handle(
            swim.handle(request.from_address or request.from_id, msg, loop.time())
        )
        payload = encode(reply.msg) if reply is not None else b""
        self._count(request.from_id, len(payload), len(request.payload))
        return payload

    def on_sync(self, request: pb.PeerMessage) -> bytes:
        if self._sync_handler is None:
            raise GossipError("no anti-entropy spaces are served by this node")
        decode_sync(request.payload)  # validate before handing over
        return self._sync_handler(request.payload)

    # -- events ------------------------------------------------------------------

    def on_delta(self, handler: DeltaHandler) -> None:
        self._delta_handlers.append(handler)

    def _dispatch_events(self) -> None:
        swim = self._swim
        assert swim is not None
        for event in swim.poll_events():
            if isinstance(event, DeltaEvent):
                for handler in self._delta_handlers:
                    handler(event)
                continue
            m = event.member
            log.info(
                "gossip: member %s is %s (%s, incarnation %d)",
                m.id,
                event.kind,
                m.address,
                m.incarnation,
            )

    # -- views -------------------------------------------------------------------

    def broadcast(self, key: str, data: bytes) -> None:
        swim, loop = self._swim, self._loop
        assert swim is not None and loop is not None
        swim.broadcast(key, data, loop.time())
        self._wake.set()

    def members(self) -> list[MemberView]:
        return self._swim.members() if self._swim is not None else []

    def counts(self) -> dict[str, int]:
        """SWIM's own counters (suspicions raised, refutations, deaths declared)."""
        if self._swim is None:
            return {}
        stats = self._swim.stats
        return {
            "suspicions_raised": stats.suspicions_raised,
            "refutations": stats.refutations,
            "deaths_declared": stats.deaths_declared,
        }

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()


class GossipServicerMixin:
    """Ping/PingReq/Gossip/Sync for the Peer service (auth is the interceptor's job;
    over TLS, ``_check_peer`` binds the caller's certificate to the sender)."""

    gossip: GossipDriver | None

    async def _check_peer(
        self, context: grpc.aio.ServicerContext, claimed: str, method: str
    ) -> None:
        """Abort unless the caller may speak for ``claimed`` (TLS: its certificate)."""

    async def _gossip_call(
        self, request: pb.PeerMessage, context: grpc.aio.ServicerContext, method: str
    ) -> pb.PeerMessage:
        if self.gossip is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gossip is not running")
        assert self.gossip is not None
        await self._check_peer(context, request.from_id, method)
        try:
            payload = self.gossip.on_message(request)
        except GossipError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"gossip message: {exc}")
        return pb.PeerMessage(from_id=self.gossip.node_id, payload=payload)

    async def Ping(
        self, request: pb.PeerMessage, context: grpc.aio.ServicerContext
    ) -> pb.PeerMessage:
        return await self._gossip_call(request, context, "Ping")

    async def PingReq(
        self, request: pb.PeerMessage, context: grpc.aio.ServicerContext
    ) -> pb.PeerMessage:
        return await self._gossip_call(request, context, "PingReq")

    async def Gossip(
        self, request: pb.PeerMessage, context: grpc.aio.ServicerContext
    ) -> pb.PeerMessage:
        return await self._gossip_call(request, context, "Gossip")

    async def Sync(
        self, request: pb.PeerMessage, context: grpc.aio.ServicerContext
    ) -> pb.PeerMessage:
        if self.gossip is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gossip is not running")
        assert self.gossip is not None
        await self._check_peer(context, request.from_id, "Sync")
        try:
            payload = self.gossip.on_sync(request)
        except GossipError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"sync message: {exc}")
        return pb.PeerMessage(from_id=self.gossip.node_id, payload=payload)


__all__ = ["GossipDriver", "GossipServicerMixin", "Rpc"]
