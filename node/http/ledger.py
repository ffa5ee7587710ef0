"""The lifecycle API over HTTP (docs/ledger.md#the-api): the same calls as the gRPC
``Ledger`` service (:class:`node.api.ledger.LedgerApi`), one route each.

Arguments come from the path (ids) and a JSON body (the rest); a body naming an id
that differs from the path's is a 400. ``Idempotency-Key`` makes a change safe to
resend: the cluster applies it once. The routes and their OpenAPI description are
built from the one table below, so they cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from node.errors import InvalidArgument, Unavailable
from node.http.requests import JSON, json_body
from node.ledger.calls import MAX_ARGS_BYTES

__all__ = ["LEDGER_ROUTES", "LedgerHttp"]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    call: str
    summary: str
    fixed: tuple[tuple[str, str], ...] = ()  # arguments the route itself sets
    body: bool = True


_V = "/api/v1/ledger"
LEDGER_ROUTES = (
    Route(
        "get", f"{_V}/pools", "Pools", "Every resource pool: capacity and units in use", body=False
    ),
    Route("put", f"{_V}/pools/{{name}}", "SetPool", "Create a pool or change its capacity"),
    Route(
        "put",
        f"{_V}/jobs/{{job_id}}",
        "AssignJob",
        "Assign a job: create or update it, allocate its resources",
    ),
    Route(
        "post",
        "/assign_job",
        "AssignJob",
        "The spec's name for assigning a job (job_id in the body)",
    ),
    Route(
        "get",
        f"{_V}/jobs/{{job_id}}",
        "GetJob",
        "A job with its live workers and tadpoles",
        body=False,
    ),
    Route("post", f"{_V}/jobs/{{job_id}}/start", "StartJob", "Mark a job running"),
    Route(
        "post",
        f"{_V}/jobs/{{job_id}}/complete",
        "FinishJob",
        "Complete a job",
        (("outcome", "completed"),),
    ),
    Route(
        "post", f"{_V}/jobs/{{job_id}}/fail", "FinishJob", "Fail a job", (("outcome", "failed"),)
    ),
    Route(
        "put", f"{_V}/workers/{{id}}", "Spawn", "Spawn a worker with a TTL", (("kind", "worker"),)
    ),
    Route(
        "put",
        f"{_V}/tadpoles/{{id}}",
        "Spawn",
        "Spawn a tadpole instance with a TTL",
        (("kind", "tadpole"),),
    ),
    Route(
        "post",
        f"{_V}/workers/{{id}}/retire",
        "Retire",
        "End a worker before its TTL",
        (("kind", "worker"),),
    ),
    Route(
        "post",
        f"{_V}/tadpoles/{{id}}/retire",
        "Retire",
        "End a tadpole instance before its TTL",
        (("kind", "tadpole"),),
    ),
    Route("post", f"{_V}/workers/{{worker_id}}/events", "RecordEvent", "Record a worker's event"),
    Route(
        "post",
        f"{_V}/tadpoles/{{tadpole_id}}/metrics",
        "RecordTadpoleMetrics",
        "Record a tadpole's metrics",
    ),
    *(
        Route(
            "put",
            f"{_V}/{kind}s/{{entity_id}}/attributes/{{key}}",
            "RecordAttribute",
            f"Record an experimental attribute of a {kind} (body: value, weight_hint)",
            (("entity_type", kind),),
        )
        for kind in ("job", "worker", "tadpole")
    ),
    Route("put", f"{_V}/analysis/{{request_id}}", "RequestAnalysis", "Queue an analysis request"),
    Route(
        "post",
        f"{_V}/analysis/{{request_id}}/start",
        "StartAnalysis",
        "Start a queued analysis request (body: run_id, job_id, worker_id)",
    ),
    Route(
        "post",
        f"{_V}/analysis/{{request_id}}/complete",
        "CompleteAnalysis",
        "Complete a running analysis with its findings",
        (("outcome", "completed"),),
    ),
    Route(
        "post",
        f"{_V}/analysis/{{request_id}}/fail",
        "CompleteAnalysis",
        "Fail a running analysis",
        (("outcome", "failed"),),
    ),
    Route("put", f"{_V}/code/{{digest}}", "RegisterCode", "Catalogue a code version by digest"),
    Route(
        "put",
        f"{_V}/code-reports/{{report_id}}",
        "SubmitCodeReport",
        "Submit an update report against a code version",
    ),
    Route(
        "post",
        f"{_V}/code-reports/{{report_id}}/review",
        "ReviewCodeReport",
        "Record a review (accepted or rejected); nothing is deployed",
    ),
    Route(
        "put",
        f"{_V}/improvements/{{report_id}}",
        "ProposeImprovement",
        "Propose an improvement report (body: title, bundle, job_id, request_id)",
    ),
    Route(
        "post",
        f"{_V}/improvements/{{report_id}}/decide",
        "DecideImprovement",
        "Approve or reject an improvement report (body: decision, decided_by)",
    ),
    Route(
        "put",
        f"{_V}/learning/{{snapshot_id}}",
        "RecordLearningSnapshot",
        "Record a learning snapshot: principle scores under a rubric version",
    ),
    Route(
        "get",
        f"{_V}/export",
        "ExportStatus",
        "This node's outbox exporter: cursor, lag, last error",
        body=False,
    ),
    Route(
        "get",
        f"{_V}/reports/{{name}}",
        "Report",
        "A report from the ledger (capacity, jobs, ttl, findings)",
        body=False,
    ),
)


class LedgerHttp:
    def __init__(self, node: Any) -> None:
        self._node = node

    def routes(self) -> list[web.RouteDef]:
        return [web.route(r.method.upper(), r.path, self._handler(r)) for r in LEDGER_ROUTES]

    def _handler(self, route: Route) -> Any:
        async def handle(request: web.Request) -> web.Response:
            api = getattr(self._node, "ledger", None)
            if api is None:
                raise Unavailable("this node serves no lifecycle API")
            args: dict[str, Any] = {}
            if route.body and (request.can_read_body or request.content_length):
                body = await json_body(request, (JSON,), MAX_ARGS_BYTES)
                if not isinstance(body, dict):
                    raise InvalidArgument("the body must be a JSON object")
                args.update(body)
            if route.call == "Report" and "limit" in request.query:
                try:
                    args["limit"] = int(request.query["limit"])
                except ValueError:
                    raise InvalidArgument("limit must be a whole number") from None
            for name, value in (*request.match_info.items(), *route.fixed):
                if name in args and args[name] != value:
                    raise InvalidArgument(
                        f"the body's {name} {args[name]!r} is not the path's {value!r}"
                    )
                args[name] = value
            key = request.headers.get("Idempotency-Key", "")
            answer, revision = await api.call(route.call, args, key)
            return web.json_response(
                answer, headers={"Tadpole-Revision": str(revision)}, dumps=_dumps
            )

        return handle


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
