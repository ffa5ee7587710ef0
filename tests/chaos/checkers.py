"""End-of-run checkers besides linearizability: lost writes, CRDTs, run summary.

All pure functions over a recorded history plus what was read back after the final
heal. See :mod:`tests.chaos.linearizability` for the register checker itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tests.chaos.history import History, Op, Value
from tests.chaos.linearizability import LinearizabilityResult, Verdict

# -- lost writes -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LostWrite:
    key: str
    op: Op  # the acknowledged write/cas
    final: Value  # what the read-back found instead

    def explain(self) -> str:
        return f"lost: {self.op.describe()}; final value {self.final!r}"


@dataclass(frozen=True, slots=True)
class LostWriteResult:
    lost: tuple[LostWrite, ...]
    # Final values that no write/cas (ok or unknown) could have produced.
    unexplained: tuple[tuple[str, Value], ...]

    @property
    def ok(self) -> bool:
        return not self.lost and not self.unexplained

    def explain(self) -> str:
        lines = [w.explain() for w in self.lost]
        lines += [f"unexplained final value {v!r} on key {k!r}" for k, v in self.unexplained]
        return "\n".join(lines) or "no lost writes"


def check_lost_writes(
    history: History | Iterable[Op], final: Mapping[str, Value]
) -> LostWriteResult:
    """Find acknowledged writes the final read-back cannot account for.

    ``final`` maps each key to the value read back after the last heal (``None`` =
    absent). Keys that appear in the history but not in ``final`` are taken as
    absent, so forgetting to read a key back reports its writes instead of hiding
    them. The history must end before the read-back starts.

    The rule, per key, for every ``ok`` write or cas ``w`` (a cas that succeeded is
    an acknowledged write of its new value):

    * if ``w``'s value is the final value, it is present; otherwise
    * it is legitimately overwritten iff some *other* write or cas on the key, with
      outcome ``ok`` or ``unknown``, could be linearized after ``w`` -- that is,
      it is unknown, or it completed no earlier than ``w`` was invoked (it overlaps
      ``w`` or comes after it). An unknown op may take effect at any time after its
      invocation, so even one invoked before ``w`` counts;
    * otherwise ``w`` is lost.

    Separately, a non-``None`` final value that no ok/unknown write or cas wrote is
    reported as unexplained (state out of nowhere).

    This is sound (never flags a correct run) but not complete: it does not ask
    whether the overwriting op's cas precondition could hold, or whether the
    overwriter is itself the final value. For the exact answer, append the
    read-back as reads with :func:`with_final_reads` and run the linearizability
    checker, which decides the same question against the full model.
    """
    writers: dict[str, list[Op]] = {}
    for op in history:
        if op.kind in ("write", "cas") and op.outcome != "fail":
            writers.setdefault(op.key, []).append(op)
    lost: list[LostWrite] = []
    unexplained: list[tuple[str, Value]] = []
    for key in sorted(writers.keys() | final.keys()):
        ops, value = writers.get(key, []), final.get(key)
        if value is not None and all(o.value != value for o in ops):
            unexplained.append((key, value))
        # "Some other op could follow w" in O(1): any unknown writer could (and is
        # never w itself), else the latest-completing ok writer other than w must
        # have completed no earlier than w's invocation.
        any_unknown = any(o.outcome == "unknown" for o in ops)
        acked = sorted((o for o in ops if o.outcome == "ok"), key=lambda o: o.end_ns)
        latest = acked[-1] if acked else None
        runner_up = acked[-2] if len(acked) > 1 else None
        for w in acked:
            if w.value == value or any_unknown:
                continue
            other = runner_up if w is latest else latest
            if other is None or other.end_ns < w.invoke_ns:
                lost.append(LostWrite(key, w, value))
    return LostWriteResult(tuple(lost), tuple(unexplained))


def with_final_reads(
    history: History | Iterable[Op], final: Mapping[str, Value], *, process: int | str = "final"
) -> list[Op]:
    """The history plus one ok read per key (register keys of the history and keys
    of ``final``), invoked after every op completed, returning the read-back value.
    Feed the result to ``check_linearizable`` for an exact lost-write check."""
    ops = list(history)
    t = max((max(op.invoke_ns, op.complete_ns or 0) for op in ops), default=0) + 1
    keys = {op.key for op in ops if op.kind in ("read", "write", "cas")} | set(final)
    reads = [
        Op(
            process=process,
            kind="read",
            key=k,
            value=final.get(k),
            invoke_ns=t,
            complete_ns=t,
            outcome="ok",
        )
        for k in sorted(keys)
    ]
    return ops + reads


# -- CRDT counters -----------------------------------------------------------------

DEFAULT_MAX_BITS = 1 << 24
"""Width of the subset-sum bitset (the span between the most negative and most
positive subset sum). 16 Mbit = 2 MB per int; beyond it the check says unknown."""


@dataclass(frozen=True, slots=True)
class CounterResult:
    verdict: Verdict
    final: int
    acknowledged_sum: int
    unknown_count: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


def check_counter(
    final: int,
    acknowledged: Iterable[int],
    unknown: Iterable[int] = (),
    *,
    max_bits: int = DEFAULT_MAX_BITS,
) -> CounterResult:
    """A counter must equal the acknowledged deltas plus some subset of unknown ones.

    The subset-sum question is answered exactly with a bitset of reachable sums
    (a Python int, bit ``s + offset`` set iff sum ``s`` is reachable). Equal deltas
    are grouped and added in binary-split chunks (1, 2, 4, ... copies), so 10^5
    increments of 1 cost ~17 shifts. If the span of possible sums exceeds
    ``max_bits`` only the range test is done and, if it passes, the verdict is
    ``unknown``.
    """
    acked_sum = sum(acknowledged)
    deltas = [d for d in unknown if d != 0]
    target = final - acked_sum
    low = sum(d for d in deltas if d < 0)
    high = sum(d for d in deltas if d > 0)

    def result(verdict: Verdict, detail: str) -> CounterResult:
        return CounterResult(verdict, final, acked_sum, len(deltas), detail)

    if not low <= target <= high:
        return result(
            Verdict.VIOLATION,
            f"final {final} - acknowledged {acked_sum} = {target}, outside the "
            f"[{low}, {high}] the {len(deltas)} unknown increments allow",
        )
    if high - low + 1 > max_bits:
        return result(Verdict.UNKNOWN, f"subset-sum span {high - low + 1} exceeds {max_bits}")

    reach = 1 << -low  # bit offset: sum s lives at bit s - low
    for delta, count in Counter(deltas).items():
        remaining, chunk = count, 1
        while remaining:  # bounded knapsack via binary splitting
            take = min(chunk, remaining)
            shift = delta * take
            reach |= reach << shift if shift > 0 else reach >> -shift
            remaining -= take
            chunk *= 2
    if reach >> (target - low) & 1:
        return result(Verdict.OK, f"{target} is a subset sum of the unknown increments")
    return result(
        Verdict.VIOLATION, f"no subset of the {len(deltas)} unknown increments sums to {target}"
    )


def check_counter_history(
    history: History | Iterable[Op], key: str, final: int, *, max_bits: int = DEFAULT_MAX_BITS
) -> CounterResult:
    """:func:`check_counter` over the ``add`` ops on ``key`` (ok = acknowledged,
    unknown = maybe, fail = ignored)."""
    adds = [op for op in history if op.key == key and op.kind == "add"]
    acked = [int(op.value or 0) for op in adds if op.outcome == "ok"]
    maybe = [int(op.value or 0) for op in adds if op.outcome == "unknown"]
    return check_counter(final, acked, maybe, max_bits=max_bits)


# -- CRDT sets and logs -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CollectionResult:
    """The verdict on one OR-set or event log: every element or entry id must be
    present or absent as its writer's outcomes say (each is written by one client)."""

    key: str
    verdict: Verdict
    detail: str

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


def _collection_result(key: str, checked: int, problems: list[str]) -> CollectionResult:
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" * (len(problems) > 5))
        return CollectionResult(key, Verdict.VIOLATION, f"{key}: {shown}")
    return CollectionResult(key, Verdict.OK, f"{key}: {checked} elements as their outcomes say")


def check_set_history(
    history: History | Iterable[Op], key: str, final: Iterable[str]
) -> CollectionResult:
    """An OR-set's final elements against the ``sadd``/``srem`` ops on ``key``.

    An element whose add was acknowledged is present unless its remove was acknowledged
    (absent) or may have been applied (either); an add that failed (nothing applied)
    leaves it absent; an unknown add leaves either; no element appears that was never
    added. A client removes only elements whose add it saw acknowledged."""
    adds: dict[str, str] = {}
    removes: dict[str, str] = {}
    for op in history:
        if op.key == key and op.kind in ("sadd", "srem"):
            (adds if op.kind == "sadd" else removes)[str(op.value)] = op.outcome
    present = set(final)
    problems = [f"{e!r} present but never added" for e in sorted(present - adds.keys())]
    for element, added in sorted(adds.items()):
        removed = removes.get(element)
        if added == "fail" or (added == "ok" and removed == "ok"):
            want: bool | None = False
        elif added == "ok" and removed in (None, "fail"):
            want = True
        else:
            want = None
        if want is not None and (element in present) != want:
            removal = "" if removed is None else f", remove {removed}"
            problems.append(
                f"{element!r} {'missing' if want else 'present'} (add {added}{removal})"
            )
    return _collection_result(key, len(adds), problems)


def check_log_history(
    history: History | Iterable[Op], key: str, final: Iterable[str]
) -> CollectionResult:
    """An event log's final entry ids against the ``lappend`` ops on ``key``: every
    acknowledged append present, no failed one, none twice, none from nowhere."""
    appends = {
        str(op.value): op.outcome for op in history if op.key == key and op.kind == "lappend"
    }
    ids = list(final)
    counts = Counter(ids)
    problems = [f"{e!r} {n} times" for e, n in sorted(counts.items()) if n > 1]
    problems += [f"{e!r} present but never appended" for e in sorted(counts.keys() - appends)]
    for entry, outcome in sorted(appends.items()):
        if outcome == "ok" and entry not in counts:
            problems.append(f"{entry!r} missing (acknowledged)")
        elif outcome == "fail" and entry in counts:
            problems.append(f"{entry!r} present (its append failed: nothing applied)")
    return _collection_result(key, len(appends), problems)


# -- causal sessions ---------------------------------------------------------------


def check_sessions(history: History | Iterable[Op]) -> list[str]:
    """Session guarantees of agent documents, per client (a client is one session: it
    carries the causal token of everything it wrote and read to every node it asks).

    Each session writes ``dpatch`` sequence numbers 1, 2, 3 ... to its own document and
    reads them back with ``dread``, one op at a time. A read that succeeded must return
    at least the newest of the session's acknowledged writes completed before it
    (read your writes), at least what the session read before (monotonic reads), and
    a number the session wrote, not one whose write failed (nothing applied); and the
    document must exist once its create was acknowledged (read as -1).
    Returns the violations, described."""
    problems: list[str] = []
    by_session: dict[tuple[int | str, str], list[Op]] = {}
    for op in history:
        if op.kind in ("dpatch", "dread"):
            by_session.setdefault((op.process, op.key), []).append(op)
    for (process, key), ops in sorted(by_session.items(), key=lambda kv: str(kv[0])):
        acked = last_read = 0
        written: set[int] = {0}  # 0: the document as created
        failed: set[int] = set()
        for op in sorted(ops, key=lambda o: o.invoke_ns):
            if op.kind == "dpatch":
                assert isinstance(op.value, int)
                (failed if op.outcome == "fail" else written).add(op.value)
                if op.outcome == "ok":
                    acked = max(acked, op.value)
                continue
            if op.outcome != "ok":
                continue
            seen = op.value if isinstance(op.value, int) else -1
            where = f"p{process} {key} read {seen} at {op.invoke_ns}"
            if seen < 0:  # the workload's mark for "absent" once a create was acknowledged
                problems.append(f"{where}: the document absent after its create was acknowledged")
                continue
            if seen < acked:
                problems.append(f"{where}: after its write of {acked} was acknowledged")
            elif seen < last_read:
                problems.append(f"{where}: after reading {last_read}")
            if seen in failed or seen not in written:
                problems.append(f"{where}: a number whose write failed or never happened")
            last_read = max(last_read, seen)
    return problems


# -- run summary -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of the chaos summary table, plus the explanations behind it."""

    ops: int
    by_outcome: Mapping[str, int]
    by_kind: Mapping[str, int]
    linearizability: Verdict | None  # None if not checked
    violations: int
    unknown_keys: int
    lost_writes: int
    crdt_violations: int  # counters, OR-sets, event logs and causal sessions
    details: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        """No violation of any kind (an ``unknown`` verdict is not clean either)."""
        return (
            self.linearizability in (None, Verdict.OK)
            and self.violations == 0
            and self.lost_writes == 0
            and self.crdt_violations == 0
        )

    def format(self) -> str:
        outcomes = " ".join(f"{k}={self.by_outcome.get(k, 0)}" for k in ("ok", "fail", "unknown"))
        lin = "-" if self.linearizability is None else self.linearizability.value
        head = (
            f"ops={self.ops} ({outcomes}) linearizable={lin} violations={self.violations} "
            f"unknown_keys={self.unknown_keys} lost_writes={self.lost_writes} "
            f"crdt_violations={self.crdt_violations}"
        )
        return "\n".join((head, *self.details))


def summarise(
    history: History | Iterable[Op],
    *,
    linearizability: LinearizabilityResult | None = None,
    lost_writes: LostWriteResult | None = None,
    counters: Iterable[CounterResult] = (),
    collections: Iterable[CollectionResult] = (),
    sessions: Sequence[str] = (),
) -> RunSummary:
    """Count ops by outcome and kind and fold in whichever checker results exist."""
    ops = list(history)
    counter_results = list(counters)
    collection_results = list(collections)
    details: list[str] = []
    if linearizability is not None and not linearizability.ok:
        details.append(linearizability.explain())
    if lost_writes is not None and not lost_writes.ok:
        details.append(lost_writes.explain())
    details += [f"counter: {c.detail}" for c in counter_results if not c.ok]
    details += [f"collection: {c.detail}" for c in collection_results if not c.ok]
    details += [f"session: {p}" for p in sessions[:10]]
    lost = 0 if lost_writes is None else len(lost_writes.lost) + len(lost_writes.unexplained)
    return RunSummary(
        ops=len(ops),
        by_outcome=dict(Counter(op.outcome for op in ops)),
        by_kind=dict(Counter(op.kind for op in ops)),
        linearizability=None if linearizability is None else linearizability.verdict,
        violations=0 if linearizability is None else len(linearizability.violations),
        unknown_keys=0 if linearizability is None else len(linearizability.unknown_keys),
        lost_writes=lost,
        crdt_violations=len(sessions)
        + sum(c.verdict is Verdict.VIOLATION for c in [*counter_results, *collection_results]),
        details=tuple(details),
    )
