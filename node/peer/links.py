"""Outgoing Raft traffic: one :class:`RaftLink` per peer, a thread that sends
the peer's held frames in order, one batch in flight at a time: a unary
``Peer.Raft`` call each, or (``[raft] stream_links``) a message on one
long-lived ``Peer.RaftStream``. Frames queued while a batch is in flight go out
together in the next, so the batch size grows with load (and with the peer's
latency) by itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

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

    One batch is in flight at a time, so frames arrive in order; frames queued
    meanwhile go out together in the next (batches grow with load). The peer's
    answers to a batch (an append-entries' acknowledgement, a vote) come back in
    its RaftAck, so an exchange is one call (or one message each way), not two.
    On a stream, gRPC's thread for the request iterator sends (:meth:`_batches`)
    and this thread reads the acks; a batch unanswered for ``call_timeout_s``
    cancels the stream, as a call's timeout would.
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
    # Unanswered batches on a stream; frames handed over meanwhile wait and go together
    # in the next batch. One, as a unary call was: with 16, every tick's frames went
    # out alone, and at 256 clients puts made 0.33 exchanges and 0.49 fsyncs each
    # instead of 0.21 and 0.37, 11% fewer puts/s (bench/ab.py, same run).
    MAX_IN_FLIGHT = 1
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
        stream: bool = True,
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
        # Frames go on a RaftStream; False (the [raft] stream_links setting, or the
        # peer answered the stream UNIMPLEMENTED: an older build): one unary Raft call
        # per batch.
        self.streams = stream
        self._session: _Session | None = None  # the stream open now
        self._renewed = False  # _batches saw the TLS files change: reopen the channel

    def submit(self, frames: list[bytes]) -> None:
        session = self._session
        if session is not None and session.overdue(self._call_timeout_s):
            # _batches gives up an unanswered stream when it wakes; this catches one
            # whose request thread is held in a send the peer does not take.
            session.give_up()
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
        session = self._session
        if session is not None and session.call is not None:
            session.call.cancel()  # a peer that stopped answering must not hold the close
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._call_timeout_s + 1.0)

    def _has_frames(self) -> bool:
        return bool(self._frames)

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
                if self._renewed or renewal.due():  # a rotated certificate: present it now
                    self._renewed = False
                    self._close(channel)
                    channel = self._open()
                    stub = pb_grpc.PeerStub(channel)
                if not self._has_frames() and self._until_keepalive() > 0:
                    continue  # woken for frames another wake-up already took
                failed = self._stream(stub, channel, renewal) if self.streams else self._call(stub)
                if failed:
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 0.5)
                else:
                    backoff = 0.05
        finally:
            self._close(channel)

    def _stream(self, stub: pb_grpc.PeerStub, channel: grpc.Channel, renewal: Renewal) -> bool:
        """One ``RaftStream``: batches go out as the tick thread hands frames over (gRPC's
        thread for the request iterator runs :meth:`_batches`), up to
        ``MAX_IN_FLIGHT`` unanswered, while this thread reads the answers. Returns when
        the stream ends; True if it failed (the peer is down)."""
        session = _Session()
        call = stub.RaftStream(self._batches(session, channel, renewal), metadata=self._metadata)
        session.call = call
        self._session = session
        try:
            for ack in call:
                if not session.sent:
                    raise _Broken("an answer to no batch")
                full = len(session.sent) >= self.MAX_IN_FLIGHT
                session.sent.popleft()
                if full and self._has_frames():
                    self._ready.set()  # _batches waits for room to send them
                self._answered(list(ack.frames))
            return False
        except grpc.RpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.UNIMPLEMENTED:
                log.info("raft link to %s: the peer has no RaftStream; unary calls", self.peer_id)
                self.streams = False
                return False
            if session.stuck:
                self._down(f"no answer in {self._call_timeout_s:g} s")
            elif not self._stopping.is_set():
                self._down(code.name if code is not None else str(exc))
            return True
        except _Broken as exc:
            call.cancel()
            self._down(f"broken stream: {exc}")
            return True
        finally:
            self._session = None
            session.over.set()
            self._ready.set()  # let _batches see that the stream is over

    def _batches(
        self, session: _Session, channel: grpc.Channel, renewal: Renewal
    ) -> Iterator[pb.RaftBatch]:
        """The requests of one stream (gRPC's request thread): the held frames, as soon
        as there are any and room in flight; an empty batch when a keepalive is due.
        Ends with the stream, the link, a renewed certificate, or a batch unanswered
        for ``call_timeout_s`` (then it cancels the call)."""
        sent = session.sent
        while True:
            now = time.monotonic()
            wait = self._until_keepalive()
            if sent:
                wait = min(wait, sent[0] + self._call_timeout_s - now)
            if wait > 0 and (not self._has_frames() or len(sent) >= self.MAX_IN_FLIGHT):
                self._ready.wait(wait)
            self._ready.clear()
            if session.over.is_set() or self._stopping.is_set():
                return
            if renewal.due():  # end the stream: _run reopens the channel
                self._renewed = True
                return
            now = time.monotonic()
            if session.overdue(self._call_timeout_s):
                session.give_up()
                return
            if len(sent) >= self.MAX_IN_FLIGHT:
                continue
            self._watch(channel)
            frames = self._take()
            if not frames and self._until_keepalive() > 0:
                continue
            self._last_try = now
            self._probe = False
            if self._traffic is not None:
                self._traffic.sent(self.peer_id, "raft", sum(map(len, frames)))
            sent.append(now)
            yield pb.RaftBatch(from_id=self._self_id, frames=frames, want_replies=True)

    def _call(self, stub: pb_grpc.PeerStub) -> bool:
        """The held frames in one unary ``Raft`` call (a peer of an older build). True
        if it failed (the peer is down)."""
        frames = self._take()
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
            self._down(exc.code().name)
            return True
        self._answered(list(ack.frames))
        return False

    def _answered(self, answers: list[bytes]) -> None:
        """The peer answered a batch: it is up; its answers go to the Raft thread."""
        self._last_ok = time.monotonic()
        if not self._up:
            log.info("raft link to %s up", self.peer_id)
            self._up = True
        self._backend.peer_up(self.peer_id)
        if answers:  # the peer's answers to these frames (see PeerServicer)
            if self._traffic is not None:
                self._traffic.received(self.peer_id, "raft", sum(map(len, answers)))
            self._backend.deliver(self.peer_id, answers)

    def _down(self, why: str) -> None:
        if self._up:
            log.info("raft link to %s down: %s", self.peer_id, why)
        self._up = False
        self._backend.peer_down(self.peer_id)
        self._take()  # dropped: Raft sends again from its own state


class _Broken(Exception):
    """The peer broke the stream's protocol (more answers than batches)."""


class _Session:
    """One ``RaftStream`` call's shared state, between the thread reading its answers
    and gRPC's thread running :meth:`RaftLink._batches`."""

    __slots__ = ("call", "over", "sent", "stuck")

    def __init__(self) -> None:
        self.call: Any = None
        self.sent: deque[float] = deque()  # when each unanswered batch went out, oldest first
        self.over = threading.Event()
        self.stuck = False  # a batch went unanswered for call_timeout_s: the call was cancelled

    def overdue(self, timeout_s: float) -> bool:
        """Whether the oldest unanswered batch went out more than ``timeout_s`` ago."""
        sent = self.sent
        try:
            return time.monotonic() - sent[0] > timeout_s
        except IndexError:  # answered meanwhile (the reading thread pops)
            return False

    def give_up(self) -> None:
        self.stuck = True
        if self.call is not None:
            self.call.cancel()
