"""gRPC servicer for the audit trail (``Audit`` service): this node's newest records.

An operator call (``node/peer/auth.py``), itself recorded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from node.audit import AuditLog
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

TAIL_MAX = 10_000
TAIL_METHOD = "/tadpole.v1.Audit/Tail"


def _is_a_read(record: dict[str, Any]) -> bool:
    return record.get("action") == TAIL_METHOD


class AuditServicer(pb_grpc.AuditServicer):  # type: ignore[misc]
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def Tail(self, request: Any, context: grpc.aio.ServicerContext) -> pb.AuditTailResponse:
        limit = request.limit or 100
        if limit > TAIL_MAX:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"limit {limit}: at most {TAIL_MAX}"
            )
        skip = None if request.include_reads else _is_a_read
        records = await asyncio.to_thread(self._audit.tail, limit, skip=skip)
        return pb.AuditTailResponse(
            node_id=self._audit.node_id,
            records=[json.dumps(r, separators=(",", ":")) for r in records],
            dropped=self._audit.dropped,
        )
