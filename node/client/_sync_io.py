"""The blocking half of the client's I/O: what :mod:`node.client._sync` calls.

The twin of :mod:`node.client._async_io` (same names; the table of differences is
there). :mod:`node.client._sync` is generated from the asyncio client, and the
generator replaces ``_async_io`` with this module, so every helper here must accept
what its asyncio twin accepts and return what that twin's coroutine returns.

Thread-safety: :class:`Flag` may be set from any thread (``Watch.close()``); a
:class:`Stream` is read by one thread and may be cancelled from another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from node.client import coalesce
from node.client.messages import CHANNEL_OPTIONS

__all__ = [
    "Coalescer",
    "Flag",
    "Stream",
    "WatchBase",
    "ask_each",
    "each",
    "open_channel",
    "sleep",
]

T = TypeVar("T")


def open_channel(endpoint: str, credentials: grpc.ChannelCredentials | None = None) -> Any:
    """A channel to ``endpoint`` (TLS with ``credentials``), owned by the client that
    opened it (it closes it)."""
    if credentials is not None:
        return grpc.secure_channel(endpoint, credentials, options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)


def sleep(seconds: float) -> None:
    """Back off for ``seconds``."""
    time.sleep(seconds)


def ask_each(methods: Sequence[Any], request: Any, timeout_s: float) -> list[Any]:
    """Send ``request`` through every unary ``method`` at once, each with ``timeout_s``;
    per method, in order, its response or the ``grpc.RpcError`` it failed with."""
    futures = [method.future(request, timeout=timeout_s) for method in methods]
    out: list[Any] = []
    for future in futures:
        try:
            out.append(future.result())
        except grpc.RpcError as exc:
            out.append(exc)
    return out


def each(calls: Sequence[Callable[[], T]]) -> list[T | Exception]:
    """Run the calls at once, one thread each (a lone call in this thread); per call, in
    order, its result or the exception it raised (all of them finish before this
    returns). A blocking gRPC call waits without the GIL, so the calls overlap."""
    if len(calls) == 1:
        try:
            return [calls[0]()]
        except Exception as exc:
            return [exc]
    out: list[T | Exception] = []
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="tadpole-each") as pool:
        for future in [pool.submit(call) for call in calls]:
            try:
                out.append(future.result())
            except Exception as exc:
                out.append(exc)
    return out


class Stream:
    """A server-streaming call being read by one consumer."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def read(self) -> Any:
        """The next message, or ``None`` once the stream has ended. Raises
        ``grpc.RpcError`` when the call fails (CANCELLED after :meth:`cancel`)."""
        try:
            return next(self._call)
        except StopIteration:
            return None

    def cancel(self) -> None:
        """End the call, from any thread; a blocked :meth:`read` raises CANCELLED."""
        self._call.cancel()


class Flag:
    """A one-way switch (a watch's "closed"), settable from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> None:
        """Return after ``timeout_s`` seconds, or as soon as the flag is set."""
        self._event.wait(timeout_s)


class WatchBase:
    """Nothing: a blocking watch has ``close()`` only (``aclose()`` is asyncio's)."""


class _Slot:
    """A blocking call's answer, set by whichever thread answered it."""

    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = False
        self.outcome: Any = None


class Coalescer(coalesce.Sender):
    """Called as a unary stub method is (``Put``, ``Get``, ``Update``); calls that wait
    for the endpoint go together in one ``PutMany`` / ``GetMany`` / ``UpdateEach``
    (:mod:`node.client.coalesce`; ``single``, ``many`` and ``shape`` as in the asyncio
    twin). No thread of its own: a batch leaves as a gRPC future, whose callback (on
    gRPC's thread) answers its calls and sends what queued meanwhile; every caller
    waits for its own answer on a condition, each until its own deadline. One per
    client, endpoint and kind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cond = threading.Condition()  # re-entrant: a future may be done at once

    def __call__(self, request: Any, *, timeout: float, metadata: Any = None) -> Any:
        if not self._batcher.batching(time.monotonic()):
            return self._single(request, timeout=timeout, metadata=metadata)
        slot = _Slot()
        item = coalesce.Pending(request, time.monotonic() + timeout, slot, metadata)
        with self._cond:
            self._batcher.add(item)
            self._pump()
            try:
                while not slot.done:
                    left = item.due - time.monotonic()
                    if left <= 0:
                        if self._batcher.withdraw(item):
                            raise coalesce.withdrawn_error()
                        raise coalesce.BatchedRpcError(
                            grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"
                        )
                    self._cond.wait(left)
            except BaseException:
                self._batcher.withdraw(item)  # a caller that gave up sends nothing later
                slot.done = True  # nor is it sent again alone
                raise
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome

    def _pump(self) -> None:
        """Send what waits while call slots are free (the condition held)."""
        while True:
            batch, expired = self._batcher.next_batch(time.monotonic())
            self._settle_all([(item, coalesce.withdrawn_error()) for item in expired])
            if not batch:
                return
            timeout = self._batcher.call_timeout(batch, time.monotonic())
            try:
                if len(batch) == 1:
                    future = self._single.future(
                        batch[0].request, timeout=timeout, metadata=batch[0].metadata
                    )
                else:
                    future = self._many.future(
                        self._shape.request(batch),
                        timeout=timeout,
                        metadata=self._shape.metadata(batch),
                    )
            except Exception as exc:  # the channel is closed, or a bug
                self._batcher.finished(exc, time.monotonic())
                self._settle_all([(item, exc) for item in batch])
                continue
            future.add_done_callback(lambda done, batch=batch: self._landed(batch, done))

    def _landed(self, batch: list[coalesce.Pending], future: Any) -> None:
        """A batch's call ended (on gRPC's thread): answer its calls, send what waits."""
        failure: BaseException | None = None
        answers: list[tuple[coalesce.Pending, Any]] = []
        alone: list[coalesce.Pending] = []
        try:
            resp = future.result()
            if len(batch) == 1:
                answers.append((batch[0], resp))
            else:
                for item, result in zip(batch, resp.results, strict=True):
                    if coalesce.resend_item(result):
                        alone.append(item)
                    else:
                        answers.append((item, self._shape.answer(result)))
        except grpc.RpcError as exc:
            failure = exc
            if coalesce.resend_alone(exc, batch):
                alone = batch
            else:
                answers = [(item, exc) for item in batch]
        except Exception as exc:  # a bug: each caller gets it
            answers = [(item, exc) for item in batch]
        finally:
            with self._cond:
                self._settle_all(answers)
                for item in alone:
                    self._alone(item)
                self._batcher.finished(failure, time.monotonic())
                self._pump()

    def _alone(self, item: coalesce.Pending) -> None:
        """Send ``item`` (not applied) again as a lone call, answered when it ends; not
        if its caller is gone or its deadline has passed (answered not applied)."""
        left = item.due - time.monotonic()
        if item.waiter.done or left <= 0:
            self._settle_all([(item, coalesce.withdrawn_error())])
            return
        try:
            future = self._single.future(item.request, timeout=left, metadata=item.metadata)
        except Exception as exc:
            self._settle_all([(item, exc)])
            return

        def landed(done: Any) -> None:
            try:
                outcome = done.result()
            except Exception as exc:
                outcome = exc
            self._settle_all([(item, outcome)])

        future.add_done_callback(landed)

    def _settle_all(self, answers: list[tuple[coalesce.Pending, Any]]) -> None:
        """Give each caller its outcome (its response or the exception to raise), and
        wake the waiting callers once."""
        if not answers:
            return
        with self._cond:
            for item, outcome in answers:
                slot: _Slot = item.waiter
                if not slot.done:
                    slot.done, slot.outcome = True, outcome
            self._cond.notify_all()
