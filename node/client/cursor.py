"""Where a watch stands, so a broken stream resumes without gaps or repeats. No I/O.

Both watch flavours (:class:`~node.client.AsyncWatch`, :class:`~node.client.Watch`) keep
one :class:`WatchCursor`: it builds each (re)connecting request, filters the events of
every response, and decides after a failure whether to reconnect (after how long) or to
give up (with which error).
"""

from __future__ import annotations

import random
from typing import Any

import grpc

from node.client import messages as wire
from node.client.attempts import RetryPolicy
from node.client.errors import (
    Compacted,
    InvalidArgument,
    TadpoleError,
    Unavailable,
    from_rpc_error,
    rpc_code,
    rpc_details,
)
from node.client.types import WatchEvent

__all__ = ["WatchCursor"]


class WatchCursor:
    """The position of one watch.

    After a reconnect the watch restarts at the revision of the last delivered event and
    skips the events of that revision it already delivered (the server replays one
    revision's events in the same order). Not thread-safe: one watch, one consumer.
    """

    def __init__(self, key: str, prefix: bool, start_revision: int, policy: RetryPolicy):
        if start_revision < 0:
            raise InvalidArgument(f"start_revision must be >= 0, got {start_revision}")
        self.key = key
        self.prefix = prefix
        self._start = start_revision
        self._last_rev = 0
        self._delivered_at_last = 0
        self._skip = 0
        self._policy = policy
        self._failures = 0

    def request(self) -> Any:
        """The WatchRequest that (re)opens the stream where the watch stands."""
        start = self._last_rev or self._start
        self._skip = self._delivered_at_last if self._last_rev else 0
        return wire.watch_request(self.key, self.prefix, start)

    def accept(self, resp: Any) -> list[WatchEvent]:
        """Events from one response that were not delivered before. Raises Compacted
        when the server says the start revision is gone."""
        self._failures = 0
        if resp.compact_revision > 0:
            raise Compacted(int(resp.compact_revision))
        out: list[WatchEvent] = []
        for msg in resp.events:
            event = wire.event(msg)
            rev = event.revision
            if self._last_rev and rev < self._last_rev:
                continue
            if self._last_rev and rev == self._last_rev and self._skip > 0:
                self._skip -= 1
                continue
            if rev != self._last_rev:
                self._last_rev, self._delivered_at_last = rev, 0
            self._delivered_at_last += 1
            out.append(event)
        if not self._last_rev and not self._start and resp.header.revision > 0:
            # "From the next change": pin it, so a resume does not miss what came between.
            self._start = int(resp.header.revision) + 1
        return out

    def failed(self, exc: BaseException | None, rng: random.Random) -> float | TadpoleError:
        """Back-off in seconds before reconnecting, or the error to raise. ``exc`` None:
        the server ended the stream."""
        if exc is not None:
            code = rpc_code(exc)
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                return from_rpc_error(exc)
        self._failures += 1
        if self._failures >= self._policy.attempts:
            why = rpc_details(exc) if exc is not None else "the server ended the stream"
            return Unavailable(f"unavailable: watch could not be resumed: {why}")
        return self._policy.backoff_s(self._failures - 1, rng)
