"""node.tiers.retention: policies, the compaction lifecycle, convergence, archives.

Every clock is injected: a day is a number (days since 1970-01-01 UTC), ``now``
is built from it. The property tests run random histories (appends delivered to
some replicas, compactions at unrelated ``now``s, merges in any direction) on
2-3 replicas and check that after one exchange of states every replica is
byte-identical. When every replica saw every entry before compacting, they also
check the result against a naive oracle.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import CodecError, EventLog, LogEntry, Timestamp, UnsupportedVersionError
from node.tiers import retention
from node.tiers.ops import POPULATION_SUBSPACES
from node.tiers.retention import (
    DAY_NS,
    DAY_S,
    POLICIES,
    SPEC_POLICIES,
    DaySummary,
    Folded,
    RetainedLog,
    RetentionPolicy,
    UnknownRetentionPolicy,
    absorb,
    archive_is_expired,
    compact,
    floors,
    parse_archive,
    parse_policy,
    policy_for_key,
    write_archive,
)

D0 = 20_000  # 2024-10-04, a Friday; any day works
YEAR = 365


def ts(day: int, secs: int = 0, logical: int = 0) -> Timestamp:
    return Timestamp(day * DAY_NS + secs * 1_000_000_000, logical)


def now(day: int, secs: int = 0) -> int:
    return day * DAY_NS + secs * 1_000_000_000


def put(
    state: RetainedLog, hlc: Timestamp, entry_id: str, payload: Any, node: str = "n1"
) -> RetainedLog:
    return state.merge(state.append(hlc, node, entry_id, payload))


def delta(hlc: Timestamp, entry_id: str, payload: Any, node: str = "n1") -> RetainedLog:
    return RetainedLog.wrap(EventLog().append(hlc, node, entry_id, payload))


# -- policies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90_days_detailed_1_year_summary", RetentionPolicy(90 * DAY_S, YEAR * DAY_S, False, None)),
        ("permanent_with_archival", RetentionPolicy(YEAR * DAY_S, None, True, None)),
        (
            "180_days_detailed_2_years_summary",
            RetentionPolicy(180 * DAY_S, 2 * YEAR * DAY_S, False, None),
        ),
        ("365_days_detailed", RetentionPolicy(YEAR * DAY_S, None, False, None)),
        (
            "365_days_detailed_3_years_archive",
            RetentionPolicy(YEAR * DAY_S, None, True, 3 * YEAR * DAY_S),
        ),
        ("90_days_detailed", RetentionPolicy(90 * DAY_S, None, False, None)),
        ("1_day_detailed_30_days_summary", RetentionPolicy(DAY_S, 30 * DAY_S, False, None)),
    ],
)
def test_parse_policy(text: str, expected: RetentionPolicy) -> None:
    assert parse_policy(text) == expected


def test_every_subspace_has_its_spec_policy() -> None:
    assert tuple(POLICIES) == POPULATION_SUBSPACES == tuple(SPEC_POLICIES)
    assert POLICIES["worker_journal"] == parse_policy("365_days_detailed_3_years_archive")
    assert policy_for_key("job_event_log/j-1") == parse_policy("365_days_detailed")
    for bad in ("job_event_log", "job_event_log/", "nope/x"):
        with pytest.raises(ValueError):
            policy_for_key(bad)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "forever",
        "90_days",
        "0_days_detailed",
        "090_days_detailed",
        "90_days_detailed_1_year_summary_extra",
        "90_days_detailed_1_year_backup",
        "90_days_detailed_30_days_summary",  # summary shorter than the detail
        "permanent",
    ],
)
def test_unknown_policy_is_refused_clearly(text: str) -> None:
    with pytest.raises(UnknownRetentionPolicy, match="retention policy") as err:
        parse_policy(text)
    assert repr(text) in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"detailed_s": 3600, "summary_s": None, "archive": False, "archive_s": None},
        {"detailed_s": 0, "summary_s": None, "archive": False, "archive_s": None},
        {"detailed_s": DAY_S, "summary_s": DAY_S, "archive": False, "archive_s": None},
        {"detailed_s": DAY_S, "summary_s": None, "archive": False, "archive_s": 9 * DAY_S},
        {"detailed_s": 9 * DAY_S, "summary_s": None, "archive": True, "archive_s": 2 * DAY_S},
    ],
)
def test_policy_checks_its_fields(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(**kwargs)


@pytest.mark.parametrize(
    ("subspace", "expected"),
    [  # (cut, seal_floor, expire_floor) at D0
        ("judgement_snapshots", (D0 - 90, D0 - 97, D0 - YEAR)),
        ("job_resource_ledger", (D0 - 180, D0 - 187, D0 - 2 * YEAR)),
        ("job_event_log", (D0 - YEAR, D0 - YEAR, D0 - YEAR)),
        ("worker_journal", (D0 - YEAR, D0 - YEAR, D0 - YEAR)),
        ("egg_revision_history", (D0 - YEAR, D0 - YEAR, D0 - YEAR)),
        ("tadpole_activity_log", (D0 - 90, D0 - 90, D0 - 90)),
    ],
)
def test_floors_are_whole_days(subspace: str, expected: tuple[int, int, int]) -> None:
    policy = POLICIES[subspace]
    assert floors(policy, now(D0)) == expected
    assert floors(policy, now(D0, DAY_S - 1)) == expected
    assert floors(policy, 0) == (0, 0, 0)


# -- the lifecycle, one replica ---------------------------------------------------------------

PAYLOADS = [
    {"type": "score", "v": 1},
    {"type": "score", "v": 2},
    {"event": "started"},
    {"type": 7, "event": "finished"},  # a non-string "type" falls through to "event"
    {"other": True},
    "plain text",
]


def day_of_entries(day: int) -> RetainedLog:
    state = RetainedLog()
    for n, payload in enumerate(PAYLOADS):
        state = put(state, ts(day, 3600 * n), f"e{n}", payload)
    return put(state, ts(day + 1, 60), "next-day", {"type": "score"})


EXPECTED_D0 = DaySummary(
    D0, 6, ts(D0), ts(D0, 3600 * 5), (("", 2), ("finished", 1), ("score", 2), ("started", 1))
)


@pytest.mark.parametrize("subspace", POPULATION_SUBSPACES)
def test_lifecycle_per_policy(subspace: str) -> None:
    policy = POLICIES[subspace]
    detailed = policy.detailed_s // DAY_S
    state = day_of_entries(D0)
    entries = state.entries()

    # Within the detailed window (the last day of it included) nothing moves.
    for day in (D0, D0 + 1, D0 + detailed):
        step = compact(state, policy, now(day, 12 * 3600))
        assert step.state.entries() == entries
        assert step.archive == ()
        assert step.state.summaries() == ()

    # One day later, day D0 leaves the detailed log; the next day stays.
    step = compact(state, policy, now(D0 + detailed + 1))
    assert [e.entry_id for e in step.state.entries()] == ["next-day"]
    assert step.archive == (entries[:-1] if policy.archive else ())
    if policy.summary_s is None:
        assert step.state.summaries() == ()
        assert not step.state.folded and not step.state.sealed
        return

    # Open phase: the summary is computed from records, one per entry.
    assert step.state.summaries() == (EXPECTED_D0,)
    assert len(step.state.folded) == 6 and not step.state.sealed
    # Sealed: records counted into one DaySummary.
    grace = policy.seal_grace_s // DAY_S
    sealed = compact(step.state, policy, now(D0 + detailed + grace + 1)).state
    assert sealed.sealed == {D0: EXPECTED_D0}
    assert list(sealed.folded) == ["next-day"]  # day D0 + 1 is still open
    assert sealed.summaries()[0] == EXPECTED_D0
    # Expired once the day is older than the summary window.
    keep = policy.summary_s // DAY_S
    assert compact(sealed, policy, now(D0 + keep)).state.summaries()[0] == EXPECTED_D0
    gone = compact(sealed, policy, now(D0 + keep + 1)).state
    assert [s.day for s in gone.summaries()] == [D0 + 1]
    gone = compact(gone, policy, now(D0 + keep + 2)).state
    assert gone == RetainedLog(gone.detailed, {}, {}, gone.seal_floor, gone.expire_floor)
    assert gone.summaries() == () and gone.entries() == ()


def test_compaction_is_idempotent_within_a_day() -> None:
    policy = POLICIES["judgement_snapshots"]
    state = day_of_entries(D0)
    first = compact(state, policy, now(D0 + 91, 1)).state
    again = compact(first, policy, now(D0 + 91, DAY_S - 1))
    assert again.state.to_bytes() == first.to_bytes()
    assert again.archive == ()


def test_an_older_now_never_undoes_a_compaction() -> None:
    policy = POLICIES["judgement_snapshots"]
    later = compact(day_of_entries(D0), policy, now(D0 + 120)).state
    assert compact(later, policy, now(D0 + 10)).state == later


def test_appends_below_the_watermark_are_refused_but_late_deltas_are_folded() -> None:
    policy = POLICIES["judgement_snapshots"]
    state = compact(day_of_entries(D0), policy, now(D0 + 91)).state
    with pytest.raises(ValueError, match="watermark"):
        state.append(ts(D0, 99), "n1", "late", {"type": "score"})
    # A delta stamped before the cut-off (a hint handed off late) joins the summary...
    late = state.merge(delta(ts(D0, 99), "late", {"type": "score"}))
    (summary,) = [s for s in late.summaries() if s.day == D0]
    assert summary.count == 7 and dict(summary.labels)["score"] == 3
    # ... once: the same entry again, or an entry already folded, changes nothing.
    assert late.merge(delta(ts(D0, 99), "late", {"type": "score"})) == late
    assert late.merge(delta(ts(D0), "e0", {"type": "score", "v": 1})) == late
    # After the day is sealed a late delta is dropped, not counted.
    sealed = compact(late, policy, now(D0 + 99)).state
    assert sealed.merge(delta(ts(D0, 5), "later", {"type": "x"})) == sealed


def test_a_retried_append_is_counted_once() -> None:
    policy = POLICIES["judgement_snapshots"]
    folded = compact(put(RetainedLog(), ts(D0, 5), "r", {"type": "x"}), policy, now(D0 + 91))
    assert [s.count for s in folded.state.summaries()] == [1]
    retried = put(RetainedLog(), ts(D0 + 50), "r", {"type": "y"}, node="n2")
    for joined in (folded.state.merge(retried), retried.merge(folded.state)):
        assert joined.summaries() == ()  # the newer copy replaces the folded one
        assert [e.hlc for e in joined.entries()] == [ts(D0 + 50)]
    later = compact(folded.state.merge(retried), policy, now(D0 + 141)).state
    assert [(s.day, s.labels) for s in later.summaries()] == [(D0 + 50, (("y", 1),))]


def test_absorb_returns_what_leaves_the_detailed_log_for_archival_policies() -> None:
    policy = POLICIES["worker_journal"]
    ahead = compact(day_of_entries(D0), policy, now(D0 + YEAR + 1)).state
    behind = put(day_of_entries(D0), ts(D0, 7), "only-behind", {"event": "x"})
    step = absorb(behind, ahead, policy)
    assert [e.entry_id for e in step.archive] == [
        e.entry_id for e in behind.entries() if e.hlc < ts(D0 + 1)
    ]
    assert step.state == ahead  # nothing kept of day D0: no summary for this policy
    assert absorb(ahead, behind, policy).state == ahead
    not_archival = absorb(behind, ahead, POLICIES["job_event_log"])
    assert not_archival.archive == () and not_archival.state == ahead


# -- codec -----------------------------------------------------------------------------------


def reached_states() -> list[RetainedLog]:
    policy = POLICIES["judgement_snapshots"]
    base = day_of_entries(D0)
    return [
        RetainedLog(),
        base,
        compact(base, policy, now(D0 + 91)).state,
        compact(base, policy, now(D0 + 100)).state,
        compact(base, policy, now(D0 + 400)).state,
    ]


def test_bytes_round_trip() -> None:
    for state in reached_states():
        data = state.to_bytes()
        assert RetainedLog.from_bytes(data) == state
        assert RetainedLog.from_bytes(data).to_bytes() == data
        assert hash(RetainedLog.from_bytes(data)) == hash(state)


def test_bad_bytes_are_refused() -> None:
    data = reached_states()[2].to_bytes()
    with pytest.raises(CodecError):
        RetainedLog.from_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CodecError):
        RetainedLog.from_bytes(b"XX" + data[2:])
    with pytest.raises(CodecError):
        RetainedLog.from_bytes(data[:10])
    with pytest.raises(UnsupportedVersionError):
        RetainedLog.from_bytes(data[:2] + b"\x09" + data[3:])
    # A state that breaks an invariant (an open record above the watermark) is refused.
    bad = RetainedLog(EventLog(ts(D0)), {"x": Folded(ts(D0 + 5), "n1", "")}, {}, 0, 0)
    with pytest.raises(CodecError, match="open window"):
        RetainedLog.from_bytes(bad.to_bytes())
    # A sealed summary whose label counts do not add up is refused.
    wrong = DaySummary(D0, 3, ts(D0), ts(D0), (("a", 1),))
    with pytest.raises(CodecError, match="inconsistent"):
        RetainedLog.from_bytes(
            RetainedLog(EventLog(ts(D0 + 9)), {}, {D0: wrong}, D0 + 1, 0).to_bytes()
        )


# -- convergence (property tests) --------------------------------------------------------------

PROPS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SMALL = {  # the same shapes as the spec's policies, scaled to days so a run spans them all
    "summary": RetentionPolicy(3 * DAY_S, 12 * DAY_S, False, None, seal_grace_s=2 * DAY_S),
    "archive": RetentionPolicy(3 * DAY_S, None, True, 20 * DAY_S),
    "detailed": RetentionPolicy(5 * DAY_S, None, False, None),
    "no_grace": RetentionPolicy(2 * DAY_S, 6 * DAY_S, False, None, seal_grace_s=0),
}
LABELS = [{"type": "a"}, {"type": "b"}, {"event": "c"}, {"x": 1}, "text", b"\x00raw"]


@st.composite
def histories(draw: st.DrawFn, *, deliver_all_first: bool = False) -> dict[str, Any]:
    """Entries and ops drawn as flat integer tuples (cheap to generate and shrink)."""
    replicas = draw(st.integers(2, 3))
    raw_entries = draw(
        st.lists(
            st.tuples(st.integers(0, 9), st.integers(0, 12), st.integers(0, DAY_S - 1)),
            min_size=1,
            max_size=24,
        )
    )
    entries = [
        (
            f"id{ident}",  # ids repeat: retried appends with a new HLC
            ts(D0 + day, secs, logical=n),
            "abc"[n % 3],
            LABELS[(ident + n) % len(LABELS)],
        )
        for n, (ident, day, secs) in enumerate(raw_entries)
    ]
    horizon = draw(st.integers(2, 30))  # the latest day any replica compacts at
    kinds = ("compact", "merge") if deliver_all_first else ("append", "compact", "merge")
    ops: list[tuple[Any, ...]] = []
    for kind, x, y, z in draw(
        st.lists(
            st.tuples(
                st.sampled_from(kinds), st.integers(0, 99), st.integers(0, 99), st.integers(0, 3)
            ),
            min_size=15,
            max_size=60,
        )
    ):
        if kind == "append":
            ops.append(("append", x % len(entries), y % replicas))
        elif kind == "compact":
            ops.append(("compact", x % replicas, y % (horizon + 1), z))
        else:
            ops.append(("merge", x % replicas, y % replicas))
    if deliver_all_first:
        order = draw(st.permutations(range(len(entries))))
        ops = [("append", n, r) for r in range(replicas) for n in order] + ops
    return {"replicas": replicas, "entries": entries, "ops": ops}


class Run:
    """Replays one history on in-memory replicas; records what each archived."""

    def __init__(self, history: dict[str, Any], policy: RetentionPolicy) -> None:
        self.policy = policy
        self.entries = history["entries"]
        self.states = [RetainedLog() for _ in range(history["replicas"])]
        self.archived: set[str] = set()
        self.nows: list[int] = []
        for op in history["ops"]:
            self.apply(op)

    def apply(self, op: tuple[Any, ...]) -> None:
        if op[0] == "append":
            entry_id, hlc, node, payload = self.entries[op[1]]
            self.absorb(op[2], delta(hlc, entry_id, payload, node))
        elif op[0] == "compact":
            when = now(D0 + op[2], op[3] * 21_600)
            self.nows.append(when)
            step = compact(self.states[op[1]], self.policy, when)
            self.archived.update(e.entry_id for e in step.archive)
            self.states[op[1]] = step.state
        else:
            self.absorb(op[2], self.states[op[1]])

    def absorb(self, replica: int, incoming: RetainedLog) -> None:
        step = absorb(self.states[replica], incoming, self.policy)
        self.archived.update(e.entry_id for e in step.archive)
        self.states[replica] = step.state

    def exchange(self) -> None:
        """One round of anti-entropy: gather into replica 0, then send it to all."""
        for r in range(1, len(self.states)):
            self.absorb(0, self.states[r])
        for r in range(1, len(self.states)):
            self.absorb(r, self.states[0])


policies = pytest.mark.parametrize("policy", list(SMALL.values()), ids=list(SMALL))


@policies
@PROPS
@given(history=histories())
def test_replicas_converge_byte_identical(policy: RetentionPolicy, history: dict[str, Any]) -> None:
    run = Run(history, policy)
    run.exchange()
    first = run.states[0]
    for state in run.states[1:]:
        assert state.to_bytes() == first.to_bytes()
        assert state.summaries() == first.summaries()
    # Converged means stable: more exchanges or a same-day compaction change nothing.
    run.exchange()
    assert all(s.to_bytes() == first.to_bytes() for s in run.states)
    assert RetainedLog.from_bytes(first.to_bytes()) == first
    if policy.archive:  # at-least-once: every id is still detailed or was archived somewhere
        ids = {e[0] for e in run.entries}
        held = {e.entry_id for e in first.entries()}
        appended = {run.entries[op[1]][0] for op in history["ops"] if op[0] == "append"}
        assert appended <= held | run.archived
        assert held <= ids


@policies
@PROPS
@given(history=histories())
def test_merge_is_a_join(policy: RetentionPolicy, history: dict[str, Any]) -> None:
    states = Run(history, policy).states
    a, b = states[0], states[1]
    c = states[2] if len(states) > 2 else compact(b, policy, now(D0 + 9)).state
    assert a.merge(b).to_bytes() == b.merge(a).to_bytes()
    assert a.merge(b).merge(c).to_bytes() == a.merge(b.merge(c)).to_bytes()
    assert a.merge(a) == a
    assert a.merge(RetainedLog()) == a
    joined = a.merge(b)
    assert a.merge(joined) == joined  # a <= a |_| b


def oracle(run: Run) -> tuple[tuple[LogEntry, ...], tuple[DaySummary, ...]]:
    """What the replicas must hold when each saw every entry before compacting."""
    winners: dict[str, LogEntry] = {}
    for entry_id, hlc, node, payload in run.entries:
        (entry,) = EventLog().append(hlc, node, entry_id, payload).entries.values()
        if entry_id not in winners or entry.key() > winners[entry_id].key():
            winners[entry_id] = entry
    cut, _, expire = floors(run.policy, max(run.nows, default=0))
    if cut == 0:
        return tuple(sorted(winners.values(), key=LogEntry.key)), ()
    detailed = tuple(sorted((e for e in winners.values() if e.hlc >= ts(cut)), key=LogEntry.key))
    days: dict[int, list[Folded]] = {}
    for e in winners.values():
        if expire <= e.hlc.wall_ns // DAY_NS < cut:
            days.setdefault(e.hlc.wall_ns // DAY_NS, []).append(Folded.of(e))
    return detailed, tuple(DaySummary.of(day, recs) for day, recs in sorted(days.items()))


@policies
@PROPS
@given(history=histories(deliver_all_first=True))
def test_summaries_match_an_oracle_when_every_replica_saw_every_entry(
    policy: RetentionPolicy, history: dict[str, Any]
) -> None:
    run = Run(history, policy)
    run.exchange()
    detailed, summaries = oracle(run)
    for state in run.states:
        assert state.entries() == detailed
        assert state.summaries() == summaries


# -- archives ----------------------------------------------------------------------------------


def archive_entries() -> list[LogEntry]:
    payloads: list[Any] = [
        {"type": "rev", "n": 1, "nested": {"b": [1, 2.5, None], "a": "é"}},
        b"\x00\xffbinary",
        {"f": math.nan},
        2**64 - 1,
        "text",
    ]
    log = EventLog()
    for n, payload in enumerate(payloads):
        log = log.merge(log.append(ts(D0 + n // 2, n), f"node-{n % 2}", f"rev-{n}", payload))
    return list(log.value())


def test_archive_round_trip(tmp_path: Path) -> None:
    entries = archive_entries()
    path = write_archive(
        tmp_path / "arch",
        "egg_revision_history",
        "egg_revision_history/egg-1",
        entries,
        now(D0 + 400),
    )
    assert path.parent == tmp_path / "arch"
    name = path.name
    assert name.startswith("egg_revision_history.")
    assert ".20241004-20241006." in name and name.endswith(".jsonl.gz")
    contents = parse_archive(path.read_bytes())
    assert contents.subspace == "egg_revision_history"
    assert contents.key == "egg_revision_history/egg-1"
    assert contents.entries == tuple(entries)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert json.loads(lines[0])["entries"] == len(entries) == len(lines) - 1
    assert json.loads(lines[1])["payload"]["nested"]["a"] == "é"  # readable JSON when exact
    assert "payload_msgpack_b64" in json.loads(lines[2])  # bytes: kept as msgpack


def test_archive_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = archive_entries()
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    key = "worker_journal/w-7"
    first = write_archive(tmp_path, "worker_journal", key, entries, now(D0 + 400))
    assert len(synced) == 2  # the file, then the directory
    data = first.read_bytes()
    again = write_archive(
        tmp_path, "worker_journal", key, [*reversed(entries), entries[0]], now(D0 + 401)
    )
    assert again == first and again.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary left
    other = write_archive(tmp_path, "worker_journal", key, entries[:2], now(D0 + 401))
    assert other != first
    other_key = write_archive(tmp_path, "worker_journal", key + "x", entries, now(D0 + 401))
    assert other_key.name.split(".")[1] != first.name.split(".")[1]


def test_archive_refuses_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing"):
        write_archive(tmp_path, "worker_journal", "worker_journal/w", [], now(D0))
    with pytest.raises(ValueError, match="subspace"):
        write_archive(tmp_path, "../etc", "k", archive_entries(), now(D0))
    with pytest.raises(retention.ArchiveFormatError):
        parse_archive(b"not gzip")
    with pytest.raises(retention.ArchiveFormatError):
        parse_archive(gzip.compress(b'{"format":"other"}\n'))
    assert list(tmp_path.iterdir()) == []


def test_archive_expiry_follows_the_policy(tmp_path: Path) -> None:
    entries = archive_entries()
    journal = POLICIES["worker_journal"]
    name = write_archive(tmp_path, "worker_journal", "worker_journal/w", entries, now(D0)).name
    last = D0 + 2
    assert not archive_is_expired(name, journal, now(last + 3 * YEAR))
    assert archive_is_expired(name, journal, now(last + 3 * YEAR + 1))
    assert not archive_is_expired(name, POLICIES["egg_revision_history"], now(last + 100 * YEAR))
    with pytest.raises(ValueError):
        archive_is_expired("notes.txt", journal, now(D0))


def test_compaction_feeds_the_archive(tmp_path: Path) -> None:
    policy = POLICIES["worker_journal"]
    state = RetainedLog()
    for n, entry in enumerate(archive_entries()):
        state = put(state, entry.hlc, entry.entry_id, entry.payload(), node=f"n{n}")
    step = compact(state, policy, now(D0 + YEAR + 2))
    assert [e.hlc.wall_ns // DAY_NS for e in step.archive] == [D0, D0, D0 + 1, D0 + 1]
    path = write_archive(
        tmp_path, "worker_journal", "worker_journal/w", step.archive, now(D0 + YEAR + 2)
    )
    assert parse_archive(path.read_bytes()).entries == step.archive
    assert [e.hlc.wall_ns // DAY_NS for e in step.state.entries()] == [D0 + 2]
