"""The asyncio half of the client's I/O: everything :mod:`node.client._async` awaits.

:mod:`node.client._sync_io` defines the same names with blocking bodies, and the
generator (:mod:`node.client.unasync`) swaps one module for the other. So the client
source is written once and every real difference between the flavours is one helper
here, with its twin there:

=================  ======================================  ===============================
helper             asyncio (this module)                   blocking (``_sync_io``)
=================  ======================================  ===============================
``open_channel``   ``grpc.aio.insecure_channel``           ``grpc.insecure_channel``
``sleep``          ``asyncio.sleep``                       ``time.sleep``
``ask_each``       one task per endpoint, gathered         one gRPC future per endpoint
``each``           the calls at once, gathered             the calls at once, a thread each
``Stream``         ``call.read()``; ``EOF`` and the        ``next(call)``; ``StopIteration``
                   cancellation of a cancelled call end it ends it
``Flag``           ``asyncio.Event``; set from the loop    ``threading.Event``; set from
                                                           any thread
``WatchBase``      adds ``aclose()``                       adds nothing
``Coalescer``      once per loop turn, a task sends each   a batch leaves as a gRPC future;
                   batch; callers await a future           callers wait on a condition
=================  ======================================  ===============================

Errors: gRPC failures surface as ``grpc.RpcError`` (``grpc.aio.AioRpcError`` is one), the
client translates them; nothing here raises a Tadpole error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

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
        return grpc.aio.secure_channel(endpoint, credentials, options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)


async def sleep(seconds: float) -> None:
    """Back off for ``seconds`` (0 still yields to the loop)."""
    await asyncio.sleep(seconds)


async def ask_each(methods: Sequence[Any], request: Any, timeout_s: float) -> list[Any]:
    """Send ``request`` through every unary ``method`` at once, each with ``timeout_s``;
    per method, in order, its response or the ``grpc.RpcError`` it failed with."""

    async def one(method: Any) -> Any:
        try:
            return await method(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            return exc

    return list(await asyncio.gather(*(one(m) for m in methods)))


async def each(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T | Exception]:
    """Run every call at once; per call, in order, its result or the exception it
    raised (all of them finish before this returns)."""

    async def one(call: Callable[[], Awaitable[T]]) -> T | Exception:
        try:
            return await call()
        except Exception as exc:
            return exc

    return list(await asyncio.gather(*(one(c) for c in calls)))


class Stream:
    """A server-streaming call being read by one consumer."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    async def read(self) -> Any:
        """The next message, or ``None`` once the stream has ended (or was cancelled by
        :meth:`cancel`). Raises ``grpc.RpcError`` when the call fails."""
        try:
            msg = await self._call.read()
        except asyncio.CancelledError:
            if self._cancelled:  # our own cancel(), not the task's: the stream ended
                return None
            raise
        return None if msg is grpc.aio.EOF else msg

    def cancel(self) -> None:
        """End the call; a pending :meth:`read` returns ``None`` or raises CANCELLED."""
        self._cancelled = True
        self._call.cancel()


class Flag:
    """A one-way switch (a watch's "closed"): :meth:`set` only from the event loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout_s: float) -> None:
        """Return after ``timeout_s`` seconds, or as soon as the flag is set."""
        if self._event.is_set():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        except TimeoutError:
            pass


class WatchBase:
    """What only the asyncio watch has: ``aclose()``, for ``contextlib.aclosing``."""

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Same as ``close()``, awaitable."""
        self.close()


class Coalescer(coalesce.Sender):
    """Called as a unary stub method is (``Put``, ``Get``, ``Update``); calls that wait
    for the endpoint go together in one ``PutMany`` / ``GetMany`` / ``UpdateEach``
    (:mod:`node.client.coalesce`). ``single`` and ``many`` are the endpoint's stub
    methods, ``shape`` their wire form (and which caller's metadata a batch carries).
    One per client, endpoint and kind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump_due = False

    async def __call__(self, request: Any, *, timeout: float, metadata: Any = None) -> Any:
        if not self._batcher.batching(time.monotonic()):
            return await self._single(request, timeout=timeout, metadata=metadata)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        item = coalesce.Pending(request, time.monotonic() + timeout, waiter, metadata)
        self._batcher.add(item)
        self._pump_soon()
        try:
            async with asyncio.timeout(timeout):
                return await waiter  # cancelled at the deadline: _settle skips it
        except TimeoutError:
            if self._batcher.withdraw(item):
                raise coalesce.withdrawn_error() from None
            raise coalesce.BatchedRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"
            ) from None
        except asyncio.CancelledError:
            self._batcher.withdraw(item)  # a caller that gave up sends nothing later
            raise

    def _pump_soon(self) -> None:
        """Send what waits once this turn of the event loop is over. The callers one
        batch's answer wakes resume in the same turn and call again at once; sent as
        each one arrives, the first would take a free slot alone and the rest queue
        behind it (at 64 callers two thirds of the calls carried one get). A lone
        caller still goes out in the next turn, without waiting for anything."""
        if not self._pump_due:
            self._pump_due = True
            asyncio.get_running_loop().call_soon(self._pump_now)

    def _pump_now(self) -> None:
        self._pump_due = False
        self._pump()

    def _pump(self) -> None:
        while True:
            batch, expired = self._batcher.next_batch(time.monotonic())
            for item in expired:
                _settle(item, coalesce.withdrawn_error())
            if not batch:
                return
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[coalesce.Pending]) -> None:
        failure: BaseException | None = None
        timeout = self._batcher.call_timeout(batch, time.monotonic())
        try:
            if len(batch) == 1:
                _settle(batch[0], await self._single(batch[0].request, timeout=timeout,
                                                     metadata=batch[0].metadata))  # fmt: skip
            else:
                resp = await self._many(
                    self._shape.request(batch),
                    timeout=timeout,
                    metadata=self._shape.metadata(batch),
                )
                alone = []
                for item, result in zip(batch, resp.results, strict=True):
                    if coalesce.resend_item(result):
                        alone.append(item)
                    else:
                        _settle(item, self._shape.answer(result))
                await self._alone(alone)
        except grpc.RpcError as exc:
            failure = exc
            if coalesce.resend_alone(exc, batch):
                await self._alone(batch)
            for item in batch:
                _settle(item, exc)
        except asyncio.CancelledError as exc:
            for item in batch:
                _settle(item, exc)
            raise
        except Exception as exc:  # a bug: each caller gets it (nobody awaits this task)
            for item in batch:
                _settle(item, exc)
        finally:
            self._batcher.finished(failure, time.monotonic())
            self._pump()

    async def _alone(self, items: list[coalesce.Pending]) -> None:
        """Send each of ``items`` (none applied) again as a lone call, at once, each with
        what is left of its deadline; one whose caller is gone or whose deadline has
        passed is not sent again (answered not applied)."""

        async def one(item: coalesce.Pending) -> None:
            timeout = item.due - time.monotonic()
            if item.waiter.done() or timeout <= 0:
                _settle(item, coalesce.withdrawn_error())
                return
            try:
                _settle(item, await self._single(item.request, timeout=timeout,
                                                 metadata=item.metadata))  # fmt: skip
            except BaseException as exc:  # cancelled too: its caller hears at once
                _settle(item, exc)
                if not isinstance(exc, Exception):
                    raise

        if items:
            await asyncio.gather(*(one(item) for item in items))


def _settle(item: coalesce.Pending, outcome: Any) -> None:
    """Answer ``item``'s caller: ``outcome`` is its response or the exception to raise."""
    waiter: asyncio.Future[Any] = item.waiter
    if waiter.done():
        return
    if isinstance(outcome, asyncio.CancelledError):
        waiter.cancel()
    elif isinstance(outcome, BaseException):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)
