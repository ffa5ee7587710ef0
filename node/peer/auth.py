"""Peer authentication: the cluster credential every ``/tadpole.v1.Peer/*`` call carries.

Every peer call must carry ``authorization: Bearer <token>``, where the token is derived
from the shared cluster secret (``NodeConfig.peer_token``). :class:`PeerAuthInterceptor`
checks it in a server interceptor, before the request is even parsed: a call without it
is answered ``UNAUTHENTICATED`` by a handler that never deserializes the request body,
so an unauthenticated sender can't get a single pickle byte decoded.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

import grpc

__all__ = ["AUTH_HEADER", "PEER_SERVICE_PREFIX", "PeerAuthInterceptor", "auth_metadata"]

log = logging.getLogger(__name__)

PEER_SERVICE_PREFIX = "/tadpole.v1.Peer/"
AUTH_HEADER = "authorization"


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata a peer call carries."""
    return ((AUTH_HEADER, f"Bearer {token}"),)


class PeerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuse Peer-service calls that lack the cluster credential."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode() if token else b""
        self.rejected = 0

        async def deny(_request: bytes, context: grpc.aio.ServicerContext) -> None:
            self.rejected += 1
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "peer call without a valid cluster credential",
            )

        # No request_deserializer: the body stays opaque bytes, never parsed.
        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(PEER_SERVICE_PREFIX):
            presented = b""
            for key, value in details.invocation_metadata or ():
                if key == AUTH_HEADER:
                    presented = value.encode() if isinstance(value, str) else value
            if not self._expected or not hmac.compare_digest(presented, self._expected):
                log.warning("refused unauthenticated peer call %s", details.method)
                return self._deny
        return await continuation(details)
