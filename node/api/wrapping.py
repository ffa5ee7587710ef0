"""Server interceptors that replace a method's handler with a wrapped one.

gRPC asks every interceptor for a handler on every call. A :class:`WrappingInterceptor`
builds the wrapped handler of a method once and reuses it while gRPC hands out the same
registered handler, so a call costs a dictionary lookup, not a closure, a handler tuple
and an ``inspect`` check. Subclasses say how to wrap (:meth:`wrap`); the wrapped
handler sees the servicer context, which an interceptor itself never does (grpc.aio
gives it only the method and metadata).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

__all__ = ["WrappingInterceptor"]


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
