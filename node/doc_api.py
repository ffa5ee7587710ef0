"""gRPC servicer for documents (``Documents`` service): mesh documents and
graph queries (agent documents join when that tier lands).

Status codes: INVALID_ARGUMENT (bad document or request, nothing changed),
NOT_FOUND (no such mesh), ALREADY_EXISTS (create over a live mesh),
UNAVAILABLE (no owner reachable, nothing applied), ABORTED (below write
quorum: durable somewhere, will converge — do not resend).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import grpc

from node import mesh_doc
from node.documents import DocOp
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.replication import ONE, NoOwnerReachable, NotEnoughReplicas, Replication
from node.tier_ops import parse_json
from node.validation import InvalidArgument, check_key, check_limit, check_prefix

log = logging.getLogger(__name__)

MESH = "mesh"


class DocumentsServicer(pb_grpc.DocumentsServicer):  # type: ignore[misc]
    def __init__(self, replication: Replication) -> None:
        self._r = replication

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        codes: list[tuple[type[Exception], grpc.StatusCode]] = [
            (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
            (mesh_doc.MeshNotFound, grpc.StatusCode.NOT_FOUND),
            (mesh_doc.MeshExists, grpc.StatusCode.ALREADY_EXISTS),
            (NoOwnerReachable, grpc.StatusCode.UNAVAILABLE),
            (NotEnoughReplicas, grpc.StatusCode.ABORTED),
        ]
        for kind, code in codes:
            if isinstance(exc, kind):
                await context.abort(code, str(exc))
        log.exception("document request failed", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    @staticmethod
    def _tier(tier: str) -> None:
        if tier not in ("", MESH):
            raise InvalidArgument(f"documents of tier {tier!r} are not served; use 'mesh'")

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
            self._tier(request.tier)
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
            self._tier(request.tier)
            check_key(request.id, "id")
            read = await self._r.read(MESH, request.id, int(request.consistency) or ONE)
            state = mesh_doc.as_mesh_state(read.state)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return self._doc(state)

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._tier(request.tier)
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
