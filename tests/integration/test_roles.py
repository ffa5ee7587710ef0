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
            ("auth", "role", "add", "app-reader", "read:system:/app/"),
            ("auth", "role", "add", "job-writer", "write:population:job_resource_ledger/"),
            ("auth", "user", "grant-role", "alice", "app-reader", "job-writer"),
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

        # the CLI's grammar: each mistake is named and changes nothing...
        before = tls_cli(cluster, "auth", "show").stdout  # type: ignore[attr-defined]
        for args, error in (
            (("role", "grant", "ghost", "read:system:/x/"), "no role 'ghost'"),
            (("role", "add", "app-reader"), "role 'app-reader' exists"),
            (("role", "revoke", "app-reader", "write:system:/app/"),
             "does not grant write on system /app/"),
            (("role", "remove", "app-reader"), "held by alice"),
            (("role", "add", "x", "read:nowhere:/"), "tier 'nowhere'"),
            (("role", "add", "x", "read-system"), "a grant is PERM:TIER:PREFIX"),
            (("user", "add", "alice"), "user 'alice' exists"),
            (("user", "grant-role", "bob", "ghost"), "no role 'ghost'"),
            (("user", "revoke-role", "alice", "ops"), "does not hold role 'ops'"),
            (("user", "remove", "nobody"), "no user 'nobody'"),
            (("user", "add", "bad name"), "a name is 1-64 of"),
        ):  # fmt: skip
            done = tls_cli(cluster, "auth", *args)
            out = done.stdout + done.stderr  # type: ignore[attr-defined]
            assert done.returncode != 0 and error in out, (args, out)  # type: ignore[attr-defined]
        assert tls_cli(cluster, "auth", "show").stdout == before  # type: ignore[attr-defined]
        # ...and each change says what it made
        for args, said in (
            (("role", "grant", "app-reader", "read:mesh:m-", "read:mesh:m-"),
             "role app-reader: read on system /app/; read on mesh m-"),
            (("role", "revoke", "app-reader", "read:mesh:m-"),
             "role app-reader: read on system /app/"),
            (("user", "grant-role", "bob", "job-writer"), "user bob: job-writer"),
            (("user", "revoke-role", "bob", "job-writer"), "user bob: (no roles)"),
            (("user", "remove", "bob"), "user bob: removed"),
            (("role", "add", "spare"), "role spare: (no grants)"),
            (("role", "remove", "spare"), "role spare: removed"),
        ):  # fmt: skip
            done = tls_cli(cluster, "auth", *args)
            out = done.stdout + done.stderr  # type: ignore[attr-defined]
            assert done.returncode == 0 and done.stdout.strip() == said, (args, out)  # type: ignore[attr-defined]
        assert tls_cli(cluster, "auth", "show").stdout == before  # type: ignore[attr-defined]

        assert tls_cli(cluster, "auth", "disable").returncode == 0  # type: ignore[attr-defined]
        time.sleep(1.5)
        with Client(endpoints, credentials=creds(cluster, "bob")) as bob:
            kv = bob.get("/app/config")
            assert kv is not None
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
