"""Call authentication: the cluster credential every ``/tadpole.v1.Peer/*`` call carries,
and the operator credential of operator calls.

Every peer call must carry ``authorization: Bearer <token>``, where the token is derived
from the shared cluster secret (``NodeConfig.peer_token``). Operator calls
(:data:`OPERATOR_METHODS`: leadership transfer; every method of the Backup and Keys
services) must carry the operator token instead (``NodeConfig.operator_token``,
another derivation of the secret; the dev cluster writes it to
``<dir>/operator.token``).
:class:`PeerAuthInterceptor` checks both in a server interceptor, before the request is
even parsed: a call without the right credential is answered ``UNAUTHENTICATED`` by a
handler that never deserializes the request body, so an unauthenticated sender can't get
a single pickle byte decoded.

This is the interim answer to "anyone who can reach a port can move the leader";
per-client identities and roles replace the operator token when RBAC lands.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

import grpc

__all__ = [
    "AUTH_HEADER",
    "OPERATOR_METHODS",
    "OPERATOR_SERVICE_PREFIXES",
    "PEER_SERVICE_PREFIX",
    "PeerAuthInterceptor",
    "auth_metadata",
]

log = logging.getLogger(__name__)

PEER_SERVICE_PREFIX = "/tadpole.v1.Peer/"
OPERATOR_METHODS = frozenset({"/tadpole.v1.Cluster/TransferLeadership"})
# Every method of these services is an operator call (backups hand out raw replicas).
OPERATOR_SERVICE_PREFIXES = ("/tadpole.v1.Backup/", "/tadpole.v1.Keys/")
AUTH_HEADER = "authorization"


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata a peer (or operator) call carries."""
    return ((AUTH_HEADER, f"Bearer {token}"),)


def _deny_with(message: str, counter: Callable[[], None]) -> grpc.RpcMethodHandler:
    async def deny(_request: bytes, context: grpc.aio.ServicerContext) -> None:
        counter()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # No request_deserializer: the body stays opaque bytes, never parsed.
    return grpc.unary_unary_rpc_method_handler(deny)


class PeerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuse Peer-service calls that lack the cluster credential, and operator calls
    that lack the operator credential."""

    def __init__(self, token: str, operator_token: str = "") -> None:
        self._expected = f"Bearer {token}".encode() if token else b""
        self._operator = f"Bearer {operator_token}".encode() if operator_token else b""
        self.rejected = 0

        def count() -> None:
            self.rejected += 1

        self._deny = _deny_with("peer call without a valid cluster credential", count)
        self._deny_operator = _deny_with(
            "an operator call needs the operator credential (the CLI's --token-file; "
            "the dev cluster writes it to .cluster/operator.token)",
            count,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method.startswith(PEER_SERVICE_PREFIX):
            if not _presents(details, self._expected):
                log.warning("refused unauthenticated peer call %s", method)
                return self._deny
        elif (
            method in OPERATOR_METHODS or method.startswith(OPERATOR_SERVICE_PREFIXES)
        ) and not _presents(details, self._operator):
            log.warning("refused operator call %s without the operator credential", method)
            return self._deny_operator
        return await continuation(details)


def _presents(details: grpc.HandlerCallDetails, expected: bytes) -> bool:
    presented = b""
    for key, value in details.invocation_metadata or ():
        if key == AUTH_HEADER:
            presented = value.encode() if isinstance(value, str) else value
    return bool(expected) and hmac.compare_digest(presented, expected)
