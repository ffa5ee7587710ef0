"""Runs lifecycle operations (:mod:`node.ledger.lifecycle`) as system-tier transactions.

One run of an operation:

1. run it against the records fetched so far; each :class:`NeedKeys` it raises is
   fetched (local reads on the first try, linearizable ones after a conflict) and the
   operation runs again from the start;
2. commit what it wrote, plus its outbox event, in one transaction whose compares
   hold every record it read at the revision it was read (absent: version 0);
3. a failed compare means another change got in between: fetch again, run again.

Each attempt's transaction carries a request id derived from the call's own
(``<id>/<attempt>``), so a client resending a call whose answer it lost walks the
same ids: an attempt that was applied answers its first result instead of applying
again, and an event is never doubled. Lifecycle writes on one node take one lock:
they nearly all touch a pool record, and running them one at a time saves the
conflicts (each a wasted Raft round) that racing them would cost.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
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
from node.errors import Unavailable
from node.ledger import lifecycle as lc

__all__ = ["Lifecycle", "decode", "encode"]

MAX_ATTEMPTS = 16
MAX_FETCHES = 64  # NeedKeys rounds in one attempt: an operation reads a bounded set
RESENDS = 2  # an attempt whose outcome is unknown is resent (same request id) this often


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes) -> Any:
    return json.loads(raw)


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
        self._lock = asyncio.Lock()
        self.conflicts = 0  # attempts lost to a concurrent change (a metric)

    async def run(
        self, op: Callable[[lc.Tx], dict[str, Any]], *, request_id: str = ""
    ) -> tuple[dict[str, Any], int]:
        """(the operation's answer, the revision it committed at or read)."""
        base = request_id or uuid.uuid4().hex
        async with self._lock:
            linearizable = False
            for attempt in range(MAX_ATTEMPTS):
                event_id = f"{base}/{attempt}"
                tx, answer, revs, read_rev = await self._run_once(op, event_id, linearizable)
                event = tx.event()
                if not tx.writes and event is None:
                    if linearizable:
                        return answer, read_rev
                    linearizable = True  # a no-change answer must not come from a stale read
                    continue
                txn = self._txn(tx, revs, event)
                result = await self._commit(txn)
                if result is not None:
                    return answer, result
                self.conflicts += 1
                linearizable = True
        raise Unavailable(
            f"the lifecycle change lost to concurrent changes {MAX_ATTEMPTS} times; try again"
        )

    async def _run_once(
        self, op: Callable[[lc.Tx], dict[str, Any]], event_id: str, linearizable: bool
    ) -> tuple[lc.Tx, dict[str, Any], dict[str, int], int]:
        """Run the operation, fetching what it asks for, until it runs to the end."""
        fetched: dict[str, Any] = {}
        revs: dict[str, int] = {}
        read_rev = 0
        for _ in range(MAX_FETCHES):
            tx = lc.Tx(fetched, self.clock(), event_id)
            try:
                return tx, op(tx), revs, read_rev
            except lc.NeedKeys as need:
                kvs, read_rev = await self._fetch(need.keys, linearizable)
                for key in need.keys:
                    kv = kvs.get(key)
                    fetched[key] = None if kv is None else decode(kv.value)
                    revs[key] = 0 if kv is None else kv.mod_revision
        raise Unavailable("a lifecycle operation asked for too many records")

    async def _fetch(
        self, keys: tuple[str, ...], linearizable: bool
    ) -> tuple[dict[str, KeyValue], int]:
        if not linearizable:
            found: dict[str, KeyValue] = {}
            revision = 0
            for key in keys:
                kv, revision = await self.system.get(
                    key, linearizable=False, timeout=self.timeout_s
                )
                if kv is not None:
                    found[key] = kv
            return found, revision
        # Several records in one linearizable round: a read-only transaction.
        result = await self.system.txn(Txn(success=tuple(GetOp(k) for k in keys)), self.timeout_s)
        return {kv.key: kv for r in result.results for kv in r.kvs}, result.revision

    def _txn(self, tx: lc.Tx, revs: dict[str, int], event: dict[str, Any] | None) -> Txn:
        compares = []
        for key in sorted(tx.read_keys):
            rev = revs.get(key, 0)
            if rev:
                compares.append(Compare(key, CompareTarget.MOD, CompareOp.EQUAL, rev))
            else:
                compares.append(Compare(key, CompareTarget.VERSION, CompareOp.EQUAL, 0))
        ops: list[PutOp | DeleteOp] = []
        for key, value in tx.writes.items():
            ops.append(DeleteOp(key) if value is None else PutOp(key, encode(value)))
        if event is not None:
            ops.append(PutOp(lc.OUTBOX + outbox_name(tx.now, tx.event_id), encode(event)))
        return Txn(tuple(compares), tuple(ops), (), tx.event_id)

    async def _commit(self, txn: Txn) -> int | None:
        """The revision it committed at; None when a compare failed."""
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
