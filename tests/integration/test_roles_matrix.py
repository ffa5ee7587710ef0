"""One table of cases asked on both ports of a real mTLS cluster with roles enabled:
each case is allowed or denied alike on gRPC and on HTTP (the state API, the ledger,
Server-Sent Events, GraphQL and the WebSocket), a denial names the missing permission
and is audited, and a denied write changes nothing."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from node.certs import issue
from node.client import Client
from node.client.errors import PermissionDenied
from node.dev.cluster import LocalCluster
from node.tls import TlsFiles
from tests.agent_docs import agent_doc
from tests.integration.conftest import start_http_cluster
from tests.integration.test_roles import creds, tls_cli
from tests.support.https import https

pytestmark = pytest.mark.integration

# Agent and mesh ids are uuid4s: a grant names the ones whose id starts "aaaaaaaa-".
AGENT_OK = "aaaaaaaa-0000-4000-8000-00000000000{}"
AGENT_NO = "bbbbbbbb-0000-4000-8000-00000000000{}"
MESH_OK = "cccccccc-0000-4000-8000-000000000001"
MESH_NO = "dddddddd-0000-4000-8000-000000000001"
ROLES = (
    ("app-read", "read:system:/app/"),
    ("app-write", "write:system:/app/w/"),
    ("agents", "write:agent:aaaaaaaa-"),
    ("meshes", "read:mesh:cccccccc-"),
    ("jobs", "write:population:job_resource_ledger/"),
)
PATCH = "application/merge-patch+json"
JOB = "job_resource_ledger/"
ADD = {"op": "counter_add", "amount": 1}


@dataclass(frozen=True)
class Case:
    what: str
    grpc: Callable[[Client], Any] | None  # None: HTTP only (streams, GraphQL)
    http: tuple[str, str, Any]  # method, path, JSON body (None: none)
    lacks: str | None  # None: allowed; else the words of the denial


def mesh(mesh_id: str, members: list[str]) -> dict[str, Any]:
    return {"topology": {"mesh_id": mesh_id, "member_agents": members}}


def _q(query: str) -> tuple[str, str, Any]:
    return ("POST", "/api/v1/query", {"query": query})


CASES = (
    Case("read a granted key", lambda c: c.get("/app/x"),
         ("GET", "/state/system?prefix=/app/x", None), None),
    Case("range over everything", lambda c: c.range("/"),
         ("GET", "/state/system?prefix=/", None), "lacks read on system keys under '/'"),
    Case("write under the write grant", lambda c: c.put("/app/w/g", "v"),
         ("PATCH", "/state/system", {"/app/w/h": "v"}), None),
    Case("write a key only readable", lambda c: c.put("/app/x", "v2"),
         ("PATCH", "/state/system", {"/app/x": "v2"}), "lacks write on system '/app/x'"),
    Case("write one key of two", None, ("PATCH", "/state/system", {"/app/w/i": 1, "/app/x": 2}),
         "lacks write on system '/app/x'"),
    Case("create a granted agent",
         lambda c: c.doc_create("agent", AGENT_OK.format(1), agent_doc(AGENT_OK.format(1))),
         ("PUT", f"/state/agent/{AGENT_OK.format(2)}", agent_doc(AGENT_OK.format(2))), None),
    Case("read a granted agent (write includes read)",
         lambda c: c.doc_get("agent", AGENT_OK.format(3)),
         ("GET", f"/state/agent/{AGENT_OK.format(3)}", None), None),
    Case("create another agent",
         lambda c: c.doc_create("agent", AGENT_NO.format(1), agent_doc(AGENT_NO.format(1))),
         ("PUT", f"/state/agent/{AGENT_NO.format(2)}", agent_doc(AGENT_NO.format(2))),
         f"lacks write on agent '{AGENT_NO[:9]}"),
    Case("read another agent", lambda c: c.doc_get("agent", AGENT_NO.format(3)),
         ("GET", f"/state/agent/{AGENT_NO.format(3)}", None),
         f"lacks read on agent '{AGENT_NO.format(3)}'"),
    Case("read a granted mesh", lambda c: c.doc_get("mesh", MESH_OK),
         ("GET", f"/state/mesh/{MESH_OK}", None), None),
    Case("read another mesh", lambda c: c.doc_get("mesh", MESH_NO),
         ("GET", f"/state/mesh/{MESH_NO}", None), f"lacks read on mesh '{MESH_NO}'"),
    Case("change a mesh only readable",
         lambda c: c.doc_put("mesh", MESH_OK, mesh(MESH_OK, [])),
         ("PUT", f"/state/mesh/{MESH_OK}", {"topology": {"member_agents": []}}),
         f"lacks write on mesh '{MESH_OK}'"),
    Case("count under the population grant", lambda c: c.counter_add("population", JOB + "1", 1),
         ("POST", f"/api/v1/tiers/population/{JOB}2", ADD), None),
    Case("count elsewhere", lambda c: c.counter_add("population", "worker_journal/1", 1),
         ("POST", "/api/v1/tiers/population/worker_journal/2", ADD),
         "lacks write on population 'worker_journal/"),
    Case("scan the granted prefix", lambda c: c.tier_scan("population", "job_resource_ledger/"),
         ("GET", "/api/v1/tiers/population?prefix=job_resource_ledger/", None), None),
    Case("the ledger", lambda c: c.ledger("Pools", {}), ("GET", "/api/v1/ledger/pools", None),
         "lacks read on system keys under '/tadpole/ledger/'"),
    # A parameter its handler ignores must not decide what is checked (review finding:
    # ?key= beside the ?prefix= a route serves read the prefix with the key's grant).
    Case("a key beside the prefix the route serves", None,
         ("GET", "/state/system?key=/app/x&prefix=/tadpole/auth/", None),
         "lacks read on system keys under '/tadpole/auth/'"),
    Case("a key the route ignores", None, ("GET", "/state/system?key=/app/x", None),
         "lacks read on system every key"),
    Case("a key beside a CRDT scan's prefix", None,
         ("GET", f"/api/v1/tiers/population?key={JOB}1&prefix=worker_journal/", None),
         "lacks read on population keys under 'worker_journal/'"),
    Case("a key beside a change feed's prefix", None,
         ("GET", f"/api/v1/changes/population?key={JOB}1&prefix=worker_journal/", None),
         "lacks read on population keys under 'worker_journal/'"),
    Case("the change history of a granted prefix", None,
         ("GET", "/api/v1/events?prefix=/app/", None), None),
    Case("the change history of everything", None, ("GET", "/api/v1/events?prefix=/", None),
         "lacks read on system keys under '/'"),
    Case("the CRDT change feed elsewhere", None,
         ("GET", "/api/v1/changes/population?prefix=worker_journal/", None),
         "lacks read on population keys under 'worker_journal/'"),
    Case("GraphQL: a granted agent", None,
         _q(f'{{ agent(id: "{AGENT_OK.format(3)}") {{ id }} }}'), None),
    Case("GraphQL: another agent", None, _q(f'{{ agent(id: "{AGENT_NO.format(3)}") {{ id }} }}'),
         f"lacks read on agent '{AGENT_NO.format(3)}'"),
    Case("GraphQL: every system key", None, _q("{ systemKeys { items { key } } }"),
         "lacks read on system every key"),
    Case("GraphQL: a granted mesh's members (agents it may not read)", None,
         _q(f'{{ mesh(id: "{MESH_OK}") {{ members {{ items {{ id }} }} }} }}'),
         f"lacks read on agent '{AGENT_NO.format(4)}'"),
)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = start_http_cluster(str(tmp_path_factory.mktemp("roles")), tls=True)
    try:
        for name in ("carol", "dave"):
            issue(cluster.tls_dir, cluster.tls_dir, name, client=name)
        with Client(cluster.endpoints.split(","), credentials=creds(cluster, "cli")) as setup:
            setup.put("/app/x", "v1")
            setup.doc_create("agent", AGENT_OK.format(3), agent_doc(AGENT_OK.format(3)))
            setup.doc_create("agent", AGENT_NO.format(3), agent_doc(AGENT_NO.format(3)))
            members = [AGENT_OK.format(3), AGENT_NO.format(4)]
            setup.doc_create("mesh", MESH_OK, mesh(MESH_OK, members))
            setup.doc_create("mesh", MESH_NO, mesh(MESH_NO, []))
        for role, grant in ROLES:
            done = tls_cli(cluster, "auth", "role", "add", role, grant)
            assert done.returncode == 0, done.stdout + done.stderr  # type: ignore[attr-defined]
        grants = [role for role, _ in ROLES]
        for args in (
            ("auth", "user", "add", "carol", *grants),
            ("auth", "user", "add", "dave"),
            ("auth", "enable"),
        ):
            done = tls_cli(cluster, *args)
            assert done.returncode == 0, done.stdout + done.stderr  # type: ignore[attr-defined]
        time.sleep(1.5)  # every node reads the policy within a second
        yield cluster
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def tls(cluster: LocalCluster, name: str) -> TlsFiles:
    d = cluster.tls_dir
    return TlsFiles(f"{d}/ca.pem", f"{d}/{name}.pem", f"{d}/{name}.key")


def http_call(
    cluster: LocalCluster,
    name: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    node: str = "n2",
) -> tuple[int, Any]:
    kind = PATCH if path == "/state/system" else "application/json"
    address = cluster.metrics_address(node) or ""
    context = tls(cluster, name).client_context()
    status, answer, _ = https(address, method, path, context, body, headers, kind)
    return status, answer


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_a_case_is_allowed_or_denied_alike_on_both_ports(cluster: LocalCluster, case: Case) -> None:
    if case.grpc is not None:
        with Client(cluster.endpoints.split(","), credentials=creds(cluster, "carol")) as carol:
            if case.lacks is None:
                case.grpc(carol)
            else:
                with pytest.raises(
                    PermissionDenied, match=f"^permission denied: carol {re.escape(case.lacks)}"
                ):
                    case.grpc(carol)
    method, path, body = case.http
    status, answer = http_call(cluster, "carol", method, path, body)
    if case.lacks is None:
        assert status == 200, answer
        assert "errors" not in answer, answer
    else:
        assert status == 403, answer
        assert answer["outcome"] == "not-applied"
        assert f"carol {case.lacks}" in answer["detail"], answer


def test_denied_writes_changed_nothing_and_are_audited(cluster: LocalCluster) -> None:
    # Every denied write of the table, once more on each port, then the state is read
    # by root: none of them left a trace.
    for case in CASES:
        if case.lacks is None or "write" not in case.lacks:
            continue
        if case.grpc is not None:
            carol = Client(cluster.endpoints.split(","), credentials=creds(cluster, "carol"))
            with carol, pytest.raises(PermissionDenied):
                case.grpc(carol)
        status, _ = http_call(cluster, "carol", *case.http)
        assert status == 403
    token = pathlib.Path(cluster.token_file).read_text().strip()
    with Client(
        cluster.endpoints.split(","), credentials=creds(cluster, "cli"), token=token
    ) as root:
        kv = root.get("/app/x")
        assert kv is not None and kv.value == b"v1"
        assert root.get("/app/w/i") is None  # the patch that also named /app/x: all or nothing
        for n in (1, 2):
            assert root.doc_get("agent", AGENT_NO.format(n), consistency="all") is None
        for key in ("worker_journal/1", "worker_journal/2"):
            assert not root.tier_read("population", key, consistency="all").found
        mesh = root.doc_get("mesh", MESH_OK, consistency="all")
        assert mesh is not None
        assert mesh.doc["topology"]["member_agents"] == [AGENT_OK.format(3), AGENT_NO.format(4)]
    # Refusals are queued for the audit writer (not waited on): give it a moment.
    deadline = time.monotonic() + 10
    while True:
        audit = "".join(
            pathlib.Path(cluster.data_dir(n), "audit.log").read_text() for n in cluster.node_ids
        )
        records = [json.loads(line) for line in audit.splitlines()]
        http_denials = [
            r for r in records if r["action"] == "PATCH /state/system" and r["result"] == "denied"
        ]
        if http_denials or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert http_denials, records
    assert all(r["who"] == "client/carol" for r in http_denials)
    assert any(r["detail"] == "carol lacks write on system '/app/x'" for r in http_denials)
    assert all(r["from"].startswith("ipv4:127.0.0.1:") for r in http_denials)  # as gRPC's


def test_root_and_nodes_are_never_checked_and_a_user_without_roles_gets_nothing(
    cluster: LocalCluster,
) -> None:
    token = pathlib.Path(cluster.token_file).read_text().strip()
    status, answer = http_call(
        cluster,
        "dave",
        "GET",
        "/state/system?prefix=/",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200 and answer["/app/x"] == {"$base64": "djE="}, answer  # b"v1"
    status, answer = http_call(cluster, "n1", "GET", "/state/system?prefix=/")
    assert status == 200, answer  # a node's certificate is the cluster
    status, answer = http_call(cluster, "dave", "GET", "/state/system?prefix=/app/x")
    assert status == 403 and "dave lacks read on system" in answer["detail"], answer
    status, answer = http_call(
        cluster, "dave", "GET", "/state/system?prefix=/", headers={"Authorization": "Bearer nope"}
    )
    assert status == 403, answer
    # What carries no tier's data stays open to any caller the TLS layer let in.
    for path in ("/healthz", "/api/v1/status", "/api/v1/members", "/api/v1/openapi.json"):
        status, _ = http_call(cluster, "dave", "GET", path)
        assert status == 200, path


async def test_websocket_subscriptions_are_checked_one_by_one(cluster: LocalCluster) -> None:
    connector = aiohttp.TCPConnector(ssl=tls(cluster, "carol").client_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(f"wss://{cluster.metrics_address('n3')}/api/v1/ws") as ws,
    ):
        await ws.send_json({"type": "subscribe", "id": "all", "prefix": "/"})
        denied = await ws.receive_json(timeout=10)
        assert denied["type"] == "error" and denied["id"] == "all" and denied["status"] == 403
        assert "carol lacks read on system keys under '/'" in denied["detail"]
        await ws.send_json({"type": "subscribe", "id": "app", "prefix": "/app/"})
        ok = await ws.receive_json(timeout=10)
        assert ok["type"] == "subscribed" and ok["id"] == "app", ok
        with Client(cluster.endpoints.split(","), credentials=creds(cluster, "carol")) as carol:
            carol.put("/app/w/ws", "seen")
        change = await ws.receive_json(timeout=10)
        assert change["type"] == "change" and change["id"] == "app", change
        assert change["events"][0]["key"] == "/app/w/ws"
    # Let the TLS connection's close finish before the test's event loop goes (aiohttp's
    # advice for SSL): else the collector finds its transport unclosed, later.
    await asyncio.sleep(0.25)


async def test_a_role_taken_away_ends_the_streams_it_opened(cluster: LocalCluster) -> None:
    # frank may read /app/f/ (role watcher) and /app/k/ (role keeper). He watches /app/f/
    # on gRPC, SSE and a WebSocket, and /app/k/ on the same WebSocket. watcher is taken
    # away: the next /app/f/ change ends each /app/f/ stream with the denial (none
    # carries it) while /app/k/ goes on -- though it looked at the new policy first
    # (review finding: subscriptions of one socket shared what they had checked).
    issue(cluster.tls_dir, cluster.tls_dir, "frank", client="frank")
    for args in (
        ("auth", "role", "add", "watcher", "read:system:/app/f/"),
        ("auth", "role", "add", "keeper", "read:system:/app/k/"),
        ("auth", "user", "grant-role", "frank", "watcher", "keeper"),
    ):
        assert tls_cli(cluster, *args).returncode == 0  # type: ignore[attr-defined]
    await asyncio.sleep(1.5)
    token = pathlib.Path(cluster.token_file).read_text().strip()
    root = Client(cluster.endpoints.split(","), credentials=creds(cluster, "cli"), token=token)
    frank = Client(cluster.endpoints.split(","), credentials=creds(cluster, "frank"))
    connector = aiohttp.TCPConnector(ssl=tls(cluster, "frank").client_context())
    base = f"https://{cluster.metrics_address('n3')}"
    with root, frank:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{base}/api/v1/watch?prefix=/app/f/") as sse,
            session.ws_connect(f"{base.replace('https', 'wss')}/api/v1/ws") as ws,
        ):
            assert "event: ready" in await _sse_event(sse)
            for sub, prefix in (("f", "/app/f/"), ("k", "/app/k/")):
                await ws.send_json({"type": "subscribe", "id": sub, "prefix": prefix})
                assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
            put = await asyncio.to_thread(root.put, "/app/f/1", "seen")
            # the client opens its watch at the first next(): from this put on
            watch = iter(frank.watch("/app/f/", prefix=True, start_revision=put.revision))
            first = await asyncio.to_thread(next, watch)
            assert first.kv.key == "/app/f/1"
            assert "/app/f/1" in await _sse_event(sse)
            assert (await ws.receive_json(timeout=10))["events"][0]["key"] == "/app/f/1"

            taken = await asyncio.to_thread(tls_cli, cluster, "auth", "user", "revoke-role",
                                            "frank", "watcher")  # fmt: skip
            assert taken.returncode == 0  # type: ignore[attr-defined]
            await asyncio.sleep(1.5)  # every node reads the policy within a second
            await asyncio.to_thread(root.put, "/app/k/1", "still frank's")
            kept = await ws.receive_json(timeout=10)
            assert kept["id"] == "k" and kept["events"][0]["key"] == "/app/k/1", kept
            await asyncio.to_thread(root.put, "/app/f/2", "not for frank")
            with pytest.raises(PermissionDenied, match="roles changed while the stream"):
                await asyncio.to_thread(next, watch)
            ended = await _sse_event(sse)
            assert "event: error" in ended and "frank lacks read" in ended, ended
            assert "/app/f/2" not in ended
            error = await ws.receive_json(timeout=10)
            assert error["type"] == "error" and error["id"] == "f" and error["status"] == 403
            assert "frank lacks read" in error["detail"]
            await asyncio.to_thread(root.put, "/app/k/2", "frank's again")
            kept = await ws.receive_json(timeout=10)
            assert kept["id"] == "k" and kept["events"][0]["key"] == "/app/k/2", kept
    await asyncio.sleep(0.25)  # let the TLS connections close before the loop goes


async def _sse_event(response: Any) -> str:
    """The next event of a Server-Sent Events stream (comments skipped)."""
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode()
        assert line, "the stream ended"
        if line == "\n":
            if lines:
                return "".join(lines)
            continue
        if not line.startswith(":"):
            lines.append(line)
