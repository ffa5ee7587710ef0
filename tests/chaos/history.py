"""Operation histories recorded by chaos workloads, checked later by pure checkers.

A workload client records every operation it attempts as one :class:`Op`: who did
it, what it was, when it was invoked and when it completed (monotonic ns), and how
it ended:

``ok``
    acknowledged; the operation took effect (a cas swapped, a read returned ``value``).
``fail``
    definitely did not take effect (the server said no, or a cas precondition did
    not hold). Checkers ignore failed operations entirely.
``unknown``
    the client does not know (timeout, connection lost mid-call). The operation may
    take effect at any moment after its invocation, or never; checkers treat its
    completion as +infinity whatever ``complete_ns`` says.

Recording an op as ``fail`` when it might have been applied hides real bugs and
produces false alarms; when in doubt the workload must say ``unknown``.

The :class:`History` container is the only stateful thing here: appendable from
several asyncio tasks or threads, serialisable to JSON lines so a failing run can be
saved next to its logs and re-checked with ``History.load(path)``.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

OpKind = Literal["read", "write", "cas", "add", "sadd", "srem", "lappend", "dpatch", "dread"]
"""``read``/``write``/``cas`` act on a register key; ``add`` is a counter increment
(``value`` = delta) for the CRDT tiers and is only understood by the counter check."""

Outcome = Literal["ok", "fail", "unknown"]

Value = str | int | None
"""A register value. ``None`` means "key absent", which is also every key's initial
value. Values must be JSON scalars (they are saved) and hashable (they are memoised)."""

OP_KINDS: frozenset[str] = frozenset(get_args(OpKind))
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))

FORMAT_NAME = "tadpole-chaos-history"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One completed (or abandoned) client operation.

    Field meaning per kind:

    ======  ===========================  ===============
    kind    ``value``                    ``expected``
    ======  ===========================  ===============
    read    the value returned (ok only)  unused (None)
    write   the value written             unused (None)
    cas     the new value                 the value compared against
    add     the delta (int)               unused (None)
    sadd    the element added (OR-set)    unused (None)
    srem    the element removed           unused (None)
    lappend the entry id appended (log)   unused (None)
    dpatch  the sequence number written   unused (None)
            (agent document, causal)
    dread   the sequence number read      unused (None)
            (ok only)
    ======  ===========================  ===============

    ``complete_ns`` is required for ``ok`` and ``fail``; for ``unknown`` it may hold
    the moment the client gave up (kept for humans) or ``None``.
    """

    process: int | str
    kind: OpKind
    key: str
    value: Value = None
    expected: Value = None
    invoke_ns: int
    complete_ns: int | None
    outcome: Outcome

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"unknown op kind {self.kind!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.outcome != "unknown":
            if self.complete_ns is None:
                raise ValueError(f"{self.outcome} op needs complete_ns")
            if self.complete_ns < self.invoke_ns:
                raise ValueError("complete_ns is before invoke_ns")
        if self.kind == "add" and (not isinstance(self.value, int) or isinstance(self.value, bool)):
            raise ValueError("add needs an int delta as value")
        if self.kind == "dpatch" and not isinstance(self.value, int):
            raise ValueError("dpatch needs the sequence number (an int) as value")
        if self.kind in ("sadd", "srem", "lappend") and not isinstance(self.value, str):
            raise ValueError(f"{self.kind} needs the element or entry id (a str) as value")

    @property
    def end_ns(self) -> float:
        """Completion time for checking: +inf for unknown ops."""
        if self.outcome == "unknown" or self.complete_ns is None:
            return math.inf
        return self.complete_ns

    def describe(self) -> str:
        """Short human form, e.g. ``p3 cas(k1, 4->7) ok [100..250]``."""
        args = f"{self.expected!r}->{self.value!r}" if self.kind == "cas" else repr(self.value)
        end = "?" if self.complete_ns is None else str(self.complete_ns)
        return (
            f"p{self.process} {self.kind}({self.key}, {args}) {self.outcome} "
            f"[{self.invoke_ns}..{end}]"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "kind": self.kind,
            "key": self.key,
            "value": self.value,
            "expected": self.expected,
            "invoke_ns": self.invoke_ns,
            "complete_ns": self.complete_ns,
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Op:
        return cls(
            process=obj["process"],
            kind=obj["kind"],
            key=obj["key"],
            value=obj.get("value"),
            expected=obj.get("expected"),
            invoke_ns=obj["invoke_ns"],
            complete_ns=obj.get("complete_ns"),
            outcome=obj["outcome"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """An invoked, not yet completed operation; returned by :meth:`History.invoke`."""

    id: int
    process: int | str
    kind: OpKind
    key: str
    value: Value
    expected: Value
    invoke_ns: int


class History:
    """An append-only list of :class:`Op`, safe to share between tasks and threads.

    Two ways to record:

    * build the :class:`Op` yourself and :meth:`append` it; or
    * ``p = history.invoke(...)`` before the call and ``history.complete(p, ...)``
      after it. Anything still pending when the workload stops is turned into an
      ``unknown`` op by :meth:`close` — a cancelled client task may still have had
      its write applied, and forgetting it would make the checkers cry wolf.

    List order is the order records arrived and means nothing; checkers use the
    timestamps. All methods take an internal lock, so appends from asyncio tasks on
    one loop and from worker threads are both fine.
    """

    def __init__(
        self, ops: Iterable[Op] = (), *, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self._ops: list[Op] = list(ops)
        self._pending: dict[int, Pending] = {}
        self._next_id = 0
        self._clock = clock
        self._lock = threading.Lock()

    # -- recording ---------------------------------------------------------------

    def append(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)

    def invoke(
        self,
        process: int | str,
        kind: OpKind,
        key: str,
        *,
        value: Value = None,
        expected: Value = None,
    ) -> Pending:
        """Stamp the invocation time now and remember the op as in flight."""
        with self._lock:
            pending = Pending(
                id=self._next_id,
                process=process,
                kind=kind,
                key=key,
                value=value,
                expected=expected,
                invoke_ns=self._clock(),
            )
            self._next_id += 1
            self._pending[pending.id] = pending
            return pending

    def complete(self, pending: Pending, outcome: Outcome, *, result: Value = None) -> Op:
        """Stamp the completion time now and record the op.

        ``result`` is the value a read returned; it is ignored for other kinds.
        Raises ``KeyError`` if ``pending`` was already completed or closed.
        """
        with self._lock:
            del self._pending[pending.id]
            op = Op(
                process=pending.process,
                kind=pending.kind,
                key=pending.key,
                value=result if pending.kind in ("read", "dread") else pending.value,
                expected=pending.expected,
                invoke_ns=pending.invoke_ns,
                complete_ns=self._clock(),
                outcome=outcome,
            )
            self._ops.append(op)
            return op

    def close(self) -> list[Op]:
        """Record every still-pending op as ``unknown``; returns those ops."""
        with self._lock:
            now = self._clock()
            closed = [
                Op(
                    process=p.process,
                    kind=p.kind,
                    key=p.key,
                    value=p.value,
                    expected=p.expected,
                    invoke_ns=p.invoke_ns,
                    complete_ns=now,
                    outcome="unknown",
                )
                for p in self._pending.values()
            ]
            self._pending.clear()
            self._ops.extend(closed)
            return closed

    # -- reading -----------------------------------------------------------------

    @property
    def ops(self) -> tuple[Op, ...]:
        """A snapshot of the recorded ops."""
        with self._lock:
            return tuple(self._ops)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def by_key(self) -> dict[str, list[Op]]:
        """Ops grouped per key, each group sorted by invocation time."""
        groups: dict[str, list[Op]] = {}
        for op in sorted(self.ops, key=lambda o: (o.invoke_ns, o.end_ns)):
            groups.setdefault(op.key, []).append(op)
        return groups

    # -- JSON lines ----------------------------------------------------------------

    def write_jsonl(self, fp: TextIO) -> None:
        """A header line, then one JSON object per op. Pending ops are not written."""
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        fp.write(json.dumps(header) + "\n")
        for op in self.ops:
            fp.write(json.dumps(op.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def read_jsonl(cls, fp: TextIO) -> History:
        """Inverse of :meth:`write_jsonl`; the header line is optional.

        Raises ``ValueError`` on an unknown format version or a malformed op.
        """
        ops: list[Op] = []
        for lineno, line in enumerate(fp, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if "format" in obj:
                if obj["format"] != FORMAT_NAME or obj.get("version") != FORMAT_VERSION:
                    raise ValueError(f"line {lineno}: unsupported history header {obj!r}")
                continue
            try:
                ops.append(Op.from_json(obj))
            except (KeyError, TypeError) as exc:
                raise ValueError(f"line {lineno}: malformed op {obj!r}") from exc
        return cls(ops)

    def dumps(self) -> str:
        buf = io.StringIO()
        self.write_jsonl(buf)
        return buf.getvalue()

    @classmethod
    def loads(cls, text: str) -> History:
        return cls.read_jsonl(io.StringIO(text))

    def save(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as fp:
            self.write_jsonl(fp)

    @classmethod
    def load(cls, path: str | Path) -> History:
        with open(path, encoding="utf-8") as fp:
            return cls.read_jsonl(fp)
