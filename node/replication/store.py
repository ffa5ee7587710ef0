"""The node's local durable store for the population, agent, mesh and metrics tiers.

One SQLite database per node (``journal_mode=WAL``, ``synchronous=FULL``),
written by **one writer thread** that owns the only write connection, read
through a small pool of separate read-only connections. The replication layer
calls it from the node's asyncio loop; nothing here knows about placement,
peers or CRDTs: values are opaque bytes.

Write path (group commit)::

    caller coroutine ──submit──▶ queue ──▶ writer thread:
                                            take everything queued (≤ group_commit_max)
                                            BEGIN IMMEDIATE
                                            apply each item in submission order
                                            COMMIT            ← one fsync of the WAL
                                            resolve the batch's futures with one
                                            loop.call_soon_threadsafe per loop

While one batch commits, new submissions queue up and form the next batch, so
the number of fsyncs per write falls as concurrency grows, and a lone write
still pays exactly one.

Durability
----------
A write coroutine (``update``, ``put_many``, ``delete``, ``add_hint``,
``delete_hints``, ``set_meta``) returns only after the transaction holding it
has committed, and with ``synchronous=FULL`` SQLite fsyncs the WAL inside
every commit. So a write that returned survives ``kill -9`` of the process
and power loss (given a disk that honours fsync). A crash mid-commit can
leave a torn WAL tail; WAL frames carry a cumulative checksum and the salt of
their WAL generation, and recovery stops at the first frame that does not
verify, so the torn transaction is discarded as a whole and never served. It
was never acknowledged, because acknowledging needs the completed fsync.

Measured on this project's 2-core VM (SQLite 3.40.1, ext4 on a virtio disk):

* ``strace -f -y``: a commit is exactly one ``fdatasync`` of ``<path>-wal``;
  a lone write pays that one sync, a batch of 256 pays it once; checkpoints
  (every ~1000 WAL pages) add a WAL and a database sync each. The WAL's
  directory entry is synced by SQLite when it creates the file, the database
  file's by ``TierStore`` when it creates the schema.
* ``tests/integration/test_store_crash.py``: with 64 concurrent writers killed
  by SIGKILL mid-stream, every acknowledged update is present after reopen
  and at most the one in-flight update per writer appears unacknowledged;
  cutting the WAL inside the last transaction's frames, or flipping a byte in
  its last page, drops exactly that (multi-frame) transaction and nothing
  before it, and the database passes ``integrity_check``.
* Not measured: real power loss (that rests on SQLite's documented WAL +
  ``synchronous=FULL`` contract and on the disk honouring fsync).

Reads (``get``, ``scan``, ``keys_and_digests``, ...) are synchronous, safe
from any thread, and see only committed data: a write is visible to readers
once its coroutine could return (possibly a moment earlier, between COMMIT
and the future being resolved). They never block on, or are blocked by, the
writer (WAL).

Ordering: items are applied in the order their coroutines submitted them
(coroutines submit at their first step, so ``gather(update(a), update(b))``
applies ``a`` then ``b``). An ``update`` sees every earlier item, committed or
in the same batch.

Cancellation: cancelling a waiting coroutine does not withdraw its write; it
may still commit.

Errors::

    StoreError                 root; raised as itself only for an unexpected SQLite error
                               on a read (the message names the SQLite error code)
    ├── StoreOpenError         the store could not be opened (permissions, WAL unsupported)
    │   ├── StoreLockedError   another TierStore (this or another process) holds the path
    │   └── SchemaVersionError the file was written by a newer schema version
    ├── CorruptStoreError      not a SQLite database, damaged pages, or not a Tadpole store;
    │                          raised at open or by any later read or write
    ├── CorruptValueError      an update found the value no longer matching its digest
    │                          (rotted on disk): refused, nothing written (replace_if repairs)
    ├── StoreClosedError       called after close()
    ├── BatchAbortedError      SQLite rolled the batch back (disk full, I/O error while
    │                          writing): nothing of it was committed, retrying is safe
    └── StoreFailedError       COMMIT itself failed or the writer died: the outcome of that
                               batch is unknown, and the store refuses every later write
                               (reopen it: recovery decides what was durable)

Every message names the database path. Local mistakes (a tier or key that
is not a non-empty ``str``, a value that is not ``bytes``) raise
``TypeError``/``ValueError`` in the caller, before anything is queued. An
exception raised by an ``update`` function is delivered as is to that
update's caller; the other items of the batch commit normally.

Encryption at rest
------------------
Given a :class:`~consensus.atrest.Keyring`, every value (and every hint's value) is
stored AES-256-GCM-encrypted under a data key of this store (table ``deks``, each
wrapped by a key of the keyring; a new one at every open, and whenever the keyring's
primary key changes or a data key has made ``DATA_KEY_USES`` encryptions). The row's
``dek`` column names it (NULL: stored in plaintext). The associated data binds each
ciphertext to its tier and key (and a hint's to its target), so a value moved to
another row fails authentication, and a failed authentication is a corrupt value
(:class:`CorruptValueError`), never decoded. Keys, digests and timestamps stay in
plaintext: anti-entropy compares digests between replicas. ``reseal`` re-encrypts,
in the background, whatever is under another key than the primary (or plaintext);
``secure_delete`` overwrites what a rewrite or delete frees.

Files: ``<path>``, ``<path>-wal``, ``<path>-shm`` (SQLite) and ``<path>.lock``
(an ``flock`` held while the store is open, so two nodes never share one
database).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol

from consensus.atrest import AtRestError, DataKey, Keyring, KeyringError
from consensus.durable import FSYNC_BUCKETS, Histogram, fsync_dir

__all__ = [
    "SCHEMA_VERSION",
    "BatchAbortedError",
    "ChangePage",
    "CorruptStoreError",
    "CorruptValueError",
    "Hint",
    "ReplicaStore",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "StoreFailedError",
    "StoreLockedError",
    "StoreOpenError",
    "StoreStats",
    "TierStore",
    "digest_of",
    "request_born",
    "request_digest",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 6
# How many change-feed entries a store keeps (``changes`` table); older ones are
# trimmed, and a reader asking for them is told where the feed now starts.
FEED_KEEP: Final = 100_000
_TRIM_EVERY: Final = 1024  # feed inserts between trims
BATCH_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
# How long a request id applied by ``update_once`` is remembered (``requests``
# table, by :func:`request_born` and :func:`request_digest`): a resend within this
# window is not applied again. Ids are kept by the window-long *slot* they were
# applied in, and the current and the previous slot are searched, so an id is known
# for at least this long and for less than twice it; then it is trimmed.
REQUEST_WINDOW_NS: Final = 3600 * 10**9
# Expired request ids deleted per trim at most (a trim comes every _TRIM_EVERY ids
# remembered): four per id written, so a slot's worth of them goes in a quarter of the
# next slot, in short steps rather than one long delete holding the writer.
_REQUEST_TRIM_MAX: Final = 4096
# meta: the newest slot holding request ids converted from schema v5, filed as born 0
_UNBORN_SLOT: Final = "requests_unborn_slot"

_SCHEMA: Final = (
    """CREATE TABLE state (
        tier TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        digest BLOB NOT NULL,
        updated_ns INTEGER NOT NULL,
        PRIMARY KEY (tier, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE hints (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        tier TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        created_ns INTEGER NOT NULL
    )""",
    "CREATE INDEX hints_by_target ON hints (target)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    *(
        _V2 := (
            # The change feed (v2): one row per committed change of a key's value.
            """CREATE TABLE changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            tier TEXT NOT NULL,
            key TEXT NOT NULL,
            ts_ns INTEGER NOT NULL
        )""",
        )
    ),
    *(
        _V3 := (
            # Request ids applied by update_once (v3), for REQUEST_WINDOW_NS.
            """CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            at_ns INTEGER NOT NULL
        ) WITHOUT ROWID""",
            "CREATE INDEX requests_by_age ON requests (at_ns)",
        )
    ),
    *(
        _V4 := (
            # Encryption at rest (v4): data keys, wrapped by a key of the keyring, and
            # the data key each value is under (NULL: plaintext).
            """CREATE TABLE deks (
            id INTEGER PRIMARY KEY,
            wrapped BLOB NOT NULL,
            created_ns INTEGER NOT NULL
        )""",
            "ALTER TABLE state ADD COLUMN dek INTEGER",
            "ALTER TABLE hints ADD COLUMN dek INTEGER",
            # No index of values by data key: every value written would update it,
            # and only opening and re-sealing read it (_deks_in_use scans instead).
            "CREATE INDEX hints_by_dek ON hints (dek) WHERE dek IS NOT NULL",
        )
    ),
    *(
        _V5 := (
            # Request ids by slot and digest (v5). 16 bytes of digest instead of the
            # scoped id (tier, key and client id, ~60 bytes), so each id written
            # dirties fewer pages. Keyed by the window-long slot first, so expired ids
            # are deleted from the front of the table, in key order, instead of each
            # at a random place, and no index by age is needed: the file an hour of
            # ids fills is a seventh of the size. v4's ids are converted, so a resend
            # still meets the id it sent before the upgrade.
            """CREATE TABLE requests_v5 (
            slot INTEGER NOT NULL,
            id BLOB NOT NULL,
            PRIMARY KEY (slot, id)
        ) WITHOUT ROWID""",
            "INSERT OR IGNORE INTO requests_v5 (slot, id) SELECT"
            f" at_ns / {REQUEST_WINDOW_NS}, tadpole_request_digest(id) FROM requests",
            "DROP TABLE requests",
            "ALTER TABLE requests_v5 RENAME TO requests",
            # v4 stores made before 2026-12-07 have an index of values by data key,
            # which cost every state write a second B-tree update (a quarter of the
            # writer's time per value, encrypted); only opening and re-sealing read it.
            "DROP INDEX IF EXISTS state_by_dek",
        )
    ),
    *(
        _V6 := (
            # Request ids by slot, birth time and digest (v6). An id ending in a UUIDv7
            # (the client library's ids) is filed under the millisecond it was made
            # (request_born), so the ids a node remembers are written side by side at
            # the end of their slot: a batch of them dirties a few pages, not one page
            # each at random places of a table holding up to two hours of ids (at a
            # million held, 37 against 17 us per update; bench/request_ids_bench.py).
            # Other ids are born 0.
            """CREATE TABLE requests_v6 (
            slot INTEGER NOT NULL,
            born INTEGER NOT NULL,
            id BLOB NOT NULL,
            PRIMARY KEY (slot, born, id)
        ) WITHOUT ROWID""",
            # v5 kept only digests, so a converted id's birth time is lost: it is born
            # 0, and the newest slot holding such ids is noted, so that ids are also
            # looked for under 0 until that slot is no longer searched.
            # (Not HAVING without GROUP BY: SQLite refuses that before 3.39.)
            "INSERT OR REPLACE INTO meta (name, value) SELECT name, value FROM (SELECT"
            f" '{_UNBORN_SLOT}' AS name, CAST(MAX(slot) AS BLOB) AS value FROM requests)"
            " WHERE value IS NOT NULL",
            "INSERT INTO requests_v6 (slot, born, id) SELECT slot, 0, id FROM requests",
            "DROP TABLE requests",
            "ALTER TABLE requests_v6 RENAME TO requests",
        )
    ),
)
_TABLES: Final = frozenset({"state", "hints", "meta", "changes", "requests", "deks"})
_FEED_ID: Final = "feed_id"  # meta: random id of this store's feed (new file, new feed)
_FEED_TRIMMED: Final = "feed_trimmed"  # meta: the highest seq trimmed away

# Busy timeout for both connection kinds. With one writer and WAL, readers
# never wait for the writer; a wait happens only while a connection runs WAL
# recovery at open. Unit: seconds.
_BUSY_TIMEOUT_S: Final = 10.0
# Idle read connections kept for reuse; extra ones are closed when returned.
_READER_POOL_MAX: Final = 8
# Rows per read transaction in keys_and_digests (bounds how long one read
# snapshot pins the WAL; larger pages are faster, smaller ones checkpoint-friendlier).
_DIGEST_PAGE: Final = 2048


def digest_of(value: bytes) -> bytes:
    """The digest stored beside every value: BLAKE2b, 16 bytes."""
    return hashlib.blake2b(value, digest_size=16).digest()


def request_digest(request_id: str) -> bytes:
    """What the ``requests`` table keeps of a request id: BLAKE2b, 16 bytes. Two ids
    with one digest would make the second a duplicate; at 2**-128 a pair, a billion
    ids stored at once leave that chance below 10**-20."""
    return hashlib.blake2b(request_id.encode(), digest_size=16, person=b"tadpole-req").digest()


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def request_born(request_id: str) -> int:
    """The Unix millisecond a request id was made, if it ends with a UUIDv7 (RFC 9562;
    32 hex digits or the canonical 8-4-4-4-12 form) -- the client library's ids do
    (``node.client.messages.new_request_id``) -- else 0. The ``requests`` table files
    ids by it, so ids made close in time are stored side by side. Only where an id
    is kept depends on it, never whether it is found: it is a function of the id."""
    tail = request_id[-36:]
    if len(tail) == 36 and tail[8] == tail[13] == tail[18] == tail[23] == "-":
        tail = tail.replace("-", "")
    else:
        tail = request_id[-32:]
    if len(tail) != 32 or tail[12] != "7" or tail[16] not in "89abAB" or not _HEX.issuperset(tail):
        return 0
    return int(tail[:12], 16)


def _request_key(request_id: str) -> tuple[int, bytes]:
    """Where the ``requests`` table files an id: (birth time, digest)."""
    return request_born(request_id), request_digest(request_id)


# --------------------------------------------------------------------- errors


class StoreError(Exception):
    """Root of every error this module raises (see the tree in the module docstring)."""


class StoreOpenError(StoreError):
    pass


class StoreLockedError(StoreOpenError):
    pass


class SchemaVersionError(StoreOpenError):
    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: store schema version {found} is newer than this code supports"
            f" ({supported}); upgrade the node software, do not downgrade a data directory"
        )
        self.found = found
        self.supported = supported


class CorruptStoreError(StoreError):
    pass


class CorruptValueError(StoreError):
    """A value no longer matches the digest stored beside it (it rotted on disk), or,
    encrypted at rest, fails authentication. An update of it is refused, writing
    nothing: joining into garbage would store the garbage again under a valid digest,
    where no scrub could find it. ``value`` is the bytes as stored."""

    def __init__(
        self,
        path: str,
        tier: str,
        key: str,
        value: bytes,
        why: str = "no longer matches its digest",
    ) -> None:
        super().__init__(f"{path}: {tier}/{key} {why} (corrupt)")
        self.tier, self.key, self.value = tier, key, value


class StoreClosedError(StoreError):
    pass


class BatchAbortedError(StoreError):
    pass


class StoreFailedError(StoreError):
    pass


_CORRUPT_CODES: Final = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _translate(exc: sqlite3.Error, path: str, doing: str) -> StoreError:
    """The one place where sqlite3 exceptions become StoreErrors."""
    name = getattr(exc, "sqlite_errorname", "")
    if name in _CORRUPT_CODES or type(exc) is sqlite3.DatabaseError:
        return CorruptStoreError(
            f"{path}: {doing}: database is corrupt or not a SQLite database ({exc})"
        )
    return StoreError(f"{path}: {doing}: {exc} ({name or type(exc).__name__})")


# ---------------------------------------------------------------- data types


@dataclass(frozen=True, slots=True)
class Hint:
    """A write held for ``target`` while it was unreachable (hinted handoff)."""

    id: int
    target: str
    tier: str
    key: str
    value: bytes
    created_ns: int


@dataclass(frozen=True, slots=True)
class ChangePage:
    """Entries of a store's change feed after a sequence number.

    ``entries``: ``(seq, key, value)`` in seq order, one per key (its last change in
    the page), ``value`` the key's value when the page was read (None: deleted) -- or,
    asked for ``digests``, its digest (``digest_of(value)``, read from the store
    without the value: nothing decrypted or hashed).
    ``through``: every change up to this seq is covered. ``trimmed``: changes up to
    this seq are no longer kept. ``feed``: the feed's id; a store created anew (a
    wiped data dir) starts a new feed whose seqs start over.
    """

    feed: str
    entries: list[tuple[int, str, bytes | None]]
    through: int
    trimmed: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters since open; a consistent snapshot.

    ``fsyncs`` counts commits that forced a WAL sync (one per commit under
    ``synchronous=FULL``); checkpoint syncs are SQLite's and not counted.
    ``items`` counts items in committed batches, including ones whose own
    update function raised (``item_errors``).
    """

    commits: int = 0
    items: int = 0
    fsyncs: int = 0
    max_batch: int = 0
    item_errors: int = 0
    batches_aborted: int = 0


# Work items. Plain tuples keep the per-item overhead small:
#   (kind, args, future, loop)
_UPDATE: Final = 0
_PUT_MANY: Final = 1
_DELETE: Final = 2
_ADD_HINT: Final = 3
_DELETE_HINTS: Final = 4
_SET_META: Final = 5
_UPDATE_ONCE: Final = 6
_UPDATE_GROUPS: Final = 7
_REPLACE_IF: Final = 8
_RESEAL: Final = 9
_DROP_DEKS: Final = 10
_UPDATE_MANY: Final = 11
_DEK_IDS: Final = 12

_Item = tuple[int, tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_Outcome = tuple["asyncio.Future[Any]", BaseException | None, Any]

UpdateFn = Callable[[bytes | None], bytes | None]
# update_once: (current value, the given request ids already applied) ->
# (new value, the request ids it applied now, to remember)
OnceFn = Callable[[bytes | None, frozenset[str]], tuple[bytes | None, Sequence[str]]]


def _check_str(name: str, value: object) -> None:
    # Empty names are refused so that ``after=""`` in scan unambiguously means
    # "from the start" and paging can never repeat a key.
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")


def _as_bytes(name: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    SQLite compares TEXT as UTF-8 bytes, which orders like code points (and like
    Python's ``str``), so the successor is found by incrementing the last code
    point that can be incremented. Surrogates cannot be stored, so they are
    skipped. ``None`` means no upper bound.
    """
    chars = list(prefix)
    while chars:
        cp = ord(chars[-1])
        if cp < 0x10FFFF:
            cp += 1
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0xE000
            chars[-1] = chr(cp)
            return "".join(chars)
        chars.pop()
    return None


# ----------------------------------------------------------------- the interface


class ReplicaStore(Protocol):
    """What the replication driver needs from a node's store.

    :class:`TierStore` is the real one; :class:`node.replication.memory.MemoryStore`
    keeps the same contract in a dict for whole-cluster tests (both run one contract
    suite, ``tests/unit/node/replication/test_memory_store.py``).

    Contract (as :class:`TierStore` documents in detail): a coroutine returns once its
    write is durable; writes apply in the order their coroutines were first awaited;
    ``update`` runs ``fn(current)`` atomically (``None`` deletes; the same value writes
    nothing; an exception from ``fn`` is raised to the caller and nothing is written)
    and returns the new value; reads see every write whose coroutine returned; keys
    iterate in code point order; hints come oldest first with increasing ids.
    """

    async def update(self, tier: str, key: str, fn: UpdateFn) -> bytes | None: ...

    async def update_once(
        self, tier: str, key: str, fn: OnceFn, request_ids: Sequence[str]
    ) -> bytes | None: ...

    async def update_many_once(
        self, items: Sequence[tuple[str, str, OnceFn, Sequence[str]]]
    ) -> list[bytes | Exception | None]: ...

    async def update_many(
        self, items: Sequence[tuple[str, str, UpdateFn]]
    ) -> list[bytes | Exception | None]: ...

    async def add_hint(self, target: str, tier: str, key: str, value: bytes) -> int: ...

    async def delete_hints(self, ids: Iterable[int]) -> int: ...

    def get(self, tier: str, key: str) -> bytes | None: ...

    def get_checked(self, tier: str, key: str) -> bytes | None: ...

    async def replace_if(self, tier: str, key: str, expected: bytes, new: bytes) -> bool: ...

    def scan(
        self, tier: str, prefix: str = "", after: str = "", limit: int = 0
    ) -> list[tuple[str, bytes]]: ...

    def keys_and_digests(self, tier: str) -> Iterator[tuple[str, bytes]]: ...

    def count(self, tier: str) -> int: ...

    def version(self, tier: str) -> int: ...

    def hints_for(self, target: str, limit: int = 0) -> list[Hint]: ...

    def hints_about(self, tier: str, key: str) -> list[Hint]: ...

    async def set_meta(self, name: str, value: bytes) -> None: ...

    def get_meta(self, name: str) -> bytes | None: ...

    def changes(
        self, tier: str, prefix: str, after: int, limit: int, *, digests: bool = False
    ) -> ChangePage: ...


# ----------------------------------------------------------------- the store


def _last_per_key(
    rows: Iterable[tuple[int, str, bytes | None]],
) -> list[tuple[int, str, bytes | None]]:
    """One entry per key, its last, in seq order: a page reports each changed key once,
    with its current value."""
    last: dict[str, tuple[int, str, bytes | None]] = {}
    for row in rows:
        last.pop(row[1], None)
        last[row[1]] = row
    return list(last.values())


def _tiers_written(batch: Iterable[_Item]) -> set[str]:
    """The tiers whose values a batch of work items may have changed."""
    tiers: set[str] = set()
    for kind, args, *_ in batch:
        if kind in (_UPDATE, _DELETE, _UPDATE_ONCE):
            tiers.add(args[0])
        elif kind in (_UPDATE_GROUPS, _UPDATE_MANY):
            tiers.update(group[0] for group in args[0])
        elif kind == _PUT_MANY:
            tiers.update(t for t, _, _ in args[0])
    return tiers


class TierStore:
    """Durable key/value state per tier, hints and metadata in one SQLite file.

    Thread-safety: the coroutines may be awaited concurrently from one or
    more event loops (each result is delivered on the loop that submitted
    it); the synchronous reads may be called from any thread; ``close`` from
    any thread except the writer (i.e. not from inside an update function).

    ``group_commit_max`` bounds the items in one transaction (default 512: a
    larger batch amortises the fsync further but holds every item in it until
    the whole batch commits). ``group_commit_wait_s`` (default 0) lets the
    writer linger that long for more items before committing a batch that is
    not full: more items per fsync at low concurrency, at the price of that
    much latency; 0 commits whatever is queued at once. ``clock_ns`` stamps
    ``updated_ns`` and ``created_ns`` (default ``time.time_ns``).
    """

    def __init__(
        self,
        path: str,
        *,
        group_commit_max: int = 512,
        group_commit_wait_s: float = 0.0,
        clock_ns: Callable[[], int] = time.time_ns,
        feed_keep: int = FEED_KEEP,
        keyring: Keyring | None = None,
    ) -> None:
        if group_commit_max < 1:
            raise ValueError(f"group_commit_max must be >= 1, got {group_commit_max}")
        if group_commit_wait_s < 0:
            raise ValueError(f"group_commit_wait_s must be >= 0, got {group_commit_wait_s}")
        self.path = os.path.abspath(path)
        self._max = group_commit_max
        self._wait_s = group_commit_wait_s
        self._clock_ns = clock_ns
        # Encryption at rest (module docstring). _deks: every data key of the file,
        # unwrapped (readers look them up; the writer adds new ones before using them);
        # _dek: the one new values go under (writer thread).
        self._keyring = keyring
        self._deks: dict[int, DataKey] = {}
        self._dek: tuple[int, DataKey] | None = None

        self._cond = threading.Condition()
        self._queue: collections.deque[_Item] = collections.deque()
        self._closing = False  # under _cond: no new submissions
        self._failure: StoreFailedError | None = None  # under _cond
        self._close_lock = threading.Lock()
        self._closed = False

        self._stats_lock = threading.Lock()
        self._stats = StoreStats()
        self._versions: dict[str, int] = {}  # tier -> writes committed (this process)
        self._feed_keep = feed_keep
        # Group commit, for /metrics: how long each COMMIT (its fsync) took and how
        # many queued writes it carried. Observed by the writer thread only.
        self.commit_seconds = Histogram(FSYNC_BUCKETS)
        self.commit_items = Histogram(BATCH_BUCKETS)
        self._since_trim = 0  # writer thread only
        self._since_request_trim = 0  # writer thread only
        # Request ids held for deduplication, for /metrics: counted at open, then moved
        # by the writer as each batch commits (_request_delta: the batch's so far).
        self._request_ids = 0
        self._request_delta = 0  # writer thread only

        self._pool_lock = threading.Lock()
        self._pool: list[sqlite3.Connection] = []
        self._readers_closed = False

        self._lock_fd = self._acquire_lock()
        try:
            self._wconn = self._open_writer()
            try:
                self._load_deks(self._wconn)
                (self._request_ids,) = self._wconn.execute(
                    "SELECT COUNT(*) FROM requests"
                ).fetchone()
                unborn = self._wconn.execute(
                    "SELECT value FROM meta WHERE name=?", (_UNBORN_SLOT,)
                ).fetchone()
                # The newest slot with ids converted from v5, filed as born 0 (None: none).
                self._unborn_slot: int | None = None if unborn is None else int(unborn[0])
            except BaseException:
                self._wconn.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._writer = threading.Thread(
            target=self._writer_main, name=f"store-writer:{os.path.basename(path)}", daemon=True
        )
        self._writer.start()

    # ---------------------------------------------------------------- open

    def _acquire_lock(self) -> int:
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreOpenError(f"{self.path}: cannot create lock file: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreLockedError(
                f"{self.path}: already open by another TierStore (in this or another process)"
            ) from exc
        return fd

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_S,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # handed to the writer thread / pooled across threads
        )

    def _open_writer(self) -> sqlite3.Connection:
        created = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreOpenError(f"{self.path}: cannot open: {exc}") from exc
        try:
            self._prepare(conn, created)
        except sqlite3.Error as exc:
            conn.close()
            err = _translate(exc, self.path, "open")
            if type(err) is StoreError:
                err = StoreOpenError(str(err))
            raise err from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection, created: bool) -> None:
        # Refuse a newer schema before changing anything in the file.
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(self.path, version, SCHEMA_VERSION)
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        if mode != "wal":
            raise StoreOpenError(f"{self.path}: WAL mode unavailable (journal_mode is {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        if int(conn.execute("PRAGMA synchronous").fetchone()[0]) != 2:
            raise StoreOpenError(f"{self.path}: synchronous=FULL was not accepted")
        tables = {
            str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if version == 0:
            if tables:
                raise CorruptStoreError(
                    f"{self.path}: not a Tadpole store (a SQLite database with tables"
                    f" {sorted(tables)} and no schema version)"
                )
            self._migrate(conn, _SCHEMA)
            # The file's directory entry must survive power loss too.
            fsync_dir(os.path.dirname(self.path))
            log.info("store %s created (schema v%d)", self.path, SCHEMA_VERSION)
        elif version < SCHEMA_VERSION:
            steps = {
                1: (*_V2, *_V3, *_V4, *_V5, *_V6),
                2: (*_V3, *_V4, *_V5, *_V6),
                3: (*_V4, *_V5, *_V6),
                4: (*_V5, *_V6),
                5: _V6,
            }[version]
            self._migrate(conn, steps)
            log.info("store %s migrated from schema v%d to v%d", self.path, version, SCHEMA_VERSION)
        elif not tables >= _TABLES:
            raise CorruptStoreError(
                f"{self.path}: schema v{version} but tables {sorted(_TABLES - tables)} are missing"
            )
        else:
            log.info("store %s opened (schema v%d, created=%s)", self.path, version, created)

    @staticmethod
    def _migrate(conn: sqlite3.Connection, statements: Iterable[str]) -> None:
        """Run ``statements``, give the store a feed id and stamp the schema version, in
        one transaction."""
        conn.create_function(
            "tadpole_request_digest", 1, lambda i: request_digest(str(i)), deterministic=True
        )
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
                (_FEED_ID, secrets.token_hex(8).encode()),
            )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ---------------------------------------------------- encryption at rest

    def _load_deks(self, conn: sqlite3.Connection) -> None:
        """Unwrap every data key the file holds; refuse to open if a value is under a
        key the keyring lacks (or there is no keyring)."""
        if self._keyring is not None:
            conn.execute("PRAGMA secure_delete=ON")  # what a rewrite frees is zeroed
        unused = []
        in_use = self._deks_in_use(conn)
        for dek_id, wrapped in conn.execute("SELECT id, wrapped FROM deks").fetchall():
            used = in_use.get(int(dek_id), 0)
            if not used:
                unused.append(int(dek_id))  # one per earlier open, say: forget it
                continue
            if self._keyring is None:
                raise StoreOpenError(
                    f"{self.path}: {used} values are encrypted at rest, and no encryption"
                    " key is configured"
                )
            try:
                self._deks[int(dek_id)] = self._keyring.unwrap(
                    bytes(wrapped), what=f"{self.path}: data key {dek_id}"
                )
            except AtRestError as exc:
                raise StoreOpenError(f"{exc} ({used} values are under it)") from exc
        if unused:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM deks WHERE id=?", [(d,) for d in unused])
            conn.execute("COMMIT")

    @staticmethod
    def _dek_counts(conn: sqlite3.Connection) -> dict[int | None, int]:
        """How many values and hints are under each data key (None: plaintext): one
        pass over each table (nothing indexes values by data key)."""
        counts: dict[int | None, int] = {}
        for table in ("state", "hints"):
            for dek, count in conn.execute(f"SELECT dek, count(*) FROM {table} GROUP BY dek"):
                dek_id = None if dek is None else int(dek)
                counts[dek_id] = counts.get(dek_id, 0) + int(count)
        return counts

    @classmethod
    def _deks_in_use(cls, conn: sqlite3.Connection) -> dict[int, int]:
        """How many values and hints each data key is under (at open, and after a
        re-seal)."""
        return {dek: n for dek, n in cls._dek_counts(conn).items() if dek is not None}

    def _ensure_dek(self, conn: sqlite3.Connection) -> None:
        """Writer thread, outside a transaction: make ``_dek`` a data key under the
        keyring's primary key with uses left (a new one committed to ``deks``)."""
        keyring = self._keyring
        if keyring is None:
            self._dek = None
            return
        current = self._dek
        if (
            current is not None
            and current[1].kek_fingerprint == keyring.primary.fingerprint
            and not current[1].exhausted
        ):
            return
        key = keyring.new_data_key()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT INTO deks (wrapped, created_ns) VALUES (?, ?)",
                (key.wrapped, self._clock_ns()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        dek_id = int(cur.lastrowid or 0)
        self._deks[dek_id] = key
        self._dek = (dek_id, key)

    def _seal(self, aad: bytes, value: bytes) -> tuple[bytes, int | None]:
        """Writer thread: ``value`` as stored, and its ``dek`` column."""
        if self._dek is None:
            return value, None
        dek_id, key = self._dek
        return key.encrypt(value, aad), dek_id

    def _unseal(self, aad: bytes, raw: bytes, dek: int | None) -> bytes:
        """The plaintext of a stored value; AtRestError if it does not authenticate."""
        if dek is None:
            return raw
        key = self._deks.get(dek)
        if key is None:
            raise KeyringError(f"data key {dek} is not in {self.path}")
        return key.decrypt(raw, aad)

    def _value(self, tier: str, key: str, raw: Any, dek: Any) -> bytes:
        """A state row's plaintext; CorruptValueError if it does not authenticate."""
        stored = bytes(raw)
        try:
            return self._unseal(_state_aad(tier, key), stored, None if dek is None else int(dek))
        except AtRestError:
            raise CorruptValueError(
                self.path, tier, key, stored, "fails authentication (changed or misplaced)"
            ) from None

    def _hints(self, rows: Iterable[Sequence[Any]]) -> list[Hint]:
        """The hints of ``rows``, without any that fails authentication: a hint is a
        copy held for another node, whose other holders have the value; a bad one is
        logged and left for :meth:`reseal` to delete, never handed off."""
        out = []
        for hint_id, target, tier, key, raw, created, dek in rows:
            try:
                value = self._unseal(
                    _hint_aad(str(target), str(tier), str(key)),
                    bytes(raw),
                    None if dek is None else int(dek),
                )
            except AtRestError:
                log.error(
                    "store %s: hint %s (%s/%s for %s) fails authentication; skipped",
                    self.path, hint_id, tier, key, target,
                )  # fmt: skip
                continue
            out.append(Hint(int(hint_id), str(target), str(tier), str(key), value, int(created)))
        return out

    def set_keyring(self, keyring: Keyring | None) -> None:
        """Encrypt new values under ``keyring``'s primary key from the next write on.
        KeyringError if it lacks a key that values are still under (nothing changes)."""
        if keyring is None and self._deks:
            raise KeyringError(f"{self.path}: turning encryption at rest off is not supported")
        if keyring is not None:
            usage = self.key_usage()
            for fp, count in usage.items():
                if fp is not None and count and not keyring.has(fp):
                    raise KeyringError(
                        f"{keyring.source} lacks key {fp.hex()}, which {count} values of"
                        f" {self.path} are still under; keep it until they are re-sealed"
                    )
        self._keyring = keyring

    def key_usage(self) -> dict[bytes | None, int]:
        """How many values and hints are under each key-encryption key (by
        fingerprint; None: plaintext)."""
        usage: dict[bytes | None, int] = {}
        with self._reader("key_usage") as conn:
            counts = self._dek_counts(conn)
        for dek, count in counts.items():
            fp = None if dek is None else self._dek_fingerprint(dek)
            usage[fp] = usage.get(fp, 0) + count
        return usage

    def _dek_fingerprint(self, dek_id: int) -> bytes:
        key = self._deks.get(dek_id)
        if key is not None:
            return key.kek_fingerprint
        with self._reader("key_usage") as conn:
            row = conn.execute("SELECT wrapped FROM deks WHERE id=?", (dek_id,)).fetchone()
        return b"\0\0\0\0" if row is None else bytes(row[0])[:4]

    async def reseal(self, page: int = 256) -> int:
        """Re-encrypt every value and hint that is not under the keyring's primary key
        (or is plaintext), ``page`` rows per write transaction, between other writes;
        then drop the data keys nothing is under. Returns the rows rewritten. A value
        that does not authenticate is left for the scrubber's repair."""
        total = 0
        for table in ("state", "hints"):
            after: tuple[Any, ...] | None = ()
            while after is not None:
                done, after = await self._submit(_RESEAL, (table, after, page))
                total += done
        await self._drop_unused_deks()
        return total

    async def _drop_unused_deks(self) -> int:
        """Drop the data keys nothing is under; returns how many. Counting what is
        under each key is a pass over both tables (nothing indexes values by key), so
        it runs on a read snapshot, and the writer only deletes: counted in its
        transaction, it held every write back for the length of the pass.

        Safe without the writer's lock: the writer names the keys of the file and the
        one new values go under (``_DEK_IDS``, after that batch's ``_ensure_dek``). A
        key other than that one is never used again -- a new key is always a new row
        -- so what is under it only shrinks, and all of it was committed before that
        batch. The count starts after it (two queries, so two snapshots: either
        will do, as what is under those keys only shrinks), so a key it finds nothing
        under stays so."""
        known, current = await self._submit(_DEK_IDS, ())
        candidates = known - {current}
        if not candidates:
            return 0
        in_use = await asyncio.to_thread(self._count_deks_in_use)
        unused = sorted(candidates - in_use.keys())
        if not unused:
            return 0
        dropped: int = await self._submit(_DROP_DEKS, (unused,))
        return dropped

    def _reseal_page(
        self, conn: sqlite3.Connection, table: str, after: tuple[Any, ...], page: int
    ) -> tuple[int, tuple[Any, ...] | None]:
        want = None if self._dek is None else self._dek[1].kek_fingerprint
        if table == "state":
            where = "WHERE (tier, key) > (?, ?) " if after else ""
            rows = conn.execute(
                f"SELECT tier, key, value, dek FROM state {where}ORDER BY tier, key LIMIT ?",
                (*after, page),
            ).fetchall()
        else:
            where = "WHERE id > ? " if after else ""
            rows = conn.execute(
                f"SELECT id, target, tier, key, value, dek FROM hints {where}ORDER BY id LIMIT ?",
                (*after, page),
            ).fetchall()
        done = 0
        for row in rows:
            dek = row[-1]
            if (None if dek is None else self._dek_fingerprint(int(dek))) == want:
                continue
            if table == "state":
                tier, key = str(row[0]), str(row[1])
                aad = _state_aad(tier, key)
            else:
                aad = _hint_aad(str(row[1]), str(row[2]), str(row[3]))
            try:
                plain = self._unseal(aad, bytes(row[-2]), None if dek is None else int(dek))
            except AtRestError:
                if table == "hints":  # a copy for another node: its other holders have it
                    log.error("store %s: deleting hint %s, which fails authentication",
                              self.path, row[0])  # fmt: skip
                    conn.execute("DELETE FROM hints WHERE id=?", (row[0],))
                # a value: the scrubber finds it and repairs it from another owner
                continue
            value, new_dek = self._seal(aad, plain)
            if table == "state":
                conn.execute(
                    "UPDATE state SET value=?, dek=? WHERE tier=? AND key=?",
                    (value, new_dek, row[0], row[1]),
                )
            else:
                conn.execute("UPDATE hints SET value=?, dek=? WHERE id=?", (value, new_dek, row[0]))
            done += 1
        if len(rows) < page:
            return done, None
        last = rows[-1]
        return done, ((last[0], last[1]) if table == "state" else (last[0],))

    def _count_deks_in_use(self) -> dict[int, int]:
        """:meth:`_deks_in_use` on a read connection (a worker thread: it is a pass)."""
        with self._reader("count values per data key") as conn:
            return self._deks_in_use(conn)

    def _drop_deks(self, conn: sqlite3.Connection, unused: Sequence[int]) -> int:
        """Writer thread: delete the data keys ``unused`` (found unused by
        :meth:`_drop_unused_deks`), never the one new values go under."""
        current = None if self._dek is None else self._dek[0]
        before = conn.total_changes
        conn.executemany("DELETE FROM deks WHERE id=?", [(d,) for d in unused if d != current])
        return conn.total_changes - before

    # -------------------------------------------------------------- closing

    def close(self) -> None:
        """Commit everything already queued, stop the writer, close every connection.

        Idempotent. Blocks until the queued writes are durable. Writes submitted
        after close raise StoreClosedError; so do reads.
        """
        if threading.current_thread() is self._writer:
            raise RuntimeError(f"{self.path}: close() called from inside an update function")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._writer.join()
        self._wconn.close()
        with self._pool_lock:
            self._readers_closed = True
            idle, self._pool = self._pool, []
        for conn in idle:
            conn.close()
        os.close(self._lock_fd)
        log.info("store %s closed", self.path)

    async def aclose(self) -> None:
        """``close()`` without blocking the event loop while the queue drains."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> TierStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> TierStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> StoreStats:
        with self._stats_lock:
            return self._stats

    @property
    def request_ids(self) -> int:
        """Request ids held to recognise a resend (kept at least
        :data:`REQUEST_WINDOW_NS`, less than twice it), as of the last commit."""
        return self._request_ids

    # ---------------------------------------------------------- async writes

    async def _submit(self, kind: int, args: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._cond:
            if self._closing:
                raise StoreClosedError(f"{self.path}: store is closed")
            if self._failure is not None:
                raise StoreFailedError(str(self._failure)) from self._failure
            self._queue.append((kind, args, fut, loop))
            self._cond.notify()
        return await fut

    async def update(self, tier: str, key: str, fn: UpdateFn) -> bytes | None:
        """Atomically replace ``key``'s value with ``fn(current)``; return it once durable.

        ``fn`` runs in the writer thread inside the batch transaction: it gets
        the current value (``None`` if absent) and returns the new value, or
        ``None`` to delete the key. It must be quick (every write waits for
        it) and must not submit writes or close the store; it may read, but
        reads see committed data only, not the batch in progress. If it raises, this call
        raises the same exception and nothing is written for it; the rest of
        the batch is unaffected. Returning the current value unchanged writes
        nothing (``updated_ns`` is kept).
        """
        _check_str("tier", tier)
        _check_str("key", key)
        result: bytes | None = await self._submit(_UPDATE, (tier, key, fn))
        return result

    async def update_once(
        self, tier: str, key: str, fn: OnceFn, request_ids: Sequence[str]
    ) -> bytes | None:
        """:meth:`update`, at most once per request id: ``fn(current, seen)`` also gets
        the ids among ``request_ids`` applied before (within
        :data:`REQUEST_WINDOW_NS`) and returns ``(new value, ids it applied)``; those
        ids are recorded in the same transaction as the new value -- both durable, or
        neither."""
        _check_str("tier", tier)
        _check_str("key", key)
        ids = tuple(request_ids)
        for rid in ids:
            _check_str("request id", rid)
        result: bytes | None = await self._submit(_UPDATE_ONCE, (tier, key, fn, ids))
        return result

    async def update_many_once(
        self, items: Sequence[tuple[str, str, OnceFn, Sequence[str]]]
    ) -> list[bytes | Exception | None]:
        """:meth:`update_once` for every ``(tier, key, fn, request_ids)`` of ``items``,
        in order, as one work item: one hand-over to the writer and one answer for all
        of them (they commit with whatever else the writer batches). Each succeeds or
        fails on its own: the list holds its new value, or the exception it raised
        (nothing written for it) -- except a SQLite error, which rolls the whole work
        item back and fails every item with StoreError."""
        checked = []
        for tier, key, fn, ids in items:
            _check_str("tier", tier)
            _check_str("key", key)
            for rid in ids:
                _check_str("request id", rid)
            checked.append((tier, key, fn, tuple(ids)))
        if not checked:
            return []
        results: list[bytes | Exception | None] = await self._submit(_UPDATE_GROUPS, (checked,))
        return results

    async def update_many(
        self, items: Sequence[tuple[str, str, UpdateFn]]
    ) -> list[bytes | Exception | None]:
        """:meth:`update` for every ``(tier, key, fn)`` of ``items``, in order (a key
        given twice sees its first new value), as one work item: one hand-over to the
        writer and one answer for all. Each succeeds or fails on its own, as
        :meth:`update_many_once`'s items do (a SQLite error fails them all)."""
        for tier, key, _ in items:
            _check_str("tier", tier)
            _check_str("key", key)
        if not items:
            return []
        results: list[bytes | Exception | None] = await self._submit(
            _UPDATE_MANY, (tuple((t, k, fn, ()) for t, k, fn in items),)
        )
        return results

    async def replace_if(self, tier: str, key: str, expected: bytes, new: bytes) -> bool:
        """Replace ``key``'s value with ``new`` if it is still ``expected`` (digest not
        checked: this is how a corrupt value is repaired); whether it did, once durable."""
        _check_str("tier", tier)
        _check_str("key", key)
        result: bool = await self._submit(
            _REPLACE_IF, (tier, key, _as_bytes("expected", expected), _as_bytes("new", new))
        )
        return result

    async def put_many(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        """Write every ``(tier, key, value)`` atomically (all or none), durably."""
        rows = []
        for tier, key, value in items:
            _check_str("tier", tier)
            _check_str("key", key)
            rows.append((tier, key, _as_bytes("value", value)))
        if rows:
            await self._submit(_PUT_MANY, (rows,))

    async def put(self, tier: str, key: str, value: bytes) -> None:
        """Write one value durably (``put_many`` of one item)."""
        await self.put_many([(tier, key, value)])

    async def delete(self, tier: str, key: str) -> bool:
        """Delete ``key`` durably; True if it existed."""
        _check_str("tier", tier)
        _check_str("key", key)
        existed: bool = await self._submit(_DELETE, (tier, key))
        return existed

    async def add_hint(self, target: str, tier: str, key: str, value: bytes) -> int:
        """Store a write for ``target`` to hand off later; returns the hint id (increasing)."""
        _check_str("target", target)
        _check_str("tier", tier)
        _check_str("key", key)
        hint_id: int = await self._submit(_ADD_HINT, (target, tier, key, _as_bytes("value", value)))
        return hint_id

    async def delete_hints(self, ids: Iterable[int]) -> int:
        """Delete hints by id (after handing them off); returns how many existed."""
        id_list = [int(i) for i in ids]
        if not id_list:
            return 0
        deleted: int = await self._submit(_DELETE_HINTS, (id_list,))
        return deleted

    async def set_meta(self, name: str, value: bytes) -> None:
        """Store a node-local metadata value durably (node id, epochs, cursors...)."""
        _check_str("name", name)
        await self._submit(_SET_META, (name, _as_bytes("value", value)))

    # ---------------------------------------------------------- the writer

    def _writer_main(self) -> None:
        batch: list[_Item] = []
        try:
            while True:
                taken = self._take()
                if taken is None:
                    return
                batch = taken
                self._run_batch(batch)
                batch = []
        except BaseException as exc:  # a bug or a fatal error: never leave callers hanging
            log.exception("store %s: writer thread failed", self.path)
            self._fail(StoreFailedError(f"{self.path}: writer thread failed: {exc!r}"), batch)

    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if self._wait_s > 0 and len(self._queue) < self._max and not self._closing:
                deadline = time.monotonic() + self._wait_s
                while len(self._queue) < self._max and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            queue = self._queue
            return [queue.popleft() for _ in range(min(len(queue), self._max))]

    def _run_batch(self, batch: list[_Item]) -> None:
        conn = self._wconn
        now_ns = self._clock_ns()
        outcomes: list[_Outcome] = []
        try:
            self._ensure_dek(conn)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._abort(batch, exc)
            return
        item_errors = 0
        # Remembering ids is the last statement of an item's savepoint, so an item
        # that fails has added nothing to this.
        self._request_delta = 0
        for item in batch:
            try:
                result = self._apply(conn, item[0], item[1], now_ns)
            except sqlite3.Error as exc:
                if not conn.in_transaction:  # SQLite rolled the whole batch back
                    self._abort(batch, exc)
                    return
                item_errors += 1
                outcomes.append((item[2], _translate(exc, self.path, "write"), None))
            except Exception as exc:  # the update function's own failure
                item_errors += 1
                outcomes.append((item[2], exc, None))
            else:
                outcomes.append((item[2], None, result))
        committing = time.perf_counter()
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # Whether the commit reached the disk is unknown (a failed fsync may
            # or may not have written the frames). Stop taking writes.
            self._fail(
                StoreFailedError(f"{self.path}: COMMIT failed, outcome unknown: {exc}"), batch
            )
            return
        self.commit_seconds.observe(time.perf_counter() - committing)
        self.commit_items.observe(len(batch))
        self._request_ids += self._request_delta
        for tier in _tiers_written(batch):
            self._versions[tier] = self._versions.get(tier, 0) + 1
        with self._stats_lock:
            s = self._stats
            self._stats = StoreStats(
                commits=s.commits + 1,
                items=s.items + len(batch),
                fsyncs=s.fsyncs + 1,
                max_batch=max(s.max_batch, len(batch)),
                item_errors=s.item_errors + item_errors,
                batches_aborted=s.batches_aborted,
            )
        self._resolve(batch, outcomes)

    def _apply(self, conn: sqlite3.Connection, kind: int, args: tuple[Any, ...], now: int) -> Any:
        if kind == _UPDATE:
            tier, key, fn = args
            row = conn.execute(
                "SELECT value, digest, dek FROM state WHERE tier=? AND key=?", (tier, key)
            ).fetchone()
            current: bytes | None = None if row is None else self._value(tier, key, row[0], row[2])
            if current is not None and digest_of(current) != bytes(row[1]):
                raise CorruptValueError(self.path, tier, key, bytes(row[0]))
            new = fn(current)
            if new is None:
                if current is not None:
                    conn.execute("DELETE FROM state WHERE tier=? AND key=?", (tier, key))
                    self._record(conn, [(tier, key)], now)
                return None
            new = _as_bytes("update function result", new)
            if new != current:
                stored, dek = self._seal(_state_aad(tier, key), new)
                conn.execute(
                    "INSERT OR REPLACE INTO state (tier, key, value, digest, updated_ns, dek)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (tier, key, stored, digest_of(new), now, dek),
                )
                self._record(conn, [(tier, key)], now)
            return new
        if kind == _UPDATE_ONCE:
            tier, key, fn, ids = args
            with _savepoint(conn):
                keys = {i: _request_key(i) for i in ids}
                seen = self._seen_requests(conn, keys, now)
                applied: list[str] = []

                def once(value: bytes | None) -> bytes | None:
                    new: bytes | None
                    new, done = fn(value, seen)
                    applied.extend(done)
                    return new

                result = self._apply(conn, _UPDATE, (tier, key, once), now)
                given = set(ids)
                fresh = [i for i in applied if i in given and i not in seen]
                self._remember_requests(conn, [keys[i] for i in fresh], now)
            return result
        if kind in (_UPDATE_GROUPS, _UPDATE_MANY):
            (items,) = args
            try:
                with _savepoint(conn):
                    return self._apply_bulk(conn, items, now, once=kind == _UPDATE_GROUPS)
            except sqlite3.Error as exc:
                if not conn.in_transaction:
                    raise  # the whole batch is gone: the caller's outcome is the batch's
                return [
                    StoreError(f"{self.path}: write of {item[1]!r} failed: {exc}") for item in items
                ]
        if kind == _REPLACE_IF:
            tier, key, expected, new = args
            row = conn.execute(
                "SELECT value, dek FROM state WHERE tier=? AND key=?", (tier, key)
            ).fetchone()
            if row is None:
                return False
            # ``expected`` is what the caller saw: the plaintext, or the bytes as stored
            # (a CorruptValueError carries those, whether the value or its digest rotted).
            stored = bytes(row[0])
            try:
                current = self._value(tier, key, stored, row[1])
            except CorruptValueError:
                current = stored
            if expected not in (current, stored):
                return False
            stored, dek = self._seal(_state_aad(tier, key), new)
            conn.execute(
                "UPDATE state SET value=?, digest=?, updated_ns=?, dek=? WHERE tier=? AND key=?",
                (stored, digest_of(new), now, dek, tier, key),
            )
            self._record(conn, [(tier, key)], now)
            return True
        if kind == _PUT_MANY:
            (rows,) = args
            with _savepoint(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO state (tier, key, value, digest, updated_ns, dek)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (t, k, stored, digest_of(v), now, dek)
                        for t, k, v in rows
                        for stored, dek in (self._seal(_state_aad(t, k), v),)
                    ],
                )
                self._record(conn, [(t, k) for t, k, _ in rows], now)
            return None
        if kind == _DELETE:
            cur = conn.execute("DELETE FROM state WHERE tier=? AND key=?", args)
            if cur.rowcount > 0:
                self._record(conn, [args], now)
            return cur.rowcount > 0
        if kind == _ADD_HINT:
            target, tier, key, value = args
            stored, dek = self._seal(_hint_aad(target, tier, key), value)
            cur = conn.execute(
                "INSERT INTO hints (target, tier, key, value, created_ns, dek)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (target, tier, key, stored, now, dek),
            )
            return cur.lastrowid
        if kind == _DELETE_HINTS:
            (ids,) = args
            with _savepoint(conn):
                before = conn.total_changes
                conn.executemany("DELETE FROM hints WHERE id=?", [(i,) for i in ids])
                return conn.total_changes - before
        if kind == _SET_META:
            conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", args)
            return None
        if kind == _RESEAL:
            return self._reseal_page(conn, *args)
        if kind == _DROP_DEKS:
            return self._drop_deks(conn, *args)
        if kind == _DEK_IDS:
            return frozenset(self._deks), None if self._dek is None else self._dek[0]
        raise AssertionError(f"unknown work item kind {kind}")

    def _apply_bulk(
        self,
        conn: sqlite3.Connection,
        items: Sequence[tuple[str, str, Any, Sequence[str]]],
        now: int,
        *,
        once: bool,
    ) -> list[Any]:
        """The updates of one work item -- ``(tier, key, fn, request ids)`` -- in bulk:
        the rows they read and the ids already applied come in one query per 500, each
        ``fn`` runs in order on the value so far (``fn(value, seen)`` when ``once``, as
        :meth:`update_once`; else ``fn(value)``), and what changed is written with one
        statement per table. An item whose ``fn`` raises or whose stored value is
        corrupt fails alone (its exception is its result; nothing written for it).

        Per-item statements cost a GIL hand-over each (the sqlite3 module releases it
        around every step), and with the event loop busy beside this thread every one
        of them waited: a busy node spent ~110 us of writer time per key written."""
        keys = list(dict.fromkeys((item[0], item[1]) for item in items))
        rows = self._rows(conn, keys)
        request_keys = {i: _request_key(i) for item in items for i in item[3]}
        seen = set(self._seen_requests(conn, request_keys, now))
        before: dict[tuple[str, str], bytes | None] = {}
        after: dict[tuple[str, str], bytes | None] = {}
        fresh: list[str] = []
        out: list[Any] = []
        for tier, key, fn, ids in items:
            try:
                if (tier, key) in after:
                    value = after[(tier, key)]
                else:
                    row, value = rows.get((tier, key)), None
                    if row is not None:
                        value = self._value(tier, key, row[0], row[2])
                        if digest_of(value) != bytes(row[1]):
                            raise CorruptValueError(self.path, tier, key, bytes(row[0]))
                    before[(tier, key)] = value
                if once:
                    new, done = fn(value, frozenset(i for i in ids if i in seen))
                else:
                    new, done = fn(value), ()
                if new is not None:
                    new = _as_bytes("update function result", new)
            except Exception as exc:  # this item's alone
                out.append(exc)
                continue
            after[(tier, key)] = new
            given = set(ids)
            applied = [i for i in done if i in given and i not in seen]
            seen.update(applied)
            fresh += applied
            out.append(new)
        writes, deletes = [], []
        for (tier, key), new in after.items():
            if new == before[(tier, key)]:
                continue
            if new is None:
                deletes.append((tier, key))
            else:
                stored, dek = self._seal(_state_aad(tier, key), new)
                writes.append((tier, key, stored, digest_of(new), now, dek))
        if writes:
            conn.executemany(
                "INSERT OR REPLACE INTO state (tier, key, value, digest, updated_ns, dek)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                writes,
            )
        if deletes:
            conn.executemany("DELETE FROM state WHERE tier=? AND key=?", deletes)
        if writes or deletes:  # one change per key changed, whatever its path within
            self._record(conn, [(w[0], w[1]) for w in writes] + deletes, now)
        self._remember_requests(conn, [request_keys[i] for i in fresh], now)
        return out

    @staticmethod
    def _rows(
        conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[Any, Any, Any]]:
        """The stored ``(value, digest, dek)`` of those of ``keys`` that exist."""
        by_tier: dict[str, list[str]] = {}
        for tier, key in keys:
            by_tier.setdefault(tier, []).append(key)
        found: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        for tier, names in by_tier.items():
            for start in range(0, len(names), 500):  # under SQLite's bound-variable limit
                chunk = names[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value, digest, dek in conn.execute(
                    f"SELECT key, value, digest, dek FROM state WHERE tier=? AND key IN ({marks})",
                    (tier, *chunk),
                ):
                    found[(tier, str(key))] = (value, digest, dek)
        return found

    def _seen_requests(
        self, conn: sqlite3.Connection, keys: Mapping[str, tuple[int, bytes]], now: int
    ) -> frozenset[str]:
        """Those of the ids (``keys``: id -> :func:`_request_key`) applied in the
        current slot or the previous one."""
        by_key = {k: i for i, k in keys.items()}
        slot = now // REQUEST_WINDOW_NS
        if self._unborn_slot is not None and slot - 1 <= self._unborn_slot:
            # ids converted from v5 may be among them, filed as born 0
            for i, (born, digest) in keys.items():
                if born:
                    by_key[(0, digest)] = i
        wanted = list(by_key)
        seen: set[str] = set()
        for start in range(0, len(wanted), 400):  # under SQLite's bound-variable limit
            chunk = wanted[start : start + 400]
            pairs = ",".join(("(?, ?)",) * len(chunk))
            # A join on the listed pairs: the whole key is searched for each, where
            # `(born, id) IN (VALUES ...)` would scan the two slots. CROSS JOIN keeps
            # the pairs the outer loop: with a plain JOIN, SQLite's planner (no
            # statistics) picks a scan of both slots' ids for 69 to 175 pairs, 10 ms a
            # batch at 47,000 ids held, growing with them.
            rows = conn.execute(
                f"SELECT r.born, r.id FROM (VALUES {pairs}) AS v CROSS JOIN requests AS r"
                " ON r.slot IN (?, ?) AND r.born = v.column1 AND r.id = v.column2",
                (*(x for pair in chunk for x in pair), slot - 1, slot),
            )
            seen.update(by_key[(int(row[0]), bytes(row[1]))] for row in rows)
        return frozenset(seen)

    def _remember_requests(
        self, conn: sqlite3.Connection, keys: list[tuple[int, bytes]], now: int
    ) -> None:
        """Remember ids applied now, by their :func:`_request_key`."""
        if not keys:
            return
        slot = now // REQUEST_WINDOW_NS
        added = conn.executemany(
            "INSERT OR IGNORE INTO requests (slot, born, id) VALUES (?, ?, ?)",
            [(slot, born, digest) for born, digest in keys],
        ).rowcount
        removed = 0
        self._since_request_trim += len(keys)
        if self._since_request_trim >= _TRIM_EVERY:
            self._since_request_trim = 0
            # Slots before the previous one are no longer searched: delete their ids
            # from the front of the table, at most _REQUEST_TRIM_MAX of them.
            edge = conn.execute(
                "SELECT slot, born, id FROM requests WHERE slot < ?"
                " ORDER BY slot, born, id LIMIT 1 OFFSET ?",
                (slot - 1, _REQUEST_TRIM_MAX - 1),
            ).fetchone()
            if edge is None:
                removed = conn.execute("DELETE FROM requests WHERE slot < ?", (slot - 1,)).rowcount
            else:
                removed = conn.execute(
                    "DELETE FROM requests WHERE (slot, born, id) <= (?, ?, ?)", tuple(edge)
                ).rowcount
        self._request_delta += added - removed

    def _record(self, conn: sqlite3.Connection, keys: list[tuple[str, str]], now: int) -> None:
        """Append changes of ``keys`` to the feed, in the write's transaction; every
        :data:`_TRIM_EVERY` appends, drop what is older than the newest :data:`FEED_KEEP`."""
        conn.executemany(
            "INSERT INTO changes (tier, key, ts_ns) VALUES (?, ?, ?)",
            [(t, k, now) for t, k in keys],
        )
        self._since_trim += len(keys)
        if self._since_trim < _TRIM_EVERY:
            return
        self._since_trim = 0
        newest = conn.execute("SELECT MAX(seq) FROM changes").fetchone()[0] or 0
        cut = newest - self._feed_keep
        if cut > 0:
            conn.execute("DELETE FROM changes WHERE seq <= ?", (cut,))
            conn.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                (_FEED_TRIMMED, str(cut).encode()),
            )

    def _abort(self, batch: list[_Item], exc: sqlite3.Error) -> None:
        """SQLite rolled the batch back (or never began it): nothing was committed."""
        if self._wconn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._wconn.execute("ROLLBACK")
        translated = _translate(exc, self.path, "write batch")
        if not isinstance(translated, CorruptStoreError):
            translated = BatchAbortedError(f"{translated} (batch rolled back, nothing committed)")
        translated.__cause__ = exc
        log.error("store %s: batch of %d rolled back: %s", self.path, len(batch), exc)
        with self._stats_lock:
            s = self._stats
            self._stats = StoreStats(
                commits=s.commits,
                items=s.items,
                fsyncs=s.fsyncs,
                max_batch=s.max_batch,
                item_errors=s.item_errors,
                batches_aborted=s.batches_aborted + 1,
            )
        self._resolve(batch, [(item[2], translated, None) for item in batch])

    def _fail(self, error: StoreFailedError, batch: list[_Item]) -> None:
        """Poison the store: fail this batch and everything queued, refuse new writes."""
        log.error("%s", error)
        with contextlib.suppress(sqlite3.Error):
            if self._wconn.in_transaction:
                self._wconn.execute("ROLLBACK")
        with self._cond:
            self._failure = error
            pending = list(self._queue)
            self._queue.clear()
        items = batch + pending
        self._resolve(items, [(item[2], error, None) for item in items])
        # Keep the writer loop alive only to drain: later submissions are refused.

    def _resolve(self, batch: list[_Item], outcomes: list[_Outcome]) -> None:
        """Hand the outcomes to their loops: one call_soon_threadsafe per loop per batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for item, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(item[3], []).append(outcome)
        for loop, entries in by_loop.items():
            # A closed loop raises RuntimeError: nobody there is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, entries)

    # ------------------------------------------------------------ reads

    @contextlib.contextmanager
    def _reader(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            if self._readers_closed:
                raise StoreClosedError(f"{self.path}: store is closed")
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            try:
                conn = self._connect()
                conn.execute("PRAGMA query_only=1")
            except sqlite3.Error as exc:
                raise _translate(exc, self.path, "open reader") from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, doing) from exc
        finally:
            if conn.in_transaction:  # never keep a snapshot pinned across calls
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            with self._pool_lock:
                keep = not self._readers_closed and len(self._pool) < _READER_POOL_MAX
                if keep:
                    self._pool.append(conn)
            if not keep:
                conn.close()

    def get(self, tier: str, key: str) -> bytes | None:
        """The committed value of ``key``, or None."""
        with self._reader("get") as conn:
            row = conn.execute(
                "SELECT value, dek FROM state WHERE tier=? AND key=?", (tier, key)
            ).fetchone()
        return None if row is None else self._value(tier, key, row[0], row[1])

    def get_checked(self, tier: str, key: str) -> bytes | None:
        """:meth:`get`, checked against the stored digest: CorruptValueError if the value
        rotted (what replicas serve and merge must be what was written)."""
        found = self.get_with_digest(tier, key)
        if found is None:
            return None
        value, digest = found
        if digest_of(value) != digest:
            raise CorruptValueError(self.path, tier, key, value)
        return value

    def get_with_digest(self, tier: str, key: str) -> tuple[bytes, bytes] | None:
        """``(value, digest)`` of ``key``, or None."""
        with self._reader("get") as conn:
            row = conn.execute(
                "SELECT value, digest, dek FROM state WHERE tier=? AND key=?", (tier, key)
            ).fetchone()
        return None if row is None else (self._value(tier, key, row[0], row[2]), bytes(row[1]))

    def scan(
        self, tier: str, prefix: str = "", after: str = "", limit: int = 0
    ) -> list[tuple[str, bytes]]:
        """``(key, value)`` pairs of ``tier`` in key (code point) order, from one snapshot.

        Only keys starting with ``prefix`` and sorting strictly after ``after``;
        at most ``limit`` of them (0: no limit). Page by passing the last key
        returned as ``after``.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sql = "SELECT key, value, dek FROM state WHERE tier=?"
        params: list[object] = [tier]
        if prefix:
            sql += " AND key>=?"
            params.append(prefix)
            end = _prefix_end(prefix)
            if end is not None:
                sql += " AND key<?"
                params.append(end)
        if after:
            sql += " AND key>?"
            params.append(after)
        sql += " ORDER BY key"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        with self._reader("scan") as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(str(k), self._value(tier, str(k), v, d)) for k, v, d in rows]

    def changes(
        self, tier: str, prefix: str, after: int, limit: int, *, digests: bool = False
    ) -> ChangePage:
        """The feed's changes to keys of ``tier`` under ``prefix`` with seq > ``after``,
        at most ``limit`` rows (> 0) read, from one snapshot (see :class:`ChangePage`;
        ``digests``: each key's digest instead of its value). ``after = -1`` means
        "from now": no entries, ``through`` the newest seq."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        now = after == -1
        wanted = "s.digest, NULL" if digests else "s.value, s.dek"
        sql = (
            f"SELECT c.seq, c.key, {wanted} FROM changes c LEFT JOIN state s"
            " ON s.tier = c.tier AND s.key = c.key WHERE c.seq > ? AND c.tier = ?"
        )
        params: list[object] = [after, tier]
        if prefix:
            sql += " AND c.key >= ?"
            params.append(prefix)
            end = _prefix_end(prefix)
            if end is not None:
                sql += " AND c.key < ?"
                params.append(end)
        sql += " ORDER BY c.seq LIMIT ?"
        params.append(0 if now else limit)
        with self._reader("changes") as conn:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(sql, params).fetchall()
                newest = conn.execute("SELECT MAX(seq) FROM changes").fetchone()[0] or 0
                meta = dict(
                    conn.execute(
                        "SELECT name, value FROM meta WHERE name IN (?, ?)",
                        (_FEED_ID, _FEED_TRIMMED),
                    ).fetchall()
                )
            finally:
                conn.execute("COMMIT")
        if now:
            through = int(newest)
        else:
            through = int(rows[-1][0]) if len(rows) == limit else max(int(newest), after)
        return ChangePage(
            feed=bytes(meta.get(_FEED_ID, b"")).decode(),
            entries=_last_per_key(
                (
                    int(q),
                    str(k),
                    None if v is None else bytes(v) if digests else self._value(tier, str(k), v, d),
                )
                for q, k, v, d in rows
            ),
            through=through,
            trimmed=int(bytes(meta.get(_FEED_TRIMMED, b"0"))),
        )

    def keys_and_digests(self, tier: str) -> Iterator[tuple[str, bytes]]:
        """Every ``(key, digest)`` of ``tier`` in key order, read in pages.

        Each page is one snapshot; the whole iteration is not. A key present
        for the whole iteration is yielded exactly once; a key written or
        deleted meanwhile may or may not be. No connection or snapshot is held
        between pages, so abandoning the iterator is harmless.
        """
        after: str | None = None
        while True:
            with self._reader("keys_and_digests") as conn:
                if after is None:
                    rows = conn.execute(
                        "SELECT key, digest FROM state WHERE tier=? ORDER BY key LIMIT ?",
                        (tier, _DIGEST_PAGE),
                    ).fetchall()
                else:
                    rows = conn.execute(
                        "SELECT key, digest FROM state WHERE tier=? AND key>? ORDER BY key LIMIT ?",
                        (tier, after, _DIGEST_PAGE),
                    ).fetchall()
            for key, digest in rows:
                yield str(key), bytes(digest)
            if len(rows) < _DIGEST_PAGE:
                return
            after = str(rows[-1][0])

    def count(self, tier: str) -> int:
        """Number of keys in ``tier``."""
        with self._reader("count") as conn:
            row = conn.execute("SELECT count(*) FROM state WHERE tier=?", (tier,)).fetchone()
        return int(row[0])

    def tiers(self) -> list[str]:
        """Tiers holding at least one key, sorted (one index probe per tier)."""
        found: list[str] = []
        with self._reader("tiers") as conn:
            row = conn.execute("SELECT min(tier) FROM state").fetchone()
            while row is not None and row[0] is not None:
                found.append(str(row[0]))
                row = conn.execute(
                    "SELECT min(tier) FROM state WHERE tier>?", (found[-1],)
                ).fetchone()
        return found

    def hints_for(self, target: str, limit: int = 0) -> list[Hint]:
        """Hints held for ``target``, oldest first; at most ``limit`` (0: all)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sql = (
            "SELECT id, target, tier, key, value, created_ns, dek FROM hints WHERE target=?"
            " ORDER BY id"
        )
        params: tuple[object, ...] = (target,)
        if limit:
            sql += " LIMIT ?"
            params = (target, limit)
        with self._reader("hints_for") as conn:
            rows = conn.execute(sql, params).fetchall()
        return self._hints(rows)

    def hints_about(self, tier: str, key: str) -> list[Hint]:
        """Hints held for ``tier/key`` (any target), oldest first. Scans the hints table:
        it holds only what waits for a down owner, and only observing updates ask."""
        _check_str("tier", tier)
        _check_str("key", key)
        sql = (
            "SELECT id, target, tier, key, value, created_ns, dek FROM hints "
            "WHERE tier=? AND key=? ORDER BY id"
        )
        with self._reader("hints_about") as conn:
            rows = conn.execute(sql, (tier, key)).fetchall()
        return self._hints(rows)

    def check_digests(
        self, after: tuple[str, str] = ("", ""), limit: int = 512
    ) -> tuple[list[tuple[str, str, bytes]], tuple[str, str] | None, int]:
        """Re-read up to ``limit`` values after ``(tier, key)`` in (tier, key) order and
        check each against the digest stored beside it (the scrubber): the rows whose
        value no longer matches, where to go on from (None: the end), and the bytes read.
        SQLite keeps no checksum of its own pages, so this is what finds a value that
        rotted on disk. A value rewritten meanwhile is read with its new digest."""
        with self._reader("check_digests") as conn:
            rows = conn.execute(
                "SELECT tier, key, value, digest, dek FROM state WHERE (tier, key) > (?, ?) "
                "ORDER BY tier, key LIMIT ?",
                (*after, limit),
            ).fetchall()
        bad = []
        for t, k, v, d, dek in rows:
            try:
                rotten = digest_of(self._value(str(t), str(k), v, dek)) != bytes(d)
            except CorruptValueError:
                rotten = True
            if rotten:
                bad.append((str(t), str(k), bytes(v)))
        read = sum(len(v) + len(k) for _, k, v, _, _ in rows)
        nxt = (str(rows[-1][0]), str(rows[-1][1])) if len(rows) == limit else None
        return bad, nxt, read

    def hints_in(self, tier: str, after_id: int = 0, limit: int = 0) -> list[Hint]:
        """Hints of ``tier`` (any target) with id > ``after_id``, in id order; at most
        ``limit`` (0: all). Page by passing the last id returned (backups)."""
        _check_str("tier", tier)
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sql = (
            "SELECT id, target, tier, key, value, created_ns, dek FROM hints "
            "WHERE tier=? AND id>? ORDER BY id"
        )
        params: tuple[object, ...] = (tier, after_id)
        if limit:
            sql += " LIMIT ?"
            params = (*params, limit)
        with self._reader("hints_in") as conn:
            rows = conn.execute(sql, params).fetchall()
        return self._hints(rows)

    def version(self, tier: str) -> int:
        """Grows whenever a write to ``tier``'s values commits, in this process (it
        starts at 0 on every open). Bumped after the commit, so a reader that sees a
        version also sees every write it counts: "same version" means "nothing new"."""
        return self._versions.get(tier, 0)

    def get_meta(self, name: str) -> bytes | None:
        """A metadata value, or None."""
        with self._reader("get_meta") as conn:
            row = conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else bytes(row[0])


def _state_aad(tier: str, key: str) -> bytes:
    """What a stored value's ciphertext is bound to (its row)."""
    return f"state:{len(tier)}:{tier}:{key}".encode()


def _hint_aad(target: str, tier: str, key: str) -> bytes:
    return f"hint:{len(target)}:{target}:{len(tier)}:{tier}:{key}".encode()


@contextlib.contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """Make a multi-statement item all-or-nothing inside the batch transaction."""
    conn.execute("SAVEPOINT item")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO item")
            conn.execute("RELEASE item")
        raise
    conn.execute("RELEASE item")


def _settle(entries: list[_Outcome]) -> None:
    """Runs on the caller's loop: deliver one batch's outcomes."""
    for fut, exc, result in entries:
        if fut.done():  # the caller was cancelled; its write stands regardless
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
