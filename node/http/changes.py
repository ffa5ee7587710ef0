"""Change streams of the CRDT tiers: ``/api/v1/changes/{tier}`` (a log page) and
``/api/v1/changes/{tier}/watch`` (Server-Sent Events).

A CRDT-tier change happens on the owners that apply it, not in one log, so each
node keeps a durable change feed of its own store (``TierStore.changes``: a
sequence number per committed change, kept for the newest 100,000). A serving node
reads every live member's feed over the peer port (replica message ``Changes``),
so a subscriber connected to any node sees changes made anywhere.

The cursor is opaque to clients (base64url JSON: member -> [feed id, seq]). Each
entry names its ``node`` and ``seq``, and carries the key's value on that node when
the page was read (a CRDT state: a later entry for the key supersedes an earlier
one). A change is reported once per owner that applied it. Guarantees: resuming
with a cursor, on any node, yields every change each member applied after it, in
that member's order, with nothing skipped; a member that is unreachable keeps its
cursor position and is listed in ``unreachable`` (its changes come when it is
back); a member whose store was created anew (new feed id) is read from its start;
a cursor older than what a member still keeps answers ``410`` naming the member.
The SSE stream polls the feeds every :data:`POLL_S`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from node.errors import InvalidArgument
from node.http.access import access_of
from node.http.problems import Problem
from node.http.requests import int_param
from node.http.streams import HEARTBEAT_S, WRITE_TIMEOUT_S, error_body, sse_response
from node.rbac import Need
from node.replication.driver import MAX_CHANGES_PAGE, Replication
from node.tiers.feed import change_value
from node.tiers.ops import tier_spec
from node.tiers.validation import check_prefix

__all__ = ["POLL_S", "ChangesApi", "decode_cursor", "encode_cursor"]

log = logging.getLogger(__name__)

POLL_S = 0.25

Cursor = dict[str, tuple[str, int]]  # member -> (feed id, seq)


def encode_cursor(cursor: Cursor) -> str:
    body = {m: [f, s] for m, (f, s) in sorted(cursor.items())}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    """A cursor this API issued; 400 otherwise."""
    if len(value) > 16384:
        raise InvalidArgument("the cursor is longer than 16384 characters")
    try:
        body = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument("after is not a cursor this API issued") from exc
    if not isinstance(body, dict):
        raise InvalidArgument("after is not a cursor this API issued")
    cursor: Cursor = {}
    for member, entry in body.items():
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or isinstance(entry[1], bool)
            or not isinstance(entry[1], int)
            or entry[1] < -1
        ):
            raise InvalidArgument(f"after: the entry for {member!r} is not [feed, seq]")
        cursor[str(member)] = (entry[0], entry[1])
    return cursor


@dataclass
class ChangesApi:
    replication: Replication
    poll_s: float = POLL_S
    heartbeat_s: float = HEARTBEAT_S
    write_timeout_s: float = WRITE_TIMEOUT_S

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/changes/{tier}", self.log),
            web.get("/api/v1/changes/{tier}/watch", self.watch),
        ]

    async def page(
        self, tier: str, prefix: str, cursor: Cursor | None, limit: int
    ) -> tuple[list[dict[str, Any]], Cursor, list[str]]:
        """Changes after ``cursor`` (None: from now), the cursor after them, and the
        members that did not answer."""
        r = self.replication
        if cursor is None:
            pages = await r.changes(tier, prefix, {m: -1 for m in r.live()}, 1)
            start: Cursor = {m: (p.feed, p.through) for m, p in pages.items() if p is not None}
            return [], start, sorted(m for m, p in pages.items() if p is None)
        pages = await r.changes(tier, prefix, {m: s for m, (_, s) in cursor.items()}, limit)
        renewed = [
            m for m, p in pages.items() if p is not None and m in cursor and p.feed != cursor[m][0]
        ]
        if renewed:  # a store created anew: its feed starts over
            pages.update(await r.changes(tier, prefix, {}, limit, members=renewed))
        changes: list[dict[str, Any]] = []
        after = dict(cursor)
        unreachable = []
        for member, page in sorted(pages.items()):
            if page is None:
                unreachable.append(member)
                continue
            since = cursor[member][1] if member in cursor and member not in renewed else None
            if since is not None and since < page.trimmed:
                raise Problem(
                    410,
                    f"{member} no longer keeps changes after seq {since} (its feed now starts "
                    f"after {page.trimmed}); re-read the keys and follow from a new cursor",
                    extra={"node": member, "trimmed": page.trimmed},
                )
            for seq, key, state in page.entries:
                kind, value = change_value(tier, key, state)
                changes.append(
                    {"node": member, "seq": seq, "key": key, "type": kind, "value": value}
                )
            after[member] = (page.feed, page.through)
        # Members the cursor follows that gossip no longer lists keep their position.
        unreachable += [m for m in cursor if m not in pages]
        return changes, after, sorted(unreachable)

    @staticmethod
    def _params(request: web.Request) -> tuple[str, str, int]:
        tier = request.match_info["tier"]
        tier_spec(tier)
        prefix = request.query.get("prefix", "")
        check_prefix(prefix)
        limit = int_param(request, "limit", 100, lo=1, hi=MAX_CHANGES_PAGE)
        return tier, prefix, limit

    async def log(self, request: web.Request) -> web.Response:
        """``GET /api/v1/changes/{tier}?after=CURSOR&prefix=P&limit=N``; without
        ``after``, from the oldest change each member keeps; ``after=now`` gives only a
        cursor (start following from here)."""
        tier, prefix, limit = self._params(request)
        raw = request.query.get("after", "")
        cursor: Cursor | None = {} if not raw else None if raw == "now" else decode_cursor(raw)
        changes, after, unreachable = await self.page(tier, prefix, cursor, limit)
        return web.json_response(
            {"changes": changes, "cursor": encode_cursor(after), "unreachable": unreachable}
        )

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """The same as Server-Sent Events: each ``changes`` event's id is the cursor
        after it (``Last-Event-ID`` resumes, on any node); from now when none is given."""
        tier, prefix, limit = self._params(request)
        access = access_of(request)
        recheck = access.watching([Need("read", tier, prefix, True)]) if access else None
        raw = request.headers.get("Last-Event-ID") or request.query.get("after")
        cursor: Cursor | None = decode_cursor(raw) if raw else None
        changes, cursor, _ = await self.page(tier, prefix, cursor, limit)  # 410/400 as HTTP
        response = await sse_response(request)
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        try:
            await self._send(response, f"id: {encode_cursor(cursor)}\nevent: ready\ndata: {{}}\n\n")
            while True:
                if changes:
                    data = json.dumps({"changes": changes})
                    await self._send(
                        response, f"id: {encode_cursor(cursor)}\nevent: changes\ndata: {data}\n\n"
                    )
                    quiet_since = loop.time()
                elif loop.time() - quiet_since > self.heartbeat_s:
                    await self._send(response, ": keepalive\n\n")
                    quiet_since = loop.time()
                await asyncio.sleep(self.poll_s)
                try:
                    changes, cursor, _ = await self.page(tier, prefix, cursor, limit)
                    if changes and recheck is not None:  # a role taken away ends it here
                        recheck()
                except Exception as exc:  # told to the subscriber, then the stream ends
                    body = error_body(exc)
                    await self._send(response, f"event: error\ndata: {json.dumps(body)}\n\n")
                    return response
        except (ConnectionResetError, TimeoutError, asyncio.CancelledError):
            pass
        return response

    async def _send(self, response: web.StreamResponse, text: str) -> None:
        async with asyncio.timeout(self.write_timeout_s):
            await response.write(text.encode())
