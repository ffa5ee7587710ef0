"""Role-based access on the gRPC port (``node/rbac.py``; docs/security.md#roles).

:class:`Authorize` wraps every client method's handler: it knows, per method, what the
request needs (:data:`NEEDS`: read or write on which tier and key or prefix), asks the
policy whether the caller has it, and answers ``PERMISSION_DENIED`` naming the missing
permission (outcome not-applied, recorded in the audit log) before the servicer runs.
Callers are named by their TLS certificate; the operator credential is root; a node's
certificate is the cluster. A method the table does not know is refused while the
policy is enabled (fail closed). The HTTP port asks the same question (:func:`decide`) of its
own table of routes (``node/http/access.py``): one decision, not two that could
disagree.

:class:`PolicyCache` reads the policy from the local replica of the system tier at most
every ``ttl_s``: a change takes effect on every node within that (and a Raft round).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc

from consensus.backend import SystemBackend
from consensus.durable import atomic_write
from node.api.status import OUTCOME_KEY
from node.api.wrapping import Recheck, WrappingInterceptor, checked_first
from node.audit import AuditLog
from node.authn import TokenError, Tokens, looks_like_token
from node.errors import Outcome
from node.ledger.lifecycle import PREFIX as LEDGER_PREFIX
from node.pb import tadpole_pb2 as pb
from node.peer.auth import AUTH_HEADER, grpc_failure, who
from node.rbac import (
    POLICY_KEY,
    Need,
    Policy,
    PolicyError,
    Write,
    changes_policy,
    describe_writes,
    missing,
)
from node.tls import peer_common_name

__all__ = [
    "NEEDS",
    "POLICY_UNKNOWN",
    "Authorize",
    "PolicyCache",
    "Refusal",
    "decide",
    "ledger_needs",
    "parsed_policy",
]

log = logging.getLogger(__name__)

Needs = Callable[[Any], list[Need]]


def _sys(tier: str) -> str:
    return tier or "system"


def _delete(tier: str, r: Any) -> Need:
    if r.all_keys:  # every key of the tier: a prefix need on ""
        return Need("write", tier, "", True)
    return Need("write", tier, r.key, r.prefix)


def _txn(r: Any) -> list[Need]:
    tier = _sys(r.tier)
    needs = [Need("read", tier, c.key) for c in r.compare]
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "put":
            needs.append(Need("write", tier, op.put.key))
        elif kind == "delete":
            needs.append(_delete(tier, op.delete))
        elif kind == "range":
            needs.append(Need("read", tier, op.range.prefix, True))
    return needs


_KV = "/tadpole.v1.KV/"
_TIERS = "/tadpole.v1.Tiers/"
_DOCS = "/tadpole.v1.Documents/"
NEEDS: dict[str, Needs] = {
    _KV + "Get": lambda r: [Need("read", _sys(r.tier), r.key)],
    _KV + "Put": lambda r: [Need("write", _sys(r.tier), r.key)],
    _KV + "Delete": lambda r: [_delete(_sys(r.tier), r)],
    _KV + "Range": lambda r: [Need("read", _sys(r.tier), r.prefix, True)],
    _KV + "Txn": _txn,
    _KV + "PutMany": lambda r: [Need("write", _sys(p.tier), p.key) for p in r.puts],
    _KV + "GetMany": lambda r: [Need("read", _sys(g.tier), g.key) for g in r.gets],
    _KV + "Watch": lambda r: [Need("read", _sys(r.tier), r.key, r.prefix)],
    _TIERS + "Update": lambda r: [Need("write", r.tier, r.key)],
    _TIERS + "UpdateMany": lambda r: [Need("write", u.tier, u.key) for u in r.updates],
    _TIERS + "UpdateEach": lambda r: [Need("write", u.tier, u.key) for u in r.updates],
    _TIERS + "Read": lambda r: [Need("read", r.tier, r.key)],
    _TIERS + "Scan": lambda r: [Need("read", r.tier, r.prefix, True)],
    _TIERS + "Status": lambda r: [],
    _TIERS + "LocalKeys": lambda r: [Need("read", r.tier, "", True)],
    _DOCS + "Put": lambda r: [Need("write", r.tier or "mesh", r.id)],
    _DOCS + "Get": lambda r: [Need("read", r.tier or "mesh", r.id)],
    _DOCS + "Delete": lambda r: [Need("write", r.tier or "mesh", r.id)],
    _DOCS + "Members": lambda r: [
        Need("write" if (r.add or r.remove) else "read", "mesh", r.mesh_id)
    ],
    _DOCS + "CapabilityAdd": lambda r: [Need("write", "agent", r.agent_id)],
    _DOCS + "Query": lambda r: [Need("read", "mesh", "", True), Need("read", "agent", "", True)],
}


def _writes(method: str, r: Any, failure: bool = False) -> list[Write]:
    """The system-tier writes of a KV write ``r``: ``(key, value, prefix)``, value None
    for a delete (a transaction's: those of its success branch, or of its failure
    branch when ``failure``)."""
    if method == _KV + "Put":
        return [] if failure else [(r.key, r.value, False)]
    if method == _KV + "Delete":
        return [] if failure else [(r.key, None, r.prefix or r.all_keys)]
    found: list[Write] = []
    for op in r.failure if failure else r.success:
        kind = op.WhichOneof("request")
        if kind == "put":
            found.append((op.put.key, op.put.value, False))
        elif kind == "delete":
            found.append((op.delete.key, None, op.delete.prefix or op.delete.all_keys))
    return found


# The calls that may change the policy (admin actions, audited when they do).
_POLICY_WRITERS: Final = frozenset({_KV + "Put", _KV + "Delete", _KV + "Txn"})
# The lifecycle API keeps its records under one system-tier prefix: its calls need
# write (changes) or read (the rest) on all of it.
_LEDGER = "/tadpole.v1.Ledger/"
_LEDGER_READS = frozenset({"GetJob", "Pools", "ExportStatus", "Report"})


def ledger_needs(call: str) -> list[Need]:
    """What the lifecycle call ``call`` needs, on either port."""
    return [Need("read" if call in _LEDGER_READS else "write", "system", LEDGER_PREFIX, True)]


def _ledger_call(call: str) -> Needs:
    return lambda _request: ledger_needs(call)


for _method in pb.DESCRIPTOR.services_by_name["Ledger"].methods:
    NEEDS[_LEDGER + _method.name] = _ledger_call(_method.name)
# Checked elsewhere: peer calls (the cluster credential and certificates) and operator
# calls (the operator credential); the health and reflection services are open.
_EXEMPT = (
    "/tadpole.v1.Cluster/Members",  # cluster metadata: any caller the TLS layer let in
    "/tadpole.v1.Cluster/Status",
    "/tadpole.v1.Peer/",
    "/tadpole.v1.Backup/",
    "/tadpole.v1.Keys/",
    "/tadpole.v1.Audit/",
    "/tadpole.v1.Cluster/TransferLeadership",
    "/tadpole.v1.Auth/",  # the login itself: a password in, a token out (node/api/login.py)
    "/grpc.",
)


class PolicyCache:
    """The policy, kept current in the background: one linearizable read (so a node
    whose replica lags behind, or that has just restarted, starts from the leader's
    policy, not an older one), then a watch of the key from that revision on, so a
    change takes effect as soon as this node's replica applies it. The watch costs
    nothing while the policy does not change; reading every second instead kept an
    idle cluster busy with read rounds. If the read fails or the watch ends (no
    leader, history compacted), it starts over after ``interval_s`` (``retry_s`` while
    no policy is known yet). The policy is kept in ``path`` so a restarted node knows
    the last one it saw before it can reach a leader. Until it knows one (a fresh
    node with no leader yet) it is unknown (None), and client calls are answered
    UNAVAILABLE rather than served unchecked. Calls never wait for it."""

    def __init__(
        self,
        system: SystemBackend,
        path: str,
        *,
        interval_s: float = 1.0,
        retry_s: float = 0.02,
    ) -> None:
        self._system = system
        self._path = path
        self._interval_s = interval_s
        self._retry_s = retry_s
        self._policy: Policy | None = self._load()
        self._task: asyncio.Task[None] | None = None

    def _load(self) -> Policy | None:
        try:
            os.chmod(self._path, 0o600)  # one written by an older release was 0644
            with open(self._path, "rb") as f:
                return Policy.parse(f.read())
        except FileNotFoundError:
            return None
        except (OSError, PolicyError) as exc:
            log.error("%s: %s; the policy is unknown until a leader answers", self._path, exc)
            return None

    def get(self) -> Policy | None:
        return self._policy

    async def read(self) -> Policy:
        """The policy as the leader has it now (a linearizable read): what a change is
        described against. One that does not parse reads as the empty policy."""
        kv, _ = await self._system.get(POLICY_KEY, linearizable=True, timeout=2.0)
        return parsed_policy(kv.value if kv is not None else None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._refresh(), name="policy")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh(self) -> None:
        while True:
            try:
                kv, revision = await self._system.get(POLICY_KEY, linearizable=True, timeout=2.0)
                await self._install(kv.value if kv is not None else b"")
                changes = self._system.watch(POLICY_KEY, prefix=False, start_revision=revision + 1)
                async for batch in changes:
                    await self._install(batch[-1].kv.value)  # a delete carries b""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no leader (yet), compacted history, stopping
                log.debug("policy not read: %s", exc)
            await asyncio.sleep(self._retry_s if self._policy is None else self._interval_s)

    async def _install(self, raw: bytes) -> None:
        try:
            policy = Policy.parse(raw)
        except PolicyError as exc:
            # `tadpole auth` refuses a policy that does not parse; one that got in
            # anyway keeps the last good one rather than opening the door.
            log.error("%s does not parse, keeping the last policy: %s", POLICY_KEY, exc)
            return
        if policy != self._policy:
            # 0600: it holds the users' password hashes.
            await asyncio.to_thread(atomic_write, self._path, raw, 0o600)
            self._policy = policy


def parsed_policy(raw: bytes | None) -> Policy:
    """``raw`` as a policy; one that does not parse reads as the empty policy."""
    try:
        return Policy.parse(raw)
    except PolicyError:
        return Policy()


def _refusing(method: str) -> grpc.RpcMethodHandler:
    """A handler for a method of a kind this module cannot check (none in the API
    today): refused, whether roles are enabled or not, rather than left unchecked."""

    async def refuse(_request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, f"{method} cannot be checked against roles"
        )

    return grpc.unary_unary_rpc_method_handler(refuse)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call may not run: ``unknown`` (the policy is not known yet: retry) or
    ``denied`` (the caller lacks a permission; ``message`` names it)."""

    unknown: bool
    message: str


POLICY_UNKNOWN = Refusal(
    True, "the access policy is not known yet (no leader to read it from); retry"
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from: ``name`` as the audit trail shows it (a certificate's
    name, ``token/<user>``, ``operator``), ``user`` the name roles are granted to (None:
    nobody roles know), ``trusted`` root or a node of the cluster."""

    name: str | None
    user: str | None = None
    trusted: bool = False


class Identify:
    """Who a request comes from, alike for both ports, from the name of its TLS client
    certificate and its ``authorization`` header: the operator credential is root, a
    configured peer's certificate the cluster, a login token (node/authn.py) its user,
    else a ``client/<user>`` certificate that user. A token that is presented but not
    valid (expired, another cluster's) is :class:`TokenError`, never ignored."""

    def __init__(self, operator_token: str, peers: frozenset[str], tokens: Tokens | None) -> None:
        self._operator = f"Bearer {operator_token}".encode() if operator_token else b""
        self._nodes = frozenset(f"node/{p}" for p in peers)
        self._tokens = tokens

    def __call__(self, cert_name: str | None, authorization: str | None, now: float) -> Caller:
        if authorization:
            presented = authorization.encode()
            if self._operator and hmac.compare_digest(presented, self._operator):
                return Caller("operator", None, True)
            bearer = authorization.removeprefix("Bearer ")
            if looks_like_token(bearer):
                if self._tokens is None:
                    raise TokenError("this cluster issues no tokens (it has no cluster secret)")
                user = self._tokens.user(bearer, now)
                return Caller(f"token/{user}", user, False)
        if cert_name in self._nodes:
            return Caller(cert_name, None, True)
        if cert_name and cert_name.startswith("client/"):
            return Caller(cert_name, cert_name.removeprefix("client/"), False)
        return Caller(cert_name, None, False)


def decide(
    policy: Policy | None, caller: Caller, needs: list[Need] | None, what: str
) -> Refusal | None:
    """The one decision, for both ports: may ``caller`` do ``what``, which needs
    ``needs`` (None: a call that cannot be checked)? Root and the cluster's nodes are
    never checked against the roles. None means yes."""
    if (policy is not None and not policy.enabled) or caller.trusted:
        return None
    if policy is None:
        return POLICY_UNKNOWN
    who = caller.user or caller.name or "an unidentified caller"
    if needs is None:
        return Refusal(False, f"{who} may not call {what} while roles are enabled")
    if caller.user is None:
        return Refusal(
            False,
            f"{who} has no roles: present a client certificate (client/<name>) or a token "
            "(tadpole auth login)",
        )
    lacking = missing(policy, caller.user, needs)
    return None if lacking is None else Refusal(False, f"{who} lacks {lacking}")


class Authorize(WrappingInterceptor):
    def __init__(
        self,
        policy: PolicyCache,
        identify: Identify,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._policy = policy
        self._identify = identify
        self._audit = audit
        self._clock = clock

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if method.startswith(_EXEMPT):
            return handler
        needs = NEEDS.get(method)
        streaming = handler.unary_stream is not None
        if method in _POLICY_WRITERS and needs is not None and self._audit is not None:
            handler = self._policy_audited(handler, method, needs)

        async def check(request: Any, context: grpc.aio.ServicerContext) -> Recheck | None:
            await self._check(context, method, needs, request)
            return self._rechecker(context, method, needs, request) if streaming else None

        wrapped = checked_first(handler, check)
        if wrapped is not None:
            return wrapped
        return _refusing(method) if needs is None else handler

    async def _check(
        self, context: grpc.aio.ServicerContext, method: str, needs: Needs | None, request: Any
    ) -> None:
        policy = self._policy.get()
        if policy is not None and not policy.enabled:
            return
        name = peer_common_name(context)
        try:
            caller = self._identify(name, authorization(context), self._clock())
        except TokenError as exc:
            await self._refuse(context, name, method, grpc.StatusCode.UNAUTHENTICATED, str(exc))
            return
        refusal = decide(policy, caller, None if needs is None else needs(request), method)
        if refusal is None:
            return
        if refusal.unknown:
            context.set_trailing_metadata(((OUTCOME_KEY, Outcome.NOT_APPLIED.value),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, refusal.message)
            return
        code = grpc.StatusCode.PERMISSION_DENIED
        await self._refuse(context, caller.name, method, code, refusal.message)

    def _policy_audited(
        self, handler: grpc.RpcMethodHandler, method: str, needs: Needs
    ) -> grpc.RpcMethodHandler:
        """``handler``, which runs once the call is allowed, with the calls that change
        the policy audited as admin actions (:meth:`AuditLog.action`: who, what the
        change does, how it ended) and a policy document that does not parse refused
        (INVALID_ARGUMENT) before it is stored."""
        inner, audit = handler.unary_unary, self._audit
        assert inner is not None and audit is not None

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if _sys(request.tier) != "system" or not changes_policy(needs(request)):
                return await inner(request, context)

            def refuse(code: grpc.StatusCode, message: str) -> Any:
                context.set_trailing_metadata(((OUTCOME_KEY, Outcome.NOT_APPLIED.value),))
                return context.abort(code, message)

            try:
                old = await self._policy.read()
            except Exception as exc:  # no leader now: nothing is applied unaudited
                await refuse(grpc.StatusCode.UNAVAILABLE, f"the policy cannot be read: {exc}")
            try:  # each branch a transaction may take, described and checked up front
                applied = describe_writes(_writes(method, request), old)
                otherwise = describe_writes(_writes(method, request, failure=True), old)
            except PolicyError as exc:
                await refuse(grpc.StatusCode.INVALID_ARGUMENT, f"{POLICY_KEY}: {exc}")
            detail = applied
            if otherwise:
                detail = f"if the compare holds: {applied or 'nothing'}; else: {otherwise}"
            async with audit.action(
                self._caller_name(context),
                context.peer(),
                method,
                detail,
                failed=grpc_failure(context),
            ) as ending:
                response = await inner(request, context)
                if method == _KV + "Txn" and response.succeeded:  # the branch it took
                    ending.detail = applied or "the compare held: the policy is unchanged"
                elif method == _KV + "Txn":
                    ending.detail = f"the compare failed: {otherwise or 'the policy is unchanged'}"
                    ending.result = "ok" if otherwise else "not-applied"
                return response

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _caller_name(self, context: grpc.aio.ServicerContext) -> str:
        name = peer_common_name(context)
        try:
            caller = self._identify(name, authorization(context), self._clock())
        except TokenError:  # roles are off, so the token was not looked at
            return who(name, None)
        return who(name, caller.name if caller.name != name else None)

    def _rechecker(
        self, context: grpc.aio.ServicerContext, method: str, needs: Needs | None, request: Any
    ) -> Recheck:
        """What a stream (``Watch``) runs before each item it sends: once the policy has
        changed since the last look, the caller must still hold what the call needs, or
        the stream ends with PERMISSION_DENIED. The caller is who it was when the stream
        opened (a token is judged at that time: a watch does not end because the token
        that opened it expired; a role taken away ends it at its next item)."""
        name, bearer, opened = peer_common_name(context), authorization(context), self._clock()
        seen = [self._policy.get()]

        async def recheck() -> None:
            policy = self._policy.get()
            if policy is seen[0]:
                return
            seen[0] = policy
            if policy is None or not policy.enabled:
                return
            try:
                caller = self._identify(name, bearer, opened)
            except TokenError as exc:
                code = grpc.StatusCode.UNAUTHENTICATED
                await self._refuse(context, name, method, code, str(exc))
                return
            refusal = decide(policy, caller, None if needs is None else needs(request), method)
            if refusal is not None:
                message = f"{refusal.message} (the roles changed while the stream was open)"
                code = grpc.StatusCode.PERMISSION_DENIED
                await self._refuse(context, caller.name, method, code, message)

        return recheck

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext,
        who: str | None,
        method: str,
        code: grpc.StatusCode,
        message: str,
    ) -> None:
        if self._audit is not None:
            self._audit.record(who or "anonymous", context.peer(), method, "denied", message)
        context.set_trailing_metadata(((OUTCOME_KEY, Outcome.NOT_APPLIED.value),))
        await context.abort(code, message)


def authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The call's ``authorization`` metadata, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == AUTH_HEADER:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None
