"""Agent documents on three real nodes: causal tokens across nodes, the backup
serving after the owner dies, collaborative capability edits, bad documents."""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

import grpc
import pytest

from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.placement import ranking
from tests.agent_docs import agent_doc

pytestmark = pytest.mark.integration


def docs(stubs: Any, cluster: Any, node_id: str) -> Any:
    return pb_grpc.DocumentsStub(stubs(cluster, node_id).channel)


def wait_members(stubs: Any, cluster: Any, alive: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ok = True
        for node_id in alive:
            resp = stubs(cluster, node_id).cluster.Members(pb.MembersRequest(), timeout=5)
            seen = {m.id for m in resp.members if m.gossip_status == "alive"}
            ok = ok and set(alive) <= seen
        if ok:
            return
        time.sleep(0.2)
    raise AssertionError("gossip did not converge")


def test_causal_session_across_nodes_never_goes_back(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    wait_members(stubs, cluster, cluster.node_ids)
    agent = str(uuid.uuid4())
    nodes = [docs(stubs, cluster, n) for n in cluster.node_ids]
    created = nodes[0].Put(
        pb.DocPutRequest(
            tier="agent", id=agent, create=True, doc_json=json.dumps(agent_doc(agent))
        ),
        timeout=10,
    )
    token = dict(created.causal_token)
    assert token and created.replicas  # acknowledged by the owner (backup is asynchronous)
    rng = random.Random(7)
    for step in range(30):
        writer, reader = rng.sample(nodes, 2)
        patch = {"performance_state": {"current_metrics": {"step": step}}}
        written = writer.Put(
            pb.DocPutRequest(tier="agent", id=agent, doc_json=json.dumps(patch),
                             causal_token=token),
            timeout=10,
        )  # fmt: skip
        token = dict(written.causal_token)
        got = reader.Get(pb.DocGetRequest(tier="agent", id=agent, causal_token=token), timeout=10)
        seen = json.loads(got.doc_json)["performance_state"]["current_metrics"]["step"]
        assert seen == step, f"read after write {step} saw {seen}"
        assert all(got.causal_token[n] >= c for n, c in token.items())


def test_backup_serves_after_the_owner_dies(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    wait_members(stubs, cluster, cluster.node_ids)
    agent = str(uuid.uuid4())
    owner, backup = ranking(f"agent\x00{agent}", cluster.node_ids)[:2]
    client = docs(stubs, cluster, backup)
    resp = client.Put(
        pb.DocPutRequest(
            tier="agent", id=agent, create=True, doc_json=json.dumps(agent_doc(agent))
        ),
        timeout=10,
    )
    assert resp.member_id in (owner, backup)  # any owner coordinates
    created = dict(resp.causal_token)
    # Two clients, each carrying the creation token, edit the capability
    # vector concurrently through different owners: the edits commute.
    one = docs(stubs, cluster, owner).CapabilityAdd(
        pb.CapabilityAddRequest(agent_id=agent, amounts={3: 0.5}, causal_token=created),
        timeout=10,
    )
    two = client.CapabilityAdd(
        pb.CapabilityAddRequest(agent_id=agent, amounts={3: 0.25, 200: -1.0}, causal_token=created),
        timeout=10,
    )
    token = dict(one.causal_token)
    for n, c in two.causal_token.items():
        token[n] = max(token.get(n, 0), c)
    merged = docs(stubs, cluster, owner).Get(
        pb.DocGetRequest(tier="agent", id=agent, causal_token=token), timeout=10
    )
    vector = json.loads(merged.doc_json)["knowledge_state"]["capability_vector"]
    assert vector[3] == 0.75 and vector[200] == -1.0
    # Wait until the asynchronous backup has it, then lose the owner.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        keys = pb_grpc.TiersStub(stubs(cluster, backup).channel).LocalKeys(
            pb.TierKeysRequest(tier="agent"), timeout=5
        )
        if agent in keys.keys:
            break
        time.sleep(0.1)
    cluster.kill(owner)
    got = client.Get(pb.DocGetRequest(tier="agent", id=agent, causal_token=token), timeout=15)
    assert got.found
    assert json.loads(got.doc_json)["knowledge_state"]["capability_vector"][3] == 0.75


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("identity", "agent_id"), "not-a-uuid", "agent_id"),
        (("identity", "public_key"), "zz", "public_key"),
        (("knowledge_state", "capability_vector"), [0.0] * 255, "capability_vector"),
        (("performance_state", "rubric_scores"), ["high"], "rubric_scores"),
    ],
)
def test_bad_agent_documents_are_rejected(
    make_cluster: Any, stubs: Any, path: tuple[str, str], value: Any, fragment: str
) -> None:
    cluster = make_cluster()
    agent = str(uuid.uuid4())
    doc = agent_doc(agent)
    doc[path[0]][path[1]] = value
    stub = docs(stubs, cluster, "n1")
    with pytest.raises(grpc.RpcError) as err:
        stub.Put(pb.DocPutRequest(tier="agent", id=agent, create=True, doc_json=json.dumps(doc)),
                 timeout=10)  # fmt: skip
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (err.value.details() or ""), err.value.details()
    assert not stub.Get(pb.DocGetRequest(tier="agent", id=agent), timeout=10).found


def test_agent_cli_round_trip_with_tokens(make_cluster: Any, stubs: Any, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from node.cli.app import cli

    cluster = make_cluster()
    wait_members(stubs, cluster, cluster.node_ids)
    agent = str(uuid.uuid4())
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(agent_doc(agent)))
    runner = CliRunner()
    eps = list(cluster.addresses.values())

    def run(endpoint: str, *args: str) -> Any:
        return runner.invoke(cli, ["--endpoints", endpoint, *cluster.cli_flags(), "agent", *args])

    created = run(eps[0], "create", str(path))
    assert created.exit_code == 0, created.output
    token = created.stderr.split("token: ", 1)[1].strip()
    patched = run(eps[1], "patch", agent, '{"performance_state": {"rubric_scores": [0.9]}}',
                  "--token", token)  # fmt: skip
    assert patched.exit_code == 0, patched.output
    token = patched.stderr.split("token: ", 1)[1].strip()
    added = run(eps[2], "capability-add", agent, "7=0.5", "--token", token)
    assert added.exit_code == 0, added.output
    token = added.stderr.split("token: ", 1)[1].strip()
    got = run(eps[0], "get", agent, "--token", token)
    assert got.exit_code == 0, got.output
    doc = json.loads(got.stdout)
    assert doc["performance_state"]["rubric_scores"] == [0.9]
    assert doc["knowledge_state"]["capability_vector"][7] == 0.5
    bad = run(eps[0], "patch", agent, '{"identity": {"agent_id": "x"}}')
    assert bad.exit_code == 2 and "agent_id" in bad.stderr
    assert run(eps[0], "get", str(uuid.uuid4())).exit_code == 1
