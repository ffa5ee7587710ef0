"""The audit trail: every operator action and every refused call, durably, per node.

Each node appends one JSON line per event to ``<data>/audit.log`` (mode 0600):

    {"ts": "2026-12-05T06:50:01.123456Z", "node": "n1", "who": "operator",
     "from": "ipv4:127.0.0.1:50412", "action": "/tadpole.v1.Keys/Rotate",
     "result": "ok", "detail": ""}

``who`` is the caller as the node knows it: a TLS certificate's name (``node/n2``,
``client/ops``), ``operator`` for the operator credential, ``anonymous`` for none.
``result`` is ``ok``, ``denied`` or the gRPC status the action ended with. Nothing
secret is written: credentials are judged, never recorded.

Writes go through one writer thread that appends everything queued and fsyncs once
(group commit). An operator action's record is durable before the action's answer
leaves the node (:meth:`AuditLog.record_durably`); refused calls are queued without
waiting (:meth:`AuditLog.record`), and if a flood of them fills the queue the excess
is counted (``dropped``) and summarised in the next line written, rather than letting
an unauthenticated sender slow the node down with fsyncs. The file is rotated to
``audit.log.1`` past ``max_bytes``. Nodes are independent: ``tadpole audit tail``
asks every member and merges.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from consensus.durable import fsync_dir
from node.rbac import AUDIT_PREFIX

__all__ = ["AuditExport", "AuditLog", "Ending"]

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000
MAX_BYTES = 64 << 20
DETAIL_MAX = 2000  # characters of an action's detail kept


@dataclass
class Ending:
    """How an audited action ended, when it did not raise (:meth:`AuditLog.action`):
    the body may say otherwise than ``ok`` (a compare that failed changed nothing)."""

    result: str = "ok"
    detail: str = ""


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _raised(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, str(exc)


class AuditLog:
    def __init__(
        self,
        path: str,
        node_id: str,
        *,
        max_bytes: int = MAX_BYTES,
        queue_max: int = QUEUE_MAX,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self.node_id = node_id
        self._max_bytes = max_bytes
        self._queue_max = queue_max
        self._clock_ns = clock_ns
        self._cond = threading.Condition()
        # (line, loop and future to settle once it is durable, or None)
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._closing = False
        self.dropped = 0  # refused-call records not written: the queue was full
        self._dropped_unreported = 0
        self.written: collections.Counter[str] = collections.Counter()  # by result
        # Told of every batch of lines once it is durable, in the writer thread.
        self.listeners: list[Callable[[list[bytes]], None]] = []
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fd = self._open()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def _open(self) -> int:
        new = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if new:
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        return fd

    def _line(self, who: str, peer: str, action: str, result: str, detail: str) -> bytes:
        ts = dt.datetime.fromtimestamp(self._clock_ns() / 1e9, tz=dt.UTC)
        # Every field is bounded: a refusal may quote what a caller sent (a key).
        entry = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "node": self.node_id,
            "who": _cap(who, 200),
            "from": _cap(peer, 100),
            "action": _cap(action, 300),
            "result": _cap(result, 64),
            "detail": _cap(detail, DETAIL_MAX),
        }
        return json.dumps(entry, separators=(",", ":")).encode() + b"\n"

    def record(self, who: str, peer: str, action: str, result: str, detail: str = "") -> None:
        """Queue a record without waiting (refused calls). Thread-safe."""
        line = self._line(who, peer, action, result, detail)
        with self._cond:
            if len(self._queue) >= self._queue_max:
                self.dropped += 1
                self._dropped_unreported += 1
                return
            self._queue.append((line, None))
            self._cond.notify()

    async def record_durably(
        self, who: str, peer: str, action: str, result: str, detail: str = ""
    ) -> None:
        """Append a record and return once it is fsynced (operator actions)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        line = self._line(who, peer, action, result, detail)
        with self._cond:
            self._queue.append((line, (loop, done)))
            self._cond.notify()
        await done

    @contextlib.asynccontextmanager
    async def action(
        self,
        who: str,
        peer: str,
        action: str,
        detail: str = "",
        *,
        failed: Callable[[BaseException], tuple[str, str]] = _raised,
    ) -> AsyncIterator[Ending]:
        """An admin action: a ``started`` record, durable before the body runs (a crash
        mid-action, or a failed write of the outcome, still leaves the attempt on
        record), then how it ended, durable before this returns or re-raises —
        ``failed`` names the result and detail of what the body raised."""
        await self.record_durably(who, peer, action, "started", detail)
        ending = Ending(detail=detail)
        try:
            yield ending
        except BaseException as exc:
            result, why = failed(exc)
            await self.record_durably(who, peer, action, result, why)
            raise
        await self.record_durably(who, peer, action, ending.result, ending.detail)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=5)
        os.close(self._fd)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
                batch = list(self._queue)
                self._queue.clear()
                dropped, self._dropped_unreported = self._dropped_unreported, 0
            lines = [line for line, _ in batch]
            if dropped:
                lines.append(
                    self._line("-", "-", "audit", "dropped", f"{dropped} refused-call records")
                )
            error: BaseException | None = None
            try:
                data = memoryview(b"".join(lines))
                while data:  # a short write (a full disk) must not pass for durable
                    data = data[os.write(self._fd, data) :]
                os.fsync(self._fd)
                for line in lines:
                    self.written[json.loads(line)["result"]] += 1
            except OSError as exc:
                log.error("audit log %s: %s", self.path, exc)
                error = exc
            if error is None:
                self._tell(lines)
            for _, waiter in batch:
                if waiter is not None:
                    loop, future = waiter
                    with contextlib.suppress(RuntimeError):  # the waiter's loop has closed
                        loop.call_soon_threadsafe(_settle, future, error)
            try:
                self._maybe_rotate()
            except OSError as exc:  # keep writing to the current file
                log.error("audit log %s: cannot rotate: %s", self.path, exc)

    def _tell(self, lines: list[bytes]) -> None:
        for listener in self.listeners:
            try:
                listener(lines)
            except Exception:  # a listener's fault must not stop the trail
                log.exception("audit listener failed")

    def _maybe_rotate(self) -> None:
        if os.fstat(self._fd).st_size < self._max_bytes:
            return
        os.replace(self.path, self.path + ".1")
        fresh = self._open()  # if this fails, the old descriptor still works (audit.log.1)
        old, self._fd = self._fd, fresh
        os.close(old)

    def tail(self, limit: int, *, skip: Callable[[dict[str, Any]], bool] | None = None
             ) -> list[dict[str, Any]]:  # fmt: skip
        """The last ``limit`` records (without those ``skip`` says), oldest first; this
        file only, read backwards in 64 KiB steps."""
        if limit <= 0:
            return []
        found: list[dict[str, Any]] = []
        with open(self.path, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            rest = b""  # the start of the line cut by the last step
            while pos > 0 and len(found) < limit:
                step = min(pos, 1 << 16)
                pos -= step
                f.seek(pos)
                lines = (f.read(step) + rest).split(b"\n")
                rest = lines.pop(0) if pos > 0 else b""
                for line in reversed(lines):
                    record = _parse(line)
                    if record is not None and not (skip and skip(record)):
                        found.append(record)
                        if len(found) == limit:
                            break
        return found[::-1]


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a line torn by a crash mid-append
    return record if isinstance(record, dict) else None


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class AuditExport:
    """A copy of this node's audit trail in the system tier's event log, for whoever
    reads the event log (``GET /api/v1/events?prefix=/tadpole/audit/``, SSE, a gRPC
    Watch) rather than asking every node (``tadpole audit tail``).

    Each batch of records, once durable in the file, is written as the value of
    ``/tadpole/audit/<node>`` (``{"node", "records", "skipped"}``): the key holds the
    newest batch, the event log every batch in order. At most one write every
    ``interval_s``, of at most ``batch_max`` records and ``batch_bytes``, so a flood of
    refused calls costs the cluster one Raft write a second per node, not one per call
    (and no more than a bounded value each): records beyond
    ``pending_max`` waiting are counted in the next batch's ``skipped`` (the file keeps
    them all). A batch that cannot be written (no leader) is tried again; one whose
    outcome is unknown may be written twice, so consumers see each record at least once
    while the node runs. The file is the record; this is its feed."""

    def __init__(
        self,
        audit: AuditLog,
        write: Callable[[str, bytes], Any],
        *,
        interval_s: float = 1.0,
        batch_max: int = 500,
        batch_bytes: int = 256 << 10,
        pending_max: int = 5000,
    ) -> None:
        self.key = AUDIT_PREFIX + audit.node_id
        self._audit = audit
        self._write = write  # async (key, value): a system-tier put
        self._interval_s = interval_s
        self._batch_max = batch_max
        self._batch_bytes = batch_bytes
        self._pending_max = pending_max
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._skipped = 0  # not yet reported in a batch
        self.exported = 0
        self.skipped = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._audit.listeners.append(self._durable)
        self._task = self._loop.create_task(self._run(), name="audit-export")

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._audit.listeners.remove(self._durable)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _durable(self, lines: list[bytes]) -> None:  # the writer thread
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self.add, lines)

    def add(self, lines: list[bytes]) -> None:
        """Queue records (JSON lines) for the next batch."""
        for line in lines:
            record = _parse(line.rstrip(b"\n"))
            if record is None:
                continue
            if len(self._pending) >= self._pending_max:
                self._skipped += 1
                self.skipped += 1
            else:
                self._pending.append(record)
        self._wake.set()

    def next_batch(self) -> tuple[bytes, int] | None:
        """The next value to write and how many pending records it carries (None:
        nothing to write)."""
        if not self._pending and not self._skipped:
            return None
        records: list[dict[str, Any]] = []
        size = 0
        for record in itertools.islice(self._pending, self._batch_max):
            size += len(json.dumps(record, separators=(",", ":"))) + 1
            if records and size > self._batch_bytes:
                break  # a record is bounded (AuditLog._line), so one always fits
            records.append(record)
        doc = {"node": self._audit.node_id, "records": records, "skipped": self._skipped}
        return json.dumps(doc, separators=(",", ":")).encode(), len(records)

    def written(self, count: int, skipped: int) -> None:
        """The batch of ``count`` records (reporting ``skipped``) is in the event log."""
        for _ in range(count):
            self._pending.popleft()
        self._skipped -= skipped
        self.exported += count

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (batch := self.next_batch()) is not None:
                value, count = batch
                skipped = self._skipped
                try:
                    await self._write(self.key, value)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # no leader now: the same records, later
                    log.debug("audit export: %s", exc)
                else:
                    self.written(count, skipped)
                await asyncio.sleep(self._interval_s)
