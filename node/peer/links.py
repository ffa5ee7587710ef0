"""Outgoing Raft traffic: one :class:`RaftLink` per peer, a thread that sends
the peer's held frames in order, one call in flight at a time. Frames queued
while a call is in flight go out together in the next call, so the batch
size grows with load (and with the peer's latency) by itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import grpc

from consensus.raft.backend import RaftBackend
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.peer.traffic import PeerTraffic
from node.tls import Renewal, TlsFiles, server_name_for, sync_channel

log = logging.getLogger(__name__)

PEER_SERVICE_PREFIX = "/tadpole.v1.Peer/"


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
    meanwhile go out together in the next call (batches grow with load). The
    peer's answers to a batch (an append-entries' acknowledgement, a vote) come
    back in the call's response, so an exchange is one call, not two.
    While the peer is unreachable, frames are dropped: Raft retransmits from
    its own state once the peer answers, and stale messages would only be
    rejected.

    A link with nothing to send makes an empty call (a keepalive) only when the
    peer has not been heard from, by a call of either direction, for
    ``keepalive_s``; while the peer is down it asks every ``DOWN_PROBE_S``, so a
    peer that comes back is used again at once. A leader's heartbeats and a
    follower's receipt of them keep both directions known to be up, so an idle
    cluster makes no keepalive calls on its leader's links at all (an empty call
    every 250 ms on each link with nothing else to carry was a quarter of an idle
    cluster's calls).

    A follower's link to its leader also watches the channel's connectivity: a
    connection that closes under it (the leader's process died: its kernel closed
    the socket) makes the link ask at once instead of at the next keepalive, so a
    crashed leader is noticed while the group rests too. gRPC polls a watched
    channel five times a second, so only that one link watches.
    """

    MAX_QUEUED_FRAMES = 10_000
    DOWN_PROBE_S = 0.25

    def __init__(
        self,
        self_id: str,
        peer_id: str,
        address: str,
        token: str,
        backend: RaftBackend,
        *,
        call_timeout_s: float = 1.0,
        keepalive_s: float = 1.0,
        traffic: PeerTraffic | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.peer_id = peer_id
        self._tls = tls
        self._self_id = self_id
        self._address = address
        self._metadata = auth_metadata(token)
        self._backend = backend
        self._call_timeout_s = call_timeout_s
        self._keepalive_s = keepalive_s
        self._traffic = traffic
        self._frames: list[bytes] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._up = False
        self._last_ok = float("-inf")  # the last call that succeeded (time.monotonic())
        self._last_try = float("-inf")
        self._connectivity: grpc.ChannelConnectivity | None = None
        self._probe = False  # the connection closed: ask the peer now
        self._watching: grpc.Channel | None = None
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

    def _until_keepalive(self) -> float:
        """Seconds until an empty call is due (0: now)."""
        now = time.monotonic()
        if self._probe:
            return 0.0
        if not self._up:
            return max(0.0, self.DOWN_PROBE_S - (now - self._last_try))
        heard = max(self._last_ok, self._backend.last_heard(self.peer_id))
        return max(0.0, self._keepalive_s - (now - heard))

    def _connectivity_changed(self, state: grpc.ChannelConnectivity) -> None:
        """gRPC's polling thread: a READY connection went away."""
        was, self._connectivity = self._connectivity, state
        if was is grpc.ChannelConnectivity.READY and state is not was:
            self._probe = True
            self._ready.set()

    def _watch(self, channel: grpc.Channel) -> None:
        """Watch the channel while this node follows the peer, and only then."""
        want = self._backend.status().leader_id == self.peer_id
        if want and self._watching is None:
            self._connectivity = None
            channel.subscribe(self._connectivity_changed, try_to_connect=False)
            self._watching = channel
        elif not want and self._watching is not None:
            self._watching.unsubscribe(self._connectivity_changed)
            self._watching = None

    def _close(self, channel: grpc.Channel) -> None:
        if self._watching is not None:
            self._watching.unsubscribe(self._connectivity_changed)
            self._watching = None
        channel.close()

    def _open(self) -> grpc.Channel:
        return sync_channel(
            self._address,
            self._tls,
            server_name=server_name_for(self.peer_id),
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

    def _run(self) -> None:
        channel = self._open()
        stub = pb_grpc.PeerStub(channel)
        renewal = Renewal(self._tls)
        backoff = 0.05
        try:
            while not self._stopping.is_set():
                self._ready.wait(self._until_keepalive())
                self._ready.clear()
                if self._stopping.is_set():
                    return
                self._watch(channel)
                if renewal.due():  # a rotated certificate: present it from now on
                    self._close(channel)
                    channel = self._open()
                    stub = pb_grpc.PeerStub(channel)
                frames = self._take()
                if not frames and self._until_keepalive() > 0:
                    continue  # woken for frames another wake-up already took
                self._last_try = time.monotonic()
                self._probe = False
                if self._traffic is not None:
                    self._traffic.sent(self.peer_id, "raft", sum(map(len, frames)))
                try:
                    ack = stub.Raft(
                        pb.RaftBatch(from_id=self._self_id, frames=frames, want_replies=True),
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
                self._last_ok = time.monotonic()
                if not self._up:
                    log.info("raft link to %s up", self.peer_id)
                    self._up = True
                self._backend.peer_up(self.peer_id)
                if ack.frames:  # the peer's answers to these frames (see PeerServicer)
                    answers = list(ack.frames)
                    if self._traffic is not None:
                        self._traffic.received(self.peer_id, "raft", sum(map(len, answers)))
                    self._backend.deliver(self.peer_id, answers)
        finally:
            self._close(channel)
