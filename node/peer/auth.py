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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from node.audit import AuditLog
from node.tls import peer_common_name

__all__ = [
    "AUTH_HEADER",
    "OPERATOR_METHODS",
    "OPERATOR_SERVICE_PREFIXES",
    "PEER_SERVICE_PREFIX",
    "PeerAuthInterceptor",
    "auth_metadata",
    "grpc_failure",
    "who",
]

log = logging.getLogger(__name__)

PEER_SERVICE_PREFIX = "/tadpole.v1.Peer/"
# Peer methods whose requests are a stream: refused with a handler of the same kind.
STREAMING_PEER_METHODS = frozenset({PEER_SERVICE_PREFIX + "RaftStream"})
OPERATOR_METHODS = frozenset({"/tadpole.v1.Cluster/TransferLeadership"})
# Every method of these services is an operator call (backups hand out raw replicas).
OPERATOR_SERVICE_PREFIXES = ("/tadpole.v1.Backup/", "/tadpole.v1.Keys/", "/tadpole.v1.Audit/")
AUTH_HEADER = "authorization"


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata a peer (or operator) call carries."""
    return ((AUTH_HEADER, f"Bearer {token}"),)


def _deny_with(
    message: str, counter: Callable[[grpc.aio.ServicerContext], None], streaming: bool = False
) -> grpc.RpcMethodHandler:
    async def deny(_request: bytes, context: grpc.aio.ServicerContext) -> None:
        counter(context)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(_requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        counter(context)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None  # pragma: no cover - abort raises; this makes it a stream handler

    # No request_deserializer: the body stays opaque bytes, never parsed (not a
    # single message of a stream either).
    if streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream)
    return grpc.unary_unary_rpc_method_handler(deny)


class PeerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuse Peer-service calls that lack the cluster credential, and operator calls
    that lack the operator credential."""

    def __init__(self, token: str, operator_token: str = "", audit: AuditLog | None = None) -> None:
        self._expected = f"Bearer {token}".encode() if token else b""
        self._operator = f"Bearer {operator_token}".encode() if operator_token else b""
        self._audit = audit
        self.rejected = 0

    def _deny(self, method: str, message: str) -> grpc.RpcMethodHandler:
        def count(context: grpc.aio.ServicerContext) -> None:
            self.rejected += 1
            if self._audit is not None:
                self._audit.record(caller(context, ""), context.peer(), method, "denied", message)

        return _deny_with(message, count, streaming=method in STREAMING_PEER_METHODS)

    def _audited(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler``, recording its start and outcome in the audit log (both durable,
        the outcome before the answer leaves)."""
        audit = self._audit
        if audit is None or handler is None:
            return handler

        def action(context: grpc.aio.ServicerContext) -> Any:
            who = caller(context, "operator")
            return audit.action(who, context.peer(), method, failed=grpc_failure(context))

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with action(context):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with action(context):
                    async for item in inner_stream(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method.startswith(PEER_SERVICE_PREFIX):
            if not _presents(details, self._expected):
                log.warning("refused unauthenticated peer call %s", method)
                return self._deny(method, "peer call without a valid cluster credential")
        elif method in OPERATOR_METHODS or method.startswith(OPERATOR_SERVICE_PREFIXES):
            if not _presents(details, self._operator):
                log.warning("refused operator call %s without the operator credential", method)
                return self._deny(
                    method,
                    "an operator call needs the operator credential (the CLI's --token-file; "
                    "the dev cluster writes it to .cluster/operator.token)",
                )
            return self._audited(method, await continuation(details))
        return await continuation(details)


def grpc_failure(context: grpc.aio.ServicerContext) -> Callable[[BaseException], tuple[str, str]]:
    """How a call that raised ended, for the audit log: the status it was aborted with
    (``PERMISSION_DENIED``), else ``error``, and its details."""

    def failed(_exc: BaseException) -> tuple[str, str]:
        code = context.code()
        details = context.details() or ""
        if isinstance(details, bytes):
            details = details.decode(errors="replace")
        return (code.name if isinstance(code, grpc.StatusCode) else "error"), str(details)

    return failed


def caller(context: grpc.aio.ServicerContext, credential: str) -> str:
    """Who a call is from, for the audit log: :func:`who` of its TLS certificate's name
    and the credential it presented (``operator``)."""
    return who(peer_common_name(context), credential)


def who(certificate: str | None, credential: str | None) -> str:
    """The audit trail's name of a caller: the credential it presented with the
    certificate of the connection it came on (``operator (client/cli)``), either alone,
    or ``anonymous``."""
    if certificate and credential:
        return f"{credential} ({certificate})"
    return credential or certificate or "anonymous"


def _presents(details: grpc.HandlerCallDetails, expected: bytes) -> bool:
    presented = b""
    for key, value in details.invocation_metadata or ():
        if key == AUTH_HEADER:
            presented = value.encode() if isinstance(value, str) else value
    return bool(expected) and hmac.compare_digest(presented, expected)
