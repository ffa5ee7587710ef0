"""The system tier on pysyncobj: Raft with group commit and honest acknowledgements.

Threads::

    asyncio thread (node/)            Raft tick thread (this module)
    ─────────────────────             ──────────────────────────────
    propose(cmd, cb) ──queue──▶       loop:
    deliver(peer, frames) ─inbox─▶      1. transport.drain()   feed received messages
                                        2. proposals → entry   everything pending, one entry
                                        3. syncobj.doTick(0)   commit, apply (callbacks), append
                                        4. journal.sync()      ONE fsync for the whole tick
    sender(peer, frames) ◀─────────     5. transport.flush()   release held messages
                                        6. wait for work or the next tick
                                           (a tick that ends an election timeout
                                           or more after it was due is reported:
                                           stalls.py)

A leader swaps 4 and 5 when the tick changed no term or vote: its
append-entries leave first and its fsync overlaps the followers' (Raft thesis
§10.2.1).

pysyncobj is not thread-safe, so everything that touches it runs in the tick
thread; other threads talk to it through queues and a wake-up event.

Why this ordering is safe: an entry appended in tick *k* is fsynced at the
end of tick *k*, before any acknowledgement of it (follower) is sent. The
leader can count a follower's acknowledgement — and itself — at the earliest
in tick *k+1*, which starts after tick *k*'s fsync returned, so an entry is
committed (and the client's callback fired) only once it is on disk on a
majority, the leader's own copy included. Term and vote are synced before
anything is sent, so a vote never leaves before it is durable. One fsync
covers every entry of the tick: group commit.

Batching: the proposals pending when the tick runs become one log entry
(:func:`consensus.statemachine.encode_batch`), so a busy tick costs one
journal record, one append-entries item and one commit, not one per write; a
lone proposal is its own entry and goes out at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj import syncobj as _pysyncobj_module
from pysyncobj.config import FAIL_REASON, SERIALIZER_STATE
from pysyncobj.journal import Journal
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.node import Node

from consensus.atrest import (
    WRAPPED_BYTES,
    AtRestError,
    Keyring,
    SealedReader,
    SealedWriter,
    UnknownKeyError,
)
from consensus.backend import BackendInfo, PeerInfo
from consensus.durable import Histogram, fsync_dir
from consensus.errors import (
    CommandError,
    NotLeaderError,
    OutcomeUnknownError,
    ProposalError,
    SnapshotError,
)
from consensus.raft.journal import DurableJournal
from consensus.raft.quiet import MAX_QUIET_S, QuietLeader
from consensus.raft.reads import RaftView, ReadCallback, ReadIndex
from consensus.raft.stalls import Stall, TickStalls
from consensus.raft.transport import HeldTransport, Sender
from consensus.statemachine import (
    Batch,
    Command,
    CommandResult,
    SystemStateMachine,
    decode_entry,
    encode_batch,
    encode_command,
)

log = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"TPSNAP02"
SEALED_SNAPSHOT_MAGIC = b"TPSNAP03"  # encrypted at rest: see write_snapshot_file
_SNAPSHOT_AAD = b"tadpole raft snapshot"

T = TypeVar("T")
ProposalCallback = Callable[[CommandResult | None, ProposalError | None], None]


@dataclass(frozen=True, kw_only=True)
class RaftConfig:
    """Raft timing and log settings. Durations in seconds."""

    # Election timeout range (spec: 150-300 ms). Shorter detects a dead leader
    # sooner; too short elects spuriously when a process stalls (GC, fsync,
    # a busy 2-core machine).
    election_timeout_min_s: float = 0.15
    election_timeout_max_s: float = 0.30
    # Leader heartbeat. The spec says 50 ms, but pysyncobj insists (strictly)
    # that the minimum election timeout exceed three heartbeats, and 3 x 50 ms
    # is exactly 150 ms; 45 ms keeps the spec's election range.
    heartbeat_interval_s: float = 0.045
    # The longest the tick thread sleeps. It wakes for work (a command, a message)
    # at once and for pysyncobj's next timer (the leader's heartbeat, a follower's
    # election deadline) on time, so this only bounds how late anything else is
    # noticed (a finished snapshot, a one-second journal timer).
    idle_tick_s: float = 0.05
    # ... while something is in flight (a proposal, a read, a queued call, a snapshot
    # being written). With nothing in flight it sleeps up to this long instead: the
    # timers it keeps wake it on time regardless, and 20 empty ticks a second were a
    # tenth of an idle node's CPU.
    rest_tick_s: float = 1.0
    # Quiet heartbeats (consensus/raft/quiet.py): once the group has been at rest this
    # long (every follower connected and caught up, no writes, reads or elections), the
    # leader sends heartbeats every quiet_heartbeat_s instead, and followers wait 3-6
    # of them before campaigning. Anything that happens ends it at once. Costs failover
    # time while at rest when the leader is cut off without its connections closing
    # (about 3 s instead of 0.3 s); a crashed leader's closed link is noticed as fast
    # as ever. 0 turns quiet heartbeats off.
    quiet_after_s: float = 1.0
    quiet_heartbeat_s: float = 0.5
    # A leader that has not heard from a majority for this long steps down
    # (check-quorum). Clients of a partitioned old leader get UNAVAILABLE
    # after this, instead of waiting on writes that cannot commit.
    leader_fallback_s: float = 1.0
    # Snapshot (log compaction) when the log holds this many entries, or at
    # least this often. Larger = longer restarts; smaller = more snapshot I/O.
    snapshot_min_entries: int = 20_000
    snapshot_interval_s: float = 600.0
    # ... or when the journal holds this many bytes and at least as many as the last
    # snapshot (compaction_due). With proposal batching one entry carries up to
    # max_batch_bytes, so an entry count alone bounds neither the memory the log's
    # entries hold nor a restart's replay; this bounds both by the state's own size,
    # and a snapshot is written at most once per snapshot's worth of journal.
    snapshot_min_bytes: int = 8 << 20
    # Watch history kept in the state machine, in events.
    watch_history_events: int = 10_000
    # Max bytes of entries per append-entries message.
    max_append_bytes: int = 1 << 20
    # Proposal batching: the proposals pending when the tick thread runs become one
    # log entry, up to this many bytes of commands (a larger single command still goes
    # alone). Must stay well under max_append_bytes, or the entry would be sent in
    # pysyncobj's slower chunked form.
    max_batch_bytes: int = 256 << 10
    # Pre-vote (thesis §9.6): a node whose election timer fires asks the others first
    # and raises the term only if a majority would vote for it, so a node that was
    # starved or cut off cannot depose a healthy leader. Costs one round trip on a real
    # failover. Off only for a cluster that still has nodes without it (they would not
    # answer, and the new ones could then never be elected).
    pre_vote: bool = True
    # Linearizable reads by ReadIndex: one heartbeat round confirms leadership, no log
    # entry or fsync (consensus/raft/reads.py). Off: each batch of readers commits a
    # barrier entry instead -- for a cluster that still has nodes without ReadIndex
    # (they would not echo the round, and no read on the new nodes would be served).
    read_index: bool = True
    # Raft batches to each peer on one long-lived Peer.RaftStream instead of one unary
    # Peer.Raft call each (node/peer/links.py). Cheaper per exchange for the peer
    # (single-client puts ~12% faster), but the extra gRPC threads of a sync stream
    # cost more than they save under load on two cores (gets at 64 clients 14-22%
    # slower): off until that is solved. Nodes with it off still answer streams.
    stream_links: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.election_timeout_min_s < self.election_timeout_max_s:
            raise ValueError("need 0 < election_timeout_min_s < election_timeout_max_s")
        if not self.election_timeout_min_s > 3 * self.heartbeat_interval_s:
            raise ValueError(
                "election_timeout_min_s must exceed 3 x heartbeat_interval_s "
                f"({self.election_timeout_min_s} <= 3 x {self.heartbeat_interval_s})"
            )
        if self.leader_fallback_s <= self.heartbeat_interval_s:
            raise ValueError("leader_fallback_s must exceed heartbeat_interval_s")
        if not 0 < self.max_batch_bytes <= self.max_append_bytes // 2:
            raise ValueError("need 0 < max_batch_bytes <= max_append_bytes / 2")
        if self.rest_tick_s < self.idle_tick_s:
            raise ValueError("rest_tick_s must be at least idle_tick_s")
        if self.quiet_heartbeat_s and not (
            self.heartbeat_interval_s < self.quiet_heartbeat_s <= MAX_QUIET_S
        ):
            raise ValueError(
                f"quiet_heartbeat_s must be 0 (off) or more than heartbeat_interval_s and"
                f" at most {MAX_QUIET_S:g}"
            )
        if self.quiet_after_s < 0:
            raise ValueError("quiet_after_s must not be negative")
        if self.snapshot_min_bytes <= 0:
            raise ValueError("snapshot_min_bytes must be positive")


_ROLES = {0: "follower", 1: "candidate", 2: "leader"}
APPLY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def compaction_due(journal_bytes: int, snapshot_bytes: int, min_bytes: int) -> bool:
    """Whether the journal's size alone calls for a snapshot: it holds at least
    ``min_bytes`` and at least as many bytes as the last snapshot (``0`` if none).
    The log's memory and a restart's replay stay within the state's own size (or
    ``min_bytes``), and each snapshot is paid for by as many bytes of writes as it
    is large: writing snapshots at most doubles what the node writes."""
    return journal_bytes >= max(min_bytes, snapshot_bytes)


def known_leader(role: str, leader_id: str, silent_s: float, fallback_s: float) -> str:
    """The leader to report. pysyncobj keeps the last leader's id until another is
    elected, and a follower cut off from everyone (or losing every pre-vote) never
    starts an election, so it would name a dead leader forever: /healthz green,
    clients sent to a corpse. A follower that has not heard from its leader for
    ``fallback_s`` (the same bound a leader uses to step down) reports none."""
    if role != "leader" and silent_s > fallback_s:
        return ""
    return leader_id


_LEADER_STATE = 2  # pysyncobj's _RAFT_STATE.LEADER


def _proposal_error(reason: int) -> ProposalError:
    if reason in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER):
        return NotLeaderError("no leader is available right now")
    if reason == FAIL_REASON.QUEUE_FULL:
        err = NotLeaderError("the proposal queue is full")
        return err
    if reason == FAIL_REASON.DISCARDED:
        return NotLeaderError("a new leader discarded the command before it committed")
    if reason == FAIL_REASON.REQUEST_DENIED:
        return ProposalError("the request was denied")
    return OutcomeUnknownError(
        "leadership changed while the command was in flight; it may or may not have been applied"
    )


def _answer(callback: ProposalCallback, result: Any) -> None:
    if isinstance(result, CommandError):
        callback(None, ProposalError(str(result)))
    else:
        callback(result, None)


def _answer_one(callback: ProposalCallback) -> Callable[[Any, int], None]:
    def done(result: Any, reason: int) -> None:
        if reason == FAIL_REASON.SUCCESS:
            _answer(callback, result)
        else:
            callback(None, _proposal_error(reason))

    return done


def _answer_batch(callbacks: list[ProposalCallback]) -> Callable[[Any, int], None]:
    """pysyncobj's callback for a batch entry: each proposal gets its own result, or
    all get the entry's failure (the entry commits or fails as a whole)."""

    def done(results: Any, reason: int) -> None:
        if reason != FAIL_REASON.SUCCESS:
            error = _proposal_error(reason)
            for callback in callbacks:
                callback(None, error)
        elif isinstance(results, list) and len(results) == len(callbacks):
            for callback, result in zip(callbacks, results, strict=True):
                _answer(callback, result)
        else:  # the entry itself did not decode (cannot happen for our own encoding)
            error = ProposalError(f"batch entry not applied: {results}")
            for callback in callbacks:
                callback(None, error)

    return done


# pysyncobj builds its journal from ``conf.journalFile`` through a module-level
# factory; let it accept a ready journal object so ours is used.
_original_create_journal = _pysyncobj_module.createJournal


def _create_journal(journal_file: Any) -> Journal:
    if isinstance(journal_file, Journal):
        return journal_file
    return _original_create_journal(journal_file)


_pysyncobj_module.createJournal = _create_journal


class _Region:
    """Reads of a file up to ``end`` (the snapshot's state, without the checksum
    after it), for a streaming decoder."""

    def __init__(self, f: BinaryIO, end: int) -> None:
        self._f = f
        self._end = end

    def read(self, n: int = -1) -> bytes:
        left = self._end - self._f.tell()
        if left <= 0:
            return b""
        return self._f.read(left if n < 0 else min(n, left))


class ClosingTransmissions(dict[Any, Any]):
    """pysyncobj's table of snapshot transmissions, closing each file it drops.

    pysyncobj's serializer streams a snapshot to a follower from a file it
    opens per transmission, and forgets the transmission (``pop``) when it is
    sent, cancelled or failed without closing the file: each snapshot sent left
    a descriptor to the garbage collector (and a ``ResourceWarning``). Every
    way out of that table is ``pop``, so closing there closes every file.
    """

    def pop(self, key: Any, *default: Any) -> Any:
        entry = super().pop(key, *default)
        if isinstance(entry, dict) and entry.get("file") is not None:
            entry["file"].close()
        return entry

    def close_all(self) -> None:
        for key in list(self):
            self.pop(key)


def close_finished_transmissions(serializer: Any) -> ClosingTransmissions:
    """Install :class:`ClosingTransmissions` in a pysyncobj ``Serializer``."""
    table = ClosingTransmissions(serializer._Serializer__transmissions)
    serializer._Serializer__transmissions = table
    return table


class _ReplicatedSystem(SyncObj):  # type: ignore[misc]
    """The pysyncobj object. Its only replicated method applies an encoded command."""

    def __init__(self, backend: RaftBackend, *args: Any, **kwargs: Any) -> None:
        self._backend = backend
        super().__init__(*args, **kwargs)
        serializer = self._SyncObj__serializer
        self.transmissions = close_finished_transmissions(serializer)
        receive = serializer.setTransmissionData

        def install(data: Any) -> bool:
            # A leader's snapshot is renamed into place (by pysyncobj, in the tick thread)
            # on its last chunk; see RaftBackend._write_snapshot.
            with backend._snapshot_rename_lock:
                installed = bool(receive(data))
                if installed:
                    backend._snapshots_installed += 1
            return installed

        serializer.setTransmissionData = install

    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, payload: bytes) -> Any:
        result = self._backend._apply(payload)
        transport = self._backend._transport
        if transport is not None:  # pysyncobj counts the entry applied after this returns
            forwarding = bool(self._SyncObj__commandsWaitingReply)
            transport.note_applied(self.raftLastApplied + 1, result, forwarding)
        return result


# pysyncobj's timers (election deadline, next heartbeat) are on its own clock, which on
# Linux is CLOCK_MONOTONIC_RAW, not time.monotonic()'s CLOCK_MONOTONIC: the two drift
# apart (NTP slews one of them; 0.25 s apart on a test machine after hours up). Everything
# compared with those timers must read this clock. Compared with time.monotonic(), a
# follower saw its election deadline always expired and ran a pre-vote round every tick
# while its leader was healthy -- hundreds a second under load.


def check_snapshot_steps(f: BinaryIO, filename: str) -> Iterator[int]:
    """Check an open snapshot file's magic and whole-file CRC-32 in 1 MiB reads,
    yielding the bytes of each (the scrubber paces itself by them). SnapshotError
    names the file and what is wrong."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    magic = f.read(len(SNAPSHOT_MAGIC))
    if size < len(SNAPSHOT_MAGIC) + 8 or magic not in (SNAPSHOT_MAGIC, SEALED_SNAPSHOT_MAGIC):
        raise SnapshotError(f"{filename}: not a Tadpole snapshot")
    f.seek(0)
    crc, left = 0, size - 4
    while left > 0:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            raise SnapshotError(f"{filename}: shorter than it was a moment ago")
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
        yield len(chunk)
    if struct.unpack("<I", f.read(4))[0] != crc:
        raise SnapshotError(f"{filename}: checksum mismatch (torn or corrupt snapshot)")


class _Checksummed:
    """Writes to a file, keeping the CRC-32 of everything written."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.crc = 0

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self.crc = zlib.crc32(data, self.crc)
        return len(data)


def write_snapshot_file(
    final: str, raft_blob: bytes, state: SystemStateMachine, keyring: Keyring | None = None
) -> None:
    """Write a snapshot file (format in ``RaftBackend``'s snapshot section): to
    ``<final>.bg``, fsynced, renamed over ``final``, directory fsynced."""
    tmp = final + ".bg"
    _write_snapshot_tmp(tmp, raft_blob, state, keyring)
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))


def _write_snapshot_tmp(
    tmp: str, raft_blob: bytes, state: SystemStateMachine, keyring: Keyring | None
) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        out = _Checksummed(f)
        body: _Checksummed | SealedWriter = out
        if keyring is None:
            out.write(SNAPSHOT_MAGIC)
        else:
            key = keyring.new_data_key()
            out.write(SEALED_SNAPSHOT_MAGIC + key.wrapped)
            body = SealedWriter(out, key, _SNAPSHOT_AAD)
        body.write(struct.pack("<I", len(raft_blob)))
        body.write(raft_blob)
        for piece in state.snapshot_chunks():
            body.write(piece)
        if isinstance(body, SealedWriter):
            body.close()
        f.write(struct.pack("<I", out.crc))
        f.flush()
        os.fsync(f.fileno())


def snapshot_key(filename: str) -> bytes | None:
    """The fingerprint of the key-encryption key a snapshot file is under (None: not
    encrypted). Reads its header only."""
    with open(filename, "rb") as f:
        head = f.read(len(SEALED_SNAPSHOT_MAGIC) + WRAPPED_BYTES)
    if head[: len(SEALED_SNAPSHOT_MAGIC)] != SEALED_SNAPSHOT_MAGIC:
        return None
    return head[len(SEALED_SNAPSHOT_MAGIC) : len(SEALED_SNAPSHOT_MAGIC) + 4]


class _SnapshotReader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def open_snapshot(
    filename: str, keyring: Keyring | None
) -> tuple[BinaryIO, tuple[Any, ...], _SnapshotReader]:
    """Check a snapshot file's checksum and read its Raft header: (the open file; the
    raft data; a reader of the state that follows). SnapshotError if it is damaged,
    encrypted under a key not in ``keyring``, or fails authentication. The checksum is
    computed in one pass of 1 MiB reads and the state is left unread: nothing here
    holds the file in memory."""
    f = open(filename, "rb")  # noqa: SIM115 -- handed to the caller
    try:
        size = os.fstat(f.fileno()).st_size
        for _ in check_snapshot_steps(f, filename):
            pass
        f.seek(0)
        body: _SnapshotReader
        if f.read(len(SNAPSHOT_MAGIC)) == SNAPSHOT_MAGIC:
            body = _Region(f, size - 4)
        elif keyring is None:
            raise SnapshotError(
                f"{filename}: encrypted at rest, and no encryption key is configured"
            )
        else:
            try:
                key = keyring.unwrap(f.read(WRAPPED_BYTES), what=filename)
            except UnknownKeyError as exc:
                raise SnapshotError(str(exc), unknown_key=True) from exc
            except AtRestError as exc:
                raise SnapshotError(str(exc)) from exc
            length = size - 4 - f.tell()
            body = SealedReader(_Region(f, size - 4), length, key, _SNAPSHOT_AAD, what=filename)
        try:
            (raft_len,) = struct.unpack("<I", body.read(4))
            raft_data = pickle.loads(body.read(raft_len))
        except AtRestError as exc:
            raise SnapshotError(str(exc)) from exc
        return f, tuple(raft_data), _Authenticated(body, filename)
    except BaseException:
        f.close()
        raise


def authenticate_snapshot(filename: str, keyring: Keyring | None) -> None:
    """Read a snapshot file through to its end, authenticating every frame of an
    encrypted one (1 MiB at a time, nothing kept). SnapshotError if one fails."""
    f, _, body = open_snapshot(filename, keyring)
    with f:
        while body.read(1 << 20):
            pass


class _Authenticated:
    """A snapshot state reader whose authentication failures are SnapshotErrors."""

    def __init__(self, body: _SnapshotReader, filename: str) -> None:
        self._body = body
        self._filename = filename

    def read(self, n: int = -1) -> bytes:
        try:
            return self._body.read(n)
        except AtRestError as exc:
            raise SnapshotError(str(exc)) from exc


# The two log entries a seeded member starts from (pysyncobj wants a journal that begins
# with the snapshot's last two entries). Every member seeded from the same backup holds
# the same two, so their logs agree. They must differ from a *new* node's log -- a no-op
# at index 1, term 0 -- and start after index 1: a member that joins the restored
# cluster with an empty data directory then shares no entry with the leader, whose log
# starts at index 2, and is sent the snapshot. (Seeded at index 1, term 0, it matched
# the leader's first entry and was sent entries 2, 3, ... on top of an empty state.)
_NO_OP = b"\x01"
_SEED_ENTRIES = ((_NO_OP, 2, 1), (_NO_OP, 3, 1))


def seed_data_dir(
    data_dir: str, state: SystemStateMachine, keyring: Keyring | None = None, node_id: str = ""
) -> None:
    """Make ``data_dir`` a member of a *new* Raft group whose state starts as
    ``state`` (a restore, like ``etcdutl snapshot restore``): a snapshot holding it
    at log index 3, term 1, and a journal of the two entries the snapshot ends with,
    all fsynced. Every member of the new group must be seeded from the same state. The
    data directory must hold no Raft files; raises FileExistsError if it does."""
    os.makedirs(data_dir, exist_ok=True)
    snapshot_path = os.path.join(data_dir, "raft.snapshot")
    journal_path = os.path.join(data_dir, "raft.journal")
    for path in (snapshot_path, journal_path, journal_path + ".meta"):
        if os.path.exists(path):
            raise FileExistsError(f"{path}: already exists; seeding needs a new data directory")
    before_last, last = _SEED_ENTRIES
    raft_blob = pickle.dumps((last, before_last, set()))
    write_snapshot_file(snapshot_path, raft_blob, state, keyring)
    journal = DurableJournal(journal_path, snapshot_path, keyring=keyring, owner=node_id)
    try:
        for command, idx, term in _SEED_ENTRIES:
            journal.add(command, idx, term)
        journal.setRaftCommitIndex(last[1])
        journal.sync()
    finally:
        journal._destroy()


def next_tick_in(
    obj: Any, ticked: float, now: float, longest: float, overdue: float | None = None
) -> float:
    """How long the tick thread may sleep after a tick that started at ``ticked``:
    until pysyncobj's next timer is due -- the leader's next heartbeat, a follower's
    or candidate's election deadline -- and at most ``longest``. A timer that was
    already due when the tick ran and is still pending is one pysyncobj chose not to
    act on (a follower connected to no one does not campaign): waiting for it would
    spin, so the thread sleeps ``overdue`` (default ``longest``; or until woken).
    Ticking every 10 ms regardless, as this loop once did, cost an idle node a
    hundred wake-ups a second."""
    if obj._SyncObj__raftState == _LEADER_STATE:
        due = float(obj._SyncObj__newAppendEntriesTime)
    else:
        due = float(obj._SyncObj__raftElectionDeadline)
    if due <= ticked:
        return longest if overdue is None else min(overdue, longest)
    return min(max(due - now, 0.0), longest)


class RaftBackend:
    """System-tier backend replicated by Raft (pysyncobj).

    ``sender(peer_id, frames)`` is called from the tick thread to hand a
    peer's messages to the network; it must not block. The network calls
    :meth:`deliver`, :meth:`peer_up` and :meth:`peer_down` from any thread.

    Reads: :meth:`read` runs a function against the local state machine under
    its lock (serializable); linearizable reads first commit a barrier with
    :meth:`propose` and then read locally.
    """

    def __init__(
        self,
        node_id: str,
        peer_ids: list[str],
        data_dir: str,
        *,
        sender: Sender,
        config: RaftConfig | None = None,
        keyring: Keyring | None = None,
        keyring_loader: Callable[[], Keyring | None] | None = None,
    ) -> None:
        self.node_id = node_id
        # Reads the keyring as it is now (the node's file): a snapshot from a leader
        # that rotated before this node did may be under a key not yet in _keyring.
        self._keyring_loader = keyring_loader
        # Encryption at rest of the journal, its term/vote file and the snapshot (None:
        # plaintext). Replaced by rekey(); read by the tick and snapshot threads.
        self._keyring = keyring
        # Held while a snapshot file is written (and while rekey re-seals one).
        self._snapshot_lock = threading.Lock()
        self.reseal_error = ""  # why the last re-seal of the snapshot failed ("" = it did not)
        self.peer_ids = sorted(peer_ids)
        self.config = config or RaftConfig()
        self._data_dir = data_dir
        self._sender = sender
        self._sm = SystemStateMachine(history_limit=self.config.watch_history_events)
        self._sm_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._calls: deque[Callable[[], None]] = deque()
        # (encoded command, callback) proposed since the last tick; see _submit_proposals
        self._proposals: deque[tuple[bytes, ProposalCallback]] = deque()
        # Leadership transfer under way (the request that holds new commands back, see
        # transfer_leadership), and until when (raft clock) they wait at most. Tick thread.
        self._transfer: object | None = None
        self._transfer_until = float("-inf")
        self._reads = ReadIndex(timeout_s=self.config.leader_fallback_s)
        self._quiet = QuietLeader(self.config.quiet_after_s, self.config.quiet_heartbeat_s)
        # peer -> takes the frames for it of the next flush (the answer to its call)
        self._reply_slots: dict[str, Callable[[list[bytes]], None]] = {}
        self._reply_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._obj: _ReplicatedSystem | None = None
        self._transport: HeldTransport | None = None
        self._journal: DurableJournal | None = None
        # For /metrics: applying one committed entry to the state machine (tick
        # thread), and writing one snapshot (its background thread).
        self.apply_seconds = Histogram(APPLY_BUCKETS)
        self.snapshot_seconds = Histogram(SNAPSHOT_BUCKETS)
        # How long the tick thread went without acting once due (consensus/raft/stalls.py);
        # one past the election timeout is logged.
        self.tick_stalls = TickStalls(self.config.election_timeout_min_s)
        # Times this node saw a new leader (itself included), as etcd's
        # leader_changes_seen_total: a healthy cluster adds one per election.
        self.leader_changes = 0
        self._leader_seen = ""
        self._last_heard: dict[str, float] = {}
        self._status = BackendInfo("raft", "follower", 0, "", 0, 0, 0, False, 0, 0)
        self._apply_listeners: list[Callable[[int], None]] = []
        self._snapshot_state = "idle"  # idle | running | success | failed
        self._snapshot_writer: threading.Thread | None = None  # the last one started
        # Snapshots installed from a leader, and the lock their renames and ours take.
        self._snapshots_installed = 0
        self._snapshot_rename_lock = threading.Lock()
        # (snapshots installed then, bytes) of the snapshot file, for compaction_due:
        # stat again only after a snapshot of ours or a leader's replaced it.
        self._snapshot_size: tuple[int, int] | None = None
        self.failed: OSError | None = None  # the journal fsync that stopped Raft here
        self.started_at = time.monotonic()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        os.makedirs(self._data_dir, exist_ok=True)
        snapshot_path = os.path.join(self._data_dir, "raft.snapshot")
        if os.path.exists(snapshot_path) and snapshot_key(snapshot_path) is not None:
            # pysyncobj swallows a snapshot that fails to load and would start from an
            # empty state: every frame is authenticated first, and a bad one stops the
            # start here, before the journal is opened (and perhaps rewritten).
            authenticate_snapshot(snapshot_path, self._keyring)
        self._journal = DurableJournal(
            os.path.join(self._data_dir, "raft.journal"),
            snapshot_path,
            keyring=self._keyring,
            owner=self.node_id,
        )
        self._reconcile_journal(snapshot_path)
        if self._snapshot_needs_reseal(snapshot_path):
            self._install_resealed(snapshot_path, self._reseal_snapshot(snapshot_path))
        cfg = self.config
        conf = SyncObjConf(
            autoTick=False,
            appendEntriesUseBatch=True,
            appendEntriesPeriod=cfg.heartbeat_interval_s,
            raftMinTimeout=cfg.election_timeout_min_s,
            raftMaxTimeout=cfg.election_timeout_max_s,
            connectionTimeout=max(cfg.election_timeout_max_s, 1.0),
            leaderFallbackTimeout=cfg.leader_fallback_s,
            appendEntriesBatchSizeBytes=cfg.max_append_bytes,
            logCompactionMinEntries=cfg.snapshot_min_entries,
            logCompactionMinTime=cfg.snapshot_interval_s,
            journalFile=self._journal,
            fullDumpFile=snapshot_path,
            serializer=self._start_snapshot,
            deserializer=self._read_snapshot,
            serializeChecker=self._snapshot_status,
            dynamicMembershipChange=False,
            commandsWaitLeader=False,
            onStateChanged=self._on_state_changed,
        )

        def make_transport(sync_obj: Any, self_node: Node, other_nodes: Any) -> HeldTransport:
            self._transport = HeldTransport(
                sync_obj,
                self_node,
                other_nodes,
                sender=self._sender,
                wake=self._wake.set,
                log_view=self._journal,
                sticky_s=cfg.election_timeout_min_s,
                pre_vote=cfg.pre_vote,
            )
            return self._transport

        self._obj = _ReplicatedSystem(
            self,
            Node(self.node_id),
            [Node(p) for p in self.peer_ids],
            conf=conf,
            transportClass=make_transport,
        )
        self._thread = threading.Thread(target=self._run, name=f"raft-{self.node_id}", daemon=True)
        self._thread.start()
        log.info("node %s raft started with peers %s", self.node_id, ",".join(self.peer_ids))

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # A snapshot still being written renames itself over the snapshot when it is
        # done. Let it finish before returning: the next start() of this directory
        # makes the journal agree with the snapshot it finds *before* pysyncobj loads
        # the snapshot, and one landing in between has pysyncobj clear the journal --
        # with it the acknowledged entries after the snapshot's index.
        if self._snapshot_writer is not None:
            self._snapshot_writer.join()
        if self._obj is not None:
            try:
                self._obj._doDestroy()
            except OSError as exc:
                if self.failed is None:
                    raise
                log.warning("node %s: journal not closed cleanly after its failure: %s",
                            self.node_id, exc)  # fmt: skip
            self._obj.transmissions.close_all()
        log.info("node %s raft stopped", self.node_id)

    # -- the tick loop -----------------------------------------------------------

    def _run(self) -> None:
        idle = self.config.idle_tick_s
        due: float | None = None  # when the tick thread asked to be woken at the latest
        while not self._stopping.is_set():
            self._wake.clear()
            ticked = raft_clock()
            try:
                self._tick_once()
            except Exception:
                log.exception("node %s: raft tick failed", self.node_id)
                time.sleep(idle)
            obj = self._obj
            assert obj is not None
            now = raft_clock()
            self._report_stall(self.tick_stalls.tick(due, ticked, now), obj)
            # At rest only while no timer is overdue: one pysyncobj did not act on
            # (a follower that could not campaign yet) is looked at again soon.
            longest = idle if self._in_flight(obj) else self.config.rest_tick_s
            wait = next_tick_in(obj, ticked, now, longest, overdue=idle)
            due = now + wait
            self._wake.wait(wait)

    def _report_stall(self, stall: Stall | None, obj: _ReplicatedSystem) -> None:
        if stall is None:
            return
        leader = obj._isLeader()
        log.warning(
            "node %s (%s): the raft tick thread stalled %.0f ms (%.0f ms of it before the"
            " tick could start), past the %.0f ms election timeout: %s. Look for garbage"
            " collection (tadpole_gc_pause_seconds), slow fsyncs"
            " (tadpole_raft_journal_fsync_seconds) or a host short of CPU%s",
            self.node_id,
            "leader" if leader else "follower",
            stall.seconds * 1000,
            stall.late * 1000,
            self.config.election_timeout_min_s * 1000,
            "its followers may elect another leader"
            if leader
            else "this node may campaign, or miss its leader's messages",
            f" ({stall.unreported} more stalls since the last report)" if stall.unreported else "",
        )

    def _in_flight(self, obj: _ReplicatedSystem) -> bool:
        """Whether anything waits on the tick thread that no timer of pysyncobj's
        covers (tick thread)."""
        return bool(
            self._proposals
            or self._calls
            or self._reads.busy
            or obj._SyncObj__commandsWaitingCommit
            or obj._SyncObj__commandsWaitingReply
            or self._snapshot_state != "idle"
            or self._transfer is not None
        )

    def _tick_once(self) -> None:
        """One iteration of the loop in the module docstring. The order of
        ``journal.sync()`` before ``transport.flush()`` (for anything but a leader's
        append-entries) is the durability argument;
        ``tests/integration/test_raft_durability.py`` checks it."""
        obj, transport, journal = self._obj, self._transport, self._journal
        assert obj is not None and transport is not None and journal is not None
        for _ in range(len(self._calls)):  # a call queued by one of these runs next tick
            self._calls.popleft()()
        with self._reply_lock:  # calls whose frames this drain feeds to pysyncobj
            replies, self._reply_slots = self._reply_slots, {}
        holding = self._transfer_hold(obj, transport)
        transport.drain()
        transport.gate_election()
        if not holding:
            self._submit_proposals(obj)
        transport.tend_forwards()
        paced = self._pace_heartbeats(obj, transport)
        if self._snapshot_state == "idle" and self._journal_outgrew_snapshot(journal):
            obj._SyncObj__forceLogCompaction = True  # doTick starts the snapshot
        log_before = len(journal)
        obj.doTick(0.0)
        if paced is not None and obj._SyncObj__newAppendEntriesTime != paced:
            # a quiet heartbeat just went out: the next one in quiet_heartbeat_s
            obj._SyncObj__newAppendEntriesTime = raft_clock() + self._quiet.heartbeat_s
        if len(journal) != log_before:
            transport.quiet_s = 0.0  # a forwarded command was appended: not at rest
        heartbeat = self._reads.tick(self._raft_view(obj), transport)
        if obj._isLeader():
            owed = transport.commit_owed(obj.raftCommitIndex)
            if len(journal) != log_before or owed or heartbeat:
                # One append-entries per follower per tick, carrying every entry the
                # tick appended and the newest commit index. A commit alone goes out
                # only to answer a follower's forwarded command, or to start a read
                # round (consensus/raft/reads.py); other followers learn it with the
                # next entries or heartbeat (module doc).
                obj._SyncObj__sendAppendEntries()
        if obj._isLeader() and not journal.term_unsynced:
            # A leader's append-entries vouch for nothing on its own disk, so they
            # leave *before* its fsync and the followers' writes overlap it (Raft
            # thesis 10.2.1). The leader still counts itself toward a commit only
            # after the fsync: acknowledgements are read by the next tick's doTick,
            # which starts after this sync returns -- and if the sync fails, there is
            # no next tick (_sync_or_stop).
            transport.flush(replies)
            self._sync_or_stop(journal)
        else:
            self._sync_or_stop(journal)
            transport.flush(replies)
        self._publish_status(obj)

    def _journal_outgrew_snapshot(self, journal: DurableJournal) -> bool:
        size = journal.size_bytes
        if size < self.config.snapshot_min_bytes:
            return False  # the common case
        known = self._snapshot_size
        if known is None or known[0] != self._snapshots_installed:
            installed = self._snapshots_installed
            try:
                snapshot_bytes = os.stat(os.path.join(self._data_dir, "raft.snapshot")).st_size
            except FileNotFoundError:
                snapshot_bytes = 0
            self._snapshot_size = known = (installed, snapshot_bytes)
        return compaction_due(size, known[1], self.config.snapshot_min_bytes)

    def _pace_heartbeats(self, obj: _ReplicatedSystem, transport: HeldTransport) -> float | None:
        """Leader: decide whether the group is at rest (consensus/raft/quiet.py), and
        stamp and pace heartbeats to match. Returns pysyncobj's heartbeat due time when
        heartbeats are quiet (so the tick can tell whether one went out), else None."""
        if not obj._isLeader():
            self._quiet.observe(raft_clock(), (), settled=False)
            transport.quiet_s = 0.0
            obj._SyncObj__conf.leaderFallbackTimeout = self.config.leader_fallback_s
            return None
        last = obj._SyncObj__getCurrentLogIndex()
        match = obj._SyncObj__raftMatchIndex
        settled = (
            not self._proposals
            and self._transfer is None
            and not self._reads.busy
            and not obj._SyncObj__commandsWaitingCommit
            and all(transport.is_connected(p) for p in self.peer_ids)
            and all(match.get(Node(p), 0) >= last for p in self.peer_ids)
        )
        fingerprint = (obj.raftCurrentTerm, last, obj.raftCommitIndex, transport.election_requests)
        now = raft_clock()
        quiet = self._quiet.observe(now, fingerprint, settled)
        obj._SyncObj__conf.leaderFallbackTimeout = self._quiet.fallback_s(
            self.config.leader_fallback_s
        )
        if quiet:
            transport.quiet_s = self._quiet.heartbeat_s
            return float(obj._SyncObj__newAppendEntriesTime)
        transport.quiet_s = 0.0
        if obj._SyncObj__newAppendEntriesTime > now + self.config.heartbeat_interval_s:
            # Rest just ended: tell the followers now, not at the next quiet beat.
            obj._SyncObj__newAppendEntriesTime = 0
        return None

    @property
    def quiet(self) -> bool:
        """Whether this node's group keeps quiet heartbeats now: as its leader, or as a
        follower of a quiet leader."""
        if self._obj is not None and self._obj._isLeader():
            return self._quiet.quiet
        return self._transport is not None and self._transport.quiet_stamp is not None

    @property
    def quiet_entered(self) -> int:
        """Times this node, as leader, put its group at rest."""
        return self._quiet.entered

    @property
    def late_answers(self) -> int:
        """Forwarded commands this node answered from the entry it applied, their
        leader's answer having arrived after it (``HeldTransport._answer_late``)."""
        transport = self._transport
        return transport.late_answers if transport is not None else 0

    @property
    def forwards(self) -> tuple[int, int, int]:
        """``(resent, copies answered, copies dropped)``: forwarded commands this node
        sent again, unanswered in time; and, as leader, copies of forwards it had
        answered (answered alike) or still held or could not vouch for (dropped). See
        ``consensus/raft/forwarding.py``."""
        transport = self._transport
        if transport is None:
            return 0, 0, 0
        ledger = transport.forward_ledger
        return transport.forwards.resent, ledger.copies_answered, ledger.copies_dropped

    @property
    def pre_votes(self) -> tuple[int, int]:
        """``(started, won)``: pre-vote rounds this node asked for when its election
        timer ran out, and those a majority granted (each then a real election)."""
        transport = self._transport
        if transport is None:
            return 0, 0
        return transport.pre_votes_started, transport.pre_votes_won

    @property
    def rollbacks_prevented(self) -> int:
        """Stale append-entries successes that would have moved a follower's
        ``nextIndex`` back, as this node led (``HeldTransport``: kept where it was)."""
        transport = self._transport
        return transport.rollbacks_prevented if transport is not None else 0

    def _sync_or_stop(self, journal: DurableJournal) -> None:
        """``journal.sync()``; if it fails, this node stops taking part in Raft at once
        (as etcd stops on a failed WAL fsync). Going on would let the next tick count
        this node's copy toward a commit although it may not be on disk; the others
        elect a leader without it."""
        try:
            journal.sync()
        except OSError as exc:
            log.critical(
                "node %s: journal fsync failed (%s); Raft stops on this node", self.node_id, exc
            )
            self.failed = exc
            self._status = dataclasses.replace(
                self._status, role="unknown", leader_id="", has_quorum=False
            )
            self._stopping.set()
            raise

    def _raft_view(self, obj: _ReplicatedSystem) -> RaftView:
        leader = obj._SyncObj__raftLeader
        assert self._transport is not None
        leading = obj._isLeader()
        leader_id = leader.id if leader is not None else ""
        if leader_id and not leading and not self._transport.is_connected(leader_id):
            leader_id = ""
        noop = obj._SyncObj__noopIDx  # the no-op this leader appended when elected
        return RaftView(
            leader=leading,
            term=obj.raftCurrentTerm,
            commit=obj.raftCommitIndex,
            applied=obj.raftLastApplied,
            own_term_committed=leading and noop is not None and obj.raftCommitIndex >= noop,
            leader_id=leader_id,
            now=raft_clock(),
        )

    def _publish_status(self, obj: _ReplicatedSystem) -> None:
        raw = obj.getStatus()
        leader = raw.get("leader")
        now = time.monotonic()
        role = _ROLES.get(raw["state"], "unknown")
        assert self._transport is not None
        peers = {
            p: PeerInfo(
                connected=self._transport.is_connected(p),
                match_index=raw.get("match_idx_server_" + p, -1) if role == "leader" else -1,
                last_heard_s=now - self._last_heard[p] if p in self._last_heard else float("inf"),
            )
            for p in self.peer_ids
        }
        seen = leader.id if leader is not None else ""
        if seen and seen != self._leader_seen:  # a new leader (etcd: leader_changes_seen)
            self._leader_seen = seen
            self.leader_changes += 1
        self._status = BackendInfo(
            name="raft",
            role=role,
            term=raw["raft_term"],
            leader_id=known_leader(
                role,
                leader.id if leader is not None else "",
                self._transport.leader_silent_s(),
                self._transport.silence_allowed_s(self.config.leader_fallback_s),
            ),
            commit_index=raw["commit_idx"],
            applied_index=raw["last_applied"],
            log_entries=raw["log_len"],
            has_quorum=raw["has_quorum"],
            revision=self._sm.revision,
            keys=len(self._sm),
            peers=peers,
        )

    def _on_state_changed(self, old: int, new: int) -> None:
        log.info(
            "node %s became %s (was %s)",
            self.node_id,
            _ROLES.get(new, new),
            _ROLES.get(old, old),
        )

    # -- state machine hooks (tick thread) ------------------------------------

    def _apply(
        self, payload: bytes
    ) -> CommandResult | CommandError | list[CommandResult | CommandError]:
        """Apply one committed log entry: a command, or a batch of them (a list of
        results, one per command, in order). Never raises into pysyncobj: a raising
        entry would be retried forever."""
        try:
            entry = decode_entry(payload)
        except CommandError as exc:
            log.error("node %s: skipping undecodable log entry: %s", self.node_id, exc)
            return exc
        started = time.perf_counter()
        with self._sm_lock:
            result: CommandResult | list[CommandResult | CommandError]
            if isinstance(entry, Batch):
                result = [
                    c if isinstance(c, CommandError) else self._sm.apply(c) for c in entry.commands
                ]
            else:
                result = self._sm.apply(entry)
            revision = self._sm.revision
        for listener in self._apply_listeners:
            listener(revision)
        self.apply_seconds.observe(time.perf_counter() - started)
        return result

    # -- snapshots (log compaction) -------------------------------------------
    #
    # Encoding and writing 100k keys takes ~0.3 s + the fsync; done inside the
    # tick, a leader would miss heartbeats and be deposed. So the tick only
    # takes a shallow copy of the state (milliseconds) and a background thread
    # streams it to disk. pysyncobj supports this through ``serializeChecker``:
    # until the checker reports SUCCESS it keeps the journal whole, and only
    # then drops the entries the snapshot covers.
    #
    # File: b"TPSNAP02" | u32 len | pickle(raft data) | state stream | u32 crc32
    # of everything before it. Written to <file>.bg, fsynced, renamed over the
    # snapshot, directory fsynced.

    def _start_snapshot(self, tmp_filename: str, raft_data: Any) -> None:
        # pysyncobj passes "<snapshot>.tmp" and then renames it into place
        # itself; we write and rename on our own schedule instead, so that
        # rename finds nothing to move (a swallowed error; our checker decides).
        final = tmp_filename[: -len(".tmp")] if tmp_filename.endswith(".tmp") else tmp_filename
        with self._sm_lock:
            state = self._sm.copy()
        self._snapshot_state = "running"
        self._snapshot_writer = threading.Thread(
            target=self._write_snapshot_and_wake,
            args=(state, pickle.dumps(raft_data), final, self._snapshots_installed),
            name=f"snapshot-{self.node_id}",
            daemon=True,
        )
        self._snapshot_writer.start()

    def _write_snapshot_and_wake(self, *args: Any) -> None:
        try:
            self._write_snapshot(*args)
        finally:
            self._wake.set()  # the tick thread may be resting: let it see the outcome

    def _write_snapshot(
        self, state: SystemStateMachine, raft_blob: bytes, final: str, installed: int
    ) -> None:
        """Write the snapshot, and rename it into place unless a leader's snapshot was
        installed meanwhile: that one is newer, and pysyncobj already cut the journal
        to it -- renaming ours over it would leave a snapshot older than the journal's
        start, and the next start would clear the journal."""
        started = time.monotonic()
        tmp = final + ".bg"
        try:
            with self._snapshot_lock:
                _write_snapshot_tmp(tmp, raft_blob, state, self._keyring)
                with self._snapshot_rename_lock:
                    superseded = self._snapshots_installed != installed
                    if superseded:
                        os.unlink(tmp)
                    else:
                        os.replace(tmp, final)
                if not superseded:
                    fsync_dir(os.path.dirname(os.path.abspath(final)))
        except Exception:
            log.exception("node %s: snapshot failed", self.node_id)
            self._snapshot_state = "failed"
            return
        if superseded:
            log.info("node %s: dropped a snapshot older than the leader's", self.node_id)
            self._snapshot_state = "failed"  # nothing to compact: the journal was cut
            return
        took = time.monotonic() - started
        self.snapshot_seconds.observe(took)
        log.info(
            "node %s wrote snapshot at revision %d (%d keys) in %.2f s",
            self.node_id,
            state.revision,
            len(state),
            took,
        )
        self._snapshot_state = "success"

    def _snapshot_status(self) -> int:
        status = self._snapshot_state
        if status == "running":
            return int(SERIALIZER_STATE.SERIALIZING)
        if status in ("success", "failed"):
            self._snapshot_state = "idle"
            self._snapshot_size = None  # a new snapshot file, or none renamed: stat again
            ok = status == "success"
            return int(SERIALIZER_STATE.SUCCESS if ok else SERIALIZER_STATE.FAILED)
        return int(SERIALIZER_STATE.NOT_SERIALIZING)

    def _read_snapshot(self, filename: str) -> tuple[Any, ...]:
        try:
            f, raft_data, state = open_snapshot(filename, self._keyring)
        except SnapshotError as exc:
            fresh = None
            if self._keyring_loader is not None:
                try:
                    fresh = self._keyring_loader()
                except Exception as reload_error:  # a keyring file that no longer reads
                    log.error("node %s: keyring: %s", self.node_id, reload_error)
            if not exc.unknown_key or fresh is None:
                log.error("node %s: cannot load snapshot: %s", self.node_id, exc)
                raise
            log.warning(
                "node %s: %s; read it with the keyring file as it is now (run `tadpole"
                " keys rotate` so every node encrypts under the same key)",
                self.node_id,
                exc,
            )
            f, raft_data, state = open_snapshot(filename, fresh)
        with f, self._sm_lock:
            self._sm.restore_from(state)  # type: ignore[arg-type]
        return raft_data

    # -- encryption at rest: re-sealing under a new key ------------------------------
    #
    # The journal and its term/vote file are rewritten in the tick thread (they are
    # small: entries since the last snapshot). The snapshot can be large: it is read
    # and written again beside itself by another thread, and swapped in by the tick
    # thread only if the file is still the one that was read -- pysyncobj installs a
    # snapshot received from the leader in the tick thread, and re-sealing an older
    # one over it would lose the entries its journal dropped.

    def rekey(self, keyring: Keyring | None) -> threading.Event:
        """Encrypt under ``keyring``'s primary key from now on and re-seal what is on
        disk under another key (or in the other form). The returned event is set when
        the journal and the snapshot are done. Thread-safe."""
        done = threading.Event()
        journal_done = threading.Event()

        def in_tick() -> None:
            self._keyring = keyring
            try:
                if self._journal is not None and self._journal.rekey(keyring):
                    log.info("node %s: journal re-sealed under %s", self.node_id, self._key_id())
            finally:
                journal_done.set()

        def snapshot() -> None:
            try:
                journal_done.wait()
                path = os.path.join(self._data_dir, "raft.snapshot")
                with self._snapshot_lock:
                    if not self._snapshot_needs_reseal(path):
                        return
                    resealed = self._reseal_snapshot(path)
                    installed = threading.Event()

                    def install() -> None:
                        try:
                            self._install_resealed(path, resealed)
                        finally:
                            installed.set()

                    self.call_in_tick(install)
                    while not installed.wait(0.1):
                        if self._stopping.is_set():
                            return
            except Exception as exc:
                log.exception("node %s: re-sealing the snapshot failed", self.node_id)
                self.reseal_error = f"re-sealing the snapshot failed: {exc}"
            else:
                self.reseal_error = ""
            finally:
                done.set()

        self.call_in_tick(in_tick)
        threading.Thread(target=snapshot, name=f"rekey-{self.node_id}", daemon=True).start()
        return done

    def _key_id(self) -> str:
        return "no encryption" if self._keyring is None else self._keyring.primary.id

    def _snapshot_needs_reseal(self, path: str) -> bool:
        if not os.path.exists(path):
            return False
        want = None if self._keyring is None else self._keyring.primary.fingerprint
        return snapshot_key(path) != want

    def _reseal_snapshot(self, path: str) -> tuple[str, tuple[int, int, int]] | None:
        """Write the snapshot at ``path`` again, under the current keyring, to
        ``<path>.reseal``: (that file, the identity of the file read), or None if the
        snapshot went away meanwhile."""
        keyring = self._keyring
        try:
            f, raft_data, body = open_snapshot(path, keyring)
        except FileNotFoundError:
            return None
        with f:
            st = os.fstat(f.fileno())
            state = SystemStateMachine(history_limit=self.config.watch_history_events)
            state.restore_from(body)  # type: ignore[arg-type]
        tmp = path + ".reseal"
        _write_snapshot_tmp(tmp, pickle.dumps(raft_data), state, keyring)
        return tmp, (st.st_ino, st.st_size, st.st_mtime_ns)

    def _install_resealed(
        self, path: str, resealed: tuple[str, tuple[int, int, int]] | None
    ) -> None:
        if resealed is None:
            return
        tmp, identity = resealed
        try:
            st = os.stat(path)
            current = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            current = None
        if current != identity:  # replaced meanwhile: what replaced it is newer
            os.unlink(tmp)
            return
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
        log.info("node %s: snapshot re-sealed under %s", self.node_id, self._key_id())

    @property
    def keyring(self) -> Keyring | None:
        return self._keyring

    def _reconcile_journal(self, snapshot_path: str) -> None:
        """Make the journal start where the snapshot ends, keeping its tail.

        pysyncobj expects the journal to begin with the snapshot's last two
        entries; if it does not, it *clears the journal* and keeps only those
        two. That is right when the snapshot is newer than the whole journal
        (installed from the leader), but a crash between writing a snapshot
        and truncating the journal's head leaves a journal that starts earlier
        and runs past the snapshot — and clearing it would throw away
        acknowledged entries after the snapshot. So: if the journal holds the
        snapshot's two entries, drop only what comes before them.
        """
        journal = self._journal
        assert journal is not None
        if not os.path.exists(snapshot_path) or len(journal) < 2:
            return
        f, raft_data, _ = open_snapshot(snapshot_path, self._keyring)
        f.close()
        last, before_last = raft_data[0], raft_data[1]
        first_idx = journal[0][1]
        pos = before_last[1] - first_idx
        if pos <= 0 or pos + 1 >= len(journal):
            return
        if tuple(journal[pos]) == tuple(before_last) and tuple(journal[pos + 1]) == tuple(last):
            log.info(
                "node %s: journal predates snapshot at index %d; dropping %d covered entries",
                self.node_id,
                last[1],
                pos,
            )
            journal.deleteEntriesTo(pos)

    # -- API for other threads -------------------------------------------------

    def propose(self, command: Command, callback: ProposalCallback) -> None:
        """Replicate ``command``; ``callback(result, error)`` runs in the tick
        thread once it is applied locally (or failed). Thread-safe."""
        self._proposals.append((encode_command(command), callback))
        self._wake.set()

    def _submit_proposals(self, obj: _ReplicatedSystem) -> None:
        """Hand every proposal pending now to pysyncobj: a lone one as its own entry
        (no wait at low load), several as batch entries of up to ``max_batch_bytes``.
        A batch costs one journal record, one append-entries item and one commit
        however many commands it holds; each command keeps its own request id,
        revision and result. Tick thread."""
        pending = self._proposals
        limit = self.config.max_batch_bytes
        while pending:
            payloads: list[bytes] = []
            callbacks: list[ProposalCallback] = []
            size = 0
            while pending and (not payloads or size + len(pending[0][0]) <= limit):
                payload, callback = pending.popleft()
                payloads.append(payload)
                callbacks.append(callback)
                size += len(payload)
            if len(payloads) == 1:
                obj.apply_command(payloads[0], callback=_answer_one(callbacks[0]))
            else:
                obj.apply_command(encode_batch(payloads), callback=_answer_batch(callbacks))

    def read_index(self, callback: ReadCallback) -> None:
        """Linearizable read point without a log entry (``consensus/raft/reads.py``):
        ``callback(index, None)`` runs in the tick thread once this node has applied
        every write that completed before the call, or ``callback(None, error)`` if
        that could not be established (nothing read; retry). Thread-safe."""
        self._reads.incoming.append(callback)
        self._wake.set()

    @property
    def journal_fsync_seconds(self) -> Histogram | None:
        """Durations of the journal's fsyncs (None before start)."""
        return self._journal.fsync_seconds if self._journal is not None else None

    def read(self, fn: Callable[[SystemStateMachine], T]) -> T:
        """Run ``fn`` against the local state under its lock. Keep it short."""
        with self._sm_lock:
            return fn(self._sm)

    def add_apply_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(revision)`` runs in the tick thread after every apply."""
        self._apply_listeners.append(listener)

    def status(self) -> BackendInfo:
        return self._status

    def call_in_tick(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the tick thread (for pysyncobj calls). Thread-safe."""
        self._calls.append(fn)
        self._wake.set()

    def transfer_leadership(self, target: str, callback: Callable[[bool, str], None]) -> None:
        """Hand leadership to ``target`` (or the most caught-up follower), as the Raft
        thesis does it (§3.10): first the leader stops appending new commands -- its
        own proposals wait in their queue, commands the followers forward wait in the
        transport -- so the target catches up; pysyncobj refuses to send TimeoutNow
        while the target's log lags, so a refusal is retried every tick. Once it has
        gone out, the commands wait on until a new leader is known (then ours are
        forwarded to it and the followers' are answered NOT_LEADER, definitely not
        applied) or ``leader_fallback_s`` has passed since the request and this node,
        still leading, appends them after all. Without the pause, writes arriving during
        the handover leave the target's log behind the leader's, the others refuse it
        their votes and the transfer fails. One transfer at a time: a request while
        another holds the commands is refused."""
        obj = self._obj
        assert obj is not None
        deadline = raft_clock() + self.config.leader_fallback_s
        request = object()  # this request, while it holds the commands (self._transfer)
        started = False

        def fail(why: str) -> None:
            if self._transfer is request:
                self._end_transfer()
            callback(False, why)

        def run() -> None:
            nonlocal started
            if self._transfer is not None and self._transfer is not request:
                callback(False, "another leadership transfer is under way")
                return
            if started and self._transfer is not request:
                # the hold ended meanwhile: its time ran out, or the leadership moved
                fail(f"{target or 'no follower'} did not take over in time")
                return
            if not obj._isLeader():
                fail("this node is not the leader")
                return
            if not started:
                started = True
                self._transfer = request
                self._transfer_until = deadline

            def done(_res: Any, reason: int) -> None:
                if reason == FAIL_REASON.SUCCESS:
                    callback(True, "")  # the hold lasts until a new leader is known
                elif reason == FAIL_REASON.NOT_LEADER:
                    fail("this node is not the leader")
                elif raft_clock() < deadline:
                    self._calls.append(run)  # again at the next tick
                else:
                    fail(f"{target or 'no follower'} is not caught up or not connected")

            obj.transferLeadership(Node(target) if target else None, callback=done)

        self.call_in_tick(run)

    def _transfer_hold(self, obj: _ReplicatedSystem, transport: HeldTransport) -> bool:
        """Whether new commands must wait for a leadership transfer (see
        :meth:`transfer_leadership`), ending the wait once a new leader is known or its
        time is up. Tick thread."""
        if self._transfer is None:
            return False
        handed_over = not obj._isLeader() and obj._SyncObj__raftLeader is not None
        if handed_over or raft_clock() >= self._transfer_until:
            self._end_transfer()
            return False
        transport.hold_commands = True
        return True

    def _end_transfer(self) -> None:
        """Stop holding commands for a transfer: the followers' forwarded commands held
        meanwhile go to pysyncobj now, this node's own proposals at the next submit.
        Tick thread."""
        self._transfer = None
        self._transfer_until = float("-inf")
        transport = self._transport
        if transport is not None:
            transport.hold_commands = False
            transport.release_commands()

    # -- network side --------------------------------------------------------------

    def deliver(self, peer_id: str, frames: list[bytes]) -> None:
        self._last_heard[peer_id] = time.monotonic()
        if self._transport is None:  # not started yet: lost, as Raft allows any message to be
            return
        if frames:
            self._transport.deliver(peer_id, frames)
        elif not self._transport.is_connected(peer_id):
            self._transport.peer_up(peer_id)

    def deliver_for_reply(
        self, peer_id: str, frames: list[bytes], reply: Callable[[list[bytes]], None]
    ) -> None:
        """:meth:`deliver`, and hand the frames the tick that handles them produces for
        ``peer_id`` (its answers; ``[]`` if none) to ``reply`` instead of the sender, so
        they travel back in the response of the call that brought ``frames``: one call
        per exchange instead of two. ``reply`` runs in the tick thread, after the
        journal sync — the same durability point as any send. It must not block, and
        must send the frames on (through the sender) if their call is gone."""
        with self._reply_lock:
            stale = self._reply_slots.pop(peer_id, None)
            self._reply_slots[peer_id] = reply
            self.deliver(peer_id, frames)
        if stale is not None:  # the peer gave up on its previous call
            stale([])

    def last_heard(self, peer_id: str) -> float:
        """When ``peer_id`` last delivered anything here (``time.monotonic()``; -inf:
        never). Thread-safe."""
        return self._last_heard.get(peer_id, float("-inf"))

    def peer_up(self, peer_id: str) -> None:
        if self._transport is not None and not self._transport.is_connected(peer_id):
            self._transport.peer_up(peer_id)

    def peer_down(self, peer_id: str) -> None:
        if self._transport is not None and self._transport.is_connected(peer_id):
            self._transport.peer_down(peer_id)

    @property
    def journal(self) -> DurableJournal | None:
        return self._journal
