"""Mesh documents and graph queries on three real node processes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest

from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

Q = pb.GraphQueryRequest


def docs(stubs: Any, cluster: Any, node_id: str) -> Any:
    return pb_grpc.DocumentsStub(stubs(cluster, node_id).channel)


def ids(n: int) -> list[str]:
    return sorted(str(uuid.UUID(int=(i + 1) << 64 | 0x4000_8000_0000_0000 | i, version=4))
                  for i in range(n))  # fmt: skip


def test_mesh_lifecycle_and_graph_queries(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    a, b, c = (docs(stubs, cluster, n) for n in cluster.node_ids)
    agents = ids(5)
    mesh1, mesh2 = (str(uuid.uuid4()) for _ in range(2))
    doc1 = {"topology": {"mesh_id": mesh1, "member_agents": agents[:3],
                         "formation_timestamp": 1_700_000_000_000_000_000}}  # fmt: skip
    created = a.Put(pb.DocPutRequest(tier="mesh", id=mesh1, doc_json=json.dumps(doc1),
                                     create=True), timeout=10)  # fmt: skip
    body = json.loads(created.doc_json)
    assert body["topology"]["member_agents"] == agents[:3]
    assert len(body["topology"]["topology_hash"]) == 32  # 128-bit Merkle root, hex
    int(body["topology"]["topology_hash"], 16)
    b.Put(
        pb.DocPutRequest(
            tier="mesh",
            id=mesh2,
            create=True,
            doc_json=json.dumps(
                {"topology": {"mesh_id": mesh2, "member_agents": [agents[2], agents[4]]}}
            ),
        ),
        timeout=10,
    )

    # Any node answers; the topology hash depends only on the member set.
    got = json.loads(c.Get(pb.DocGetRequest(tier="mesh", id=mesh1), timeout=10).doc_json)
    assert got == body

    def query(stub: Any, kind: int, key: str, **kw: Any) -> list[str]:
        return list(stub.Query(pb.GraphQueryRequest(kind=kind, id=key, **kw), timeout=10).ids)

    assert query(c, Q.MEMBERS_OF_MESH, mesh1) == agents[:3]
    assert query(a, Q.MESHES_OF_AGENT, agents[2]) == sorted([mesh1, mesh2])
    assert query(b, Q.NEIGHBOURS, agents[2]) == sorted([agents[0], agents[1], agents[4]])
    page = c.Query(pb.GraphQueryRequest(kind=Q.MEMBERS_OF_MESH, id=mesh1, limit=2), timeout=10)
    assert list(page.ids) == agents[:2] and page.more

    # Membership changes move the index; queries follow.
    moved = c.Members(pb.MeshMembersRequest(mesh_id=mesh1, add=[agents[3]],
                                            remove=[agents[0]]), timeout=10)  # fmt: skip
    assert (
        json.loads(moved.doc_json)["topology"]["topology_hash"] != body["topology"]["topology_hash"]
    )
    assert query(a, Q.MESHES_OF_AGENT, agents[0]) == []
    assert query(a, Q.MESHES_OF_AGENT, agents[3]) == [mesh1]

    # Delete: gone for reads and queries; a second create is allowed after it.
    b.Delete(pb.DocGetRequest(tier="mesh", id=mesh2), timeout=10)
    assert not a.Get(pb.DocGetRequest(tier="mesh", id=mesh2), timeout=10).found
    assert query(c, Q.MESHES_OF_AGENT, agents[4]) == []
    with pytest.raises(grpc.RpcError) as err:
        a.Put(pb.DocPutRequest(tier="mesh", id=mesh1, create=True, doc_json=json.dumps(doc1)),
              timeout=10)  # fmt: skip
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"topology": {"mesh_id": "not-a-uuid"}}, "mesh_id"),
        ({"topology": {"member_agents": ["x"]}}, "member_agents"),
        ({"topology": {"topology_hash": "00"}}, "topology_hash"),
        ({"gossip": {}}, "gossip"),
        ({"performance_data": {"emergence_indicators": ["high"]}}, "emergence_indicators"),
    ],
)
def test_bad_mesh_documents_are_rejected(
    make_cluster: Any, stubs: Any, doc: dict[str, Any], fragment: str
) -> None:
    cluster = make_cluster()
    stub = docs(stubs, cluster, "n1")
    mesh = str(uuid.uuid4())
    doc = {"topology": {"mesh_id": mesh, **doc.get("topology", {})},
           **{k: v for k, v in doc.items() if k != "topology"}}  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        stub.Put(pb.DocPutRequest(tier="mesh", id=doc["topology"]["mesh_id"], create=True,
                                  doc_json=json.dumps(doc)), timeout=10)  # fmt: skip
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (err.value.details() or ""), err.value.details()
    assert not stub.Get(pb.DocGetRequest(tier="mesh", id=mesh), timeout=10).found
