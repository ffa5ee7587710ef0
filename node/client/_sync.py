# GENERATED FILE, DO NOT EDIT. Source: node/client/_async.py.
# Regenerate with `python -m node.client.unasync` (make client).
"""The blocking client: :class:`Client` and :class:`Watch`.

Generated from :mod:`node.client._async` by ``python -m node.client.unasync``;
edit that file and regenerate. Behaviour (routing, deadlines, retries, threads) is described in
:mod:`node.client`.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from node.client import _sync_io as backend
from node.client import coalesce
from node.client import messages as wire
from node.client.attempts import Attempts, RetryPolicy, Router
from node.client.cursor import WatchCursor
from node.client.errors import (
    LEADER_ADDRESS_KEY,
    LEADER_ID_KEY,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    ReplicationIncomplete,
    TadpoleError,
    Unavailable,
    from_rpc_error,
    rpc_details,
    trailing_metadata,
)
from node.client.types import (
    DEFAULT_ENDPOINTS,
    Compare,
    CounterAdd,
    DocResult,
    EndpointStatus,
    EndpointTierStatus,
    GraphQueryKind,
    GraphQueryResult,
    KeyValue,
    LogAppend,
    MapRemove,
    MapSet,
    Member,
    NodeStatus,
    PutResult,
    RangeResult,
    RegisterSet,
    SetAdd,
    SetRemove,
    TierBatchOutcome,
    TierConsistency,
    TierNodeStatus,
    TierOp,
    TierReadResult,
    TierScanResult,
    TierUpdate,
    TierUpdateResult,
    TxnOp,
    TxnResult,
    WatchEvent,
    check_timeout,
    parse_endpoints,
)

__all__ = ["Client", "Watch"]


def _carries_request_ids(request: Any) -> bool:
    """Whether resending ``request`` cannot apply anything twice."""
    if getattr(request, "request_id", ""):
        return True
    updates: Any = getattr(request, "updates", ())
    return bool(updates) and all(u.request_id for u in updates)


def _may_still_land(error: TadpoleError) -> bool:
    """Whether a write that ended in ``error`` may be applied later (its outcome is
    unknown; a try known applied is already durable, so it cannot land later)."""
    return isinstance(error, OutcomeUnknown) and not isinstance(error, ReplicationIncomplete)


log = logging.getLogger(__name__)

# (service, single method) -> (its batch method, the batch's wire form)
_COALESCED = {
    ("kv", "Put"): ("PutMany", coalesce.PUTS),
    ("kv", "Get"): ("GetMany", coalesce.GETS),
    ("tiers", "Update"): ("UpdateEach", coalesce.TIER_UPDATES),
}


class Client:
    """A client of a Tadpole State cluster; see :mod:`node.client` for routing,
    deadlines, retries and threads. Every method that talks to the cluster is a
    coroutine in the asyncio flavour and blocks in the other.

    ``endpoints``: ``"host:port"`` strings (or one comma-separated string); default
    :data:`~node.client.DEFAULT_ENDPOINTS`. ``timeout``: default per-call deadline in
    seconds, overridable per call. ``prefer_leader``: route to the leader when known.
    ``rng``: seeds the back-off jitter (tests pass a seeded ``random.Random``).
    ``token``: a bearer credential sent with every call; operator calls
    (:meth:`transfer_leadership`) need the cluster's operator token.
    ``credentials``: TLS to the nodes (``grpc.ssl_channel_credentials(ca, key,
    chain)``; the chain is the client certificate a cluster with ``client_cert_auth``
    asks for); None: plaintext.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str | None = None,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        prefer_leader: bool = True,
        rng: random.Random | None = None,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if endpoints is None:
            endpoints = DEFAULT_ENDPOINTS
        elif isinstance(endpoints, str):
            endpoints = parse_endpoints(endpoints)
        else:
            endpoints = parse_endpoints(",".join(endpoints))
        self.timeout = check_timeout(timeout)
        self.retry = retry or RetryPolicy()
        self._router = Router(
            endpoints, prefer_leader=prefer_leader, cooldown_s=self.retry.cooldown_s
        )
        self._rng = rng or random.Random()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._credentials = credentials
        # Guards _channels, _closed, _placement_asked and _single_updates; never held
        # across a suspension point, so the asyncio flavour never contends for it and
        # the blocking one is thread-safe.
        self._lock = threading.Lock()
        self._channels: dict[str, Any] = {}
        self._coalescers: dict[tuple[str, str, str], backend.Coalescer] = {}
        self._closed = False
        self._placement_asked = float("-inf")  # when Members was last asked for routing
        self._single_updates = 0  # tier_update calls so far

    # -- plumbing

    @property
    def endpoints(self) -> list[str]:
        """Configured endpoints followed by member addresses learned since."""
        return self._router.endpoints

    def _method(self, endpoint: str, service: wire.Service, method: str) -> Any:
        """The stub method ``service.method`` on ``endpoint``'s channel (opened once)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("client is closed")
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = backend.open_channel(endpoint, self._credentials)
                self._channels[endpoint] = channel
        return getattr(wire.STUBS[service](channel), method)

    def _sender(self, endpoint: str, service: wire.Service, method: str, request: Any) -> Any:
        """What sends ``request`` to ``endpoint``: the stub method, or for a put, get or
        counter update that may travel with others the endpoint's
        :class:`~node.client._sync_io.Coalescer` of that kind."""
        kind = (service, method)
        if kind not in _COALESCED or not wire.coalescable(request):
            return self._method(endpoint, service, method)
        with self._lock:
            if self._closed:
                raise RuntimeError("client is closed")
            coalescer = self._coalescers.get((endpoint, *kind))
        if coalescer is None:
            many, shape = _COALESCED[kind]
            coalescer = backend.Coalescer(
                self._method(endpoint, service, method),
                self._method(endpoint, service, many),
                shape,
            )
            with self._lock:
                coalescer = self._coalescers.setdefault((endpoint, *kind), coalescer)
        return coalescer

    def _call(
        self,
        service: wire.Service,
        method: str,
        request: Any,
        *,
        write: bool,
        timeout: float | None,
        only: str | None = None,
        first: str | None = None,
    ) -> Any:
        """One unary call with routing, retries and the deadline (rules in
        :class:`~node.client.attempts.Attempts`; ``only`` and ``first`` there); raises
        the TadpoleError that ends it."""
        attempts = Attempts(
            self._router,
            self.retry,
            self._rng,
            write=write,
            timeout_s=check_timeout(timeout) if timeout is not None else self.timeout,
            now=time.monotonic(),
            only=only,
            first=first,
            idempotent=write and _carries_request_ids(request),
            tiers=service in wire.CRDT_SERVICES,
        )
        fenced = write and service in wire.CRDT_SERVICES
        due_ns = 0  # the last fenced try's deadline (wall clock)
        while True:
            endpoint = attempts.endpoint
            timeout_s = attempts.attempt_timeout(time.monotonic())
            metadata = self._metadata
            if fenced:  # the owner applies it by this try's deadline or not at all
                due_ns = wire.write_deadline_ns(timeout_s)
                metadata = (*(metadata or ()), (wire.DEADLINE_KEY, str(due_ns)))
            try:
                resp = self._sender(endpoint, service, method, request)(
                    request, timeout=timeout_s, metadata=metadata
                )
            except grpc.RpcError as exc:
                outcome = attempts.failed(exc, time.monotonic())
                if isinstance(outcome, TadpoleError):
                    if due_ns and _may_still_land(outcome):
                        # Outlast the fence: once this returns, a try still in the
                        # network can no longer be applied behind the caller's next write.
                        wait_s = (due_ns + wire.DEADLINE_GRACE_NS - time.time_ns()) / 1e9
                        if wait_s > 0:
                            backend.sleep(wait_s)
                    raise outcome from exc
                if outcome > 0:
                    backend.sleep(outcome)
                continue
            member_id, leader_id = wire.answered_by(resp)
            if self._router.succeeded(endpoint, member_id, leader_id, time.monotonic()):
                self._discover(endpoint, attempts.remaining(time.monotonic()))
            return resp

    def _discover(self, endpoint: str, remaining_s: float) -> None:
        """Best effort: learn member addresses (and so the leader's) from one endpoint."""
        try:
            resp = self._method(endpoint, "cluster", "Members")(
                wire.members_request(), timeout=max(min(remaining_s, 1.0), 0.05)
            )
        except grpc.RpcError as exc:
            log.debug("leader discovery via %s failed: %s", endpoint, rpc_details(exc))
            return
        self._router.learn_members(wire.members(resp), time.monotonic())

    def _ask_each(
        self, service: wire.Service, method: str, request: Any, timeout: float | None
    ) -> list[tuple[str, Any]]:
        """Every known endpoint asked at once, once each (no retries): (endpoint, its
        response or the ``grpc.RpcError`` it failed with)."""
        timeout_s = check_timeout(timeout) if timeout is not None else self.timeout
        endpoints = self.endpoints
        methods = [self._method(e, service, method) for e in endpoints]
        answers = backend.ask_each(methods, request, timeout_s)
        return list(zip(endpoints, answers, strict=True))

    # -- KV

    def get(
        self, key: str, *, serializable: bool = False, timeout: float | None = None
    ) -> KeyValue | None:
        """The key's current value, or ``None`` if absent. Linearizable unless
        ``serializable`` (then the serving node's possibly stale local state)."""
        req = wire.get_request(key, serializable)
        return wire.get_result(self._call("kv", "Get", req, write=False, timeout=timeout))

    def put(
        self, key: str, value: bytes | str, *, prev_kv: bool = False, timeout: float | None = None
    ) -> PutResult:
        """Store ``value`` (a str is UTF-8 encoded). Raises OutcomeUnknown if the write
        may or may not have been applied."""
        req = wire.put_request(key, value, prev_kv)
        return wire.put_result(self._call("kv", "Put", req, write=True, timeout=timeout))

    def delete(self, key: str, *, prefix: bool = False, timeout: float | None = None) -> int:
        """Delete the key (every key starting with it when ``prefix``); returns how many
        keys were deleted. An empty key or prefix is refused: use :meth:`delete_all`."""
        req = wire.delete_request(key, prefix)
        resp = self._call("kv", "Delete", req, write=True, timeout=timeout)
        return wire.delete_result(resp).deleted

    def delete_all(self, *, timeout: float | None = None) -> int:
        """Delete every key of the system tier (the explicit form; no empty prefix does
        this); returns how many keys were deleted."""
        req = wire.delete_all_request()
        resp = self._call("kv", "Delete", req, write=True, timeout=timeout)
        return wire.delete_result(resp).deleted

    def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        start_after: str = "",
        serializable: bool = False,
        timeout: float | None = None,
    ) -> RangeResult:
        """Keys starting with ``prefix`` in key order, at most ``limit`` (0 = all), only
        keys strictly after ``start_after``."""
        req = wire.range_request(prefix, limit, start_after, serializable)
        resp = self._call("kv", "Range", req, write=False, timeout=timeout)
        return wire.range_result(resp)

    def scan(
        self,
        prefix: str,
        page_size: int = 500,
        *,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> Iterator[KeyValue]:
        """Every key under ``prefix``, fetched ``page_size`` at a time. Each page is read
        at its own revision: the scan as a whole is not a snapshot."""
        if page_size < 1:
            raise InvalidArgument(f"page_size must be >= 1, got {page_size}")
        after = ""
        while True:
            page = self.range(
                prefix,
                limit=page_size,
                start_after=after,
                serializable=serializable,
                timeout=timeout,
            )
            yield from page.kvs
            if not page.more or not page.kvs:
                return
            after = page.kvs[-1].key

    def txn(
        self,
        compares: Iterable[Compare],
        success: Iterable[TxnOp] = (),
        failure: Iterable[TxnOp] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """If every compare holds run ``success``, else ``failure``, atomically at one
        revision. Never retried once its outcome is unknown (OutcomeUnknown)."""
        req = wire.txn_request(compares, success, failure)
        return wire.txn_result(self._call("kv", "Txn", req, write=True, timeout=timeout))

    def cas(
        self,
        key: str,
        *,
        new_value: bytes | str,
        expected_mod_revision: int | None = None,
        expected_value: bytes | str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Compare-and-swap: put ``new_value`` iff the key's mod revision (0 = absent) or
        value equals the expectation; returns whether it did."""
        req = wire.cas_request(key, expected_mod_revision, expected_value, new_value)
        resp = self._call("kv", "Txn", req, write=True, timeout=timeout)
        return bool(resp.succeeded)

    def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0) -> Watch:
        """Changes to ``key`` (every key under it when ``prefix``) from ``start_revision``
        (0 = from the next change), as an iterator; see :class:`Watch`."""
        return Watch(self, WatchCursor(key, prefix, start_revision, self.retry))

    # -- Cluster

    def members(self, *, timeout: float | None = None) -> list[Member]:
        """Every member with its Raft view, from the first endpoint that answers."""
        req = wire.members_request()
        resp = self._call("cluster", "Members", req, write=False, timeout=timeout)
        result = wire.members(resp)
        self._router.learn_members(result, time.monotonic())
        return result

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> NodeStatus:
        """One node's status: ``endpoint``'s (retried there only) or any that answers."""
        req = wire.status_request()
        resp = self._call("cluster", "Status", req, write=False, timeout=timeout, only=endpoint)
        return wire.status(resp)

    def status_all(self, *, timeout: float | None = None) -> list[EndpointStatus]:
        """Every known endpoint's status, asked concurrently, once each (no retries)."""
        answers = self._ask_each("cluster", "Status", wire.status_request(), timeout)
        return [
            EndpointStatus(e, None, from_rpc_error(a))
            if isinstance(a, grpc.RpcError)
            else EndpointStatus(e, wire.status(a), None)
            for e, a in answers
        ]

    def transfer_leadership(self, target_id: str = "", *, timeout: float | None = None) -> str:
        """Ask the leader to hand over to ``target_id`` ("" = the most caught-up
        follower); returns the leader after the transfer. NotFound for an unknown id,
        FailedPrecondition when the target cannot take over."""
        req = wire.transfer_leadership_request(target_id)
        resp = self._call("cluster", "TransferLeadership", req, write=True, timeout=timeout)
        return str(resp.leader_id)

    # -- the lifecycle API and the ledger (docs/ledger.md)

    def ledger(
        self,
        call: str,
        args: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One call of the ``Ledger`` service (``AssignJob``, ``Spawn``, ``Report`` ...;
        docs/ledger.md lists them and their arguments) with ``args`` as a JSON object;
        its JSON answer. Changes carry a request id (a fresh one unless given), so a
        resend after a lost answer applies once. Raises InvalidArgument (bad
        arguments), NotFound, FailedPrecondition (a transition or allocation the state
        does not allow; the message names the state)."""
        req = wire.ledger_request(args, request_id)
        write = call not in wire.LEDGER_READS
        resp = self._call("ledger", call, req, write=write, timeout=timeout)
        return wire.ledger_result(resp)

    def authenticate(
        self, user: str, password: str, *, timeout: float | None = None
    ) -> tuple[str, float]:
        """Log in with a password (over TLS): a short-lived token naming ``user`` and
        when it expires (unix seconds). Pass it as ``token=`` to a client; roles then
        treat its calls as ``user``'s. Raises Unauthenticated for a wrong user or
        password (the same answer for either)."""
        if self._credentials is None:  # never send a password in clear
            raise InvalidArgument("a password login needs TLS: give the client credentials")
        req = wire.auth_request(user, password)
        resp = self._call("auth", "Authenticate", req, write=False, timeout=timeout)
        return str(resp.token), float(resp.expires_at)

    # -- CRDT tiers

    def tier_update(
        self,
        tier: str,
        key: str,
        op: TierOp,
        *,
        consistency: TierConsistency | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> TierUpdateResult:
        """Apply one operation to the CRDT at ``tier``/``key`` (the first update fixes
        the key's type): :class:`~node.client.CounterAdd` (PN-counter),
        :class:`~node.client.SetAdd` / :class:`~node.client.SetRemove` (OR-set, add
        wins), :class:`~node.client.RegisterSet` (LWW register; any JSON value, ``None``
        too), :class:`~node.client.LogAppend` (event log; a JSON payload, deduplicated
        by its entry id), :class:`~node.client.MapSet` / :class:`~node.client.MapRemove`
        (LWW map). The shortcuts below (``counter_add``, ...) build the op for you. It
        goes to the key's first owner first, as ``tier_update_many`` routes, once the
        client knows the live members (it asks after ``PLACEMENT_AFTER_UPDATES`` single
        updates, so a one-off update costs no extra call).

        Without a ``request_id`` not idempotent: re-sent only when nothing was applied.
        With one, re-sent like a batched update (the key's first owner applies an id at
        most once, for an hour). Raises ReplicationIncomplete (applied on fewer replicas
        than the write quorum; do not resend), OutcomeUnknown (may or may not have been
        applied), InvalidArgument."""
        req = wire.tier_update_request(tier, key, op, consistency)
        if request_id:
            req.request_id = wire.check_request_id(request_id)
        with self._lock:
            self._single_updates += 1
            learn = self._single_updates > self.PLACEMENT_AFTER_UPDATES
        if learn:  # a client that keeps updating learns where keys live; a one-off does not
            started = time.monotonic()
            self._learn_placement(timeout)
            timeout = self._left(timeout, started)
        (owner,) = self._router.first_owners([(tier, key)])
        resp = self._call("tiers", "Update", req, write=True, timeout=timeout, first=owner)
        return wire.tier_update_result(resp)

    def tier_update_many(
        self, updates: Sequence[TierUpdate], *, timeout: float | None = None
    ) -> list[TierBatchOutcome]:
        """Apply many updates: the updates of one key in order, coalesced into one
        durable write and one replication per key. Each update is sent to its key's
        first owner -- the member that coordinates it, placed as the nodes place it over
        the live members a ``Members`` call named (asked again after
        ``PLACEMENT_REFRESH_S``) -- in one call per ``BATCH`` of a member's updates; the
        members are called at once. A node sent a key it does not coordinate (a stale
        view, no view yet) forwards it, at the cost of a hop.

        Each update carries a request id (one is made up where it has none), so a call
        is resent when its outcome is unknown and nothing applies twice -- as long as
        the key's first owner is the same live member (it remembers the ids for an
        hour). Returns one outcome per update, in order; an update that does not fit
        its key fails alone. Raises InvalidArgument (nothing sent) for an update the
        client can tell is malformed, and, when the batch went in one call, that call's
        error if it failed. With several calls (several owners, or more than ``BATCH``
        updates for one) each update's outcome says what became of it instead: its
        call's error when that call failed as a whole -- after its retries, or refused:
        a node checks every update of a call before applying any, and names the update
        by its place in that call -- and :class:`~node.client.errors.Unavailable` ("not
        sent") for the updates of the same member after a failed call, while the other
        calls' updates keep their own outcomes."""
        requests, ids = wire.tier_update_requests(updates)
        if not requests:
            return []
        started = time.monotonic()
        self._learn_placement(timeout)
        timeout = self._left(timeout, started)
        routes: dict[str | None, list[int]] = {}
        owners = self._router.first_owners((r.tier, r.key) for r in requests)
        for i, owner in enumerate(owners):
            routes.setdefault(owner, []).append(i)
        plan = list(routes.items())
        calls = [
            functools.partial(
                self._update_at, owner, [requests[i] for i in idx], [ids[i] for i in idx], timeout
            )
            for owner, idx in plan
        ]
        answers = backend.each(calls)
        outcomes: list[TierBatchOutcome] = [TierBatchOutcome("")] * len(requests)
        failed: TadpoleError | None = None
        for (_, idx), answer in zip(plan, answers, strict=True):
            if isinstance(answer, Exception):
                raise answer  # not a failed call (those are outcomes): a bug
            got, error = answer
            failed = failed or error
            for i, outcome in zip(idx, got, strict=True):
                outcomes[i] = outcome
        if failed is not None and len(plan) == 1 and len(requests) <= self.BATCH:
            raise failed  # one call, and it failed: as a single call would
        return outcomes

    def _update_at(
        self,
        owner: str | None,
        requests: list[Any],
        ids: list[str],
        timeout: float | None,
    ) -> tuple[list[TierBatchOutcome], TadpoleError | None]:
        """One member's updates (``owner``: its address; None: any endpoint), ``BATCH``
        per call and in order, so a key's updates stay in order: their outcomes, and
        the error of the call that failed, if one did (the later updates are not sent:
        a key's updates must not overtake one another)."""
        outcomes: list[TierBatchOutcome] = []
        for start in range(0, len(requests), self.BATCH):
            chunk = ids[start : start + self.BATCH]
            req = wire.tier_update_many_request(requests[start : start + self.BATCH])
            try:
                resp = self._call(
                    "tiers", "UpdateMany", req, write=True, timeout=timeout, first=owner
                )
                outcomes += wire.tier_update_many_result(resp, chunk)
            except TadpoleError as exc:
                unsent = Unavailable(
                    "not sent: an earlier call of this batch to the same member failed "
                    f"({type(exc).__name__}: {exc}); nothing of these was applied"
                )
                outcomes += [TierBatchOutcome(rid, error=exc) for rid in chunk]
                outcomes += [
                    TierBatchOutcome(rid, error=unsent) for rid in ids[start + len(chunk) :]
                ]
                return outcomes, exc
        return outcomes, None

    def _left(self, timeout: float | None, started: float) -> float:
        """What is left of a call's ``timeout`` (the client's default when None) since
        ``started``."""
        total = self.timeout if timeout is None else check_timeout(timeout)
        return max(total - (time.monotonic() - started), 0.001)

    def _learn_placement(self, timeout: float | None) -> None:
        """Ask ``Members`` for the live members when the last answer is older than
        ``PLACEMENT_REFRESH_S`` (and no one asked since), waiting no longer than
        ``PLACEMENT_TIMEOUT_S`` or the caller's ``timeout``; a failure leaves the view
        as it was (keys then go to any endpoint, which forwards them)."""
        now = time.monotonic()
        with self._lock:
            if now - self._placement_asked < self.PLACEMENT_REFRESH_S:
                return
            if self._router.placement_age(now) < self.PLACEMENT_REFRESH_S:
                return
            self._placement_asked = now
        limit = self.timeout if timeout is None else check_timeout(timeout)
        req = wire.members_request(local_view=True)  # no peer is asked: answered at once
        try:
            resp = self._call(
                "cluster", "Members", req, write=False,
                timeout=min(self.PLACEMENT_TIMEOUT_S, limit / 4),
            )  # fmt: skip
        except TadpoleError as exc:
            log.debug("no placement view: Members failed: %s", exc)
            return
        self._router.learn_members(wire.members(resp), time.monotonic())

    # How often (s) the live members are asked again for routing batched updates: a
    # member that joined or left since costs a forward hop per key until then.
    PLACEMENT_REFRESH_S = 10.0
    # Longest wait (s) for that answer (the node's own view: no peer is asked).
    PLACEMENT_TIMEOUT_S = 1.0
    # Single updates a client sends before it asks where keys live (a batch asks at
    # once): a CLI command's one update goes to its endpoint, which forwards it if need
    # be, instead of paying for a Members call first.
    PLACEMENT_AFTER_UPDATES = 8

    BATCH = 10_000  # updates per UpdateMany call (the server's limit)

    def counter_add(
        self, tier: str, key: str, amount: int, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """Add ``amount`` (may be negative) to a PN-counter."""
        return self.tier_update(tier, key, CounterAdd(amount), timeout=timeout)

    def set_add(
        self, tier: str, key: str, *elements: str, timeout: float | None = None
    ) -> TierUpdateResult:
        """Add ``elements`` to an OR-set."""
        return self.tier_update(tier, key, SetAdd(elements), timeout=timeout)

    def set_remove(
        self, tier: str, key: str, *elements: str, timeout: float | None = None
    ) -> TierUpdateResult:
        """Remove ``elements`` from an OR-set: every add acknowledged before the remove is
        removed (the owners' copies are joined first); an add concurrent with it wins."""
        return self.tier_update(tier, key, SetRemove(elements), timeout=timeout)

    def register_set(
        self, tier: str, key: str, value: Any, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """Set an LWW register to the JSON value ``value``."""
        return self.tier_update(tier, key, RegisterSet(value), timeout=timeout)

    def log_append(
        self,
        tier: str,
        key: str,
        payload: Any,
        entry_id: str = "",
        *,
        timeout: float | None = None,
    ) -> TierUpdateResult:
        """Append the JSON ``payload`` to an event log; an ``entry_id`` already in the log
        is not appended again ("" = a fresh one)."""
        return self.tier_update(tier, key, LogAppend(payload, entry_id), timeout=timeout)

    def map_set(
        self, tier: str, key: str, field: str, value: Any, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """Set ``field`` of an LWW map to the JSON value ``value``."""
        return self.tier_update(tier, key, MapSet(field, value), timeout=timeout)

    def map_remove(
        self, tier: str, key: str, field: str, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """Remove ``field`` from an LWW map."""
        return self.tier_update(tier, key, MapRemove(field), timeout=timeout)

    def tier_read(
        self,
        tier: str,
        key: str,
        *,
        consistency: TierConsistency | None = None,
        timeout: float | None = None,
    ) -> TierReadResult:
        """The key's merged value from ``consistency`` of its owners ("one", "quorum",
        "all"; ``None`` = the tier's default). "all" also repairs stale owners."""
        req = wire.tier_read_request(tier, key, consistency)
        resp = self._call("tiers", "Read", req, write=False, timeout=timeout)
        return wire.tier_read_result(resp)

    def tier_scan(
        self,
        tier: str,
        prefix: str = "",
        *,
        limit: int = 0,
        start_after: str = "",
        timeout: float | None = None,
    ) -> TierScanResult:
        """Keys of ``tier`` starting with ``prefix`` in key order, at most ``limit``
        (0 = all), only keys strictly after ``start_after``; unpacks as ``(keys, more)``."""
        req = wire.tier_scan_request(tier, prefix, limit, start_after)
        resp = self._call("tiers", "Scan", req, write=False, timeout=timeout)
        return wire.tier_scan_result(resp)

    def tier_status(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> TierNodeStatus:
        """One node's replica health per tier: ``endpoint``'s (retried there only) or
        any that answers."""
        req = wire.tier_status_request()
        resp = self._call("tiers", "Status", req, write=False, timeout=timeout, only=endpoint)
        return wire.tier_status(resp)

    def tier_status_all(self, *, timeout: float | None = None) -> list[EndpointTierStatus]:
        """Every known endpoint's tier status, asked concurrently, once each (no retries)."""
        answers = self._ask_each("tiers", "Status", wire.tier_status_request(), timeout)
        return [
            EndpointTierStatus(e, None, from_rpc_error(a))
            if isinstance(a, grpc.RpcError)
            else EndpointTierStatus(e, wire.tier_status(a), None)
            for e, a in answers
        ]

    # -- Documents

    def doc_create(
        self,
        tier: str,
        id: str,
        doc: Mapping[str, Any],
        *,
        causal_token: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> DocResult:
        """Create the document ``id`` of ``tier`` from the whole ``doc`` (a mesh
        document names its id in ``topology.mesh_id``; a deleted mesh may be created
        again). Returns the stored document.

        Not idempotent: re-sent only when nothing was applied. Raises AlreadyExists (a
        live document has that id; nothing applied), InvalidArgument (the server names
        the bad field), ReplicationIncomplete (applied below the write quorum; do not
        resend), OutcomeUnknown."""
        req = wire.doc_put_request(tier, id, doc, create=True, causal_token=causal_token)
        resp = self._call("documents", "Put", req, write=True, timeout=timeout)
        return wire.doc_result(resp)

    def doc_put(
        self,
        tier: str,
        id: str,
        fields: Mapping[str, Any],
        *,
        causal_token: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> DocResult:
        """Change an existing document: mesh, replace the given fields
        (``{"performance_data": {"collective_metrics": {...}}}``; each field last
        writer wins); agent, apply ``fields`` as an RFC 7396 merge patch (``None``
        removes a field). Returns the stored document. Raises NotFound (no such
        document) and the errors of :meth:`doc_create`."""
        req = wire.doc_put_request(tier, id, fields, create=False, causal_token=causal_token)
        resp = self._call("documents", "Put", req, write=True, timeout=timeout)
        return wire.doc_result(resp)

    def doc_get(
        self,
        tier: str,
        id: str,
        *,
        consistency: TierConsistency | None = None,
        causal_token: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> DocResult | None:
        """The document, merged from ``consistency`` of its owners ("one", "quorum",
        "all"; ``None`` = the server's default), or ``None`` if it does not exist (or
        was deleted)."""
        req = wire.doc_get_request(tier, id, consistency, causal_token)
        try:
            resp = self._call("documents", "Get", req, write=False, timeout=timeout)
        except NotFound:
            return None
        return wire.doc_get_result(resp)

    def doc_delete(self, tier: str, id: str, *, timeout: float | None = None) -> DocResult:
        """Delete the document (``doc`` of the result is ``{}``). Not idempotent like
        :meth:`doc_create`; raises NotFound if it does not exist."""
        req = wire.doc_delete_request(tier, id)
        resp = self._call("documents", "Delete", req, write=True, timeout=timeout)
        return wire.doc_result(resp)

    def mesh_members(
        self,
        mesh_id: str,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        timeout: float | None = None,
    ) -> DocResult:
        """Add and/or remove member agents of a mesh (add wins over a concurrent
        remove); returns the stored document. Raises NotFound (no such mesh) and the
        errors of :meth:`doc_create`."""
        req = wire.mesh_members_request(mesh_id, add, remove)
        resp = self._call("documents", "Members", req, write=True, timeout=timeout)
        return wire.doc_result(resp)

    def capability_add(
        self,
        agent_id: str,
        amounts: Mapping[int, float],
        *,
        causal_token: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> DocResult:
        """Add ``amounts[dim]`` to dimensions (0-255) of the agent's capability vector;
        concurrent adds commute (they sum on every replica). Not idempotent: resent only
        when nothing was applied. Raises NotFound (no such agent) and the errors of
        :meth:`doc_create`."""
        req = wire.capability_add_request(agent_id, amounts, causal_token)
        resp = self._call("documents", "CapabilityAdd", req, write=True, timeout=timeout)
        return wire.doc_result(resp)

    def graph_query(
        self,
        kind: GraphQueryKind,
        id: str,
        *,
        limit: int = 0,
        start_after: str = "",
        prefix: str = "",
        timeout: float | None = None,
    ) -> GraphQueryResult:
        """One page of a graph query from ``id`` (an agent id, or a mesh id for
        "members_of_mesh"): ids starting with ``prefix``, strictly after
        ``start_after``, at most ``limit`` (0 = all); unpacks as ``(ids, more)``."""
        req = wire.graph_query_request(kind, id, limit, start_after, prefix)
        resp = self._call("documents", "Query", req, write=False, timeout=timeout)
        return wire.graph_query_result(resp)

    def graph_scan(
        self,
        kind: GraphQueryKind,
        id: str,
        *,
        prefix: str = "",
        start_after: str = "",
        page_size: int = 500,
        timeout: float | None = None,
    ) -> Iterator[str]:
        """Every id a graph query lists (after ``start_after``), fetched ``page_size``
        at a time. Each page is answered separately: the whole is not a snapshot."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise InvalidArgument(f"page_size must be an int >= 1, got {page_size!r}")
        after = start_after
        while True:
            page = self.graph_query(
                kind, id, limit=page_size, start_after=after, prefix=prefix, timeout=timeout
            )
            yield from page.ids
            if not page.more or not page.ids:
                return
            after = page.ids[-1]

    # -- lifecycle

    def close(self) -> None:
        """Close every channel. Idempotent; open watches end."""
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
            self._coalescers.clear()
        for channel in channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Watch(backend.WatchBase):
    """The events of one watch, in revision order, as an iterator (of the client's
    flavour). ``close()`` ends it: in the blocking flavour from any thread; the asyncio
    one also has ``aclose()`` (for ``contextlib.aclosing``).

    A broken stream (node down, leader change) is resumed on another endpoint from the
    last delivered revision, without gaps or repeats (see
    :class:`~node.client.cursor.WatchCursor`). Raises Compacted when the start revision
    is no longer in history, Unavailable when it cannot resume.
    """

    def __init__(self, client: Client, cursor: WatchCursor) -> None:
        self._client = client
        self._cursor = cursor
        self._stream: backend.Stream | None = None
        self._buffer: list[WatchEvent] = []
        self._closed = backend.Flag()
        self._endpoint = ""

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        while not self._buffer:
            if self._closed.is_set():
                raise StopIteration
            stream = self._stream or self._open()
            try:
                resp = stream.read()
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    raise StopIteration from None
                self._reconnect(exc)
                continue
            if resp is None:
                if self._closed.is_set():
                    raise StopIteration
                self._reconnect(None)
                continue
            self._buffer.extend(self._cursor.accept(resp))
        return self._buffer.pop(0)

    def _open(self) -> backend.Stream:
        self._endpoint = self._client._router.order(time.monotonic())[0]
        method = self._client._method(self._endpoint, "kv", "Watch")
        # The token names the caller of a stream as of any call (roles are checked).
        request = self._cursor.request()
        self._stream = stream = backend.Stream(method(request, metadata=self._client._metadata))
        if self._closed.is_set():  # close() raced with open
            stream.cancel()
        return stream

    def _reconnect(self, exc: grpc.RpcError | None) -> None:
        """After the stream failed (``exc``) or ended (None): back off, then the next
        read reopens it; or raise what ends the watch."""
        self._stream = None
        outcome = self._cursor.failed(exc, self._client._rng)
        if isinstance(outcome, TadpoleError):
            raise outcome from exc
        if exc is not None:
            metadata = trailing_metadata(exc)
            self._client._router.failed(
                self._endpoint,
                time.monotonic(),
                metadata.get(LEADER_ID_KEY, ""),
                metadata.get(LEADER_ADDRESS_KEY, ""),
            )
        self._closed.wait(outcome)

    def close(self) -> None:
        """Stop the watch; a pending or later ``next`` ends the iteration. Idempotent."""
        self._closed.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    cancel = close

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
