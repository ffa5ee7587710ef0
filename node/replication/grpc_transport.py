"""The node's :class:`~node.replication.transport.PeerTransport`: the ``Peer.Replica`` RPC.

Each message is one unary call carrying ``PeerMessage(from_id, payload)``, the payload
being one :mod:`node.replication.codec` frame; the reply's payload is the reply frame.
Calls carry the cluster credential (``authorization: Bearer <token>``, checked by
``node.peer.auth.PeerAuthInterceptor`` before anything is parsed) and a deadline. One
channel per peer address, opened on first use and kept.

What a failure says about the message (the caller — forwarding above all — relies on
it, :func:`node.replication.coordinator.forward_verdict`):

* :class:`~node.replication.errors.NotDelivered` (nothing applied) — the call was never
  made, because the channel did not become ready within the call's timeout or is in
  ``TRANSIENT_FAILURE`` (gRPC's own fail-fast rule: no connection could be opened); or
  the peer answered ``UNAUTHENTICATED`` / ``PERMISSION_DENIED``, which only its
  credential check does, before the request is read. A refused credential is logged at
  WARNING, at most once per peer per :data:`AUTH_WARNING_INTERVAL_S` (a wrong cluster
  secret must be visible, not look like a node that is down).
* :class:`~node.replication.errors.PeerUnreachable` (outcome unknown) — any other RPC
  failure once the call was made (deadline exceeded, connection lost, a peer that does
  not serve the tiers); logged at DEBUG.
* :class:`~node.replication.errors.CodecError` — a reply that does not decode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.peer.traffic import PeerTraffic
from node.replication import codec
from node.replication.errors import NotDelivered, PeerUnreachable
from node.replication.messages import ForwardMany, MergeMany, Reply, Request, Until
from node.replication.transport import cancelled_from_below
from node.tls import Renewal, close_later

__all__ = ["AUTH_WARNING_INTERVAL_S", "CHANNEL_OPTIONS", "REOPEN_AFTER_S", "GrpcTransport"]

log = logging.getLogger(__name__)

# At most one WARNING per peer in this many seconds for refused credentials: often
# enough to be seen in any log window, rarely enough not to flood it (every replica
# call to that peer fails the same way, several per second).
AUTH_WARNING_INTERVAL_S = 60.0

# Answered only by the peer's credential check, before the request is read.
_REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_READY = grpc.ChannelConnectivity.READY
_FAILED = frozenset({grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN})


# Options of a channel to a peer. gRPC's default reconnect back-off grows to 2 minutes,
# during which every call fails at once (``_ready``): a peer back from a restart would
# get no replica writes, hints or anti-entropy for that long. Keepalive pings notice a
# connection that died without a reset (a partition) in seconds, where TCP's
# retransmissions take minutes; the server allows them (node/server.py).
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Its own subchannel, not one shared from gRPC's global pool: a channel reopened
    # (below) starts a connection of its own.
    ("grpc.use_local_subchannel_pool", 1),
)

# A channel that has not been ready for this long while calls keep coming is closed and
# a new one opened. With the back-off above it reconnects within a second of the peer
# being back; one still not ready seconds later is not trusted to ever be (gRPC has
# had channels left IDLE after a lost connection, which asking for the state does not
# wake), and a call the transport does not send never wakes it either.
REOPEN_AFTER_S = 5.0
# How long calls still in flight on a replaced channel may go on before it is closed
# under them (longer than any call's own timeout).
CLOSE_GRACE_S = 60.0

# A batch message gets the call timeout once per this many updates it carries: a
# ForwardMany of 1,024 updates under load takes longer than one update, and timing it out
# would leave every update in it with an unknown outcome.
ITEMS_PER_TIMEOUT = 256


def _items(message: Request) -> int:
    if isinstance(message, Until):  # a fenced forward: sized (and named) by what it carries
        return _items(message.request)
    if isinstance(message, ForwardMany):
        return sum(len(group.items) for group in message.groups)
    if isinstance(message, MergeMany):
        return len(message.items)
    return 1


class GrpcTransport:
    """``connect(address, peer id)`` opens a channel to a peer (default: an insecure
    ``grpc.aio`` channel; tests pass a fake); ``monotonic`` paces the credential
    warnings."""

    def __init__(
        self,
        node_id: str,
        token: str,
        *,
        timeout_s: float = 2.0,
        connect: Callable[[str, str], grpc.aio.Channel] = lambda address, _peer: (
            grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        ),
        monotonic: Callable[[], float] = time.monotonic,
        traffic: PeerTraffic | None = None,
        renewal: Renewal | None = None,
    ) -> None:
        self._node_id = node_id
        # When the node's TLS files change, channels are reopened to present them.
        self._renewal = renewal
        self._traffic = traffic
        self._metadata = auth_metadata(token)
        self._timeout_s = timeout_s
        self._connect = connect
        self._monotonic = monotonic
        self._channels: dict[
            tuple[str, str], tuple[grpc.aio.Channel, Any]
        ] = {}  # address -> (channel, stub)
        self._warned_at: dict[str, float] = {}  # peer -> when its refusal was last logged
        # (peer, address) -> since when its channel has not been ready for a call
        self._not_ready_since: dict[tuple[str, str], float] = {}
        self.reopened = 0  # channels closed and opened again for not becoming ready

    def _channel(self, peer: str, address: str) -> tuple[grpc.aio.Channel, Any]:
        if self._renewal is not None and self._renewal.due():
            old, self._channels = self._channels, {}
            close_later((channel for channel, _ in old.values()), self._timeout_s)
        # Keyed by both: over TLS the channel checks the server is that peer.
        entry = self._channels.get((peer, address))
        if entry is None:
            channel = self._connect(address, peer)
            entry = self._channels[(peer, address)] = (channel, pb_grpc.PeerStub(channel))
        return entry

    async def call(self, peer: str, address: str, message: Request) -> Reply:
        kind = type(message.request if isinstance(message, Until) else message).__name__
        channel, stub = self._channel(peer, address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s * max(1.0, _items(message) / ITEMS_PER_TIMEOUT)
        if not await _ready(channel, deadline):
            log.debug("replica %s to %s not sent: no connection", kind, peer)
            self._not_ready(peer, address, channel)
            raise NotDelivered(f"{kind} to {peer} ({address}): no connection; not sent")
        current = self._channels.get((peer, address))
        if current is not None and current[0] is channel:  # not one replaced meanwhile
            self._not_ready_since.pop((peer, address), None)
        request = pb.PeerMessage(from_id=self._node_id, payload=codec.encode(message))
        if self._traffic is not None:
            self._traffic.sent(peer, "replica", len(request.payload))
        try:
            response = await stub.Replica(
                request, metadata=self._metadata, timeout=max(deadline - loop.time(), 0.0)
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in _REFUSED:
                self._refused(peer, address, code)
                raise NotDelivered(f"{kind} to {peer} ({address}): {code.name}") from exc
            log.debug("replica %s to %s failed: %s", kind, peer, code.name)
            raise PeerUnreachable(f"{kind} to {peer} ({address}): {code.name}") from exc
        except asyncio.CancelledError:
            if not cancelled_from_below():
                raise  # the caller is being cancelled
            # gRPC cancels the calls still in flight on a channel it closes (a replaced
            # one) and raises CancelledError in the caller: a failed call, whose outcome
            # is unknown. Raised on, it would end the background loop that made it.
            log.debug("replica %s to %s cancelled: its channel was closed", kind, peer)
            raise PeerUnreachable(f"{kind} to {peer} ({address}): channel closed") from None
        if self._traffic is not None:
            self._traffic.received(peer, "replica", len(response.payload))
        return codec.decode_reply(response.payload)

    def _not_ready(self, peer: str, address: str, channel: grpc.aio.Channel) -> None:
        """A call found ``channel`` not ready: once it has been so for
        :data:`REOPEN_AFTER_S`, replace it (the next call opens a new one)."""
        key = (peer, address)
        entry = self._channels.get(key)
        if entry is None or entry[0] is not channel:
            return  # replaced meanwhile: says nothing of the channel now in use
        now = self._monotonic()
        since = self._not_ready_since.setdefault(key, now)
        if now - since < REOPEN_AFTER_S:
            return
        del self._not_ready_since[key]
        del self._channels[key]
        close_later((channel,), CLOSE_GRACE_S)
        self.reopened += 1
        log.info(
            "replica channel to %s (%s) not ready for %.0f s: reopening it",
            peer, address, now - since,
        )  # fmt: skip

    def _refused(self, peer: str, address: str, code: grpc.StatusCode) -> None:
        now = self._monotonic()
        last = self._warned_at.get(peer)
        if last is not None and now - last < AUTH_WARNING_INTERVAL_S:
            log.debug("replica call to %s refused: %s", peer, code.name)
            return
        self._warned_at[peer] = now
        log.warning(
            "peer %s (%s) refused replica traffic from %s: %s; do both nodes have the same "
            "cluster secret? (repeats at most every %.0f s)",
            peer,
            address,
            self._node_id,
            code.name,
            AUTH_WARNING_INTERVAL_S,
        )

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel, _ in channels.values():
            await channel.close()


async def _ready(channel: grpc.aio.Channel, deadline: float) -> bool:
    """Whether ``channel`` is connected (connecting if idle) by ``deadline`` (loop time).

    ``TRANSIENT_FAILURE`` answers False at once, as gRPC fails a call without
    ``wait_for_ready`` at once in that state; reconnecting is left to gRPC's backoff."""
    loop = asyncio.get_running_loop()
    state = channel.get_state(try_to_connect=True)
    while state is not _READY:
        remaining = deadline - loop.time()
        if state in _FAILED or remaining <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if not cancelled_from_below():
                raise
            return False  # the channel was closed under the wait
        state = channel.get_state(try_to_connect=True)
    return True
