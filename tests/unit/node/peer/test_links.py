"""RaftLink against a real gRPC server on a local port: frames go on one RaftStream and
the peer's answers come back to the backend; a peer of an older build (no RaftStream)
gets unary Raft calls; a stream whose batch goes unanswered is given up and the peer
marked down."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from node.pb import tadpole_pb2 as pb
from node.peer.links import RaftLink


@dataclass
class Status:
    leader_id: str = ""


class Backend:
    """What a RaftLink uses of RaftBackend."""

    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self.ups = 0
        self.downs = 0
        self.changed = threading.Condition()

    def status(self) -> Status:
        return Status()

    def last_heard(self, _peer: str) -> float:
        return float("-inf")

    def deliver(self, _peer: str, frames: list[bytes]) -> None:
        with self.changed:
            self.answers.extend(frames)
            self.changed.notify_all()

    def peer_up(self, _peer: str) -> None:
        self.ups += 1

    def peer_down(self, _peer: str) -> None:
        with self.changed:
            self.downs += 1
            self.changed.notify_all()

    def wait_for(self, done: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``done()`` (looked at on every change, and every 10 ms for state
        of the link's own)."""
        until = time.monotonic() + timeout
        with self.changed:
            while not done():
                if time.monotonic() >= until:
                    return False
                self.changed.wait(0.01)
            return True


def _answer(batch: pb.RaftBatch) -> pb.RaftAck:
    return pb.RaftAck(frames=[b"re:" + f for f in batch.frames])


class Peer:
    """A gRPC server with the Peer service's Raft methods: ``stream`` (RaftStream
    answers each batch), ``unary`` (an older build: Raft only), or ``silent``
    (RaftStream reads batches and never answers)."""

    def __init__(self, mode: str) -> None:
        self.batches: list[pb.RaftBatch] = []
        self.streams = 0
        self._stop = threading.Event()

        def raft(batch: pb.RaftBatch, _context: Any) -> pb.RaftAck:
            self.batches.append(batch)
            return _answer(batch)

        def raft_stream(batches: Iterator[pb.RaftBatch], _context: Any) -> Iterator[pb.RaftAck]:
            self.streams += 1
            for batch in batches:
                self.batches.append(batch)
                if mode == "silent":
                    self._stop.wait(10)
                    return
                yield _answer(batch)

        methods = {
            "Raft": grpc.unary_unary_rpc_method_handler(
                raft, pb.RaftBatch.FromString, pb.RaftAck.SerializeToString
            )
        }
        if mode != "unary":
            methods["RaftStream"] = grpc.stream_stream_rpc_method_handler(
                raft_stream, pb.RaftBatch.FromString, pb.RaftAck.SerializeToString
            )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tadpole.v1.Peer", methods),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self._stop.set()
        self.server.stop(0)


@pytest.fixture
def make_link() -> Iterator[Callable[[str], tuple[RaftLink, Backend, Peer]]]:
    made: list[tuple[RaftLink, Peer]] = []

    def make(mode: str) -> tuple[RaftLink, Backend, Peer]:
        peer, backend = Peer(mode), Backend()
        link = RaftLink(
            "n1",
            "n2",
            f"127.0.0.1:{peer.port}",
            "token",
            backend,  # type: ignore[arg-type]
            call_timeout_s=0.5,
            keepalive_s=30.0,
        )
        link.start()
        made.append((link, peer))
        return link, backend, peer

    yield make
    for link, peer in made:
        peer.stop()
        asyncio.run(link.close())


def test_frames_go_on_one_stream_and_the_answers_reach_the_backend(
    make_link: Callable[[str], tuple[RaftLink, Backend, Peer]],
) -> None:
    link, backend, peer = make_link("stream")
    expected = []
    for n in range(50):
        frame = f"append {n}".encode()
        expected.append(b"re:" + frame)
        link.submit([frame])
        if n % 10 == 0:
            time.sleep(0.01)
    assert backend.wait_for(lambda: len(backend.answers) == 50)
    assert backend.answers == expected  # in send order
    assert link.streams and peer.streams == 1
    assert all(b.from_id == "n1" and b.want_replies for b in peer.batches)
    assert backend.downs == 0


def test_a_peer_without_raftstream_gets_unary_calls(
    make_link: Callable[[str], tuple[RaftLink, Backend, Peer]],
) -> None:
    link, backend, peer = make_link("unary")
    link.submit([b"vote?"])
    assert backend.wait_for(lambda: link.streams is False)
    # The next frames go as a unary call and its answer arrives. "vote?" went with the
    # refused stream (then it is gone: Raft sends again) or, when the peer refused the
    # stream before gRPC's request thread took it, it is still held and goes first in
    # that call: both are the link's contract, and which one is a race.
    link.submit([b"append"])
    assert backend.wait_for(lambda: b"re:append" in backend.answers)
    assert [list(b.frames) for b in peer.batches][-1] in ([b"append"], [b"vote?", b"append"])
    assert backend.downs == 0


def test_an_unanswered_stream_is_given_up_and_the_peer_marked_down(
    make_link: Callable[[str], tuple[RaftLink, Backend, Peer]],
) -> None:
    link, backend, peer = make_link("silent")
    link.submit([b"append"])
    assert backend.wait_for(lambda: len(peer.batches) == 1)
    started = time.monotonic()
    assert backend.wait_for(lambda: backend.downs >= 1, timeout=5.0)
    # Within the call timeout (0.5 s) and the wait for the next batch after it.
    assert time.monotonic() - started < 2.0
    assert backend.answers == []
