"""Documents client (sync and asyncio) and ``tadpole mesh`` CLI against a fake Documents service.

The fake below is written for these tests: a document is a plain dict per ``(tier, id)``
(``None`` once deleted), membership edits are set operations, and agent-tier documents
carry a one-writer causal token. It honours the servicer's status contract
(node/api/documents.py): INVALID_ARGUMENT for bad input, NOT_FOUND for an absent mesh,
ALREADY_EXISTS for a create over a live one, UNAVAILABLE "...; nothing applied" when no
owner answered, ABORTED below write quorum. Failures are injected per method. Like
tests/unit/node/client/test_tiers_client_cli.py it runs on a loopback port, because what is under
test is the client's handling of real gRPC status codes; retry back-off is zero, so
nothing sleeps.
"""

from __future__ import annotations

import inspect
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from click.testing import CliRunner

from node import errors as server
from node.cli import app as cli_module
from node.client import AsyncClient, Client, DocResult, GraphQueryResult
from node.client.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    ReplicationIncomplete,
    WriteTimeout,
    from_rpc_error,
)
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from tests.support.client_helpers import FAST, client_for, dead_endpoint, rpc_error
from tests.support.fake_cluster import FakeNode, FakeServers, Transport

S = grpc.StatusCode
Q = pb.GraphQueryRequest


def uid(n: int) -> str:
    """A canonical lowercase uuid4 (what mesh and agent ids must be), deterministic."""
    return str(uuid.UUID(int=n, version=4))


M1, M2 = uid(0xA1), uid(0xA2)
A1, A2, A3, A4, A5 = (uid(i) for i in range(1, 6))
NOTHING_APPLIED = f"mesh/{M1}: none of its owners (n2, n3) answered; nothing applied"
BELOW_QUORUM = (
    f"mesh/{M1}: the update is durable on n1 but reached 1 of the 2 required replicas; "
    "it will converge when the owners are back (resending would apply it twice)"
)


def mesh_doc(mesh_id: str = M1, members: list[str] | None = None) -> dict[str, Any]:
    return {
        "topology": {
            "mesh_id": mesh_id,
            "member_agents": [A1, A2] if members is None else members,
            "formation_timestamp": 1_700_000_000_000_000_000,
        },
        "performance_data": {"collective_metrics": {"latency_ms": 12.5, "note": "ünïcode ✓"}},
        "capability_fusion": {"synergy_matrix": [[1, 0.5], [0.5, 1]]},
    }


# -- fake backend --------------------------------------------------------------------


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    context.abort(code, message)


class FakeDocuments(pb_grpc.DocumentsServicer):  # type: ignore[misc]
    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.cluster = node.cluster

    def _tier(self, tier: str, context: grpc.ServicerContext) -> str:
        if tier not in ("", "mesh", "agent"):
            _abort(context, S.INVALID_ARGUMENT, f"documents of tier {tier!r} are not served")
        return tier or "mesh"

    def _live(self, tier: str, doc_id: str, context: grpc.ServicerContext) -> dict[str, Any]:
        doc = self.cluster.docs.get((tier, doc_id))
        if doc is None:
            _abort(context, S.NOT_FOUND, f"mesh {doc_id} does not exist")
        assert doc is not None
        return doc

    def _response(self, tier: str, doc_id: str, *, write: bool) -> Any:
        doc = self.cluster.docs.get((tier, doc_id))
        resp = pb.DocResponse(member_id=self.node.id, found=doc is not None)
        if doc is not None:
            resp.doc_json = json.dumps(doc, sort_keys=True)
        if tier == "agent":
            resp.causal_token.update({self.node.id: self.cluster.versions.get(doc_id, 0)})
        if write:
            resp.replicas[:] = self.cluster.replicas
            resp.hinted[:] = self.cluster.hinted
        return resp

    def Put(self, request: Any, context: Any) -> Any:
        self.node.enter("Put", request, context)
        tier = self._tier(request.tier, context)
        try:
            doc = json.loads(request.doc_json)
        except ValueError:
            _abort(context, S.INVALID_ARGUMENT, "doc_json is not JSON")
        with self.cluster.lock:
            slot = (tier, request.id)
            if request.create:
                if self.cluster.docs.get(slot) is not None:
                    _abort(context, S.ALREADY_EXISTS, f"mesh {request.id} exists; use put")
                if tier == "mesh" and doc.get("topology", {}).get("mesh_id") != request.id:
                    _abort(context, S.INVALID_ARGUMENT, "topology.mesh_id does not match the id")
                self.cluster.docs[slot] = doc
            else:
                live = self._live(tier, request.id, context)
                for name, value in doc.items():
                    if tier == "agent" and value is None:  # merge patch: null removes
                        live.pop(name, None)
                    elif tier == "agent":
                        live[name] = value
                    else:  # mesh: replace the given fields of each section
                        live.setdefault(name, {}).update(value)
            self.cluster.versions[request.id] = self.cluster.versions.get(request.id, 0) + 1
            return self._response(tier, request.id, write=True)

    def Get(self, request: Any, context: Any) -> Any:
        self.node.enter("Get", request, context)
        tier = self._tier(request.tier, context)
        with self.cluster.lock:
            return self._response(tier, request.id, write=False)

    def Delete(self, request: Any, context: Any) -> Any:
        self.node.enter("Delete", request, context)
        tier = self._tier(request.tier, context)
        with self.cluster.lock:
            self._live(tier, request.id, context)
            self.cluster.docs[(tier, request.id)] = None
            return self._response(tier, request.id, write=True)

    def Members(self, request: Any, context: Any) -> Any:
        self.node.enter("Members", request, context)
        with self.cluster.lock:
            topology = self._live("mesh", request.mesh_id, context)["topology"]
            agents = set(topology["member_agents"]) | set(request.add)
            topology["member_agents"] = sorted(agents - set(request.remove))
            return self._response("mesh", request.mesh_id, write=True)

    def Query(self, request: Any, context: Any) -> Any:
        self.node.enter("Query", request, context)
        if request.limit < 0:
            _abort(context, S.INVALID_ARGUMENT, f"limit {request.limit} is negative")
        with self.cluster.lock:
            meshes = {
                doc_id: set(doc["topology"]["member_agents"])
                for (tier, doc_id), doc in self.cluster.docs.items()
                if tier == "mesh" and doc is not None
            }
        if request.kind == Q.MEMBERS_OF_MESH:
            ids = meshes.get(request.id, set())
        elif request.kind == Q.MESHES_OF_AGENT:
            ids = {m for m, agents in meshes.items() if request.id in agents}
        else:
            ids = set().union(*(a for a in meshes.values() if request.id in a)) - {request.id}
        # A naive oracle of mesh_doc.page: filter, sort, cut.
        kept = sorted(i for i in ids if i.startswith(request.prefix) and i > request.start_after)
        page = kept[: request.limit] if request.limit else kept
        return pb.GraphQueryResponse(ids=page, more=len(page) < len(kept))


class FakeCluster(FakeServers[FakeNode]):
    """Fake nodes over one shared document store."""

    def __init__(self, size: int) -> None:
        self.lock = threading.Lock()
        self.docs: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.versions: dict[str, int] = {}
        self.replicas: list[str] = ["n1", "n2"]
        self.hinted: list[str] = []
        super().__init__(
            size,
            lambda node, server: pb_grpc.add_DocumentsServicer_to_server(
                FakeDocuments(node), server
            ),
            lambda node_id: FakeNode(node_id, self),
            workers=4,
        )


@pytest.fixture
def one() -> Iterator[FakeCluster]:
    c = FakeCluster(1)
    yield c
    c.stop()


@pytest.fixture
def three() -> Iterator[FakeCluster]:
    c = FakeCluster(3)
    yield c
    c.stop()


# -- error mapping (pure) ------------------------------------------------------------


def test_already_exists_maps_to_its_own_error() -> None:
    err = from_rpc_error(rpc_error(S.ALREADY_EXISTS, f"mesh {M1} exists"), write=True, tiers=True)
    assert type(err) is AlreadyExists
    assert (str(err), err.code, err.details) == (
        f"already exists: mesh {M1} exists",
        "ALREADY_EXISTS",
        f"mesh {M1} exists",
    )


# -- requests --------------------------------------------------------------------------

REQUEST_CASES: list[tuple[str, str, Callable[[Client], Any], Any]] = [
    (
        "create",
        "Put",
        lambda c: c.doc_create("mesh", M2, {"topology": {"mesh_id": M2}}),
        pb.DocPutRequest(
            tier="mesh", id=M2, doc_json=f'{{"topology":{{"mesh_id":"{M2}"}}}}', create=True
        ),
    ),
    (
        "put",
        "Put",
        lambda c: c.doc_put("mesh", M1, {"capability_fusion": {"fused_capabilities": [0.5]}}),
        pb.DocPutRequest(
            tier="mesh", id=M1, doc_json='{"capability_fusion":{"fused_capabilities":[0.5]}}'
        ),
    ),
    (
        "agent-patch-with-token",
        "Put",
        lambda c: c.doc_put("agent", A1, {"note": None}, causal_token={"n1": 3, "n2": 1}),
        pb.DocPutRequest(
            tier="agent", id=A1, doc_json='{"note":null}', causal_token={"n1": 3, "n2": 1}
        ),
    ),
    ("get", "Get", lambda c: c.doc_get("mesh", M1), pb.DocGetRequest(tier="mesh", id=M1)),
    (
        "get-all-with-token",
        "Get",
        lambda c: c.doc_get("agent", A1, consistency="all", causal_token={"n3": 7}),
        pb.DocGetRequest(tier="agent", id=A1, consistency=pb.ALL, causal_token={"n3": 7}),
    ),
    ("delete", "Delete", lambda c: c.doc_delete("mesh", M1), pb.DocGetRequest(tier="mesh", id=M1)),
    (
        "join",
        "Members",
        lambda c: c.mesh_members(M1, add=[A3, A4]),
        pb.MeshMembersRequest(mesh_id=M1, add=[A3, A4]),
    ),
    (
        "join-and-leave",
        "Members",
        lambda c: c.mesh_members(M1, add=(A3,), remove=(A1,)),
        pb.MeshMembersRequest(mesh_id=M1, add=[A3], remove=[A1]),
    ),
    (
        "members-of-mesh",
        "Query",
        lambda c: c.graph_query("members_of_mesh", M1),
        pb.GraphQueryRequest(kind=Q.MEMBERS_OF_MESH, id=M1),
    ),
    (
        "meshes-of-agent",
        "Query",
        lambda c: c.graph_query("meshes_of_agent", A1, limit=2, start_after=M1, prefix="a"),
        pb.GraphQueryRequest(kind=Q.MESHES_OF_AGENT, id=A1, limit=2, start_after=M1, prefix="a"),
    ),
    (
        "neighbours",
        "Query",
        lambda c: c.graph_query("neighbours", A1, limit=1),
        pb.GraphQueryRequest(kind=Q.NEIGHBOURS, id=A1, limit=1),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "call", "expected"),
    [c[1:] for c in REQUEST_CASES],
    ids=[c[0] for c in REQUEST_CASES],
)
def test_each_call_builds_its_request(
    one: FakeCluster, method: str, call: Callable[[Client], Any], expected: Any
) -> None:
    one.docs[("mesh", M1)] = mesh_doc()
    one.docs[("agent", A1)] = {"note": "x"}
    with client_for(one.endpoints) as c:
        call(c)
    assert one.nodes[0].requests[method] == [expected]


LOCAL_MISTAKES: list[tuple[str, Callable[[Client], Any], str]] = [
    ("doc-not-object", lambda c: c.doc_create("mesh", M1, [1]), "must be a JSON object"),  # type: ignore[arg-type]
    ("doc-not-json", lambda c: c.doc_put("mesh", M1, {"a": {1, 2}}), "not JSON-serialisable"),
    ("doc-nan", lambda c: c.doc_put("mesh", M1, {"a": float("inf")}), "not JSON-serialisable"),
    ("no-members", lambda c: c.mesh_members(M1), "give agent ids to add and/or remove"),
    ("members-str", lambda c: c.mesh_members(M1, add=A1), "not a single str"),
    ("members-int", lambda c: c.mesh_members(M1, remove=[1]), "must be str"),  # type: ignore[list-item]
    ("kind", lambda c: c.graph_query("friends", A1), "not one of meshes_of_agent"),  # type: ignore[arg-type]
    ("limit", lambda c: c.graph_query("neighbours", A1, limit=-1), "limit must be an int >= 0"),
    ("page-size", lambda c: list(c.graph_scan("neighbours", A1, page_size=0)), "page_size"),
    ("consistency", lambda c: c.doc_get("mesh", M1, consistency="most"), "not one of one"),  # type: ignore[arg-type]
    ("token-value", lambda c: c.doc_get("agent", A1, causal_token={"n1": -1}), r"\[0, 2\*\*63\)"),
    ("token-bool", lambda c: c.doc_get("agent", A1, causal_token={"n1": True}), "must be an int"),
    ("token-type", lambda c: c.doc_put("agent", A1, {}, causal_token=[1]), "must be a mapping"),  # type: ignore[arg-type]
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in LOCAL_MISTAKES], ids=[c[0] for c in LOCAL_MISTAKES]
)
def test_local_mistakes_are_invalid_argument_before_any_call(
    one: FakeCluster, call: Callable[[Client], Any], message: str
) -> None:
    with client_for(one.endpoints) as c, pytest.raises(InvalidArgument, match=message):
        call(c)
    assert one.nodes[0].calls == {}


# -- sync client ---------------------------------------------------------------------


def test_documents_round_trip_as_json(three: FakeCluster) -> None:
    three.replicas, three.hinted = ["n3", "n2"], ["n1"]
    doc = mesh_doc()
    with client_for(three.endpoints[1:]) as c:
        created = c.doc_create("mesh", M1, doc)
        assert created == DocResult(doc, ("n3", "n2"), ("n1",), "n2", {})
        got = c.doc_get("mesh", M1)
        assert got == DocResult(doc, (), (), "n2", {})
        metrics = {"collective_metrics": {"latency_ms": 9, "nested": [None, True, "ß"]}}
        changed = c.doc_put("mesh", M1, {"performance_data": metrics})
        assert (
            changed.doc["performance_data"]["collective_metrics"] == metrics["collective_metrics"]
        )
        assert changed.doc["topology"] == doc["topology"]
    assert json.loads(three.requests("Put")[0].doc_json) == doc


def test_missing_document_reads_as_none(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        assert c.doc_get("mesh", M1) is None  # found=false
        one.nodes[0].inject("Get", server.NotFound(f"mesh {M1} does not exist"))
        assert c.doc_get("mesh", M1) is None  # NOT_FOUND
        with pytest.raises(NotFound, match="does not exist"):
            c.doc_put("mesh", M1, {"capability_fusion": {"fused_capabilities": []}})
    assert one.calls("Get") == 2 and one.calls("Put") == 1


def test_create_over_a_live_mesh_is_already_exists_and_not_resent(three: FakeCluster) -> None:
    with client_for(three.endpoints) as c:
        c.doc_create("mesh", M1, mesh_doc())
        with pytest.raises(AlreadyExists, match=f"mesh {M1} exists") as info:
            c.doc_create("mesh", M1, mesh_doc())
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert three.calls("Put") == 2


def test_delete_then_create_again(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        c.doc_create("mesh", M1, mesh_doc())
        deleted = c.doc_delete("mesh", M1)
        assert (deleted.doc, deleted.replicas, deleted.coordinator) == ({}, ("n1", "n2"), "n1")
        assert c.doc_get("mesh", M1) is None
        with pytest.raises(NotFound):
            c.doc_delete("mesh", M1)
        assert c.doc_create("mesh", M1, mesh_doc(members=[A3])).doc["topology"][
            "member_agents"
        ] == [A3]


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("Put", lambda c: c.doc_create("mesh", M2, mesh_doc(M2))),
        ("Put", lambda c: c.doc_put("mesh", M1, {"performance_data": {}})),
        ("Members", lambda c: c.mesh_members(M1, add=[A3])),
        ("Delete", lambda c: c.doc_delete("mesh", M1)),
    ],
    ids=["create", "put", "members", "delete"],
)
def test_writes_below_quorum_are_replication_incomplete_and_sent_once(
    three: FakeCluster, method: str, call: Callable[[Client], Any]
) -> None:
    three.docs[("mesh", M1)] = mesh_doc()
    for node in three.nodes:
        node.inject(method, server.ReplicationIncomplete(BELOW_QUORUM))
    with client_for(three.endpoints) as c, pytest.raises(ReplicationIncomplete) as info:
        call(c)
    assert "do not resend" in str(info.value) and BELOW_QUORUM in str(info.value)
    assert three.calls(method) == 1


def test_write_is_resent_when_the_server_says_nothing_was_applied(one: FakeCluster) -> None:
    node = one.nodes[0]
    node.inject("Put", server.Unavailable(NOTHING_APPLIED), times=2)
    node.inject("Members", server.Unavailable(NOTHING_APPLIED))
    with client_for(one.endpoints) as c:
        assert c.doc_create("mesh", M1, mesh_doc()).doc == mesh_doc()
        joined = c.mesh_members(M1, add=[A3])
    assert joined.doc["topology"]["member_agents"] == [A1, A2, A3]
    assert (node.calls["Put"], node.calls["Members"]) == (3, 2)


def test_write_fails_over_from_an_endpoint_that_refused_the_connection(one: FakeCluster) -> None:
    with client_for([dead_endpoint(), *one.endpoints]) as c:
        c.doc_create("mesh", M1, mesh_doc())
    assert one.calls("Put") == 1


@pytest.mark.parametrize("details", ["Socket closed", "node shutting down"])
def test_write_unavailable_after_sending_is_outcome_unknown_not_resent(
    three: FakeCluster, details: str
) -> None:
    three.nodes[0].inject("Members", Transport(S.UNAVAILABLE, details))
    three.docs[("mesh", M1)] = mesh_doc()
    with client_for(three.endpoints) as c, pytest.raises(OutcomeUnknown) as info:
        c.mesh_members(M1, remove=[A1])
    assert type(info.value) is OutcomeUnknown and "not resent" in str(info.value)
    assert three.calls("Members") == 1


def test_write_deadline_is_a_write_timeout_not_resent(one: FakeCluster) -> None:
    one.nodes[0].inject("Put", TimeoutError("replicas slow"))
    with client_for(one.endpoints) as c, pytest.raises(WriteTimeout):
        c.doc_create("mesh", M1, mesh_doc())
    assert one.calls("Put") == 1


def test_server_invalid_argument_is_raised_at_once(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c, pytest.raises(InvalidArgument, match="does not match"):
        c.doc_create("mesh", M2, mesh_doc(M1))
    assert one.calls("Put") == 1


def test_reads_and_queries_are_retried(three: FakeCluster) -> None:
    three.docs[("mesh", M1)] = mesh_doc()
    n1, n2, _ = three.nodes
    n1.inject("Get", server.Unavailable(f"mesh/{M1}: 0 of 1 owners answered"))
    n2.inject("Query", TimeoutError("query timed out"))  # n2: preferred after the get
    with client_for(three.endpoints) as c:
        assert c.doc_get("mesh", M1, consistency="quorum") is not None
        assert c.graph_query("members_of_mesh", M1) == ((A1, A2), False)
    assert three.calls("Get") == 2 and three.calls("Query") == 2
    assert [r.consistency for r in three.requests("Get")] == [pb.QUORUM, pb.QUORUM]


def test_causal_token_is_carried_through(one: FakeCluster) -> None:
    with client_for(one.endpoints) as c:
        first = c.doc_create("agent", A1, {"agent_id": A1})
        assert first.causal_token == {"n1": 1}
        second = c.doc_put("agent", A1, {"mode": "fast"}, causal_token=first.causal_token)
        assert second.causal_token == {"n1": 2}
        read = c.doc_get("agent", A1, causal_token=second.causal_token)
        assert read is not None and read.causal_token == {"n1": 2}
        assert read.doc == {"agent_id": A1, "mode": "fast"}
    assert [dict(r.causal_token) for r in one.requests("Put")] == [{}, {"n1": 1}]
    assert dict(one.requests("Get")[0].causal_token) == {"n1": 2}


def test_graph_queries(one: FakeCluster) -> None:
    one.docs[("mesh", M1)] = mesh_doc(M1, [A1, A2, A3])
    one.docs[("mesh", M2)] = mesh_doc(M2, [A3, A4])
    with client_for(one.endpoints) as c:
        assert c.graph_query("meshes_of_agent", A3) == GraphQueryResult((M1, M2), False)
        assert c.graph_query("meshes_of_agent", A1) == ((M1,), False)
        assert c.graph_query("neighbours", A3) == ((A1, A2, A4), False)
        ids, more = c.graph_query("neighbours", A3, limit=2)
        assert (ids, more) == ((A1, A2), True)
        assert c.graph_query("neighbours", A3, limit=2, start_after=ids[-1]) == ((A4,), False)
        assert c.graph_query("members_of_mesh", uid(0xFF)) == ((), False)


def test_graph_scan_pages_until_the_end(one: FakeCluster) -> None:
    agents = [uid(i) for i in range(1, 8)]
    one.docs[("mesh", M1)] = mesh_doc(M1, agents)
    with client_for(one.endpoints) as c:
        assert list(c.graph_scan("members_of_mesh", M1, page_size=3)) == agents
        assert list(c.graph_scan("members_of_mesh", M1, start_after=agents[4])) == agents[5:]
    requests = one.requests("Query")
    assert [(r.limit, r.start_after) for r in requests[:3]] == [
        (3, ""),
        (3, agents[2]),
        (3, agents[5]),
    ]
    assert (requests[3].limit, requests[3].start_after) == (500, agents[4])


# -- asyncio client ------------------------------------------------------------------

DOC_METHODS = ("doc_create", "doc_put", "doc_get", "doc_delete", "mesh_members", "graph_query",
               "graph_scan")  # fmt: skip


def test_async_client_has_the_same_document_surface() -> None:
    for name in DOC_METHODS:
        sync, aio = getattr(Client, name), getattr(AsyncClient, name)
        if name == "graph_scan":
            assert inspect.isasyncgenfunction(aio), name
        else:
            assert inspect.iscoroutinefunction(aio), name
        assert inspect.signature(sync).parameters == inspect.signature(aio).parameters, name


async def test_async_document_calls(three: FakeCluster) -> None:
    three.nodes[0].inject("Put", server.Unavailable(NOTHING_APPLIED))
    async with AsyncClient([dead_endpoint(), *three.endpoints], retry=FAST) as c:
        assert (await c.doc_create("mesh", M1, mesh_doc())).doc == mesh_doc()
        assert (await c.doc_put("mesh", M1, {"performance_data": {}})).coordinator != ""
        joined = await c.mesh_members(M1, add=[A3], remove=[A1])
        assert joined.doc["topology"]["member_agents"] == [A2, A3]
        got = await c.doc_get("mesh", M1, consistency="all")
        assert got is not None and got.doc == joined.doc
        assert await c.graph_query("meshes_of_agent", A3) == ((M1,), False)
        assert [a async for a in c.graph_scan("members_of_mesh", M1, page_size=1)] == [A2, A3]
        token = (await c.doc_create("agent", A1, {"agent_id": A1})).causal_token
        await c.doc_get("agent", A1, causal_token=token)
        assert (await c.doc_delete("mesh", M1)).doc == {}
        assert await c.doc_get("mesh", M1) is None
        with pytest.raises(AlreadyExists):
            await c.doc_create("agent", A1, {"agent_id": A1})
        puts_before = three.calls("Put")
        for node in three.nodes:
            node.inject("Put", server.ReplicationIncomplete(BELOW_QUORUM))
        with pytest.raises(ReplicationIncomplete):
            await c.doc_create("mesh", M2, mesh_doc(M2))
        assert three.calls("Put") == puts_before + 1
    assert dict(three.requests("Get")[-2].causal_token) == token


# -- CLI -------------------------------------------------------------------------------


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the CLI with fast retries; returns the click Result."""
    monkeypatch.setattr(cli_module, "Client", lambda *a, **kw: Client(*a, retry=FAST, **kw))
    runner = CliRunner()

    def invoke(endpoints: list[str], *args: str, input: str | None = None) -> Any:
        return runner.invoke(
            cli_module.cli, ["--endpoints", ",".join(endpoints), *args], input=input
        )

    return invoke


def pretty(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_cli_create_from_a_file_and_from_stdin(one: FakeCluster, run: Any, tmp_path: Path) -> None:
    one.hinted = ["n3"]
    path = tmp_path / "mesh.json"
    path.write_text(json.dumps(mesh_doc()), encoding="utf-8")
    result = run(one.endpoints, "mesh", "create", str(path))
    assert (result.exit_code, result.stdout) == (0, pretty(mesh_doc()))
    assert result.stderr == "(replicas: n1,n2; hinted: n3)\n"
    piped = run(one.endpoints, "mesh", "create", "-", input=json.dumps(mesh_doc(M2)))
    assert (piped.exit_code, piped.stdout) == (0, pretty(mesh_doc(M2)))
    assert [r.id for r in one.requests("Put")] == [M1, M2]


def test_cli_get_prints_the_document_alone(one: FakeCluster, run: Any) -> None:
    one.docs[("mesh", M1)] = mesh_doc()
    got = run(one.endpoints, "mesh", "get", M1, "--consistency", "ALL")
    assert (got.exit_code, got.stdout, got.stderr) == (0, pretty(mesh_doc()), "")
    assert json.loads(got.stdout) == mesh_doc()
    assert one.requests("Get")[0].consistency == pb.ALL
    missing = run(one.endpoints, "mesh", "get", M2)
    assert (missing.exit_code, missing.stdout) == (1, "")
    assert missing.stderr == f"error: mesh not found: {M2}\n"


def test_cli_set_join_leave_delete(one: FakeCluster, run: Any) -> None:
    one.docs[("mesh", M1)] = mesh_doc()
    fields = '{"capability_fusion": {"fused_capabilities": [0.25, 1]}}'
    result = run(one.endpoints, "mesh", "set", M1, fields)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["capability_fusion"]["fused_capabilities"] == [0.25, 1]
    assert result.stderr == "(replicas: n1,n2)\n"
    joined = run(one.endpoints, "mesh", "join", M1, A3, A4)
    assert json.loads(joined.stdout)["topology"]["member_agents"] == [A1, A2, A3, A4]
    left = run(one.endpoints, "mesh", "leave", M1, A1)
    assert json.loads(left.stdout)["topology"]["member_agents"] == [A2, A3, A4]
    assert one.requests("Members") == [
        pb.MeshMembersRequest(mesh_id=M1, add=[A3, A4]),
        pb.MeshMembersRequest(mesh_id=M1, remove=[A1]),
    ]
    deleted = run(one.endpoints, "mesh", "delete", M1)
    assert (deleted.exit_code, deleted.stdout) == (0, f"OK deleted {M1}\n")
    again = run(one.endpoints, "mesh", "delete", M1)
    assert (again.exit_code, again.stderr) == (1, f"error: not found: mesh {M1} does not exist\n")


def test_cli_listings(one: FakeCluster, run: Any) -> None:
    one.docs[("mesh", M1)] = mesh_doc(M1, [A1, A2, A3])
    one.docs[("mesh", M2)] = mesh_doc(M2, [A3, A5])
    members = run(one.endpoints, "mesh", "members", M1)
    assert (members.exit_code, members.stdout, members.stderr) == (0, f"{A1}\n{A2}\n{A3}\n", "")
    cut = run(one.endpoints, "mesh", "members", M1, "--limit", "2")
    assert (cut.stdout, cut.stderr) == (f"{A1}\n{A2}\n", f"(more: --start-after {A2})\n")
    rest = run(one.endpoints, "mesh", "members", M1, "--limit", "2", "--start-after", A2)
    assert (rest.stdout, rest.stderr) == (f"{A3}\n", "")
    assert run(one.endpoints, "mesh", "of", A3).stdout == f"{M1}\n{M2}\n"
    assert run(one.endpoints, "mesh", "neighbours", A3).stdout == f"{A1}\n{A2}\n{A5}\n"
    assert run(one.endpoints, "mesh", "neighbours", A4).stdout == ""
    kinds = [r.kind for r in one.requests("Query")]
    assert kinds == [Q.MEMBERS_OF_MESH] * 3 + [Q.MESHES_OF_AGENT, Q.NEIGHBOURS, Q.NEIGHBOURS]


def test_cli_create_over_a_live_mesh_exits_1_with_one_line(one: FakeCluster, run: Any) -> None:
    one.docs[("mesh", M1)] = mesh_doc()
    result = run(one.endpoints, "mesh", "create", "-", input=json.dumps(mesh_doc()))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: already exists: mesh {M1} exists; use put\n"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["create", "-"], "{nope", "error: the document is not valid JSON:"),
        (["create", "-"], '{"topology": {}}', "error: topology.mesh_id: missing"),
        (["set", M1, "[1"], "", "error: JSON is not valid JSON:"),
    ],
    ids=["bad-json", "no-mesh-id", "bad-fields"],
)
def test_cli_local_mistakes_exit_2_without_a_call(
    one: FakeCluster, run: Any, args: list[str], stdin: str, message: str
) -> None:
    result = run(one.endpoints, "mesh", *args, input=stdin)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert one.nodes[0].calls == {}


def test_cli_server_invalid_argument_exits_2(one: FakeCluster, run: Any) -> None:
    one.nodes[0].inject("Put", server.InvalidArgument("topology.member_agents[0]: must be a uuid4"))
    bad = run(one.endpoints, "mesh", "create", "-", input=json.dumps(mesh_doc()))
    assert (bad.exit_code, bad.stdout) == (2, "")
    assert bad.stderr == "error: invalid argument: topology.member_agents[0]: must be a uuid4\n"
    assert one.calls("Put") == 1


def test_cli_usage_errors_exit_2(one: FakeCluster, run: Any) -> None:
    assert run(one.endpoints, "mesh", "join", M1).exit_code == 2  # no AGENT
    assert run(one.endpoints, "mesh", "members", M1, "--limit", "-1").exit_code == 2
    assert run(one.endpoints, "mesh", "create", "/nonexistent/mesh.json").exit_code == 2
    assert one.nodes[0].calls == {}


def test_cli_aborted_write_exits_1_with_one_line_and_one_call(three: FakeCluster, run: Any) -> None:
    three.docs[("mesh", M1)] = mesh_doc()
    for node in three.nodes:
        node.inject("Members", server.ReplicationIncomplete(BELOW_QUORUM))
    result = run(three.endpoints, "mesh", "join", M1, A3)
    assert (result.exit_code, result.stdout) == (1, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: replication incomplete")
    assert three.calls("Members") == 1
