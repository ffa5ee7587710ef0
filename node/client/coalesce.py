"""Puts and gets coalesced into ``KV.PutMany`` and ``KV.GetMany`` calls: the
bookkeeping, without I/O.

A Python gRPC unary call costs the node far more than the put it carries (at 64
concurrent writers the leader spent most of its event loop in gRPC's own code), so
the client sends puts that wait for the same endpoint together, and gets likewise
(linearizable gets in one call share the node's ReadIndex rounds). Per endpoint and
kind of call:

* a put goes out at once, as a plain ``Put``, while fewer than ``max_in_flight`` calls
  to that endpoint are in flight: a lone writer waits for nothing;
* otherwise it queues, and the next call to leave takes everything queued (up to
  ``max_items`` puts and ``max_bytes``) as one ``PutMany``; so batches grow with load
  and latency, as the Raft link's do;
* the asyncio client decides once per turn of its event loop, not per call: the
  callers one answer wakes call again in the same turn, and leave together instead of
  the first taking a free slot alone.

Single tier updates that add to a counter travel the same way, in ``Tiers.UpdateEach``
(the other tier ops go alone: their answer carries the key's whole value -- a set's,
a log's, a map's -- which could outgrow a message when many travel together).

Each call keeps its own request id, deadline, answer and error: a ``PutMany`` answers
every put with what a lone ``Put`` would have, a ``GetMany`` every get as ``Get``, an
``UpdateEach`` every update as ``Update`` (:class:`BatchedRpcError` carries a failed
one's status and trailers), so the retry rules of :mod:`node.client.attempts` see
exactly what they would have seen. A call whose deadline passes while it still queues
is withdrawn (never sent: not applied). Tier updates are fenced writes (each try
carries the deadline by which the owner applies it or not at all, metadata
``tadpole-deadline-ns``): a batch carries the earliest of its updates' deadlines, so
each is applied by its own or not at all.

:class:`Batcher` is the queue and the count of calls in flight;
:mod:`node.client._async_io` and :mod:`node.client._sync_io` each drive it with
their own waiting (``Coalescer``).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from node.client.messages import DEADLINE_KEY
from node.pb import tadpole_pb2 as pb

__all__ = [
    "GETS",
    "MAX_BYTES",
    "MAX_IN_FLIGHT",
    "MAX_ITEMS",
    "PUTS",
    "RESEND_ALONE_KEY",
    "TIER_UPDATES",
    "BatchedRpcError",
    "Batcher",
    "Pending",
    "Sender",
    "Shape",
    "item_error",
    "resend_alone",
    "resend_item",
    "withdrawn_error",
]

MAX_IN_FLIGHT = 2  # calls per endpoint before puts queue
MAX_ITEMS = 1_000  # puts per PutMany (the server's limit)
MAX_BYTES = 1 << 20  # encoded requests per call (the server's default max_value_bytes)
LONE_FOR_S = 60.0  # a node without PutMany/GetMany: lone calls, then ask again
# Trailer of a batch item the node did not answer because the batch's answer would
# have outgrown a message: the client sends that item again alone.
RESEND_ALONE_KEY = "tadpole-resend-alone"


class BatchedRpcError(grpc.RpcError):  # type: ignore[misc]
    """The status one put of a ``PutMany`` was answered with (or a put that never left
    the queue), shaped as the error of a unary call: ``code()``, ``details()``,
    ``trailing_metadata()``."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailers = tuple(trailers)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def __str__(self) -> str:
        return f"{self._code.name}: {self._details}"


@dataclass(eq=False)
class Pending:
    """One call waiting for its answer: ``waiter`` is the flavour's (a future, a slot);
    ``metadata`` what its caller sends it with."""

    request: Any
    due: float  # monotonic deadline
    waiter: Any
    metadata: Any = None
    size: int = field(init=False)
    sent: bool = field(default=False, init=False)  # taken into a call

    def __post_init__(self) -> None:
        self.size = self.request.ByteSize()


class Batcher:
    """The puts waiting for one endpoint and its calls in flight. Not thread-safe: the
    blocking flavour holds its lock around every method."""

    def __init__(
        self,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_items: int = MAX_ITEMS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        if max_in_flight < 1 or max_items < 1 or max_bytes < 1:
            raise ValueError("max_in_flight, max_items and max_bytes must be >= 1")
        self.max_in_flight = max_in_flight
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.in_flight = 0
        self._queue: collections.deque[Pending] = collections.deque()
        self._lone_until = float("-inf")

    def batching(self, now: float) -> bool:
        """False while the endpoint is known not to take batches: send calls alone,
        straight (not through the queue, which would hold them to ``max_in_flight``)."""
        return now >= self._lone_until

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: Pending) -> None:
        self._queue.append(item)

    def next_batch(self, now: float) -> tuple[list[Pending], list[Pending]]:
        """The calls the next call carries, oldest first, with a call slot reserved for
        it (``[]`` when none wait or every slot is taken; call :meth:`finished` when
        that call has ended); and the calls whose try's deadline passed while they
        queued, out of the queue and never to be sent (answer them
        :func:`withdrawn_error`)."""
        expired = [item for item in self._queue if item.due <= now]
        if expired:
            self._queue = collections.deque(item for item in self._queue if item.due > now)
        if self.in_flight >= self.max_in_flight or not self._queue:
            return [], expired
        batch = [self._queue.popleft()]
        size = batch[0].size
        while (
            self._queue
            and len(batch) < self.max_items
            and size + self._queue[0].size <= self.max_bytes
        ):
            item = self._queue.popleft()
            batch.append(item)
            size += item.size
        for item in batch:
            item.sent = True
        self.in_flight += 1
        return batch, expired

    def finished(self, exc: BaseException | None = None, now: float = 0.0) -> None:
        """A call has ended (with ``exc`` when it failed whole). A node that does not
        know the batch call (an older version) is sent lone calls for
        :data:`LONE_FOR_S` (it may be upgraded meanwhile)."""
        assert self.in_flight > 0, "finished() without a batch"
        self.in_flight -= 1
        if exc is not None and _code(exc) is grpc.StatusCode.UNIMPLEMENTED:
            self._lone_until = now + LONE_FOR_S

    def withdraw(self, item: Pending) -> bool:
        """Take ``item`` out of the queue (its caller gave up); False if it was sent."""
        if item.sent:
            return False
        with contextlib.suppress(ValueError):  # gone already: expired in next_batch
            self._queue.remove(item)
        return True

    def call_timeout(self, batch: list[Pending], now: float) -> float:
        """The deadline of the call carrying ``batch``: its latest put's (each put
        still gives up at its own)."""
        return max(max(item.due for item in batch) - now, 0.001)


@dataclass(frozen=True)
class Shape:
    """What a batch of one kind of call is on the wire: ``pack`` makes the ``*Many``
    request of the single requests; ``field`` names the answer in each result;
    ``fenced``: its calls carry a write deadline in their metadata."""

    pack: Callable[[list[Any]], Any]
    field: str
    fenced: bool = False

    def request(self, batch: list[Pending]) -> Any:
        return self.pack([item.request for item in batch])

    def metadata(self, batch: list[Pending]) -> Any:
        """What the call carrying ``batch`` is sent with. Its callers all pass the
        client's own metadata, so any one's -- but a fenced call's differ in their write
        deadline, and the batch takes the earliest: each of its writes is then applied
        by its own deadline or not at all."""
        if not self.fenced:
            return batch[0].metadata
        return min((item.metadata for item in batch), key=_write_deadline)

    def answer(self, result: Any) -> Any:
        """A result's answer, or the error it stands for."""
        return getattr(result, self.field) if result.code == 0 else item_error(result)


class Sender:
    """What both flavours' ``Coalescer`` hold: the endpoint's stub methods for the lone
    call (``single``) and the batch (``many``), the batch's wire form and its queue."""

    def __init__(
        self,
        single: Any,
        many: Any,
        shape: Shape | None = None,
        batcher: Batcher | None = None,
    ) -> None:
        self._single = single
        self._many = many
        self._shape = shape if shape is not None else PUTS
        self._batcher = batcher if batcher is not None else Batcher()


PUTS = Shape(lambda requests: pb.PutManyRequest(puts=requests), "put")
GETS = Shape(lambda requests: pb.GetManyRequest(gets=requests), "get")
TIER_UPDATES = Shape(
    lambda requests: pb.TierUpdateManyRequest(updates=requests), "update", fenced=True
)


def _write_deadline(metadata: Any) -> int:
    """A call's write deadline (ns since the epoch) from its metadata; none: the end of
    time."""
    for key, value in metadata or ():
        if key == DEADLINE_KEY:
            return int(value)
    return 1 << 63


def item_error(result: Any) -> BatchedRpcError:
    """The error a failed batch result (``PutManyResult``, ``GetManyResult``,
    ``TierUpdateEachResult``) stands for."""
    return BatchedRpcError(
        _CODES.get(result.code, grpc.StatusCode.UNKNOWN),
        result.message,
        [(t.key, t.value) for t in result.trailers],
    )


def withdrawn_error() -> BatchedRpcError:
    """A call whose try's deadline passed while it queued: it never left this process
    (the endpoint's calls in flight did not end in time). Answered as an unavailable
    endpoint -- not applied, so the client's rules try it elsewhere, as they would a
    lone call that timed out on a stalled node."""
    return BatchedRpcError(
        grpc.StatusCode.UNAVAILABLE,
        "not sent: the endpoint's calls in flight did not end within the try's deadline",
        [("tadpole-outcome", "not-applied")],
    )


def resend_item(result: Any) -> bool:
    """Whether a batch item was left unanswered for the client to send alone."""
    return any(t.key == RESEND_ALONE_KEY for t in result.trailers)


# A whole PutMany refused for one of its puts (a key the caller may not write), or by
# a node without PutMany (an older version, mid-upgrade): each put is sent again alone,
# so each gets its own answer. None was applied: these are answered before anything is
# proposed. (A rate limit's RESOURCE_EXHAUSTED is every put's answer: resending them
# one by one would only spend more of the caller's budget.)
_RESEND_ALONE = frozenset(
    {
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)


def resend_alone(exc: grpc.RpcError, batch: list[Pending]) -> bool:
    """Whether a ``PutMany`` of ``batch`` that failed whole with ``exc`` should be sent
    again put by put."""
    return len(batch) > 1 and _code(exc) in _RESEND_ALONE


def _code(exc: BaseException) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


_CODES = {code.value[0]: code for code in grpc.StatusCode}
