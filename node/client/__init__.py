"""The Tadpole State Python client: sync :class:`Client` and asyncio :class:`AsyncClient`.

Both flavours have the same surface and the same behaviour (one is generated from the
other)::

    with Client(["127.0.0.1:7101", "127.0.0.1:7102"]) as c:
        rev = c.put("config/a", b"1").revision
        kv = c.get("config/a")
        swapped = c.cas("config/a", expected_mod_revision=rev, new_value=b"2")
        c.tier_update("metrics", "jobs/done", CounterAdd(1))
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

**Coalescing** (:mod:`node.client.coalesce`): concurrent ``put`` and ``get`` calls to
one endpoint share gRPC calls. While two calls of a kind to an endpoint are in flight,
the next wait and leave together as one ``KV.PutMany`` / ``KV.GetMany`` (up to 1,000,
1 MiB); each is still answered, retried and timed out exactly as a lone call (its own
request id, deadline, revision, error). A lone caller waits for nothing (the asyncio
client sends what its callers asked for in one turn of the event loop together). A put with
``prev_kv`` or of the access policy always goes alone; a call still queued when its
try's deadline passes was never sent and is tried elsewhere (as UNAVAILABLE). Single
tier updates that add to a counter travel the same way in ``Tiers.UpdateEach`` (each
answered with its own value, replicas and duplicate flag; a batch carries the earliest
of its updates' write deadlines); other tier ops go alone, as their answer carries the
key's whole value.

**CRDT tiers** (``tier_update`` with one typed op such as :class:`CounterAdd` or
:class:`MapSet`, the per-type shortcuts ``counter_add``, ``set_add``, ..., and
``tier_read``, ``tier_scan``, ``tier_status``) go to the ``Tiers`` service, which any
node coordinates. Values are JSON: the client encodes what you pass and decodes what
it gets. Tier updates carry no request id and are *not* idempotent (a counter add sent
twice counts twice), so an update is re-sent only when the failure proves nothing was
applied: the server's outcome ``not-applied``, or a connection that could not be opened.
Any other ``UNAVAILABLE`` after sending is
:class:`~node.client.errors.OutcomeUnknown`; ``ABORTED`` (below the write quorum, but durable on
some replica and converging) is :class:`~node.client.errors.ReplicationIncomplete`, never re-sent.
Tier reads, scans and status calls are retried like KV reads. Every tier and document
write try also carries its deadline as a wall-clock time (``tadpole-deadline-ns``); the
key's owner refuses it after that plus 500 ms of clock allowance, and an
``OutcomeUnknown`` is raised only once that has passed here too, so the write it reports
cannot land behind the caller's next one (the call may end up to 0.5 s after its
``timeout``).

**Batched tier updates** (``tier_update_many``) carry a request id on every update (made
up where you give none), so a batch is resent like a system-tier write. The client
splits a batch by each key's *first owner* -- the member that coordinates the key --
computed as the nodes compute it (rendezvous placement, :mod:`node.placement`) over the
live members of a ``Cluster.Members`` answer (asked again after
``PLACEMENT_REFRESH_S``), and calls those members at once (the blocking client from a
thread each); each call tries its owner first and fails over as usual. A node that gets a
key it does not coordinate (a stale view) forwards it, so a stale view costs a hop, not
an update. A batch sent as several calls is answered per update (see
``tier_update_many``): a node that refuses its call refuses only that call's updates.
Member addresses are those the nodes advertise; a client that cannot reach them still
works (the try falls over to the next endpoint), paying a failed first try per
``cooldown_s``.

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

**Modules.** The public names are re-exported here; behind them:

* :mod:`node.client.types`: values in and out (results, txn compares and ops, the CRDT
  tier ops), checked when built;
* :mod:`node.client.messages`: values to protocol requests and responses back;
* :mod:`node.client.attempts`: retry policy, endpoint routing, the retry rules (pure);
* :mod:`node.client.cursor`: where a watch stands, so it resumes without gaps;
* :mod:`node.client.errors`: the exception tree;
* ``_async.py``: :class:`AsyncClient` and :class:`AsyncWatch`, the one hand-written
  client, over the asyncio I/O helpers of ``_async_io.py``;
* ``_sync.py``: :class:`Client` and :class:`Watch`, *generated* from ``_async.py`` by
  ``python -m node.client.unasync`` (``make client``) over the blocking helpers of
  ``_sync_io.py``; never edit it by hand (a unit test fails when it is stale);
* :mod:`node.client.unasync`: that generator (a development tool, never imported);
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node.client._sync import Client, Watch
from node.client.attempts import RetryPolicy
from node.client.errors import (
    AlreadyExists,
    Compacted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    ReplicationIncomplete,
    ServerError,
    TadpoleError,
    Timeout,
    Unauthenticated,
    Unavailable,
    WriteTimeout,
)
from node.client.messages import new_request_id
from node.client.types import (
    DEFAULT_ENDPOINTS,
    Compare,
    CounterAdd,
    DeleteOp,
    DeleteResult,
    DocResult,
    EndpointStatus,
    EndpointTierStatus,
    EventType,
    GraphQueryKind,
    GraphQueryResult,
    KeyValue,
    LogAppend,
    MapRemove,
    MapSet,
    Member,
    MethodLoad,
    NodeStatus,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
    RegisterSet,
    SetAdd,
    SetRemove,
    TierBatchOutcome,
    TierConsistency,
    TierNodeStatus,
    TierOp,
    TierReadResult,
    TierReplicaStatus,
    TierScanResult,
    TierUpdate,
    TierUpdateResult,
    TierValue,
    TxnResult,
    WatchEvent,
    compare_create_revision,
    compare_mod_revision,
    compare_value,
    compare_version,
    parse_endpoints,
)

__all__ = [
    "DEFAULT_ENDPOINTS",
    "AlreadyExists",
    "AsyncClient",
    "AsyncWatch",
    "Client",
    "Compacted",
    "Compare",
    "CounterAdd",
    "DeleteOp",
    "DeleteResult",
    "DocResult",
    "EndpointStatus",
    "EndpointTierStatus",
    "EventType",
    "FailedPrecondition",
    "GraphQueryKind",
    "GraphQueryResult",
    "InvalidArgument",
    "KeyValue",
    "LogAppend",
    "MapRemove",
    "MapSet",
    "Member",
    "MethodLoad",
    "NodeStatus",
    "NotFound",
    "OutcomeUnknown",
    "PermissionDenied",
    "PutOp",
    "PutResult",
    "RangeOp",
    "RangeResult",
    "RegisterSet",
    "ReplicationIncomplete",
    "RetryPolicy",
    "ServerError",
    "SetAdd",
    "SetRemove",
    "TadpoleError",
    "TierBatchOutcome",
    "TierConsistency",
    "TierNodeStatus",
    "TierOp",
    "TierReadResult",
    "TierReplicaStatus",
    "TierScanResult",
    "TierUpdate",
    "TierUpdateResult",
    "TierValue",
    "Timeout",
    "TxnResult",
    "Unauthenticated",
    "Unavailable",
    "Watch",
    "WatchEvent",
    "WriteTimeout",
    "compare_create_revision",
    "compare_mod_revision",
    "compare_value",
    "compare_version",
    "new_request_id",
    "parse_endpoints",
]

if TYPE_CHECKING:
    from node.client._async import AsyncClient, AsyncWatch


def __getattr__(name: str) -> Any:
    # The asyncio flavour loads asyncio and grpc.aio (~60 ms); a blocking caller such
    # as the CLI never pays for it.
    if name in ("AsyncClient", "AsyncWatch"):
        from node.client import _async

        return getattr(_async, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
