"""GraphQL at ``/graphql``: agents, meshes and their graph, system and tier keys,
members and tier health; system-tier changes as a subscription (graphql-transport-ws).

Library: strawberry, for its native aiohttp view (queries over GET/POST and both
WebSocket subscription protocols on the node's own loop) and its validation
extensions. Ariadne has no aiohttp integration; plain graphql-core would mean
writing that view ourselves.

Query planning. Nested fields do not read the cluster one item at a time: every
mesh, agent and agent->meshes index read goes through a per-request loader that
collects the keys wanted in one event-loop tick and reads each distinct key once,
concurrently (:class:`Loaders`). A query's reads are therefore the distinct keys it
touches, in as many waves as it has levels (``tests/unit/node/http/test_graphql.py``
counts them). Loaders do not cache across waves or operations, so a long-lived
WebSocket connection never sees a stale document. ``Agent.meshes`` reads the
agent->meshes index and confirms it against the meshes (the index is advisory),
which is cheaper than scanning the mesh tier.

Abuse limits: depth 8, 20 aliases, 2,000 tokens per document, pages of at most
1,000 items, 32 subscriptions per WebSocket; a query over a limit is refused with
an error naming it before anything is read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import strawberry
from aiohttp import web
from strawberry.aiohttp.views import GraphQLView
from strawberry.dataloader import DataLoader
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.scalars import JSON
from strawberry.types import Info

from consensus.backend import SystemBackend
from node.api.documents import Documents
from node.errors import InvalidArgument, PermissionDenied
from node.http.access import Access, access_of
from node.http.problems import Problem
from node.http.requests import json_body
from node.observe.view import MembersView
from node.rbac import Need
from node.replication.driver import ONE, Replication
from node.tiers import agent as agent_doc
from node.tiers import mesh as mesh_doc
from node.tiers.ops import TIERS, render, tier_spec
from node.tiers.system_json import event_json, render_value
from node.tiers.validation import check_key, check_prefix

__all__ = ["GraphContext", "Loaders", "graphql_view", "query_endpoint", "schema"]

MAX_PAGE = 1000
MAX_DEPTH = 8
MAX_ALIASES = 20
MAX_TOKENS = 2000
MAX_SUBSCRIPTIONS = 32

K = TypeVar("K")
V = TypeVar("V")


def _distinct(
    read: Callable[[K], Awaitable[V]], counter: Callable[[int], None]
) -> Callable[[list[K]], Awaitable[Sequence[V | BaseException]]]:
    """A batch function reading each distinct key of a batch once, concurrently."""

    async def batch(keys: list[K]) -> Sequence[V | BaseException]:
        unique = list(dict.fromkeys(keys))
        counter(len(unique))
        found = await asyncio.gather(*(read(k) for k in unique), return_exceptions=True)
        by_key = dict(zip(unique, found, strict=True))
        return [by_key[k] for k in keys]

    return batch


@dataclass
class Loaders:
    """Per-request batch readers of the mesh and agent tiers; ``reads`` counts the
    cluster reads made, ``waves`` the batches (one per level of a query)."""

    replication: Replication
    reads: int = 0
    waves: int = 0
    mesh: DataLoader[str, Any] = field(init=False)
    agent: DataLoader[str, Any] = field(init=False)
    index: DataLoader[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.mesh = DataLoader(_distinct(self._mesh, self._count), cache=False)
        self.agent = DataLoader(_distinct(self._agent, self._count), cache=False)
        self.index = DataLoader(_distinct(self._index, self._count), cache=False)

    def _count(self, n: int) -> None:
        self.reads += n
        self.waves += 1

    async def _mesh(self, mesh_id: str) -> mesh_doc.MeshState | None:
        return mesh_doc.as_mesh_state((await self.replication.read("mesh", mesh_id, ONE)).state)

    async def _agent(self, agent_id: str) -> agent_doc.AgentState:
        return agent_doc.check_state((await self.replication.read("agent", agent_id, ONE)).state)

    async def _index(self, agent_id: str) -> list[str]:
        read = await self.replication.read("mesh", mesh_doc.index_key(agent_id), ONE)
        return mesh_doc.meshes_of(read.state)


@dataclass
class GraphContext:
    docs: Documents
    system: SystemBackend
    gossip: MembersView
    timeout_s: float
    access: Access | None = None  # the caller, checked per field against its roles
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.docs.r)

    @property
    def replication(self) -> Replication:
        return self.docs.r


def _ctx(info: Info[GraphContext, None]) -> GraphContext:
    return info.context


def _allow(info: Info[GraphContext, None], needs: list[Need]) -> None:
    """PermissionDenied (an error of this field, naming the permission) unless the
    caller's roles grant ``needs``."""
    access = info.context.access
    if access is not None:
        access.require(needs, f"GraphQL {info.field_name}")


def _page(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise InvalidArgument(f"first must be within 1..{MAX_PAGE}, not {first}")
    return first


async def _indexed_meshes(
    info: Info[GraphContext, None], agent_id: str
) -> tuple[list[str], dict[str, mesh_doc.MeshState | None]]:
    """The meshes the agent->meshes index lists for ``agent_id``, and those it could
    read (to confirm the advisory index against)."""
    _allow(info, [Need("read", "mesh", "", True)])  # the index, and the meshes it names
    loaders = _ctx(info).loaders
    listed = await loaders.index.load(agent_id)
    states = await loaders.mesh.load_many(listed)
    return listed, {
        m: s for m, s in zip(listed, states, strict=True) if not isinstance(s, Exception)
    }


# -- types ---------------------------------------------------------------------------------


@strawberry.type
class Agent:
    id: strawberry.ID
    document: JSON | None = strawberry.field(description="None: no document under the id.")
    causal_token: JSON = strawberry.field(description="The document's version vector.")

    @strawberry.field(description="Meshes the agent is a member of (index, confirmed).")
    async def meshes(
        self, info: Info[GraphContext, None], first: int = 100, after: str = ""
    ) -> MeshPage:
        listed, docs = await _indexed_meshes(info, str(self.id))
        ids, more = mesh_doc.page(
            mesh_doc.confirmed_meshes(str(self.id), listed, docs), _page(first), after
        )
        return MeshPage(
            items=[_mesh(m, docs[m]) for m in ids], more=more, end_cursor=ids[-1] if ids else after
        )

    @strawberry.field(description="Agents sharing a mesh with this one.")
    async def neighbours(
        self, info: Info[GraphContext, None], first: int = 100, after: str = ""
    ) -> AgentPage:
        listed, docs = await _indexed_meshes(info, str(self.id))
        ids, more = mesh_doc.page(
            mesh_doc.neighbours(str(self.id), listed, docs), _page(first), after
        )
        return await _agents(info, ids, more, after)


@strawberry.type
class Mesh:
    id: strawberry.ID
    document: JSON | None = strawberry.field(description="None: no such (live) mesh.")

    @strawberry.field(description="The mesh's member agents, in id order.")
    async def members(
        self, info: Info[GraphContext, None], first: int = 100, after: str = ""
    ) -> AgentPage:
        document: Any = self.document or {}
        members = document.get("topology", {}).get("member_agents", [])
        ids, more = mesh_doc.page(members, _page(first), after)
        return await _agents(info, ids, more, after)


@strawberry.type
class AgentPage:
    items: list[Agent]
    more: bool
    end_cursor: str = strawberry.field(description="Pass as `after` for the next page.")


@strawberry.type
class MeshPage:
    items: list[Mesh]
    more: bool
    end_cursor: str


@strawberry.type
class SystemKey:
    key: str
    value: JSON
    mod_revision: int
    version: int


@strawberry.type
class SystemPage:
    items: list[SystemKey]
    more: bool
    end_cursor: str
    revision: int


@strawberry.type
class TierKeys:
    keys: list[str]
    more: bool


@strawberry.type
class TierValue:
    type: str
    value: JSON


@strawberry.type
class Member:
    id: str
    address: str
    status: str


@strawberry.type
class TierHealth:
    tier: str
    rf: int
    local_keys: int
    under_replicated: int


@strawberry.type
class Change:
    type: str
    key: str
    revision: int
    value: JSON | None
    prev_value: JSON | None


@strawberry.type
class SystemChange:
    revision: int
    events: list[Change]


def _agent(agent_id: str, state: agent_doc.AgentState) -> Agent:
    document = agent_doc.render(state) if agent_doc.exists(state) else None
    return Agent(
        id=strawberry.ID(agent_id),
        document=cast(JSON, document),
        causal_token=cast(JSON, agent_doc.clock(state)),
    )


def _mesh(mesh_id: str, state: mesh_doc.MeshState | None) -> Mesh:
    document = mesh_doc.render(state) if mesh_doc.exists(state) else None
    return Mesh(id=strawberry.ID(mesh_id), document=cast(JSON, document))


async def _agents(
    info: Info[GraphContext, None], ids: list[str], more: bool, after: str
) -> AgentPage:
    _allow(info, [Need("read", "agent", a) for a in ids])
    states = await _ctx(info).loaders.agent.load_many(ids)
    items = [_agent(a, s) for a, s in zip(ids, states, strict=True) if not isinstance(s, Exception)]
    return AgentPage(items=items, more=more, end_cursor=ids[-1] if ids else after)


def _ids(ids: list[strawberry.ID]) -> list[str]:
    if len(ids) > MAX_PAGE:
        raise InvalidArgument(f"at most {MAX_PAGE} ids per field, not {len(ids)}")
    for i in ids:
        check_key(str(i), "id")
    return [str(i) for i in ids]


# -- root ----------------------------------------------------------------------------------


@strawberry.type
class Query:
    @strawberry.field(description="One agent; with a causal token, never older than it.")
    async def agent(
        self, info: Info[GraphContext, None], id: strawberry.ID, causal_token: JSON | None = None
    ) -> Agent:
        _allow(info, [Need("read", "agent", str(id))])
        ctx = _ctx(info)
        if causal_token:
            state = await ctx.docs.agent_get(str(id), causal_token)
        else:
            agent_doc.check_agent_key(str(id))
            state = await ctx.loaders.agent.load(str(id))
        return _agent(str(id), state)

    @strawberry.field(description="Several agents, read in one batch.")
    async def agents(self, info: Info[GraphContext, None], ids: list[strawberry.ID]) -> list[Agent]:
        wanted = _ids(ids)
        _allow(info, [Need("read", "agent", a) for a in wanted])
        states = await _ctx(info).loaders.agent.load_many(wanted)
        return [
            _agent(a, s)
            for a, s in zip(wanted, states, strict=True)
            if not isinstance(s, Exception)
        ]

    @strawberry.field
    async def mesh(self, info: Info[GraphContext, None], id: strawberry.ID) -> Mesh:
        check_key(str(id), "id")
        _allow(info, [Need("read", "mesh", str(id))])
        return _mesh(str(id), await _ctx(info).loaders.mesh.load(str(id)))

    @strawberry.field(description="Several meshes, read in one batch.")
    async def meshes(self, info: Info[GraphContext, None], ids: list[strawberry.ID]) -> list[Mesh]:
        wanted = _ids(ids)
        _allow(info, [Need("read", "mesh", m) for m in wanted])
        states = await _ctx(info).loaders.mesh.load_many(wanted)
        return [
            _mesh(m, s) for m, s in zip(wanted, states, strict=True) if not isinstance(s, Exception)
        ]

    @strawberry.field(description="System-tier keys under a prefix (linearizable).")
    async def system_keys(
        self, info: Info[GraphContext, None], prefix: str = "", first: int = 100, after: str = ""
    ) -> SystemPage:
        check_prefix(prefix)
        _allow(info, [Need("read", "system", prefix, True)])
        ctx = _ctx(info)
        res = await ctx.system.range(
            prefix, limit=_page(first), start_after=after, linearizable=True, timeout=ctx.timeout_s
        )
        items = [
            SystemKey(
                key=kv.key,
                value=render_value(kv.value),
                mod_revision=kv.mod_revision,
                version=kv.version,
            )
            for kv in res.kvs
        ]
        return SystemPage(
            items=items,
            more=res.more,
            revision=res.revision,
            end_cursor=items[-1].key if items else after,
        )

    @strawberry.field(description="Keys of a CRDT tier under a prefix.")
    async def tier_keys(
        self,
        info: Info[GraphContext, None],
        tier: str,
        prefix: str = "",
        first: int = 100,
        after: str = "",
    ) -> TierKeys:
        tier_spec(tier)
        check_prefix(prefix)
        _allow(info, [Need("read", tier, prefix, True)])
        keys, more = await _ctx(info).replication.scan(tier, prefix, after, _page(first))
        return TierKeys(keys=keys, more=more)

    @strawberry.field(description="A CRDT-tier value; None when no owner has the key.")
    async def tier_value(
        self, info: Info[GraphContext, None], tier: str, key: str
    ) -> TierValue | None:
        _allow(info, [Need("read", tier, key)])
        result = await _ctx(info).replication.read(tier, key, ONE)
        if result.state is None:
            return None
        type_name, value_json = render(result.state)
        return TierValue(type=type_name, value=json.loads(value_json))

    @strawberry.field(description="Members as this node's gossip sees them.")
    def members(self, info: Info[GraphContext, None]) -> list[Member]:
        return [
            Member(id=m.id, address=m.address, status=str(m.status))
            for m in _ctx(info).gossip.members()
        ]

    @strawberry.field
    def tier_health(self, info: Info[GraphContext, None]) -> list[TierHealth]:
        r = _ctx(info).replication
        health = r.health()
        return [
            TierHealth(
                tier=name,
                rf=spec.rf,
                local_keys=r.store.count(name),
                under_replicated=h.under_replicated if (h := health.get(name)) else 0,
            )
            for name, spec in TIERS.items()
        ]


@strawberry.type
class Subscription:
    @strawberry.subscription(description="System-tier changes after a revision (default: now).")
    async def system_changes(
        self, info: Info[GraphContext, None], prefix: str = "", after: int | None = None
    ) -> AsyncGenerator[SystemChange, None]:
        check_prefix(prefix)
        ctx = _ctx(info)
        needs = [Need("read", "system", prefix, True)]
        # this subscription's own check (one socket may carry several)
        recheck = ctx.access.watching(needs, "GraphQL systemChanges") if ctx.access else None
        if after is None:
            _, after = await ctx.system.get(prefix, linearizable=True, timeout=ctx.timeout_s)
        elif after < 0:
            raise InvalidArgument(f"after must be a revision >= 0, not {after}")
        async for batch in ctx.system.watch(prefix, prefix=True, start_revision=after + 1):
            if recheck is not None:  # a role taken away ends the subscription here
                recheck()
            changes = [event_json(e) for e in batch]
            yield SystemChange(
                revision=batch[-1].kv.mod_revision,
                events=[
                    Change(
                        type=c["type"],
                        key=c["key"],
                        revision=c["revision"],
                        value=c.get("value"),
                        prev_value=c.get("prev_value"),
                    )
                    for c in changes
                ],
            )


schema = strawberry.Schema(
    query=Query,
    subscription=Subscription,
    extensions=[
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
    ],
)


class _View(GraphQLView[GraphContext, None]):
    def __init__(self, make_context: Callable[[web.Request], GraphContext]) -> None:
        super().__init__(
            schema=schema,
            graphql_ide=None,
            max_subscriptions_per_connection=MAX_SUBSCRIPTIONS,
            keep_alive=True,
            keep_alive_interval=15,
        )
        self._make_context = make_context

    async def get_context(self, request: web.Request, response: Any) -> GraphContext:
        return self._make_context(request)


def query_endpoint(
    docs: Documents, system: SystemBackend, gossip: MembersView, timeout_s: float
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``/api/v1/query``: the same queries as ``/graphql`` for clients that only speak
    plain JSON (``?query=...&variables=<json>`` or a POSTed ``{"query", "variables"}``):
    200 with ``data`` (and partial ``errors``), 400 when nothing could run."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            body = await json_body(request, ("application/json",), 64 << 10)
        else:
            body = dict(request.query)
            if "variables" in body:
                try:
                    body["variables"] = json.loads(body["variables"])
                except ValueError as exc:
                    raise InvalidArgument("variables is not valid JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise InvalidArgument('give the GraphQL document as "query"')
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise InvalidArgument("variables must be a JSON object")
        if body["query"].lstrip().startswith("subscription"):
            raise InvalidArgument("subscriptions need /graphql over a WebSocket")
        result = await schema.execute(
            body["query"],
            variable_values=variables,
            context_value=GraphContext(docs, system, gossip, timeout_s, access_of(request)),
        )
        messages = [e.message for e in result.errors or ()]
        errors = [{"message": e.message, "path": e.path} for e in result.errors or ()]
        if result.data is None:
            detail = "; ".join(messages) or "the query did not run"
            denied = all(
                isinstance(e.original_error, PermissionDenied) for e in result.errors or ()
            )
            raise Problem(
                403 if result.errors and denied else 400, detail, extra={"errors": errors}
            )
        answer: dict[str, Any] = {"data": result.data}
        if errors:
            answer["errors"] = errors
        return web.json_response(answer)

    return handle


def graphql_view(
    docs: Documents, system: SystemBackend, gossip: MembersView, timeout_s: float
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    view = _View(lambda request: GraphContext(docs, system, gossip, timeout_s, access_of(request)))

    async def handle(request: web.Request) -> web.StreamResponse:
        return await view(request)

    return handle
