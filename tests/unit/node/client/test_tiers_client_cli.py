"""Tiers client (sync and asyncio) and ``tadpole tier`` CLI against a fake Tiers service.

The fake below is written for these tests: plain Python values stand in for the CRDTs
(a counter is an int, a set a sorted list, ...), and it honours the servicer's status
contract (node/api/tiers.py): INVALID_ARGUMENT for bad input, UNAVAILABLE "...; nothing
applied" when no owner answered, ABORTED below write quorum. Failures are injected per
method. Like tests/unit/node/client/test_client_cli.py it runs on a loopback port, because what is
under test is the client's handling of real gRPC status codes; retry back-off is zero,
so nothing sleeps.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from click.testing import CliRunner

from node import errors as server
from node.cli import app as cli_module
from node.client import (
    AsyncClient,
    Client,
    CounterAdd,
    LogAppend,
    MapRemove,
    MapSet,
    RegisterSet,
    SetAdd,
    SetRemove,
    TierUpdate,
    TierValue,
)
from node.client.errors import (
    InvalidArgument,
    OutcomeUnknown,
    ReplicationIncomplete,
    Unavailable,
    WriteTimeout,
    from_rpc_error,
)
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.placement import placement_key, ranking
from tests.support.client_helpers import FAST, client_for, dead_endpoint, rpc_error
from tests.support.fake_cluster import FakeNode, FakeServers, Transport

S = grpc.StatusCode
TIERS = ("population", "agent", "mesh", "metrics")
NOTHING_APPLIED = "metrics/k: none of its owners (n2, n3) answered; nothing applied"
BELOW_QUORUM = (
    "population/job_event_log/j1: the update is durable on n1 but reached 1 of the 2 "
    "required replicas; it will converge when the owners are back (resending would apply "
    "it twice)"
)


# -- fake backend --------------------------------------------------------------------


_TYPE_OF = {
    "counter_add": "pncounter",
    "set_add": "orset",
    "set_remove": "orset",
    "register_set": "lwwregister",
    "log_append": "eventlog",
    "map_set": "lwwmap",
}


def _bad(context: grpc.ServicerContext, message: str) -> None:
    context.abort(S.INVALID_ARGUMENT, message)


class FakeTiers(pb_grpc.TiersServicer):  # type: ignore[misc]
    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.cluster = node.cluster

    def _check(self, tier: str, key: str, context: grpc.ServicerContext) -> None:
        if tier not in TIERS:
            _bad(context, f"unknown tier {tier!r}: the Tiers API serves {', '.join(TIERS)}")
        if not key:
            _bad(context, "key is empty")
        if tier == "population" and "/" not in key:
            _bad(context, f"population key {key!r} must be <subspace>/<id>")

    def Update(self, request: Any, context: Any) -> Any:
        self.node.enter("Update", request, context)
        self._check(request.tier, request.key, context)
        which = request.WhichOneof("op")
        if which is None:
            _bad(context, "update has no operation set")
        with self.cluster.lock:
            slot = (request.tier, request.key)
            kind, value = self.cluster.data.get(slot, (_TYPE_OF[which], None))
            if kind != _TYPE_OF[which]:
                _bad(context, f"the key holds a {kind}; {which} applies to a {_TYPE_OF[which]}")
            if which == "counter_add":
                if request.counter_add.amount == 0:
                    _bad(context, "counter_add amount must not be 0")
                value = (value or 0) + request.counter_add.amount
            elif which == "set_add":
                value = sorted(set(value or ()) | set(request.set_add.elements))
            elif which == "set_remove":
                value = sorted(set(value or ()) - set(request.set_remove.elements))
            elif which == "register_set":
                value = json.loads(request.register_set.value_json)
            elif which == "log_append":
                entry_id = request.log_append.entry_id or f"e{len(value or ())}"
                log = list(value or ())
                if all(e["entry_id"] != entry_id for e in log):
                    payload = json.loads(request.log_append.payload_json)
                    log.append({"entry_id": entry_id, "payload": payload})
                value = log
            else:
                fields = dict(value or {})
                if request.map_set.remove:
                    fields.pop(request.map_set.field, None)
                else:
                    fields[request.map_set.field] = json.loads(request.map_set.value_json)
                value = fields
            self.cluster.data[slot] = (kind, value)
        return pb.TierUpdateResponse(
            member_id=self.node.id,
            value=pb.TierValue(type=kind, value_json=json.dumps(value, sort_keys=True)),
            replicas=self.cluster.replicas,
            hinted=self.cluster.hinted,
        )

    def Read(self, request: Any, context: Any) -> Any:
        self.node.enter("Read", request, context)
        self._check(request.tier, request.key, context)
        with self.cluster.lock:
            held = self.cluster.data.get((request.tier, request.key))
        resp = pb.TierReadResponse(
            member_id=self.node.id,
            found=held is not None,
            replicas=self.cluster.replicas,
            repaired=1 if request.consistency == pb.ALL else 0,
        )
        if held is not None:
            resp.value.type = held[0]
            resp.value.value_json = json.dumps(held[1], sort_keys=True)
        return resp

    def Scan(self, request: Any, context: Any) -> Any:
        self.node.enter("Scan", request, context)
        with self.cluster.lock:
            keys = sorted(
                k
                for t, k in self.cluster.data
                if t == request.tier and k.startswith(request.prefix) and k > request.start_after
            )
        page = keys[: request.limit] if request.limit else keys
        return pb.TierScanResponse(keys=page, more=len(page) < len(keys))

    def Status(self, request: Any, context: Any) -> Any:
        self.node.enter("Status", request, context)
        rows = [
            pb.TierReplicaStatus(
                tier=t,
                rf=3 if t == "metrics" else 2,
                local_keys=sum(1 for tier, _ in self.cluster.data if tier == t),
                under_replicated=1 if t == "mesh" else 0,
                hints_pending=2 if t == "population" else 0,
                last_sync_age_s=-1.0 if t == "agent" else 1.25,
                oldest_hint_age_s=300.0 if t == "population" else 0.0,
                divergent=1 if t == "mesh" else 0,
            )
            for t in TIERS
        ]
        return pb.TierStatusResponse(member_id=self.node.id, tiers=rows)

    def UpdateMany(self, request: Any, context: Any) -> Any:
        """Counter adds only, each applied; enough to see where a batch went."""
        self.node.enter("UpdateMany", request, context)
        with self.cluster.lock:
            for u in request.updates:
                _, value = self.cluster.data.get((u.tier, u.key), ("pncounter", 0))
                self.cluster.data[(u.tier, u.key)] = ("pncounter", value + u.counter_add.amount)
        return pb.TierUpdateManyResponse(
            member_id=self.node.id,
            results=[pb.TierUpdateOutcome(outcome="applied") for _ in request.updates],
        )


class FakeMembers(pb_grpc.ClusterServicer):  # type: ignore[misc]
    """Every fake node alive in gossip, as a node's Members answer says."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node

    def Members(self, request: Any, context: Any) -> Any:
        self.node.enter("Members", request, context)
        return pb.MembersResponse(
            members=[
                pb.Member(id=n.id, address=n.address, gossip_status="alive",
                          is_self=n is self.node)
                for n in self.node.cluster.nodes
            ]
        )  # fmt: skip


class FakeCluster(FakeServers[FakeNode]):
    """Fake nodes over one shared tier store; ``members``: they answer Members too (a
    client then routes updates to each key's first owner)."""

    def __init__(self, size: int, *, members: bool = False) -> None:
        self.lock = threading.Lock()
        self.data: dict[tuple[str, str], tuple[str, Any]] = {}
        self.replicas: list[str] = ["n1", "n2"]
        self.hinted: list[str] = []

        def register(node: FakeNode, server: grpc.Server) -> None:
            pb_grpc.add_TiersServicer_to_server(FakeTiers(node), server)
            if members:
                pb_grpc.add_ClusterServicer_to_server(FakeMembers(node), server)

        super().__init__(size, register, lambda node_id: FakeNode(node_id, self), workers=4)


@pytest.fixture
def one() -> Iterator[FakeCluster]:
    c = FakeCluster(1)
    yield c
    c.stop()


@pytest.fixture
def three() -> Iterator[FakeCluster]:
    c = FakeCluster(3)
    yield c
    c.stop()


# -- error mapping (pure) ------------------------------------------------------------


def test_aborted_from_the_tiers_service_is_replication_incomplete() -> None:
    err = from_rpc_error(rpc_error(S.ABORTED, BELOW_QUORUM), write=True, tiers=True)
    assert type(err) is ReplicationIncomplete
    assert isinstance(err, OutcomeUnknown)
    assert "do not resend" in str(err) and err.details == BELOW_QUORUM
    # The KV meaning of ABORTED ("leadership changed in flight") is unchanged.
    assert type(from_rpc_error(rpc_error(S.ABORTED, "x"), write=True)) is OutcomeUnknown


# -- requests --------------------------------------------------------------------------

UPDATE_CASES: list[tuple[str, Callable[[Client], Any], Any]] = [
    (
        "counter",
        lambda c: c.counter_add("metrics", "k", -3),
        pb.TierUpdateRequest(tier="metrics", key="k", counter_add=pb.CounterAdd(amount=-3)),
    ),
    (
        "set-add",
        lambda c: c.set_add("agent", "a1", "x", "y"),
        pb.TierUpdateRequest(tier="agent", key="a1", set_add=pb.SetElements(elements=["x", "y"])),
    ),
    (
        "set-remove",
        lambda c: c.set_remove("agent", "a1", "x"),
        pb.TierUpdateRequest(tier="agent", key="a1", set_remove=pb.SetElements(elements=["x"])),
    ),
    (
        "register",
        lambda c: c.register_set("mesh", "m", {"b": [1, 2.5], "a": None}),
        pb.TierUpdateRequest(
            tier="mesh", key="m", register_set=pb.RegisterSet(value_json='{"b":[1,2.5],"a":null}')
        ),
    ),
    (
        "register-null",
        lambda c: c.tier_update("mesh", "m", RegisterSet(None)),
        pb.TierUpdateRequest(tier="mesh", key="m", register_set=pb.RegisterSet(value_json="null")),
    ),
    (
        "log-append",
        lambda c: c.log_append("population", "job_event_log/j1", {"ev": "start"}, "e-1"),
        pb.TierUpdateRequest(
            tier="population",
            key="job_event_log/j1",
            log_append=pb.LogAppend(entry_id="e-1", payload_json='{"ev":"start"}'),
        ),
    ),
    (
        "map-set",
        lambda c: c.map_set("agent", "cfg", "mode", "fast"),
        pb.TierUpdateRequest(
            tier="agent", key="cfg", map_set=pb.MapSet(field="mode", value_json='"fast"')
        ),
    ),
    (
        "map-remove",
        lambda c: c.map_remove("agent", "cfg", "mode"),
        pb.TierUpdateRequest(tier="agent", key="cfg", map_set=pb.MapSet(field="mode", remove=True)),
    ),
    (
        "consistency",
        lambda c: c.tier_update("metrics", "k", CounterAdd(1), consistency="all"),
        pb.TierUpdateRequest(
            tier="metrics", key="k", counter_add=pb.CounterAdd(amount=1), consistency=pb.ALL
        ),
    ),
]


@pytest.mark.parametrize(
    ("call", "expected"), [c[1:] for c in UPDATE_CASES], ids=[c[0] for c in UPDATE_CASES]
)
def test_each_update_kind_builds_its_request(
    one: FakeCluster, call: Callable[[Client], Any], expected: Any
) -> None:
    with client_for(one.endpoints) as c:
        call(c)
    assert one.nodes[0].requests["Update"] == [expected]


LOCAL_MISTAKES: list[tuple[str, Callable[[Client], Any], str]] = [
    (
        "no-op",
        lambda c: c.tier_update("metrics", "k", None),  # type: ignore[arg-type]
        "exactly one operation .*, not None",
    ),
    (
        "two-ops",
        lambda c: c.tier_update("metrics", "k", (CounterAdd(1), SetAdd(["a"]))),  # type: ignore[arg-type]
        "exactly one operation .*, not tuple",
    ),
    (
        "untyped-op",
        lambda c: c.tier_update("metrics", "k", {"counter_add": 1}),  # type: ignore[arg-type]
        "exactly one operation .*, not dict",
    ),
    ("bool-amount", lambda c: c.counter_add("metrics", "k", True), "must be an int"),
    ("huge-amount", lambda c: c.counter_add("metrics", "k", 2**63), "64 bits"),
    ("str-elements", lambda c: c.tier_update("agent", "s", SetAdd("abc")), "not a single str"),
    ("int-element", lambda c: c.set_add("agent", "s", 1), "must be str"),  # type: ignore[arg-type]
    ("not-json", lambda c: c.register_set("mesh", "m", {1, 2}), "not JSON-serialisable"),
    ("nan", lambda c: c.register_set("mesh", "m", float("nan")), "not JSON-serialisable"),
    (
        "non-str-entry-id",
        lambda c: c.tier_update("agent", "m", LogAppend("x", 7)),  # type: ignore[arg-type]
        "entry_id must be a str",
    ),
    ("map-field", lambda c: c.map_set("agent", "m", 1, "v"), "field must be a str"),  # type: ignore[arg-type]
    (
        "consistency",
        lambda c: c.tier_read("agent", "m", consistency="most"),  # type: ignore[arg-type]
        "not one of one, quorum, all",
    ),
    ("limit", lambda c: c.tier_scan("agent", limit=-1), "limit must be >= 0"),
]


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in LOCAL_MISTAKES], ids=[c[0] for c in LOCAL_MISTAKES]
)
def test_local_mistakes_are_invalid_argument_before_any_call(
    one: FakeCluster, call: Callable[[Client], Any], message: str
) -> None:
    with client_for(one.endpoints) as c, pytest.raises(InvalidArgument, match=message):
        call(c)
    assert one.nodes[0].calls == {}


# -- typed ops -------------------------------------------------------------------------

SHORTCUTS: list[tuple[str, Callable[[Client], Any], Any]] = [
    ("counter", lambda c: c.counter_add("metrics", "k", -3), CounterAdd(-3)),
    ("set-add", lambda c: c.set_add("agent", "a1", "x", "y"), SetAdd(["x", "y"])),
    ("set-remove", lambda c: c.set_remove("agent", "a1", "x"), SetRemove(["x"])),
    ("register", lambda c: c.register_set("mesh", "m", {"a": [1]}), RegisterSet({"a": [1]})),
    ("log", lambda c: c.log_append("mesh", "l", {"ev": 1}, "e-1"), LogAppend({"ev": 1}, "e-1")),
    ("log-fresh-id", lambda c: c.log_append("mesh", "l", None), LogAppend(None)),
    ("map-set", lambda c: c.map_set("agent", "cfg", "mode", "fast"), MapSet("mode", "fast")),
    ("map-remove", lambda c: c.map_remove("agent", "cfg", "mode"), MapRemove("mode")),
]


@pytest.mark.parametrize(
    ("shortcut", "op"), [c[1:] for c in SHORTCUTS], ids=[c[0] for c in SHORTCUTS]
)
def test_each_shortcut_is_tier_update_with_its_op(
    one: FakeCluster, shortcut: Callable[[Client], Any], op: Any
) -> None:
    with client_for(one.endpoints) as c:
        shortcut(c)
        sent = one.nodes[0].requests["Update"][-1]
        c.tier_update(sent.tier, sent.key, op)
        c.tier_update(sent.tier, sent.key, op=op)
    assert one.nodes[0].requests["Update"] == [sent, sent, sent]


def test_ops_are_frozen_values_checked_when_built() -> None:
    assert SetAdd(iter(["b", "a"])) == SetAdd(("b", "a"))  # any iterable, kept as a tuple
    assert SetAdd(["a"]).elements == ("a",)
    assert LogAppend({"x": 1}) == LogAppend({"x": 1}, "")
    assert CounterAdd(1) != CounterAdd(2)
    assert hash(MapRemove("f")) == hash(MapRemove("f"))
    with pytest.raises(AttributeError):
        CounterAdd(1).amount = 2  # type: ignore[misc]
    with pytest.raises(InvalidArgument, match="set_remove elements must be str, not bytes"):
        SetRemove([b"x"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match="map_set value is not JSON-serialisable"):
        MapSet("f", object())
    with pytest.raises(InvalidArgument, match="map_remove field must be a str"):
        MapRemove(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="log_append payload is not JSON-serialisable"):
        LogAppend(float("inf"))
    with pytest.raises(InvalidArgument, match="does not fit in 64 bits"):
        CounterAdd(-(2**63) - 1)
    assert CounterAdd(-(2**63)).amount == -(2**63)


def test_ops_are_exported_from_the_package() -> None:
    import node.client

    for name in ("CounterAdd", "SetAdd", "SetRemove", "RegisterSet", "LogAppend", "MapSet",
                 "MapRemove", "TierOp"):  # fmt: skip
        assert name in node.client.__all__, name
        assert getattr(node.client, name) is not None


# -- sync client ---------------------------------------------------------------------


def test_json_values_round_trip(one: FakeCluster) -> None:
    doc = {"name": "tädpole", "n": 12345678901234, "f": -0.5, "ok": True, "none": None,
           "nested": {"list": [1, "two", [3]], "empty": {}}}  # fmt: skip
    with client_for(one.endpoints) as c:
        assert c.register_set("mesh", "m", doc).value == TierValue("lwwregister", doc)
        c.map_set("agent", "cfg", "limits", {"cpu": 2})
        c.log_append("population", "job_event_log/j1", ["a", 1], "e1")
        c.log_append("population", "job_event_log/j1", ["a", 1], "e1")  # same id: deduped
        read = c.tier_read("mesh", "m")
        assert (read.found, read.value, read.replicas) == (True, TierValue("lwwregister", doc),
                                                           ("n1", "n2"))  # fmt: skip
        cfg = c.tier_read("agent", "cfg").value
        assert cfg == TierValue("lwwmap", {"limits": {"cpu": 2}})
        log = c.tier_read("population", "job_event_log/j1").value
        assert log is not None and log.value == [{"entry_id": "e1", "payload": ["a", 1]}]
        missing = c.tier_read("mesh", "nope")
        assert (missing.found, missing.value) == (False, None)


def test_update_result_carries_value_replicas_hinted_coordinator(three: FakeCluster) -> None:
    three.replicas, three.hinted = ["n3", "n2"], ["n1"]
    with client_for(three.endpoints[1:]) as c:
        c.counter_add("metrics", "k", 10)
        result = c.counter_add("metrics", "k", 5)
    assert result.value == TierValue("pncounter", 15)
    assert (result.replicas, result.hinted, result.coordinator) == (("n3", "n2"), ("n1",), "n2")


def test_update_is_resent_when_the_server_says_nothing_was_applied(one: FakeCluster) -> None:
    node = one.nodes[0]
    node.inject("Update", server.Unavailable(NOTHING_APPLIED), times=2)
    with client_for(one.endpoints) as c:
        assert c.counter_add("metrics", "k", 5).value.value == 5
    assert node.calls["Update"] == 3
    assert one.data[("metrics", "k")] == ("pncounter", 5)


def test_update_fails_over_from_an_endpoint_that_refused_the_connection(
    one: FakeCluster,
) -> None:
    with client_for([dead_endpoint(), *one.endpoints]) as c:
        assert c.counter_add("metrics", "k", 1).value.value == 1
        assert c.counter_add("metrics", "k", 1).value.value == 2
    assert one.calls("Update") == 2


def test_aborted_update_is_not_resent(three: FakeCluster) -> None:
    n1 = three.nodes[0]
    n1.inject("Update", server.ReplicationIncomplete(BELOW_QUORUM), times=FAST.attempts)
    with client_for(three.endpoints) as c, pytest.raises(ReplicationIncomplete) as info:
        c.log_append("population", "job_event_log/j1", {"ev": "start"})
    assert three.calls("Update") == 1
    assert BELOW_QUORUM in str(info.value)
    assert isinstance(info.value.__cause__, grpc.RpcError)


@pytest.mark.parametrize("details", ["Socket closed", "node shutting down"])
def test_update_unavailable_after_sending_is_outcome_unknown_not_resent(
    three: FakeCluster, details: str
) -> None:
    three.nodes[0].inject("Update", Transport(S.UNAVAILABLE, details))
    with client_for(three.endpoints) as c, pytest.raises(OutcomeUnknown) as info:
        c.counter_add("metrics", "k", 1)
    assert type(info.value) is OutcomeUnknown
    assert "not resent" in str(info.value)
    assert three.calls("Update") == 1


def test_update_deadline_is_a_write_timeout_not_resent(one: FakeCluster) -> None:
    one.nodes[0].inject("Update", TimeoutError("replicas slow"))
    with client_for(one.endpoints) as c, pytest.raises(WriteTimeout):
        c.counter_add("metrics", "k", 1)
    assert one.calls("Update") == 1


def test_update_invalid_argument_is_raised_at_once(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c, pytest.raises(InvalidArgument, match="subspace"):
        c.counter_add("population", "flat", 1)
    assert one.calls("Update") == 1


def test_a_batch_goes_to_each_keys_owner_and_a_refused_call_fails_its_updates_alone() -> None:
    three = FakeCluster(3, members=True)
    try:
        _routes_and_fails_alone(three)
    finally:
        three.stop()


def _routes_and_fails_alone(three: FakeCluster) -> None:
    keys = [f"job_resource_ledger/j{i}" for i in range(60)]
    owner = {k: ranking(placement_key("population", k), ["n1", "n2", "n3"])[0] for k in keys}
    assert set(owner.values()) == {"n1", "n2", "n3"}
    n2 = three.nodes[1]
    n2.inject("UpdateMany", server.InvalidArgument("update 3: bad"))
    updates = [TierUpdate("population", k, CounterAdd(1)) for k in keys]
    with client_for([three.nodes[0].address]) as c:  # it learns the others from Members
        outcomes = c.tier_update_many(updates)
        for node in three.nodes:  # each call held exactly the keys that node coordinates
            sent = [u.key for r in node.requests.get("UpdateMany", []) for u in r.updates]
            assert sent == [k for k in keys if owner[k] == node.id]
        for key, outcome in zip(keys, outcomes, strict=True):
            if owner[key] == "n2":
                assert isinstance(outcome.error, InvalidArgument), outcome
            else:
                assert outcome.applied and three.data[("population", key)] == ("pncounter", 1)
        for node in three.nodes:  # a single update goes to its key's owner first too
            node.calls.pop("Update", None)
        c.counter_add("population", keys[0], 1)
        assert [n.calls.get("Update", 0) for n in three.nodes] == [
            1 if owner[keys[0]] == n.id else 0 for n in three.nodes
        ]
        c.BATCH = 8  # n2's keys now take several calls: after a failed one, none is sent
        n2.inject("UpdateMany", server.InvalidArgument("update 3: bad"))
        mine = [i for i, k in enumerate(keys) if owner[k] == "n2"]
        calls = n2.calls.get("UpdateMany", 0)
        outcomes = c.tier_update_many(updates)
        assert n2.calls["UpdateMany"] == calls + 1
        assert all(isinstance(outcomes[i].error, InvalidArgument) for i in mine[:8])
        assert all(type(outcomes[i].error) is Unavailable for i in mine[8:]) and mine[8:]
        assert "not sent" in str(outcomes[mine[-1]].error)
        del c.BATCH
        for node in three.nodes:  # every call refused: each update says so
            node.inject("UpdateMany", server.InvalidArgument("no"))
        assert all(isinstance(o.error, InvalidArgument) for o in c.tier_update_many(updates))
        n2.inject("UpdateMany", server.InvalidArgument("no"))  # a batch in one call: raised
        with pytest.raises(InvalidArgument):
            c.tier_update_many([u for u in updates if owner[u.key] == "n2"])


def test_reads_scans_and_status_are_retried_like_kv_reads(three: FakeCluster) -> None:
    n1, n2, _ = three.nodes
    n1.inject("Read", server.Unavailable("metrics/k: 0 of 1 owners answered (n2)"))
    n2.inject("Scan", TimeoutError("scan timed out"))  # n2: preferred after the read
    with client_for(three.endpoints) as c:
        c.counter_add("metrics", "k", 2)
        read = c.tier_read("metrics", "k", consistency="all")
        assert (read.value, read.repaired) == (TierValue("pncounter", 2), 1)
        assert c.tier_scan("metrics") == (("k",), False)
    assert three.calls("Read") == 2 and three.calls("Scan") == 2
    assert [r.consistency for n in three.nodes for r in n.requests.get("Read", [])] == [
        pb.ALL,
        pb.ALL,
    ]


def test_reads_give_up_with_unavailable() -> None:
    with client_for([dead_endpoint()]) as c, pytest.raises(Unavailable):
        c.tier_read("metrics", "k")


def test_scan_pages_with_limit_and_start_after(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        for i in (3, 1, 2):
            c.counter_add("population", f"job_resource_ledger/j{i}", i)
        c.counter_add("population", "worker_journal/w1", 1)
        keys, more = c.tier_scan("population", "job_resource_ledger/", limit=2)
        assert (keys, more) == (("job_resource_ledger/j1", "job_resource_ledger/j2"), True)
        rest = c.tier_scan("population", "job_resource_ledger/", start_after=keys[-1])
        assert rest.keys == ("job_resource_ledger/j3",) and not rest.more
    assert one.nodes[0].requests["Scan"][0] == pb.TierScanRequest(
        tier="population", prefix="job_resource_ledger/", limit=2
    )


def test_tier_status_of_one_and_every_endpoint(three: FakeCluster) -> None:
    with client_for([*three.endpoints, dead_endpoint()]) as c:
        status = c.tier_status(three.endpoints[1])
        assert status.member_id == "n2"
        assert [(t.tier, t.rf, t.hints_pending) for t in status.tiers][::3] == [
            ("population", 2, 2),
            ("metrics", 3, 0),
        ]
        every = c.tier_status_all()
    assert [e.status.member_id if e.status else None for e in every] == ["n1", "n2", "n3", None]
    assert isinstance(every[-1].error, Unavailable)


# -- asyncio client ------------------------------------------------------------------

TIER_METHODS = ("tier_update", "counter_add", "set_add", "set_remove", "register_set",
                "log_append", "map_set", "map_remove", "tier_read", "tier_scan", "tier_status",
                "tier_status_all")  # fmt: skip


def test_async_client_has_the_same_tier_surface() -> None:
    for name in TIER_METHODS:
        sync, aio = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.iscoroutinefunction(aio), name
        assert inspect.signature(sync) == inspect.signature(aio), name


async def test_async_tier_calls(three: FakeCluster) -> None:
    n1 = three.nodes[0]
    n1.inject("Update", server.Unavailable(NOTHING_APPLIED))
    async with AsyncClient([dead_endpoint(), *three.endpoints], retry=FAST) as c:
        assert (await c.counter_add("metrics", "k", 4)).value == TierValue("pncounter", 4)
        added = await c.tier_update("metrics", "k", CounterAdd(-1), consistency="all")
        assert added.value == TierValue("pncounter", 3)
        await c.set_add("agent", "s", "b", "a")
        await c.set_remove("agent", "s", "b")
        await c.register_set("mesh", "r", [1, {"x": None}])
        await c.log_append("mesh", "log", "hello", "e1")
        await c.map_set("agent", "m", "f", 1)
        await c.map_remove("agent", "m", "f")
        assert (await c.tier_read("agent", "s")).value == TierValue("orset", ["a"])
        assert (await c.tier_read("mesh", "r")).value == TierValue("lwwregister", [1, {"x": None}])
        assert (await c.tier_read("agent", "m")).value == TierValue("lwwmap", {})
        assert (await c.tier_scan("agent")).keys == ("m", "s")
        assert (await c.tier_status(three.endpoints[2])).member_id == "n3"
        every = await c.tier_status_all()
        assert [e.status is not None for e in every] == [False, True, True, True]
        updates_before = three.calls("Update")
        for node in three.nodes:
            node.inject("Update", server.ReplicationIncomplete(BELOW_QUORUM))
        with pytest.raises(ReplicationIncomplete):
            await c.counter_add("metrics", "k", 1)
        assert three.calls("Update") == updates_before + 1
        for node in three.nodes:
            node.failures.clear()
        with pytest.raises(InvalidArgument, match="unknown tier"):
            await c.tier_read("system", "k")


# -- CLI -------------------------------------------------------------------------------


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the CLI with fast retries; returns the click Result."""
    monkeypatch.setattr(cli_module, "Client", lambda *a, **kw: Client(*a, retry=FAST, **kw))
    runner = CliRunner()

    def invoke(endpoints: list[str], *args: str) -> Any:
        return runner.invoke(cli_module.cli, ["--endpoints", ",".join(endpoints), *args])

    return invoke


CLI_UPDATES: list[tuple[list[str], str]] = [
    (["add", "metrics", "k", "15"], "OK pncounter=15 replicas=n1,n2\n"),
    (["add", "metrics", "k", "-3"], "OK pncounter=12 replicas=n1,n2\n"),
    (["set-add", "agent", "s", "b", "a"], 'OK orset=["a","b"] replicas=n1,n2\n'),
    (["set-remove", "agent", "s", "b"], 'OK orset=["a"] replicas=n1,n2\n'),
    (["put", "mesh", "r", '{"x": [1, null]}'], 'OK lwwregister={"x":[1,null]} replicas=n1,n2\n'),
    (["append", "mesh", "log", '"hi"', "--entry-id", "e1"],
     "OK eventlog=<1 entries> replicas=n1,n2\n"),
    # The same entry id again: deduplicated, still one entry.
    (["append", "mesh", "log", '"hi"', "--entry-id", "e1"],
     "OK eventlog=<1 entries> replicas=n1,n2\n"),
    (["map-set", "agent", "m", "f", "2.5"], 'OK lwwmap={"f":2.5} replicas=n1,n2\n'),
]  # fmt: skip


def test_cli_update_commands_print_one_ok_line(one: FakeCluster, run: Any) -> None:
    for args, expected in CLI_UPDATES:
        result = run(one.endpoints, "tier", *args)
        assert (result.exit_code, result.stdout, result.stderr) == (0, expected, ""), args
    requests = one.nodes[0].requests["Update"]
    assert requests[4].register_set.value_json == '{"x":[1,null]}'
    assert requests[5].log_append == pb.LogAppend(entry_id="e1", payload_json='"hi"')


def test_cli_update_shows_hinted_owners(one: FakeCluster, run: Any) -> None:
    one.replicas, one.hinted = ["n3", "n2"], ["n1"]
    result = run(one.endpoints, "tier", "add", "population", "job_resource_ledger/j1", "15")
    assert result.stdout == "OK pncounter=15 replicas=n3,n2 hinted=n1\n"


def test_cli_tier_get_prints_the_value_alone(one: FakeCluster, run: Any) -> None:
    run(one.endpoints, "tier", "put", "mesh", "r", '{"b": 1, "a": "x"}')
    got = run(one.endpoints, "tier", "get", "mesh", "r")
    assert (got.exit_code, got.stderr) == (0, "")
    assert json.loads(got.stdout) == {"a": "x", "b": 1} and got.stdout.count("\n") == 1
    full = run(one.endpoints, "tier", "get", "mesh", "r", "--consistency", "QUORUM", "--json")
    assert json.loads(full.stdout) == {
        "type": "lwwregister",
        "value": {"a": "x", "b": 1},
        "replicas": ["n1", "n2"],
        "repaired": 0,
    }
    assert one.nodes[0].requests["Read"][-1].consistency == pb.QUORUM
    missing = run(one.endpoints, "tier", "get", "mesh", "nope")
    assert (missing.exit_code, missing.stdout) == (1, "")
    assert missing.stderr == "error: key not found: mesh/nope\n"


def test_cli_invalid_argument_exits_2_with_the_server_message(one: FakeCluster, run: Any) -> None:
    result = run(one.endpoints, "tier", "add", "system", "k", "1")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: invalid argument: unknown tier 'system': "
        "the Tiers API serves population, agent, mesh, metrics\n"
    )


def test_cli_bad_json_exits_2_without_a_call(one: FakeCluster, run: Any) -> None:
    result = run(one.endpoints, "tier", "put", "mesh", "r", "{nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: JSON is not valid JSON:")
    assert len(result.stderr.splitlines()) == 1
    assert one.calls("Update") == 0


def test_cli_aborted_update_exits_1_with_one_line_and_one_call(
    three: FakeCluster, run: Any
) -> None:
    for node in three.nodes:
        node.inject("Update", server.ReplicationIncomplete(BELOW_QUORUM))
    result = run(three.endpoints, "tier", "add", "population", "job_resource_ledger/j1", "1")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: replication incomplete")
    assert "do not resend" in lines[0]
    assert three.calls("Update") == 1


def test_cli_tier_scan_lists_keys_and_says_when_cut(one: FakeCluster, run: Any) -> None:
    for key in ("b", "a", "c"):
        run(one.endpoints, "tier", "add", "agent", key, "1")
    assert run(one.endpoints, "tier", "scan", "agent").stdout == "a\nb\nc\n"
    cut = run(one.endpoints, "tier", "scan", "agent", "", "--limit", "2")
    assert (cut.stdout, cut.stderr) == ("a\nb\n", "(more keys: --start-after b)\n")


def test_cli_tier_status_has_one_section_per_node(three: FakeCluster, run: Any) -> None:
    dead = dead_endpoint()
    run(three.endpoints, "tier", "add", "metrics", "k", "1")
    result = run([*three.endpoints[:2], dead], "tier", "status")
    assert result.exit_code == 0
    sections = result.stdout.rstrip("\n").split("\n\n")
    assert [s.splitlines()[0] for s in sections] == [
        f"n1 ({three.endpoints[0]})",
        f"n2 ({three.endpoints[1]})",
        f"{dead}: unreachable",
    ]
    table = [line.split() for line in sections[0].splitlines()[1:]]
    assert table == [
        ["TIER", "RF", "LOCAL-KEYS", "UNDER-REPLICATED", "HINTS-PENDING", "OLDEST-HINT",
         "LAST-SYNC", "DIVERGENT"],
        ["population", "2", "0", "0", "2", "5m", "1.2s", "0"],
        ["agent", "2", "0", "0", "0", "-", "never", "0"],
        ["mesh", "2", "0", "1", "0", "-", "1.2s", "1"],
        ["metrics", "3", "1", "0", "0", "-", "1.2s", "0"],
    ]  # fmt: skip
    assert result.stderr.startswith(f"{dead}: unavailable")
    doc = json.loads(run(three.endpoints, "tier", "status", "--json").stdout)
    assert [d["member_id"] for d in doc] == ["n1", "n2", "n3"]
    assert doc[0]["tiers"][1] == {
        "tier": "agent",
        "rf": 2,
        "local_keys": 0,
        "under_replicated": 0,
        "hints_pending": 0,
        "last_sync_age_s": -1.0,
        "oldest_hint_age_s": 0.0,
        "divergent": 0,
    }
    nobody = run([dead], "tier", "status")
    assert nobody.exit_code == 1
