"""The audit trail on real nodes: refused calls and operator actions are recorded with
who, from where, what and the result; the records are durable (kill -9), private (0600)
and hold no credential; `tadpole audit tail` merges every node's."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import pytest

from node.client import Client, compare_version
from node.client import PutOp as TxnPut
from node.client.errors import InvalidArgument
from node.config import NodeConfig
from node.dev.cluster import LocalCluster
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.rbac import POLICY_KEY
from tests.integration.conftest import run_cli, start_http_cluster
from tests.support.https import https

pytestmark = pytest.mark.integration


def tls_cli(cluster: LocalCluster, *args: str, stdin: str = "") -> Any:
    """``tadpole`` as the operator, over the cluster's mutual TLS."""
    tls = cluster.client_tls()
    assert tls is not None
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "--endpoints", cluster.endpoints,
         "--ca-file", tls.ca, "--cert-file", tls.cert, "--key-file", tls.key,
         "--token-file", cluster.token_file, "--timeout", "10", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_refused_calls_and_operator_actions_are_audited(make_cluster: object) -> None:
    cluster: LocalCluster = make_cluster(3)  # type: ignore[operator]
    guessed = "guessed-token-0123456789abcdef"
    with cluster.channel("n1") as channel:  # the CLI's certificate, no credential
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.KeysStub(channel).Rotate(
                pb.KeysRotateRequest(), timeout=5, metadata=auth_metadata(guessed)
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError):
            pb_grpc.PeerStub(channel).Raft(pb.RaftBatch(from_id="n2"), timeout=5)
    status = run_cli(cluster, "keys", "status")
    assert status.returncode == 0, status.stderr
    rotate = run_cli(cluster, "keys", "rotate")  # encryption is off: refused by the node
    assert rotate.returncode == 1 and "FAILED_PRECONDITION" in rotate.stdout

    tail = run_cli(cluster, "audit", "tail", "-n", "200", "--json")
    assert tail.returncode == 0, tail.stderr
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    mine = [r for r in records if r["node"] == "n1"]
    denied_rotate = [r for r in mine if r["action"] == "/tadpole.v1.Keys/Rotate"
                     and r["result"] == "denied"]  # fmt: skip
    assert len(denied_rotate) == 1
    assert denied_rotate[0]["who"] == "client/cli"  # its certificate names it
    assert denied_rotate[0]["from"].startswith("ipv4:127.0.0.1:")
    assert any(r["action"] == "/tadpole.v1.Peer/Raft" and r["result"] == "denied" for r in mine)
    for node_id in cluster.node_ids:
        by_node = [r for r in records if r["node"] == node_id]
        assert any(r["action"] == "/tadpole.v1.Keys/Status" and r["result"] == "ok"
                   and r["who"] == "operator (client/cli)" for r in by_node), node_id  # fmt: skip
        assert any(r["action"] == "/tadpole.v1.Keys/Rotate"
                   and r["result"] == "FAILED_PRECONDITION" for r in by_node), node_id  # fmt: skip
    text = tail.stdout
    path = os.path.join(cluster.data_dir("n1"), "audit.log")
    assert os.stat(path).st_mode & 0o777 == 0o600
    operator_token = NodeConfig(cluster_secret_file=cluster.secret_file).operator_token()
    on_disk = pathlib.Path(path).read_text(encoding="utf-8")
    for secret in (guessed, operator_token):
        assert secret not in text and secret not in on_disk

    # nothing the node wrote is readable by other users (the node's umask is 077)
    for directory, _, names in os.walk(cluster.data_dir("n1")):
        for name in [".", *names]:
            mode = os.stat(os.path.join(directory, name)).st_mode & 0o777
            assert mode & 0o077 == 0, (os.path.join(directory, name), oct(mode))

    # durable: what was answered survives kill -9
    cluster.kill("n1")
    cluster.start_node("n1")
    cluster.wait_leader(30, all_up=True)
    again = run_cli(cluster, "audit", "tail", "-n", "200", "--json")
    after = [json.loads(line) for line in again.stdout.splitlines()]
    assert denied_rotate[0] in after


def test_changes_to_the_policy_are_audited_admin_actions(tmp_path: pathlib.Path) -> None:
    """Granting roles, enabling them and setting a password are admin actions whatever
    the port: each is on record (started, then ok) with who made it and what it changes,
    by name, never a password hash; a policy document that does not parse is refused on
    both ports and changes nothing."""
    cluster = start_http_cluster(str(tmp_path / "c"), tls=True)
    try:
        for args in (
            ("auth", "role", "add", "ops", "read:system:/app/"),
            ("auth", "user", "grant-role", "erin", "ops"),
            ("auth", "enable"),
        ):
            done = tls_cli(cluster, *args)
            assert done.returncode == 0, done.stdout + done.stderr
        password = "correct horse battery staple"
        done = tls_cli(
            cluster, "auth", "password", "erin", "--password-stdin", stdin=password + "\n"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        operator = pathlib.Path(cluster.token_file).read_text(encoding="utf-8").strip()
        with Client(
            cluster.endpoints.split(","), credentials=cluster.client_credentials(), token=operator
        ) as root:
            before = root.get(POLICY_KEY)
            assert before is not None
            for broken_doc, named in (
                ('{"enabled": true, "roles": {"ops": "all"}}', "grants must be a list"),
                ('{"users": "x"}', "users must be a JSON object"),
                ('{"roles": {}, "users": {"u": [{}]}}', "roles must be a list of names"),
            ):
                with pytest.raises(InvalidArgument, match=named):
                    root.put(POLICY_KEY, broken_doc)
            # a transaction's failure branch is checked and described as its success is
            backdoor = json.loads(before.value)
            backdoor["roles"]["ops"] = [{"perm": "admin", "tier": "*", "prefix": ""}]
            with pytest.raises(InvalidArgument, match="no role 'ghost'"):
                root.txn([compare_version("/nothing/here", "==", 1)], [],
                         [TxnPut(POLICY_KEY, b'{"users": {"a": ["ghost"]}}')])  # fmt: skip
            taken = root.txn([compare_version("/nothing/here", "==", 1)], [],
                             [TxnPut(POLICY_KEY, json.dumps(backdoor).encode())])  # fmt: skip
            assert not taken.succeeded
            backdoor["roles"]["ops"] = [{"perm": "read", "tier": "system", "prefix": "/app/"}]
            root.put(POLICY_KEY, json.dumps(backdoor))  # back as it was
            restored = root.get(POLICY_KEY)
            assert restored is not None
            tls = cluster.client_tls()
            assert tls is not None
            address = cluster.metrics_address("n2")
            assert address is not None
            headers = {"Authorization": f"Bearer {operator}"}
            broken = {POLICY_KEY: {"users": {"erin": ["no-such-role"]}}}
            status, body, _ = https(address, "PATCH", "/state/system", tls.client_context(),
                                    broken, headers, "application/merge-patch+json")  # fmt: skip
            assert status == 400 and "no role 'no-such-role'" in body["detail"], body
            after = root.get(POLICY_KEY)
            assert after is not None and after.mod_revision == restored.mod_revision
            disable = {POLICY_KEY: {"enabled": False}}  # a merge patch of the document
            status, body, _ = https(address, "PATCH", "/state/system", tls.client_context(),
                                    disable, headers, "application/merge-patch+json")  # fmt: skip
            assert status == 200, body

        records: list[dict[str, str]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the tail is read from every node
            tail = tls_cli(cluster, "audit", "tail", "-n", "500", "--json")
            assert tail.returncode == 0, tail.stderr
            records = [json.loads(line) for line in tail.stdout.splitlines()]
            if any(r["action"] == "PATCH /state/system" and r["result"] == "ok" for r in records):
                break
            time.sleep(0.2)
        changes = [r for r in records if r["action"] in
                   ("/tadpole.v1.KV/Txn", "/tadpole.v1.KV/Put", "PATCH /state/system")]  # fmt: skip
        ended = [
            (r["action"], r["result"], r["detail"]) for r in changes if r["result"] != "started"
        ]
        txn = "/tadpole.v1.KV/Txn"
        assert (txn, "ok", "role ops: read on system /app/") in ended
        assert (txn, "ok", "user erin: ops") in ended
        assert (txn, "ok", "enabled") in ended
        assert (txn, "ok", "password of erin set") in ended
        assert (txn, "ok", "the compare failed: role ops: admin on * (every key)") in ended
        assert ("/tadpole.v1.KV/Put", "ok", "role ops: read on system /app/") in ended
        assert ("PATCH /state/system", "ok", "disabled") in ended
        # each began with a durable record of the attempt, made by the operator
        assert sum(r["result"] == "started" for r in changes) == len(ended) == 7, changes
        assert {r["who"] for r in changes} == {"operator (client/cli)"}
        assert not any("ghost" in r["detail"] for r in changes)  # refused before it ran
        policy = json.loads(before.value)
        for r in records:
            assert password not in json.dumps(r)
            assert policy["passwords"]["erin"] not in json.dumps(r)

        # ...and each node's records reach the event log, in order, for its readers
        exported: list[dict[str, str]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status, body, _ = https(address, "GET", "/api/v1/events?prefix=/tadpole/audit/",
                                    tls.client_context(), headers=headers)  # fmt: skip
            assert status == 200, body
            exported = [r for e in body["events"] for r in e["value"]["records"]]
            if any(r["action"] == "PATCH /state/system" and r["result"] == "ok" for r in exported):
                break
            time.sleep(0.2)
        keys = {e["key"] for e in body["events"]}
        assert keys <= {f"/tadpole/audit/{n}" for n in cluster.node_ids}, keys
        tail = "/tadpole.v1.Audit/Tail"  # reads of the trail: left out of the tail above
        from_n2 = [r for r in exported if r["node"] == "n2" and r["action"] != tail]
        on_n2 = [r for r in records if r["node"] == "n2"]
        assert from_n2 == on_n2[: len(from_n2)]  # the file's records, in the file's order
        assert ("PATCH /state/system", "ok", "disabled") in [
            (r["action"], r["result"], r["detail"]) for r in from_n2
        ]
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def test_audit_tail_follows_the_event_log(make_cluster: object) -> None:
    """`audit tail -f` shows the newest records, then each new one once, as the nodes
    copy them into the event log."""
    cluster: LocalCluster = make_cluster(3)  # type: ignore[operator]
    follow = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "--endpoints", cluster.endpoints, *cluster.cli_flags(),
         "--token-file", cluster.token_file, "audit", "tail", "-n", "1", "-f", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)  # the tail is shown and the watch is open
        guessed = "guessed-token-0123456789abcdef"
        with cluster.channel("n2") as channel, pytest.raises(grpc.RpcError):
            pb_grpc.KeysStub(channel).Rotate(
                pb.KeysRotateRequest(), timeout=5, metadata=auth_metadata(guessed)
            )
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()  # read apart: never hang here
        out = follow.stdout
        assert out is not None
        threading.Thread(target=lambda: [lines.put(x) for x in out], daemon=True).start()
        deadline = time.monotonic() + 20
        shown: list[dict[str, str]] = []
        while not any(r["action"] == "/tadpole.v1.Keys/Rotate" for r in shown):
            try:
                shown.append(json.loads(lines.get(timeout=max(0.0, deadline - time.monotonic()))))
            except queue.Empty:
                break
        rotations = [r for r in shown if r["action"] == "/tadpole.v1.Keys/Rotate"]
        assert [(r["node"], r["result"]) for r in rotations] == [("n2", "denied")], shown
        assert guessed not in json.dumps(shown)
        assert not any(r["action"] == "/tadpole.v1.Audit/Tail" for r in shown)  # --reads off
        assert len({json.dumps(r, sort_keys=True) for r in shown}) == len(shown)  # each once
    finally:
        follow.terminate()
        follow.communicate(timeout=10)
