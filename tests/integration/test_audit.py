"""The audit trail on real nodes: refused calls and operator actions are recorded with
who, from where, what and the result; the records are durable (kill -9), private (0600)
and hold no credential; `tadpole audit tail` merges every node's."""

from __future__ import annotations

import json
import os
import pathlib

import grpc
import pytest

from node.config import NodeConfig
from node.dev.cluster import LocalCluster
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration


def test_refused_calls_and_operator_actions_are_audited(make_cluster: object) -> None:
    cluster: LocalCluster = make_cluster(3)  # type: ignore[operator]
    address = cluster.addresses["n1"]
    guessed = "guessed-token-0123456789abcdef"
    with grpc.insecure_channel(address) as channel:
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
    assert denied_rotate[0]["who"] == "anonymous"
    assert denied_rotate[0]["from"].startswith("ipv4:127.0.0.1:")
    assert any(r["action"] == "/tadpole.v1.Peer/Raft" and r["result"] == "denied" for r in mine)
    for node_id in cluster.node_ids:
        by_node = [r for r in records if r["node"] == node_id]
        assert any(r["action"] == "/tadpole.v1.Keys/Status" and r["result"] == "ok"
                   and r["who"] == "operator" for r in by_node), node_id  # fmt: skip
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
