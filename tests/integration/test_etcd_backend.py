"""The system tier's API semantics on both backends, and failover through etcd.

Every semantic test runs twice through the ``deployment`` fixture: against a
three-node Tadpole cluster on its own Raft group, and against a three-node
Tadpole cluster whose nodes keep the system tier in a real etcd. The tests
talk to the wire API only, so they check what a client sees.

etcd comes from the ``etcd`` binary (Debian/Ubuntu: ``apt-get install
etcd-server``). Without it these tests are skipped, except under CI
(``CI`` set), where a missing etcd is a failure.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from aetcd import rpc

from node.dev.cluster import LocalCluster
from node.dev.etcd import INSTALL_HINT, LocalEtcd, find_etcd
from node.pb import tadpole_pb2 as pb
from tests.integration.conftest import Stubs, free_base_port

pytestmark = pytest.mark.integration

ETCD = find_etcd()


def require_etcd() -> str:
    if ETCD is None:
        message = f"no etcd binary on PATH or in /usr/bin: {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the etcd tests; {message}")
        pytest.skip(message)
    return ETCD


@dataclass
class Deployment:
    kind: str  # "raft" | "etcd"
    cluster: LocalCluster
    etcd: LocalEtcd | None = None

    def stub(self, node_id: str) -> Stubs:
        return Stubs(self.cluster, node_id)

    def compact(self) -> None:
        """Make old watch history unavailable. Raft: its history bound (set
        small below) already dropped it. etcd: compact at the current revision."""
        if self.etcd is None:
            return
        with grpc.insecure_channel(self.etcd.endpoints[0]) as channel:
            kv = rpc.KVStub(channel)
            current = kv.Range(rpc.RangeRequest(key=b"\0"), timeout=5).header.revision
            kv.Compact(rpc.CompactionRequest(revision=current, physical=True), timeout=5)


def wait_serving(cluster: LocalCluster, timeout: float = 30.0) -> None:
    """Every node answers Status and reports a backend with a quorum/leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [cluster.status(n) for n in cluster.node_ids]
        if all(st is not None and st.has_quorum for st in statuses):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nodes not serving within {timeout} s")


def tadpole_on_etcd(root: str, etcd: LocalEtcd, nodes: int, endpoints: list[str]) -> LocalCluster:
    ids = [f"n{i + 1}" for i in range(nodes)]
    args = ["--system-backend", "etcd", "--etcd-endpoints", ",".join(endpoints)]
    args += ["--set", f"etcd_prefix=/test-{uuid.uuid4().hex[:8]}/"]
    cluster = LocalCluster(
        root, ids, free_base_port(nodes), extra_args=args, metrics_base_port=free_base_port(nodes)
    )
    cluster.start()
    wait_serving(cluster)
    return cluster


@pytest.fixture(scope="module", params=["raft", "etcd"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    root = tempfile.mkdtemp(prefix=f"tadpole-{request.param}-")
    etcd: LocalEtcd | None = None
    cluster: LocalCluster | None = None
    try:
        if request.param == "etcd":
            etcd = LocalEtcd(os.path.join(root, "etcd"), free_base_port(2), 1, require_etcd())
            etcd.start()
            cluster = tadpole_on_etcd(os.path.join(root, "tadpole"), etcd, 3, etcd.endpoints)
        else:
            cluster = LocalCluster(
                root,
                ["n1", "n2", "n3"],
                free_base_port(3),
                extra_args=["--set", "raft.watch_history_events=20"],
                metrics_base_port=free_base_port(3),
            )
            cluster.start()
            cluster.wait_leader(30)
            wait_serving(cluster)
        status = cluster.status("n1", timeout=2)
        assert status is not None and status.system_backend == request.param
        yield Deployment(request.param, cluster, etcd)
    finally:
        if cluster is not None:
            for node_id in cluster.node_ids:
                cluster.kill(node_id)
        if etcd is not None:
            etcd.stop()


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A key namespace of its own for each test (the clusters are shared per module)."""
    return f"{request.node.name.split('[')[0]}/"


@pytest.fixture
def stubs_of(deployment: Deployment) -> Iterator[Callable[[str], Stubs]]:
    opened: list[Stubs] = []

    def factory(node_id: str) -> Stubs:
        s = deployment.stub(node_id)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


def resend_unapplied(method: Callable[..., Any], request: Any, timeout: float = 5.0) -> Any:
    """Call ``method`` as a careful client would: resend only what the server says was
    not applied (UNAVAILABLE with outcome ``not-applied``, e.g. no leader for a moment
    during an election on a loaded host), within one deadline. Anything else — a
    result or any other error — is returned or raised as is, so no semantics check is
    loosened; a put keeps its request id across resends."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return method(request, timeout=max(deadline - time.monotonic(), 0.05))
        except grpc.RpcError as exc:
            outcome = dict(exc.trailing_metadata() or ()).get("tadpole-outcome")  # type: ignore[attr-defined]
            if (
                exc.code() is not grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
                or outcome != "not-applied"
                or time.monotonic() > deadline - 0.2
            ):
                raise
            time.sleep(0.1)


def put(stub: Stubs, key: str, value: bytes, **kw: Any) -> Any:
    kw.setdefault("request_id", uuid.uuid4().hex)
    return resend_unapplied(stub.kv.Put, pb.PutRequest(key=key, value=value, **kw))


def get(stub: Stubs, key: str, *, serializable: bool = False) -> Any:
    consistency = pb.SERIALIZABLE if serializable else pb.LINEARIZABLE
    return resend_unapplied(stub.kv.Get, pb.GetRequest(key=key, consistency=consistency))


# -- the same semantics on both backends ------------------------------------------


def test_put_get_revisions_and_versions(stubs_of: Any, ns: str) -> None:
    n1, n2, n3 = stubs_of("n1"), stubs_of("n2"), stubs_of("n3")
    first = put(n1, ns + "a", b"1")
    assert first.kv.version == 1
    assert first.kv.create_revision == first.kv.mod_revision == first.header.revision
    second = put(n2, ns + "a", b"2", prev_kv=True)
    assert second.header.revision > first.header.revision
    assert second.kv.create_revision == first.header.revision
    assert second.kv.mod_revision == second.header.revision and second.kv.version == 2
    assert second.prev_kv.value == b"1"
    for stub in (n1, n2, n3):
        got = get(stub, ns + "a")  # linearizable: the write completed before it began
        assert got.found and got.kv.value == b"2" and got.kv.version == 2
        assert got.header.revision >= second.header.revision
    # A serializable read may lag, but never invents state.
    loose = get(n3, ns + "a", serializable=True)
    assert loose.kv.value in (b"1", b"2")
    assert not get(n1, ns + "absent").found
    gone = n1.kv.Delete(pb.DeleteRequest(key=ns + "a", prev_kv=True), timeout=5)
    assert gone.deleted == 1 and gone.prev_kvs[0].value == b"2"
    assert not get(n2, ns + "a").found
    again = put(n3, ns + "a", b"3")
    assert again.kv.version == 1 and again.kv.create_revision == again.header.revision


def test_batched_puts_and_gets_on_etcd(stubs_of: Any, ns: str) -> None:
    """KV.PutMany and KV.GetMany on the etcd backend: each item answered as alone."""
    n1, n2 = stubs_of("n1"), stubs_of("n2")
    wrote = n1.kv.PutMany(
        pb.PutManyRequest(
            puts=[pb.PutRequest(key=ns + "m1", value=b"1", request_id=ns + "r1"),
                  pb.PutRequest(key="", value=b"x"),
                  pb.PutRequest(key=ns + "m2", value=b"2")]
        ),
        timeout=5,
    )  # fmt: skip
    assert [r.code for r in wrote.results] == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0], 0]
    assert wrote.results[0].put.kv.value == b"1"
    read = n2.kv.GetMany(
        pb.GetManyRequest(gets=[pb.GetRequest(key=ns + k) for k in ("m1", "m2", "absent")]),
        timeout=5,
    )
    assert [(r.get.found, r.get.kv.value) for r in read.results] == [
        (True, b"1"),
        (True, b"2"),
        (False, b""),
    ]
    assert read.results[1].get.header.revision >= wrote.results[2].put.header.revision


def test_range_paging_and_prefix_delete(stubs_of: Any, ns: str) -> None:
    stub = stubs_of("n2")
    for i in range(5):
        put(stub, f"{ns}pool/{i}", str(i).encode())
    put(stub, ns + "poolside", b"other")
    page = stub.kv.Range(pb.RangeRequest(prefix=ns + "pool/", limit=2), timeout=5)
    assert [kv.key for kv in page.kvs] == [ns + "pool/0", ns + "pool/1"]
    assert page.more and page.count == 5
    rest = stub.kv.Range(
        pb.RangeRequest(prefix=ns + "pool/", start_after=ns + "pool/1", limit=2), timeout=5
    )
    assert [kv.key for kv in rest.kvs] == [ns + "pool/2", ns + "pool/3"]
    assert rest.more and rest.count == 5
    last = stub.kv.Range(
        pb.RangeRequest(
            prefix=ns + "pool/", start_after=ns + "pool/3", consistency=pb.SERIALIZABLE
        ),
        timeout=5,
    )
    assert [kv.key for kv in last.kvs] == [ns + "pool/4"] and not last.more
    deleted = stub.kv.Delete(pb.DeleteRequest(key=ns + "pool/", prefix=True), timeout=5)
    assert deleted.deleted == 5
    left = stub.kv.Range(pb.RangeRequest(prefix=ns + "pool"), timeout=5)
    assert [kv.key for kv in left.kvs] == [ns + "poolside"] and left.count == 1


def test_compare_and_swap_admits_exactly_one_winner(stubs_of: Any, ns: str) -> None:
    all_stubs = [stubs_of(n) for n in ("n1", "n2", "n3")]
    key = ns + "lock"
    rev = put(all_stubs[0], key, b"free").kv.mod_revision

    def attempt(i: int) -> bool:
        resp = all_stubs[i % 3].kv.Txn(
            pb.TxnRequest(
                compare=[
                    pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL, number=rev)
                ],
                success=[pb.RequestOp(put=pb.PutRequest(key=key, value=f"owner-{i}".encode()))],
                failure=[pb.RequestOp(range=pb.RangeRequest(prefix=key))],
            ),
            timeout=5,
        )
        if not resp.succeeded:
            # The failure branch ran: it reports the state the compare lost against.
            assert resp.responses[0].range.kvs[0].mod_revision != rev
        return bool(resp.succeeded)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(attempt, range(12)))
    assert results.count(True) == 1
    winner = results.index(True)
    final = get(all_stubs[1], key)
    assert final.kv.value == f"owner-{winner}".encode() and final.kv.version == 2
    # A VALUE compare against an absent key is false, even against b"".
    absent = all_stubs[2].kv.Txn(
        pb.TxnRequest(
            compare=[pb.Compare(key=ns + "nothing", target=pb.Compare.VALUE, value=b"")],
            success=[pb.RequestOp(put=pb.PutRequest(key=ns + "nothing", value=b"x"))],
        ),
        timeout=5,
    )
    assert not absent.succeeded and not get(all_stubs[0], ns + "nothing").found


def test_txn_changes_share_one_revision_and_request_ids_apply_once(stubs_of: Any, ns: str) -> None:
    n1, n2 = stubs_of("n1"), stubs_of("n2")
    resp = n1.kv.Txn(
        pb.TxnRequest(
            success=[
                pb.RequestOp(put=pb.PutRequest(key=ns + "x", value=b"1")),
                pb.RequestOp(put=pb.PutRequest(key=ns + "y", value=b"2")),
            ]
        ),
        timeout=5,
    )
    assert resp.succeeded
    x, y = get(n2, ns + "x"), get(n2, ns + "y")
    assert x.kv.mod_revision == y.kv.mod_revision == resp.header.revision
    first = put(n1, ns + "once", b"1", request_id="req-1")
    again = put(n2, ns + "once", b"2", request_id="req-1")
    assert again.header.revision == first.header.revision and again.kv == first.kv
    got = get(n2, ns + "once")
    assert got.kv.value == b"1" and got.kv.version == 1


def test_watch_replays_history_then_streams_live(stubs_of: Any, ns: str) -> None:
    writer, watcher = stubs_of("n1"), stubs_of("n3")
    first = put(writer, ns + "w/a", b"1")
    put(writer, ns + "other", b"x")
    put(writer, ns + "w/b", b"2")
    stream = watcher.kv.Watch(
        pb.WatchRequest(key=ns + "w/", prefix=True, start_revision=first.header.revision),
        timeout=15,
    )
    seen: list[tuple[int, str, bytes, int]] = []
    done = threading.Event()

    def consume() -> None:
        try:
            for resp in stream:
                for ev in resp.events:
                    seen.append((ev.type, ev.kv.key, ev.kv.value, ev.kv.mod_revision))
                    assert ev.kv.mod_revision == resp.header.revision  # one revision per batch
                if len(seen) >= 5:
                    break
        except grpc.RpcError:
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    live = writer.kv.Txn(
        pb.TxnRequest(
            success=[
                pb.RequestOp(put=pb.PutRequest(key=ns + "w/c", value=b"3")),
                pb.RequestOp(delete=pb.DeleteRequest(key=ns + "w/a")),
            ]
        ),
        timeout=5,
    )
    put(writer, ns + "w/b", b"4")
    assert done.wait(15)
    stream.cancel()
    assert [s[:3] for s in seen] == [
        (pb.Event.PUT, ns + "w/a", b"1"),
        (pb.Event.PUT, ns + "w/b", b"2"),
        (pb.Event.PUT, ns + "w/c", b"3"),
        (pb.Event.DELETE, ns + "w/a", b""),
        (pb.Event.PUT, ns + "w/b", b"4"),
    ]
    assert seen[2][3] == seen[3][3] == live.header.revision


def test_watch_from_a_compacted_revision_is_out_of_range(
    deployment: Deployment, stubs_of: Any, ns: str
) -> None:
    stub = stubs_of("n2")
    first = put(stub, ns + "k", b"0")
    for i in range(30):  # more than the Raft cluster's 20-event history
        put(stub, ns + "k", str(i).encode())
    latest = put(stub, ns + "k", b"last")
    deployment.compact()
    old = stub.kv.Watch(
        pb.WatchRequest(key=ns + "k", start_revision=first.header.revision), timeout=5
    )
    with pytest.raises(grpc.RpcError) as err:
        next(iter(old))
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    # The newest revision is still there to watch from.
    recent = stub.kv.Watch(
        pb.WatchRequest(key=ns + "k", start_revision=latest.header.revision), timeout=5
    )
    resp = next(iter(recent))
    recent.cancel()
    assert [(ev.kv.value, ev.kv.mod_revision) for ev in resp.events] == [
        (b"last", latest.header.revision)
    ]


def http_get(deployment: Deployment, node_id: str, path: str) -> tuple[int, Any]:
    cluster = deployment.cluster
    try:
        with urllib.request.urlopen(
            cluster.http_url(node_id, path), context=cluster.http_context(), timeout=10
        ) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_event_log_is_complete_ordered_and_paged(
    deployment: Deployment, stubs_of: Any, ns: str
) -> None:
    """``SystemBackend.history`` through ``GET /api/v1/events``: every change after the
    cursor, in revision order, on a node other than the writer; pages never split a
    revision; a compacted cursor is 410 with the revision history now starts after."""
    writer = stubs_of("n1")
    start = put(writer, ns + "first", b"0").header.revision
    written = [(put(writer, f"{ns}k{i}", b"%d" % i).header.revision, f"{ns}k{i}") for i in range(5)]
    deleted = resend_unapplied(
        writer.kv.Delete, pb.DeleteRequest(key=ns + "k", prefix=True, request_id=uuid.uuid4().hex)
    )
    status, body = http_get(deployment, "n3", f"/api/v1/events?prefix={ns}k&after={start}")
    assert status == 200
    seen = [(e["revision"], e["key"], e["type"]) for e in body["events"]]
    assert seen == [(r, k, "put") for r, k in written] + [
        (deleted.header.revision, k, "delete") for _, k in written
    ]
    assert body["next_after"] >= deleted.header.revision and not body["more"]
    paged, after = [], start
    while True:
        status, body = http_get(
            deployment, "n2", f"/api/v1/events?prefix={ns}k&after={after}&limit=2"
        )
        paged += [(e["revision"], e["key"], e["type"]) for e in body["events"]]
        after = body["next_after"]
        if not body["more"]:
            break
    assert paged == seen  # the 5-event delete revision came whole, past the limit of 2
    for i in range(25):
        put(writer, ns + "churn", b"%d" % i)
    deployment.compact()
    status, body = http_get(deployment, "n2", f"/api/v1/events?prefix={ns}&after={start}")
    assert status == 410 and body["compact_revision"] > start


def test_bad_input_is_invalid_argument_and_changes_nothing(stubs_of: Any, ns: str) -> None:
    stub = stubs_of("n1")
    put(stub, ns + "keep", b"v")
    before = get(stub, ns + "keep").kv
    bad: list[tuple[Any, Any]] = [
        (stub.kv.Put, pb.PutRequest(key="", value=b"x")),
        (stub.kv.Put, pb.PutRequest(key="k" * 1025, value=b"x")),
        (stub.kv.Put, pb.PutRequest(key=ns + "big", value=b"x" * ((1 << 20) + 1))),
        (stub.kv.Get, pb.GetRequest(key="")),
        (stub.kv.Range, pb.RangeRequest(prefix=ns, limit=-1)),
        (stub.kv.Delete, pb.DeleteRequest(key="")),
        (
            stub.kv.Txn,
            pb.TxnRequest(
                compare=[pb.Compare(key=ns + "keep", target=pb.Compare.MOD, number=-5)],
                success=[pb.RequestOp(put=pb.PutRequest(key=ns + "keep", value=b"no"))],
            ),
        ),
        (stub.kv.Txn, pb.TxnRequest(success=[pb.RequestOp()])),
    ]
    for method, request in bad:
        with pytest.raises(grpc.RpcError) as err:
            method(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, err.value)
    watch = stub.kv.Watch(pb.WatchRequest(key=ns + "keep", start_revision=-3), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        next(iter(watch))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = get(stub, ns + "keep").kv
    assert after == before
    assert not get(stub, ns + "big").found


# -- etcd only --------------------------------------------------------------------------


def test_killing_an_etcd_member_loses_no_acknowledged_write(tmp_path: Any) -> None:
    """Three etcd members, one Tadpole node in front. SIGKILL the etcd leader,
    which is also the member the node talks to, while writers run."""
    binary = require_etcd()
    etcd = LocalEtcd(str(tmp_path / "etcd"), free_base_port(6), 3, binary)
    cluster: LocalCluster | None = None
    stop = threading.Event()
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    try:
        etcd.start()
        victim = etcd.leader()
        deadline = time.monotonic() + 10
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.1)
            victim = etcd.leader()
        assert victim is not None, "the etcd cluster elected no leader"
        order = [victim] + [n for n in etcd.names if n != victim]
        endpoints = [f"127.0.0.1:{etcd.client_port(n)}" for n in order]
        cluster = tadpole = tadpole_on_etcd(str(tmp_path / "tadpole"), etcd, 1, endpoints)

        def writer(w: int) -> None:
            stub = Stubs(tadpole, "n1")
            i = 0
            try:
                while not stop.is_set():
                    key, value = f"w{w}/{i}", f"{w}-{i}".encode()
                    i += 1
                    try:
                        stub.kv.Put(
                            pb.PutRequest(key=key, value=value, request_id=f"{w}-{i}"), timeout=3
                        )
                    except grpc.RpcError:
                        continue  # outcome unknown or refused: not counted
                    with lock:
                        acked[key] = value
            finally:
                stub.close()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()

        def wait_acked(n: int, within: float) -> int:
            end = time.monotonic() + within
            while time.monotonic() < end:
                with lock:
                    if len(acked) >= n:
                        return len(acked)
                time.sleep(0.02)
            with lock:
                return len(acked)

        assert wait_acked(100, 20) >= 100, "too few writes before the kill to mean anything"
        etcd.kill(victim)
        with lock:
            at_kill = len(acked)
        assert wait_acked(at_kill + 100, 30) >= at_kill + 100, "the node stopped serving writes"
        stop.set()
        for t in threads:
            t.join(10)
        status = cluster.status("n1", timeout=2)
        assert status is not None and status.system_backend == "etcd"
        reader = Stubs(cluster, "n1")
        try:
            missing = []
            for key, value in acked.items():
                got = get(reader, key)
                if not got.found or got.kv.value != value:
                    missing.append(key)
        finally:
            reader.close()
        assert not missing, (
            f"{len(missing)} of {len(acked)} acknowledged writes lost: {missing[:5]}"
        )
    finally:
        stop.set()
        if cluster is not None:
            cluster.kill("n1")
        etcd.stop()
