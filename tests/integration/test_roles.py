"""Roles on a real mTLS cluster: with roles enabled a client may do only what its
certificate's roles grant, a denial names the missing permission and changes nothing,
the operator token stays root, and the HTTP port enforces the same roles."""

from __future__ import annotations

import json
import pathlib
import time
import urllib.error
import urllib.request

import grpc
import pytest

from node.certs import issue
from node.client import Client
from node.client.errors import PermissionDenied
from node.dev.cluster import LocalCluster
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.tls import TlsFiles
from tests.integration.conftest import run_cli, start_http_cluster

pytestmark = pytest.mark.integration


def creds(cluster: LocalCluster, name: str) -> grpc.ChannelCredentials:
    d = cluster.tls_dir
    return TlsFiles(f"{d}/ca.pem", f"{d}/{name}.pem", f"{d}/{name}.key").channel_credentials()


def tls_cli(cluster: LocalCluster, *args: str) -> object:
    tls = cluster.client_tls()
    assert tls is not None
    return run_cli(cluster, "--ca-file", tls.ca, "--cert-file", tls.cert, "--key-file", tls.key,
                   *args)  # fmt: skip


def test_roles_grant_exactly_what_they_say(tmp_path: pathlib.Path) -> None:
    cluster = start_http_cluster(str(tmp_path / "c"), tls=True)
    try:
        for name in ("alice", "bob"):
            issue(cluster.tls_dir, cluster.tls_dir, name, client=name)
        endpoints = cluster.endpoints.split(",")
        with Client(endpoints, credentials=creds(cluster, "cli")) as anyone:
            anyone.put("/app/config", "v1")  # before roles are enabled, anyone may

        for args in (
            ("auth", "role", "app-reader", "--grant", "read:system:/app/"),
            ("auth", "role", "job-writer", "--grant", "write:population:job_resource_ledger/"),
            ("auth", "user", "alice", "--role", "app-reader", "--role", "job-writer"),
            ("auth", "enable"),
        ):
            done = tls_cli(cluster, *args)
            assert done.returncode == 0, done.stdout + done.stderr  # type: ignore[attr-defined]
        shown = tls_cli(cluster, "auth", "show")
        assert "roles are ENABLED" in shown.stdout  # type: ignore[attr-defined]
        time.sleep(1.5)  # every node reads the policy within a second

        with Client(endpoints, credentials=creds(cluster, "alice")) as alice:
            kv = alice.get("/app/config")
            assert kv is not None and kv.value == b"v1"
            with pytest.raises(PermissionDenied, match="alice lacks write on system '/app/config'"):
                alice.put("/app/config", "v2")
            alice.counter_add("population", "job_resource_ledger/job-1", 3)
            with pytest.raises(
                PermissionDenied, match="lacks write on population 'worker_journal/w-1'"
            ):
                alice.counter_add("population", "worker_journal/w-1", 1)
            with pytest.raises(PermissionDenied, match="lacks read on system keys under '/'"):
                alice.range("/")
            with pytest.raises(PermissionDenied, match="write on system '/tadpole/auth/policy'"):
                alice.put("/tadpole/auth/policy", '{"enabled": false}')
        with Client(endpoints, credentials=creds(cluster, "bob")) as bob:
            with pytest.raises(PermissionDenied, match="bob lacks read on system '/app/config'"):
                bob.get("/app/config")
            assert {m.id for m in bob.members()} == {"n1", "n2", "n3"}  # any identified caller

        # a raw call, to see the outcome: refused before anything was applied
        with grpc.secure_channel(cluster.addresses["n1"], creds(cluster, "alice")) as ch:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.KVStub(ch).Put(pb.PutRequest(key="/app/config", value=b"x"), timeout=5)
            trailers = dict(info.value.trailing_metadata() or ())  # type: ignore[attr-defined]
            assert trailers.get("tadpole-outcome") == "not-applied"

        # the operator token is root; the value never changed
        token = pathlib.Path(cluster.token_file).read_text().strip()
        with Client(endpoints, credentials=creds(cluster, "cli"), token=token) as root:
            kv = root.get("/app/config")
            assert kv is not None and kv.value == b"v1"
            root.put("/anything", "ok")

        # HTTP: the same roles (tests/integration/test_roles_matrix.py asks a table)
        d = cluster.tls_dir
        alice_tls = TlsFiles(f"{d}/ca.pem", f"{d}/alice.pem", f"{d}/alice.key")
        base_url = f"https://{cluster.metrics_address('n1')}/state/system?prefix="
        with urllib.request.urlopen(
            base_url + "/app/", context=alice_tls.client_context(), timeout=5
        ) as ok:
            assert json.loads(ok.read()) == {"/app/config": {"$base64": "djE="}}  # b"v1", not JSON
        with pytest.raises(urllib.error.HTTPError) as http_info:
            urllib.request.urlopen(base_url + "/", context=alice_tls.client_context(), timeout=5)
        with http_info.value:  # closes its TLS connection
            assert http_info.value.code == 403
            assert "alice lacks read on system keys under '/'" in http_info.value.read().decode()

        audit = pathlib.Path(cluster.data_dir("n1"), "audit.log").read_text()
        assert "alice lacks write on system" in audit or any(
            "alice lacks" in pathlib.Path(cluster.data_dir(n), "audit.log").read_text()
            for n in ("n2", "n3")
        )

        assert tls_cli(cluster, "auth", "disable").returncode == 0  # type: ignore[attr-defined]
        time.sleep(1.5)
        with Client(endpoints, credentials=creds(cluster, "bob")) as bob:
            kv = bob.get("/app/config")
            assert kv is not None
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
