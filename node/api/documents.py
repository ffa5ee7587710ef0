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


class DocumentsServicer(pb_grpc.DocumentsServicer):  # type: ignore[misc]
    def __init__(self, replication: Replication) -> None:
        self._r = replication

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

    async def _covering(self, agent_id: str, token: dict[str, int], consistency: int) -> Any:
        """The agent's state on a live owner, once it covers ``token``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CAUSAL_WAIT_S
        read = await self._r.read(AGENT, agent_id, consistency or ONE)
        state = agent_doc.check_state(read.state)
        while token and not agent_doc.covers(state, token):
            try:
                read = await self._r.read(AGENT, agent_id, ALL)
            except NoOwnerReachable:
                read = await self._r.read(AGENT, agent_id, ONE)
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

    async def _agent_put(self, request: Any) -> Any:
        agent_doc.check_agent_key(request.id)
        token = agent_doc.check_token(dict(request.causal_token))
        doc = parse_json(request.doc_json, "doc_json")
        if token:
            await self._covering(request.id, token, ONE)
        if request.create:
            op = DocOp("agent_create", {"doc": doc, "key": request.id})
        else:
            op = DocOp("agent_patch", {"patch": doc})
        result = await self._r.update(AGENT, request.id, op)
        return self._agent_doc(result.state, result)

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
            if self._tier(request.tier) == AGENT:
                return await self._agent_put(request)
            check_key(request.id, "id")
            doc = parse_json(request.doc_json, "doc_json")
            if request.create:
                topology = doc.get("topology") if isinstance(doc, dict) else None
                mesh_id = topology.get("mesh_id") if isinstance(topology, dict) else None
                if mesh_id != request.id:
                    raise InvalidArgument(
                        f"topology.mesh_id {mesh_id!r} does not match the id {request.id!r}"
                    )
                op = DocOp("mesh_create", {"doc": doc})
            else:
                op = DocOp("mesh_put", {"doc": doc})
            result = await self._r.update(MESH, request.id, op)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(result.state, result)

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if self._tier(request.tier) == AGENT:
                agent_doc.check_agent_key(request.id)
                token = agent_doc.check_token(dict(request.causal_token))
                state = await self._covering(
                    request.id, token, check_consistency(request.consistency)
                )
                return self._agent_doc(state)
            check_key(request.id, "id")
            read = await self._r.read(
                MESH, request.id, check_consistency(request.consistency) or ONE
            )
            state = mesh_doc.as_mesh_state(read.state)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(state)

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if self._tier(request.tier) == AGENT:
                raise InvalidArgument("agent documents are not deleted; patch them instead")
            check_key(request.id, "id")
            result = await self._r.update(MESH, request.id, DocOp("mesh_delete"))
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(result.state, result)

    async def Members(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            check_key(request.mesh_id, "mesh_id")
            if not request.add and not request.remove:
                raise InvalidArgument("give agent ids to add and/or remove")
            op = DocOp("mesh_members", {"add": list(request.add), "remove": list(request.remove)})
            result = await self._r.update(MESH, request.mesh_id, op)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(result.state, result)

    async def CapabilityAdd(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            agent_doc.check_agent_key(request.agent_id)
            token = agent_doc.check_token(dict(request.causal_token))
            if not request.amounts:
                raise InvalidArgument("amounts is empty: give dimension -> amount")
            for dim, amount in request.amounts.items():
                if not 0 <= dim < 256:
                    raise InvalidArgument(f"amounts: dimension {dim} is outside 0..255")
                if not math.isfinite(amount):
                    raise InvalidArgument(f"amounts[{dim}]: {amount} is not a finite number")
            if token:
                await self._covering(request.agent_id, token, ONE)
            op = DocOp("agent_capability_add", {"amounts": sorted(request.amounts.items())})
            result = await self._r.update(AGENT, request.agent_id, op)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._agent_doc(result.state, result)

    async def Query(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            check_key(request.id, "id")
            check_limit(request.limit)
            check_prefix(request.prefix)
            ids = await self._query(request.kind, request.id)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        page, more = mesh_doc.page(ids, request.limit, request.start_after, request.prefix)
        return pb.GraphQueryResponse(ids=page, more=more)

    async def _query(self, kind: int, node_id: str) -> list[str]:
        if kind == pb.GraphQueryRequest.MEMBERS_OF_MESH:
            read = await self._r.read(MESH, node_id, ONE)
            if not mesh_doc.exists(mesh_doc.as_mesh_state(read.state)):
                raise mesh_doc.MeshNotFound(f"no mesh {node_id}")
            return mesh_doc.members_of(read.state)
        index = await self._r.read(MESH, mesh_doc.index_key(node_id), ONE)
        listed = mesh_doc.meshes_of(index.state)
        reads = await asyncio.gather(
            *(self._r.read(MESH, mesh_id, ONE) for mesh_id in listed), return_exceptions=True
        )
        docs: dict[str, mesh_doc.MeshState | None] = {}
        for mesh_id, fetched in zip(listed, reads, strict=True):
            if not isinstance(fetched, BaseException):
                docs[mesh_id] = mesh_doc.as_mesh_state(fetched.state)
        if kind == pb.GraphQueryRequest.MESHES_OF_AGENT:
            return mesh_doc.confirmed_meshes(node_id, listed, docs)
        if kind == pb.GraphQueryRequest.NEIGHBOURS:
            return mesh_doc.neighbours(node_id, listed, docs)
        raise InvalidArgument(f"unknown query kind {kind}")
