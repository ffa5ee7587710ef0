"""Roles on the HTTP port: the same decision as the gRPC port's (:func:`node.api.authz.decide`)
for every route of the state API, the change streams, the ledger, GraphQL and the
WebSocket (docs/security.md#roles).

Who calls (:class:`node.api.authz.Identify`, as on the gRPC port): root with the
operator credential as ``Authorization: Bearer <token>``, the user a login token names
(``Authorization: Bearer <jwt>``, node/authn.py; one that names nobody now is ``401``),
the cluster for a configured peer's certificate (``node/<id>``), else the user of a
``client/<user>`` certificate.

What a request needs is known from its route (:data:`ROUTE_NEEDS`, by method and path
template) before its handler runs and before its body is read. Three kinds of route
know it only from what they read: a system-tier merge patch (a key per member of the
body), a WebSocket (a key or prefix per ``subscribe`` message) and GraphQL (per field
resolved). Their handlers ask :class:`Access` (``request[ACCESS]``) once they know; an
unidentified caller is refused before they read a byte. A route in neither table is
refused while roles are enabled (fail closed); :data:`OPEN` routes carry no tier's data.
A refusal is ``403`` naming the missing permission (outcome not-applied, recorded in
the audit log) or ``503`` while the policy is not known yet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from node.api.authz import Caller, Identify, PolicyCache, decide, ledger_needs
from node.audit import AuditLog, Ending
from node.authn import TokenError
from node.errors import PermissionDenied, Unauthenticated, Unavailable
from node.http.ledger import LEDGER_ROUTES
from node.http.problems import Problem, problem_for
from node.peer.auth import who
from node.rbac import Need, Policy, PolicyError, Write, describe_writes

__all__ = [
    "ACCESS",
    "IN_HANDLER",
    "OPEN",
    "ROUTE_NEEDS",
    "Access",
    "Guard",
    "caller_address",
    "common_name",
    "route_of",
]

ACCESS: Final = "tadpole.access"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RouteNeeds = Callable[[web.Request], list[Need]]


def _doc(perm: str, tier: str, param: str) -> RouteNeeds:
    return lambda r: [Need(perm, tier, r.match_info[param])]


def _query_prefix(perm: str, tier: str | None = None, *, keyed: bool = False) -> RouteNeeds:
    """``perm`` on the keys under ``?prefix=`` of ``tier`` (None: the ``{tier}`` of the
    path). ``keyed``: the route also takes one ``?key=`` instead (its handler refuses
    both at once), and then needs it alone. Read exactly as the handler reads the
    query: a parameter the handler ignores must not decide what is checked (a
    ``?key=`` beside the ``?prefix=`` a handler serves would read the prefix's keys
    with the key's permission)."""

    def needs(r: web.Request) -> list[Need]:
        on = tier or r.match_info["tier"]
        key = r.query.get("key") if keyed else None
        if key is not None:
            return [Need(perm, on, key)]
        return [Need(perm, on, r.query.get("prefix", ""), True)]

    return needs


def _tier_key(perm: str) -> RouteNeeds:
    return lambda r: [Need(perm, r.match_info["tier"], r.match_info["key"])]


_EVERY_MESH: Final = [Need("read", "mesh", "", True)]

ROUTE_NEEDS: dict[tuple[str, str], RouteNeeds] = {
    ("GET", "/state/agent/{agent_id}"): _doc("read", "agent", "agent_id"),
    ("PUT", "/state/agent/{agent_id}"): _doc("write", "agent", "agent_id"),
    ("PATCH", "/state/agent/{agent_id}"): _doc("write", "agent", "agent_id"),
    ("GET", "/state/mesh/{mesh_id}"): _doc("read", "mesh", "mesh_id"),
    ("PUT", "/state/mesh/{mesh_id}"): _doc("write", "mesh", "mesh_id"),
    ("DELETE", "/state/mesh/{mesh_id}"): _doc("write", "mesh", "mesh_id"),
    ("GET", "/state/system"): _query_prefix("read", "system"),
    ("GET", "/api/v1/tiers/{tier}"): _query_prefix("read"),
    ("GET", "/api/v1/tiers/{tier}/{key}"): _tier_key("read"),
    ("POST", "/api/v1/tiers/{tier}/{key}"): _tier_key("write"),
    # The agent -> meshes index and the meshes it names: any mesh may be read.
    ("GET", "/api/v1/graph/meshes-of/{agent_id}"): lambda r: _EVERY_MESH,
    ("GET", "/api/v1/graph/neighbours-of/{agent_id}"): lambda r: _EVERY_MESH,
    ("GET", "/api/v1/graph/members-of/{mesh_id}"): _doc("read", "mesh", "mesh_id"),
    ("GET", "/api/v1/changes/{tier}"): _query_prefix("read"),
    ("GET", "/api/v1/changes/{tier}/watch"): _query_prefix("read"),
    ("GET", "/api/v1/events"): _query_prefix("read", "system", keyed=True),
    ("GET", "/api/v1/watch"): _query_prefix("read", "system", keyed=True),
}


def _ledger_call(call: str) -> RouteNeeds:
    return lambda _request: ledger_needs(call)


for _route in LEDGER_ROUTES:
    ROUTE_NEEDS[(_route.method.upper(), _route.path)] = _ledger_call(_route.call)

# Routes whose handler asks once it has read what the request names.
IN_HANDLER: Final = frozenset(
    {
        ("PATCH", "/state/system"),
        ("GET", "/api/v1/ws"),
        ("GET", "/graphql"),
        ("POST", "/graphql"),
        ("GET", "/api/v1/query"),
        ("POST", "/api/v1/query"),
    }
)
# No tier's data: probes, metrics, the node's own view of the cluster (as gRPC's
# Cluster/Members and Status), the API's description and the console's static files.
OPEN: Final = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/members"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/auth/token"),  # the login: a password in, a token out
        ("GET", "/ui"),
        ("GET", "/ui/{name}"),
    }
)


def common_name(cert: Any) -> str | None:
    """The subject common name of a certificate as ``ssl`` decodes it (None: none)."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@dataclass(frozen=True, slots=True)
class Access:
    """One request's caller, and the checks its handler asks when it knows more."""

    guard: Guard
    request: web.Request
    caller: Caller

    def require(self, needs: list[Need], what: str = "") -> None:
        """Return when the caller holds ``needs``; else PermissionDenied naming the
        missing one (Unavailable while the policy is not known)."""
        self.guard.check(self, needs, what or route_of(self.request))

    def watching(self, needs: list[Need], what: str = "") -> Callable[[], None]:
        """:meth:`require` ``needs`` now, for a stream about to start (SSE, one
        WebSocket subscription, one GraphQL subscription), and answer the check that
        stream runs before each item it sends: once the policy has changed since that
        stream last looked, require them again, so a role taken away ends the stream
        at its next item (PermissionDenied); cheap while nothing changed. Each stream
        has a check of its own: subscriptions sharing a socket must not share what
        they have seen."""
        seen = [self.guard.policy()]
        self.require(needs, what)  # no await between: the same policy as `seen`

        def recheck() -> None:
            policy = self.guard.policy()
            if policy is seen[0]:
                return
            seen[0] = policy
            if policy is not None and policy.enabled:
                self.require(needs, what)

        return recheck

    def changing(self, writes: Sequence[Write], old: Policy) -> AbstractAsyncContextManager[Ending]:
        """Around a write of ``writes`` (``(key, value, prefix)``, value None for a
        delete): when they change the access policy ``old``, an admin action, audited as
        on the gRPC port (who, what the change does, how it ended); a policy document that
        does not parse is a 400 before anything is written."""
        try:
            detail = describe_writes(writes, old)
        except PolicyError as exc:
            raise Problem(400, str(exc)) from None
        audit = self.guard.audit
        if not detail or audit is None:
            return contextlib.nullcontext(Ending())
        name, certificate = self.caller.name, _certificate_name(self.request)
        return audit.action(
            who(certificate, name if name != certificate else None),
            caller_address(self.request),
            route_of(self.request),
            detail,
            failed=_failure,
        )


def _failure(exc: BaseException) -> tuple[str, str]:
    problem = problem_for(exc)
    return str(problem.status), problem.detail


def _certificate_name(request: web.Request) -> str | None:
    transport = request.transport
    return common_name(transport.get_extra_info("peercert") if transport else None)


def caller_address(request: web.Request) -> str:
    """The caller's address as gRPC names a peer (``ipv4:10.0.0.7:51234``), so the
    audit trail reads alike for both ports."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport else None
    if not peer:
        return request.remote or ""
    host, port = peer[0], peer[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def route_of(request: web.Request) -> str:
    """``METHOD /route/{template}`` of a request, as the audit trail names it (never the
    path as sent, which the caller chooses: no route names it ``(no route)``)."""
    resource = request.match_info.route.resource
    return f"{request.method[:10]} {resource.canonical if resource is not None else '(no route)'}"


class Guard:
    def __init__(
        self,
        policy: PolicyCache,
        identify: Identify,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._identify = identify
        self.audit = audit
        self._clock = clock

    def policy(self) -> Any:
        return self._policy.get()

    def access(self, request: web.Request) -> Access:
        """The request's caller; Unauthenticated (401) for a token that names nobody."""
        name = _certificate_name(request)
        try:
            caller = self._identify(name, request.headers.get("Authorization"), self._clock())
        except TokenError as exc:
            self._record(request, name, route_of(request), str(exc))
            raise Unauthenticated(str(exc)) from None
        return Access(self, request, caller)

    def _lenient(self, request: web.Request) -> Caller:
        """The caller while roles are disabled: a token that names nobody is neither
        refused nor audited (identities are not looked at); it names nobody."""
        name = _certificate_name(request)
        try:
            return self._identify(name, request.headers.get("Authorization"), self._clock())
        except TokenError:
            return Caller(name)

    def check(self, access: Access, needs: list[Need] | None, what: str) -> None:
        refusal = decide(self._policy.get(), access.caller, needs, what)
        if refusal is None:
            return
        if refusal.unknown:
            raise Unavailable(refusal.message)
        self._record(access.request, access.caller.name, what, refusal.message)
        raise PermissionDenied(refusal.message)

    def _record(self, request: web.Request, who: str | None, what: str, why: str) -> None:
        if self.audit is not None:
            self.audit.record(who or "anonymous", caller_address(request), what, "denied", why)

    def middleware(self) -> Any:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            resource = request.match_info.route.resource
            if resource is None:  # no such route: the 404/405 answer says so
                return await handler(request)
            method = "GET" if request.method == "HEAD" else request.method
            route = (method, resource.canonical)
            if route in OPEN:
                return await handler(request)
            policy = self._policy.get()
            if policy is not None and not policy.enabled:
                # Not checked now; a stream checks again if roles are enabled later.
                request[ACCESS] = Access(self, request, self._lenient(request))
                return await handler(request)
            access = self.access(request)
            request[ACCESS] = access
            needs = ROUTE_NEEDS.get(route)
            if route in IN_HANDLER:
                # Nothing of the request is read for a caller no role can name.
                if not (access.caller.trusted or access.caller.user):
                    self.check(access, [], f"{method} {resource.canonical}")
                return await handler(request)
            self.check(access, None if needs is None else needs(request), f"{method} {route[1]}")
            return await handler(request)

        return guard


def access_of(request: web.Request) -> Access | None:
    """The request's :class:`Access` (None on an app built without roles: tests)."""
    found = request.get(ACCESS)
    return found if isinstance(found, Access) else None
