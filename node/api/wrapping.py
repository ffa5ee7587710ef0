"""Server interceptors that replace a method's handler with a wrapped one.

gRPC asks every interceptor for a handler on every call. A :class:`WrappingInterceptor`
builds the wrapped handler of a method once and reuses it while gRPC hands out the same
registered handler, so a call costs a dictionary lookup, not a closure, a handler tuple
and an ``inspect`` check. Subclasses say how to wrap (:meth:`wrap`); the wrapped
handler sees the servicer context, which an interceptor itself never does (grpc.aio
gives it only the method and metadata).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["WrappingInterceptor", "checked_first"]


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler to serve ``method`` with instead of ``handler`` (not None)."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, details.method)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped


# A check may answer how to check again: a stream runs it before each item it sends.
Recheck = Callable[[], Awaitable[None]]
Check = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Recheck | None]]


def checked_first(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler | None:
    """``handler`` with ``await check(request, context)`` run before it (which aborts the
    call to refuse it): for async unary-unary and unary-stream handlers; None for any
    other kind (the caller decides what those get). A stream whose check answered a
    recheck runs it before each item it sends (which aborts the stream to end it)."""
    if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(request, context)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            recheck = await check(request, context)
            async for item in inner_stream(request, context):
                if recheck is not None:
                    await recheck()
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return None
