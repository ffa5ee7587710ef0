"""The ledger's exporter and the TTL sweeper: background work of the Raft leader.

**Exporter** (the transactional outbox). Lifecycle changes put their ledger rows in
outbox events in the system tier, in the same transaction as the change
(:mod:`node.ledger.service`). The exporter reads the events after the database's
cursor, in revision order, and applies them with the cursor in one SQL transaction
(:class:`~node.ledger.sink.Sink`). So:

* the cluster never waits for the database: a slow or stopped database only grows
  the lag (``tadpole_ledger_lag_seconds``: the age of the oldest event not yet in
  the database), which drains when it answers again;
* each event has exactly one effect, across exporter crashes and leader changes (the
  cursor moves with the rows, conditionally);
* a new, empty database replays every event still retained (``retain_s``).

Events come from the system tier's change history (cheap, in revision order); when
the exporter fell further behind than the history reaches, from a scan of the outbox
itself, which holds every event not yet pruned. Exported events older than
``retain_s`` are pruned.

**Sweeper.** Live workers and tadpoles are indexed by expiry time
(``expiry/<ms>/…``); each round expires the due ones through the same lifecycle
transactions, so a unit expires and its allocation is released exactly once even
when two leaders' sweepers overlap or a leader dies mid-round.

Only the leader runs them (checked every round, so they move with leadership); the
correctness above never depends on that, only the work saved does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consensus.backend import SystemBackend
from consensus.errors import CompactedError, ConsensusError
from consensus.statemachine import DeleteOp, EventType, Txn
from node.errors import NodeError
from node.ledger import lifecycle as lc
from node.ledger.service import DEDUP_INDEX, DEDUP_S, Lifecycle, decode, dedup_marker

__all__ = ["ExportStatus", "Exporter"]

log = logging.getLogger(__name__)

BATCH = 512  # events per SQL transaction
SWEEP_BATCH = 128  # units expired per round, at most
PRUNE_EVERY_S = 10.0
PRUNE_PAGE = 256  # keys of each kind deleted per transaction
SAFETY_S = 30.0  # export even without a wake-up this often (a watch that missed one)


@dataclass(frozen=True, slots=True)
class ExportStatus:
    database: str  # the URL without its password
    running: bool  # this node is the one exporting (the leader)
    cursor: int  # the revision of the last event in the database
    lag_s: float  # age of the oldest event not yet in the database (0: none)
    exported: int  # events applied by this node since it started
    expired: int  # units the sweeper expired on this node since it started
    last_error: str  # what the last failed round said ("" = none since)


class Exporter:
    def __init__(
        self,
        system: SystemBackend,
        lifecycle: Lifecycle,
        url: str,
        *,
        is_leader: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        interval_s: float = 1.0,
        retain_s: float = 7 * 86_400,
        timeout_s: float = 5.0,
    ) -> None:
        self.system = system
        self.lifecycle = lifecycle
        self.url = url
        self.is_leader = is_leader
        self.clock = clock
        self.interval_s = interval_s
        self.retain_s = retain_s
        self.timeout_s = timeout_s
        self._sink: Any = None  # node.ledger.sink.Sink, imported on first use
        self._cursor: int | None = None  # None: read it from the database
        self._known_cursor = 0  # the last cursor seen (the lag while the database is away)
        self._lag_s = 0.0
        self._exported = 0
        self._expired = 0
        self._last_error = ""
        self._running = False
        self._pruned_at = 0.0
        self._wake = asyncio.Event()
        self.more = False  # the last export left events behind
        self._exporting = asyncio.Lock()  # one export at a time (rounds, catch_up)
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle of the task

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-exporter")
        self._watcher = asyncio.create_task(self._watch(), name="ledger-outbox-watch")

    async def close(self) -> None:
        for task in (self._task, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._sink is not None:
            await asyncio.to_thread(self._sink.close)

    def status(self) -> ExportStatus:
        shown = self._sink.shown if self._sink is not None else _hide_password(self.url)
        return ExportStatus(
            shown,
            self._running,
            self._cursor or 0,
            self.lag_s(),
            self._exported,
            self._expired,
            self._last_error,
        )

    def lag_s(self) -> float:
        return self._lag_s

    async def _watch(self) -> None:
        """Wake the exporter when an event lands (rather than polling the outbox)."""
        while True:
            try:
                async for _batch in self.system.watch(lc.OUTBOX, prefix=True, start_revision=0):
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a backend restarting: watch again shortly
                log.debug("ledger outbox watch ended: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def _run(self) -> None:
        """Sweep every round (a local read); export when an event landed, when this
        node has just become leader, after a failure, and every SAFETY_S anyway."""
        exported_at = 0.0
        while True:
            woke = False
            with contextlib.suppress(TimeoutError):
                woke = await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            if not self.is_leader():
                self._running = False
                self._lag_s = 0.0  # the leader's to measure
                self._cursor = None  # another exporter moves it meanwhile
                continue
            now = time.monotonic()
            due = woke or not self._running or bool(self._last_error)
            due = due or now - exported_at >= SAFETY_S
            self._running = True
            if due:
                exported_at = now
            await self.round(export=due)

    async def round(self, *, export: bool = True) -> None:
        """Sweep, then (``export``) export everything pending and prune; a failure is
        kept for status and the lag is measured without the database."""
        try:
            await self.sweep()
            if not export:
                return
            async with self._exporting:
                await self.export_all()
            await self.prune()
            self._last_error = ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database or the cluster: try again next round
            message = f"{type(exc).__name__}: {exc}"
            if message != self._last_error:
                log.warning("ledger export: %s", message)
            self._last_error = message
            self._cursor = None
            await self._measure_lag()

    async def _measure_lag(self) -> None:
        """While the database is unreachable: the age of the oldest event after the
        last cursor this node saw (until it has seen one, after the oldest event
        retained, which may overstate the lag)."""
        try:
            events, _more = await self.pending(self._known_cursor, 1)
        except Exception as exc:
            log.debug("ledger lag: %s", exc)
            return
        self._lag_s = max(0.0, self.clock() - float(events[0][1]["at"])) if events else 0.0

    # -- one round, each step callable on its own (tests)

    async def catch_up(self) -> None:
        """Export everything committed so far (a report then reads every change
        acknowledged before it was asked for). Database errors propagate."""
        async with self._exporting:
            await self.export_all()

    async def engine(self) -> Any:
        """The database's engine (a SQLAlchemy Engine), the ledger created or
        upgraded on first use."""
        if self._sink is None:
            from node.ledger.sink import Sink  # SQLAlchemy: loaded when the ledger is used

            sink = Sink(self.url)
            await asyncio.to_thread(sink.open)
            self._sink = sink
        return self._sink.engine

    async def export(self) -> int:
        """Apply the next events to the database; how many were applied (0 also when
        another exporter had moved the cursor). ``self.more``: events may be left."""
        self.more = False
        if self._sink is None:  # no database opened (nor SQLAlchemy loaded) for no events
            page = await self.system.range(
                lc.OUTBOX, limit=1, start_after="", linearizable=False, timeout=self.timeout_s
            )
            if not page.kvs:
                return 0
        await self.engine()
        if self._cursor is None:
            self._cursor = int(await asyncio.to_thread(self._sink.cursor))
        cursor: int = self._cursor
        self._known_cursor = cursor
        events, more = await self.pending(cursor, BATCH)
        if not events:
            self._lag_s = 0.0
            return 0
        self._lag_s = max(0.0, self.clock() - float(events[0][1]["at"]))
        if not await asyncio.to_thread(self._sink.apply, events, cursor):
            self._cursor = None  # someone else exported them: read where it stands
            self.more = True
            return 0
        self._cursor = self._known_cursor = events[-1][0]
        self._exported += len(events)
        self.more = more
        # Still behind: at least as far as the newest event just applied.
        self._lag_s = max(0.0, self.clock() - float(events[-1][1]["at"])) if more else 0.0
        return len(events)

    async def export_all(self) -> None:
        """Export until nothing is left (or another exporter took over)."""
        while await self.export() and self.more:
            pass

    async def pending(
        self, cursor: int, limit: int
    ) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """(events after revision ``cursor``, oldest first, about ``limit`` of them and
        never part of a revision; whether more may follow)."""
        start = cursor + 1
        try:
            while True:
                changes, through, more = await self.system.history(
                    lc.OUTBOX, prefix=True, start_revision=start, limit=limit,
                    timeout=self.timeout_s,
                )  # fmt: skip
                puts = [
                    (e.kv.mod_revision, decode(e.kv.value))
                    for e in changes
                    if e.type == EventType.PUT
                ]
                if puts or not more:
                    return sorted(puts, key=_order), more
                start = through + 1  # a page of nothing but pruning: look past it
        except CompactedError:
            return await self._scan(cursor, limit)

    async def _scan(self, cursor: int, limit: int) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """The events after ``cursor`` from the outbox itself (the history no longer
        reaches back to them): every event not yet pruned is there."""
        found: list[tuple[int, dict[str, Any]]] = []
        after = ""
        while True:
            page = await self.system.range(
                lc.OUTBOX, limit=1000, start_after=after, linearizable=True, timeout=self.timeout_s
            )
            found.extend(
                (kv.mod_revision, decode(kv.value)) for kv in page.kvs if kv.mod_revision > cursor
            )
            if not page.more or not page.kvs:
                break
            after = page.kvs[-1].key
        found.sort(key=_order)
        end = min(limit, len(found))
        while 0 < end < len(found) and found[end][0] == found[end - 1][0]:
            end += 1  # never cut a revision: the cursor moves by whole revisions
        return found[:end], end < len(found)

    async def prune(self, *, force: bool = False) -> int:
        """Delete exported events older than ``retain_s`` and resend markers older than
        DEDUP_S, oldest first, page after page until none is due; how many keys."""
        now = self.clock()
        if not force and now - self._pruned_at < PRUNE_EVERY_S:
            return 0
        self._pruned_at = now
        total = 0
        while True:
            events, markers = await self._due(now)
            doomed = events + [k for index in markers for k in (index, dedup_marker(index))]
            if doomed:
                await self.system.txn(
                    Txn(success=tuple(DeleteOp(k) for k in doomed)), self.timeout_s
                )
                total += len(doomed)
            if len(events) < PRUNE_PAGE and len(markers) < PRUNE_PAGE:
                return total

    async def _due(self, now: float) -> tuple[list[str], list[str]]:
        """A page of outbox keys and of resend-marker index keys due for pruning."""
        events: list[str] = []
        if self.retain_s > 0 and self._cursor is not None:
            page = await self.system.range(
                lc.OUTBOX, limit=PRUNE_PAGE, start_after="", linearizable=False,
                timeout=self.timeout_s,
            )  # fmt: skip
            for kv in page.kvs:
                event = decode(kv.value)
                if kv.mod_revision > self._cursor or float(event["at"]) > now - self.retain_s:
                    break
                events.append(kv.key)
        page = await self.system.range(
            DEDUP_INDEX,
            limit=PRUNE_PAGE,
            start_after="",
            linearizable=False,
            timeout=self.timeout_s,
        )
        old = f"{DEDUP_INDEX}{round((now - DEDUP_S) * 1000):013d}"
        markers = [kv.key for kv in page.kvs if kv.key < old]
        return events, markers

    async def sweep(self) -> int:
        """Expire the workers and tadpoles whose TTL has passed; how many."""
        now = self.clock()
        page = await self.system.range(
            lc.EXPIRY, limit=SWEEP_BATCH, start_after="", linearizable=False, timeout=self.timeout_s
        )
        due = [kv.key for kv in page.kvs if _due_by(kv.key, now)]
        # All at once: the lifecycle driver commits them together.
        answers = await asyncio.gather(
            *(self.lifecycle.run(functools.partial(self._sweep_one, key)) for key in due),
            return_exceptions=True,
        )
        expired = 0
        for key, answer in zip(due, answers, strict=True):
            if isinstance(answer, NodeError | ConsensusError):
                log.debug("sweeping %s: %s", key, answer)
            elif isinstance(answer, BaseException):
                raise answer
            elif answer[0]["expired"]:
                expired += 1
        self._expired += expired
        return expired

    def _sweep_one(self, key: str, tx: lc.Tx) -> dict[str, Any]:
        return lc.sweep_one(tx, key, self.clock())


def _due_by(key: str, now: float) -> bool:
    """Whether expiry entry ``key`` is due by ``now``; a key that is not one (written
    under expiry/ by something else) is never due, and is logged."""
    try:
        return lc.parse_expiry_key(key)[0] <= now
    except ValueError:
        log.warning("ignoring %r under the ledger's expiry index: not an expiry entry", key)
        return False


def _order(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
    """Revision, then the event's place in its transaction (a batch commits many)."""
    return item[0], int(item[1].get("seq", 0))


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
