"""Runs lifecycle operations (:mod:`node.ledger.lifecycle`) as system-tier transactions,
many calls per transaction.

Calls that arrive while a transaction is in flight wait, and then go together: a
**batch** is planned and committed as one transaction (one Raft round for all of
them, as group commit). Planning a batch:

1. each call's operation runs in turn against the records fetched so far, seeing the
   writes of the calls planned before it; each :class:`NeedKeys` it raises is
   fetched (local reads on the first try, linearizable ones after a conflict) and it
   runs again;
2. a call whose operation raises (bad input, a full pool, a backwards transition)
   fails alone: its writes are dropped, but the records it read still count below;
3. the transaction holds every write, one outbox event per call, and a compare on
   every record any call read from the store, at the revision it was read (absent:
   version 0) -- so every answer, a refusal or a "nothing to change" too, is
   checked against the current state when the transaction commits;
4. a failed compare means another change got in between: the whole batch is planned
   again with linearizable reads. Nothing is answered before its batch commits.

**Resends.** A call whose effect a resend would repeat (a worker event, tadpole
metrics: :data:`ONCE`) with a request id leaves a marker
``requests/<id>`` for :data:`DEDUP_S`: a resend within that window finds it and
answers as the first did, applying nothing. The other calls are idempotent by
themselves (assigning an identical job, a transition to the state a record is in,
spawning the same unit again change nothing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus.backend import SystemBackend
from consensus.errors import OutcomeUnknownError, ProposalTimeout
from consensus.statemachine import (
    Compare,
    CompareOp,
    CompareTarget,
    DeleteOp,
    GetOp,
    KeyValue,
    PutOp,
    Txn,
)
from node.errors import NodeError, Unavailable
from node.ledger import lifecycle as lc

__all__ = ["DEDUP_INDEX", "DEDUP_S", "Lifecycle", "decode", "dedup_marker", "encode"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 16
MAX_FETCHES = 64  # NeedKeys rounds for one call: an operation reads a bounded set
MAX_BATCH = 64  # calls per transaction
RESENDS = 2  # a commit whose outcome is unknown is resent (same request id) this often
DEDUP_S = 600.0  # how long a resend of a non-idempotent call is recognised


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes) -> Any:
    return json.loads(raw)


Operation = Callable[[lc.Tx], dict[str, Any]]


@dataclass
class _Call:
    op: Operation
    request_id: str
    once: bool
    future: asyncio.Future[tuple[dict[str, Any], int]]
    # planning results of the current attempt
    tx: lc.Tx | None = None
    answer: dict[str, Any] | None = None
    error: BaseException | None = None
    reads: set[str] = field(default_factory=set)


class Lifecycle:
    def __init__(
        self,
        system: SystemBackend,
        *,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
    ) -> None:
        self.system = system
        self.clock = clock
        self.timeout_s = timeout_s
        self._queue: list[_Call] = []
        self._worker: asyncio.Task[None] | None = None
        self.conflicts = 0  # batches planned again after a concurrent change (a metric)
        self.batches = 0  # transactions committed
        self.calls = 0  # calls answered by them

    async def run(
        self, op: Operation, *, request_id: str = "", once: bool = False
    ) -> tuple[dict[str, Any], int]:
        """(the operation's answer, the revision it committed at). ``once``: a resend
        with the same ``request_id`` must not apply it again."""
        future: asyncio.Future[tuple[dict[str, Any], int]] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append(
            _Call(op, request_id or uuid.uuid4().hex, once and bool(request_id), future)
        )
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="ledger-lifecycle")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = [c for c in self._queue[:MAX_BATCH] if not c.future.done()]
            del self._queue[:MAX_BATCH]
            if not batch:
                continue
            try:
                await self._run_batch(batch)
            except asyncio.CancelledError:
                for call in batch:
                    if not call.future.done():
                        call.future.cancel()
                raise
            except Exception as exc:  # the cluster (no leader, a timeout): all of them
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(exc)

    async def _run_batch(self, batch: list[_Call]) -> None:
        linearizable = False
        known: set[str] = set()  # keys the last attempt read: fetched at once next time
        for attempt in range(MAX_ATTEMPTS):
            fetched: dict[str, Any] = {}
            revs: dict[str, int] = {}
            if known:
                await self._fetch(known, fetched, revs, linearizable)
            overlay: dict[str, Any] = {}
            for call in batch:
                await self._plan(call, attempt, fetched, revs, overlay, linearizable)
            known = set(fetched)
            revision = await self._commit(batch, attempt, revs, overlay)
            if revision is not None:
                self.batches += 1
                self.calls += len(batch)
                for call in batch:
                    if call.future.done():
                        continue
                    if call.error is not None:
                        call.future.set_exception(call.error)
                    else:
                        assert call.answer is not None
                        call.future.set_result((call.answer, revision))
                return
            self.conflicts += 1
            linearizable = True
        raise Unavailable(
            f"lifecycle changes lost to concurrent changes {MAX_ATTEMPTS} times; try again"
        )

    async def _plan(
        self,
        call: _Call,
        attempt: int,
        fetched: dict[str, Any],
        revs: dict[str, int],
        overlay: dict[str, Any],
        linearizable: bool,
    ) -> None:
        """Run one call's operation over the store's records as the calls before it left
        them; on success its writes join ``overlay``."""
        call.tx, call.answer, call.error = None, None, None
        marker = lc.PREFIX + "requests/" + call.request_id
        for _ in range(MAX_FETCHES):
            view = ChainMap(overlay, fetched)
            tx = lc.Tx(view, self.clock(), f"{call.request_id}/{attempt}")
            try:
                if call.once:
                    first = tx.get(marker)
                    if first is not None:  # a resend: answer as the first time
                        call.answer, call.reads = first["answer"], set(tx.read_keys)
                        return
                answer = call.op(tx)
            except lc.NeedKeys as need:
                await self._fetch(need.keys, fetched, revs, linearizable)
                continue
            except NodeError as exc:
                call.error, call.reads = exc, set(tx.read_keys)
                return
            except Exception as exc:  # a bug in one operation: that call fails, not its batch
                log.error("lifecycle operation failed unexpectedly", exc_info=exc)
                call.error, call.reads = exc, set(tx.read_keys)
                return
            call.tx, call.answer, call.reads = tx, answer, set(tx.read_keys)
            if call.once and (tx.writes or tx.event() is not None):
                tx.put(marker, {"answer": answer, "at": tx.now})
                tx.put(_dedup_index(tx.now, call.request_id), {"id": call.request_id})
            overlay.update(tx.writes)
            return
        call.error = Unavailable("a lifecycle operation asked for too many records")

    async def _fetch(
        self, keys: Any, fetched: dict[str, Any], revs: dict[str, int], linearizable: bool
    ) -> None:
        keys = sorted(set(keys) - set(fetched))
        if not keys:
            return
        found: dict[str, KeyValue] = {}
        if linearizable:  # several records in one linearizable round: a read-only txn
            result = await self.system.txn(
                Txn(success=tuple(GetOp(k) for k in keys)), self.timeout_s
            )
            found = {kv.key: kv for r in result.results for kv in r.kvs}
        else:
            for key in keys:
                kv, _rev = await self.system.get(key, linearizable=False, timeout=self.timeout_s)
                if kv is not None:
                    found[key] = kv
        for key in keys:
            kv = found.get(key)
            fetched[key] = None if kv is None else decode(kv.value)
            revs[key] = 0 if kv is None else kv.mod_revision

    def _txn(
        self, batch: list[_Call], attempt: int, revs: dict[str, int], overlay: dict[str, Any]
    ) -> Txn:
        read = set().union(*(c.reads for c in batch))
        compares = []
        for key in sorted(read & set(revs)):  # keys only the batch itself wrote: no compare
            if revs[key]:
                compares.append(Compare(key, CompareTarget.MOD, CompareOp.EQUAL, revs[key]))
            else:
                compares.append(Compare(key, CompareTarget.VERSION, CompareOp.EQUAL, 0))
        ops: list[PutOp | DeleteOp] = [
            DeleteOp(key) if value is None else PutOp(key, encode(value))
            for key, value in overlay.items()
        ]
        for seq, call in enumerate(batch):
            event = call.tx.event() if call.tx is not None else None
            if event is not None:
                # Events of one transaction share a revision; seq keeps their order
                # for an export that reads them back from the outbox (not the history).
                event["seq"] = seq
                key = lc.OUTBOX + outbox_name(call.tx.now, call.tx.event_id)  # type: ignore[union-attr]
                ops.append(PutOp(key, encode(event)))
        # Its own id (a call's could come back in a later batch, as a client's resend):
        # only _commit's resends of this very transaction may be answered from the
        # system tier's deduplication.
        return Txn(tuple(compares), tuple(ops), (), f"batch-{uuid.uuid4().hex}")

    async def _commit(
        self, batch: list[_Call], attempt: int, revs: dict[str, int], overlay: dict[str, Any]
    ) -> int | None:
        """The revision the batch committed at; None when a compare failed."""
        txn = self._txn(batch, attempt, revs, overlay)
        for resend in range(RESENDS + 1):
            try:
                result = await self.system.txn(txn, self.timeout_s)
            except (OutcomeUnknownError, ProposalTimeout):
                if resend == RESENDS:
                    raise
                continue  # the same request id: applied at most once
            return result.revision if result.succeeded else None
        raise AssertionError("unreachable")


def outbox_name(now: float, event_id: str) -> str:
    """Outbox keys sort by time (then id), so retention prunes from the front."""
    return f"{round(now * 1000):013d}-{event_id.replace('/', '.')}"


DEDUP_INDEX = lc.PREFIX + "requests-by-time/"


def _dedup_index(now: float, request_id: str) -> str:
    return f"{DEDUP_INDEX}{round(now * 1000):013d}-{request_id}"


def dedup_marker(index_key: str) -> str:
    """The marker an index key of :func:`_dedup_index` names."""
    return lc.PREFIX + "requests/" + index_key.rsplit("/", 1)[1].split("-", 1)[1]
