"""gRPC servicer of the lifecycle API and the ledger (``Ledger`` service).

Arguments and answers are JSON objects (node/ledger/calls.py names them); failures go
through :mod:`node.api.status` like every other call: INVALID_ARGUMENT for bad
input, NOT_FOUND for an unknown job or unit, FAILED_PRECONDITION naming the current
state for a transition it does not allow or a pool without room.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import grpc

from consensus.backend import SystemBackend
from consensus.errors import NotLeaderError
from node.api.kv import _Api
from node.config import NodeConfig
from node.errors import InvalidArgument
from node.ledger import lifecycle as lc
from node.ledger.calls import CALLS, parse_args
from node.ledger.export import Exporter
from node.ledger.service import Lifecycle, decode
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

__all__ = ["LedgerApi", "LedgerServicer"]


class LedgerApi:
    """The calls on plain values: what the gRPC servicer and the HTTP API both use."""

    def __init__(
        self,
        node_id: str,
        system: SystemBackend,
        lifecycle: Lifecycle,
        exporter: Exporter,
        *,
        embedded: bool,
        timeout_s: float = 5.0,
    ) -> None:
        self.node_id = node_id
        self.system = system
        self.lifecycle = lifecycle
        self.exporter = exporter
        self.embedded = embedded  # the default SQLite file: only the leader's is current
        self.timeout_s = timeout_s

    async def call(self, name: str, args: dict[str, Any], request_id: str = "") -> tuple[Any, int]:
        """(the answer, the revision it reflects)."""
        if name == "Pools":
            return await self.pools()
        if name == "ExportStatus":
            self._on_the_leader("the exporter runs")
            return dataclasses.asdict(self.exporter.status()), self.system.info().revision
        if name == "Report":
            return await self.report(args), self.system.info().revision
        call = CALLS.get(name)
        if call is None:
            raise InvalidArgument(f"no lifecycle call {name!r}")
        if request_id:  # becomes part of event ids (worker_events.event_id, 128)
            lc.check_id(request_id, "request_id", 64)
        return await self.lifecycle.run(call.bind(args), request_id=request_id, once=call.once)

    def _on_the_leader(self, what: str) -> None:
        """UNAVAILABLE with the leader as a hint (clients go there) unless this node
        leads."""
        info = self.system.info()
        if info.role != "leader":
            raise NotLeaderError(
                f"{what} on the leader ({info.leader_id or 'none elected'}), not {self.node_id}"
            )

    async def pools(self) -> tuple[dict[str, Any], int]:
        page = await self.system.range(
            lc.PREFIX + "pools/", limit=0, start_after="", linearizable=True, timeout=self.timeout_s
        )
        return {"pools": [decode(kv.value) for kv in page.kvs]}, page.revision

    async def report(self, args: dict[str, Any]) -> dict[str, Any]:
        from node.ledger.reports import REPORTS, run_report  # SQLAlchemy: on first use

        name = args.get("name")
        unknown = sorted(set(args) - {"name", "limit"})
        if unknown:
            raise InvalidArgument(f"unknown argument {unknown[0]!r} (a report takes name, limit)")
        if name not in REPORTS:
            raise InvalidArgument(f"name must be one of {', '.join(REPORTS)} (got {name!r})")
        limit = args.get("limit", 20)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise InvalidArgument("limit must be a whole number from 1 to 10000")
        if self.embedded:
            self._on_the_leader("the embedded ledger is kept")
        pools, _rev = await self.pools()
        capacities = {p["name"]: p["capacity"] for p in pools["pools"]}
        if self.exporter.status().running or self.embedded:
            # Read your writes: what was acknowledged before the report is in it.
            await asyncio.wait_for(self.exporter.catch_up(), self.timeout_s)
        engine = await self.exporter.engine()
        table = await asyncio.to_thread(
            run_report, engine, name, capacities=capacities, limit=limit
        )
        return {**table, "cursor": self.exporter.status().cursor}


class LedgerServicer(_Api, pb_grpc.LedgerServicer):  # type: ignore[misc]
    def __init__(self, config: NodeConfig, system: SystemBackend, api: LedgerApi) -> None:
        super().__init__(config, system)
        self._api = api

    async def _serve(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            args = parse_args(request.args_json)
            answer, revision = await self._api.call(name, args, request.request_id)
        except Exception as exc:
            await self.abort_for(context, exc)
        return pb.LedgerAnswer(
            header=self.header(revision), result_json=json.dumps(answer, default=str)
        )


def _method(name: str) -> Any:
    async def serve(self: LedgerServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(name, request, context)

    serve.__name__ = name
    return serve


for _name in (*CALLS, "Pools", "ExportStatus", "Report"):
    setattr(LedgerServicer, _name, _method(_name))
