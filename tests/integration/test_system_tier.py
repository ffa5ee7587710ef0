"""The system tier on three real node processes over loopback gRPC."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from node.dev.cluster import LocalCluster
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.tls import TlsFiles, server_name_for, sync_channel
from tests.integration.conftest import start_http_cluster
from tests.integration.test_http_metrics import sample, scrape

pytestmark = pytest.mark.integration


def put(stub: Any, key: str, value: bytes, timeout: float = 5.0) -> Any:
    return stub.kv.Put(pb.PutRequest(key=key, value=value), timeout=timeout)


def get(stub: Any, key: str, *, serializable: bool = False) -> Any:
    consistency = pb.SERIALIZABLE if serializable else pb.LINEARIZABLE
    return stub.kv.Get(pb.GetRequest(key=key, consistency=consistency), timeout=5.0)


def roles(cluster: LocalCluster) -> dict[str, str]:
    out = {}
    for node_id in cluster.node_ids:
        st = cluster.status(node_id)
        out[node_id] = st.raft_role if st else "down"
    return out


# What a caller may try again: nothing was applied, or the outcome is not known yet and
# a resend with the request id will tell.
TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
)


def write_until_ok(
    cluster: LocalCluster, stubs: Any, key: str, value: bytes, nodes: list[str], deadline_s: float
) -> float:
    """Retry a put round-robin over ``nodes`` until acknowledged; return seconds taken."""
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < deadline_s:
        stub = stubs(cluster, nodes[i % len(nodes)])
        i += 1
        try:
            put(stub, key, value, timeout=0.5)
            return time.monotonic() - start
        except grpc.RpcError as exc:
            assert exc.code() in TRANSIENT, exc
            time.sleep(0.02)
    raise AssertionError(f"no write acknowledged within {deadline_s} s")


def test_write_on_one_node_read_on_every_other(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    n1, n2, n3 = (stubs(cluster, n) for n in cluster.node_ids)
    resp = put(n1, "config/a", b"1")
    assert resp.kv.version == 1 and resp.kv.create_revision == resp.header.revision
    for stub in (n2, n3):
        got = get(stub, "config/a")
        assert got.found and got.kv.value == b"1"
        assert got.header.revision >= resp.header.revision
    put(n2, "config/a", b"2")
    got = get(n3, "config/a")
    assert got.kv.value == b"2" and got.kv.version == 2


def test_follower_forwards_writes_to_the_leader(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    stub = stubs(cluster, follower)
    resp = put(stub, "fwd", b"x")
    assert resp.header.member_id == follower
    assert resp.header.leader_id == leader
    assert get(stubs(cluster, leader), "fwd").kv.value == b"x"


def test_bad_input_is_rejected_and_changes_nothing(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    stub = stubs(cluster, "n1")
    put(stub, "keep", b"v")
    before = get(stub, "keep").header.revision
    bad: list[tuple[Any, Any, str]] = [
        (stub.kv.Put, pb.PutRequest(key="", value=b"x"), "key is empty"),
        (stub.kv.Put, pb.PutRequest(key="k" * 1025, value=b"x"), "1025 bytes"),
        (stub.kv.Put, pb.PutRequest(key="big", value=b"x" * ((1 << 20) + 1)), "limit is 1048576"),
        (stub.kv.Put, pb.PutRequest(key="k", value=b"x", tier="mesh2"), "unknown tier"),
        (stub.kv.Get, pb.GetRequest(key=""), "key is empty"),
        (stub.kv.Range, pb.RangeRequest(prefix="a", limit=-1), "limit -1"),
        (stub.kv.Delete, pb.DeleteRequest(key=""), "key is empty"),
        (
            stub.kv.Txn,
            pb.TxnRequest(
                compare=[pb.Compare(key="keep", target=pb.Compare.MOD, number=-5)],
                success=[pb.RequestOp(put=pb.PutRequest(key="keep", value=b"no"))],
            ),
            "negative",
        ),
        (
            stub.kv.Txn,
            pb.TxnRequest(success=[pb.RequestOp()]),
            "no request set",
        ),
    ]
    for method, request, fragment in bad:
        with pytest.raises(grpc.RpcError) as err:
            method(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, err.value)
        assert fragment in (err.value.details() or ""), err.value.details()
    watch = stub.kv.Watch(pb.WatchRequest(key="keep", start_revision=-3), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        next(iter(watch))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = get(stub, "keep")
    assert after.header.revision == before and after.kv.value == b"v"
    assert all(cluster.pid(n) is not None for n in cluster.node_ids)


def answered(call: Any, all_stubs: list[Any], first: int, deadline_s: float = 20.0) -> Any:
    """``call(stub)``, round robin from node ``first``, until some node answers it
    definitely: ABORTED (leadership changed while it was in flight), UNAVAILABLE and
    DEADLINE_EXCEEDED are tried again."""
    start = time.monotonic()
    i = first
    while True:
        try:
            return call(all_stubs[i % len(all_stubs)])
        except grpc.RpcError as exc:
            assert exc.code() in TRANSIENT, exc
            assert time.monotonic() - start < deadline_s, f"no answer within {deadline_s} s: {exc}"
            i += 1
            time.sleep(0.05)


def txn_answered(all_stubs: list[Any], first: int, request: Any) -> Any:
    """Send a Txn that carries a request id until some node answers it definitely
    (:func:`answered`). An unknown outcome is resent with the same request id: the
    state machine answers a resend of an applied request with the first answer instead
    of applying it again, so the answer that comes back is the one outcome it had."""
    assert request.request_id
    return answered(lambda stub: stub.kv.Txn(request, timeout=5), all_stubs, first)


def get_lock(stub: Any) -> Any:
    return get(stub, "lock")


@pytest.mark.parametrize("move_leader", [False, True], ids=["steady", "leader-moves"])
def test_compare_and_swap_admits_exactly_one_winner(
    make_cluster: Any, stubs: Any, move_leader: bool
) -> None:
    """Twelve clients race one compare-and-swap through all three nodes; exactly one
    wins. With ``leader-moves`` the leadership is handed to another node while they
    race, so some answers are ABORTED (outcome unknown) and are resent with their
    request id: the resend must report the one outcome the request had."""
    cluster = make_cluster()
    all_stubs = [stubs(cluster, n) for n in cluster.node_ids]
    with open(cluster.token_file) as f:
        operator = (("authorization", f"Bearer {f.read().strip()}"),)
    for round_ in range(4 if move_leader else 1):
        base = txn_answered(
            all_stubs,
            0,
            pb.TxnRequest(
                success=[pb.RequestOp(put=pb.PutRequest(key="lock", value=b"free"))],
                request_id=f"cas-{round_}-base",
            ),
        )
        rev = base.header.revision

        def attempt(i: int, rev: int = rev, round_: int = round_) -> bool:
            resp = txn_answered(
                all_stubs,
                i,
                pb.TxnRequest(
                    compare=[
                        pb.Compare(
                            key="lock", target=pb.Compare.MOD, result=pb.Compare.EQUAL, number=rev
                        )
                    ],
                    success=[
                        pb.RequestOp(put=pb.PutRequest(key="lock", value=f"owner-{i}".encode()))
                    ],
                    failure=[pb.RequestOp(range=pb.RangeRequest(prefix="lock"))],
                    request_id=f"cas-{round_}-{i}",
                ),
            )
            return bool(resp.succeeded)

        stop = threading.Event()

        def noise(w: int, round_: int = round_, stop: threading.Event = stop) -> int:
            """Writes through node ``w`` until told to stop: the leader's log keeps
            growing while leadership moves. Returns how many were acknowledged."""
            n = 0
            while not stop.is_set():
                key = f"noise/{round_}/{w}/{n}"
                txn_answered(
                    all_stubs,
                    w,
                    pb.TxnRequest(
                        success=[pb.RequestOp(put=pb.PutRequest(key=key, value=b"x"))],
                        request_id=key,
                    ),
                )
                n += 1
            return n

        with ThreadPoolExecutor(15) as pool:
            if move_leader:
                writers = [pool.submit(noise, w) for w in range(2)]
                time.sleep(0.2)
                leader = cluster.wait_leader()
                target = cluster.node_ids[(cluster.node_ids.index(leader) + 1) % 3]
                moved = pool.submit(
                    all_stubs[2].cluster.TransferLeadership,
                    pb.TransferLeadershipRequest(target_id=target),
                    timeout=10,
                    metadata=operator,
                )
            results = list(pool.map(attempt, range(12)))
            if move_leader:
                try:
                    assert moved.result().leader_id == target
                finally:
                    stop.set()
                written = sum(w.result() for w in writers)
                # every acknowledged write is there, once
                noise_keys = pb.RangeRequest(prefix=f"noise/{round_}/")
                kept = answered(
                    lambda stub, q=noise_keys: stub.kv.Range(q, timeout=5), all_stubs, 0
                )
                assert written > 0 and kept.count == written
        assert results.count(True) == 1, results
        winner = results.index(True)
        final = answered(get_lock, all_stubs, 1)
        assert final.kv.value == f"owner-{winner}".encode()
        assert final.kv.mod_revision > rev and final.kv.version == 2 * (round_ + 1)


def test_range_and_prefix_delete(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    stub = stubs(cluster, "n2")
    for i in range(5):
        put(stub, f"pool/{i}", str(i).encode())
    put(stub, "poolside", b"other")
    page = stub.kv.Range(pb.RangeRequest(prefix="pool/", limit=2), timeout=5)
    assert [kv.key for kv in page.kvs] == ["pool/0", "pool/1"] and page.more and page.count == 5
    rest = stub.kv.Range(pb.RangeRequest(prefix="pool/", start_after="pool/1"), timeout=5)
    assert [kv.key for kv in rest.kvs] == ["pool/2", "pool/3", "pool/4"] and not rest.more
    deleted = stub.kv.Delete(pb.DeleteRequest(key="pool/", prefix=True), timeout=5)
    assert deleted.deleted == 5
    assert stub.kv.Range(pb.RangeRequest(prefix="pool"), timeout=5).count == 1


def test_watch_replays_history_then_streams_live(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    writer = stubs(cluster, "n1")
    watcher = stubs(cluster, "n3")
    first = put(writer, "w/a", b"1")
    put(writer, "other", b"x")
    put(writer, "w/b", b"2")
    stream = watcher.kv.Watch(
        pb.WatchRequest(key="w/", prefix=True, start_revision=first.header.revision), timeout=10
    )
    seen: list[tuple[int, str, bytes]] = []
    done = threading.Event()

    def consume() -> None:
        try:
            for resp in stream:
                for ev in resp.events:
                    seen.append((ev.type, ev.kv.key, ev.kv.value))
                if len(seen) >= 4:
                    done.set()
                    return
        except grpc.RpcError:
            done.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    put(writer, "w/c", b"3")
    writer.kv.Delete(pb.DeleteRequest(key="w/a"), timeout=5)
    assert done.wait(10)
    stream.cancel()
    assert seen == [
        (pb.Event.PUT, "w/a", b"1"),
        (pb.Event.PUT, "w/b", b"2"),
        (pb.Event.PUT, "w/c", b"3"),
        (pb.Event.DELETE, "w/a", b""),
    ]


def test_leader_sigkill_then_failover_and_catch_up(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    acked = {}
    for i in range(30):
        key = f"pre/{i}"
        # Resent on UNAVAILABLE and the like, as the wire contract says: with the spec's
        # 150-300 ms election timeout a stall of a node on a busy host can start an
        # election before the kill (CI on a63066a: "no leader is available right now").
        write_until_ok(cluster, stubs, key, f"v{i}".encode(), [cluster.node_ids[i % 3]], 10)
        acked[key] = f"v{i}".encode()
    leader = cluster.wait_leader()
    survivors = [n for n in cluster.node_ids if n != leader]
    cluster.kill(leader)
    took = write_until_ok(cluster, stubs, "post/0", b"after", survivors, deadline_s=10)
    # The spec's failover objective is 30 s; the issue asks for a write within 2 s.
    assert took < 2.0, f"first write after killing the leader took {took:.2f} s"
    new_leader = cluster.wait_leader(among=survivors)
    assert new_leader in survivors
    reader = stubs(cluster, survivors[0])
    for key, value in acked.items():
        assert get(reader, key).kv.value == value, key
    # The old leader restarts on its data dir and catches up.
    cluster.start_node(leader)
    cluster.wait_leader()
    old = stubs(cluster, leader)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if get(old, "post/0", serializable=True).found:
                break
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    assert get(old, "post/0", serializable=True).kv.value == b"after"
    assert get(old, "pre/29", serializable=True).kv.value == b"v29"


def test_all_nodes_killed_and_restarted_keep_every_acknowledged_write(
    make_cluster: Any, stubs: Any
) -> None:
    cluster = make_cluster()
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        stub = stubs(cluster, cluster.node_ids[w % 3])
        i = 0
        while not stop.is_set():
            key, value = f"w{w}/{i}", f"{w}-{i}".encode()
            try:
                put(stub, key, value, timeout=2)
            except grpc.RpcError:
                return  # the nodes are being killed: later writes are unknown
            with lock:
                acked[key] = value
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    for node_id in cluster.node_ids:  # all at once, mid-stream
        cluster.signal_node(node_id, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    for node_id in cluster.node_ids:
        cluster.kill(node_id)
    assert len(acked) > 50, "the workload acknowledged too little to mean anything"
    cluster.start()
    cluster.wait_leader(30, all_up=True)
    reader = stubs(cluster, "n2")
    missing = []
    for key, value in acked.items():
        got = get(reader, key)
        if not got.found or got.kv.value != value:
            missing.append(key)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost: {missing[:5]}"


class _Exploit:
    """Unpickling this creates a marker file: proof that a pickle was decoded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


# Plaintext too: without TLS (`make cluster TLS=0`) the cluster credential is the only
# thing between a caller and the peer methods.
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext"])
def test_unauthenticated_peer_calls_are_refused_before_decoding(
    make_cluster: Any, stubs: Any, tmp_path: Any, tls: bool
) -> None:
    cluster = make_cluster(tls=tls)
    marker = str(tmp_path / "unpickled")
    frame = pickle.dumps(_Exploit(marker))
    stub = stubs(cluster, "n1")
    # With TLS the calls present n2's own certificate: TLS lets them in as node/n2, so the
    # missing cluster credential is all that stands between the frame and the unpickler.
    d = cluster.tls_dir
    as_n2 = TlsFiles(f"{d}/ca.pem", f"{d}/n2.pem", f"{d}/n2.key") if tls else None
    with sync_channel(cluster.addresses["n1"], as_n2, server_name=server_name_for("n1")) as ch:
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", ""),)):
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.PeerStub(ch).Raft(
                    pb.RaftBatch(from_id="n2", frames=[frame]), metadata=metadata, timeout=5
                )
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # The stream the Raft links use: refused before its first batch is read.
            with pytest.raises(grpc.RpcError) as err:
                list(
                    pb_grpc.PeerStub(ch).RaftStream(
                        iter([pb.RaftBatch(from_id="n2", frames=[frame], want_replies=True)]),
                        metadata=metadata,
                        timeout=5,
                    )
                )
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A garbage body is refused the same way: it is never parsed.
        garbage = ch.unary_unary("/tadpole.v1.Peer/Raft")
        with pytest.raises(grpc.RpcError) as err:
            garbage(b"\xff\x00not protobuf", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        garbage_stream = ch.stream_stream("/tadpole.v1.Peer/RaftStream")
        with pytest.raises(grpc.RpcError) as err:
            list(garbage_stream(iter([b"\xff\x00not protobuf"]), timeout=5))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    time.sleep(0.3)
    assert not os.path.exists(marker), "an unauthenticated pickle was decoded"
    # The node is unharmed and the cluster still commits.
    assert put(stub, "still", b"ok").kv.value == b"ok"


def test_health_reflection_and_transfer_leadership(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    stub = stubs(cluster, "n1")
    health = health_pb2_grpc.HealthStub(stub.channel)
    for service in ("", "tadpole.v1.KV"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(stub.channel)
    answers = refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"tadpole.v1.KV", "tadpole.v1.Cluster", "grpc.health.v1.Health"} <= names

    leader = cluster.wait_leader()
    target = next(n for n in cluster.node_ids if n != leader)
    request = pb.TransferLeadershipRequest(target_id=target)
    # An operator call: without the operator token (or with a peer's), nothing moves.
    with open(cluster.token_file) as f:
        operator = (("authorization", f"Bearer {f.read().strip()}"),)
    for metadata in (None, (("authorization", "Bearer nope"),)):
        with pytest.raises(grpc.RpcError) as err:
            stub.cluster.TransferLeadership(request, timeout=10, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert cluster.wait_leader() == leader
    # Through the third node, a follower: it forwards the call, with the credential.
    other = next(n for n in cluster.node_ids if n not in (leader, target))
    via = stubs(cluster, other)
    resp = via.cluster.TransferLeadership(request, timeout=10, metadata=operator)
    assert resp.leader_id == target
    assert cluster.wait_leader() == target
    with pytest.raises(grpc.RpcError) as err:
        stub.cluster.TransferLeadership(
            pb.TransferLeadershipRequest(target_id="n9"), timeout=5, metadata=operator
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    members = stub.cluster.Members(pb.MembersRequest(), timeout=5).members
    assert sorted(m.id for m in members) == ["n1", "n2", "n3"]
    assert [m.raft_role for m in members].count("leader") == 1
    assert all(m.status == "alive" for m in members)


def test_a_resent_request_id_is_applied_once(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    leader, follower = (stubs(cluster, n) for n in cluster.node_ids[:2])
    first = leader.kv.Put(pb.PutRequest(key="once", value=b"1", request_id="req-1"), timeout=5)
    # A resend (same id, even with another body, through another node) changes nothing
    # and answers with the first application's result.
    again = follower.kv.Put(pb.PutRequest(key="once", value=b"2", request_id="req-1"), timeout=5)
    assert again.header.revision == first.header.revision
    assert again.kv == first.kv
    got = get(follower, "once")
    assert got.kv.value == b"1" and got.kv.version == 1
    other = leader.kv.Put(pb.PutRequest(key="once", value=b"3", request_id="req-2"), timeout=5)
    assert other.kv.version == 2
    with pytest.raises(grpc.RpcError) as err:
        leader.kv.Put(pb.PutRequest(key="once", value=b"4", request_id="x" * 65), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_leader_transfer_needs_the_token_file(make_cluster: Any) -> None:
    from click.testing import CliRunner

    from node.cli.app import cli

    cluster = make_cluster()
    leader = cluster.wait_leader()
    target = next(n for n in cluster.node_ids if n != leader)
    endpoints = ["--endpoints", cluster.endpoints, *cluster.cli_flags()]
    runner = CliRunner()
    refused = runner.invoke(cli, [*endpoints, "leader", "transfer", target])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: unauthenticated: an operator call needs")
    assert "Traceback" not in refused.output
    moved = runner.invoke(
        cli, [*endpoints, "--token-file", cluster.token_file, "leader", "transfer", target]
    )
    assert moved.exit_code == 0, moved.output
    assert moved.stdout == f"OK leader={target}\n"
    missing = runner.invoke(cli, [*endpoints, "--token-file", "/nonexistent", "members"])
    assert missing.exit_code == 2 and "--token-file" in missing.stderr


def test_members_local_view_asks_no_peer(tmp_path_factory: Any, stubs: Any) -> None:
    # What the client asks to place keys: the answering node's own Raft and gossip
    # views, without a Status call to every peer (which waits 0.5 s for a stuck one).
    cluster = start_http_cluster(str(tmp_path_factory.mktemp("local-view")))
    try:
        stub = stubs(cluster, "n1")

        def status_calls() -> float:
            text = scrape(cluster, "n2")[1]
            return sample(
                text, 'tadpole_request_duration_seconds_count{method="tadpole.v1.Cluster/Status"}'
            )

        before = status_calls()
        local = stub.cluster.Members(pb.MembersRequest(local_view=True), timeout=5).members
        assert status_calls() == before
        stub.cluster.Members(pb.MembersRequest(), timeout=5)
        assert status_calls() == before + 1
        by_id = {m.id: m for m in local}
        assert sorted(by_id) == ["n1", "n2", "n3"] and by_id["n1"].is_self
        assert by_id["n3"].address == cluster.addresses["n3"]
        assert by_id["n2"].gossip_status == "alive" and by_id["n2"].status == "alive"
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
