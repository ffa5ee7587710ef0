"""A durable Raft journal for pysyncobj: checksummed records, explicit fsync.

pysyncobj's own ``FileJournal`` writes through an mmap and never fsyncs, and
stores term/vote with a plain write. That is page-cache durability: a power
loss can take back an entry the node already acknowledged, or let it vote
twice in one term. This journal implements the same interface with one rule
the tick driver relies on:

    nothing appended, truncated or voted is durable until :meth:`sync`
    returns, and :meth:`sync` makes all of it durable with one fsync.

The driver calls ``sync()`` once per tick, after pysyncobj has done the
tick's work and *before* any message of that tick leaves the node (see
``consensus.raft.backend``). So an append-entries acknowledgement or a vote is never
sent before what it vouches for is on disk, and one fsync covers every entry
of the tick (group commit).

On-disk layout (``<path>``)::

    header:  b"TPJOURN1"
    record:  u32 payload length | u32 crc32(payload) | payload
    payload: u64 index | u64 term | command bytes

A record whose length runs past the end of the file or whose checksum does
not match is a torn tail (a crash mid-write): it and everything after it are
cut off at open. Such a record was never acknowledged, because acknowledging
requires a completed sync.

Term, vote and commit index live in ``<path>.meta``, replaced atomically
(write temp file, fsync, rename, fsync directory).

Encrypted at rest (given a :class:`~consensus.atrest.Keyring`), the file is::

    header:  b"TPJOURN2" | wrapped data key (64 bytes)
    record:  u32 payload length | u32 crc32(payload) | payload
    payload: nonce(12) | AES-256-GCM(data key, u64 index | u64 term | command)

The CRC still tells a torn tail (cut, as above) from a whole record; a whole record
that fails authentication is damage or tampering, and opening refuses it rather than
cutting acknowledged entries. ``<path>.meta`` is then sealed under the primary key.
The file gets a new data key whenever it is rewritten (compaction, :meth:`rekey`, a
data key's use limit); a journal found under another key than the keyring's primary,
or in the other format, is rewritten at open, so a restart after the operator puts a
new key first re-encrypts it.

Thread-safety: none; only the Raft tick thread may call it.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
from pysyncobj.journal import Journal

from consensus.atrest import (
    WRAPPED_BYTES,
    AtRestError,
    DataKey,
    Keyring,
    is_sealed_blob,
    sealed_blob_key,
)
from consensus.durable import FSYNC_BUCKETS, Histogram, atomic_write, fsync_dir
from consensus.errors import JournalError

log = logging.getLogger(__name__)

MAGIC = b"TPJOURN1"
SEALED_MAGIC = b"TPJOURN2"
_REC = struct.Struct("<II")
_ENTRY = struct.Struct("<QQ")
_ENTRY_AAD = b"tadpole journal entry"
_META_AAD = b"tadpole journal meta"

Entry = tuple[bytes, int, int]


def encode_record(
    command: bytes, idx: int, term: int, key: DataKey | None = None, aad: bytes = _ENTRY_AAD
) -> bytes:
    payload = _ENTRY.pack(idx, term) + command
    if key is not None:
        payload = key.encrypt(payload, aad)
    return _REC.pack(len(payload), zlib.crc32(payload)) + payload


def header_size(data: bytes) -> int:
    """Bytes before the first record of a journal that starts with ``data`` (0: not a
    journal)."""
    if data[: len(MAGIC)] == MAGIC:
        return len(MAGIC)
    if data[: len(SEALED_MAGIC)] == SEALED_MAGIC:
        return len(SEALED_MAGIC) + WRAPPED_BYTES
    return 0


class DurableJournal(Journal):  # type: ignore[misc]
    """pysyncobj ``Journal`` whose writes become durable only at :meth:`sync`.

    ``snapshot_path`` is pysyncobj's full-dump file: before the journal drops
    entries that a snapshot replaces (``clear``/``deleteEntriesTo``) it makes
    sure the snapshot itself is on disk.
    """

    def __init__(
        self,
        path: str,
        snapshot_path: str | None = None,
        *,
        fsync: Callable[[int], None] = os.fdatasync,
        keyring: Keyring | None = None,
        owner: str = "",
    ) -> None:
        self._path = path
        self._keyring = keyring
        # Encrypted records and the sealed term/vote file are bound to their node: a
        # copy of another node's (or an old copy of this node's meta) does not open.
        self._entry_aad = _ENTRY_AAD + b"\0" + owner.encode()
        self._meta_aad = _META_AAD + b"\0" + owner.encode()
        self._key: DataKey | None = None  # the file's data key, when encrypted
        self._dir = os.path.dirname(os.path.abspath(path))
        self._meta_path = path + ".meta"
        self._snapshot_path = snapshot_path
        self._fsync = fsync
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._pending = bytearray()  # records appended since the last sync
        self._header = len(MAGIC)  # bytes before the first record
        self._file_end = len(MAGIC)  # bytes of records already written to the file
        self._needs_fsync = False
        self._meta_key: bytes | None = None  # the key the meta file is sealed under
        self._meta: dict[str, Any] = self._load_meta()
        self._meta_dirty = False
        self._commit_dirty = False
        self.syncs = 0  # fsyncs issued (for tests and metrics)
        self.fsync_seconds = Histogram(FSYNC_BUCKETS)  # how long each journal fsync took
        self._fd = self._open_and_recover()
        self._reseal_meta()

    # -- open / recovery ------------------------------------------------------

    def _load_meta(self) -> dict[str, Any]:
        try:
            with open(self._meta_path, "rb") as f:
                blob = f.read()
            if is_sealed_blob(blob):
                if self._keyring is None:
                    raise JournalError(
                        f"{self._meta_path}: encrypted at rest, and no encryption key is configured"
                    )
                self._meta_key = sealed_blob_key(blob)
                blob = self._keyring.unseal(blob, self._meta_aad, what=self._meta_path)
            meta = msgpack.unpackb(blob, raw=False)
        except FileNotFoundError:
            return {}
        except AtRestError as exc:
            raise JournalError(str(exc)) from exc
        except (ValueError, msgpack.UnpackException) as exc:
            raise JournalError(f"{self._meta_path}: unreadable term/vote file: {exc}") from exc
        if not isinstance(meta, dict):
            raise JournalError(f"{self._meta_path}: unexpected content")
        return meta

    def _open_and_recover(self) -> int:
        new = not os.path.exists(self._path)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        if new or os.fstat(fd).st_size == 0:
            os.close(fd)
            self._rewrite([])
            return self._fd
        try:
            self._recover(fd)
        except BaseException:
            os.close(fd)
            raise
        if self._wants_rewrite():
            os.close(fd)
            log.info("journal %s: rewriting under %s", self._path, self._target())
            self._rewrite(list(self._entries))
            return self._fd
        return fd

    def _recover(self, fd: int) -> None:
        with open(self._path, "rb") as f:
            data = f.read()
        pos = header_size(data)
        if pos == 0 or pos > len(data):
            raise JournalError(f"{self._path}: not a Tadpole journal (bad magic)")
        if data[: len(SEALED_MAGIC)] == SEALED_MAGIC:
            if self._keyring is None:
                raise JournalError(
                    f"{self._path}: encrypted at rest, and no encryption key is configured"
                )
            try:
                self._key = self._keyring.unwrap(data[len(SEALED_MAGIC) : pos], what=self._path)
            except AtRestError as exc:
                raise JournalError(str(exc)) from exc
        self._header = pos
        while pos < len(data):
            if pos + _REC.size > len(data):
                break
            length, crc = _REC.unpack_from(data, pos)
            start = pos + _REC.size
            payload = data[start : start + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            if self._key is not None:
                try:
                    payload = self._key.decrypt(payload, self._entry_aad, what=self._path)
                except AtRestError as exc:
                    raise JournalError(f"record at byte {pos} of {exc}") from exc
            if len(payload) < _ENTRY.size:
                break
            idx, term = _ENTRY.unpack_from(payload)
            if self._key is not None and self._entries and idx != self._entries[-1][1] + 1:
                # Each record is authentic, but not their order: records dropped,
                # repeated or moved within the file.
                raise JournalError(
                    f"{self._path}: record at byte {pos} holds index {idx} after"
                    f" {self._entries[-1][1]} (records missing, repeated or moved)"
                )
            self._entries.append((bytes(payload[_ENTRY.size :]), idx, term))
            self._offsets.append(pos)
            pos = start + length
        if self._key is not None:
            self._key.count_uses(len(self._entries))
        if pos < len(data):
            log.warning(
                "journal %s: discarding torn tail of %d bytes at offset %d",
                self._path,
                len(data) - pos,
                pos,
            )
            os.ftruncate(fd, pos)
            os.fsync(fd)
        self._file_end = pos

    def _target(self) -> str:
        return "no encryption" if self._keyring is None else self._keyring.primary.id

    def _wants_rewrite(self) -> bool:
        """Whether the file is not in the form the keyring asks for: encrypted under
        the primary key (or plaintext, without a keyring), with a data key not yet
        worn out."""
        if self._keyring is None or self._key is None:
            return self._keyring is not None or self._key is not None
        return self._key.kek_fingerprint != self._keyring.primary.fingerprint or (
            self._key.exhausted
        )

    def rekey(self, keyring: Keyring | None) -> bool:
        """Use ``keyring`` from now on; rewrite the file at once if it is not
        encrypted under its primary key. Returns whether it was rewritten."""
        self._keyring = keyring
        rewrite = self._wants_rewrite()
        if rewrite:
            self._rewrite(list(self._entries))
        self._reseal_meta()
        return rewrite

    def _reseal_meta(self) -> None:
        """Rewrite the term/vote file if it is not under the keyring's primary key."""
        if self._meta and self._meta_key != self._primary_fp():
            self._write_meta()

    @property
    def key_fingerprint(self) -> bytes | None:
        """The fingerprint of the key-encryption key the file is under (None: plain)."""
        return None if self._key is None else self._key.kek_fingerprint

    # -- the pysyncobj Journal interface ---------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._entries.append((command, idx, term))
        self._offsets.append(self._file_end + len(self._pending))
        self._pending += encode_record(command, idx, term, self._key, self._entry_aad)

    def clear(self) -> None:
        self._make_snapshot_durable()
        self._entries = []
        self._offsets = []
        self._pending.clear()
        self._truncate_file(self._header)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        cut = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        if cut >= self._file_end:
            del self._pending[cut - self._file_end :]
        else:
            self._pending.clear()
            self._truncate_file(cut)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the first ``entryTo`` entries (covered by a snapshot): rewrite
        the file with the rest and swap it in atomically."""
        self._make_snapshot_durable()
        self._rewrite(self._entries[entryTo:])

    def _rewrite(self, keep: list[Entry]) -> None:
        """Replace the file by one holding ``keep`` (fsynced, renamed, directory
        fsynced), encrypted under a fresh data key if there is a keyring."""
        key = None if self._keyring is None else self._keyring.new_data_key()
        body = bytearray(MAGIC if key is None else SEALED_MAGIC + key.wrapped)
        header = len(body)
        offsets = []
        for command, idx, term in keep:
            offsets.append(len(body))
            body += encode_record(command, idx, term, key, self._entry_aad)
        tmp = self._path + ".compact"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(body)
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
            os.fsync(fd)
            os.replace(tmp, self._path)
        except BaseException:
            os.close(fd)
            raise
        # The descriptor that wrote the new file is the journal's from now on: nothing
        # is reopened, so no failure after the rename can leave writes going to the
        # old, unlinked file (or to a descriptor number reused by another file).
        old, self._fd = getattr(self, "_fd", None), fd
        if old is not None:
            os.close(old)
        fsync_dir(self._dir)
        self._key = key
        self._header = header
        self._entries = list(keep)
        self._offsets = offsets
        self._pending.clear()
        self._file_end = len(body)
        self._needs_fsync = False

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._meta.get("commit") != raftCommitIndex:
            self._meta["commit"] = raftCommitIndex
            self._commit_dirty = True

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("commit", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._meta_dirty = True

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> str | None:
        voted = self._meta.get("voted_for")
        return None if voted is None else str(voted)

    def onOneSecondTimer(self) -> None:
        # The commit index need not be durable for safety (Raft recomputes
        # it); persisting it now and then only shortens replay after restart.
        if self._commit_dirty and not self._pending and not self._needs_fsync:
            self._write_meta()

    def _destroy(self) -> None:
        self.sync()
        if self._commit_dirty:
            self._write_meta()
        os.close(self._fd)

    # -- durability ------------------------------------------------------------

    @property
    def term_unsynced(self) -> bool:
        """Whether a term or vote change waits for :meth:`sync`."""
        return self._meta_dirty

    @property
    def size_bytes(self) -> int:
        """Bytes of the records the journal holds (written or pending), which its
        entries also hold in memory: what a snapshot would let it drop."""
        return self._file_end + len(self._pending) - self._header

    @property
    def has_unsynced(self) -> bool:
        return bool(self._pending) or self._needs_fsync or self._meta_dirty

    def sync(self) -> bool:
        """Make every change since the last call durable. Returns whether any
        fsync was needed. Journal data goes first, then term/vote: a vote is
        only ever sent after both."""
        synced = False
        if self._pending:
            view = memoryview(self._pending)
            written = 0
            while written < len(view):
                written += os.pwrite(self._fd, view[written:], self._file_end + written)
            view.release()
            self._file_end += len(self._pending)
            self._pending.clear()
            self._needs_fsync = True
        if self._needs_fsync:
            started = time.perf_counter()
            self._fsync(self._fd)
            self.fsync_seconds.observe(time.perf_counter() - started)
            self._needs_fsync = False
            self.syncs += 1
            synced = True
        if self._meta_dirty:
            self._write_meta()
            synced = True
        if self._key is not None and self._key.exhausted:
            self._rewrite(list(self._entries))  # a fresh data key
        return synced

    def _primary_fp(self) -> bytes | None:
        return None if self._keyring is None else self._keyring.primary.fingerprint

    def _write_meta(self) -> None:
        blob = msgpack.packb(self._meta, use_bin_type=True)
        if self._keyring is not None:
            blob = self._keyring.seal(blob, self._meta_aad)
        atomic_write(self._meta_path, blob)
        self._meta_key = self._primary_fp()
        self._meta_dirty = False
        self._commit_dirty = False

    def _truncate_file(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self._file_end = size
        self._needs_fsync = True

    def _make_snapshot_durable(self) -> None:
        if self._snapshot_path and os.path.exists(self._snapshot_path):
            fd = os.open(self._snapshot_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(os.path.dirname(os.path.abspath(self._snapshot_path)))
