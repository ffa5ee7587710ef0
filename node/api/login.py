"""Password login for a token (node/authn.py), for both ports: gRPC ``Auth/Authenticate``
and HTTP ``POST /api/v1/auth/token``.

Served only over TLS (a password never travels in clear) on a cluster with a secret
(the tokens' key). The hash is checked off the event loop, at most two at a time (each
takes 32 MiB and tens of milliseconds: a flood of guesses can neither stall the node
nor run it out of memory; the per-client rate limit slows the guesser first). A wrong
user and a wrong password get the same answer after the same work. Every login is in
the audit trail, without the password.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import grpc

from node.api.authz import PolicyCache
from node.api.status import abort
from node.audit import AuditLog
from node.authn import MAX_PASSWORD_BYTES, Tokens, verify_password
from node.errors import FailedPrecondition, InvalidArgument, Unauthenticated, Unavailable
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.tls import peer_common_name

__all__ = ["AuthServicer", "Login"]

_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ACTION = "login"


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; b"" for a string that has none (a lone surrogate from JSON)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return b""


class Login:
    def __init__(
        self,
        policy: PolicyCache,
        tokens: Tokens | None,
        tls: bool,
        audit: AuditLog | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._tokens = tokens
        self._tls = tls
        self._audit = audit
        self._clock = clock
        self._checks = asyncio.Semaphore(2)

    async def token(self, user: Any, password: Any, who: str, peer: str) -> tuple[str, float]:
        """A token for ``user`` and when it expires, or the error to answer with."""
        if not isinstance(user, str) or not _USER.match(user):
            raise InvalidArgument("user: 1-64 of [A-Za-z0-9_.-]")
        if not isinstance(password, str) or not 0 < len(_utf8(password)) <= MAX_PASSWORD_BYTES:
            raise InvalidArgument(f"password: 1 to {MAX_PASSWORD_BYTES} bytes of UTF-8")
        if not self._tls:
            raise FailedPrecondition(
                "password login needs TLS: a password must not travel in clear"
            )
        if self._tokens is None:
            raise FailedPrecondition("this cluster issues no tokens (it has no cluster secret)")
        policy = self._policy.get()
        if policy is None:
            raise Unavailable("the access policy is not known yet (no leader to read it from)")
        stored = (policy.passwords or {}).get(user)
        async with self._checks:
            ok = await asyncio.to_thread(verify_password, password, stored)
        if not ok:
            self._record(who, peer, user, "denied", "wrong user or password")
            raise Unauthenticated("wrong user or password")
        token, expires = self._tokens.issue(user, self._clock())
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        self._record(who, peer, user, "ok", f"a token for {user} until {until}")
        return token, expires

    def _record(self, who: str, peer: str, user: str, result: str, detail: str) -> None:
        if self._audit is not None:
            self._audit.record(who, peer, f"{ACTION} {user}", result, detail)


class AuthServicer(pb_grpc.AuthServicer):  # type: ignore[misc]
    def __init__(self, login: Login) -> None:
        self._login = login

    async def Authenticate(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateResponse:
        who = peer_common_name(context) or "anonymous"
        try:
            token, expires = await self._login.token(
                request.user, request.password, who, context.peer()
            )
        except Exception as exc:
            await abort(context, exc)
        return pb.AuthenticateResponse(token=token, expires_at=expires)
