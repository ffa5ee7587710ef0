"""Python client for the Tadpole State system tier: :class:`Client` and :class:`AsyncClient`.

Both flavours have the same surface and the same behaviour::

    with Client(["127.0.0.1:7101", "127.0.0.1:7102"]) as c:
        rev = c.put("config/a", b"1").revision
        kv = c.get("config/a")
        swapped = c.cas("config/a", expected_mod_revision=rev, new_value=b"2")
        for event in c.watch("config/", prefix=True):
            ...

**Endpoints, leader and failover.** Any node serves any request (followers forward
writes to the leader), but going straight to the leader saves a hop. The client learns
who leads from every response header (``leader_id``) and, once, from ``Cluster.Members``
(id -> address), and then sticks to the leader's endpoint until it fails. A failed
endpoint is moved to the back of the rotation for ``cooldown_s``.

**Deadline.** ``timeout`` (per call, default 5 s) bounds the whole call including
retries and back-off; each try gets what is left (capped, see below).

**Retries** (:class:`RetryPolicy`, rules in :mod:`node.client.attempts`): a failed try is
resent on the next untried endpoint at once, and with capped exponential back-off and
jitter once every endpoint has been tried. Reads are resent after UNAVAILABLE, ABORTED,
DEADLINE_EXCEEDED and CANCELLED. Every write this client sends to the system tier carries
a fresh ``request_id`` (an idempotency key the server applies at most once), so it is
resent with the *same* id after any failure that did not prove it applied. Whether a try
was applied is a field of the server's answer (trailing metadata ``tadpole-outcome``),
never read out of a message. A try that may be resent is capped at
``RetryPolicy.attempt_timeout_s`` so a paused node cannot hold the whole deadline. Once any
try of a write may have been applied, the call ends in success or
:class:`~node.client.errors.OutcomeUnknown`, never in an error that means "safe to resend".

**CRDT tiers** (``tier_update``, ``tier_read``, ``tier_scan``, ``tier_status`` and the
per-type shortcuts ``counter_add``, ``set_add``, ...) go to the ``Tiers`` service, which
any node coordinates. Values are JSON: the client encodes what you pass and decodes what
it gets. Tier updates carry no request id and are *not* idempotent (a counter add sent
twice counts twice), so an update is re-sent only when the failure proves nothing was
applied: the server's outcome ``not-applied``, or a connection that could not be opened.
Any other ``UNAVAILABLE`` after sending is
:class:`~node.client.errors.OutcomeUnknown`; ``ABORTED`` (below the write quorum, but durable on
some replica and converging) is :class:`~node.client.errors.ReplicationIncomplete`, never re-sent.
Tier reads, scans and status calls are retried like KV reads.

**Documents** (``doc_create``, ``doc_put``, ``doc_get``, ``doc_delete``, ``mesh_members``,
``graph_query``, ``graph_scan``) go to the ``Documents`` service: structured JSON
documents of a tier (today ``"mesh"``; ``"agent"`` documents use the same calls), each
one CRDT under its id, validated by the server. Writes follow the tier-update rule
above (re-sent only when nothing was applied; ``ABORTED`` is
:class:`~node.client.errors.ReplicationIncomplete`), reads and graph queries are retried like
KV reads. A create over a live document is :class:`~node.client.errors.AlreadyExists`. Every
answer carries the document's causal token (a version vector, agent tier; empty for
mesh documents) in :class:`DocResult`; pass it back as ``causal_token`` to never be
served state older than what you saw.

**Errors** are the tree in :mod:`node.client.errors`; the gRPC error is kept as ``__cause__``.

**Threads and tasks.** A :class:`Client` may be shared between threads; an
:class:`AsyncClient` belongs to the event loop that first uses it. A :class:`Watch` is
consumed by one thread, but ``close()`` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NamedTuple

import grpc
import grpc.aio

from node.client.attempts import Attempts, RetryPolicy, Router
from node.client.errors import (
    LEADER_ADDRESS_KEY,
    LEADER_ID_KEY,
    Compacted,
    InvalidArgument,
    NotFound,
    ServerError,
    TadpoleError,
    Unavailable,
    from_rpc_error,
    rpc_code,
    rpc_details,
    trailing_metadata,
)
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

__all__ = [
    "DEFAULT_ENDPOINTS",
    "AsyncClient",
    "AsyncWatch",
    "Client",
    "Compare",
    "DeleteOp",
    "DeleteResult",
    "DocResult",
    "EndpointStatus",
    "EndpointTierStatus",
    "EventType",
    "GraphQueryKind",
    "GraphQueryResult",
    "KeyValue",
    "Member",
    "NodeStatus",
    "PutOp",
    "PutResult",
    "RangeOp",
    "RangeResult",
    "RetryPolicy",
    "TierConsistency",
    "TierNodeStatus",
    "TierReadResult",
    "TierReplicaStatus",
    "TierScanResult",
    "TierUpdateResult",
    "TierValue",
    "TxnResult",
    "Watch",
    "WatchEvent",
    "compare_create_revision",
    "compare_mod_revision",
    "compare_value",
    "compare_version",
    "parse_endpoints",
]

log = logging.getLogger(__name__)

#: The endpoints ``make cluster`` starts.
DEFAULT_ENDPOINTS: tuple[str, ...] = ("127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103")

_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # A full unpaged range can exceed gRPC's 4 MiB default; 64 MiB is 64 maximal values.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # gRPC's default first reconnect waits 1 s; a restarted node should be usable sooner.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def parse_endpoints(text: str) -> list[str]:
    """Split ``"host:port,host:port"`` into a list; raises InvalidArgument if malformed."""
    endpoints = [part.strip() for part in text.split(",") if part.strip()]
    if not endpoints:
        raise InvalidArgument("no endpoints given")
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"endpoint {endpoint!r} is not HOST:PORT")
    return endpoints


# -- values -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as stored: revisions are system-tier revisions; ``version`` counts puts
    since the key was (re)created."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class PutResult:
    """``revision`` is the revision of the put; ``prev_kv`` is set when requested and the
    key existed."""

    revision: int
    kv: KeyValue | None
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """How many keys a delete removed (and, when requested, what they held)."""

    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class RangeResult:
    """One page of keys in key order. ``more``: the limit cut the result; ``count``: keys
    under the prefix in total; ``revision``: the revision the page reflects."""

    kvs: tuple[KeyValue, ...]
    more: bool
    count: int
    revision: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether every compare held, and one result per executed op, in order."""

    succeeded: bool
    revision: int
    responses: tuple[PutResult | DeleteResult | RangeResult, ...]


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. For a DELETE, ``kv`` has the key, an empty value and the deleting
    revision as ``mod_revision``; ``prev_kv`` is the deleted value when the server sends it."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class Member:
    """One cluster member as seen by the node that answered ``Cluster.Members``."""

    id: str
    address: str
    raft_role: str  # leader | follower | candidate | unknown
    term: int
    commit_index: int
    applied_index: int
    status: str  # alive | unreachable
    is_self: bool
    is_leader: bool
    match_index: int
    last_heard_s: float
    # The answering node's gossip (SWIM) view: alive | suspect | dead | left | "".
    gossip_status: str = ""
    incarnation: int = 0
    gossip_last_heard_s: float = -1.0
    tiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's ``Cluster.Status``; ``leader_id`` is that node's view ("" if none)."""

    id: str
    raft_role: str
    term: int
    commit_index: int
    applied_index: int
    log_entries: int
    keys: int
    has_quorum: bool
    version: str
    uptime_s: float
    data_dir: str
    system_backend: str
    leader_id: str
    revision: int
    # Replication health of the CRDT tiers as this node sees it.
    tiers: tuple[TierReplicaStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """The outcome of asking one endpoint for its status: exactly one of ``status`` and
    ``error`` is set."""

    endpoint: str
    status: NodeStatus | None
    error: TadpoleError | None


# -- CRDT tiers ---------------------------------------------------------------------

#: How many owners a tier read consults (``None``: the tier's default).
TierConsistency = Literal["one", "quorum", "all"]


@dataclass(frozen=True, slots=True)
class TierValue:
    """A CRDT's value: ``type`` is gcounter | pncounter | orset | lwwregister | eventlog |
    lwwmap; ``value`` is its JSON rendering, decoded (a set is a sorted list, an event
    log a list of ``{"hlc", "node", "entry_id", "payload"}``)."""

    type: str
    value: Any


@dataclass(frozen=True, slots=True)
class TierUpdateResult:
    """The value on the coordinating owner after the update; ``replicas`` acknowledged it
    durably (hinted copies included), ``hinted`` owners were down and get it later."""

    value: TierValue
    replicas: tuple[str, ...]
    hinted: tuple[str, ...]
    coordinator: str


@dataclass(frozen=True, slots=True)
class TierReadResult:
    """``value`` is ``None`` when no consulted owner has the key; ``replicas`` are the
    owners merged into the answer, ``repaired`` how many stale ones were sent the merge."""

    found: bool
    value: TierValue | None
    replicas: tuple[str, ...]
    repaired: int
    coordinator: str


class TierScanResult(NamedTuple):
    """One page of keys in key order; ``more``: the limit cut it (unpacks as a pair)."""

    keys: tuple[str, ...]
    more: bool


@dataclass(frozen=True, slots=True)
class TierReplicaStatus:
    """One tier as seen by one node. ``last_sync_age_s`` is -1 before the first
    complete anti-entropy round; ``oldest_hint_age_s`` (replica lag) is the age of the
    oldest write not yet at its owner, 0 when no hint is pending."""

    tier: str
    rf: int
    local_keys: int
    under_replicated: int
    hints_pending: int
    last_sync_age_s: float
    oldest_hint_age_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TierNodeStatus:
    """One node's ``Tiers.Status``."""

    member_id: str
    tiers: tuple[TierReplicaStatus, ...]


@dataclass(frozen=True, slots=True)
class EndpointTierStatus:
    """The outcome of asking one endpoint for its tier status: exactly one of
    ``status`` and ``error`` is set."""

    endpoint: str
    status: TierNodeStatus | None
    error: TadpoleError | None


# -- documents ----------------------------------------------------------------------

#: What a graph query lists: the meshes an agent is in, the agents in a mesh, or the
#: agents sharing at least one mesh with an agent (itself excluded).
GraphQueryKind = Literal["meshes_of_agent", "members_of_mesh", "neighbours"]


@dataclass(frozen=True, slots=True)
class DocResult:
    """A document as the serving node holds it, after a write or for a read.

    ``doc`` is the decoded JSON object (``{}`` after a delete: the document is gone).
    ``replicas`` acknowledged a write durably (hinted copies included) and ``hinted``
    owners were down and get it later; both are empty for a read. ``coordinator`` is
    the node that answered. ``causal_token`` is the document's version vector (writer
    -> counter; agent tier, ``{}`` for mesh documents): pass it as ``causal_token`` to a
    later read or write to be served state at least this new.
    """

    doc: dict[str, Any]
    replicas: tuple[str, ...]
    hinted: tuple[str, ...]
    coordinator: str
    causal_token: dict[str, int]


class GraphQueryResult(NamedTuple):
    """One page of ids in code-point order; ``more``: the limit cut it (unpacks as a
    pair). The next page starts after ``ids[-1]``."""

    ids: tuple[str, ...]
    more: bool


class _Unset(enum.Enum):
    """Marks an argument as not given where ``None`` is a legitimate value (JSON null)."""

    UNSET = enum.auto()


_UNSET = _Unset.UNSET


# -- transactions -------------------------------------------------------------------

CompareOperator = Literal["==", "!=", ">", "<"]
_COMPARE_RESULT = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}
_COMPARE_TARGET = {"version": "VERSION", "create": "CREATE", "mod": "MOD", "value": "VALUE"}


@dataclass(frozen=True, slots=True)
class Compare:
    """``<target of key> <op> <operand>``; build with the ``compare_*`` helpers.

    For an absent key, version, create and mod revision are 0; a value compare against
    an absent key is false.
    """

    key: str
    target: Literal["version", "create", "mod", "value"]
    op: CompareOperator
    number: int = 0
    value: bytes = b""

    def __post_init__(self) -> None:
        if self.op not in _COMPARE_RESULT:
            raise InvalidArgument(f"compare operator {self.op!r} is not one of == != > <")
        if self.target not in _COMPARE_TARGET:
            raise InvalidArgument(f"compare target {self.target!r} is unknown")


def compare_value(key: str, op: CompareOperator, value: bytes | str) -> Compare:
    """Compare the key's value (bytes; a str is UTF-8 encoded)."""
    return Compare(key, "value", op, value=_to_bytes(value))


def compare_mod_revision(key: str, op: CompareOperator, revision: int) -> Compare:
    """Compare the revision of the key's last change (0 = absent)."""
    return Compare(key, "mod", op, number=revision)


def compare_create_revision(key: str, op: CompareOperator, revision: int) -> Compare:
    """Compare the revision the key was created at (0 = absent)."""
    return Compare(key, "create", op, number=revision)


def compare_version(key: str, op: CompareOperator, version: int) -> Compare:
    """Compare the number of puts since the key was created (0 = absent)."""
    return Compare(key, "version", op, number=version)


@dataclass(frozen=True, slots=True)
class PutOp:
    """Txn op: put ``value`` at ``key``."""

    key: str
    value: bytes
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Txn op: delete ``key`` (every key under it when ``prefix``)."""

    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class RangeOp:
    """Txn op: read keys under ``prefix`` (at most ``limit``; 0 = all)."""

    prefix: str
    limit: int = 0


TxnOp = PutOp | DeleteOp | RangeOp


# -- wire conversion (pb is untyped: Any at this boundary) ----------------------------


def _to_bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidArgument(f"value must be bytes or str, not {type(value).__name__}")


def _consistency(serializable: bool) -> str:
    return "SERIALIZABLE" if serializable else "LINEARIZABLE"


def _kv(msg: Any) -> KeyValue:
    return KeyValue(
        key=str(msg.key),
        value=bytes(msg.value),
        create_revision=int(msg.create_revision),
        mod_revision=int(msg.mod_revision),
        version=int(msg.version),
    )


def _opt_kv(msg: Any, field: str) -> KeyValue | None:
    return _kv(getattr(msg, field)) if msg.HasField(field) else None


def _get_result(resp: Any) -> KeyValue | None:
    return _kv(resp.kv) if resp.found else None


def _put_result(resp: Any) -> PutResult:
    return PutResult(
        revision=int(resp.header.revision),
        kv=_opt_kv(resp, "kv"),
        prev_kv=_opt_kv(resp, "prev_kv"),
    )


def _delete_result(resp: Any) -> DeleteResult:
    return DeleteResult(
        revision=int(resp.header.revision),
        deleted=int(resp.deleted),
        prev_kvs=tuple(_kv(kv) for kv in resp.prev_kvs),
    )


def _range_result(resp: Any) -> RangeResult:
    return RangeResult(
        kvs=tuple(_kv(kv) for kv in resp.kvs),
        more=bool(resp.more),
        count=int(resp.count),
        revision=int(resp.header.revision),
    )


def _txn_result(resp: Any) -> TxnResult:
    out: list[PutResult | DeleteResult | RangeResult] = []
    for op in resp.responses:
        which = op.WhichOneof("response")
        if which == "put":
            out.append(_put_result(op.put))
        elif which == "delete":
            out.append(_delete_result(op.delete))
        elif which == "range":
            out.append(_range_result(op.range))
    return TxnResult(
        succeeded=bool(resp.succeeded), revision=int(resp.header.revision), responses=tuple(out)
    )


def _members(resp: Any) -> list[Member]:
    leader_id = str(resp.header.leader_id)
    return [
        Member(
            id=str(m.id),
            address=str(m.address),
            raft_role=str(m.raft_role),
            term=int(m.term),
            commit_index=int(m.commit_index),
            applied_index=int(m.applied_index),
            status=str(m.status),
            is_self=bool(m.is_self),
            is_leader=m.raft_role == "leader" or (bool(leader_id) and m.id == leader_id),
            match_index=int(m.match_index),
            last_heard_s=float(m.last_heard_s),
            gossip_status=str(m.gossip_status),
            incarnation=int(m.incarnation),
            gossip_last_heard_s=float(m.gossip_last_heard_s) if m.gossip_status else -1.0,
            tiers=tuple(str(t) for t in m.tiers),
        )
        for m in resp.members
    ]


def _status(resp: Any) -> NodeStatus:
    return NodeStatus(
        id=str(resp.id),
        raft_role=str(resp.raft_role),
        term=int(resp.term),
        commit_index=int(resp.commit_index),
        applied_index=int(resp.applied_index),
        log_entries=int(resp.log_entries),
        keys=int(resp.keys),
        has_quorum=bool(resp.has_quorum),
        version=str(resp.version),
        uptime_s=float(resp.uptime_s),
        data_dir=str(resp.data_dir),
        system_backend=str(resp.system_backend),
        leader_id=str(resp.header.leader_id),
        revision=int(resp.header.revision),
        tiers=_tier_rows(resp.tiers),
    )


def _answered_by(resp: Any) -> tuple[str, str]:
    """(member id, leader id) of a response. KV and Cluster responses carry a header;
    Tiers responses at most a member id, and no leader (any node coordinates)."""
    if "header" in resp.DESCRIPTOR.fields_by_name:
        return str(resp.header.member_id), str(resp.header.leader_id)
    if "member_id" in resp.DESCRIPTOR.fields_by_name:
        return str(resp.member_id), ""
    return "", ""


_TIER_CONSISTENCY = {"one": pb.ONE, "quorum": pb.QUORUM, "all": pb.ALL}
_INT64 = 2**63


def _tier_consistency(consistency: str | None) -> Any:
    if consistency is None:
        return pb.TIER_DEFAULT
    level = _TIER_CONSISTENCY.get(str(consistency).lower())
    if level is None:
        raise InvalidArgument(f"consistency {consistency!r} is not one of one, quorum, all")
    return level


def _to_json(value: Any, what: str) -> str:
    """Strict JSON (no NaN/Infinity, which other clients could not read)."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{what} is not JSON-serialisable: {exc}") from exc


def _elements(elements: Iterable[str], what: str) -> list[str]:
    if isinstance(elements, str | bytes):
        raise InvalidArgument(
            f"{what} takes a collection of strings, not a single {type(elements).__name__}"
        )
    out = list(elements)
    for element in out:
        if not isinstance(element, str):
            raise InvalidArgument(f"{what} elements must be str, not {type(element).__name__}")
    return out


def _tier_update_request(
    tier: str,
    key: str,
    *,
    counter_add: int | None,
    set_add: Iterable[str] | None,
    set_remove: Iterable[str] | None,
    register: Any,
    log_append: Any,
    entry_id: str,
    map_set: tuple[str, Any] | None,
    map_remove: str | None,
    consistency: str | None,
) -> Any:
    """A TierUpdateRequest with exactly one op; type mistakes are caught here, the rules
    of each op (amount not 0, at most 1000 elements, ...) are the server's."""
    given = [
        name
        for name, absent in (
            ("counter_add", counter_add is None),
            ("set_add", set_add is None),
            ("set_remove", set_remove is None),
            ("register", register is _UNSET),
            ("log_append", log_append is _UNSET),
            ("map_set", map_set is None),
            ("map_remove", map_remove is None),
        )
        if not absent
    ]
    if len(given) != 1:
        named = ", ".join(given) or "none"
        raise InvalidArgument(f"a tier update takes exactly one operation, got {named}")
    if entry_id and log_append is _UNSET:
        raise InvalidArgument("entry_id applies to log_append only")
    op: dict[str, Any] = {}
    if counter_add is not None:
        if isinstance(counter_add, bool) or not isinstance(counter_add, int):
            raise InvalidArgument(f"counter_add amount must be an int, not {counter_add!r}")
        if not -_INT64 <= counter_add < _INT64:
            raise InvalidArgument(f"counter_add amount {counter_add} does not fit in 64 bits")
        op["counter_add"] = pb.CounterAdd(amount=counter_add)
    elif set_add is not None:
        op["set_add"] = pb.SetElements(elements=_elements(set_add, "set_add"))
    elif set_remove is not None:
        op["set_remove"] = pb.SetElements(elements=_elements(set_remove, "set_remove"))
    elif register is not _UNSET:
        op["register_set"] = pb.RegisterSet(value_json=_to_json(register, "register value"))
    elif log_append is not _UNSET:
        payload = _to_json(log_append, "log_append payload")
        op["log_append"] = pb.LogAppend(entry_id=entry_id, payload_json=payload)
    elif map_set is not None:
        if not isinstance(map_set, tuple) or len(map_set) != 2:
            raise InvalidArgument("map_set takes a (field, value) pair")
        field, value = map_set
        op["map_set"] = pb.MapSet(field=field, value_json=_to_json(value, "map_set value"))
    else:
        op["map_set"] = pb.MapSet(field=map_remove, remove=True)
    return pb.TierUpdateRequest(
        tier=tier, key=key, consistency=_tier_consistency(consistency), **op
    )


def _tier_value(msg: Any) -> TierValue:
    text = str(msg.value_json)
    try:
        value = json.loads(text) if text else None
    except ValueError as exc:
        raise ServerError(f"the server sent a value that is not JSON: {exc}") from exc
    return TierValue(type=str(msg.type), value=value)


def _tier_update_result(resp: Any) -> TierUpdateResult:
    return TierUpdateResult(
        value=_tier_value(resp.value),
        replicas=tuple(str(r) for r in resp.replicas),
        hinted=tuple(str(h) for h in resp.hinted),
        coordinator=str(resp.member_id),
    )


def _tier_read_result(resp: Any) -> TierReadResult:
    return TierReadResult(
        found=bool(resp.found),
        value=_tier_value(resp.value) if resp.found else None,
        replicas=tuple(str(r) for r in resp.replicas),
        repaired=int(resp.repaired),
        coordinator=str(resp.member_id),
    )


def _tier_scan_request(tier: str, prefix: str, limit: int, start_after: str) -> Any:
    if limit < 0:
        raise InvalidArgument(f"limit must be >= 0, got {limit}")
    return pb.TierScanRequest(tier=tier, prefix=prefix, limit=limit, start_after=start_after)


def _tier_scan_result(resp: Any) -> TierScanResult:
    return TierScanResult(keys=tuple(str(k) for k in resp.keys), more=bool(resp.more))


def _capability_add_request(
    agent_id: str, amounts: Mapping[int, float], causal_token: Mapping[str, int] | None
) -> Any:
    if not amounts:
        raise InvalidArgument("capability_add needs at least one dimension")
    req = pb.CapabilityAddRequest(agent_id=agent_id)
    for dim, amount in amounts.items():
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < 256:
            raise InvalidArgument(f"capability dimension {dim!r} is not an integer in 0..255")
        req.amounts[dim] = float(amount)
    for node, count in (causal_token or {}).items():
        req.causal_token[node] = int(count)
    return req


def _tier_rows(tiers: Iterable[Any]) -> tuple[TierReplicaStatus, ...]:
    return tuple(
        TierReplicaStatus(
            tier=str(t.tier),
            rf=int(t.rf),
            local_keys=int(t.local_keys),
            under_replicated=int(t.under_replicated),
            hints_pending=int(t.hints_pending),
            last_sync_age_s=float(t.last_sync_age_s),
            oldest_hint_age_s=float(t.oldest_hint_age_s),
        )
        for t in tiers
    )


def _tier_status(resp: Any) -> TierNodeStatus:
    return TierNodeStatus(member_id=str(resp.member_id), tiers=_tier_rows(resp.tiers))


_GRAPH_KIND = {
    "meshes_of_agent": pb.GraphQueryRequest.MESHES_OF_AGENT,
    "members_of_mesh": pb.GraphQueryRequest.MEMBERS_OF_MESH,
    "neighbours": pb.GraphQueryRequest.NEIGHBOURS,
}


def _doc_json(doc: Any, what: str) -> str:
    if not isinstance(doc, Mapping):
        raise InvalidArgument(f"{what} must be a JSON object (a dict), not {type(doc).__name__}")
    return _to_json(dict(doc), what)


def _with_causal_token(request: Any, token: Mapping[str, int] | None) -> Any:
    """``request`` with ``token`` in its ``causal_token`` map (unchanged when ``None``).

    Checked against the message descriptor, not assumed: a protocol version whose
    request has no such field makes passing a token an InvalidArgument."""
    if token is None:
        return request
    if not isinstance(token, Mapping):
        raise InvalidArgument(f"causal_token must be a mapping, not {type(token).__name__}")
    for writer, counter in token.items():
        if not isinstance(writer, str):
            raise InvalidArgument(f"causal_token keys must be str, not {type(writer).__name__}")
        if isinstance(counter, bool) or not isinstance(counter, int):
            raise InvalidArgument(f"causal_token[{writer!r}] must be an int, not {counter!r}")
        if not 0 <= counter < _INT64:
            raise InvalidArgument(f"causal_token[{writer!r}] = {counter} is not in [0, 2**63)")
    if "causal_token" not in request.DESCRIPTOR.fields_by_name:
        raise InvalidArgument(f"{request.DESCRIPTOR.name} carries no causal_token in this protocol")
    request.causal_token.update(token)
    return request


def _doc_put_request(
    tier: str, doc_id: str, doc: Any, *, create: bool, causal_token: Mapping[str, int] | None
) -> Any:
    what = "the document" if create else "the fields"
    request = pb.DocPutRequest(tier=tier, id=doc_id, doc_json=_doc_json(doc, what), create=create)
    return _with_causal_token(request, causal_token)


def _doc_get_request(
    tier: str, doc_id: str, consistency: str | None, causal_token: Mapping[str, int] | None
) -> Any:
    request = pb.DocGetRequest(tier=tier, id=doc_id, consistency=_tier_consistency(consistency))
    return _with_causal_token(request, causal_token)


def _doc_result(resp: Any) -> DocResult:
    doc: Any = {}
    if resp.found and resp.doc_json:
        try:
            doc = json.loads(resp.doc_json)
        except ValueError as exc:
            raise ServerError(f"the server sent a document that is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ServerError(f"the server sent a document that is a {type(doc).__name__}")
    return DocResult(
        doc=doc,
        replicas=tuple(str(r) for r in resp.replicas),
        hinted=tuple(str(h) for h in resp.hinted),
        coordinator=str(resp.member_id),
        causal_token={str(k): int(v) for k, v in sorted(resp.causal_token.items())},
    )


def _doc_get_result(resp: Any) -> DocResult | None:
    return _doc_result(resp) if resp.found else None


def _mesh_members_request(mesh_id: str, add: Iterable[str], remove: Iterable[str]) -> Any:
    added, removed = _elements(add, "add"), _elements(remove, "remove")
    if not added and not removed:
        raise InvalidArgument("give agent ids to add and/or remove")
    return pb.MeshMembersRequest(mesh_id=mesh_id, add=added, remove=removed)


def _graph_query_request(kind: str, node_id: str, limit: int, start_after: str, prefix: str) -> Any:
    which = _GRAPH_KIND.get(kind)
    if which is None:
        raise InvalidArgument(f"graph query kind {kind!r} is not one of {', '.join(_GRAPH_KIND)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgument(f"limit must be an int >= 0, got {limit!r}")
    return pb.GraphQueryRequest(
        kind=which, id=node_id, limit=limit, start_after=start_after, prefix=prefix
    )


def _graph_query_result(resp: Any) -> GraphQueryResult:
    return GraphQueryResult(ids=tuple(str(i) for i in resp.ids), more=bool(resp.more))


def _check_page_size(page_size: int) -> None:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise InvalidArgument(f"page_size must be an int >= 1, got {page_size!r}")


def _event(msg: Any) -> WatchEvent:
    kind = EventType.DELETE if msg.type == pb.Event.DELETE else EventType.PUT
    return WatchEvent(type=kind, kv=_kv(msg.kv), prev_kv=_opt_kv(msg, "prev_kv"))


def _op_request(op: TxnOp) -> Any:
    if isinstance(op, PutOp):
        return pb.RequestOp(put=pb.PutRequest(key=op.key, value=op.value, prev_kv=op.prev_kv))
    if isinstance(op, DeleteOp):
        return pb.RequestOp(delete=pb.DeleteRequest(key=op.key, prefix=op.prefix))
    if isinstance(op, RangeOp):
        return pb.RequestOp(range=pb.RangeRequest(prefix=op.prefix, limit=op.limit))
    raise InvalidArgument(f"not a txn op: {op!r}")


def new_request_id() -> str:
    """A fresh idempotency key for one logical write (resends reuse it)."""
    return uuid.uuid4().hex


def _txn_request(
    compares: Iterable[Compare], success: Iterable[TxnOp], failure: Iterable[TxnOp]
) -> Any:
    return pb.TxnRequest(
        request_id=new_request_id(),
        compare=[
            pb.Compare(
                key=c.key,
                target=_COMPARE_TARGET[c.target],
                result=_COMPARE_RESULT[c.op],
                number=c.number,
                value=c.value,
            )
            for c in compares
        ],
        success=[_op_request(op) for op in success],
        failure=[_op_request(op) for op in failure],
    )


def _cas_request(
    key: str, expected_mod_revision: int | None, expected_value: bytes | str | None, new: bytes
) -> Any:
    if (expected_mod_revision is None) == (expected_value is None):
        raise InvalidArgument("cas needs exactly one of expected_mod_revision, expected_value")
    if expected_mod_revision is not None:
        compare = compare_mod_revision(key, "==", expected_mod_revision)
    else:
        assert expected_value is not None
        compare = compare_value(key, "==", expected_value)
    return _txn_request([compare], [PutOp(key, new)], [])


_STUBS: dict[str, Any] = {
    "kv": pb_grpc.KVStub,
    "cluster": pb_grpc.ClusterStub,
    "tiers": pb_grpc.TiersStub,
    "documents": pb_grpc.DocumentsStub,
}

_Service = Literal["kv", "cluster", "tiers", "documents"]

# Services whose writes are CRDT updates coordinated by any node: not idempotent
# (re-sent only when nothing was applied), ABORTED = below write quorum.
_CRDT_SERVICES = frozenset({"tiers", "documents"})


def _check_timeout(timeout: float) -> float:
    if not timeout > 0:
        raise InvalidArgument(f"timeout must be > 0 seconds, got {timeout}")
    return float(timeout)


# -- watch cursor (shared by both flavours) ------------------------------------------


class _WatchCursor:
    """Where a watch stands, so a broken stream resumes without gaps or repeats.

    After a reconnect the watch restarts at the revision of the last delivered event and
    skips the events of that revision it already delivered (the server replays one
    revision's events in the same order).
    """

    def __init__(self, key: str, prefix: bool, start_revision: int, policy: RetryPolicy):
        if start_revision < 0:
            raise InvalidArgument(f"start_revision must be >= 0, got {start_revision}")
        self.key = key
        self.prefix = prefix
        self._start = start_revision
        self._last_rev = 0
        self._delivered_at_last = 0
        self._skip = 0
        self._policy = policy
        self._failures = 0

    def request(self) -> Any:
        start = self._last_rev or self._start
        self._skip = self._delivered_at_last if self._last_rev else 0
        return pb.WatchRequest(key=self.key, prefix=self.prefix, start_revision=start)

    def accept(self, resp: Any) -> list[WatchEvent]:
        """Events from one response that were not delivered before."""
        self._failures = 0
        if resp.compact_revision > 0:
            raise Compacted(int(resp.compact_revision))
        out: list[WatchEvent] = []
        for msg in resp.events:
            event = _event(msg)
            rev = event.revision
            if self._last_rev and rev < self._last_rev:
                continue
            if self._last_rev and rev == self._last_rev and self._skip > 0:
                self._skip -= 1
                continue
            if rev != self._last_rev:
                self._last_rev, self._delivered_at_last = rev, 0
            self._delivered_at_last += 1
            out.append(event)
        if not self._last_rev and not self._start and resp.header.revision > 0:
            # "From the next change": pin it, so a resume does not miss what came between.
            self._start = int(resp.header.revision) + 1
        return out

    def failed(self, exc: BaseException | None, rng: random.Random) -> float | TadpoleError:
        """Back-off before reconnecting, or the error to raise. ``exc`` None: the server
        ended the stream."""
        if exc is not None:
            code = rpc_code(exc)
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                return from_rpc_error(exc)
        self._failures += 1
        if self._failures >= self._policy.attempts:
            why = rpc_details(exc) if exc is not None else "the server ended the stream"
            return Unavailable(f"unavailable: watch could not be resumed: {why}")
        return self._policy.backoff_s(self._failures - 1, rng)


# -- sync client ----------------------------------------------------------------------


class Client:
    """Blocking client. See the module docstring for routing, deadlines and retries.

    ``endpoints``: ``"host:port"`` strings (or one comma-separated string); default
    :data:`DEFAULT_ENDPOINTS`. ``timeout``: default per-call deadline in seconds,
    overridable per call. ``prefer_leader``: route to the leader when known.
    ``rng``: seeds the back-off jitter (tests pass a seeded ``random.Random``).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str | None = None,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        prefer_leader: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if endpoints is None:
            endpoints = DEFAULT_ENDPOINTS
        elif isinstance(endpoints, str):
            endpoints = parse_endpoints(endpoints)
        else:
            endpoints = parse_endpoints(",".join(endpoints))
        self.timeout = _check_timeout(timeout)
        self.retry = retry or RetryPolicy()
        self._router = Router(
            endpoints, prefer_leader=prefer_leader, cooldown_s=self.retry.cooldown_s
        )
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._channels: dict[str, Any] = {}
        self._closed = False

    # -- plumbing

    @property
    def endpoints(self) -> list[str]:
        """Configured endpoints followed by member addresses learned since."""
        return self._router.endpoints

    def _channel(self, endpoint: str) -> Any:
        with self._lock:
            if self._closed:
                raise RuntimeError("client is closed")
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = grpc.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
                self._channels[endpoint] = channel
            return channel

    def _method(self, endpoint: str, service: str, method: str) -> Any:
        channel = self._channel(endpoint)
        return getattr(_STUBS[service](channel), method)

    def _call(
        self,
        service: _Service,
        method: str,
        request: Any,
        *,
        write: bool,
        timeout: float | None,
        only: str | None = None,
    ) -> Any:
        attempts = Attempts(
            self._router,
            self.retry,
            self._rng,
            write=write,
            timeout_s=_check_timeout(timeout) if timeout is not None else self.timeout,
            now=time.monotonic(),
            only=only,
            idempotent=write and bool(getattr(request, "request_id", "")),
            tiers=service in _CRDT_SERVICES,
        )
        while True:
            endpoint = attempts.endpoint
            try:
                resp = self._method(endpoint, service, method)(
                    request, timeout=attempts.attempt_timeout(time.monotonic())
                )
            except grpc.RpcError as exc:
                outcome = attempts.failed(exc, time.monotonic())
                if isinstance(outcome, TadpoleError):
                    raise outcome from exc
                if outcome > 0:
                    time.sleep(outcome)
                continue
            member_id, leader_id = _answered_by(resp)
            if self._router.succeeded(endpoint, member_id, leader_id, time.monotonic()):
                self._discover(endpoint, attempts.remaining(time.monotonic()))
            return resp

    def _discover(self, endpoint: str, remaining_s: float) -> None:
        """Best effort: learn member addresses (and so the leader's) from one endpoint."""
        try:
            resp = self._method(endpoint, "cluster", "Members")(
                pb.MembersRequest(), timeout=max(min(remaining_s, 1.0), 0.05)
            )
        except grpc.RpcError as exc:
            log.debug("leader discovery via %s failed: %s", endpoint, rpc_details(exc))
            return
        self._router.learn_members(_members(resp), time.monotonic())

    # -- KV

    def get(
        self, key: str, *, serializable: bool = False, timeout: float | None = None
    ) -> KeyValue | None:
        """The key's current value, or ``None`` if absent. Linearizable unless
        ``serializable`` (then the serving node's possibly stale local state)."""
        req = pb.GetRequest(key=key, consistency=_consistency(serializable))
        return _get_result(self._call("kv", "Get", req, write=False, timeout=timeout))

    def put(
        self, key: str, value: bytes | str, *, prev_kv: bool = False, timeout: float | None = None
    ) -> PutResult:
        """Store ``value`` (a str is UTF-8 encoded). Raises OutcomeUnknown if the write
        may or may not have been applied."""
        req = pb.PutRequest(
            key=key, value=_to_bytes(value), prev_kv=prev_kv, request_id=new_request_id()
        )
        return _put_result(self._call("kv", "Put", req, write=True, timeout=timeout))

    def delete(self, key: str, *, prefix: bool = False, timeout: float | None = None) -> int:
        """Delete the key (every key starting with it when ``prefix``); returns how many
        keys were deleted."""
        req = pb.DeleteRequest(key=key, prefix=prefix, request_id=new_request_id())
        return _delete_result(self._call("kv", "Delete", req, write=True, timeout=timeout)).deleted

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
        req = pb.RangeRequest(
            prefix=prefix,
            limit=limit,
            start_after=start_after,
            consistency=_consistency(serializable),
        )
        return _range_result(self._call("kv", "Range", req, write=False, timeout=timeout))

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
        req = _txn_request(compares, success, failure)
        return _txn_result(self._call("kv", "Txn", req, write=True, timeout=timeout))

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
        req = _cas_request(key, expected_mod_revision, expected_value, _to_bytes(new_value))
        return bool(self._call("kv", "Txn", req, write=True, timeout=timeout).succeeded)

    def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0) -> Watch:
        """Changes to ``key`` (every key under it when ``prefix``) from ``start_revision``
        (0 = from the next change), as an iterator; see :class:`Watch`."""
        return Watch(self, _WatchCursor(key, prefix, start_revision, self.retry))

    # -- Cluster

    def members(self, *, timeout: float | None = None) -> list[Member]:
        """Every member with its Raft view, from the first endpoint that answers."""
        resp = self._call("cluster", "Members", pb.MembersRequest(), write=False, timeout=timeout)
        result = _members(resp)
        self._router.learn_members(result, time.monotonic())
        return result

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> NodeStatus:
        """One node's status: ``endpoint``'s (retried there only) or any that answers."""
        resp = self._call(
            "cluster", "Status", pb.StatusRequest(), write=False, timeout=timeout, only=endpoint
        )
        return _status(resp)

    def status_all(self, *, timeout: float | None = None) -> list[EndpointStatus]:
        """Every known endpoint's status, asked concurrently, once each (no retries)."""
        timeout_s = _check_timeout(timeout) if timeout is not None else self.timeout
        futures = [
            (e, self._method(e, "cluster", "Status").future(pb.StatusRequest(), timeout=timeout_s))
            for e in self.endpoints
        ]
        out: list[EndpointStatus] = []
        for endpoint, future in futures:
            try:
                out.append(EndpointStatus(endpoint, _status(future.result()), None))
            except grpc.RpcError as exc:
                out.append(EndpointStatus(endpoint, None, from_rpc_error(exc)))
        return out

    def transfer_leadership(self, target_id: str = "", *, timeout: float | None = None) -> str:
        """Ask the leader to hand over to ``target_id`` ("" = the most caught-up
        follower); returns the leader after the transfer. NotFound for an unknown id,
        FailedPrecondition when the target cannot take over."""
        req = pb.TransferLeadershipRequest(target_id=target_id)
        resp = self._call("cluster", "TransferLeadership", req, write=True, timeout=timeout)
        return str(resp.leader_id)

    # -- CRDT tiers

    def tier_update(
        self,
        tier: str,
        key: str,
        *,
        counter_add: int | None = None,
        set_add: Iterable[str] | None = None,
        set_remove: Iterable[str] | None = None,
        register: Any = _UNSET,
        log_append: Any = _UNSET,
        entry_id: str = "",
        map_set: tuple[str, Any] | None = None,
        map_remove: str | None = None,
        consistency: TierConsistency | None = None,
        timeout: float | None = None,
    ) -> TierUpdateResult:
        """Apply exactly one operation to the CRDT at ``tier``/``key`` (the first update
        fixes the key's type): ``counter_add`` (PN-counter), ``set_add``/``set_remove``
        (OR-set, add wins), ``register`` (LWW register; any JSON value, ``None`` too),
        ``log_append`` (event log; a JSON payload, deduplicated by ``entry_id``, "" =
        generated), ``map_set=(field, value)`` / ``map_remove=field`` (LWW map).

        Not idempotent: re-sent only when nothing was applied. Raises
        ReplicationIncomplete (applied on fewer replicas than the write quorum; do not
        resend), OutcomeUnknown (may or may not have been applied), InvalidArgument."""
        req = _tier_update_request(
            tier,
            key,
            counter_add=counter_add,
            set_add=set_add,
            set_remove=set_remove,
            register=register,
            log_append=log_append,
            entry_id=entry_id,
            map_set=map_set,
            map_remove=map_remove,
            consistency=consistency,
        )
        resp = self._call("tiers", "Update", req, write=True, timeout=timeout)
        return _tier_update_result(resp)

    def counter_add(
        self, tier: str, key: str, amount: int, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """Add ``amount`` (may be negative) to a PN-counter."""
        return self.tier_update(tier, key, counter_add=amount, timeout=timeout)

    def set_add(
        self, tier: str, key: str, *elements: str, timeout: float | None = None
    ) -> TierUpdateResult:
        """Add ``elements`` to an OR-set."""
        return self.tier_update(tier, key, set_add=elements, timeout=timeout)

    def set_remove(
        self, tier: str, key: str, *elements: str, timeout: float | None = None
    ) -> TierUpdateResult:
        """Remove the ``elements`` this replica has seen from an OR-set (a concurrent add
        wins)."""
        return self.tier_update(tier, key, set_remove=elements, timeout=timeout)

    def register_set(
        self, tier: str, key: str, value: Any, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """Set an LWW register to the JSON value ``value``."""
        return self.tier_update(tier, key, register=value, timeout=timeout)

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
        return self.tier_update(tier, key, log_append=payload, entry_id=entry_id, timeout=timeout)

    def map_set(
        self, tier: str, key: str, field: str, value: Any, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """Set ``field`` of an LWW map to the JSON value ``value``."""
        return self.tier_update(tier, key, map_set=(field, value), timeout=timeout)

    def map_remove(
        self, tier: str, key: str, field: str, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """Remove ``field`` from an LWW map."""
        return self.tier_update(tier, key, map_remove=field, timeout=timeout)

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
        req = pb.TierReadRequest(tier=tier, key=key, consistency=_tier_consistency(consistency))
        return _tier_read_result(self._call("tiers", "Read", req, write=False, timeout=timeout))

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
        req = _tier_scan_request(tier, prefix, limit, start_after)
        return _tier_scan_result(self._call("tiers", "Scan", req, write=False, timeout=timeout))

    def tier_status(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> TierNodeStatus:
        """One node's replica health per tier: ``endpoint``'s (retried there only) or
        any that answers."""
        req = pb.TierStatusRequest()
        resp = self._call("tiers", "Status", req, write=False, timeout=timeout, only=endpoint)
        return _tier_status(resp)

    def tier_status_all(self, *, timeout: float | None = None) -> list[EndpointTierStatus]:
        """Every known endpoint's tier status, asked concurrently, once each (no retries)."""
        timeout_s = _check_timeout(timeout) if timeout is not None else self.timeout
        futures = [
            (
                e,
                self._method(e, "tiers", "Status").future(
                    pb.TierStatusRequest(), timeout=timeout_s
                ),
            )
            for e in self.endpoints
        ]
        out: list[EndpointTierStatus] = []
        for endpoint, future in futures:
            try:
                out.append(EndpointTierStatus(endpoint, _tier_status(future.result()), None))
            except grpc.RpcError as exc:
                out.append(EndpointTierStatus(endpoint, None, from_rpc_error(exc)))
        return out

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
        req = _doc_put_request(tier, id, doc, create=True, causal_token=causal_token)
        return _doc_result(self._call("documents", "Put", req, write=True, timeout=timeout))

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
        req = _doc_put_request(tier, id, fields, create=False, causal_token=causal_token)
        return _doc_result(self._call("documents", "Put", req, write=True, timeout=timeout))

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
        req = _doc_get_request(tier, id, consistency, causal_token)
        try:
            resp = self._call("documents", "Get", req, write=False, timeout=timeout)
        except NotFound:
            return None
        return _doc_get_result(resp)

    def doc_delete(self, tier: str, id: str, *, timeout: float | None = None) -> DocResult:
        """Delete the document (``doc`` of the result is ``{}``). Not idempotent like
        :meth:`doc_create`; raises NotFound if it does not exist."""
        req = pb.DocGetRequest(tier=tier, id=id)
        return _doc_result(self._call("documents", "Delete", req, write=True, timeout=timeout))

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
        req = _mesh_members_request(mesh_id, add, remove)
        return _doc_result(self._call("documents", "Members", req, write=True, timeout=timeout))

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
        req = _capability_add_request(agent_id, amounts, causal_token)
        resp = self._call("documents", "CapabilityAdd", req, write=True, timeout=timeout)
        return _doc_result(resp)

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
        req = _graph_query_request(kind, id, limit, start_after, prefix)
        resp = self._call("documents", "Query", req, write=False, timeout=timeout)
        return _graph_query_result(resp)

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
        _check_page_size(page_size)
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


class Watch:
    """A blocking iterator of :class:`WatchEvent`. ``close()`` (from any thread) ends it.

    A broken stream (node down, leader change) is resumed on another endpoint from the
    last delivered revision, without gaps or repeats. Raises Compacted when the start
    revision is no longer in history, Unavailable when it cannot resume.
    """

    def __init__(self, client: Client, cursor: _WatchCursor) -> None:
        self._client = client
        self._cursor = cursor
        self._call: Any = None
        self._buffer: list[WatchEvent] = []
        self._closed = threading.Event()
        self._endpoint = ""

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        while not self._buffer:
            if self._closed.is_set():
                raise StopIteration
            if self._call is None:
                self._open()
            try:
                resp = next(self._call)
            except StopIteration:
                self._reconnect(None)
                continue
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    raise StopIteration from None
                self._reconnect(exc)
                continue
            self._buffer.extend(self._cursor.accept(resp))
        return self._buffer.pop(0)

    def _open(self) -> None:
        self._endpoint = self._client._router.order(time.monotonic())[0]
        method = self._client._method(self._endpoint, "kv", "Watch")
        self._call = method(self._cursor.request())
        if self._closed.is_set():  # close() raced with open
            self._call.cancel()

    def _reconnect(self, exc: grpc.RpcError | None) -> None:
        self._call = None
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
        """Stop the watch; a blocked ``next()`` returns (StopIteration). Idempotent."""
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()

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


# -- asyncio client ---------------------------------------------------------------------


class AsyncClient:
    """The asyncio flavour of :class:`Client` (grpc.aio): same arguments, same methods,
    awaitable; ``watch`` returns an async iterator. Use from one event loop."""

    def __init__(
        self,
        endpoints: Sequence[str] | str | None = None,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        prefer_leader: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if endpoints is None:
            endpoints = DEFAULT_ENDPOINTS
        elif isinstance(endpoints, str):
            endpoints = parse_endpoints(endpoints)
        else:
            endpoints = parse_endpoints(",".join(endpoints))
        self.timeout = _check_timeout(timeout)
        self.retry = retry or RetryPolicy()
        self._router = Router(
            endpoints, prefer_leader=prefer_leader, cooldown_s=self.retry.cooldown_s
        )
        self._rng = rng or random.Random()
        self._channels: dict[str, Any] = {}
        self._closed = False

    @property
    def endpoints(self) -> list[str]:
        """Configured endpoints followed by member addresses learned since."""
        return self._router.endpoints

    def _method(self, endpoint: str, service: str, method: str) -> Any:
        if self._closed:
            raise RuntimeError("client is closed")
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
            self._channels[endpoint] = channel
        return getattr(_STUBS[service](channel), method)

    async def _call(
        self,
        service: _Service,
        method: str,
        request: Any,
        *,
        write: bool,
        timeout: float | None,
        only: str | None = None,
    ) -> Any:
        attempts = Attempts(
            self._router,
            self.retry,
            self._rng,
            write=write,
            timeout_s=_check_timeout(timeout) if timeout is not None else self.timeout,
            now=time.monotonic(),
            only=only,
            idempotent=write and bool(getattr(request, "request_id", "")),
            tiers=service in _CRDT_SERVICES,
        )
        while True:
            endpoint = attempts.endpoint
            try:
                resp = await self._method(endpoint, service, method)(
                    request, timeout=attempts.attempt_timeout(time.monotonic())
                )
            except grpc.aio.AioRpcError as exc:
                outcome = attempts.failed(exc, time.monotonic())
                if isinstance(outcome, TadpoleError):
                    raise outcome from exc
                if outcome > 0:
                    await asyncio.sleep(outcome)
                continue
            member_id, leader_id = _answered_by(resp)
            if self._router.succeeded(endpoint, member_id, leader_id, time.monotonic()):
                await self._discover(endpoint, attempts.remaining(time.monotonic()))
            return resp

    async def _discover(self, endpoint: str, remaining_s: float) -> None:
        try:
            resp = await self._method(endpoint, "cluster", "Members")(
                pb.MembersRequest(), timeout=max(min(remaining_s, 1.0), 0.05)
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("leader discovery via %s failed: %s", endpoint, rpc_details(exc))
            return
        self._router.learn_members(_members(resp), time.monotonic())

    async def get(
        self, key: str, *, serializable: bool = False, timeout: float | None = None
    ) -> KeyValue | None:
        """See :meth:`Client.get`."""
        req = pb.GetRequest(key=key, consistency=_consistency(serializable))
        return _get_result(await self._call("kv", "Get", req, write=False, timeout=timeout))

    async def put(
        self, key: str, value: bytes | str, *, prev_kv: bool = False, timeout: float | None = None
    ) -> PutResult:
        """See :meth:`Client.put`."""
        req = pb.PutRequest(
            key=key, value=_to_bytes(value), prev_kv=prev_kv, request_id=new_request_id()
        )
        return _put_result(await self._call("kv", "Put", req, write=True, timeout=timeout))

    async def delete(self, key: str, *, prefix: bool = False, timeout: float | None = None) -> int:
        """See :meth:`Client.delete`."""
        req = pb.DeleteRequest(key=key, prefix=prefix, request_id=new_request_id())
        resp = await self._call("kv", "Delete", req, write=True, timeout=timeout)
        return _delete_result(resp).deleted

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        start_after: str = "",
        serializable: bool = False,
        timeout: float | None = None,
    ) -> RangeResult:
        """See :meth:`Client.range`."""
        req = pb.RangeRequest(
            prefix=prefix,
            limit=limit,
            start_after=start_after,
            consistency=_consistency(serializable),
        )
        return _range_result(await self._call("kv", "Range", req, write=False, timeout=timeout))

    async def scan(
        self,
        prefix: str,
        page_size: int = 500,
        *,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[KeyValue]:
        """See :meth:`Client.scan`."""
        if page_size < 1:
            raise InvalidArgument(f"page_size must be >= 1, got {page_size}")
        after = ""
        while True:
            page = await self.range(
                prefix,
                limit=page_size,
                start_after=after,
                serializable=serializable,
                timeout=timeout,
            )
            for kv in page.kvs:
                yield kv
            if not page.more or not page.kvs:
                return
            after = page.kvs[-1].key

    async def txn(
        self,
        compares: Iterable[Compare],
        success: Iterable[TxnOp] = (),
        failure: Iterable[TxnOp] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """See :meth:`Client.txn`."""
        req = _txn_request(compares, success, failure)
        return _txn_result(await self._call("kv", "Txn", req, write=True, timeout=timeout))

    async def cas(
        self,
        key: str,
        *,
        new_value: bytes | str,
        expected_mod_revision: int | None = None,
        expected_value: bytes | str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """See :meth:`Client.cas`."""
        req = _cas_request(key, expected_mod_revision, expected_value, _to_bytes(new_value))
        return bool((await self._call("kv", "Txn", req, write=True, timeout=timeout)).succeeded)

    def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0) -> AsyncWatch:
        """See :meth:`Client.watch`; returns an async iterator (:class:`AsyncWatch`)."""
        return AsyncWatch(self, _WatchCursor(key, prefix, start_revision, self.retry))

    async def members(self, *, timeout: float | None = None) -> list[Member]:
        """See :meth:`Client.members`."""
        req = pb.MembersRequest()
        result = _members(await self._call("cluster", "Members", req, write=False, timeout=timeout))
        self._router.learn_members(result, time.monotonic())
        return result

    async def status(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> NodeStatus:
        """See :meth:`Client.status`."""
        resp = await self._call(
            "cluster", "Status", pb.StatusRequest(), write=False, timeout=timeout, only=endpoint
        )
        return _status(resp)

    async def status_all(self, *, timeout: float | None = None) -> list[EndpointStatus]:
        """See :meth:`Client.status_all`."""
        timeout_s = _check_timeout(timeout) if timeout is not None else self.timeout

        async def one(endpoint: str) -> EndpointStatus:
            try:
                resp = await self._method(endpoint, "cluster", "Status")(
                    pb.StatusRequest(), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                return EndpointStatus(endpoint, None, from_rpc_error(exc))
            return EndpointStatus(endpoint, _status(resp), None)

        return list(await asyncio.gather(*(one(e) for e in self.endpoints)))

    async def transfer_leadership(
        self, target_id: str = "", *, timeout: float | None = None
    ) -> str:
        """See :meth:`Client.transfer_leadership`."""
        req = pb.TransferLeadershipRequest(target_id=target_id)
        resp = await self._call("cluster", "TransferLeadership", req, write=True, timeout=timeout)
        return str(resp.leader_id)

    async def tier_update(
        self,
        tier: str,
        key: str,
        *,
        counter_add: int | None = None,
        set_add: Iterable[str] | None = None,
        set_remove: Iterable[str] | None = None,
        register: Any = _UNSET,
        log_append: Any = _UNSET,
        entry_id: str = "",
        map_set: tuple[str, Any] | None = None,
        map_remove: str | None = None,
        consistency: TierConsistency | None = None,
        timeout: float | None = None,
    ) -> TierUpdateResult:
        """See :meth:`Client.tier_update`."""
        req = _tier_update_request(
            tier,
            key,
            counter_add=counter_add,
            set_add=set_add,
            set_remove=set_remove,
            register=register,
            log_append=log_append,
            entry_id=entry_id,
            map_set=map_set,
            map_remove=map_remove,
            consistency=consistency,
        )
        resp = await self._call("tiers", "Update", req, write=True, timeout=timeout)
        return _tier_update_result(resp)

    async def counter_add(
        self, tier: str, key: str, amount: int, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """See :meth:`Client.counter_add`."""
        return await self.tier_update(tier, key, counter_add=amount, timeout=timeout)

    async def set_add(
        self, tier: str, key: str, *elements: str, timeout: float | None = None
    ) -> TierUpdateResult:
        """See :meth:`Client.set_add`."""
        return await self.tier_update(tier, key, set_add=elements, timeout=timeout)

    async def set_remove(
        self, tier: str, key: str, *elements: str, timeout: float | None = None
    ) -> TierUpdateResult:
        """See :meth:`Client.set_remove`."""
        return await self.tier_update(tier, key, set_remove=elements, timeout=timeout)

    async def register_set(
        self, tier: str, key: str, value: Any, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """See :meth:`Client.register_set`."""
        return await self.tier_update(tier, key, register=value, timeout=timeout)

    async def log_append(
        self,
        tier: str,
        key: str,
        payload: Any,
        entry_id: str = "",
        *,
        timeout: float | None = None,
    ) -> TierUpdateResult:
        """See :meth:`Client.log_append`."""
        return await self.tier_update(
            tier, key, log_append=payload, entry_id=entry_id, timeout=timeout
        )

    async def map_set(
        self, tier: str, key: str, field: str, value: Any, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """See :meth:`Client.map_set`."""
        return await self.tier_update(tier, key, map_set=(field, value), timeout=timeout)

    async def map_remove(
        self, tier: str, key: str, field: str, *, timeout: float | None = None
    ) -> TierUpdateResult:
        """See :meth:`Client.map_remove`."""
        return await self.tier_update(tier, key, map_remove=field, timeout=timeout)

    async def tier_read(
        self,
        tier: str,
        key: str,
        *,
        consistency: TierConsistency | None = None,
        timeout: float | None = None,
    ) -> TierReadResult:
        """See :meth:`Client.tier_read`."""
        req = pb.TierReadRequest(tier=tier, key=key, consistency=_tier_consistency(consistency))
        resp = await self._call("tiers", "Read", req, write=False, timeout=timeout)
        return _tier_read_result(resp)

    async def tier_scan(
        self,
        tier: str,
        prefix: str = "",
        *,
        limit: int = 0,
        start_after: str = "",
        timeout: float | None = None,
    ) -> TierScanResult:
        """See :meth:`Client.tier_scan`."""
        req = _tier_scan_request(tier, prefix, limit, start_after)
        resp = await self._call("tiers", "Scan", req, write=False, timeout=timeout)
        return _tier_scan_result(resp)

    async def tier_status(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> TierNodeStatus:
        """See :meth:`Client.tier_status`."""
        req = pb.TierStatusRequest()
        resp = await self._call("tiers", "Status", req, write=False, timeout=timeout, only=endpoint)
        return _tier_status(resp)

    async def tier_status_all(self, *, timeout: float | None = None) -> list[EndpointTierStatus]:
        """See :meth:`Client.tier_status_all`."""
        timeout_s = _check_timeout(timeout) if timeout is not None else self.timeout

        async def one(endpoint: str) -> EndpointTierStatus:
            try:
                resp = await self._method(endpoint, "tiers", "Status")(
                    pb.TierStatusRequest(), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                return EndpointTierStatus(endpoint, None, from_rpc_error(exc))
            return EndpointTierStatus(endpoint, _tier_status(resp), None)

        return list(await asyncio.gather(*(one(e) for e in self.endpoints)))

    async def doc_create(
        self,
        tier: str,
        id: str,
        doc: Mapping[str, Any],
        *,
        causal_token: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> DocResult:
        """See :meth:`Client.doc_create`."""
        req = _doc_put_request(tier, id, doc, create=True, causal_token=causal_token)
        resp = await self._call("documents", "Put", req, write=True, timeout=timeout)
        return _doc_result(resp)

    async def doc_put(
        self,
        tier: str,
        id: str,
        fields: Mapping[str, Any],
        *,
        causal_token: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> DocResult:
        """See :meth:`Client.doc_put`."""
        req = _doc_put_request(tier, id, fields, create=False, causal_token=causal_token)
        resp = await self._call("documents", "Put", req, write=True, timeout=timeout)
        return _doc_result(resp)

    async def doc_get(
        self,
        tier: str,
        id: str,
        *,
        consistency: TierConsistency | None = None,
        causal_token: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> DocResult | None:
        """See :meth:`Client.doc_get`."""
        req = _doc_get_request(tier, id, consistency, causal_token)
        try:
            resp = await self._call("documents", "Get", req, write=False, timeout=timeout)
        except NotFound:
            return None
        return _doc_get_result(resp)

    async def doc_delete(self, tier: str, id: str, *, timeout: float | None = None) -> DocResult:
        """See :meth:`Client.doc_delete`."""
        req = pb.DocGetRequest(tier=tier, id=id)
        resp = await self._call("documents", "Delete", req, write=True, timeout=timeout)
        return _doc_result(resp)

    async def mesh_members(
        self,
        mesh_id: str,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        timeout: float | None = None,
    ) -> DocResult:
        """See :meth:`Client.mesh_members`."""
        req = _mesh_members_request(mesh_id, add, remove)
        resp = await self._call("documents", "Members", req, write=True, timeout=timeout)
        return _doc_result(resp)

    async def capability_add(
        self,
        agent_id: str,
        amounts: Mapping[int, float],
        *,
        causal_token: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> DocResult:
        """See :meth:`Client.capability_add`."""
        req = _capability_add_request(agent_id, amounts, causal_token)
        resp = await self._call("documents", "CapabilityAdd", req, write=True, timeout=timeout)
        return _doc_result(resp)

    async def graph_query(
        self,
        kind: GraphQueryKind,
        id: str,
        *,
        limit: int = 0,
        start_after: str = "",
        prefix: str = "",
        timeout: float | None = None,
    ) -> GraphQueryResult:
        """See :meth:`Client.graph_query`."""
        req = _graph_query_request(kind, id, limit, start_after, prefix)
        resp = await self._call("documents", "Query", req, write=False, timeout=timeout)
        return _graph_query_result(resp)

    async def graph_scan(
        self,
        kind: GraphQueryKind,
        id: str,
        *,
        prefix: str = "",
        start_after: str = "",
        page_size: int = 500,
        timeout: float | None = None,
    ) -> AsyncIterator[str]:
        """See :meth:`Client.graph_scan`."""
        _check_page_size(page_size)
        after = start_after
        while True:
            page = await self.graph_query(
                kind, id, limit=page_size, start_after=after, prefix=prefix, timeout=timeout
            )
            for item in page.ids:
                yield item
            if not page.more or not page.ids:
                return
            after = page.ids[-1]

    async def close(self) -> None:
        """Close every channel. Idempotent."""
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncWatch:
    """An async iterator of :class:`WatchEvent`; ``aclose()`` (or ``close()``) ends it.
    Resumes like :class:`Watch`."""

    def __init__(self, client: AsyncClient, cursor: _WatchCursor) -> None:
        self._client = client
        self._cursor = cursor
        self._call: Any = None
        self._buffer: list[WatchEvent] = []
        self._closed = False
        self._endpoint = ""

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            if self._call is None:
                self._endpoint = self._client._router.order(time.monotonic())[0]
                method = self._client._method(self._endpoint, "kv", "Watch")
                self._call = method(self._cursor.request())
            try:
                resp = await self._call.read()
            except asyncio.CancelledError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                await self._reconnect(exc)
                continue
            if resp is grpc.aio.EOF:
                if self._closed:
                    raise StopAsyncIteration
                await self._reconnect(None)
                continue
            self._buffer.extend(self._cursor.accept(resp))
        return self._buffer.pop(0)

    async def _reconnect(self, exc: grpc.aio.AioRpcError | None) -> None:
        self._call = None
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
        await asyncio.sleep(outcome)

    def close(self) -> None:
        """Stop the watch; a pending ``__anext__`` ends the iteration. Idempotent."""
        self._closed = True
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    async def aclose(self) -> None:
        """Same as :meth:`close`, awaitable (for ``contextlib.aclosing``)."""
        self.close()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
