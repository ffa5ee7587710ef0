"""GrpcTransport (node/replication/grpc_transport.py) over a fake channel: no sockets.

What a failure says about the message — never sent (``NotDelivered``) or unknown
(``PeerUnreachable``) — and that a refused credential is logged at WARNING, once per
peer per minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from node.pb import tadpole_pb2 as pb
from node.replication import codec
from node.replication.errors import NotDelivered, PeerUnreachable
from node.replication.grpc_transport import (
    AUTH_WARNING_INTERVAL_S,
    REOPEN_AFTER_S,
    GrpcTransport,
)
from node.replication.messages import (
    Done,
    ForwardGroup,
    ForwardMany,
    ForwardManyReply,
    Merge,
    Reply,
    Until,
)
from node.tiers.ops import Op

C = grpc.ChannelConnectivity
MERGE = Merge("population", "job_event_log/j-1", b"x")
LOGGER = "node.replication.grpc_transport"


class FakeChannel:
    """A channel whose connectivity walks through ``states`` and whose Replica call
    answers with ``answer`` (a reply message, or an RPC status code to fail with)."""

    def __init__(self, states: list[C], answer: Reply | grpc.StatusCode) -> None:
        self.states = list(states)
        self.answer = answer
        self.calls: list[pb.PeerMessage] = []
        self.closed = False

    def get_state(self, try_to_connect: bool = False) -> C:
        return self.states[0]

    async def wait_for_state_change(self, last: C) -> None:
        if len(self.states) > 1:
            self.states.pop(0)
            return
        await _forever()

    def stream_stream(self, method: str, **_: Any) -> None:
        return None  # PeerStub's RaftStream: never called by the replica transport

    def unary_unary(self, method: str, **_: Any) -> Callable[..., Any]:
        async def call(request: pb.PeerMessage, *, metadata: Any, timeout: float) -> Any:
            assert method == "/tadpole.v1.Peer/Replica" and timeout > 0
            assert ("authorization", "Bearer t") in list(metadata)
            self.calls.append(request)
            if isinstance(self.answer, grpc.StatusCode):
                raise grpc.aio.AioRpcError(
                    self.answer, grpc.aio.Metadata(), grpc.aio.Metadata(), details="no"
                )
            return pb.PeerMessage(from_id="n2", payload=codec.encode(self.answer))

        return call

    async def close(self, grace: float | None = None) -> None:
        self.closed = True


async def _forever() -> None:
    await asyncio.Event().wait()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def transport(
    channels: dict[str, FakeChannel], clock: Clock | None = None, timeout_s: float = 5.0
) -> GrpcTransport:
    return GrpcTransport(
        "n1",
        "t",
        timeout_s=timeout_s,
        connect=lambda address, _peer: channels[address],  # type: ignore[arg-type,return-value]
        monotonic=clock or Clock(),
    )


@pytest.mark.parametrize(
    "states",
    [
        [C.READY],
        [C.IDLE, C.CONNECTING, C.READY],  # connects on first use
    ],
)
async def test_a_call_on_a_ready_channel_returns_the_reply(states: list[C]) -> None:
    channel = FakeChannel(states, Done())
    t = transport({"a2": channel})
    assert await t.call("n2", "a2", MERGE) == Done()
    assert codec.decode_request(channel.calls[0].payload) == MERGE
    assert channel.calls[0].from_id == "n1"
    await t.close()
    assert channel.closed


@pytest.mark.parametrize(
    ("states", "timeout_s"),
    [
        ([C.TRANSIENT_FAILURE], 5.0),  # no connection could be opened (gRPC fails fast)
        ([C.IDLE, C.CONNECTING, C.TRANSIENT_FAILURE], 5.0),
        ([C.CONNECTING], 0.0),  # still connecting when the call's time is up
        ([C.SHUTDOWN], 5.0),
    ],
)
async def test_no_connection_is_not_delivered(states: list[C], timeout_s: float) -> None:
    channel = FakeChannel(states, Done())
    with pytest.raises(NotDelivered):
        await transport({"a2": channel}, timeout_s=timeout_s).call("n2", "a2", MERGE)
    assert channel.calls == []  # never sent


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,  # e.g. the connection was lost mid-call
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNIMPLEMENTED,
    ],
)
async def test_a_failed_call_is_outcome_unknown_and_quiet(
    code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    channel = FakeChannel([C.READY], code)
    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(PeerUnreachable) as caught:
        await transport({"a2": channel}).call("n2", "a2", MERGE)
    assert not isinstance(caught.value, NotDelivered)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED]
)
async def test_a_refused_credential_is_a_warning_once_per_peer_per_minute(
    code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    t = transport({"a2": FakeChannel([C.READY], code), "a3": FakeChannel([C.READY], code)}, clock)

    async def refusals(peer: str, address: str) -> None:
        with pytest.raises(NotDelivered):  # still "unreachable"; and nothing was applied
            await t.call(peer, address, MERGE)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await refusals("n2", "a2")
        assert len(warnings()) == 1
        assert "n2" in warnings()[0] and code.name in warnings()[0]
        for _ in range(5):
            clock.now += 10.0
            await refusals("n2", "a2")  # 10..50 s later: not again
        assert len(warnings()) == 1
        await refusals("n3", "a3")  # another peer: its own warning
        assert len(warnings()) == 2
        clock.now += AUTH_WARNING_INTERVAL_S - 50.0  # a minute after n2's first
        await refusals("n2", "a2")
        assert len(warnings()) == 3
    assert all(r.levelno in (logging.DEBUG, logging.WARNING) for r in caplog.records)


async def test_a_fenced_batch_gets_the_time_its_size_gets_bare() -> None:
    # A forward under its client's deadline (Until) is a batch like any other: the
    # per-call timeout scales with the updates it carries, not with the envelope.
    timeouts: list[float] = []

    class Timed(FakeChannel):
        def unary_unary(self, method: str, **kw: Any) -> Callable[..., Any]:
            inner = super().unary_unary(method, **kw)

            async def call(request: pb.PeerMessage, *, metadata: Any, timeout: float) -> Any:
                timeouts.append(timeout)
                return await inner(request, metadata=metadata, timeout=timeout)

            return call

    group = ForwardGroup(
        "population", "k/1", tuple((Op("counter_add", amount=1), "") for _ in range(1024))
    )
    many = ForwardMany((group,))
    t = transport({"a2": Timed([C.READY], ForwardManyReply(()))}, timeout_s=2.0)
    await t.call("n2", "a2", many)
    await t.call("n2", "a2", Until(1, many))
    assert timeouts[0] > 2.0 and timeouts[1] == pytest.approx(timeouts[0], rel=0.05)


async def test_a_channel_that_stays_not_ready_is_reopened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # gRPC has left channels IDLE after a lost connection, and asking for the state
    # did not wake them: every call would be "not sent" for as long as the node runs.
    stuck = FakeChannel([C.IDLE], Done())  # never leaves IDLE
    fresh = FakeChannel([C.IDLE, C.CONNECTING, C.READY], Done())
    opened: list[FakeChannel] = []

    def connect(address: str, _peer: str) -> FakeChannel:
        opened.append(stuck if not opened else fresh)
        return opened[-1]

    clock = Clock()
    t = GrpcTransport("n1", "t", timeout_s=0.01, connect=connect, monotonic=clock)  # type: ignore[arg-type]
    for _ in range(3):  # not ready, but not for long yet: the same channel
        with pytest.raises(NotDelivered):
            await t.call("n2", "a2", MERGE)
        clock.now += REOPEN_AFTER_S / 3
    assert opened == [stuck] and t.reopened == 0
    clock.now += 0.01  # past REOPEN_AFTER_S since the first
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(NotDelivered):
        await t.call("n2", "a2", MERGE)  # not ready for REOPEN_AFTER_S: replaced
    assert t.reopened == 1 and "not ready for 5 s: reopening it" in caplog.text
    await asyncio.sleep(0)  # the close runs as a task of its own
    assert stuck.closed
    assert await t.call("n2", "a2", MERGE) == Done()  # on a new channel
    assert opened == [stuck, fresh] and fresh.calls and not stuck.calls
    await t.close()


async def test_a_call_its_channel_cancelled_is_unreachable_not_a_cancellation() -> None:
    # gRPC raises CancelledError in the caller of a call whose channel it closed (a
    # replaced one). Raised on, it would end the background loop that made the call.
    class Closed(FakeChannel):
        def unary_unary(self, method: str, **_: Any) -> Callable[..., Any]:
            async def call(request: pb.PeerMessage, *, metadata: Any, timeout: float) -> Any:
                raise asyncio.CancelledError()

            return call

    t = transport({"a2": Closed([C.READY], Done())})
    with pytest.raises(PeerUnreachable) as caught:
        await t.call("n2", "a2", MERGE)
    assert not isinstance(caught.value, NotDelivered)  # it may have been applied


async def test_a_cancelled_caller_is_still_cancelled() -> None:
    hanging = FakeChannel([C.IDLE, C.CONNECTING], Done())  # waits to connect
    t = transport({"a2": hanging})
    task = asyncio.ensure_future(t.call("n2", "a2", MERGE))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
