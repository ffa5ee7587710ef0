"""DecodeGuard on a stream of requests (the Peer service's RaftStream): a message that
does not parse ends the stream INVALID_ARGUMENT naming the message type, in one log
line, and the servicer never sees it; the messages before it were served."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from node.api.guard import _guarded
from node.pb import tadpole_pb2 as pb
from tests.unit.node.api.fake_context import Aborted, Context


async def _raw(bodies: list[bytes], decode: Any) -> AsyncIterator[Any]:
    for body in bodies:  # as gRPC would: each message through the deserializer
        yield decode(body)


def _raft_stream(servicer: Any) -> Any:
    """``servicer`` as the node serves RaftStream: behind the decode guard."""
    return _guarded(
        grpc.stream_stream_rpc_method_handler(
            servicer, pb.RaftBatch.FromString, pb.RaftAck.SerializeToString
        ),
        "/tadpole.v1.Peer/RaftStream",
    )


async def test_an_undecodable_message_ends_the_stream_invalid_argument(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[pb.RaftBatch] = []

    async def echo(requests: AsyncIterator[pb.RaftBatch], _context: Any) -> AsyncIterator[Any]:
        async for batch in requests:
            seen.append(batch)
            yield pb.RaftAck(frames=list(batch.frames))

    handler = _raft_stream(echo)
    good = pb.RaftBatch(from_id="n2", frames=[b"a"]).SerializeToString()
    context, acks = Context(), []
    with caplog.at_level(logging.DEBUG), pytest.raises(Aborted):
        async for ack in handler.stream_stream(
            _raw([good, b"\x0a\x7f", good], handler.request_deserializer), context
        ):
            acks.append(ack)
    assert [list(a.frames) for a in acks] == [[b"a"]] and len(seen) == 1
    assert context.code is grpc.StatusCode.INVALID_ARGUMENT
    assert context.details.startswith("request body is not a valid tadpole.v1.RaftBatch message")
    ours = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(ours) == 1 and ours[0].exc_info is None


async def test_the_refusal_comes_from_the_handlers_task_when_a_servicer_reads_in_another() -> None:
    """As RaftStream does: requests are read by a task of the servicer's own while the
    handler writes answers. An abort from the reading task can collide in gRPC with an
    answer being written (the status is then dropped and the caller waits out its
    deadline), so the guard must refuse from the handler's task."""

    async def read_ahead(
        requests: AsyncIterator[pb.RaftBatch], _context: Any
    ) -> AsyncIterator[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            try:
                async for batch in requests:
                    queue.put_nowait(batch)
            except Exception as exc:
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield pb.RaftAck(frames=list(item.frames))
        finally:
            reader.cancel()

    handler = _raft_stream(read_ahead)
    good = pb.RaftBatch(from_id="n2", frames=[b"a"]).SerializeToString()
    context, acks = Context(), []

    async def handle() -> None:
        async for ack in handler.stream_stream(
            _raw([good, b"\x0a\x7f"], handler.request_deserializer), context
        ):
            acks.append(ack)

    task = asyncio.create_task(handle())
    with pytest.raises(Aborted):
        await task
    assert context.code is grpc.StatusCode.INVALID_ARGUMENT
    assert context.aborted_in is task
    assert [list(a.frames) for a in acks] == [[b"a"]]
