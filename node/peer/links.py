"""Outgoing Raft traffic: one :class:`RaftLink` per peer, a thread that sends
the peer's held frames in order, one call in flight at a time. Frames queued
while a call is in flight go out together in the next call, so the batch
size grows with load (and with the peer's latency) by itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading

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
                self._ready.wait(self._keepalive_s)
                self._ready.clear()
                if self._stopping.is_set():
                    return
                if renewal.due():  # a rotated certificate: present it from now on
                    channel.close()
                    channel = self._open()
                    stub = pb_grpc.PeerStub(channel)
                frames = self._take()
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
            channel.close()
