"""The node's one HTTP listener: the state API, the change streams, GraphQL, the
OpenAPI document, Prometheus ``/metrics`` and ``/healthz``, on the node's event loop.

One middleware turns every failure into an RFC 9457 problem document
(:mod:`node.http.problems`), including aiohttp's own (unknown route, wrong method),
so no request ever gets a traceback or an HTML error page. aiohttp's request parser
bounds the request line and each header (8 KiB) before any handler runs; bodies are
bounded by the handlers before they are read (:func:`node.http.requests.json_body`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from consensus.backend import SystemBackend
from node.http.access import Guard, caller_address, common_name, route_of
from node.http.changes import ChangesApi
from node.http.graphql import graphql_view, query_endpoint
from node.http.ledger import LedgerHttp
from node.http.login import login_routes
from node.http.openapi import document
from node.http.problems import Problem, problem_for, problem_response
from node.http.state import ApiConfig, StateApi
from node.http.streams import StreamApi
from node.http.ui import console_routes
from node.observe.http import MetricsEndpoints
from node.observe.view import NodeView
from node.ratelimit import TokenBuckets, client_identity
from node.replication.driver import Replication

__all__ = ["HttpServer", "build_app"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiNode(NodeView, Protocol):
    """What the HTTP listener reads from a running node (``NodeServer`` fits)."""

    @property
    def config(self) -> ApiConfig: ...

    @property
    def system(self) -> SystemBackend: ...

    async def cluster_members(self) -> list[dict[str, Any]]:
        """Every member with its Raft and gossip view (``tadpole members``)."""
        ...


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        detail = f"{request.method} is not served on this path; use {allowed}"
        return problem_response(Problem(405, detail, headers={"Allow": allowed}), request.path)
    except web.HTTPNotFound:
        detail = f"no endpoint {request.path}; the API is described at /api/v1/openapi.json"
        return problem_response(Problem(404, detail), request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(Problem(exc.status, exc.reason), request.path)
    except Exception as exc:
        return problem_response(problem_for(exc), request.path)


def rate_limited(buckets: TokenBuckets) -> Any:
    """Middleware: the per-client rate limit (``node/ratelimit.py``) of the gRPC port,
    the same buckets, on every HTTP request but ``/healthz`` (probes)."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        who = client_identity(common_name(cert), _grpc_style_peer(request.remote or ""))
        wait = buckets.take(who)
        if wait > 0:
            detail = (
                f"rate limit: {who} may make {buckets.rate:g} requests/s (bursts of "
                f"{buckets.burst:g}); retry in {wait:.2f} s"
            )
            retry = {"Retry-After": str(max(1, math.ceil(wait)))}
            return problem_response(Problem(429, detail, headers=retry), request.path)
        return await handler(request)

    return limit


def same_origin(allowed: tuple[str, ...], audit: Any) -> Any:
    """Middleware: a WebSocket that a web page opens (a browser says which, in
    ``Origin``) is refused unless the page is the node's own (the console) or one of
    ``allowed``: a browser holding a client certificate must not let any page it
    visits open a stream in its name. Clients that are not browsers send no
    ``Origin`` and are not asked."""
    permitted = frozenset(o.lower().rstrip("/") for o in allowed)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or request.headers.get("Upgrade", "").lower() != "websocket":
            return await handler(request)
        own = f"{request.scheme}://{request.host}".lower()
        if origin.lower().rstrip("/") in permitted | {own}:
            return await handler(request)
        detail = (
            f"a WebSocket from the page {origin[:100]!r} is refused: not this node's origin "
            "nor one of http_allowed_origins"
        )
        if audit is not None:
            cert = request.transport.get_extra_info("peercert") if request.transport else None
            who = common_name(cert) or "anonymous"
            audit.record(who, caller_address(request), route_of(request), "denied", detail)
        return problem_response(Problem(403, detail), request.path)

    return check


def _grpc_style_peer(remote: str) -> str:
    """``10.0.0.7`` -> ``ipv4:10.0.0.7:0`` (the form gRPC names a peer in), so one
    client counts against one bucket on both ports."""
    return f"ipv6:[{remote}]:0" if ":" in remote else f"ipv4:{remote}:0"


def build_app(node: ApiNode, replication: Replication) -> web.Application:
    middlewares: list[Any] = [problems]
    policy = getattr(node, "policy", None)
    identify = getattr(node, "identify", None)
    if policy is not None and identify is not None:  # inside `problems`: refusals are problems
        guard = Guard(policy, identify, getattr(node, "audit", None))
        middlewares.append(guard.middleware())
    allowed = tuple(getattr(node.config, "http_allowed_origins", ()))
    middlewares.insert(1, same_origin(allowed, getattr(node, "audit", None)))
    buckets = getattr(node, "rate_limits", None)
    if buckets is not None:
        middlewares.insert(0, rate_limited(buckets))
    app = web.Application(middlewares=middlewares)
    state = StateApi(node.config, node.system, replication, node.gossip)
    streams = StreamApi(
        node.system,
        node.config.request_timeout_s,
        write_timeout_s=node.config.http_stream_write_timeout_s,
    )
    graphql = graphql_view(state.docs, node.system, node.gossip, node.config.request_timeout_s)
    query = query_endpoint(state.docs, node.system, node.gossip, node.config.request_timeout_s)
    spec = document()

    async def close_hub(_app: web.Application) -> None:
        await streams.hub.close()

    app.on_cleanup.append(close_hub)

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(spec)

    async def members(_request: web.Request) -> web.Response:
        return web.json_response({"members": await node.cluster_members()})

    app.add_routes(
        [
            *MetricsEndpoints(node).routes(),
            *state.routes(),
            *streams.routes(),
            *ChangesApi(
                replication, write_timeout_s=node.config.http_stream_write_timeout_s
            ).routes(),
            *LedgerHttp(node).routes(),
            *login_routes(node),
            web.get("/api/v1/openapi.json", openapi),
            web.get("/api/v1/members", members),
            *console_routes(),
            web.get("/graphql", graphql),  # also the WebSocket upgrade (subscriptions)
            web.post("/graphql", graphql),
            web.get("/api/v1/query", query),
            web.post("/api/v1/query", query),
        ]
    )
    return app


# How often the HTTPS listener looks for new certificate files (SIGHUP: at once).
TLS_CHECK_S = 5.0


class HttpServer:
    def __init__(self, node: ApiNode, listen: str) -> None:
        self._node = node
        self._listen = listen
        self._runner: web.AppRunner | None = None
        self._tls: Any = None  # the reloading SSL context, when TLS is on
        self._reload_task: asyncio.Task[None] | None = None

    async def _watch_tls(self) -> None:
        while True:
            await asyncio.sleep(TLS_CHECK_S)
            self.reload_tls()

    def reload_tls(self) -> None:
        """Use new certificate files for new HTTPS connections, if they changed."""
        if self._tls is not None:
            self._tls.maybe_reload()

    async def start(self) -> None:
        replication = self._node.replication
        assert replication is not None, "start the CRDT tiers before the HTTP listener"
        self._runner = web.AppRunner(
            build_app(self._node, replication), access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        host, _, port = self._listen.rpartition(":")
        tls = self._node.config.tls()
        context = None
        if tls is not None:
            self._tls = tls.server_context(require_client_auth=self._node.config.client_cert_auth)
            context = self._tls.context
            self._reload_task = asyncio.get_running_loop().create_task(self._watch_tls())
        await web.TCPSite(self._runner, host, int(port), ssl_context=context).start()
        log.info("node %s serving HTTP on %s", self._node.config.node_id, self._listen)

    async def stop(self) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
