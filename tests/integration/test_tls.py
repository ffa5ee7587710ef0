"""Mutual TLS on real nodes: the cluster runs (Raft, gossip, replicas) over it; a
plaintext client, a client without a certificate and one from another CA are all
refused; a valid node certificate cannot speak for another node, nor a client
certificate for any; TLS older than 1.2 is refused; a rotated certificate is served
on new connections without a restart."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import signal
import socket
import ssl
import threading
import time
import urllib.request

import grpc
import pytest
from cryptography import x509

from node.certs import create_ca, issue
from node.client import Client
from node.client.errors import Unavailable
from node.config import NodeConfig
from node.dev.cluster import LocalCluster
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.tls import TlsFiles, server_name_for, sync_channel
from tests.integration.conftest import run_cli, start_http_cluster
from tests.support.https import https

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> object:
    c = start_http_cluster(str(tmp_path_factory.mktemp("tls")), tls=True)
    try:
        yield c
    finally:
        for node_id in c.node_ids:
            c.kill(node_id)


def served_certificate(address: str, alpn: str) -> x509.Certificate:
    """The certificate a fresh TLS connection to ``address`` is served (client
    certificate presented, chain not checked here)."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    with socket.create_connection((host, int(port)), timeout=5) as raw, ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_cluster_works_over_mutual_tls(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints.split(","), credentials=cluster.client_credentials()) as client:
        assert client.put("/tls/a", "1").revision > 0
        kv = client.get("/tls/a")
        assert kv is not None and kv.value == b"1"
        client.counter_add("population", "job_resource_ledger/tls", 5)
        read = client.tier_read("population", "job_resource_ledger/tls", consistency="all")
        assert read.value is not None and read.value.value == 5
        assert {m.id for m in client.members()} == {"n1", "n2", "n3"}


def test_clients_without_the_right_certificate_are_refused(
    cluster: LocalCluster, tmp_path: pathlib.Path
) -> None:
    tls = cluster.client_tls()
    assert tls is not None
    other = tmp_path / "other"
    create_ca(str(other))
    issue(str(other), str(other), "mallory", client="mallory")
    expired = tmp_path / "expired"  # signed by the cluster's own CA, valid until now
    issue(cluster.tls_dir, str(expired), "late", client="late", days=0)
    time.sleep(1.1)  # validity is counted in whole seconds
    attempts = {
        "plaintext": None,
        "no certificate": grpc.ssl_channel_credentials(tls.ca_bytes()),
        "another CA's certificate": grpc.ssl_channel_credentials(
            tls.ca_bytes(),
            (other / "mallory.key").read_bytes(),
            (other / "mallory.pem").read_bytes(),
        ),
        "an expired certificate": grpc.ssl_channel_credentials(
            tls.ca_bytes(), (expired / "late.key").read_bytes(), (expired / "late.pem").read_bytes()
        ),
    }
    for what, credentials in attempts.items():
        with Client(cluster.endpoints.split(",")[:1], credentials=credentials, timeout=2) as c:
            with pytest.raises(Unavailable):
                c.get("/tls/a")
            print(what, "refused")
    # the same kind of certificate from the same CA, not yet expired, is let in
    issue(cluster.tls_dir, str(expired), "punctual", client="punctual")
    punctual = grpc.ssl_channel_credentials(
        tls.ca_bytes(),
        (expired / "punctual.key").read_bytes(),
        (expired / "punctual.pem").read_bytes(),
    )
    with Client(cluster.endpoints.split(",")[:1], credentials=punctual, timeout=5) as c:
        c.get("/tls/a")
    tls_flags = ("--ca-file", tls.ca, "--cert-file", tls.cert, "--key-file", tls.key)
    assert run_cli(cluster, *tls_flags, "put", "/tls/cli", "tls").returncode == 0
    insecure = run_cli(cluster, "--timeout", "2", "--insecure", "put", "/tls/cli", "plain")
    assert insecure.returncode == 1 and "unavailable" in insecure.stderr, insecure
    assert run_cli(cluster, *tls_flags, "get", "/tls/cli").stdout == "tls\n"


def test_a_node_certificate_cannot_speak_for_another_node(cluster: LocalCluster) -> None:
    token = NodeConfig(cluster_secret_file=cluster.secret_file).peer_token()
    tls_dir = cluster.tls_dir

    def raft_call(cert: str, claimed: str) -> grpc.RpcError:
        files = TlsFiles(
            os.path.join(tls_dir, "ca.pem"),
            os.path.join(tls_dir, f"{cert}.pem"),
            os.path.join(tls_dir, f"{cert}.key"),
        )
        with (
            grpc.secure_channel(cluster.addresses["n1"], files.channel_credentials()) as ch,
            pytest.raises(grpc.RpcError) as info,
        ):
            pb_grpc.PeerStub(ch).Raft(
                pb.RaftBatch(from_id=claimed, frames=[b"not a pickle"]),
                timeout=5,
                metadata=auth_metadata(token),
            )
        return info.value

    impostor = raft_call("n2", "n3")
    assert impostor.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "'node/n2' may not speak for 'n3'" in impostor.details()  # type: ignore[attr-defined]
    client = raft_call("cli", "n2")
    assert client.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "need a node certificate" in client.details()  # type: ignore[attr-defined]
    gossip_cert = TlsFiles(
        os.path.join(tls_dir, "ca.pem"),
        os.path.join(tls_dir, "n2.pem"),
        os.path.join(tls_dir, "n2.key"),
    )
    with (
        grpc.secure_channel(cluster.addresses["n1"], gossip_cert.channel_credentials()) as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        pb_grpc.PeerStub(ch).Ping(
            pb.PeerMessage(from_id="n3", payload=b"x"), timeout=5, metadata=auth_metadata(token)
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    # the cluster is unharmed, and n1's audit log names who tried what
    assert cluster.wait_leader(10, all_up=True)
    audit = pathlib.Path(cluster.data_dir("n1"), "audit.log").read_text()
    records = [json.loads(line) for line in audit.splitlines()]
    assert any(
        r["who"] == "node/n2"
        and r["action"] == "/tadpole.v1.Peer/Raft"
        and r["result"] == "denied"
        and "may not speak for 'n3'" in r["detail"]
        for r in records
    )
    assert any(r["who"] == "client/cli" and r["result"] == "denied" for r in records)


def test_https_needs_a_client_certificate(cluster: LocalCluster) -> None:
    tls = cluster.client_tls()
    assert tls is not None
    url = f"https://{cluster.metrics_address('n1')}/healthz"
    with urllib.request.urlopen(url, context=tls.client_context(), timeout=5) as resp:
        assert resp.status == 200
    no_cert = ssl.create_default_context(cafile=tls.ca)
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(url, context=no_cert, timeout=5).read()
    # TLS 1.2 is accepted (1.3 by default above); older versions are refused by the
    # server's context (minimum_version, checked in tests/unit/node/test_tls.py) -- a
    # client here cannot even offer them (OpenSSL's security level).
    twelve = tls.client_context()
    twelve.maximum_version = ssl.TLSVersion.TLSv1_2
    with urllib.request.urlopen(url, context=twelve, timeout=5) as resp:
        assert resp.status == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext: hung up on
        urllib.request.urlopen(url.replace("https", "http"), timeout=5)


def test_a_rotated_certificate_is_served_on_new_connections(cluster: LocalCluster) -> None:
    address = cluster.addresses["n3"]
    http = cluster.metrics_address("n3")
    assert http is not None
    before = served_certificate(address, "h2").serial_number
    assert served_certificate(http, "http/1.1").serial_number == before
    time.sleep(0.01)  # a new modification time
    issue(cluster.tls_dir, cluster.tls_dir, "n3", node_id="n3", hosts=("127.0.0.1",),
          overwrite=True)  # fmt: skip
    assert served_certificate(address, "h2").serial_number != before  # gRPC: next handshake
    pid = cluster.pid("n3")
    assert pid is not None
    os.kill(pid, signal.SIGHUP)  # HTTPS: at once on SIGHUP (else within 5 s)
    deadline = time.monotonic() + 10
    while served_certificate(http, "http/1.1").serial_number == before:
        assert time.monotonic() < deadline, "HTTPS still serves the old certificate"
        time.sleep(0.2)
    with Client([address], credentials=cluster.client_credentials()) as client:
        assert client.put("/tls/after-rotation", "x").revision > 0
    assert cluster.wait_leader(10, all_up=True)
    # No private key material in any node's log.
    logs = "".join(pathlib.Path(cluster.log_file(n)).read_text() for n in cluster.node_ids)
    for name in ("n1", "n2", "n3", "cli", "ca"):
        pem = pathlib.Path(cluster.tls_dir, f"{name}.key").read_text()
        body = "".join(line for line in pem.splitlines() if "PRIVATE KEY" not in line)
        assert body[:40] not in logs


def test_a_node_dialling_a_peer_checks_it_is_that_peer(cluster: LocalCluster) -> None:
    """Every node's certificate names the same address here (and gossip can say any
    address): what a caller checks is the peer's own name, ``<id>.node.tadpole``."""
    tls = cluster.client_tls()
    assert tls is not None
    address = cluster.addresses["n1"]
    with sync_channel(address, tls, server_name=server_name_for("n1")) as channel:
        assert pb_grpc.ClusterStub(channel).Status(pb.StatusRequest(), timeout=5).id == "n1"
    with (
        sync_channel(address, tls, server_name=server_name_for("n2")) as channel,
        pytest.raises(grpc.RpcError) as info,  # n1's certificate is not n2's
    ):
        pb_grpc.ClusterStub(channel).Status(pb.StatusRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_gossip_that_claims_another_sender_is_refused(cluster: LocalCluster) -> None:
    from gossip.codec import encode
    from gossip.messages import Gossip

    token = NodeConfig(cluster_secret_file=cluster.secret_file).peer_token()
    files = TlsFiles(
        os.path.join(cluster.tls_dir, "ca.pem"),
        os.path.join(cluster.tls_dir, "n2.pem"),
        os.path.join(cluster.tls_dir, "n2.key"),
    )
    with (
        sync_channel(cluster.addresses["n1"], files, server_name=server_name_for("n1")) as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        pb_grpc.PeerStub(ch).Gossip(
            pb.PeerMessage(from_id="n2", payload=encode(Gossip(src="n3"))),
            timeout=5,
            metadata=auth_metadata(token),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "from 'n3' sent by 'n2'" in info.value.details()  # type: ignore[attr-defined]


def test_certificates_rotate_under_load_without_a_failed_request(tmp_path: pathlib.Path) -> None:
    """Every node's certificate is replaced while clients write: over connections
    already open, over new ones (a handshake each), and over HTTPS; not one request
    fails, and the cluster keeps its leader and every node (the peers reopen their own
    links with the new certificates)."""
    cluster = start_http_cluster(str(tmp_path / "c"))
    stop = threading.Event()
    done: collections.Counter[str] = collections.Counter()
    errors: list[str] = []

    def steady() -> None:  # one client, its connections opened before the rotation
        with cluster.client(timeout=10.0) as client:
            while not stop.is_set():
                try:
                    client.put(f"/load/steady/{done['steady'] % 50}", "x")
                    done["steady"] += 1
                except Exception as exc:
                    errors.append(f"steady: {exc!r}")

    def fresh() -> None:  # a new client, so a new handshake, for every write
        while not stop.is_set():
            try:
                with cluster.client(timeout=10.0) as client:
                    client.put(f"/load/fresh/{done['fresh'] % 50}", "x")
                done["fresh"] += 1
            except Exception as exc:
                errors.append(f"fresh: {exc!r}")

    def web() -> None:  # HTTPS, a connection per request
        context = cluster.http_context()
        assert context is not None
        while not stop.is_set():
            node = cluster.node_ids[done["web"] % 3]
            address = cluster.metrics_address(node)
            assert address is not None
            try:
                status, body, _ = https(address, "GET", "/state/system?prefix=/load/", context)
                if status != 200:
                    errors.append(f"web: {status} {body}")
                done["web"] += 1
            except Exception as exc:
                errors.append(f"web: {exc!r}")

    threads = [threading.Thread(target=f, daemon=True) for f in (steady, fresh, web)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        for node in cluster.node_ids:
            address, http = cluster.addresses[node], cluster.metrics_address(node)
            assert http is not None
            before = served_certificate(address, "h2").serial_number
            issue(cluster.tls_dir, cluster.tls_dir, node, node_id=node, hosts=("127.0.0.1",),
                  overwrite=True)  # fmt: skip
            pid = cluster.pid(node)
            assert pid is not None
            os.kill(pid, signal.SIGHUP)
            deadline = time.monotonic() + 10
            while (
                served_certificate(address, "h2").serial_number == before
                or served_certificate(http, "http/1.1").serial_number == before
            ):
                assert time.monotonic() < deadline, f"{node} still serves its old certificate"
                time.sleep(0.1)
        counted = dict(done)
        time.sleep(2.0)  # the peers' own links reopen within a second of the change
        stop.set()
        for t in threads:
            t.join(30)
        assert errors == [], errors[:5]
        assert done["steady"] > counted["steady"] > 20, done  # writes went on throughout
        assert done["fresh"] > counted["fresh"] > 5 and done["web"] > counted["web"] > 5, done
        assert cluster.wait_leader(10, all_up=True)
        logs = "".join(pathlib.Path(cluster.log_file(n)).read_text() for n in cluster.node_ids)
        assert not re.search(r"raft link to \w+ down", logs)  # no peer link broke
    finally:
        stop.set()
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def _as_n2(cluster: LocalCluster) -> tuple[str, TlsFiles]:
    """The cluster credential and n2's certificate: a caller TLS admits as node/n2."""
    token = NodeConfig(cluster_secret_file=cluster.secret_file).peer_token()
    files = TlsFiles(
        os.path.join(cluster.tls_dir, "ca.pem"),
        os.path.join(cluster.tls_dir, "n2.pem"),
        os.path.join(cluster.tls_dir, "n2.key"),
    )
    return token, files


def test_a_raft_stream_is_bound_to_its_first_sender_and_checks_every_message(
    cluster: LocalCluster,
) -> None:
    """RaftStream over mutual TLS with n2's certificate and the cluster credential: a
    first batch claiming another node is refused PERMISSION_DENIED; a stream that
    changes its sender is ended INVALID_ARGUMENT naming the problem. Nothing is
    delivered to Raft from them and the cluster still commits."""
    token, files = _as_n2(cluster)
    empty = pb.RaftBatch(from_id="n2", frames=[], want_replies=True).SerializeToString()
    cases = [
        ([pb.RaftBatch(from_id="n3", want_replies=True).SerializeToString()],
         grpc.StatusCode.PERMISSION_DENIED, "may not speak for 'n3'"),
        ([empty, pb.RaftBatch(from_id="n3", want_replies=True).SerializeToString()],
         grpc.StatusCode.INVALID_ARGUMENT, "one sender's batches: 'n2', then 'n3'"),
    ]  # fmt: skip
    with sync_channel(cluster.addresses["n1"], files, server_name=server_name_for("n1")) as ch:
        stream = ch.stream_stream("/tadpole.v1.Peer/RaftStream")
        for messages, code, words in cases:
            acks = []
            with pytest.raises(grpc.RpcError) as info:
                for ack in stream(iter(messages), timeout=5, metadata=auth_metadata(token)):
                    acks.append(pb.RaftAck.FromString(ack))
            assert info.value.code() == code, words  # type: ignore[attr-defined]
            assert words in info.value.details()  # type: ignore[attr-defined]
            assert all(not a.frames for a in acks)  # at most the empty batch's empty ack
    with Client(cluster.endpoints.split(","), credentials=cluster.client_credentials()) as client:
        assert client.put("/after/raft-stream", "ok").revision > 0
        kv = client.get("/after/raft-stream")
        assert kv is not None and kv.value == b"ok"


def test_an_undecodable_raft_stream_message_is_invalid_argument(cluster: LocalCluster) -> None:
    """Over a real TLS connection, after an answered batch: the refusal is sent from
    the handler's task (from the task reading the requests, it could collide with the
    first ack being written, and gRPC dropped the status: DEADLINE_EXCEEDED)."""
    token, files = _as_n2(cluster)
    empty = pb.RaftBatch(from_id="n2", frames=[], want_replies=True).SerializeToString()
    with sync_channel(cluster.addresses["n1"], files, server_name=server_name_for("n1")) as ch:
        stream = ch.stream_stream("/tadpole.v1.Peer/RaftStream")
        with pytest.raises(grpc.RpcError) as info:
            list(stream(iter([empty, b"\x0a\x7f"]), timeout=5, metadata=auth_metadata(token)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "not a valid tadpole.v1.RaftBatch message" in info.value.details()  # type: ignore[attr-defined]
