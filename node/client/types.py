"""The client's values: what goes into a call and what comes back. No I/O, no gRPC.

Everything here is a frozen, slotted dataclass (or a NamedTuple where a result unpacks
as a pair), and arguments are checked when the value is built, so a malformed one
raises :class:`~node.client.errors.InvalidArgument` before any request exists:

* results: :class:`KeyValue`, :class:`PutResult`, :class:`DeleteResult`,
  :class:`RangeResult`, :class:`TxnResult`, :class:`WatchEvent`, :class:`Member`,
  :class:`NodeStatus`, :class:`EndpointStatus`, the ``Tier*`` results, :class:`DocResult`,
  :class:`GraphQueryResult`;
* transactions: :class:`Compare` (built with the ``compare_*`` helpers) and the ops
  :class:`PutOp`, :class:`DeleteOp`, :class:`RangeOp`;
* CRDT tier updates: one op value per kind the server applies (:data:`TierOp`).

How these map to and from protocol messages is :mod:`node.client.messages`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from node.client.errors import InvalidArgument, TadpoleError

__all__ = [
    "DEFAULT_ENDPOINTS",
    "Compare",
    "CompareOperator",
    "CounterAdd",
    "DeleteOp",
    "DeleteResult",
    "DocResult",
    "EndpointStatus",
    "EndpointTierStatus",
    "EventType",
    "GraphQueryKind",
    "GraphQueryResult",
    "KeyValue",
    "LogAppend",
    "MapRemove",
    "MapSet",
    "Member",
    "MethodLoad",
    "NodeStatus",
    "PutOp",
    "PutResult",
    "RangeOp",
    "RangeResult",
    "RegisterSet",
    "SetAdd",
    "SetRemove",
    "TierConsistency",
    "TierNodeStatus",
    "TierOp",
    "TierReadResult",
    "TierReplicaStatus",
    "TierScanResult",
    "TierUpdateResult",
    "TierValue",
    "TxnOp",
    "TxnResult",
    "WatchEvent",
    "compare_create_revision",
    "compare_mod_revision",
    "compare_value",
    "compare_version",
    "parse_endpoints",
]

#: The endpoints ``make cluster`` starts.
DEFAULT_ENDPOINTS: tuple[str, ...] = ("127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103")

INT64 = 2**63
"""Protocol integers are int64: a value must lie in ``[-INT64, INT64)``."""


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


def check_timeout(timeout: float) -> float:
    """``timeout`` in seconds as a float; InvalidArgument unless it is > 0."""
    if not timeout > 0:
        raise InvalidArgument(f"timeout must be > 0 seconds, got {timeout}")
    return float(timeout)


def to_bytes(value: bytes | str) -> bytes:
    """A value as bytes (a str is UTF-8 encoded); InvalidArgument for anything else."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidArgument(f"value must be bytes or str, not {type(value).__name__}")


def to_json(value: Any, what: str) -> str:
    """Strict, compact JSON (no NaN/Infinity, which other clients could not read)."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{what} is not JSON-serialisable: {exc}") from exc


def string_elements(elements: Iterable[str], what: str) -> tuple[str, ...]:
    """A collection of strings as a tuple; a lone str (or bytes) is refused, since
    iterating it would send its characters."""
    if isinstance(elements, str | bytes):
        raise InvalidArgument(
            f"{what} takes a collection of strings, not a single {type(elements).__name__}"
        )
    out = tuple(elements)
    for element in out:
        if not isinstance(element, str):
            raise InvalidArgument(f"{what} elements must be str, not {type(element).__name__}")
    return out


# -- system tier (KV, cluster) ------------------------------------------------------


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
    # Load since the node started (``tadpole top`` differences two samples).
    load: tuple[MethodLoad, ...] = ()
    latency_bounds: tuple[float, ...] = ()  # upper bounds of MethodLoad.buckets (s)
    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    # Backups the cluster runs itself: seconds since the last success (None: never, or
    # not scheduled), its id, and the last attempt's error ("" if it succeeded).
    backup_age_s: float | None = None
    backup_id: str = ""
    backup_error: str = ""


@dataclass(frozen=True, slots=True)
class MethodLoad:
    """Calls of one gRPC method a node has served since it started: how many, their
    total duration, and how many fell in each latency bucket (``NodeStatus.latency_bounds``,
    then +Inf; not cumulative)."""

    method: str
    count: int
    seconds: float
    buckets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """The outcome of asking one endpoint for its status: exactly one of ``status`` and
    ``error`` is set."""

    endpoint: str
    status: NodeStatus | None
    error: TadpoleError | None


# -- transactions -------------------------------------------------------------------

CompareOperator = Literal["==", "!=", ">", "<"]
COMPARE_RESULT = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}
COMPARE_TARGET = {"version": "VERSION", "create": "CREATE", "mod": "MOD", "value": "VALUE"}


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
        if self.op not in COMPARE_RESULT:
            raise InvalidArgument(f"compare operator {self.op!r} is not one of == != > <")
        if self.target not in COMPARE_TARGET:
            raise InvalidArgument(f"compare target {self.target!r} is unknown")


def compare_value(key: str, op: CompareOperator, value: bytes | str) -> Compare:
    """Compare the key's value (bytes; a str is UTF-8 encoded)."""
    return Compare(key, "value", op, value=to_bytes(value))


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
    """Txn op: put ``value`` at ``key`` (a str is UTF-8 encoded, as by ``put``)."""

    key: str
    value: bytes | str
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


# -- CRDT tiers: update ops ---------------------------------------------------------
#
# One class per operation of the server's TierUpdateRequest oneof (the first update of
# a key fixes its CRDT type). Construction checks what the client can know: types,
# 64-bit range, JSON-serialisability. The server's own rules (amount not 0, at most
# 1000 elements, entry ids up to 128 characters, ...) stay the server's.


@dataclass(frozen=True, slots=True)
class CounterAdd:
    """Add ``amount`` (an int; negative subtracts) to a PN-counter."""

    amount: int

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise InvalidArgument(f"counter_add amount must be an int, not {self.amount!r}")
        if not -INT64 <= self.amount < INT64:
            raise InvalidArgument(f"counter_add amount {self.amount} does not fit in 64 bits")


@dataclass(frozen=True, slots=True, init=False)
class SetAdd:
    """Add ``elements`` (a collection of strings, kept as a tuple) to an OR-set."""

    elements: tuple[str, ...]

    def __init__(self, elements: Iterable[str]) -> None:
        object.__setattr__(self, "elements", string_elements(elements, "set_add"))


@dataclass(frozen=True, slots=True, init=False)
class SetRemove:
    """Remove ``elements`` from an OR-set: every add acknowledged before the remove is
    removed (the owners' copies are joined first); an add concurrent with it wins."""

    elements: tuple[str, ...]

    def __init__(self, elements: Iterable[str]) -> None:
        object.__setattr__(self, "elements", string_elements(elements, "set_remove"))


@dataclass(frozen=True, slots=True)
class RegisterSet:
    """Set an LWW register to the JSON value ``value`` (``None`` is JSON null)."""

    value: Any

    def __post_init__(self) -> None:
        to_json(self.value, "register value")


@dataclass(frozen=True, slots=True)
class LogAppend:
    """Append the JSON ``payload`` to an event log; an ``entry_id`` already in the log
    is not appended again ("" = the server generates a fresh one)."""

    payload: Any
    entry_id: str = ""

    def __post_init__(self) -> None:
        to_json(self.payload, "log_append payload")
        if not isinstance(self.entry_id, str):
            raise InvalidArgument(f"log_append entry_id must be a str, not {self.entry_id!r}")


@dataclass(frozen=True, slots=True)
class MapSet:
    """Set ``field`` of an LWW map to the JSON value ``value``."""

    field: str
    value: Any

    def __post_init__(self) -> None:
        if not isinstance(self.field, str):
            raise InvalidArgument(f"map_set field must be a str, not {self.field!r}")
        to_json(self.value, "map_set value")


@dataclass(frozen=True, slots=True)
class MapRemove:
    """Remove ``field`` from an LWW map."""

    field: str

    def __post_init__(self) -> None:
        if not isinstance(self.field, str):
            raise InvalidArgument(f"map_remove field must be a str, not {self.field!r}")


TierOp = CounterAdd | SetAdd | SetRemove | RegisterSet | LogAppend | MapSet | MapRemove
"""One CRDT update, as :meth:`~node.client.AsyncClient.tier_update` takes it."""


# -- CRDT tiers: results ------------------------------------------------------------

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
    durably (hinted copies included), ``hinted`` owners were down and get it later;
    ``duplicate``: its request id had been applied before, so it was not applied again."""

    value: TierValue
    replicas: tuple[str, ...]
    hinted: tuple[str, ...]
    coordinator: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class TierUpdate:
    """One update of :meth:`~node.client.Client.tier_update_many`: ``op`` applied to
    ``tier``/``key``. ``request_id`` makes it safe to resend: an update whose id was
    applied before is not applied again ("" = the client makes one up)."""

    tier: str
    key: str
    op: TierOp
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class TierBatchOutcome:
    """What became of one update of a batch: applied (``error`` is None; ``duplicate``
    when its request id had been applied before and it was not applied again), or the
    error it alone failed with -- as :meth:`tier_update` would have raised it."""

    request_id: str
    error: TadpoleError | None = None
    duplicate: bool = False

    @property
    def applied(self) -> bool:
        return self.error is None


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
    # Keys found differing from an owner in two sessions running, both copies unchanged
    # in between: replicas that do not converge (should always be 0).
    divergent: int = 0


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
