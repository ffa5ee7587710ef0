"""Retention for the population tier's log subspaces: policies, convergent compaction, archives.

Pure except :func:`write_archive`, the one function that touches a disk. Time is
always an argument (``now_ns``, Unix nanoseconds, UTC); nothing here reads a clock.

Policies
========

The spec (``hierarchical_state_model.population_state.subspaces``) names one
retention policy per subspace. :func:`parse_policy` reads the names by grammar::

    <N>_days_detailed                          keep entries N days, then drop them
    <N>_days_detailed_<M>_year[s]_summary      ... then keep per-day summaries until age M years
    <N>_days_detailed_<M>_year[s]_archive      ... then archive them; archives live M years
    permanent_with_archival                    keep PERMANENT_DETAILED_S hot, then archive
                                               forever

A year is 365 days; every window is a whole number of UTC days. Windows are
*ages*: ``90_days_detailed_1_year_summary`` keeps detail for 90 days and a
summary until the entry is one year old (not 90 days + 1 year).
``permanent_with_archival`` gives no hot window; we keep one year hot (the same
as ``job_event_log``) and archive the rest, never expiring the archive. Nothing
is deleted for good, and a key's live state stays bounded.

What a summary keeps
====================

Per key and per UTC day (``day = hlc.wall_ns // DAY_NS``) of the entries folded
out of the detailed log, a :class:`DaySummary`:

* ``count``: how many distinct entry ids;
* ``first`` / ``last``: the smallest and largest HLC;
* ``labels``: counts per *label*: the payload's ``"type"`` field if it is a
  string, else its ``"event"`` field if that is a string, else ``""``, cut to
  ``MAX_LABEL_CHARS`` characters. The label counts add up to ``count``.

Payloads, node ids and entry ids are not kept past the open phase below.

State and lattice
=================

A key's state is a :class:`RetainedLog`, a small composite of existing pieces:

``detailed``
    the :class:`crdt.EventLog` of hot entries; its compaction watermark ``W``
    (a max-register) is always the start of a UTC day.
``folded``
    the *open* summary: ``entry_id -> Folded(hlc, node_id, label)`` for entries
    that left ``detailed`` but whose day is not sealed yet.
``sealed``
    ``day -> DaySummary`` for sealed days (days before ``seal_floor``).
``seal_floor`` / ``expire_floor``
    day numbers, max-registers. Open records on a day before ``seal_floor``
    and everything on a day before ``expire_floor`` are gone.

Abstractly, per entry id the state holds the greatest *copy* seen anywhere.
A copy is a full entry, or its projection to a :class:`Folded` record, and
copies are ordered by ``(hlc, node_id, ...)``. Per sealed day it holds the
greatest :class:`DaySummary` in a fixed total order (``DaySummary.rank``:
entry count first, so a summary of a superset beats one of a subset). The
floors are max-registers. **Join** (:meth:`RetainedLog.merge`) is the
component-wise join (per-id max, per-day max, max of each floor), followed
by a *normal form* that depends only on the joined floors:

1. a copy with ``hlc >= W`` is kept whole in ``detailed``; a copy below ``W``
   is projected to a record (that is the fold: an entry leaves the detailed log
   and joins the summary in the same step, on every replica, whoever raised
   ``W``);
2. a record on a day before ``seal_floor`` or ``expire_floor`` is dropped, and so
   is a sealed day before ``expire_floor``.

Each filter is *downward closed in the order used to pick the per-id maximum*
(a day cut-off on an HLC-ordered copy), so "filter then join" equals "join then
filter", the EventLog argument applied once more. Projection commutes with the
per-id max because an HLC never stamps two events of one node alike, so two copies
of one id differ in ``(hlc, node_id)``, and that pair orders records and full
entries alike. A whole copy beats every record of its id, since a record lies
below some earlier ``W`` and the kept copy at or above the current one. So
``merge`` is a join-semilattice: commutative, associative and idempotent (the
tests check all three on random reachable states), with ``RetainedLog()`` as
identity.

**Compaction** (:func:`compact`) joins the floors computed from ``now`` (a
max, so a replica with a slow clock or an old ``now`` only ever raises them),
and *seals*: the open records on days that fall before the new ``seal_floor``
are counted into a ``DaySummary`` and joined into ``sealed``, where the join
would otherwise drop them. The result is greater than or equal to the joined
state (a day with no sealed summary is the bottom). So compaction is an
*inflation*, a local update like an append.

Convergence then follows from the standard result for state-based CRDTs
(Shapiro, Preguiça, Baquero, Zawirski, SSS 2011): states only grow and merge is
the least upper bound, so replicas that have received each other's states are
equal. That holds for any ``now`` on any replica, in any order, interleaved with
merges. Equal states encode to identical bytes (:meth:`RetainedLog.to_bytes`
is canonical). Quantising every cut-off to whole UTC days is not what makes this
converge (the max-registers do). It keeps the watermark identical on replicas
that compact on the same day, so the usual case needs no reconciliation and the
archives of one day get one name.

Accuracy: the open phase (``seal_grace_s``, default 7 days after the detailed
cut-off) is when partial folds from different replicas are reunited exactly:
a record reaching a replica in that phase is counted once, whoever folded it.
Once any replica seals a day, its summary is the one that wins. Records that a
lagging replica still holds for that day arrive too late and are discarded. If
two replicas seal different sets, the larger count wins, not their union.
Entries that were detailed for the whole window and exchanged by anti-entropy
are folded identically everywhere, so in practice this only touches replicas
partitioned longer than the detailed window plus the grace.

Cost
====

Per key: the detailed entries (unchanged), one record per entry still open
(``entry_id``, HLC, node id, label: roughly 60-200 bytes, for about
``seal_grace_s`` worth of entries) and one ``DaySummary`` per sealed day with
entries (about 40 bytes + labels; at most one per day of the summary window,
365 or 730). ``merge`` and ``compact`` are O(n) in the ids held, like
``EventLog.merge``; encoding sorts, O(n log n).

Archives
========

For archival policies, :func:`compact` and :func:`absorb` return the whole
entries that leave the detailed log *on this replica* (``Step.archive``). The
caller writes them with :func:`write_archive` before persisting the compacted
state. Both owners archive the same entries; the file name carries a digest of
the content, so the same entries give the same file. Archives are
at-least-once: a reader deduplicates by ``entry_id``.

Limits
======

* An id appended twice with different HLCs (a retried append) is counted once
  while its older copy is detailed or open: the newer copy replaces it. If the
  older copy's day was sealed before the newer copy arrived, both are counted
  (the sealed count does not know ids).
* Entries whose day is already sealed on another replica are dropped, not
  counted, when they arrive (see Accuracy).
* The labels per day are not capped in number; a payload ``"type"`` with
  unbounded cardinality makes summaries as large as the records.
* ``compact`` must see the composite state. Merging two bare EventLogs drops
  entries below the watermark without folding them. Wrap a bare log or delta
  with :meth:`RetainedLog.wrap` before merging.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import json
import os
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack

from crdt import CodecError, EventLog, LogEntry, Payload, Timestamp, UnsupportedVersionError

__all__ = [
    "DAY_NS",
    "DAY_S",
    "PERMANENT_DETAILED_S",
    "POLICIES",
    "SEAL_GRACE_S",
    "SPEC_POLICIES",
    "ArchiveContents",
    "ArchiveFormatError",
    "DaySummary",
    "Folded",
    "RetainedLog",
    "RetentionPolicy",
    "Step",
    "UnknownRetentionPolicy",
    "absorb",
    "archive_is_expired",
    "archive_name",
    "compact",
    "encode_archive",
    "floors",
    "label_of",
    "parse_archive",
    "parse_policy",
    "policy_for_key",
    "write_archive",
]

DAY_S: Final = 86_400
DAY_NS: Final = DAY_S * 1_000_000_000
YEAR_DAYS: Final = 365

SEAL_GRACE_S: Final = 7 * DAY_S
"""Open phase after the detailed cut-off, 7 days: a record folded on one
replica is merged exactly with another replica's during it. Longer costs one
record per entry for longer. Shorter loses late partial folds sooner."""

PERMANENT_DETAILED_S: Final = YEAR_DAYS * DAY_S
"""Hot window of ``permanent_with_archival``, one year (our choice; the spec gives
none). Longer keeps more revisions queryable through the API. Shorter sends them to
the archive files sooner."""

MAX_LABEL_CHARS: Final = 64
"""Labels longer than this are cut, so one odd payload cannot bloat a summary."""


class UnknownRetentionPolicy(ValueError):
    """A retention policy string that :func:`parse_policy` does not understand."""


class ArchiveFormatError(ValueError):
    """Bytes given to :func:`parse_archive` are not an archive this module wrote."""


# -- policies ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """One subspace's retention, in seconds (whole days). Checked at construction."""

    detailed_s: int  # age until which entries stay whole in the detailed log
    summary_s: int | None  # age until which per-day summaries live; None = no summary
    archive: bool  # whether entries leaving the detailed log are archived
    archive_s: int | None  # age until which archive files live; None = forever
    seal_grace_s: int = SEAL_GRACE_S  # open phase before a summary day is sealed

    def __post_init__(self) -> None:
        for name in ("detailed_s", "summary_s", "archive_s", "seal_grace_s"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value % DAY_S:
                raise ValueError(f"{name} must be a whole number of days in seconds, got {value}")
            if value < 0 or (value == 0 and name != "seal_grace_s"):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.summary_s is not None and self.summary_s <= self.detailed_s:
            raise ValueError("summary_s must be longer than detailed_s")
        if self.archive_s is not None and not self.archive:
            raise ValueError("archive_s given for a policy that does not archive")
        if self.archive_s is not None and self.archive_s <= self.detailed_s:
            raise ValueError("archive_s must be longer than detailed_s")

    @property
    def detailed_days(self) -> int:
        return self.detailed_s // DAY_S


_POLICY_RE = re.compile(
    r"(?P<n>[1-9][0-9]*)_days?_detailed"
    r"(?:_(?P<m>[1-9][0-9]*)_(?P<unit>years?|days?)_(?P<kind>summary|archive))?"
)


def parse_policy(text: str) -> RetentionPolicy:
    """The policy named by a spec string such as ``"90_days_detailed_1_year_summary"``.

    Raises:
        UnknownRetentionPolicy: ``text`` is not in the grammar of the module docstring.
    """
    if text == "permanent_with_archival":
        return RetentionPolicy(PERMANENT_DETAILED_S, None, True, None)
    match = _POLICY_RE.fullmatch(text)
    if match is None:
        raise UnknownRetentionPolicy(
            f"unknown retention policy {text!r}; expected permanent_with_archival, "
            "<N>_days_detailed, or <N>_days_detailed_<M>_years_(summary|archive)"
        )
    detailed_s = int(match["n"]) * DAY_S
    if match["kind"] is None:
        return RetentionPolicy(detailed_s, None, False, None)
    per = YEAR_DAYS if match["unit"].startswith("year") else 1
    later_s = int(match["m"]) * per * DAY_S
    try:
        if match["kind"] == "summary":
            return RetentionPolicy(detailed_s, later_s, False, None)
        return RetentionPolicy(detailed_s, None, True, later_s)
    except ValueError as exc:
        raise UnknownRetentionPolicy(f"retention policy {text!r}: {exc}") from exc


SPEC_POLICIES: Final[Mapping[str, str]] = {
    "judgement_snapshots": "90_days_detailed_1_year_summary",
    "egg_revision_history": "permanent_with_archival",
    "job_resource_ledger": "180_days_detailed_2_years_summary",
    "job_event_log": "365_days_detailed",
    "worker_journal": "365_days_detailed_3_years_archive",
    "tadpole_activity_log": "90_days_detailed",
}
"""Subspace -> the spec's policy string, verbatim."""

POLICIES: Final[Mapping[str, RetentionPolicy]] = {
    subspace: parse_policy(text) for subspace, text in SPEC_POLICIES.items()
}
"""Subspace -> parsed policy."""


def policy_for_key(key: str) -> RetentionPolicy:
    """The policy of a population key ``<subspace>/<id>``; ValueError for another key."""
    subspace, _, rest = key.partition("/")
    policy = POLICIES.get(subspace)
    if policy is None or not rest:
        raise ValueError(f"{key!r} is not a population key <subspace>/<id>")
    return policy


def floors(policy: RetentionPolicy, now_ns: int) -> tuple[int, int, int]:
    """``(cut, seal_floor, expire_floor)`` as day numbers for ``now_ns``.

    Entries on days before ``cut`` leave the detailed log (the watermark is the start
    of day ``cut``); open records on days before ``seal_floor`` are sealed; everything
    on days before ``expire_floor`` is gone. Every value is clamped at 0.
    """
    today = now_ns // DAY_NS
    cut = max(0, today - policy.detailed_days)
    if policy.summary_s is None:
        return cut, cut, cut
    expire = max(0, today - policy.summary_s // DAY_S)
    seal = max(0, cut - policy.seal_grace_s // DAY_S)
    return cut, seal, expire


# -- summaries -----------------------------------------------------------------------------


def label_of(payload: Payload) -> str:
    """The label a summary counts an entry under (see the module docstring)."""
    if isinstance(payload, dict):
        for name in ("type", "event"):
            value = payload.get(name)
            if isinstance(value, str):
                return value[:MAX_LABEL_CHARS]
    return ""


def _day(hlc: Timestamp) -> int:
    return hlc.wall_ns // DAY_NS


@dataclass(frozen=True, slots=True)
class Folded:
    """An entry that left the detailed log and is not sealed yet (an open record)."""

    hlc: Timestamp
    node_id: str
    label: str

    @property
    def day(self) -> int:
        return _day(self.hlc)

    def key(self) -> tuple[Timestamp, str, str]:
        return (self.hlc, self.node_id, self.label)

    @classmethod
    def of(cls, entry: LogEntry) -> Folded:
        return cls(entry.hlc, entry.node_id, label_of(entry.payload()))


@dataclass(frozen=True, slots=True)
class DaySummary:
    """What is left of one UTC day of a key's entries (see the module docstring)."""

    day: int  # days since 1970-01-01 UTC
    count: int
    first: Timestamp
    last: Timestamp
    labels: tuple[tuple[str, int], ...]  # (label, count), sorted by label, counts > 0

    def rank(self) -> tuple[int, Timestamp, Timestamp, tuple[tuple[str, int], ...]]:
        """The total order in which two sealings of the same day are joined (max wins)."""
        return (self.count, self.first, self.last, self.labels)

    @property
    def date(self) -> datetime.date:
        return _date(self.day)

    @classmethod
    def of(cls, day: int, records: Iterable[Folded]) -> DaySummary:
        recs = list(records)
        if not recs:
            raise ValueError("a day summary needs at least one record")
        per: dict[str, int] = {}
        for rec in recs:
            per[rec.label] = per.get(rec.label, 0) + 1
        return cls(
            day,
            len(recs),
            min(r.hlc for r in recs),
            max(r.hlc for r in recs),
            tuple(sorted(per.items())),
        )


def _greater(a: DaySummary | None, b: DaySummary) -> DaySummary:
    return b if a is None or b.rank() > a.rank() else a


# -- the composite state ---------------------------------------------------------------------


_MAGIC: Final = b"TR"
_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class RetainedLog:
    """A key's detailed log plus its summary; a join-semilattice (module docstring).

    A value like the crdt types: frozen, ``merge`` pure, canonical bytes. Not a
    :class:`crdt.CRDTBase` (its codec tags belong to ``crdt``); it has its own
    versioned frame, magic ``TR``.
    """

    detailed: EventLog = field(default_factory=EventLog)
    folded: Mapping[str, Folded] = field(default_factory=dict)
    sealed: Mapping[int, DaySummary] = field(default_factory=dict)
    seal_floor: int = 0
    expire_floor: int = 0

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    @classmethod
    def wrap(cls, log: EventLog) -> RetainedLog:
        """A bare EventLog (a stored state or an append delta) as a RetainedLog."""
        return cls(detailed=log)

    def append(self, hlc: Timestamp, node_id: str, entry_id: str, payload: Payload) -> RetainedLog:
        """Delta appending one entry (``EventLog.append``; refused below the watermark)."""
        return RetainedLog(self.detailed.append(hlc, node_id, entry_id, payload))

    def entries(self) -> tuple[LogEntry, ...]:
        """The detailed entries, in log order."""
        return self.detailed.value()

    def summaries(self) -> tuple[DaySummary, ...]:
        """One summary per day with folded entries, sealed or open, by day."""
        open_days: dict[int, list[Folded]] = {}
        for rec in self.folded.values():
            open_days.setdefault(rec.day, []).append(rec)
        out = [DaySummary.of(day, recs) for day, recs in open_days.items()]
        out.extend(self.sealed.values())
        return tuple(sorted(out, key=lambda s: s.day))

    def merge(self, other: RetainedLog) -> RetainedLog:
        """The join: commutative, associative, idempotent; ``RetainedLog()`` is identity."""
        return _join(self, other, seal=False)[0]

    def to_bytes(self) -> bytes:
        """Canonical frame: ``b"TR"``, version byte, msgpack body, crc32 (big-endian)."""
        body = [
            self.detailed.to_bytes(),
            self.seal_floor,
            self.expire_floor,
            [[i, r.hlc.to_wire(), r.node_id, r.label] for i, r in sorted(self.folded.items())],
            [
                [s.day, s.count, s.first.to_wire(), s.last.to_wire(), [list(p) for p in s.labels]]
                for _, s in sorted(self.sealed.items())
            ],
        ]
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        head = _MAGIC + bytes([_VERSION]) + packed
        return head + struct.pack(">I", zlib.crc32(head))

    @classmethod
    def from_bytes(cls, data: bytes) -> RetainedLog:
        """Decode :meth:`to_bytes` output.

        Raises:
            UnsupportedVersionError: a newer frame version.
            CodecError: anything else wrong (checksum, structure, broken invariant,
                non-canonical encoding).
        """
        if len(data) < 8 or data[:2] != _MAGIC:
            raise CodecError("not a retained log (bad magic or too short)")
        if data[2] > _VERSION:
            raise UnsupportedVersionError(data[2], _VERSION)
        if struct.unpack(">I", data[-4:])[0] != zlib.crc32(data[:-4]):
            raise CodecError("retained log checksum mismatch")
        try:
            state = _from_body(msgpack.unpackb(data[3:-4], raw=False, strict_map_key=True))
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(f"malformed retained log: {exc}") from exc
        if state.to_bytes() != data:
            raise CodecError("retained log encoding is not canonical")
        return state


def _nat(obj: Any, what: str) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or obj < 0:
        raise CodecError(f"{what} must be a non-negative integer")
    return obj


def _text(obj: Any, what: str) -> str:
    if not isinstance(obj, str):
        raise CodecError(f"{what} must be a string")
    return obj


def _from_body(body: Any) -> RetainedLog:
    log_bytes, seal_floor, expire_floor, folded_wire, sealed_wire = body
    detailed = EventLog.from_bytes(log_bytes)
    seal_floor = _nat(seal_floor, "seal floor")
    expire_floor = _nat(expire_floor, "expire floor")
    mark = detailed.watermark
    folded: dict[str, Folded] = {}
    for entry_id, hlc, node_id, label in folded_wire:
        rec = Folded(Timestamp.from_wire(hlc), _text(node_id, "node id"), _text(label, "label"))
        entry_id = _text(entry_id, "entry id")
        if rec.day < max(seal_floor, expire_floor) or mark is None or rec.hlc >= mark:
            raise CodecError(f"open record {entry_id!r} outside the open window")
        if entry_id in detailed:
            raise CodecError(f"open record {entry_id!r} shadowed by a detailed entry")
        folded[entry_id] = rec
    sealed: dict[int, DaySummary] = {}
    for day, count, first, last, labels in sealed_wire:
        pairs = tuple((_text(lab, "label"), _nat(n, "label count")) for lab, n in labels)
        summary = DaySummary(
            _nat(day, "day"),
            _nat(count, "count"),
            Timestamp.from_wire(first),
            Timestamp.from_wire(last),
            pairs,
        )
        consistent = (
            expire_floor <= day < seal_floor
            and count == sum(n for _, n in pairs) > 0
            and all(n > 0 for _, n in pairs)
            and [lab for lab, _ in pairs] == sorted({lab for lab, _ in pairs})
            and _day(summary.first) == day == _day(summary.last)
            and summary.first <= summary.last
        )
        if not consistent:
            raise CodecError(f"sealed summary for day {day} is inconsistent")
        sealed[day] = summary
    return RetainedLog(detailed, folded, sealed, seal_floor, expire_floor)


# -- join, compaction ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """Result of :func:`compact` / :func:`absorb`: the new state, and what to archive."""

    state: RetainedLog
    archive: tuple[LogEntry, ...]  # entries that left the detailed log here, in log order


def _join(a: RetainedLog, b: RetainedLog, *, seal: bool) -> tuple[RetainedLog, list[LogEntry]]:
    """(join of ``a`` and ``b`` in normal form, whole entries that left ``detailed``).

    With ``seal``, open records on days from ``a.seal_floor`` up to the joined
    ``seal_floor`` are sealed into day summaries instead of dropped (compaction's
    inflation). Records on days ``a`` had already sealed are dropped either way.
    """
    marks = [m for m in (a.detailed.watermark, b.detailed.watermark) if m is not None]
    mark = max(marks) if marks else None
    seal_floor = max(a.seal_floor, b.seal_floor)
    expire_floor = max(a.expire_floor, b.expire_floor)
    keep_from = max(seal_floor, expire_floor)

    whole: dict[str, LogEntry] = dict(a.detailed.entries)
    for i, e in b.detailed.entries.items():
        mine = whole.get(i)
        if mine is None or e.key() > mine.key():
            whole[i] = e
    recs: dict[str, Folded] = dict(a.folded)
    for i, r in b.folded.items():
        mine_r = recs.get(i)
        if mine_r is None or r.key() > mine_r.key():
            recs[i] = r

    detailed: dict[str, LogEntry] = {}
    left: list[LogEntry] = []
    for i, e in whole.items():
        if mark is None or e.hlc >= mark:
            detailed[i] = e
            recs.pop(i, None)  # a whole copy at or above W beats any record of its id
            continue
        rec = Folded.of(e)
        mine_r = recs.get(i)
        if mine_r is None or rec.key() > mine_r.key():
            recs[i] = rec
            left.append(e)

    sealed: dict[int, DaySummary] = {
        d: s for d, s in a.sealed.items() if d >= expire_floor and d < seal_floor
    }
    for d, s in b.sealed.items():
        if expire_floor <= d < seal_floor:
            sealed[d] = _greater(sealed.get(d), s)

    folded: dict[str, Folded] = {}
    to_seal: dict[int, list[Folded]] = {}
    for i, r in recs.items():
        day = r.day
        if day >= keep_from:
            folded[i] = r
        elif seal and max(expire_floor, a.seal_floor) <= day < seal_floor:
            to_seal.setdefault(day, []).append(r)
    for day, day_recs in to_seal.items():
        sealed[day] = _greater(sealed.get(day), DaySummary.of(day, day_recs))

    left.sort(key=LogEntry.key)
    return RetainedLog(EventLog(mark, detailed), folded, sealed, seal_floor, expire_floor), left


def compact(state: RetainedLog, policy: RetentionPolicy, now_ns: int) -> Step:
    """Apply ``policy`` at ``now_ns``: fold, seal and expire (idempotent within a UTC day).

    ``Step.archive`` holds the entries that left the detailed log, when the policy
    archives (else it is empty); write them before persisting ``Step.state``.
    """
    cut, seal_floor, expire_floor = floors(policy, now_ns)
    if cut == 0:
        return Step(state, ())
    bound = RetainedLog(EventLog(Timestamp(cut * DAY_NS, 0)), {}, {}, seal_floor, expire_floor)
    new, left = _join(state, bound, seal=True)
    return Step(new, tuple(left) if policy.archive else ())


def absorb(local: RetainedLog, remote: RetainedLog, policy: RetentionPolicy) -> Step:
    """``local.merge(remote)``, also returning what left the detailed log (archival policies).

    ``remote`` may be a whole state or a delta; an entry of either side that falls
    below the joined watermark is returned so this replica archives it too. The
    archive is at-least-once; its file names deduplicate identical batches.
    """
    new, left = _join(local, remote, seal=False)
    return Step(new, tuple(left) if policy.archive else ())


# -- archives ----------------------------------------------------------------------------------

_ARCHIVE_FORMAT: Final = "tadpole-retention-archive"
_ARCHIVE_VERSION: Final = 1
_ARCHIVE_NAME_RE = re.compile(
    r"(?P<subspace>[a-z_]+)\.(?P<keyhash>[0-9a-f]{16})\."
    r"(?P<first>[0-9]{8})-(?P<last>[0-9]{8})\.(?P<digest>[0-9a-f]{16})\.jsonl\.gz"
)
_EPOCH: Final = datetime.date(1970, 1, 1)


def _date(day: int) -> datetime.date:
    return _EPOCH + datetime.timedelta(days=day)


@dataclass(frozen=True, slots=True)
class ArchiveContents:
    """What :func:`parse_archive` reads back."""

    subspace: str
    key: str
    entries: tuple[LogEntry, ...]


def _canonical_entries(entries: Iterable[LogEntry]) -> tuple[LogEntry, ...]:
    best: dict[str, LogEntry] = {}
    for e in entries:
        mine = best.get(e.entry_id)
        if mine is None or e.key() > mine.key():
            best[e.entry_id] = e
    return tuple(sorted(best.values(), key=LogEntry.key))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _entry_line(e: LogEntry) -> str:
    line: dict[str, Any] = {"entry_id": e.entry_id, "hlc": e.hlc.to_wire(), "node": e.node_id}
    payload = e.payload()
    try:
        text = _dumps(payload)
        again = EventLog().append(e.hlc, e.node_id, e.entry_id, json.loads(text))
        exact = again.entries[e.entry_id].blob == e.blob
    except (TypeError, ValueError):
        exact = False
    if exact:
        line["payload"] = payload
    else:  # bytes, NaN, ...: JSON cannot carry it; keep the canonical msgpack
        line["payload_msgpack_b64"] = base64.b64encode(e.blob).decode("ascii")
    return _dumps(line)


def encode_archive(subspace: str, key: str, entries: Iterable[LogEntry]) -> bytes:
    """The uncompressed JSON-lines body of an archive. Pure and deterministic.

    Line 1 is a header ``{"format", "version", "subspace", "key", "entries",
    "first_day", "last_day"}``; then one line per entry (deduplicated by id, in log
    order): ``{"entry_id", "hlc": [wall_ns, logical], "node", "payload"}``, or
    ``"payload_msgpack_b64"`` instead of ``"payload"`` when JSON cannot reproduce the
    payload exactly (bytes, non-finite floats).

    Raises:
        ValueError: no entries, or ``subspace`` is not a population subspace.
    """
    if subspace not in POLICIES:
        raise ValueError(f"{subspace!r} is not a population subspace")
    canon = _canonical_entries(entries)
    if not canon:
        raise ValueError("nothing to archive")
    header = {
        "format": _ARCHIVE_FORMAT,
        "version": _ARCHIVE_VERSION,
        "subspace": subspace,
        "key": key,
        "entries": len(canon),
        "first_day": _date(_day(canon[0].hlc)).isoformat(),
        "last_day": _date(max(_day(e.hlc) for e in canon)).isoformat(),
    }
    lines = [_dumps(header), *(_entry_line(e) for e in canon)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def archive_name(subspace: str, key: str, body: bytes) -> str:
    """``<subspace>.<key hash>.<first day>-<last day>.<content digest>.jsonl.gz``.

    Days are ``YYYYMMDD`` (UTC) of the first and last entry in ``body`` (an
    :func:`encode_archive` result); the hashes are sha256 prefixes (16 hex digits).
    """
    header = json.loads(body.split(b"\n", 1)[0])
    first = header["first_day"].replace("-", "")
    last = header["last_day"].replace("-", "")
    keyhash = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    digest = hashlib.sha256(body).hexdigest()[:16]
    return f"{subspace}.{keyhash}.{first}-{last}.{digest}.jsonl.gz"


def parse_archive(data: bytes) -> ArchiveContents:
    """Read an archive file's bytes (gzip) back into entries. Pure.

    Raises:
        ArchiveFormatError: not gzip, not our format or version, or a bad line.
    """
    try:
        lines = gzip.decompress(data).decode("utf-8").splitlines()
        header = json.loads(lines[0])
        if header.get("format") != _ARCHIVE_FORMAT or header.get("version") != _ARCHIVE_VERSION:
            raise ArchiveFormatError("not a version 1 retention archive")
        entries: list[LogEntry] = []
        for line in lines[1:]:
            obj = json.loads(line)
            hlc = Timestamp.from_wire(obj["hlc"])
            if "payload_msgpack_b64" in obj:
                payload = msgpack.unpackb(
                    base64.b64decode(obj["payload_msgpack_b64"], validate=True), raw=False
                )
            else:
                payload = obj["payload"]
            delta = EventLog().append(hlc, obj["node"], obj["entry_id"], payload)
            entries.extend(delta.entries.values())
        if len(entries) != header["entries"]:
            raise ArchiveFormatError("entry count does not match the header")
        return ArchiveContents(str(header["subspace"]), str(header["key"]), tuple(entries))
    except ArchiveFormatError:
        raise
    except Exception as exc:
        raise ArchiveFormatError(f"unreadable archive: {exc}") from exc


def archive_is_expired(name: str, policy: RetentionPolicy, now_ns: int) -> bool:
    """Whether archive file ``name`` is past the policy's ``archive_s`` (by its last day).

    False for a policy that keeps archives forever. ValueError for a foreign name.
    """
    match = _ARCHIVE_NAME_RE.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a retention archive file name")
    if policy.archive_s is None:
        return False
    last = datetime.datetime.strptime(match["last"], "%Y%m%d").date()
    return (last - _EPOCH).days < now_ns // DAY_NS - policy.archive_s // DAY_S


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_archive(
    directory: Path | str, subspace: str, key: str, entries: Iterable[LogEntry], now_ns: int
) -> Path:
    """Write ``entries`` as a gzip'd JSON-lines archive in ``directory``; return its path.

    The only I/O in this module. Durable on return: the file is written to a
    temporary name, fsynced, renamed into place and the directory fsynced. The
    content and name depend only on ``(subspace, key, entries)``, so a second call
    with the same entries (in any order, duplicates included) finds the file and
    changes nothing. ``now_ns`` only names the temporary file. Creates
    ``directory`` if missing.

    Raises:
        ValueError: as :func:`encode_archive`.
        OSError: the write failed; no file by the final name is left half-written.
    """
    body = encode_archive(subspace, key, entries)
    data = gzip.compress(body, compresslevel=9, mtime=0)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / archive_name(subspace, key, body)
    try:
        if path.read_bytes() == data:
            _fsync_dir(folder)  # a crash may have come between rename and fsync
            return path
    except FileNotFoundError:
        pass
    tmp = folder / f".{path.name}.{now_ns}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(folder)
    return path
