"""Client (sync and asyncio) and CLI against a fake in-process gRPC backend.

The backend below is a dict-backed KV written for these tests, honouring the server's
error contract, with failures injected per method. It runs on a loopback port (the one
exception to "no sockets in tests/unit": what is under test is the client's handling of
real gRPC status codes, metadata and streams). Retry back-off is zero, so nothing sleeps.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from click.testing import CliRunner

from consensus.errors import NotLeaderError, OutcomeUnknownError, ProposalTimeout
from node.cli import app as cli_module
from node.client import (
    AsyncClient,
    Client,
    DeleteOp,
    EventType,
    PutOp,
    RangeOp,
    RetryPolicy,
    compare_mod_revision,
    compare_value,
)
from node.client.errors import (
    Compacted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    ServerError,
    Timeout,
    Unavailable,
    WriteTimeout,
    from_rpc_error,
)
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from tests.support.client_helpers import FAST, client_for, dead_endpoint, rpc_error
from tests.support.fake_cluster import FakeNode, FakeServers, Transport

S = grpc.StatusCode


# -- fake backend --------------------------------------------------------------------


class Store:
    """Revisioned KV shared by the fake nodes of one cluster."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.data: dict[str, pb.KeyValue] = {}
        self.revision = 0
        self.history: list[pb.Event] = []
        self.compact_revision = 0

    def put(self, key: str, value: bytes, rev: int) -> tuple[pb.KeyValue, pb.KeyValue | None]:
        prev = self.data.get(key)
        kv = pb.KeyValue(
            key=key,
            value=value,
            create_revision=prev.create_revision if prev else rev,
            mod_revision=rev,
            version=prev.version + 1 if prev else 1,
        )
        self.data[key] = kv
        self.history.append(pb.Event(type=pb.Event.PUT, kv=kv, prev_kv=prev))
        return kv, prev

    def delete(self, key: str, prefix: bool, rev: int) -> list[pb.KeyValue]:
        keys = [k for k in self.data if k.startswith(key)] if prefix else [key]
        gone = [self.data.pop(k) for k in keys if k in self.data]
        for prev in gone:
            tomb = pb.KeyValue(key=prev.key, mod_revision=rev)
            self.history.append(pb.Event(type=pb.Event.DELETE, kv=tomb, prev_kv=prev))
        return gone

    def range(self, prefix: str, limit: int, start_after: str) -> pb.RangeResponse:
        keys = sorted(k for k in self.data if k.startswith(prefix))
        after = [k for k in keys if k > start_after]
        page = after[:limit] if limit else after
        return pb.RangeResponse(
            kvs=[self.data[k] for k in page], more=len(page) < len(after), count=len(keys)
        )

    def compare(self, c: pb.Compare) -> bool:
        kv = self.data.get(c.key)
        if c.target == pb.Compare.VALUE:
            if kv is None:
                return False
            actual: Any = kv.value
            expected: Any = c.value
        else:
            field_name = {pb.Compare.VERSION: "version", pb.Compare.CREATE: "create_revision"}
            name = field_name.get(c.target, "mod_revision")
            actual, expected = (getattr(kv, name) if kv else 0), c.number
        return bool(
            {
                pb.Compare.EQUAL: actual == expected,
                pb.Compare.NOT_EQUAL: actual != expected,
                pb.Compare.GREATER: actual > expected,
                pb.Compare.LESS: actual < expected,
            }[c.result]
        )


class KVNode(FakeNode):
    """A fake node of the KV/Cluster services."""

    cluster: FakeCluster

    def __init__(self, node_id: str, cluster: FakeCluster) -> None:
        super().__init__(node_id, cluster)
        # Break the next watch stream with UNAVAILABLE after this many events (once).
        self.break_watch_after: int | None = None

    def request_ids(self, method: str) -> list[str]:
        return [r.request_id for r in self.requests.get(method, [])]

    def header(self) -> pb.ResponseHeader:
        return pb.ResponseHeader(
            revision=self.cluster.store.revision,
            member_id=self.id,
            raft_term=1,
            leader_id=self.cluster.leader_id,
        )


def _need_key(key: str, context: grpc.ServicerContext) -> None:
    if not key:
        context.abort(S.INVALID_ARGUMENT, "key is empty")


class FakeKV(pb_grpc.KVServicer):
    def __init__(self, node: KVNode) -> None:
        self.node = node
        self.store = node.cluster.store

    def Get(self, request: Any, context: Any) -> Any:
        self.node.enter("Get", request, context)
        _need_key(request.key, context)
        with self.store.cond:
            kv = self.store.data.get(request.key)
            return pb.GetResponse(header=self.node.header(), found=kv is not None, kv=kv)

    def Put(self, request: Any, context: Any) -> Any:
        self.node.enter("Put", request, context)
        _need_key(request.key, context)
        with self.store.cond:
            self.store.revision += 1
            kv, prev = self.store.put(request.key, request.value, self.store.revision)
            self.store.cond.notify_all()
            return pb.PutResponse(
                header=self.node.header(), kv=kv, prev_kv=prev if request.prev_kv else None
            )

    def Delete(self, request: Any, context: Any) -> Any:
        self.node.enter("Delete", request, context)
        if not request.all_keys:
            _need_key(request.key, context)
        with self.store.cond:
            key, prefix = ("", True) if request.all_keys else (request.key, request.prefix)
            gone = self.store.delete(key, prefix, self.store.revision + 1)
            if gone:
                self.store.revision += 1
                self.store.cond.notify_all()
            return pb.DeleteResponse(header=self.node.header(), deleted=len(gone))

    def Range(self, request: Any, context: Any) -> Any:
        self.node.enter("Range", request, context)
        with self.store.cond:
            resp = self.store.range(request.prefix, request.limit, request.start_after)
            resp.header.CopyFrom(self.node.header())
            return resp

    def Txn(self, request: Any, context: Any) -> Any:
        self.node.enter("Txn", request, context)
        with self.store.cond:
            ok = all(self.store.compare(c) for c in request.compare)
            rev = self.store.revision + 1
            changed = False
            responses = []
            for op in request.success if ok else request.failure:
                which = op.WhichOneof("request")
                if which == "put":
                    kv, _ = self.store.put(op.put.key, op.put.value, rev)
                    responses.append(pb.ResponseOp(put=pb.PutResponse(kv=kv)))
                    changed = True
                elif which == "delete":
                    gone = self.store.delete(op.delete.key, op.delete.prefix, rev)
                    changed = changed or bool(gone)
                    responses.append(pb.ResponseOp(delete=pb.DeleteResponse(deleted=len(gone))))
                else:
                    r = self.store.range(op.range.prefix, op.range.limit, "")
                    responses.append(pb.ResponseOp(range=r))
            if changed:
                self.store.revision = rev
                self.store.cond.notify_all()
            return pb.TxnResponse(header=self.node.header(), succeeded=ok, responses=responses)

    def Watch(self, request: Any, context: Any) -> Iterator[Any]:
        self.node.enter("Watch", request, context)
        _need_key(request.key, context)
        store = self.store
        with store.cond:
            if 0 < request.start_revision <= store.compact_revision:
                context.abort(
                    S.OUT_OF_RANGE,
                    f"revisions up to {store.compact_revision} were compacted; "
                    f"watch from revision {store.compact_revision + 1} or later",
                )
            cursor = request.start_revision or store.revision + 1
        done = threading.Event()

        def wake() -> None:
            done.set()
            with store.cond:
                store.cond.notify_all()

        context.add_callback(wake)
        yield pb.WatchResponse(header=self.node.header())  # "created"
        sent = 0
        while True:
            with store.cond:
                store.cond.wait_for(lambda c=cursor: done.is_set() or store.revision >= c)
                if done.is_set():
                    return
                events = [
                    e
                    for e in store.history
                    if e.kv.mod_revision >= cursor
                    and (
                        e.kv.key.startswith(request.key)
                        if request.prefix
                        else e.kv.key == request.key
                    )
                ]
                cursor = store.revision + 1
                header = self.node.header()
            for event in events:  # one event per response: exercises resume mid-revision
                if self.node.break_watch_after is not None and sent >= self.node.break_watch_after:
                    self.node.break_watch_after = None
                    context.abort(S.UNAVAILABLE, "node shutting down")
                yield pb.WatchResponse(header=header, events=[event])
                sent += 1


class FakeClusterServicer(pb_grpc.ClusterServicer):
    def __init__(self, node: KVNode) -> None:
        self.node = node

    def Members(self, request: Any, context: Any) -> Any:
        self.node.enter("Members", request, context)
        cluster = self.node.cluster
        members = [
            pb.Member(
                id=n.id,
                address=n.address,
                raft_role="leader" if n.id == cluster.leader_id else "follower",
                term=1,
                commit_index=cluster.store.revision,
                applied_index=cluster.store.revision,
                status="alive",
                is_self=n is self.node,
            )
            for n in cluster.nodes
        ]
        return pb.MembersResponse(header=self.node.header(), members=members)

    def Status(self, request: Any, context: Any) -> Any:
        self.node.enter("Status", request, context)
        cluster = self.node.cluster
        return pb.StatusResponse(
            header=self.node.header(),
            id=self.node.id,
            raft_role="leader" if self.node.id == cluster.leader_id else "follower",
            term=1,
            keys=len(cluster.store.data),
            has_quorum=True,
        )

    def TransferLeadership(self, request: Any, context: Any) -> Any:
        self.node.enter("TransferLeadership", request, context)
        cluster = self.node.cluster
        ids = {n.id for n in cluster.nodes}
        if request.target_id and request.target_id not in ids:
            context.abort(S.NOT_FOUND, f"unknown node id {request.target_id!r}")
        if request.target_id in cluster.lagging:
            context.abort(S.FAILED_PRECONDITION, f"{request.target_id} is not caught up")
        cluster.leader_id = request.target_id or next(
            i for i in sorted(ids) if i != cluster.leader_id
        )
        return pb.TransferLeadershipResponse(header=self.node.header(), leader_id=cluster.leader_id)


class FakeCluster(FakeServers[KVNode]):
    """Fake nodes over one store; ``endpoints`` lists their addresses."""

    def __init__(self, size: int, leader_id: str = "n1") -> None:
        self.store = Store()
        self.leader_id = leader_id
        self.lagging: set[str] = set()

        def register(node: KVNode, server: grpc.Server) -> None:
            pb_grpc.add_KVServicer_to_server(FakeKV(node), server)
            pb_grpc.add_ClusterServicer_to_server(FakeClusterServicer(node), server)

        super().__init__(size, register, lambda node_id: KVNode(node_id, self))


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    c = FakeCluster(3)
    yield c
    c.stop()


@pytest.fixture
def one() -> Iterator[FakeCluster]:
    c = FakeCluster(1)
    yield c
    c.stop()


# -- error mapping (pure) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "write", "expected"),
    [
        (S.INVALID_ARGUMENT, False, InvalidArgument),
        (S.NOT_FOUND, True, NotFound),
        (S.FAILED_PRECONDITION, True, FailedPrecondition),
        (S.OUT_OF_RANGE, False, Compacted),
        (S.UNAVAILABLE, True, Unavailable),
        (S.ABORTED, True, OutcomeUnknown),
        (S.DEADLINE_EXCEEDED, False, Timeout),
        (S.DEADLINE_EXCEEDED, True, WriteTimeout),
        (S.CANCELLED, True, OutcomeUnknown),
        (S.CANCELLED, False, Unavailable),
        (S.INTERNAL, False, ServerError),
    ],
)
def test_from_rpc_error_maps_every_contract_code(
    code: grpc.StatusCode, write: bool, expected: type[Exception]
) -> None:
    err = from_rpc_error(rpc_error(code, "why"), write=write)
    assert type(err) is expected
    assert err.code == code.name
    assert err.details == "why"


def test_from_rpc_error_reads_hints_and_compact_revision() -> None:
    err = from_rpc_error(
        rpc_error(S.UNAVAILABLE, "no leader", tadpole_leader_id="n2", tadpole_leader_address="h:2")
    )
    assert isinstance(err, Unavailable)
    assert (err.leader_id, err.leader_address) == ("n2", "h:2")
    compacted = from_rpc_error(rpc_error(S.OUT_OF_RANGE, "revisions up to 41 were compacted"))
    assert isinstance(compacted, Compacted)
    assert (compacted.compact_revision, compacted.oldest_revision) == (41, 42)
    assert isinstance(from_rpc_error(rpc_error(S.INVALID_ARGUMENT)), ValueError)
    assert isinstance(WriteTimeout("x"), Timeout)
    # A write its key's owner refused past the deadline was not applied: a plain Timeout.
    fenced = from_rpc_error(
        rpc_error(S.DEADLINE_EXCEEDED, "after the deadline", tadpole_outcome="not-applied"),
        write=True,
    )
    assert type(fenced) is Timeout


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.4, multiplier=2.0, jitter=0.5)
    rng = random.Random(1)
    delays = [policy.backoff_s(r, rng) for r in range(6)]
    for r, d in enumerate(delays):
        base = min(0.4, 0.1 * 2**r)
        assert base * 0.5 <= d <= base
    with pytest.raises(InvalidArgument):
        RetryPolicy(attempts=0)


# -- sync client ---------------------------------------------------------------------


def test_put_get_delete_roundtrip(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        first = c.put("a", "1")
        second = c.put("a", b"2", prev_kv=True)
        assert second.revision == first.revision + 1
        assert second.prev_kv is not None and second.prev_kv.value == b"1"
        kv = c.get("a")
        assert kv is not None
        assert (kv.value, kv.version, kv.create_revision) == (b"2", 2, first.revision)
        assert c.delete("a") == 1
        assert c.get("a") is None


def test_retries_unavailable_then_succeeds(one: FakeCluster) -> None:
    node = one.nodes[0]
    node.inject("Get", NotLeaderError("no leader"), times=3)
    with client_for(one.endpoints) as c:
        assert c.get("missing") is None
    assert node.calls["Get"] == 4


def test_gives_up_after_attempts_with_unavailable(one: FakeCluster) -> None:
    node = one.nodes[0]
    node.inject("Put", NotLeaderError("no leader"), times=10)
    with client_for(one.endpoints) as c, pytest.raises(Unavailable) as info:
        c.put("k", "v")
    assert node.calls["Put"] == FAST.attempts
    assert "no leader" in str(info.value)
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_aborted_write_is_resent_with_the_same_request_id(one: FakeCluster) -> None:
    """An unknown outcome is safe to resend because the server applies a request id
    at most once; the resend must carry the *same* id, and the next write a new one."""
    node = one.nodes[0]
    node.inject("Put", OutcomeUnknownError("leadership changed"))
    with client_for(one.endpoints) as c:
        c.put("k", "v")
        c.put("k", "w")
    first, resend, second = node.request_ids("Put")
    assert first and first == resend and second != first


def test_aborted_write_without_request_id_is_not_retried(one: FakeCluster) -> None:
    node = one.nodes[0]
    node.inject("Put", OutcomeUnknownError("leadership changed"), times=FAST.attempts + 1)
    with client_for(one.endpoints) as c, pytest.raises(OutcomeUnknown) as info:
        c._call("kv", "Put", pb.PutRequest(key="k", value=b"v"), write=True, timeout=None)
    assert node.calls["Put"] == 1
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_write_whose_outcome_stays_unknown_raises_outcome_unknown(one: FakeCluster) -> None:
    node = one.nodes[0]
    node.inject("Put", OutcomeUnknownError("leadership changed"), times=FAST.attempts + 1)
    with client_for(one.endpoints) as c, pytest.raises(OutcomeUnknown):
        c.put("k", "v")
    assert node.calls["Put"] == FAST.attempts
    assert len(set(node.request_ids("Put"))) == 1


def test_deadline_is_retried_for_reads_and_idempotent_writes_only(one: FakeCluster) -> None:
    node = one.nodes[0]
    node.inject("Get", ProposalTimeout("read index timed out"))
    node.inject("Txn", ProposalTimeout("commit timed out"))
    with client_for(one.endpoints) as c:
        assert c.get("k") is None
        assert c.cas("k", expected_mod_revision=0, new_value="v")
        bare = pb.TxnRequest(success=[pb.RequestOp(put=pb.PutRequest(key="j", value=b"1"))])
        node.inject("Txn", ProposalTimeout("commit timed out"))
        with pytest.raises(WriteTimeout):
            c._call("kv", "Txn", bare, write=True, timeout=None)
    assert (node.calls["Get"], node.calls["Txn"]) == (2, 3)


def test_connection_lost_mid_write_is_resent_with_the_same_request_id(one: FakeCluster) -> None:
    """A put carries a request id the cluster applies at most once, so a connection lost
    after sending is resent like an ABORTED put, never answered with a guess."""
    node = one.nodes[0]
    node.inject("Put", Transport(S.UNAVAILABLE, "Socket closed"))
    with client_for(one.endpoints) as c:
        assert c.put("k", "v").revision == 1
    assert node.calls["Put"] == 2
    first, resend = node.request_ids("Put")
    assert first == resend != ""


def test_connection_lost_mid_write_without_request_id_is_outcome_unknown(
    one: FakeCluster,
) -> None:
    node = one.nodes[0]
    node.inject("Txn", Transport(S.UNAVAILABLE, "Socket closed"))
    bare = pb.TxnRequest(success=[pb.RequestOp(put=pb.PutRequest(key="j", value=b"1"))])
    with client_for(one.endpoints) as c, pytest.raises(OutcomeUnknown, match="not resent"):
        c._call("kv", "Txn", bare, write=True, timeout=None)
    assert node.calls["Txn"] == 1


def test_invalid_argument_is_raised_at_once(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c, pytest.raises(InvalidArgument, match="key is empty"):
        c.put("", "v")
    assert one.nodes[0].calls["Put"] == 1


def test_fails_over_to_the_next_endpoint_and_sticks(one: FakeCluster) -> None:
    live = one.nodes[0]
    with client_for([dead_endpoint(), live.address]) as c:
        c.put("k", "v")
        c.put("k", "w")
        assert c.get("k") is not None
    assert (live.calls["Put"], live.calls["Get"]) == (2, 1)


def test_every_endpoint_down_raises_unavailable() -> None:
    with client_for([dead_endpoint(), dead_endpoint()]) as c, pytest.raises(Unavailable):
        c.get("k")


def test_discovers_the_leader_and_prefers_it(cluster: FakeCluster) -> None:
    cluster.leader_id = "n2"
    n1, n2, _ = cluster.nodes
    with client_for([n1.address, cluster.nodes[2].address]) as c:  # leader not configured
        c.put("k", "1")
        c.put("k", "2")
        c.put("k", "3")
        assert n2.address in c.endpoints
    assert (n1.calls.get("Put"), n2.calls.get("Put")) == (1, 2)
    assert n1.calls["Members"] == 1


def test_follows_the_leader_hint_in_trailing_metadata(cluster: FakeCluster) -> None:
    n1, n2, n3 = cluster.nodes
    n1.inject("Put", NotLeaderError("not the leader"), leader=("n3", n3.address))
    with client_for([n1.address, n2.address], prefer_leader=True) as c:
        c.put("k", "v")
    assert (n1.calls["Put"], n2.calls.get("Put"), n3.calls["Put"]) == (1, None, 1)


def test_cas_on_revision_and_value(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        assert c.cas("k", expected_mod_revision=0, new_value="a")  # create if absent
        assert not c.cas("k", expected_mod_revision=0, new_value="b")
        kv = c.get("k")
        assert kv is not None
        assert c.cas("k", expected_mod_revision=kv.mod_revision, new_value="b")
        assert not c.cas("k", expected_value="a", new_value="c")
        assert c.cas("k", expected_value=b"b", new_value="c")
        assert c.get("k") == c.get("k") and c.get("k").value == b"c"  # type: ignore[union-attr]
        with pytest.raises(InvalidArgument):
            c.cas("k", new_value="x")


def test_txn_runs_the_branch_the_compares_pick(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        c.put("cfg/a", "1")
        result = c.txn(
            [compare_value("cfg/a", "==", "1")],
            [PutOp("cfg/b", b"2"), RangeOp("cfg/")],
            [DeleteOp("cfg/", prefix=True)],
        )
        assert result.succeeded
        put, rng = result.responses
        assert put.kv is not None and put.kv.key == "cfg/b"  # type: ignore[union-attr]
        assert [kv.key for kv in rng.kvs] == ["cfg/a", "cfg/b"]  # type: ignore[union-attr]
        result = c.txn(
            [compare_mod_revision("cfg/a", ">", 100)], [], [DeleteOp("cfg/", prefix=True)]
        )
        assert not result.succeeded
        assert c.range("cfg/").count == 0
        c.txn([], [PutOp("cfg/s", "text")])  # a str value, as put takes one
        kv = c.get("cfg/s")
        assert kv is not None and kv.value == b"text"
        with pytest.raises(InvalidArgument, match="bytes or str, not int"):
            c.txn([], [PutOp("cfg/n", 5)])  # type: ignore[arg-type]


def test_range_limits_and_scan_pages(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        for k in ["p/3", "p/1", "p/5", "p/2", "p/4", "q/1"]:
            c.put(k, k)
        page = c.range("p/", limit=2)
        assert ([kv.key for kv in page.kvs], page.more, page.count) == (["p/1", "p/2"], True, 5)
        assert [kv.key for kv in c.scan("p/", page_size=2)] == [f"p/{i}" for i in range(1, 6)]
    assert one.nodes[0].calls["Range"] == 1 + 3


def test_watch_replays_history_then_follows_live_changes(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        first = c.put("w/a", "1").revision
        c.put("other", "x")
        c.delete("w/a")
        with c.watch("w/", prefix=True, start_revision=first) as events:
            e1, e2 = next(events), next(events)
            assert (e1.type, e1.kv.key, e1.kv.value) == (EventType.PUT, "w/a", b"1")
            assert (e2.type, e2.prev_kv.value if e2.prev_kv else None) == (EventType.DELETE, b"1")
            live = c.put("w/b", "2").revision
            e3 = next(events)
            assert (e3.kv.key, e3.revision) == ("w/b", live)


def test_watch_resumes_after_a_broken_stream_without_gaps_or_repeats(cluster: FakeCluster) -> None:
    n1 = cluster.nodes[0]
    n1.break_watch_after = 2
    with client_for(cluster.endpoints) as c:
        c.put("w/a", "1")
        c.txn([], [PutOp("w/b", b"2"), PutOp("w/c", b"3")])  # two events, one revision
        c.put("w/d", "4")
        with c.watch("w/", prefix=True, start_revision=1) as events:
            got = [next(events).kv.key for _ in range(4)]
    assert got == ["w/a", "w/b", "w/c", "w/d"]
    assert n1.calls["Watch"] == 1
    assert sum(n.calls.get("Watch", 0) for n in cluster.nodes) == 2


def test_watch_of_compacted_history_raises(one: FakeCluster) -> None:
    one.store.compact_revision = 10
    with client_for(one.endpoints) as c, pytest.raises(Compacted) as info:
        next(c.watch("k", start_revision=3))
    assert info.value.compact_revision == 10


def test_watch_close_from_another_thread_ends_iteration(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        watch = c.watch("k")
        seen: list[Any] = []
        started = threading.Event()

        def consume() -> None:
            started.set()
            seen.extend(watch)

        thread = threading.Thread(target=consume)
        thread.start()
        started.wait(5)
        c.put("k", "v")
        watch.close()
        thread.join(5)
        assert not thread.is_alive()
        assert len(seen) <= 1


def test_cluster_calls(cluster: FakeCluster) -> None:
    cluster.lagging.add("n3")
    with client_for([*cluster.endpoints, dead_endpoint()]) as c:
        members = c.members()
        assert [(m.id, m.is_leader) for m in members] == [
            ("n1", True),
            ("n2", False),
            ("n3", False),
        ]
        assert c.status(cluster.nodes[1].address).id == "n2"
        statuses = c.status_all()
        assert [s.status.id if s.status else None for s in statuses] == ["n1", "n2", "n3", None]
        assert isinstance(statuses[-1].error, Unavailable)
        with pytest.raises(NotFound):
            c.transfer_leadership("n9")
        with pytest.raises(FailedPrecondition):
            c.transfer_leadership("n3")
        assert c.transfer_leadership("n2") == "n2"


# -- asyncio client ------------------------------------------------------------------


async def test_async_client_retries_and_maps_errors(one: FakeCluster) -> None:
    node = one.nodes[0]
    node.inject("Put", NotLeaderError("no leader"), times=2)
    async with AsyncClient([dead_endpoint(), *one.endpoints], retry=FAST) as c:
        assert (await c.put("k", "v")).revision == 1
        assert (await c.get("k")) is not None
        assert await c.cas("k", expected_value="v", new_value="w")
        assert [kv.key async for kv in c.scan("", page_size=1)] == ["k"]
        node.inject("Put", OutcomeUnknownError("leadership changed"), times=FAST.attempts)
        with pytest.raises(OutcomeUnknown):
            await c.put("k", "x")
        with pytest.raises(InvalidArgument):
            await c.get("")
    resends = node.request_ids("Put")[3:]
    assert len(resends) >= 2, "an unknown-outcome write with a request id must be resent"
    assert len(set(resends)) == 1


async def test_async_watch_yields_events(one: FakeCluster) -> None:
    async with AsyncClient(one.endpoints, retry=FAST) as c:
        rev = (await c.put("k", "1")).revision
        await c.put("k", "2")
        async with c.watch("k", start_revision=rev) as events:
            got = [(await events.__anext__()).kv.value for _ in range(2)]
        assert got == [b"1", b"2"]
        assert [m.id for m in await c.members()] == ["n1"]


# -- CLI -------------------------------------------------------------------------------


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the CLI with fast retries; returns the click Result."""
    monkeypatch.setattr(cli_module, "Client", lambda *a, **kw: Client(*a, retry=FAST, **kw))
    runner = CliRunner()

    def invoke(endpoints: list[str], *args: str) -> Any:
        return runner.invoke(cli_module.cli, ["--endpoints", ",".join(endpoints), *args])

    return invoke


def test_cli_put_then_get_prints_the_value_alone(one: FakeCluster, run: Any) -> None:
    put = run(one.endpoints, "put", "a", "1")
    assert (put.exit_code, put.stdout) == (0, "OK revision=1\n")
    got = run(one.endpoints, "get", "a")
    assert (got.exit_code, got.stdout, got.stderr) == (0, "1\n", "")


def test_cli_missing_key_exits_1(one: FakeCluster, run: Any) -> None:
    result = run(one.endpoints, "get", "nope")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "error: key not found: nope\n"


def test_cli_invalid_argument_exits_2_with_one_line(one: FakeCluster, run: Any) -> None:
    result = run(one.endpoints, "put", "", "v")
    assert result.exit_code == 2
    assert result.stderr == "error: invalid argument: key is empty\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_unreachable_cluster_exits_1_without_traceback(run: Any) -> None:
    result = run([dead_endpoint()], "get", "a")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unavailable")


def test_cli_members_json_shape_and_table(cluster: FakeCluster, run: Any) -> None:
    result = run(cluster.endpoints, "members", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    required = {"id", "address", "raft_role", "term", "commit_index", "applied_index", "status"}
    assert isinstance(doc, list) and len(doc) == 3
    assert all(required <= set(m) for m in doc)
    assert [m["raft_role"] for m in doc] == ["leader", "follower", "follower"]
    assert doc[1]["address"] == cluster.nodes[1].address
    table = run(cluster.endpoints, "members").stdout.splitlines()
    assert table[0].split() == [
        "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "STATUS", "GOSSIP", "INC", "HEARD"
    ]  # fmt: skip
    assert {"gossip_status", "incarnation", "gossip_last_heard_s"} <= set(doc[0])
    assert table[1].split()[:2] == ["*", "n1"] and "*" not in table[2]


def test_cli_range_cas_del_status_leader(cluster: FakeCluster, run: Any) -> None:
    eps = cluster.endpoints
    run(eps, "put", "p/a", "1")
    run(eps, "put", "p/b", "2")
    listing = run(eps, "range", "p/", "--limit", "1", "--json")
    doc = json.loads(listing.stdout)
    assert (doc["count"], doc["more"], [kv["key"] for kv in doc["kvs"]]) == (2, True, ["p/a"])
    assert run(eps, "range", "p/").stdout == "p/a\t1\np/b\t2\n"
    assert run(eps, "cas", "p/a", "9", "--expect-value", "1").stdout == "OK\n"
    failed = run(eps, "cas", "p/a", "8", "--expect-revision", "1")
    assert failed.exit_code == 1 and failed.stderr.startswith("error: compare failed")
    assert run(eps, "cas", "p/a", "8").exit_code == 2  # neither expectation
    assert run(eps, "del", "p/", "--prefix").stdout == "OK deleted=2\n"
    status = json.loads(run(eps, "status", "--json").stdout)
    assert [s["id"] for s in status] == ["n1", "n2", "n3"]
    assert run(eps, "leader", "transfer", "n2").stdout == "OK leader=n2\n"
    missing = run(eps, "leader", "transfer", "n9")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: not found")


def test_cli_watch_of_compacted_history_exits_1(one: FakeCluster, run: Any) -> None:
    one.store.compact_revision = 5
    result = run(one.endpoints, "watch", "k", "--start-revision", "2")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: revisions up to 5 were compacted")


def test_an_empty_prefix_is_refused_before_sending_and_delete_all_is_explicit(
    one: FakeCluster, run: Any
) -> None:
    """Issue 17, defect 2: ``tadpole del "" --prefix`` sent a delete of every key."""
    with client_for(one.endpoints) as c:
        c.put("a", "1")
        c.put("b", "2")
        with pytest.raises(InvalidArgument, match="delete_all"):
            c.delete("", prefix=True)
        assert one.nodes[0].calls.get("Delete") is None
        result = run(one.endpoints, "del", "", "--prefix")
        assert result.exit_code == 2 and "--all-keys" in result.stderr
        assert run(one.endpoints, "del", "a", "--all-keys").exit_code == 2
        assert one.nodes[0].calls.get("Delete") is None
        assert run(one.endpoints, "del", "--all-keys").stdout.strip() == "OK deleted=2"
        (sent,) = one.nodes[0].requests["Delete"]
        assert sent.all_keys and sent.key == "" and sent.request_id
        assert c.get("a") is None and c.get("b") is None


def test_cli_watch_redraws_until_interrupted_and_survives_a_failed_refresh(
    cluster: FakeCluster, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            for node in cluster.nodes:  # the next refresh finds nobody
                node.inject("Members", Transport(grpc.StatusCode.UNAVAILABLE, "down"), times=99)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_module.time, "sleep", fake_sleep)
    result = run(cluster.endpoints, "members", "--watch", "0.5")
    assert result.exit_code == 0, result.stderr
    frames = result.stdout.split("(Ctrl-C to stop)")
    assert len(frames) == 4 and sleeps == [0.5, 0.5, 0.5]
    assert "n1" in frames[1] and "leader" in frames[1]
    assert "error:" in frames[2]  # shown in place of the table; the loop went on
    assert "\x1b[2J" not in result.stdout  # not a terminal: no screen clearing
    status = run(cluster.endpoints, "status", "--watch", "1", "--json")
    assert status.exit_code == 2 and "--json" in status.stderr
    assert run(cluster.endpoints, "status", "--watch", "0.01").exit_code == 2  # too fast
