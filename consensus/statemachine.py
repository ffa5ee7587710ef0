"""The system tier's replicated state machine: a revisioned key-value store.

The model follows etcd's MVCC key space, reduced to what the system tier needs:

* One cluster-wide ``revision`` that grows by one with every command that
  changes something. All changes made by one transaction share a revision.
* Per key: ``create_revision`` (revision of the put that created it),
  ``mod_revision`` (revision of the last change) and ``version`` (number of
  puts since creation; a delete resets the key to "absent").
* Compare-and-swap is a transaction: a list of compares over version,
  create/mod revision or value, then the ``success`` or ``failure`` operations.
* A bounded history of change events so a watcher can resume from any
  revision newer than ``compact_revision``.

This module does no I/O, reads no clocks and holds no locks: ``apply`` is a
pure function of (state, command), which is what Raft needs from it. Commands
are frozen dataclasses encoded with :func:`encode_command` (msgpack); the
Raft backend replicates the bytes and every replica decodes and applies them
in log order. The same class is used by the tests without any cluster.

Thread-safety: none. The owner (the Raft tick thread) serialises every call;
readers in other threads must go through the owner or take a snapshot.
"""

from __future__ import annotations

import bisect
import enum
import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgpack

from consensus.errors import CommandError, CompactedError, SnapshotError

__all__ = [
    "Barrier",
    "Batch",
    "Command",
    "CommandResult",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "DeleteOp",
    "Event",
    "EventType",
    "GetOp",
    "KeyValue",
    "OpResult",
    "PutOp",
    "SystemStateMachine",
    "Txn",
    "decode_command",
    "decode_entry",
    "encode_batch",
    "encode_command",
]

# 3: a key-value in a kept result that is the key's current one is written as its
# key alone (format 2 wrote every one in full, so most values were in it twice).
SNAPSHOT_FORMAT = 3
READABLE_SNAPSHOT_FORMATS = (2, 3)
COMMAND_FORMAT = 2


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For a DELETE, ``kv`` carries the key, an empty value and
    the deleting revision as ``mod_revision``; ``prev_kv`` is the deleted value."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3


class CompareOp(enum.IntEnum):
    EQUAL = 0
    NOT_EQUAL = 1
    GREATER = 2
    LESS = 3


@dataclass(frozen=True, slots=True)
class Compare:
    """``<target of key> <op> <operand>``.

    For an absent key, version, create and mod revision are 0; a VALUE
    compare against an absent key is always false (as in etcd), so
    ``value == b""`` never matches a missing key by accident.
    """

    key: str
    target: CompareTarget
    op: CompareOp
    number: int = 0
    value: bytes = b""


@dataclass(frozen=True, slots=True)
class PutOp:
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class GetOp:
    key: str
    prefix: bool = False
    limit: int = 0


TxnOp = PutOp | DeleteOp | GetOp


@dataclass(frozen=True, slots=True)
class Txn:
    """A transaction. ``request_id`` (optional, client-chosen, unique per
    logical request) makes it idempotent: applying a txn whose id was already
    applied changes nothing and returns the first application's result, so a
    client may resend a write whose outcome it does not know."""

    compares: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Barrier:
    """Changes nothing. Committing one proves that the local replica has
    applied every entry committed before the barrier was proposed; the
    linearizable read path uses it."""


Command = Txn | Barrier


@dataclass(frozen=True, slots=True)
class OpResult:
    """Result of one operation inside a transaction.

    put: ``prev`` is the previous value (or None) and ``kvs`` the new value.
    delete: ``kvs`` are the deleted values. get: ``kvs`` the values found,
    ``more`` whether ``limit`` cut the list.
    """

    kvs: tuple[KeyValue, ...] = ()
    prev: KeyValue | None = None
    more: bool = False


@dataclass(frozen=True, slots=True)
class CommandResult:
    revision: int
    succeeded: bool = True
    results: tuple[OpResult, ...] = ()


# --- command codec --------------------------------------------------------
#
# Wire form: msgpack [COMMAND_FORMAT, tag, body]. Tags are append-only.
#
# A Raft log entry holds one command, or a *batch*: [COMMAND_FORMAT, _TAG_BATCH,
# [command, ...]], each command in its own wire form. A batch is every proposal
# that was pending when the Raft thread ran, in one entry (one journal record,
# one append-entries item, one commit). Its commands are applied one after
# another, each with its own revision, request id and result, exactly as if
# they had been separate entries.

_TAG_TXN = 1
_TAG_BARRIER = 2
_TAG_BATCH = 3
_OP_PUT = 0
_OP_DELETE = 1
_OP_GET = 2


def _encode_op(op: TxnOp) -> list[object]:
    if isinstance(op, PutOp):
        return [_OP_PUT, op.key, op.value]
    if isinstance(op, DeleteOp):
        return [_OP_DELETE, op.key, op.prefix]
    return [_OP_GET, op.key, op.prefix, op.limit]


def _decode_op(raw: Sequence[object]) -> TxnOp:
    kind = raw[0]
    if kind == _OP_PUT:
        return PutOp(_str(raw[1]), _bytes(raw[2]))
    if kind == _OP_DELETE:
        return DeleteOp(_str(raw[1]), bool(raw[2]))
    if kind == _OP_GET:
        return GetOp(_str(raw[1]), bool(raw[2]), _int(raw[3]))
    raise CommandError(f"unknown operation kind {kind!r}")


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise CommandError(f"expected a string, got {type(value).__name__}")
    return value


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise CommandError(f"expected bytes, got {type(value).__name__}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CommandError(f"expected an integer, got {type(value).__name__}")
    return value


def encode_command(command: Command) -> bytes:
    if isinstance(command, Barrier):
        body: object = None
        tag = _TAG_BARRIER
    else:
        tag = _TAG_TXN
        body = [
            [[c.key, int(c.target), int(c.op), c.number, c.value] for c in command.compares],
            [_encode_op(op) for op in command.success],
            [_encode_op(op) for op in command.failure],
            command.request_id,
        ]
    packed: bytes = msgpack.packb([COMMAND_FORMAT, tag, body], use_bin_type=True)
    return packed


def encode_batch(payloads: Sequence[bytes]) -> bytes:
    """One log entry carrying the commands ``payloads`` (each made by
    :func:`encode_command`) in order. Nothing is re-encoded: the entry is a
    msgpack array header followed by the commands' own bytes."""
    packer = msgpack.Packer(use_bin_type=True)
    head: bytes = packer.pack_array_header(3) + packer.pack(COMMAND_FORMAT)
    head += packer.pack(_TAG_BATCH) + packer.pack_array_header(len(payloads))
    return head + b"".join(payloads)


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch entry: each command, or the CommandError that decoding
    it raised (one malformed command fails alone, not its neighbours)."""

    commands: tuple[Command | CommandError, ...]


def _unpack(data: bytes) -> tuple[int, object]:
    try:
        version, tag, body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CommandError(f"undecodable command: {exc}") from exc
    if version != COMMAND_FORMAT:
        raise CommandError(f"command format {version!r} is not supported (want {COMMAND_FORMAT})")
    return tag, body


def decode_command(data: bytes) -> Command:
    """Decode bytes made by :func:`encode_command`; raise CommandError on anything else."""
    return _decode_parts(*_unpack(data))


def decode_entry(data: bytes) -> Command | Batch:
    """Decode a log entry: one command (:func:`encode_command`) or a batch
    (:func:`encode_batch`). CommandError if the entry itself is malformed."""
    tag, body = _unpack(data)
    if tag != _TAG_BATCH:
        return _decode_parts(tag, body)
    if not isinstance(body, list):
        raise CommandError("malformed batch: not a list of commands")
    commands: list[Command | CommandError] = []
    for item in body:
        try:
            if not isinstance(item, list) or len(item) != 3 or item[0] != COMMAND_FORMAT:
                raise CommandError("malformed command in a batch")
            commands.append(_decode_parts(item[1], item[2]))
        except CommandError as exc:
            commands.append(exc)
    return Batch(tuple(commands))


def _decode_parts(tag: object, body: Any) -> Command:
    if tag == _TAG_BARRIER:
        return Barrier()
    if tag != _TAG_TXN:
        raise CommandError(f"unknown command tag {tag!r}")
    try:
        compares_raw, success_raw, failure_raw, request_id = body
        compares = tuple(
            Compare(_str(k), CompareTarget(t), CompareOp(o), _int(n), _bytes(v))
            for k, t, o, n, v in compares_raw
        )
        return Txn(
            compares,
            tuple(_decode_op(op) for op in success_raw),
            tuple(_decode_op(op) for op in failure_raw),
            _str(request_id),
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise CommandError(f"malformed transaction: {exc}") from exc


# --- the state machine ----------------------------------------------------


def _prefix_end(prefix: str) -> str | None:
    """Smallest string greater than every string starting with ``prefix``
    (None when there is none, i.e. prefix is empty)."""
    # Trailing U+10FFFF cannot be incremented: drop it and increment the
    # character before (every string under "a\U0010ffff" sorts before "b").
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return None
    return stem[:-1] + chr(ord(stem[-1]) + 1)


@dataclass(slots=True)
class SystemStateMachine:
    """Revisioned key-value state. See the module docstring for the model.

    ``history_limit`` bounds the watch history in events; older events are
    dropped whole revisions at a time and ``compact_revision`` rises.
    """

    history_limit: int = 10_000
    revision: int = 0
    compact_revision: int = 0
    _data: dict[str, KeyValue] = field(default_factory=dict)
    _sorted_keys: list[str] | None = None
    _history: deque[tuple[int, Event]] = field(default_factory=deque)
    # Results of the last ``dedup_limit`` transactions that carried a
    # request id, oldest first. Replicated state: part of every snapshot.
    dedup_limit: int = 100_000
    # request id -> what was kept of its result (``_kept``), and the ids in the order
    # they were applied (the oldest is forgotten first). A dict and a deque rather than
    # an OrderedDict, and a lone put's result kept as its key-value alone: a write with
    # an id costs the state machine about 90 bytes beside its id and key-value, where it
    # cost 330 (``test_the_request_table_stays_small``).
    _dedup: dict[str, _Kept] = field(default_factory=dict)
    _dedup_order: deque[str] = field(default_factory=deque)

    # -- reads --------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        return self._data.get(key)

    def range(
        self, prefix: str, *, limit: int = 0, start_after: str = ""
    ) -> tuple[list[KeyValue], bool, int]:
        """Keys starting with ``prefix`` in byte order, after ``start_after``.

        Returns ``(kvs, more, count)`` where ``count`` is the number of
        matching keys in total (ignoring limit and start_after paging).
        """
        keys = self._keys_with_prefix(prefix)
        count = len(keys)
        if start_after:
            keys = keys[bisect.bisect_right(keys, start_after) :]
        more = False
        if limit > 0 and len(keys) > limit:
            keys = keys[:limit]
            more = True
        return [self._data[k] for k in keys], more, count

    def __len__(self) -> int:
        return len(self._data)

    def events_since(
        self, start_revision: int, key: str = "", *, prefix: bool = False
    ) -> list[Event]:
        """Events with revision >= ``start_revision`` on ``key`` (or every key
        under it when ``prefix``). Raises CompactedError if some of them were
        already dropped from the bounded history."""
        if start_revision <= self.compact_revision:
            raise CompactedError(self.compact_revision)
        # The history is in revision order: walk back from the newest, so a watcher
        # that is caught up pays for the new events only, not the whole history.
        found = []
        for rev, event in reversed(self._history):
            if rev < start_revision:
                break
            if _matches(event.kv.key, key, prefix):
                found.append(event)
        found.reverse()
        return found

    # -- apply --------------------------------------------------------------

    def apply(self, command: Command) -> CommandResult:
        """Apply one committed command. Deterministic; never raises for a
        well-formed command (a failed compare is a result, not an error)."""
        if isinstance(command, Barrier):
            return CommandResult(revision=self.revision)
        if command.request_id:
            earlier = self._dedup.get(command.request_id)
            if earlier is not None:
                return _expanded(earlier)
        succeeded = all(self._compare(c) for c in command.compares)
        ops = command.success if succeeded else command.failure
        next_revision = self.revision + 1
        changed = False
        results: list[OpResult] = []
        for op in ops:
            result, op_changed = self._apply_op(op, next_revision)
            changed = changed or op_changed
            results.append(result)
        if changed:
            self.revision = next_revision
            self._trim_history()
        outcome = CommandResult(self.revision, succeeded, tuple(results))
        if command.request_id:
            self._remember(command.request_id, outcome)
        return outcome

    def _remember(self, request_id: str, outcome: CommandResult) -> None:
        self._dedup[request_id] = _kept(outcome)
        self._dedup_order.append(request_id)
        while len(self._dedup_order) > self.dedup_limit:
            del self._dedup[self._dedup_order.popleft()]

    def _apply_op(self, op: TxnOp, rev: int) -> tuple[OpResult, bool]:
        if isinstance(op, GetOp):
            if op.prefix:
                kvs, more, _ = self.range(op.key, limit=op.limit)
                return OpResult(kvs=tuple(kvs), more=more), False
            found = self._data.get(op.key)
            return OpResult(kvs=(found,) if found else ()), False
        if isinstance(op, PutOp):
            prev = self._data.get(op.key)
            if prev is None:
                kv = KeyValue(op.key, op.value, rev, rev, 1)
                self._sorted_keys = None
            else:
                kv = KeyValue(op.key, op.value, prev.create_revision, rev, prev.version + 1)
            self._data[op.key] = kv
            self._history.append((rev, Event(EventType.PUT, kv, prev)))
            return OpResult(kvs=(kv,), prev=prev), True
        keys = self._keys_with_prefix(op.key) if op.prefix else [op.key]
        deleted = [self._data.pop(k) for k in keys if k in self._data]
        for prev in deleted:
            tomb = KeyValue(prev.key, b"", 0, rev, 0)
            self._history.append((rev, Event(EventType.DELETE, tomb, prev)))
        if deleted:
            self._sorted_keys = None
        return OpResult(kvs=tuple(deleted)), bool(deleted)

    def _compare(self, c: Compare) -> bool:
        kv = self._data.get(c.key)
        if c.target is CompareTarget.VALUE:
            if kv is None:
                return False
            return _cmp(kv.value, c.op, c.value)
        actual = 0
        if kv is not None:
            actual = {
                CompareTarget.VERSION: kv.version,
                CompareTarget.CREATE: kv.create_revision,
                CompareTarget.MOD: kv.mod_revision,
            }[c.target]
        return _cmp(actual, c.op, c.number)

    def _keys_with_prefix(self, prefix: str) -> list[str]:
        if self._sorted_keys is None:
            self._sorted_keys = sorted(self._data)
        keys = self._sorted_keys
        lo = bisect.bisect_left(keys, prefix)
        end = _prefix_end(prefix)
        hi = len(keys) if end is None else bisect.bisect_left(keys, end)
        return keys[lo:hi]

    def _trim_history(self) -> None:
        history = self._history
        while len(history) > self.history_limit:
            dropped_rev = history[0][0]
            while history and history[0][0] == dropped_rev:
                history.popleft()
            self.compact_revision = dropped_rev

    # -- snapshot -----------------------------------------------------------

    def snapshot(self) -> bytes:
        """Encode the whole state. Equal states give identical bytes."""
        return b"".join(self.snapshot_chunks())

    def snapshot_chunks(self, items_per_chunk: int = 512) -> Iterator[bytes]:
        """The bytes of :meth:`snapshot`, produced a piece at a time.

        msgpack holds the GIL for a whole ``packb`` call; packing a large
        state in one call would stall every other thread of the node (the
        Raft tick included) for hundreds of milliseconds. Streaming the same
        encoding in small pieces lets a background thread write a snapshot
        while the node keeps heart-beating.
        """
        packer = msgpack.Packer(use_bin_type=True)
        kvs = [self._data[k] for k in sorted(self._data)]
        history = list(self._history)
        dedup = list(self._dedup_order)  # ids only: each result is expanded as written
        head = packer.pack_array_header(6)
        head += packer.pack(SNAPSHOT_FORMAT)
        head += packer.pack(self.revision)
        head += packer.pack(self.compact_revision)
        yield head
        current, kept = self._data, self._dedup

        def dedup_tuple(rid: str) -> list[object]:
            return [rid, _result_tuple(_expanded(kept[rid]), current)]

        sections: list[tuple[list[Any], Callable[[Any], list[object]]]] = [
            (kvs, _kv_tuple),
            (history, _event_tuple),
            (dedup, dedup_tuple),
        ]
        for items, encode in sections:
            yield packer.pack_array_header(len(items))
            for start in range(0, len(items), items_per_chunk):
                yield b"".join(
                    packer.pack(encode(item)) for item in items[start : start + items_per_chunk]
                )

    def copy(self) -> SystemStateMachine:
        """A shallow copy sharing the (immutable) values: O(keys) pointer
        copies, a few milliseconds for 100k keys. Snapshots are encoded from
        a copy so the live state can keep changing meanwhile."""
        return SystemStateMachine(
            history_limit=self.history_limit,
            revision=self.revision,
            compact_revision=self.compact_revision,
            _data=dict(self._data),
            _sorted_keys=self._sorted_keys,
            _history=deque(self._history),
            dedup_limit=self.dedup_limit,
            _dedup=dict(self._dedup),
            _dedup_order=deque(self._dedup_order),
        )

    def restore(self, data: bytes | memoryview) -> None:
        """Replace the state with a snapshot made by :meth:`snapshot`."""
        self.restore_from(io.BytesIO(data))

    def restore_from(self, stream: BinaryIO) -> None:
        """Replace the state with the snapshot read from ``stream``, to its end.

        Streaming: items are decoded one at a time as they are read, so restoring
        100k keys never holds the encoded snapshot, or a decoded copy of it as plain
        lists, beside the state being built -- only the state itself. A malformed
        snapshot raises SnapshotError and leaves the current state untouched."""
        unpacker = msgpack.Unpacker(stream, raw=False, read_size=1 << 16)
        try:
            if unpacker.read_array_header() != 6:
                raise SnapshotError("undecodable snapshot: not a six-field snapshot")
            fmt = unpacker.unpack()
            if fmt not in READABLE_SNAPSHOT_FORMATS:
                raise SnapshotError(f"snapshot format {fmt!r} is not supported")
            revision, compact = unpacker.unpack(), unpacker.unpack()
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in (revision, compact)):
                raise TypeError("revision and compact revision must be integers")
            entries: dict[str, KeyValue] = {}
            for _ in range(unpacker.read_array_header()):
                kv = KeyValue(*unpacker.unpack())
                entries[kv.key] = kv
            events: deque[tuple[int, Event]] = deque()
            for _ in range(unpacker.read_array_header()):
                rev, t, kv_raw, prev = unpacker.unpack()
                prev_kv = KeyValue(*prev) if prev else None
                events.append((rev, Event(EventType(t), KeyValue(*kv_raw), prev_kv)))
            dedup: dict[str, _Kept] = {}
            order: deque[str] = deque()
            for _ in range(unpacker.read_array_header()):
                rid, res = unpacker.unpack()
                rid = _str(rid)
                if rid in dedup:
                    raise ValueError(f"request id {rid!r} is in the table twice")
                dedup[rid] = _kept(_result_from_tuple(res, entries))
                order.append(rid)
        except SnapshotError:
            raise
        except msgpack.OutOfData as exc:
            raise SnapshotError("undecodable snapshot: it ends early (truncated)") from exc
        except (msgpack.UnpackException, CommandError, ValueError, TypeError) as exc:
            raise SnapshotError(f"malformed snapshot: {exc}") from exc
        try:
            unpacker.unpack()
        except msgpack.OutOfData:
            pass
        except (msgpack.UnpackException, ValueError) as exc:
            raise SnapshotError(f"malformed snapshot: bytes after its end ({exc})") from exc
        else:
            raise SnapshotError("malformed snapshot: data after its end")
        self.revision = revision
        self.compact_revision = compact
        self._data = entries
        self._sorted_keys = None
        self._history = events
        self._dedup, self._dedup_order = dedup, order

    def items(self) -> Iterable[KeyValue]:
        return self._data.values()


# What the request-id table keeps of a result: a lone put that succeeded is kept as
# its new key-value (with the previous one when it replaced a value), which with the
# key-value's mod revision is the whole result; anything else as the result itself.
_Kept = KeyValue | tuple[KeyValue, KeyValue] | CommandResult


def _kept(result: CommandResult) -> _Kept:
    if result.succeeded and len(result.results) == 1:
        (op,) = result.results
        if len(op.kvs) == 1 and not op.more and op.kvs[0].mod_revision == result.revision:
            kv = op.kvs[0]
            if _expanded(kv if op.prev is None else (kv, op.prev)) == result:
                return kv if op.prev is None else (kv, op.prev)
    return result


def _expanded(kept: _Kept) -> CommandResult:
    if isinstance(kept, CommandResult):
        return kept
    kv, prev = (kept, None) if isinstance(kept, KeyValue) else kept
    return CommandResult(kv.mod_revision, True, (OpResult((kv,), prev, False),))


def _kv_tuple(kv: KeyValue) -> list[object]:
    return [kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version]


def _event_tuple(item: tuple[int, Event]) -> list[object]:
    rev, ev = item
    return [rev, int(ev.type), _kv_tuple(ev.kv), _kv_tuple(ev.prev_kv) if ev.prev_kv else None]


def _result_tuple(res: CommandResult, current: dict[str, KeyValue]) -> list[object]:
    """A kept result for a snapshot. A key-value equal to the key's current one (a
    put's new value, a get's find, until the key changes again) is written as its key
    alone and restored as that current object, so the table neither doubles the
    snapshot nor, after a restore, holds a copy of every value. (Equality, not
    identity, so that equal states still give identical bytes.)"""

    def kv_or_key(kv: KeyValue) -> object:
        return kv.key if current.get(kv.key) == kv else _kv_tuple(kv)

    return [
        res.revision,
        res.succeeded,
        [
            [[kv_or_key(kv) for kv in r.kvs], _kv_tuple(r.prev) if r.prev else None, r.more]
            for r in res.results
        ],
    ]


def _result_from_tuple(raw: list[Any], current: dict[str, KeyValue]) -> CommandResult:
    revision, succeeded, results = raw

    def kv_from(item: Any) -> KeyValue:
        if isinstance(item, str):
            found = current.get(item)
            if found is None:
                raise ValueError(f"a kept result names key {item!r}, which the state lacks")
            return found
        return KeyValue(*item)

    return CommandResult(
        _int(revision),
        bool(succeeded),
        tuple(
            OpResult(
                tuple(kv_from(kv) for kv in kvs),
                KeyValue(*prev) if prev else None,
                bool(more),
            )
            for kvs, prev, more in results
        ),
    )


def _matches(candidate: str, key: str, prefix: bool) -> bool:
    return candidate.startswith(key) if prefix else candidate == key


def _cmp(actual: int | bytes, op: CompareOp, expected: int | bytes) -> bool:
    if op is CompareOp.EQUAL:
        return actual == expected
    if op is CompareOp.NOT_EQUAL:
        return actual != expected
    if op is CompareOp.GREATER:
        return actual > expected  # type: ignore[operator]
    return actual < expected  # type: ignore[operator]


def page_events(events: list[Event], limit: int, revision: int) -> tuple[list[Event], int, bool]:
    """The first whole revisions of ``events`` (in revision order) holding at most
    ``limit`` events (0 = all; a single revision is never split, so the first one is
    kept whatever its size); the revision the page is complete up to (``revision``
    when nothing was cut, else the last kept event's); and whether events were cut."""
    if limit <= 0 or len(events) <= limit:
        return events, revision, False
    end = limit
    boundary = events[limit].kv.mod_revision
    while end > 0 and events[end - 1].kv.mod_revision == boundary:
        end -= 1
    if end == 0:  # one revision holds more than the limit: keep it whole
        while end < len(events) and events[end].kv.mod_revision == boundary:
            end += 1
    if end == len(events):
        return events, revision, False
    return events[:end], events[end - 1].kv.mod_revision, True
