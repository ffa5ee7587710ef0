"""gRPC servicer for documents (``Documents`` service): agent documents with
causal tokens, mesh documents, graph queries.

Causal consistency (agent tier). Every agent write answers with the
document's version vector as a *causal token*. A read or write that carries
a token is served only from state that covers it: the serving node first
reads one owner; if that copy is behind, it gathers and merges every live
owner's copy (read repair brings the stale owner up too), retrying until the
token is covered or the deadline passes (then UNAVAILABLE — never an older
answer). A write with a token makes the owners cover it before applying, so
a patch is always applied on top of what the client had seen.

Failures are answered through :mod:`node.api.status`: INVALID_ARGUMENT (bad
document or request), NOT_FOUND (no such mesh), ALREADY_EXISTS (create over a
live mesh), UNAVAILABLE (no owner reachable; outcome not-applied), ABORTED
(below write quorum; outcome applied: durable somewhere, will converge — do
not resend).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import grpc

from node.api import status
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.replication.driver import (
    ALL,
    ONE,
    NoOwnerReachable,
    Replication,
    UpdateResult,
)
from node.tiers import agent as agent_doc
from node.tiers import mesh as mesh_doc
from node.tiers.documents import DocOp
from node.tiers.ops import parse_json
from node.tiers.validation import (
    InvalidArgument,
    check_consistency,
    check_key,
    check_limit,
    check_prefix,
)

log = logging.getLogger(__name__)

MESH = "mesh"
AGENT = "agent"
CAUSAL_WAIT_S = 3.0


class Documents:
    """The document operations, on plain values: what the gRPC servicer and the HTTP
    API both call, so causal tokens, validation and errors mean the same on both."""

    def __init__(self, replication: Replication) -> None:
        self.r = replication

    async def covering(self, agent_id: str, token: dict[str, int], consistency: int) -> Any:
        """The agent's state on a live owner, once it covers ``token``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CAUSAL_WAIT_S
        read = await self.r.read(AGENT, agent_id, consistency or ONE)
        state = agent_doc.check_state(read.state)
        while token and not agent_doc.covers(state, token):
            try:
                read = await self.r.read(AGENT, agent_id, ALL)
            except NoOwnerReachable:
                read = await self.r.read(AGENT, agent_id, ONE)
            state = agent_doc.check_state(read.state)
            if agent_doc.covers(state, token):
                break
            if loop.time() > deadline:
                raise NoOwnerReachable(
                    f"agent {agent_id}: no live replica has caught up with the causal token "
                    f"within {CAUSAL_WAIT_S:g} s; nothing applied; retry (an older state is "
                    "never served)"
                )
            await asyncio.sleep(0.05)
        return state

    async def agent_get(self, agent_id: str, token: Any, consistency: int = 0) -> Any:
        agent_doc.check_agent_key(agent_id)
        return await self.covering(agent_id, agent_doc.check_token(token), consistency)

    async def agent_write(
        self, agent_id: str, doc: Any, token: Any, *, replace: bool, only_new: bool = False
    ) -> UpdateResult:
        """``replace``: the whole document (create or replace; ``only_new`` refuses to
        replace); otherwise ``doc`` is an RFC 7396 merge patch of the existing one."""
        agent_doc.check_agent_key(agent_id)
        checked = agent_doc.check_token(token)
        if checked:
            await self.covering(agent_id, checked, ONE)
        if only_new:
            # The agent tier acknowledges a write on one owner (the other gets it
            # asynchronously), so the coordinating owner alone may not have seen an
            # acknowledged create: ask every live owner first (those that answer, if
            # one is down). The owner applying the write checks again; only truly
            # concurrent creates, or one hidden on an owner that is down, can both pass.
            try:
                seen = await self.r.read(AGENT, agent_id, ALL)
            except NoOwnerReachable:  # an owner is down: what the others hold
                seen = await self.r.read(AGENT, agent_id, ONE)
            if agent_doc.exists(agent_doc.check_state(seen.state)):
                raise agent_doc.AgentExists("an agent document already exists under this key")
        if replace:
            op = DocOp("agent_create", {"doc": doc, "key": agent_id, "only_new": only_new})
        else:
            op = DocOp("agent_patch", {"patch": doc})
        return await self.r.update(AGENT, agent_id, op)

    async def capability_add(self, agent_id: str, amounts: dict[int, float], token: Any) -> Any:
        agent_doc.check_agent_key(agent_id)
        checked = agent_doc.check_token(token)
        if not amounts:
            raise InvalidArgument("amounts is empty: give dimension -> amount")
        for dim, amount in amounts.items():
            if not 0 <= dim < 256:
                raise InvalidArgument(f"amounts: dimension {dim} is outside 0..255")
            if not math.isfinite(amount):
                raise InvalidArgument(f"amounts[{dim}]: {amount} is not a finite number")
        if checked:
            await self.covering(agent_id, checked, ONE)
        op = DocOp("agent_capability_add", {"amounts": sorted(amounts.items())})
        return await self.r.update(AGENT, agent_id, op)

    async def mesh_get(self, mesh_id: str, consistency: int = 0) -> mesh_doc.MeshState | None:
        check_key(mesh_id, "id")
        read = await self.r.read(MESH, mesh_id, consistency or ONE)
        return mesh_doc.as_mesh_state(read.state)

    async def mesh_write(
        self, mesh_id: str, doc: Any, *, create: bool, upsert: bool = False
    ) -> UpdateResult:
        """``create``: a new mesh (ALREADY_EXISTS over a live one); ``upsert``: create it
        or update the fields ``doc`` names; otherwise update a live mesh (NOT_FOUND)."""
        check_key(mesh_id, "id")
        if upsert:
            return await self.r.update(MESH, mesh_id, DocOp("mesh_upsert", {"doc": doc}))
        if create:
            topology = doc.get("topology") if isinstance(doc, dict) else None
            given = topology.get("mesh_id") if isinstance(topology, dict) else None
            if given != mesh_id:
                raise InvalidArgument(
                    f"topology.mesh_id {given!r} does not match the id {mesh_id!r}"
                )
            return await self.r.update(MESH, mesh_id, DocOp("mesh_create", {"doc": doc}))
        return await self.r.update(MESH, mesh_id, DocOp("mesh_put", {"doc": doc}))

    async def mesh_delete(self, mesh_id: str) -> UpdateResult:
        check_key(mesh_id, "id")
        return await self.r.update(MESH, mesh_id, DocOp("mesh_delete"))

    async def mesh_members(self, mesh_id: str, add: list[str], remove: list[str]) -> UpdateResult:
        check_key(mesh_id, "mesh_id")
        if not add and not remove:
            raise InvalidArgument("give agent ids to add and/or remove")
        op = DocOp("mesh_members", {"add": list(add), "remove": list(remove)})
        return await self.r.update(MESH, mesh_id, op)

    async def query(self, kind: str, node_id: str) -> list[str]:
        """Graph query ``kind`` (members | meshes | neighbours) about ``node_id``."""
        check_key(node_id, "id")
        if kind == "members":
            read = await self.r.read(MESH, node_id, ONE)
            if not mesh_doc.exists(mesh_doc.as_mesh_state(read.state)):
                raise mesh_doc.MeshNotFound(f"no mesh {node_id}")
            return mesh_doc.members_of(read.state)
        if kind not in ("meshes", "neighbours"):
            raise InvalidArgument(f"unknown query kind {kind!r}")
        index = await self.r.read(MESH, mesh_doc.index_key(node_id), ONE)
        listed = mesh_doc.meshes_of(index.state)
        reads = await asyncio.gather(
            *(self.r.read(MESH, mesh_id, ONE) for mesh_id in listed), return_exceptions=True
        )
        docs: dict[str, mesh_doc.MeshState | None] = {}
        for mesh_id, fetched in zip(listed, reads, strict=True):
            if not isinstance(fetched, BaseException):
                docs[mesh_id] = mesh_doc.as_mesh_state(fetched.state)
        if kind == "meshes":
            return mesh_doc.confirmed_meshes(node_id, listed, docs)
        return mesh_doc.neighbours(node_id, listed, docs)


_QUERY_KINDS = {
    pb.GraphQueryRequest.MESHES_OF_AGENT: "meshes",
    pb.GraphQueryRequest.MEMBERS_OF_MESH: "members",
    pb.GraphQueryRequest.NEIGHBOURS: "neighbours",
}


class DocumentsServicer(pb_grpc.DocumentsServicer):  # type: ignore[misc]
    def __init__(self, replication: Replication) -> None:
        self._r = replication
        self._docs = Documents(replication)

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        await status.abort(context, exc)

    @staticmethod
    def _tier(tier: str) -> str:
        if tier not in ("", MESH, AGENT):
            raise InvalidArgument(f"documents of tier {tier!r} are not served; use mesh or agent")
        return tier or MESH

    def _agent_doc(self, state: Any, result: Any = None) -> Any:
        agent = agent_doc.check_state(state)
        response = pb.DocResponse(member_id=self._r.node_id, found=agent_doc.exists(agent))
        if response.found:
            response.doc_json = json.dumps(agent_doc.render(agent), sort_keys=True)
        response.causal_token.update(agent_doc.clock(agent))
        if result is not None:
            response.member_id = result.coordinator
            response.replicas[:] = result.replicas
            response.hinted[:] = result.hinted
        return response

    def _doc(self, state: Any, result: Any = None) -> Any:
        response = pb.DocResponse(member_id=self._r.node_id, found=mesh_doc.exists(state))
        if response.found:
            response.doc_json = json.dumps(mesh_doc.render(state), sort_keys=True)
        if result is not None:
            response.member_id = result.coordinator
            response.replicas[:] = result.replicas
            response.hinted[:] = result.hinted
        return response

    async def Put(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            tier = self._tier(request.tier)
            doc = parse_json(request.doc_json, "doc_json")
            if tier == AGENT:
                result = await self._docs.agent_write(
                    request.id, doc, dict(request.causal_token), replace=request.create
                )
                return self._agent_doc(result.state, result)
            result = await self._docs.mesh_write(request.id, doc, create=request.create)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(result.state, result)

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            consistency = check_consistency(request.consistency)
            if self._tier(request.tier) == AGENT:
                state = await self._docs.agent_get(
                    request.id, dict(request.causal_token), consistency
                )
                return self._agent_doc(state)
            mesh = await self._docs.mesh_get(request.id, consistency)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(mesh)

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if self._tier(request.tier) == AGENT:
                raise InvalidArgument("agent documents are not deleted; patch them instead")
            result = await self._docs.mesh_delete(request.id)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(result.state, result)

    async def Members(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            result = await self._docs.mesh_members(
                request.mesh_id, list(request.add), list(request.remove)
            )
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(result.state, result)

    async def CapabilityAdd(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            result = await self._docs.capability_add(
                request.agent_id, dict(request.amounts), dict(request.causal_token)
            )
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._agent_doc(result.state, result)

    async def Query(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            check_limit(request.limit)
            check_prefix(request.prefix)
            kind = _QUERY_KINDS.get(request.kind)
            if kind is None:
                raise InvalidArgument(f"unknown query kind {request.kind}")
            ids = await self._docs.query(kind, request.id)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        page, more = mesh_doc.page(ids, request.limit, request.start_after, request.prefix)
        return pb.GraphQueryResponse(ids=page, more=more)
