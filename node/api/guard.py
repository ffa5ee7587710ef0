"""A request body that does not parse is the caller's mistake, not the node's.

gRPC decodes a request before the servicer sees it; a body that is not a valid protobuf
message of the method's type (random bytes, a string field that is not UTF-8) made grpc
answer ``UNKNOWN: Unexpected <class 'DecodeError'>`` and log a traceback at ERROR.
:class:`DecodeGuard` wraps every method's deserializer so that a bad body is answered
``INVALID_ARGUMENT`` ("request body is not a valid tadpole.v1.PutRequest message") with
outcome ``not-applied`` and logged as one line. Methods without a deserializer (the Peer
service keeps its bodies as opaque bytes until the sender is authenticated) are left alone.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from node import deadline
from node.api.status import OUTCOME_KEY
from node.api.wrapping import WrappingInterceptor, checked_first
from node.errors import InvalidArgument, Outcome
from node.ratelimit import TokenBuckets, client_identity
from node.tls import peer_common_name

__all__ = ["DecodeGuard", "RateLimit", "WriteFence"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Undecodable:
    why: str


class _UndecodableMessage(Exception):
    """A stream's request that did not parse, on its way out of the servicer."""

    def __init__(self, bad: _Undecodable) -> None:
        super().__init__(bad.why)
        self.bad = bad


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    name = _message_name(deserializer)

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # protobuf's DecodeError, or anything a parser raises
            return _Undecodable(f"request body is not a valid {name} message ({exc})")

    return decode


async def _refuse(bad: _Undecodable, context: grpc.aio.ServicerContext, method: str) -> None:
    log.warning("refused %s: %s", method, bad.why)
    context.set_trailing_metadata(((OUTCOME_KEY, Outcome.NOT_APPLIED.value),))
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad.why)


class DecodeGuard(WrappingInterceptor):
    """Answer undecodable request bodies with INVALID_ARGUMENT instead of UNKNOWN."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return _guarded(handler, method)


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    if handler is None or handler.request_deserializer is None:
        return handler
    decode = _safe(handler.request_deserializer)
    serialize = handler.response_serializer
    if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await _refuse(request, context, method)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=decode, response_serializer=serialize
        )
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        inner_us = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _refuse(request, context, method)
            async for response in inner_us(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=decode, response_serializer=serialize
        )
    if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
        inner_ss = handler.stream_stream

        async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Undecodable):
                    raise _UndecodableMessage(request)
                yield request

        async def stream_stream(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            # The servicer may read its requests in a task of its own while it writes
            # answers: the abort (a status sent) must come from this, the handler's own
            # task, between writes -- from the reading task it can collide with a
            # message being sent, and gRPC then drops the status (the caller waits out
            # its deadline).
            try:
                async for response in inner_ss(checked(requests), context):
                    yield response
            except _UndecodableMessage as exc:
                await _refuse(exc.bad, context, method)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=decode, response_serializer=serialize
        )
    # Client-streaming methods (none in the API) and synchronous handlers (health,
    # reflection) keep gRPC's own handling.
    return handler


class RateLimit(WrappingInterceptor):
    """Per-client rate limits (``node/ratelimit.py``) on every method but the Peer
    service's (peers are the cluster itself) and the health and reflection services:
    a client over its rate is answered ``RESOURCE_EXHAUSTED`` with the seconds to wait,
    outcome ``not-applied``, before its request reaches a servicer."""

    def __init__(self, buckets: TokenBuckets, peers: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.buckets = buckets
        # Certificates of these are the cluster's own calls (status fan-out, forwarded
        # operator calls, scheduled backups): never limited.
        self._peer_names = frozenset(f"node/{p}" for p in peers)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if not method.startswith("/tadpole.v1.") or method.startswith("/tadpole.v1.Peer/"):
            return handler
        return checked_first(handler, self._check) or handler

    async def _check(self, _request: Any, context: grpc.aio.ServicerContext) -> None:
        name = peer_common_name(context)
        if name in self._peer_names:
            return
        who = client_identity(name, context.peer())
        wait = self.buckets.take(who)
        if wait > 0:
            context.set_trailing_metadata(((OUTCOME_KEY, Outcome.NOT_APPLIED.value),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit: {who} may make {self.buckets.rate:g} requests/s (bursts of "
                f"{self.buckets.burst:g}); retry in {wait:.2f} s",
            )


class WriteFence(WrappingInterceptor):
    """The write fence's first step (:mod:`node.deadline`): a Tiers or Documents call
    that carries the client's absolute deadline (metadata ``tadpole-deadline-ns``) is
    served with it in :data:`node.deadline.WRITE_DEADLINE`, where the driver finds it
    when it applies or forwards the write. A value that is not a time is refused
    INVALID_ARGUMENT, outcome not-applied, before the servicer runs. Runs inside
    Authorize: nothing is read from an unauthenticated caller."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if not method.startswith(("/tadpole.v1.Tiers/", "/tadpole.v1.Documents/")):
            return handler
        if handler.unary_unary is None or not inspect.iscoroutinefunction(handler.unary_unary):
            return handler  # the fenced methods are all unary; streams only read
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            raw = next(
                (v for k, v in context.invocation_metadata() or () if k == deadline.DEADLINE_KEY),
                None,
            )
            if raw is None:
                return await inner(request, context)
            try:
                due = deadline.parse(raw)
            except InvalidArgument as exc:
                context.set_trailing_metadata(((OUTCOME_KEY, Outcome.NOT_APPLIED.value),))
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            fence = deadline.WRITE_DEADLINE.set(due)
            try:
                return await inner(request, context)
            finally:
                deadline.WRITE_DEADLINE.reset(fence)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
