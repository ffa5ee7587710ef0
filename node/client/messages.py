"""Wire conversion: client values (:mod:`node.client.types`) to protocol requests, and
responses back to values. No I/O; shared by both client flavours.

Request builders (``*_request``) check the arguments a value type cannot (limits,
enumerations, the shape of a causal token) and raise
:class:`~node.client.errors.InvalidArgument` before anything is sent. Response readers
(``*_result``) raise :class:`~node.client.errors.ServerError` when the server sent
something the protocol does not allow (a value that is not JSON). The generated
message classes are untyped, so ``Any`` marks this boundary.

Also here: the services the client calls (:data:`STUBS`), which of them take
non-idempotent CRDT writes (:data:`CRDT_SERVICES`), and the gRPC channel options.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import grpc

from node.client.errors import OUTCOME_KEY, InvalidArgument, ServerError, from_rpc_error
from node.client.types import (
    COMPARE_RESULT,
    COMPARE_TARGET,
    INT64,
    Compare,
    CounterAdd,
    DeleteOp,
    DeleteResult,
    DocResult,
    EventType,
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
    TierNodeStatus,
    TierOp,
    TierReadResult,
    TierReplicaStatus,
    TierScanResult,
    TierUpdate,
    TierUpdateResult,
    TierValue,
    TxnOp,
    TxnResult,
    WatchEvent,
    compare_mod_revision,
    compare_value,
    string_elements,
    to_bytes,
    to_json,
)
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

# -- services and channels ------------------------------------------------------------

Service = Literal["kv", "cluster", "tiers", "documents", "ledger", "auth"]

STUBS: dict[str, Any] = {
    "kv": pb_grpc.KVStub,
    "cluster": pb_grpc.ClusterStub,
    "tiers": pb_grpc.TiersStub,
    "documents": pb_grpc.DocumentsStub,
    "ledger": pb_grpc.LedgerStub,
    "auth": pb_grpc.AuthStub,
}

# Services whose writes are CRDT updates coordinated by any node: not idempotent
# (re-sent only when nothing was applied), ABORTED = below write quorum.
CRDT_SERVICES = frozenset({"tiers", "documents"})

# Metadata of a CRDT write: its attempt's deadline as wall-clock ns since the epoch. The
# key's owner refuses the write once that and the clock allowance have passed
# (node/deadline.py: a write held in the network must not land after the writes its
# client made since); a try of unknown outcome is reported only after both.
DEADLINE_KEY = "tadpole-deadline-ns"
DEADLINE_GRACE_NS = 500_000_000  # node.deadline.GRACE_NS


def write_deadline_ns(timeout_s: float) -> int:
    """Wall-clock ns at which a CRDT write try sent now with ``timeout_s`` expires."""
    return time.time_ns() + max(0, int(timeout_s * 1e9))


CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # A full unpaged range can exceed gRPC's 4 MiB default; 64 MiB is 64 maximal values.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # gRPC's default first reconnect waits 1 s; a restarted node should be usable sooner.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def answered_by(resp: Any) -> tuple[str, str]:
    """(member id, leader id) of a response. KV and Cluster responses carry a header;
    Tiers responses at most a member id, and no leader (any node coordinates)."""
    if "header" in resp.DESCRIPTOR.fields_by_name:
        return str(resp.header.member_id), str(resp.header.leader_id)
    if "member_id" in resp.DESCRIPTOR.fields_by_name:
        return str(resp.member_id), ""
    return "", ""


def new_request_id() -> str:
    """A fresh idempotency key for one logical write (resends reuse it): a UUIDv7
    (RFC 9562) in hex -- the Unix millisecond, then 74 random bits. The node that
    remembers an applied id files it by that millisecond, so the ids it keeps for the
    dedup window are written side by side rather than each at a random place."""
    ms = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10))  # 80 bits, 74 of them used
    rand_a, rand_b = rand >> 68, rand & (1 << 62) - 1
    return f"{ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b:032x}"


# -- KV ---------------------------------------------------------------------------------


def _consistency(serializable: bool) -> str:
    return "SERIALIZABLE" if serializable else "LINEARIZABLE"


def kv(msg: Any) -> KeyValue:
    return KeyValue(
        key=str(msg.key),
        value=bytes(msg.value),
        create_revision=int(msg.create_revision),
        mod_revision=int(msg.mod_revision),
        version=int(msg.version),
    )


def _opt_kv(msg: Any, field: str) -> KeyValue | None:
    return kv(getattr(msg, field)) if msg.HasField(field) else None


def get_request(key: str, serializable: bool) -> Any:
    return pb.GetRequest(key=key, consistency=_consistency(serializable))


def get_result(resp: Any) -> KeyValue | None:
    return kv(resp.kv) if resp.found else None


def put_request(key: str, value: bytes | str, prev_kv: bool) -> Any:
    """A put with a fresh request id (an idempotency key: resends reuse the request)."""
    return pb.PutRequest(
        key=key, value=to_bytes(value), prev_kv=prev_kv, request_id=new_request_id()
    )


# The access policy's keys (node.rbac.AUTH_PREFIX): a put of one is an audited admin
# action, which KV.PutMany refuses; the client sends it alone.
POLICY_PREFIX = "/tadpole/auth/"


def coalescable(request: Any) -> bool:
    """Whether a ``PutRequest``, ``GetRequest`` or ``TierUpdateRequest`` may travel in a
    ``KV.PutMany``, ``KV.GetMany`` or ``Tiers.UpdateEach`` with others: any get; a put
    unless it asks for the previous value (which ``PutMany`` does not return: the answer
    could outgrow a message) or writes the access policy (an audited admin action, sent
    alone); a tier update that adds to a counter (each update's answer carries its key's
    value: a counter's is small, a set's, log's or map's need not be)."""
    if isinstance(request, pb.TierUpdateRequest):
        return bool(request.WhichOneof("op") == "counter_add")
    if not isinstance(request, pb.PutRequest):
        return True
    if request.prev_kv:
        return False
    return not ((request.tier or "system") == "system" and request.key.startswith(POLICY_PREFIX))


def put_result(resp: Any) -> PutResult:
    return PutResult(
        revision=int(resp.header.revision),
        kv=_opt_kv(resp, "kv"),
        prev_kv=_opt_kv(resp, "prev_kv"),
    )


def delete_request(key: str, prefix: bool) -> Any:
    if not key:
        raise InvalidArgument(
            "prefix is empty: deleting every key takes delete_all()" if prefix else "key is empty"
        )
    return pb.DeleteRequest(key=key, prefix=prefix, request_id=new_request_id())


def delete_all_request() -> Any:
    return pb.DeleteRequest(all_keys=True, request_id=new_request_id())


def delete_result(resp: Any) -> DeleteResult:
    return DeleteResult(
        revision=int(resp.header.revision),
        deleted=int(resp.deleted),
        prev_kvs=tuple(kv(item) for item in resp.prev_kvs),
    )


def range_request(prefix: str, limit: int, start_after: str, serializable: bool) -> Any:
    return pb.RangeRequest(
        prefix=prefix,
        limit=limit,
        start_after=start_after,
        consistency=_consistency(serializable),
    )


def range_result(resp: Any) -> RangeResult:
    return RangeResult(
        kvs=tuple(kv(item) for item in resp.kvs),
        more=bool(resp.more),
        count=int(resp.count),
        revision=int(resp.header.revision),
    )


def _op_request(op: TxnOp) -> Any:
    if isinstance(op, PutOp):
        value = to_bytes(op.value)
        return pb.RequestOp(put=pb.PutRequest(key=op.key, value=value, prev_kv=op.prev_kv))
    if isinstance(op, DeleteOp):
        return pb.RequestOp(delete=pb.DeleteRequest(key=op.key, prefix=op.prefix))
    if isinstance(op, RangeOp):
        return pb.RequestOp(range=pb.RangeRequest(prefix=op.prefix, limit=op.limit))
    raise InvalidArgument(f"not a txn op: {op!r}")


def txn_request(
    compares: Iterable[Compare], success: Iterable[TxnOp], failure: Iterable[TxnOp]
) -> Any:
    return pb.TxnRequest(
        request_id=new_request_id(),
        compare=[
            pb.Compare(
                key=c.key,
                target=COMPARE_TARGET[c.target],
                result=COMPARE_RESULT[c.op],
                number=c.number,
                value=c.value,
            )
            for c in compares
        ],
        success=[_op_request(op) for op in success],
        failure=[_op_request(op) for op in failure],
    )


def txn_result(resp: Any) -> TxnResult:
    out: list[PutResult | DeleteResult | RangeResult] = []
    for op in resp.responses:
        which = op.WhichOneof("response")
        if which == "put":
            out.append(put_result(op.put))
        elif which == "delete":
            out.append(delete_result(op.delete))
        elif which == "range":
            out.append(range_result(op.range))
    return TxnResult(
        succeeded=bool(resp.succeeded), revision=int(resp.header.revision), responses=tuple(out)
    )


def cas_request(
    key: str,
    expected_mod_revision: int | None,
    expected_value: bytes | str | None,
    new_value: bytes | str,
) -> Any:
    """A one-compare txn: put ``new_value`` iff exactly one expectation holds."""
    new = to_bytes(new_value)
    if (expected_mod_revision is None) == (expected_value is None):
        raise InvalidArgument("cas needs exactly one of expected_mod_revision, expected_value")
    if expected_mod_revision is not None:
        compare = compare_mod_revision(key, "==", expected_mod_revision)
    else:
        assert expected_value is not None
        compare = compare_value(key, "==", expected_value)
    return txn_request([compare], [PutOp(key, new)], [])


def watch_request(key: str, prefix: bool, start_revision: int) -> Any:
    return pb.WatchRequest(key=key, prefix=prefix, start_revision=start_revision)


def event(msg: Any) -> WatchEvent:
    kind = EventType.DELETE if msg.type == pb.Event.DELETE else EventType.PUT
    return WatchEvent(type=kind, kv=kv(msg.kv), prev_kv=_opt_kv(msg, "prev_kv"))


# -- Cluster ------------------------------------------------------------------------------


def members_request(*, local_view: bool = False) -> Any:
    return pb.MembersRequest(local_view=local_view)


def members(resp: Any) -> list[Member]:
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


def status_request() -> Any:
    return pb.StatusRequest()


def status(resp: Any) -> NodeStatus:
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
        load=tuple(
            MethodLoad(
                method=str(m.method),
                count=int(m.count),
                seconds=float(m.seconds),
                buckets=tuple(int(b) for b in m.buckets),
            )
            for m in resp.load
        ),
        latency_bounds=tuple(float(b) for b in resp.latency_bounds),
        cpu_seconds=float(resp.cpu_seconds),
        rss_bytes=int(resp.rss_bytes),
        backup_age_s=float(resp.backup_age_s) if resp.backup_age_s >= 0 else None,
        backup_id=str(resp.backup_id),
        backup_error=str(resp.backup_error),
    )


def transfer_leadership_request(target_id: str) -> Any:
    return pb.TransferLeadershipRequest(target_id=target_id)


# -- CRDT tiers -------------------------------------------------------------------------

_TIER_CONSISTENCY = {"one": pb.ONE, "quorum": pb.QUORUM, "all": pb.ALL}
_TIER_OPS = "a CounterAdd, SetAdd, SetRemove, RegisterSet, LogAppend, MapSet or MapRemove"


def _tier_consistency(consistency: str | None) -> Any:
    if consistency is None:
        return pb.TIER_DEFAULT
    level = _TIER_CONSISTENCY.get(str(consistency).lower())
    if level is None:
        raise InvalidArgument(f"consistency {consistency!r} is not one of one, quorum, all")
    return level


def tier_update_request(tier: str, key: str, op: TierOp, consistency: str | None) -> Any:
    """A TierUpdateRequest carrying ``op`` in its oneof. The op checked its arguments
    when it was built; its JSON is encoded here, from the value it holds now."""
    fields: dict[str, Any]
    match op:
        case CounterAdd(amount):
            fields = {"counter_add": pb.CounterAdd(amount=amount)}
        case SetAdd(elements):
            fields = {"set_add": pb.SetElements(elements=elements)}
        case SetRemove(elements):
            fields = {"set_remove": pb.SetElements(elements=elements)}
        case RegisterSet(value):
            fields = {"register_set": pb.RegisterSet(value_json=to_json(value, "register value"))}
        case LogAppend(payload, entry_id):
            payload_json = to_json(payload, "log_append payload")
            fields = {"log_append": pb.LogAppend(entry_id=entry_id, payload_json=payload_json)}
        case MapSet(field, value):
            value_json = to_json(value, "map_set value")
            fields = {"map_set": pb.MapSet(field=field, value_json=value_json)}
        case MapRemove(field):
            fields = {"map_set": pb.MapSet(field=field, remove=True)}
        case _:
            what = "None" if op is None else type(op).__name__
            raise InvalidArgument(
                f"a tier update takes exactly one operation ({_TIER_OPS}), not {what}"
            )
    return pb.TierUpdateRequest(
        tier=tier, key=key, consistency=_tier_consistency(consistency), **fields
    )


def check_request_id(request_id: Any) -> str:
    """A caller's request id, as a string (the server checks its length and form)."""
    if not isinstance(request_id, str):
        raise InvalidArgument(f"request_id must be a str, not {type(request_id).__name__}")
    return request_id


def tier_update_requests(updates: Iterable[TierUpdate]) -> tuple[list[Any], list[str]]:
    """The TierUpdateRequests of a batch, every update with a request id (made up where
    it has none, so a resent batch applies nothing twice); and those ids, in order."""
    requests, ids = [], []
    for update in updates:
        if not isinstance(update, TierUpdate):
            raise InvalidArgument(
                f"tier_update_many takes TierUpdate items, not {type(update).__name__}"
            )
        request = tier_update_request(update.tier, update.key, update.op, None)
        request.request_id = update.request_id or new_request_id()
        requests.append(request)
        ids.append(request.request_id)
    return requests, ids


def tier_update_many_request(requests: Sequence[Any]) -> Any:
    return pb.TierUpdateManyRequest(updates=requests)


class _ItemStatus(Exception):
    """One batched update's status, shaped like a gRPC error for from_rpc_error."""

    def __init__(self, code: grpc.StatusCode, message: str, outcome: str) -> None:
        super().__init__(message)
        self._code, self._message, self._outcome = code, message, outcome

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((OUTCOME_KEY, self._outcome),)


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def tier_update_many_result(resp: Any, ids: list[str]) -> list[TierBatchOutcome]:
    if len(resp.results) != len(ids):
        raise ServerError(f"the server answered {len(resp.results)} of {len(ids)} updates")
    outcomes = []
    for rid, item in zip(ids, resp.results, strict=True):
        if item.code == 0:
            outcomes.append(TierBatchOutcome(rid, duplicate=bool(item.duplicate)))
            continue
        code = _CODES.get(item.code, grpc.StatusCode.UNKNOWN)
        status = _ItemStatus(code, str(item.message), str(item.outcome))
        outcomes.append(TierBatchOutcome(rid, error=from_rpc_error(status, write=True, tiers=True)))
    return outcomes


def _tier_value(msg: Any) -> TierValue:
    text = str(msg.value_json)
    try:
        value = json.loads(text) if text else None
    except ValueError as exc:
        raise ServerError(f"the server sent a value that is not JSON: {exc}") from exc
    return TierValue(type=str(msg.type), value=value)


def tier_update_result(resp: Any) -> TierUpdateResult:
    return TierUpdateResult(
        value=_tier_value(resp.value),
        replicas=tuple(str(r) for r in resp.replicas),
        hinted=tuple(str(h) for h in resp.hinted),
        coordinator=str(resp.member_id),
        duplicate=bool(resp.duplicate),
    )


def tier_read_request(tier: str, key: str, consistency: str | None) -> Any:
    return pb.TierReadRequest(tier=tier, key=key, consistency=_tier_consistency(consistency))


def tier_read_result(resp: Any) -> TierReadResult:
    return TierReadResult(
        found=bool(resp.found),
        value=_tier_value(resp.value) if resp.found else None,
        replicas=tuple(str(r) for r in resp.replicas),
        repaired=int(resp.repaired),
        coordinator=str(resp.member_id),
    )


def tier_scan_request(tier: str, prefix: str, limit: int, start_after: str) -> Any:
    if limit < 0:
        raise InvalidArgument(f"limit must be >= 0, got {limit}")
    return pb.TierScanRequest(tier=tier, prefix=prefix, limit=limit, start_after=start_after)


def tier_scan_result(resp: Any) -> TierScanResult:
    return TierScanResult(keys=tuple(str(k) for k in resp.keys), more=bool(resp.more))


def tier_status_request() -> Any:
    return pb.TierStatusRequest()


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
            divergent=int(t.divergent),
        )
        for t in tiers
    )


def tier_status(resp: Any) -> TierNodeStatus:
    return TierNodeStatus(member_id=str(resp.member_id), tiers=_tier_rows(resp.tiers))


# -- documents ----------------------------------------------------------------------------

_GRAPH_KIND = {
    "meshes_of_agent": pb.GraphQueryRequest.MESHES_OF_AGENT,
    "members_of_mesh": pb.GraphQueryRequest.MEMBERS_OF_MESH,
    "neighbours": pb.GraphQueryRequest.NEIGHBOURS,
}


def _doc_json(doc: Any, what: str) -> str:
    if not isinstance(doc, Mapping):
        raise InvalidArgument(f"{what} must be a JSON object (a dict), not {type(doc).__name__}")
    return to_json(dict(doc), what)


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
        if not 0 <= counter < INT64:
            raise InvalidArgument(f"causal_token[{writer!r}] = {counter} is not in [0, 2**63)")
    if "causal_token" not in request.DESCRIPTOR.fields_by_name:
        raise InvalidArgument(f"{request.DESCRIPTOR.name} carries no causal_token in this protocol")
    request.causal_token.update(token)
    return request


def doc_put_request(
    tier: str, doc_id: str, doc: Any, *, create: bool, causal_token: Mapping[str, int] | None
) -> Any:
    what = "the document" if create else "the fields"
    request = pb.DocPutRequest(tier=tier, id=doc_id, doc_json=_doc_json(doc, what), create=create)
    return _with_causal_token(request, causal_token)


def doc_get_request(
    tier: str, doc_id: str, consistency: str | None, causal_token: Mapping[str, int] | None
) -> Any:
    request = pb.DocGetRequest(tier=tier, id=doc_id, consistency=_tier_consistency(consistency))
    return _with_causal_token(request, causal_token)


def doc_delete_request(tier: str, doc_id: str) -> Any:
    return pb.DocGetRequest(tier=tier, id=doc_id)


def doc_result(resp: Any) -> DocResult:
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


def doc_get_result(resp: Any) -> DocResult | None:
    return doc_result(resp) if resp.found else None


def mesh_members_request(mesh_id: str, add: Iterable[str], remove: Iterable[str]) -> Any:
    added, removed = string_elements(add, "add"), string_elements(remove, "remove")
    if not added and not removed:
        raise InvalidArgument("give agent ids to add and/or remove")
    return pb.MeshMembersRequest(mesh_id=mesh_id, add=added, remove=removed)


def capability_add_request(
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


def graph_query_request(kind: str, node_id: str, limit: int, start_after: str, prefix: str) -> Any:
    which = _GRAPH_KIND.get(kind)
    if which is None:
        raise InvalidArgument(f"graph query kind {kind!r} is not one of {', '.join(_GRAPH_KIND)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgument(f"limit must be an int >= 0, got {limit!r}")
    return pb.GraphQueryRequest(
        kind=which, id=node_id, limit=limit, start_after=start_after, prefix=prefix
    )


def graph_query_result(resp: Any) -> GraphQueryResult:
    return GraphQueryResult(ids=tuple(str(i) for i in resp.ids), more=bool(resp.more))


# -- the ledger ---------------------------------------------------------------------------

LEDGER_READS = frozenset({"GetJob", "Pools", "ExportStatus", "Report"})


def auth_request(user: str, password: str) -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(user=user, password=password)


def ledger_request(args: Mapping[str, Any] | None, request_id: str | None) -> Any:
    return pb.LedgerCall(
        args_json=json.dumps(dict(args or {})), request_id=request_id or new_request_id()
    )


def ledger_result(resp: Any) -> Any:
    return json.loads(resp.result_json)
