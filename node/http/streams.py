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

A subscriber never costs the node unbounded memory: the stream pulls changes from
the node's history only as fast as the subscriber's socket drains (at most
:data:`QUEUE_BATCHES` revisions wait in memory per subscriber). One that falls so far
behind that its next change has left the history gets an ``error`` event naming the
revision to re-read from and is disconnected; one whose socket stops draining for
:data:`WRITE_TIMEOUT_S` is disconnected.

The CRDT tiers' changes are not streamed yet (see docs/design.md, "HTTP face").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from consensus.backend import SystemBackend
from consensus.errors import CompactedError
from consensus.statemachine import Event
from node.http.problems import Problem, problem_for
from node.http.requests import int_param
from node.tiers.system_json import event_json
from node.tiers.validation import check_key, check_prefix

__all__ = ["HEARTBEAT_S", "QUEUE_BATCHES", "WRITE_TIMEOUT_S", "StreamApi"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies open and finds dead clients
WRITE_TIMEOUT_S = 10.0  # a subscriber whose socket does not drain for this long is cut off
QUEUE_BATCHES = 16  # revisions waiting in memory per subscriber, at most
DEFAULT_EVENTS = 1000
MAX_EVENTS = 10_000


@dataclass
class StreamApi:
    system: SystemBackend
    request_timeout_s: float
    heartbeat_s: float = HEARTBEAT_S
    write_timeout_s: float = WRITE_TIMEOUT_S

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/events", self.events),
            web.get("/api/v1/watch", self.watch),
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

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/watch?prefix=P`` (or ``key=K``) as Server-Sent Events, from
        ``Last-Event-ID`` / ``?after=R``, or from now (a first ``ready`` event then
        carries the current revision as its id)."""
        key, prefix = self._selector(request)
        resume = request.headers.get("Last-Event-ID") or request.query.get("after")
        if resume is not None:
            if not resume.isdigit() or len(resume) > 19:
                raise Problem(400, f"Last-Event-ID/after must be a revision, not {resume[:40]!r}")
            after = int(resume)
        else:
            _, after = await self.system.get(key, linearizable=True, timeout=self.request_timeout_s)
        # Refuse a cursor that is already gone before the 200 goes out: a plain 410.
        await self.system.history(
            key, prefix=prefix, start_revision=after + 1, limit=1, timeout=self.request_timeout_s
        )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[list[Event] | BaseException] = asyncio.Queue(QUEUE_BATCHES)
        pump = asyncio.create_task(self._pump(key, prefix, after + 1, queue))
        try:
            if resume is None:
                await self._send(response, f"id: {after}\nevent: ready\ndata: {{}}\n\n")
            await self._serve(response, queue)
        except (ConnectionResetError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        return response

    async def _pump(
        self, key: str, prefix: bool, start: int, queue: asyncio.Queue[list[Event] | BaseException]
    ) -> None:
        """Pull batches from the backend's watch into the bounded queue (it blocks
        while the queue is full, so a slow subscriber only stalls its own cursor)."""
        watch: AsyncIterator[list[Event]] = self.system.watch(
            key, prefix=prefix, start_revision=start
        )
        try:
            async for batch in watch:
                await queue.put(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await queue.put(exc)

    async def _serve(
        self, response: web.StreamResponse, queue: asyncio.Queue[list[Event] | BaseException]
    ) -> None:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), self.heartbeat_s)
            except TimeoutError:
                await self._send(response, ": keepalive\n\n")
                continue
            if isinstance(item, BaseException):
                await self._send_error(response, item)
                return
            revision = item[-1].kv.mod_revision
            data = json.dumps({"revision": revision, "events": [event_json(e) for e in item]})
            await self._send(response, f"id: {revision}\nevent: change\ndata: {data}\n\n")

    async def _send(self, response: web.StreamResponse, text: str) -> None:
        await asyncio.wait_for(response.write(text.encode()), self.write_timeout_s)

    async def _send_error(self, response: web.StreamResponse, exc: BaseException) -> None:
        problem = problem_for(exc)
        body: dict[str, Any] = {
            "status": problem.status,
            "detail": problem.detail,
            **problem.extra,
        }
        if isinstance(exc, CompactedError):
            body["detail"] = (
                "this subscriber fell behind the history the node keeps; re-read the state "
                f"and watch again from its revision (history starts after {exc.compact_revision})"
            )
        log.info("closing an SSE watch: %s", body["detail"])
        await self._send(response, f"event: error\ndata: {json.dumps(body)}\n\n")
