"""Raft answers in the call's response (PeerServicer.Raft with want_replies), against a
stand-in for the Raft backend: on time they ride back in the RaftAck; too late, they
go out through the Raft link; an older sender gets an empty ack."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import grpc

from node.api.peer import PeerServicer
from node.pb import tadpole_pb2 as pb
from tests.unit.node.api.fake_context import Aborted, Context


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


class SlotBackend(FakeBackend):
    """Keeps one answer slot per peer, as RaftBackend.deliver_for_reply does: a newer
    batch's slot replaces the older one, which is answered empty at once."""

    def deliver_for_reply(
        self, peer: str, frames: list[bytes], reply: Callable[[list[bytes]], None]
    ) -> None:
        if self.slots:
            self.slots.pop()([])
        super().deliver_for_reply(peer, frames, reply)


class Requests:
    """A stream's requests, handed in by the test one at a time (None: half-close)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[pb.RaftBatch | None] = asyncio.Queue()

    def __aiter__(self) -> Requests:
        return self

    async def __anext__(self) -> pb.RaftBatch:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item


async def _collect(stream: Any, into: list[list[bytes]]) -> None:
    async for ack in stream:
        into.append(list(ack.frames))


async def test_a_stream_hands_batches_over_as_they_arrive_and_answers_in_order() -> None:
    backend, linked = SlotBackend(), []
    servicer = _servicer(backend, linked)
    requests, acks = Requests(), []
    task = asyncio.create_task(_collect(servicer.RaftStream(requests, Context()), acks))
    for frame in (b"append 1", b"append 2"):
        requests.queue.put_nowait(pb.RaftBatch(from_id="n2", frames=[frame], want_replies=True))
    while len(backend.delivered) < 2:  # the second before the first is answered
        await asyncio.sleep(0)
    assert acks == []
    _from_another_thread(backend.slots[-1], [b"ack 1+2"])  # one tick handled both
    requests.queue.put_nowait(pb.RaftBatch(from_id="n2", frames=[], want_replies=True))
    requests.queue.put_nowait(None)
    await asyncio.wait_for(task, 5)
    assert acks == [[], [b"ack 1+2"], []]
    assert [frames for _, frames in backend.delivered] == [[b"append 1"], [b"append 2"], []]
    assert linked == []


async def test_a_stream_from_a_stranger_is_refused_before_any_frame_is_delivered() -> None:
    backend, linked = SlotBackend(), []
    servicer = _servicer(backend, linked)
    requests, context, acks = Requests(), Context(), []
    requests.queue.put_nowait(pb.RaftBatch(from_id="n9", frames=[b"x"], want_replies=True))
    with contextlib.suppress(Aborted):
        await asyncio.wait_for(_collect(servicer.RaftStream(requests, context), acks), 5)
    assert context.code is grpc.StatusCode.PERMISSION_DENIED and "n9" in context.details
    assert backend.delivered == [] and acks == []


async def test_a_stream_may_not_change_its_sender() -> None:
    backend, linked = SlotBackend(), []
    servicer = PeerServicer(
        backend,  # type: ignore[arg-type]
        {"n2", "n3"},
        send_raft=lambda peer, frames: linked.append((peer, frames)),
    )
    requests, context, acks = Requests(), Context(), []
    requests.queue.put_nowait(pb.RaftBatch(from_id="n2", frames=[], want_replies=True))
    requests.queue.put_nowait(pb.RaftBatch(from_id="n3", frames=[b"x"], want_replies=True))
    with contextlib.suppress(Aborted):
        await asyncio.wait_for(_collect(servicer.RaftStream(requests, context), acks), 5)
    assert context.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "'n2', then 'n3'" in context.details
    assert [peer for peer, _ in backend.delivered] == ["n2"]


async def test_answers_of_a_stream_that_ended_go_out_through_the_link() -> None:
    backend, linked = SlotBackend(), []
    servicer = _servicer(backend, linked)
    requests, acks = Requests(), []
    stream = servicer.RaftStream(requests, Context())
    task = asyncio.create_task(_collect(stream, acks))
    requests.queue.put_nowait(pb.RaftBatch(from_id="n2", frames=[b"append"], want_replies=True))
    while not backend.slots:
        await asyncio.sleep(0)
    task.cancel()  # the sender went away before the tick answered
    with contextlib.suppress(asyncio.CancelledError):
        await task
    _from_another_thread(backend.slots[-1], [b"late ack"])
    await asyncio.sleep(0.01)  # the loop runs the hand-over
    assert acks == [] and linked == [("n2", [b"late ack"])]
