"""Puts coalesced into ``KV.PutMany`` calls: the bookkeeping, without I/O.

A Python gRPC unary call costs the node far more than the put it carries (at 64
concurrent writers the leader spent most of its event loop in gRPC's own code), so
the client sends puts that wait for the same endpoint together. Per endpoint:

* a put goes out at once, as a plain ``Put``, while fewer than ``max_in_flight`` calls
  to that endpoint are in flight: a lone writer waits for nothing;
* otherwise it queues, and the next call to leave takes everything queued (up to
  ``max_items`` puts and ``max_bytes``) as one ``PutMany``; so batches grow with load
  and latency, as the Raft link's do.

Each put keeps its own request id, deadline, answer and error: a ``PutMany`` answers
every put with what a lone ``Put`` would have (:class:`BatchedRpcError` carries a
failed one's status and trailers), so the retry rules of
:mod:`node.client.attempts` see exactly what they would have seen. A put whose
deadline passes while it still queues is withdrawn (never sent: not applied).

:class:`Batcher` is the queue and the count of calls in flight;
:mod:`node.client._async_io` and :mod:`node.client._sync_io` each drive it with
their own waiting (``Coalescer``).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from node.pb import tadpole_pb2 as pb

__all__ = [
    "MAX_BYTES",
    "MAX_IN_FLIGHT",
    "MAX_ITEMS",
    "BatchedRpcError",
    "Batcher",
    "Pending",
    "item_error",
    "put_many_request",
    "resend_alone",
    "withdrawn_error",
]

MAX_IN_FLIGHT = 2  # calls per endpoint before puts queue
MAX_ITEMS = 1_000  # puts per PutMany (the server's limit)
MAX_BYTES = 2 << 20  # encoded puts per PutMany


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
    """One put waiting for its answer: ``waiter`` is the flavour's (a future, a slot)."""

    request: Any
    due: float  # monotonic deadline
    waiter: Any
    size: int = field(init=False)

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

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: Pending) -> None:
        self._queue.append(item)

    def next_batch(self) -> list[Pending]:
        """The puts the next call carries, oldest first, with a call slot reserved for
        it; ``[]`` when none wait or every slot is taken. Call :meth:`finished` when
        that call has ended."""
        if self.in_flight >= self.max_in_flight or not self._queue:
            return []
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
        self.in_flight += 1
        return batch

    def finished(self, exc: BaseException | None = None) -> None:
        """A call has ended (with ``exc`` when it failed whole). A node that does not
        know ``PutMany`` is sent lone puts from then on."""
        assert self.in_flight > 0, "finished() without a batch"
        self.in_flight -= 1
        if exc is not None and _code(exc) is grpc.StatusCode.UNIMPLEMENTED:
            self.max_items = 1

    def withdraw(self, item: Pending) -> bool:
        """Take ``item`` out of the queue (its deadline passed); False if it has left."""
        try:
            self._queue.remove(item)
        except ValueError:
            return False
        return True

    def call_timeout(self, batch: list[Pending], now: float) -> float:
        """The deadline of the call carrying ``batch``: its latest put's (each put
        still gives up at its own)."""
        return max(max(item.due for item in batch) - now, 0.001)


def put_many_request(batch: list[Pending]) -> Any:
    return pb.PutManyRequest(puts=[item.request for item in batch])


def item_error(result: Any) -> BatchedRpcError:
    """The error a failed ``PutManyResult`` stands for."""
    return BatchedRpcError(
        _CODES.get(result.code, grpc.StatusCode.UNKNOWN),
        result.message,
        [(t.key, t.value) for t in result.trailers],
    )


def withdrawn_error() -> BatchedRpcError:
    """A put whose deadline passed while it queued: it never left this process."""
    return BatchedRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "deadline passed before the put was sent (not applied)",
        [("tadpole-outcome", "not-applied")],
    )


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
