"""Linearizability checker for a key-value register, pure and I/O-free.

Model, per key: the value starts as ``None`` (absent); ``read`` returns the current
value, ``write(v)`` sets it, ``cas(e, n)`` sets it to ``n`` iff it equals ``e``.
Keys are independent, so the history is split per key and each part is checked on
its own (linearizability is compositional) -- this is what keeps the search small.

Per key we run the Wing & Gong search: repeatedly pick an op that may come next (no
other remaining op completed before it was invoked), apply it to the model if the
model allows it, and backtrack on dead ends. Lowe's memoisation records every
(set of linearized ops, model value) already explored, so no configuration is
searched twice. Two sound reductions on top:

* **Reads first.** If a remaining ok read may come next and returns the current
  value, linearizing it now loses nothing (it does not change the value and moving
  it earlier breaks no real-time edge), so we take it without branching.
* **Unobserved unknown ops are dropped.** An ``unknown`` write/cas whose new value
  no read returns and no cas expects can be removed from any valid linearization
  and it stays valid (nobody could tell it happened), so it is never needed.

How each outcome is treated:

* ``ok`` ops must all be linearized between their invocation and completion;
* ``fail`` ops did not take effect and are ignored (so a cas that failed its
  precondition is not used as evidence either -- weaker, but never wrong);
* ``unknown`` writes/cas may take effect at any time after invocation, or never;
  ``unknown``/``fail`` reads constrain nothing and are dropped.

The search has a budget (``max_states`` distinct configurations per key); a key
that exceeds it is reported ``unknown`` instead of running forever.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tests.chaos.history import History, Op, Value

DEFAULT_MAX_STATES = 1_000_000
"""Per key. A state costs ~160 bytes, so this bounds memory near 160 MB (freed after
each key). Linearizable histories with concurrency <= 10 need a few states per op;
refuting one is dearer: a bad read in the middle of 2,000 write-heavy ops from 10
clients on one key took ~350k states (1.5 s)."""

_REGISTER_KINDS = frozenset({"read", "write", "cas"})


class Verdict(StrEnum):
    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"  # search budget exhausted


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a key is not linearizable, from the deepest point the search reached."""

    key: str
    op: Op  # an ok op that could not be linearized next (earliest completion)
    prefix: tuple[Op, ...]  # the longest linearization found, in order
    state: Value  # the register value after ``prefix``

    def explain(self, tail: int = 8) -> str:
        shown = self.prefix[-tail:]
        lines = [
            f"key {self.key!r}: cannot linearize {self.op.describe()}",
            f"  value after {len(self.prefix)} linearized ops: {self.state!r}; last ones:",
        ]
        lines += [f"    {op.describe()}" for op in shown]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class KeyResult:
    key: str
    verdict: Verdict
    states: int  # configurations explored
    violation: Violation | None = None


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    """Overall verdict: a violation on any key wins over ``unknown`` on another."""

    verdict: Verdict
    keys: tuple[KeyResult, ...]

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def violations(self) -> tuple[Violation, ...]:
        return tuple(k.violation for k in self.keys if k.violation is not None)

    @property
    def unknown_keys(self) -> tuple[str, ...]:
        return tuple(k.key for k in self.keys if k.verdict is Verdict.UNKNOWN)

    def explain(self) -> str:
        parts = [f"linearizability: {self.verdict.value} ({len(self.keys)} keys)"]
        parts += [v.explain() for v in self.violations]
        if self.unknown_keys:
            parts.append(f"search budget exhausted on keys {list(self.unknown_keys)}")
        return "\n".join(parts)


def check_linearizable(
    history: History | Iterable[Op], *, max_states: int = DEFAULT_MAX_STATES
) -> LinearizabilityResult:
    """Check every key of ``history``; raises ``ValueError`` on non-register ops."""
    groups: dict[str, list[Op]] = {}
    for op in history:
        groups.setdefault(op.key, []).append(op)
    results = tuple(check_key(k, groups[k], max_states=max_states) for k in sorted(groups))
    if any(r.verdict is Verdict.VIOLATION for r in results):
        verdict = Verdict.VIOLATION
    elif any(r.verdict is Verdict.UNKNOWN for r in results):
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    return LinearizabilityResult(verdict, results)


def _step(op: Op, value: Value) -> tuple[bool, Value]:
    """The register model: (is ``op`` allowed on ``value``, value afterwards)."""
    if op.kind == "read":
        return op.value == value, value
    if op.kind == "write":
        return True, op.value
    return value == op.expected, op.value  # cas


def _prepare(key: str, ops: Sequence[Op]) -> tuple[list[Op], list[Op]]:
    """Split into (ok ops, useful unknown ops), both sorted by invocation."""
    for op in ops:
        if op.kind not in _REGISTER_KINDS:
            raise ValueError(f"key {key!r}: {op.kind!r} is not a register op")
    kept = [op for op in ops if op.outcome != "fail"]
    kept = [op for op in kept if op.kind != "read" or op.outcome == "ok"]
    observed = {op.value for op in kept if op.kind == "read"}
    observed |= {op.expected for op in kept if op.kind == "cas"}
    oks = [op for op in kept if op.outcome == "ok"]
    unknowns = [op for op in kept if op.outcome == "unknown" and op.value in observed]
    oks.sort(key=lambda o: (o.invoke_ns, o.end_ns))
    unknowns.sort(key=lambda o: o.invoke_ns)
    return oks, unknowns


# A search configuration: ok ops [0, lo) are all linearized, bit j of ``rel`` says
# whether ok op lo+j is; bit k of ``umask`` whether unknown op k is; then the
# register value and the path taken (a cons list (op, parent) for the explanation).
_Path = tuple[Op, "_Path"] | None
_Config = tuple[int, int, int, Value, _Path]


def check_key(key: str, ops: Sequence[Op], *, max_states: int = DEFAULT_MAX_STATES) -> KeyResult:
    """Wing & Gong + Lowe memoisation on one key's ops (any order, any outcomes)."""
    oks, unknowns = _prepare(key, ops)
    n = len(oks)
    inv = [op.invoke_ns for op in oks]
    end = [op.end_ns for op in oks]
    uinv = [op.invoke_ns for op in unknowns]

    start: _Config = (0, 0, 0, None, None)
    seen: set[tuple[int, int, int, Value]] = {(0, 0, 0, None)}
    stack = [start]
    best, best_depth = start, -1

    while stack:
        config = stack.pop()
        lo, rel, umask, value, path = config
        if lo == n:
            return KeyResult(key, Verdict.OK, len(seen))
        depth = lo + rel.bit_count()
        if depth > best_depth:
            best, best_depth = config, depth

        # The window: scan ok ops in invocation order, tracking the earliest
        # completion ``m`` among remaining ones; an op invoked after ``m`` cannot go
        # next, and neither can anything invoked later (nor can it lower ``m``).
        m: float = math.inf
        hi = lo
        while hi < n and inv[hi] <= m:
            if not rel >> (hi - lo) & 1:
                m = min(m, end[hi])
            hi += 1

        # Successors as (ok index or -1, unknown index or -1, new value), in the
        # order we want to try them.
        succ: list[tuple[int, int, Value]] = []
        for i in range(lo, hi):
            if rel >> (i - lo) & 1 or inv[i] > m:
                continue
            allowed, new = _step(oks[i], value)
            if not allowed:
                continue
            if oks[i].kind == "read":  # reads first: no branching needed
                succ = [(i, -1, new)]
                break
            succ.append((i, -1, new))
        else:
            for k, u_op in enumerate(unknowns):
                if uinv[k] > m:
                    break
                if umask >> k & 1:
                    continue
                allowed, new = _step(u_op, value)
                if allowed and new != value:  # a no-op is the same as "never"
                    succ.append((-1, k, new))

        for i, k, new in reversed(succ):
            if i >= 0:
                nlo, nrel, numask = lo, rel | 1 << (i - lo), umask
                while nrel & 1:  # slide the window past the linearized prefix
                    nrel >>= 1
                    nlo += 1
                op = oks[i]
            else:
                nlo, nrel, numask = lo, rel, umask | 1 << k
                op = unknowns[k]
            memo = (nlo, nrel, numask, new)
            if memo in seen:
                continue
            if len(seen) >= max_states:
                return KeyResult(key, Verdict.UNKNOWN, len(seen))
            seen.add(memo)
            stack.append((nlo, nrel, numask, new, (op, path)))

    return KeyResult(key, Verdict.VIOLATION, len(seen), _explain(key, best, oks, end))


def _explain(key: str, best: _Config, oks: list[Op], end: list[float]) -> Violation:
    lo, rel, _umask, value, path = best
    remaining = [i for i in range(lo, len(oks)) if not rel >> (i - lo) & 1]
    blocked = oks[min(remaining, key=lambda i: end[i])]
    prefix: list[Op] = []
    while path is not None:
        op, path = path
        prefix.append(op)
    return Violation(key, blocked, tuple(reversed(prefix)), value)
