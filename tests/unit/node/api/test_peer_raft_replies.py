"""Raft answers in the call's response (PeerServicer.Raft with want_replies), against a
stand-in for the Raft backend: on time they ride back in the RaftAck; too late, they
go out through the Raft link; an older sender gets an empty ack."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from node.api.peer import PeerServicer
from node.pb import tadpole_pb2 as pb


class FakeBackend:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, list[bytes]]] = []
        self.slots: list[Callable[[list[bytes]], None]] = []

    def deliver(self, peer: str, frames: list[bytes]) -> None:
        self.delivered.append((peer, frames))

    def deliver_for_reply(
        self, peer: str, frames: list[bytes], reply: Callable[[list[bytes]], None]
    ) -> None:
        self.delivered.append((peer, frames))
        self.slots.append(reply)


def _servicer(backend: FakeBackend, linked: list[tuple[str, list[bytes]]]) -> PeerServicer:
    return PeerServicer(
        backend,  # type: ignore[arg-type]
        {"n2"},
        send_raft=lambda peer, frames: linked.append((peer, frames)),
    )


def _from_another_thread(reply: Callable[[list[bytes]], None], frames: list[bytes]) -> None:
    thread = threading.Thread(target=reply, args=(frames,))  # as the tick thread would
    thread.start()
    thread.join()


async def test_answers_ready_in_time_ride_back_in_the_ack() -> None:
    backend, linked = FakeBackend(), []
    servicer = _servicer(backend, linked)
    batch = pb.RaftBatch(from_id="n2", frames=[b"append"], want_replies=True)
    call = asyncio.create_task(servicer.Raft(batch, None))
    while not backend.slots:
        await asyncio.sleep(0)
    _from_another_thread(backend.slots[0], [b"ack"])
    ack = await call
    assert list(ack.frames) == [b"ack"]
    assert backend.delivered == [("n2", [b"append"])] and linked == []


async def test_answers_too_late_go_out_through_the_link() -> None:
    backend, linked = FakeBackend(), []
    servicer = _servicer(backend, linked)
    servicer.REPLY_WAIT_S = 0.01
    batch = pb.RaftBatch(from_id="n2", frames=[b"append"], want_replies=True)
    ack = await servicer.Raft(batch, None)
    assert list(ack.frames) == []
    _from_another_thread(backend.slots[0], [b"late ack"])
    await asyncio.sleep(0.01)  # the loop runs the hand-over
    assert linked == [("n2", [b"late ack"])]


async def test_an_older_sender_or_an_empty_batch_gets_an_empty_ack() -> None:
    backend, linked = FakeBackend(), []
    servicer = _servicer(backend, linked)
    for batch in (
        pb.RaftBatch(from_id="n2", frames=[b"append"]),  # no want_replies: an older node
        pb.RaftBatch(from_id="n2", frames=[], want_replies=True),  # a keep-alive
    ):
        ack: Any = await servicer.Raft(batch, None)
        assert list(ack.frames) == []
    assert backend.slots == [] and len(backend.delivered) == 2
