"""Change streams of the system tier over HTTP: the event log and Server-Sent Events.

Cursors are store revisions. The system tier's revisions are the Raft log's (or
etcd's) and the same on every node, so a cursor taken on one node resumes on any
other: a consumer that reconnects to another node with ``Last-Event-ID: R`` (SSE)
or ``?after=R`` (event log) gets every change after ``R`` exactly once, in revision
order, with nothing skipped.

History is bounded: each node keeps the last ``raft.watch_history_events`` change
events (default 10,000; etcd keeps what its compaction leaves). A cursor older than
that answers ``410 Gone`` with ``compact_revision``; the consumer re-reads the state
(``GET /state/system`` gives the revision in its ``ETag``) and resumes from there.
Nothing is ever skipped silently.

Every subscriber of a node reads one shared watch (:mod:`node.http.hub`): a ring of
the newest revisions, bounded by count and bytes, encoded once per distinct filter.
A subscriber is a cursor into it, so it costs the node no memory of its own beyond
one page of history while it catches up; it advances only as fast as its socket
drains. One that falls so far behind that its next change has left the node's
history gets an ``error`` event naming the revision to re-read from and is
disconnected; one whose socket stops draining for ``http_stream_write_timeout_s``
(:data:`WRITE_TIMEOUT_S` by default) is disconnected.

WebSocket (``/api/v1/ws``): JSON text frames. The client sends
``{"type": "subscribe", "id": "s1", "prefix": "config/", "after": 41}`` (``key``
instead of ``prefix`` for one key; no ``after`` = from now) and
``{"type": "unsubscribe", "id": "s1"}``; the server answers ``subscribed`` (with the
revision it starts after), ``change`` (``id``, ``revision``, ``events``),
``unsubscribed``, and ``error`` (``id`` when it concerns one subscription, ``status``
and ``detail`` as in a problem document; a subscription that fell behind the history
ends with status 410 and ``compact_revision``, the others go on). At most
:data:`WS_MAX_SUBSCRIPTIONS` per socket; WebSocket pings every :data:`HEARTBEAT_S`.

The CRDT tiers' changes are not streamed yet (see docs/design.md, "HTTP face").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from consensus.backend import SystemBackend
from consensus.errors import CompactedError
from node.http.access import Access, access_of
from node.http.hub import Hub, Subscription
from node.http.problems import Problem, problem_for
from node.http.requests import int_param
from node.rbac import Need
from node.tiers.system_json import event_json
from node.tiers.validation import check_key, check_prefix

__all__ = ["HEARTBEAT_S", "WRITE_TIMEOUT_S", "StreamApi"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies open and finds dead clients
# A subscriber whose socket does not drain for this long is cut off (the default of
# the node setting http_stream_write_timeout_s).
WRITE_TIMEOUT_S = 10.0
WS_MAX_SUBSCRIPTIONS = 32  # per socket
WS_MAX_MESSAGE = 64 << 10  # a client frame larger than this closes the socket
DEFAULT_EVENTS = 1000
MAX_EVENTS = 10_000


@dataclass
class StreamApi:
    system: SystemBackend
    request_timeout_s: float
    heartbeat_s: float = HEARTBEAT_S
    write_timeout_s: float = WRITE_TIMEOUT_S

    def __post_init__(self) -> None:
        self.hub = Hub(self.system, self.request_timeout_s)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/events", self.events),
            web.get("/api/v1/watch", self.watch),
            web.get("/api/v1/ws", self.websocket),
        ]

    @staticmethod
    def _selector(request: web.Request) -> tuple[str, bool]:
        key = request.query.get("key")
        prefix = request.query.get("prefix")
        if key is not None and prefix is not None:
            raise Problem(400, "give key or prefix, not both")
        if key is not None:
            check_key(key)
            return key, False
        check_prefix(prefix or "")
        return prefix or "", True

    async def events(self, request: web.Request) -> web.Response:
        """``GET /api/v1/events?after=R&limit=N&prefix=P``: the changes after ``R``."""
        key, prefix = self._selector(request)
        after = int_param(request, "after", 0)
        limit = int_param(request, "limit", DEFAULT_EVENTS, lo=1, hi=MAX_EVENTS)
        events, through, more = await self.system.history(
            key,
            prefix=prefix,
            start_revision=after + 1,
            limit=limit,
            timeout=self.request_timeout_s,
        )
        body = {
            "events": [event_json(e) for e in events],
            "next_after": max(through, after),
            "more": more,
        }
        return web.json_response(body)

    async def start_after(self, key: str, prefix: bool, after: int | None) -> int:
        """The revision a subscription starts after: ``after``, or now. A cursor whose
        history is gone raises CompactedError here, before anything is streamed."""
        if after is None:
            _, after = await self.system.get(key, linearizable=True, timeout=self.request_timeout_s)
        await self.system.history(
            key, prefix=prefix, start_revision=after + 1, limit=1, timeout=self.request_timeout_s
        )
        return after

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/watch?prefix=P`` (or ``key=K``) as Server-Sent Events, from
        ``Last-Event-ID`` / ``?after=R``, or from now (a first ``ready`` event then
        carries the current revision as its id)."""
        key, prefix = self._selector(request)
        access = access_of(request)
        recheck = access.watching([Need("read", "system", key, prefix)]) if access else None
        resume = request.headers.get("Last-Event-ID") or request.query.get("after")
        if resume is not None and (not resume.isdigit() or len(resume) > 19):
            raise Problem(400, f"Last-Event-ID/after must be a revision, not {resume[:40]!r}")
        after = await self.start_after(key, prefix, int(resume) if resume is not None else None)
        response = await sse_response(request)
        subscription = Subscription(self.hub, key, prefix, after)
        try:
            if resume is None:
                await self._send(response, f"id: {after}\nevent: ready\ndata: {{}}\n\n")
            while True:
                try:
                    change = await subscription.next(self.heartbeat_s)
                    if change is not None and recheck is not None:
                        recheck()  # a role taken away ends the stream here
                except Exception as exc:
                    data = json.dumps(error_body(exc))
                    await self._send(response, f"event: error\ndata: {data}\n\n")
                    return response
                if change is None:
                    await self._send(response, ": keepalive\n\n")
                    continue
                revision, data = change
                await self._send(response, f"id: {revision}\nevent: change\ndata: {data}\n\n")
        except (ConnectionResetError, TimeoutError, asyncio.CancelledError):
            pass
        return response

    async def _send(self, response: web.StreamResponse, text: str) -> None:
        # asyncio.timeout, not wait_for: no task per write (this runs per subscriber
        # per change, so a thousand subscribers pay it a thousand times a write).
        async with asyncio.timeout(self.write_timeout_s):
            await response.write(text.encode())

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``/api/v1/ws``: several subscriptions over one WebSocket (protocol in the
        module docstring of :mod:`node.http.streams`, "WebSocket")."""
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s, max_msg_size=WS_MAX_MESSAGE)
        await ws.prepare(request)
        session = _WsSession(self, ws, access_of(request))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await session.handle(message.data)
                elif message.type == WSMsgType.BINARY:
                    await session.reject(400, "send JSON text frames, not binary")
        except (ConnectionResetError, TimeoutError):
            pass
        finally:
            await session.close()
        return ws


async def sse_response(request: web.Request) -> web.StreamResponse:
    """A prepared ``text/event-stream`` response (no caching, no proxy buffering)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


class _WsSession:
    """The subscriptions of one WebSocket; every frame goes out through :meth:`send`."""

    def __init__(
        self, api: StreamApi, ws: web.WebSocketResponse, access: Access | None = None
    ) -> None:
        self._api = api
        self._ws = ws
        self._access = access  # each subscription is checked against the caller's roles
        self._subs: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        async with self._lock:
            async with asyncio.timeout(self._api.write_timeout_s):
                await self._ws.send_str(text)

    async def reject(self, status: int, detail: str, sub_id: str | None = None) -> None:
        message: dict[str, Any] = {"type": "error", "status": status, "detail": detail}
        if sub_id is not None:
            message["id"] = sub_id
        await self.send(message)

    async def handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return await self.reject(400, "not valid JSON")
        if not isinstance(message, dict):
            return await self.reject(400, "send a JSON object")
        kind, sub_id = message.get("type"), message.get("id")
        if not isinstance(sub_id, str) or not 0 < len(sub_id) <= 64:
            return await self.reject(400, "id must be a string of 1..64 characters")
        if kind == "unsubscribe":
            task = self._subs.pop(sub_id, None)
            if task is not None:
                task.cancel()
            return await self.send({"type": "unsubscribed", "id": sub_id})
        if kind != "subscribe":
            return await self.reject(400, "type must be subscribe or unsubscribe", sub_id)
        if sub_id in self._subs:
            return await self.reject(409, "a subscription with this id is open", sub_id)
        if len(self._subs) >= WS_MAX_SUBSCRIPTIONS:
            detail = f"at most {WS_MAX_SUBSCRIPTIONS} subscriptions per socket"
            return await self.reject(429, detail, sub_id)
        self._subs[sub_id] = asyncio.create_task(self._run(sub_id, message))
        return None

    async def _run(self, sub_id: str, message: dict[str, Any]) -> None:
        try:
            key, prefix = _ws_selector(message)
            recheck = None
            if self._access is not None:  # this subscription's own check
                needs = [Need("read", "system", key, prefix)]
                recheck = self._access.watching(needs, "WS subscribe")
            after = message.get("after")
            if after is not None and (isinstance(after, bool) or not isinstance(after, int)
                                      or after < 0):  # fmt: skip
                raise Problem(400, "after must be a revision (an integer >= 0)")
            start = await self._api.start_after(key, prefix, after)
            await self.send({"type": "subscribed", "id": sub_id, "revision": start})
            subscription = Subscription(self._api.hub, key, prefix, start)
            while True:
                change = await subscription.next(self._api.heartbeat_s)
                if change is None:
                    continue  # the WebSocket's own ping frames keep the socket alive
                _revision, data = change
                if recheck is not None:  # a role taken away ends the subscription
                    recheck()
                # data is {"revision": ..., "events": [...]}, encoded once for every
                # subscriber of this filter: splice the envelope in front of its fields.
                await self.send_text(f'{{"type": "change", "id": {json.dumps(sub_id)}, {data[1:]}')
        except asyncio.CancelledError:
            raise
        except (ConnectionResetError, TimeoutError):
            await self._ws.close()
        except Exception as exc:
            self._subs.pop(sub_id, None)
            with contextlib.suppress(Exception):
                await self.send({"type": "error", "id": sub_id, **error_body(exc)})

    async def close(self) -> None:
        for task in self._subs.values():
            task.cancel()
        for task in self._subs.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._subs.clear()


def _ws_selector(message: dict[str, Any]) -> tuple[str, bool]:
    key, prefix = message.get("key"), message.get("prefix")
    if key is not None and prefix is not None:
        raise Problem(400, "give key or prefix, not both")
    if key is not None:
        if not isinstance(key, str):
            raise Problem(400, "key must be a string")
        check_key(key)
        return key, False
    if prefix is not None and not isinstance(prefix, str):
        raise Problem(400, "prefix must be a string")
    check_prefix(prefix or "")
    return prefix or "", True


def error_body(exc: BaseException) -> dict[str, Any]:
    """What a stream sends before it ends on ``exc`` (the problem's status and fields)."""
    problem = problem_for(exc)
    body: dict[str, Any] = {"status": problem.status, "detail": problem.detail, **problem.extra}
    if isinstance(exc, CompactedError):
        body["detail"] = (
            "this subscriber fell behind the history the node keeps; re-read the state "
            f"and watch again from its revision (history starts after {exc.compact_revision})"
        )
    log.info("ending a change stream: %s", body["detail"])
    return body
