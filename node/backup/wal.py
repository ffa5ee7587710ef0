"""Point-in-time recovery of the system tier: its committed changes, archived.

The leader's archiver (:class:`WalArchiver`, with scheduled backups) follows the system
tier's change history (``SystemBackend.history``: every revision's events, each with the
whole key-value it wrote) and seals it into the repository in *segments*, each covering
a contiguous run of revisions, as they fill (``seal_events``) or age (``seal_s``). A
restore then takes the newest backup at or before the target and replays the archived
revisions after it, up to revision N (``--to-revision``) or to the last revision
committed at or before a time T (``--to-time``): :func:`replay` rebuilds exactly the
state after N, because an event carries the key-value (with its create and mod revision
and version) as the state machine stored it.

Segment (plaintext, msgpack; stored sealed like a chunk, ``wal/<timeline>/<first>-<last>``)::

    [1, first, last, [[revision, observed_ns, [[type, key, value, create, mod, version],
                                               ...]], ...]]

``observed_ns`` is the archiver's clock when it read the revision, within a second of its
commit (the state machine keeps no clock): ``--to-time`` resolves to revisions by it.

Where the archive is in the repository is its own progress: the archiver resumes after
the highest sealed revision, so a new leader carries on where the last one stopped. When
it finds that the history it needs was compacted away (it was down longer than the
history holds), it records a *gap* (``wal/<timeline>/gap-<first>-<last>``), and a
restore that needs the lost revisions is refused. Timelines (:func:`timeline_of`) keep
a restored cluster's archive apart from its predecessor's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from consensus.backend import SystemBackend
from consensus.errors import CompactedError, ConsensusError
from consensus.statemachine import Event, EventType, KeyValue, SystemStateMachine
from node.backup import seal
from node.backup.archive import BackupError
from node.backup.layout import ORIGIN, SCHEDULE_KEY, TIMELINE_KEY
from node.backup.repository import Repository
from node.replication.background import Background

log = logging.getLogger(__name__)

SEGMENT_FORMAT: Final = 1
_SEGMENT_MAX: Final = 1 << 30  # plaintext bound when opening a segment
_NAME = re.compile(r"^wal/([0-9a-z]{1,32})/(gap-)?([0-9]{20})-([0-9]{20})$")

# One archived revision: (revision, observed_ns, events)
Revision = tuple[int, int, list[Event]]


@dataclass(frozen=True, slots=True)
class Segment:
    first: int
    last: int
    gap: bool = False
    timeline: str = ORIGIN

    @property
    def name(self) -> str:
        kind = "gap-" if self.gap else ""
        return f"wal/{self.timeline}/{kind}{self.first:020d}-{self.last:020d}"


def parse_name(name: str) -> Segment | None:
    m = _NAME.match(name)
    if m is None:
        return None
    return Segment(int(m.group(3)), int(m.group(4)), bool(m.group(2)), m.group(1))


def timeline_of(state: SystemStateMachine) -> str:
    """The history a system-tier state belongs to: a cluster restored from a backup is
    a new timeline (``stamp_timeline``), so its revisions, which restart from the
    backup's, never mix in the archive with the revisions its predecessor went on to
    write under the same numbers."""
    kv = state.get(TIMELINE_KEY)
    return kv.value.decode("ascii", "replace") if kv is not None else ORIGIN


def stamp_timeline(state: SystemStateMachine, timeline: str) -> SystemStateMachine:
    """``state`` as a restore seeds it: on a new timeline, and without the schedule's
    state (its claims belong to the old cluster's terms)."""
    data = {kv.key: kv for kv in state.items() if kv.key != SCHEDULE_KEY}
    revision = max(state.revision, 1)
    data[TIMELINE_KEY] = KeyValue(TIMELINE_KEY, timeline.encode(), revision, revision, 1)
    return SystemStateMachine(revision=revision, compact_revision=revision, _data=data)


def _event_row(e: Event) -> list[Any]:
    kv = e.kv
    return [int(e.type), kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version]


def encode_segment(revisions: Sequence[Revision]) -> bytes:
    body = [[rev, at, [_event_row(e) for e in events]] for rev, at, events in revisions]
    data: bytes = msgpack.packb(
        [SEGMENT_FORMAT, revisions[0][0], revisions[-1][0], body], use_bin_type=True
    )
    return data


def decode_segment(data: bytes, where: str) -> list[Revision]:
    try:
        fmt, first, last, body = msgpack.unpackb(data, raw=False)
        if fmt != SEGMENT_FORMAT:
            raise BackupError(f"{where}: segment format {fmt!r}; this version reads 1")
        out: list[Revision] = []
        for rev, at, events in body:
            out.append((int(rev), int(at), [
                Event(EventType(t), KeyValue(k, bytes(v), int(c), int(m), int(ver)), None)
                for t, k, v, c, m, ver in events
            ]))  # fmt: skip
    except BackupError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BackupError(f"{where}: malformed segment ({exc})") from exc
    if not out or out[0][0] != first or out[-1][0] != last:
        raise BackupError(f"{where}: its revisions do not match its header")
    return out


def replay(
    state: SystemStateMachine,
    revisions: Iterable[Revision | Segment],
    *,
    to_revision: int | None = None,
    to_time_ns: int | None = None,
) -> SystemStateMachine:
    """``state`` (at some revision R) with the archived revisions after R applied, in
    order, up to ``to_revision`` or the last observed at or before ``to_time_ns``.
    Raises BackupError if a revision between R and the target is missing, or if the
    replay reaches a gap (a :class:`Segment` marking revisions never archived) that the
    target needs -- for a time, any gap reached, since the lost revisions' times are
    unknown."""
    data = {kv.key: kv for kv in state.items()}
    revision = state.revision
    for item in revisions:
        if isinstance(item, Segment):
            if item.last <= revision or (to_revision is not None and item.first > to_revision):
                continue
            raise BackupError(
                f"revisions {item.first}..{item.last} were never archived (the archiver "
                "was away longer than the system tier's history holds); restore to a point "
                "before them, or after a backup taken since"
            )
        rev, at, events = item
        if rev <= revision:
            continue  # already in the base (segments overlap after a leader change)
        if to_revision is not None and rev > to_revision:
            break
        if to_time_ns is not None and at > to_time_ns:
            break
        if rev != revision + 1:
            raise BackupError(f"the archive misses revisions {revision + 1}..{rev - 1}")
        for event in events:
            if event.type == EventType.PUT:
                data[event.kv.key] = event.kv
            else:
                data.pop(event.kv.key, None)
        revision = rev
    if to_revision is not None and revision < to_revision:
        raise BackupError(
            f"the archive reaches revision {revision}, not {to_revision} (it is sealed every "
            "few seconds; the newest revisions may not be in it yet)"
        )
    return SystemStateMachine(revision=revision, compact_revision=revision, _data=data)


def segments(repo: Repository, timeline: str | None = None) -> list[Segment]:
    """The archive's segments and gaps (of one timeline, or of all), by first revision."""
    found = [parse_name(n) for n in repo.store.names("wal")]
    return sorted(
        (s for s in found if s is not None and timeline in (None, s.timeline)),
        key=lambda s: (s.timeline, s.first, s.last),
    )


def timelines(repo: Repository) -> list[str]:
    return sorted({s.timeline for s in segments(repo)})


def archived_through(repo: Repository, timeline: str = ORIGIN) -> int:
    """The highest revision the timeline's archive holds or has declared lost (0: none)."""
    return max((s.last for s in segments(repo, timeline)), default=0)


def load(
    repo: Repository, identities: Sequence[Any], timeline: str, after: int, through: int | None
) -> list[Revision | Segment]:
    """The timeline's archived revisions after ``after`` (through ``through``, None: all)
    in order, read from the segments that cover them, with its gaps as markers in their
    place (:func:`replay` refuses one only if it needs what the gap lost)."""
    out: list[Revision | Segment] = []
    for segment in segments(repo, timeline):
        if segment.last <= after or (through is not None and segment.first > through):
            continue
        if segment.gap:
            out.append(segment)
            continue
        where = repo.store.describe(segment.name)
        try:
            plain = seal.unseal(repo.store.get(segment.name), identities, max_size=_SEGMENT_MAX)
        except seal.SealError as exc:
            raise BackupError(f"{where}: {exc}") from exc
        out.extend(decode_segment(plain, where))
    out.sort(key=_position)
    return out


def _position(item: Revision | Segment) -> tuple[int, int]:
    return (item.first, 0) if isinstance(item, Segment) else (item[0], 1)


def prune(
    repo: Repository, *, kept: set[str] | None = None, dry_run: bool = False
) -> list[Segment]:
    """Delete the segments no backup left in the repository can use: a point-in-time
    restore starts from a backup of the same timeline and replays what came after it,
    so a segment (or gap) of a timeline ending at or before the oldest such backup's
    revision -- or of a timeline with no backup at all -- is never read. ``kept``: the
    backups that will remain (default: every one there). Under the repository's lock."""
    manifests, bad = repo.manifests()
    if bad:
        raise BackupError("refusing to prune the archive: some manifests can't be read")
    floor: dict[str, int] = {}
    for m in manifests:
        if kept is not None and m.id not in kept:
            continue
        floor[m.timeline] = min(floor.get(m.timeline, m.revision), m.revision)
    dead = [s for s in segments(repo) if s.timeline not in floor or s.last <= floor[s.timeline]]
    if not dry_run:
        for segment in dead:
            repo.store.delete(segment.name)
    return dead


def verify(repo: Repository, identities: Sequence[Any] | None) -> list[str]:
    """Problems with the archive: revisions no segment holds (other than recorded gaps),
    and, with ``identities``, segments that do not decrypt or decode or whose revisions
    do not match their name. Each names the segment's file."""
    problems: list[str] = []
    reached: dict[str, int] = {}
    for segment in segments(repo):
        where = repo.store.describe(segment.name)
        last = reached.get(segment.timeline, 0)
        if last and segment.first > last + 1:
            problems.append(
                f"timeline {segment.timeline}: revisions {last + 1}..{segment.first - 1} "
                "are in no segment"
            )
        reached[segment.timeline] = max(last, segment.last)
        if segment.gap or identities is None:
            continue
        try:
            plain = seal.unseal(repo.store.get(segment.name), identities, max_size=_SEGMENT_MAX)
            revisions = decode_segment(plain, where)
        except (OSError, seal.SealError, BackupError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        if (revisions[0][0], revisions[-1][0]) != (segment.first, segment.last):
            problems.append(f"{where}: holds revisions {revisions[0][0]}..{revisions[-1][0]}")
    return problems


class WalArchiver(Background):
    """Follows the system tier on the leader and seals its changes into the repository."""

    task_name = "wal-archiver"

    def __init__(
        self,
        system: SystemBackend,
        repo_path: str,
        recipients: Sequence[str],
        *,
        seal_events: int = 10_000,
        seal_s: float = 10.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.system = system
        self.repo_path = repo_path
        self.recipients = list(recipients)
        self.seal_events = seal_events
        self.seal_s = seal_s
        self.clock = clock
        self.buffer: list[Revision] = []
        self.next_revision = 0  # the first revision not yet read (0: ask the repository)
        self.sealed = 0  # segments this node sealed
        self.gaps = 0
        self.archived = 0  # the highest revision archived, as last known
        self.timeline = ORIGIN  # read from the system tier when (re)starting

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except (ConsensusError, TimeoutError, OSError, BackupError) as exc:
                log.warning("wal archiver: %s", exc)
                self._start_over()
            except Exception:  # a bad repository or key: keep trying, loudly
                log.exception("wal archiver round failed")
                self._start_over()
            await asyncio.sleep(min(1.0, self.seal_s / 4))

    def _start_over(self) -> None:
        """Forget the buffer; the next step resumes from what the repository holds."""
        self.buffer.clear()
        self.next_revision = 0

    def _repo(self) -> Repository:
        return Repository.local(self.repo_path, create=True)

    async def step(self) -> None:
        """Read what is new (on the leader only), seal if full or old enough."""
        if self.system.info().role != "leader":
            self.buffer.clear()
            self.next_revision = 0
            return
        if self.next_revision == 0:
            kv, _ = await self.system.get(TIMELINE_KEY, linearizable=True, timeout=10.0)
            self.timeline = kv.value.decode("ascii", "replace") if kv is not None else ORIGIN
            self.archived = await asyncio.to_thread(
                lambda: archived_through(self._repo(), self.timeline)
            )
            self.next_revision = self.archived + 1
        try:
            events, complete_to, _more = await self.system.history(
                "", prefix=True, start_revision=self.next_revision, limit=self.seal_events,
                timeout=10.0,
            )  # fmt: skip
        except CompactedError as exc:
            await self._seal_gap(self.next_revision, exc.compact_revision)
            return
        now = self.clock()
        by_revision: dict[int, list[Event]] = {}
        for event in events:
            by_revision.setdefault(event.kv.mod_revision, []).append(event)
        for rev in sorted(by_revision):
            self.buffer.append((rev, now, by_revision[rev]))
        self.next_revision = max(self.next_revision, complete_to + 1)
        if self.buffer and (
            sum(len(e) for _, _, e in self.buffer) >= self.seal_events
            or now - self.buffer[0][1] >= self.seal_s * 1e9
        ):
            await self._seal()

    async def _seal(self) -> None:
        batch, self.buffer = self.buffer, []
        plain = encode_segment(batch)
        keys = [seal.parse_recipient(r) for r in self.recipients]
        segment = Segment(batch[0][0], batch[-1][0], timeline=self.timeline)

        def write() -> None:
            repo = self._repo()
            repo.store.put(segment.name, seal.seal(plain, keys))

        await asyncio.to_thread(write)
        self.sealed += 1
        self.archived = segment.last

    async def _seal_gap(self, first: int, compacted_through: int) -> None:
        segment = Segment(first, compacted_through, gap=True, timeline=self.timeline)
        log.error(
            "wal archiver: revisions %d..%d were compacted before they were archived; "
            "point-in-time recovery into them is impossible",
            first,
            compacted_through,
        )
        await asyncio.to_thread(lambda: self._repo().store.put(segment.name, b""))
        self.gaps += 1
        self.buffer.clear()
        self.next_revision = compacted_through + 1
        self.archived = compacted_through
