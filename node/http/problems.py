"""Errors of the HTTP API as RFC 9457 ``application/problem+json``.

Every failure of a request is decided by the same table as the gRPC API
(:func:`node.api.status.status_for`); this module only turns its gRPC code into an
HTTP status, so a condition means the same thing on both faces:

==========================  ======  ==================================================
gRPC code                   HTTP    notes
==========================  ======  ==================================================
INVALID_ARGUMENT            400     the ``detail`` names the field (422 when the input
                                    is well-formed JSON but not a valid document of its
                                    tier: ``InvalidDocument``)
NOT_FOUND                   404
ALREADY_EXISTS              409     (412 for a create-only write, see :class:`Problem`)
FAILED_PRECONDITION         409
OUT_OF_RANGE                410     the requested history was compacted;
                                    ``compact_revision`` says where it now starts
UNAVAILABLE                 503     with ``Retry-After``; nothing was applied
ABORTED                     504     applied or unknown: see ``outcome``; do not resend
DEADLINE_EXCEEDED           504     outcome unknown
INTERNAL                    500     a bug; logged once with its traceback
==========================  ======  ==================================================

The body always carries ``outcome`` (``not-applied`` / ``applied`` / ``unknown``), the
same field the gRPC API sends as trailing metadata; the ``Tadpole-Outcome`` header
repeats it. Clients decide on resends from it, never from the words of ``detail``.
Failures that are HTTP's own (unknown route 404, wrong method 405, body too large
413, wrong media type 415, a failed ``If-Match``/``If-None-Match`` 412) are raised
as :class:`Problem` directly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

from node.api.status import COMPACT_REVISION_KEY, LEADER_ADDRESS_KEY, LEADER_ID_KEY, status_for
from node.errors import InvalidDocument, Outcome

__all__ = ["PROBLEM_JSON", "Problem", "problem_for", "problem_response"]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_S = 1

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.OUT_OF_RANGE: 410,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.ABORTED: 504,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    403: "Forbidden",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(eq=False)
class Problem(Exception):
    """A failure answered with ``status``; ``extra`` members join the problem body."""

    status: int
    detail: str
    outcome: Outcome = Outcome.NOT_APPLIED
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail


def problem_for(exc: BaseException) -> Problem:
    """The HTTP answer to ``exc``, through the one status table."""
    if isinstance(exc, Problem):
        return exc
    st = status_for(exc)
    code = _HTTP_STATUS.get(st.code, 500)
    if isinstance(exc, InvalidDocument):
        code = 422  # well-formed, but not a document of its tier
    meta = dict(st.metadata)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if COMPACT_REVISION_KEY in meta:
        extra["compact_revision"] = int(meta[COMPACT_REVISION_KEY])
    if LEADER_ID_KEY in meta:
        extra["leader_id"] = meta[LEADER_ID_KEY]
        extra["leader_address"] = meta.get(LEADER_ADDRESS_KEY, "")
    if code == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if code == 401:  # RFC 6750: the request needs a (new) bearer token
        headers["WWW-Authenticate"] = 'Bearer realm="tadpole", error="invalid_token"'
    if code == 500:
        log.error("unexpected error serving an HTTP request", exc_info=exc)
    return Problem(code, st.message, st.outcome, extra, headers)


def problem_response(problem: Problem, instance: str = "") -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "outcome": problem.outcome.value,
    }
    if instance:
        body["instance"] = instance
    body.update(problem.extra)
    headers = {"Tadpole-Outcome": problem.outcome.value, **problem.headers}
    return web.Response(
        status=problem.status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_JSON,
        headers=headers,
    )
