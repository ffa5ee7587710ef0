"""Re-reading the Raft files in the background to find corruption before it is needed.

A journal record or a snapshot is read back only at start-up (or when a snapshot is
sent to a follower); a bit that rots in between goes unnoticed until a restart, when
the journal would treat the first bad record as a torn tail and cut everything after
it. These generators re-read the files a piece at a time and check every record's
CRC-32 and the snapshot's whole-file CRC-32, so a caller can pace them (they yield
the bytes they read) and report what they find.

They read the files while the node writes them: the journal is appended at its end,
rewritten whole (rename) when compacted, and cut back at its end when a follower's log
conflicts with the leader's; the snapshot is replaced whole (rename). So: a file is
read through one open descriptor (a rename leaves it reading the old, stable file);
a record that runs past the end of the file is looked at again a moment later -- an
append in flight has completed by then, a damaged length field has not; and a record
whose checksum fails is read again, from a freshly opened file, before it is reported
-- it is damage only if the same file still holds the same bad bytes.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from consensus.atrest import WRAPPED_BYTES
from consensus.errors import SnapshotError
from consensus.raft.backend import check_snapshot_steps
from consensus.raft.journal import _ENTRY, _REC, SEALED_MAGIC, header_size

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Damage:
    path: str
    offset: int
    what: str

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}: {self.what}"


Progress = int | Damage  # bytes read since the last yield, or a finding


def journal(path: str) -> Iterator[Progress]:
    """Check every complete record of the journal at ``path``."""
    try:
        f = open(path, "rb")  # noqa: SIM115 -- closed below, read in steps
    except FileNotFoundError:
        return
    with f:
        inode = os.fstat(f.fileno()).st_ino
        head = f.read(len(SEALED_MAGIC) + WRAPPED_BYTES)
        offset = header_size(head)
        if offset == 0 or offset > len(head):
            yield Damage(path, 0, "not a Tadpole journal (bad magic)")
            return
        f.seek(offset)
        buffer = b""
        while True:
            data = f.read(CHUNK)
            if not data:
                return  # anything left in buffer is the append in progress
            yield len(data)
            buffer += data
            pos = 0
            while pos + _REC.size <= len(buffer):
                length, crc = _REC.unpack_from(buffer, pos)
                end = pos + _REC.size + length
                if offset + end > os.fstat(f.fileno()).st_size:
                    # Past the end of the file: an append in flight, or a damaged length
                    # (which start-up would take for a torn tail and cut there).
                    header = buffer[pos : pos + _REC.size]
                    if _overruns(path, inode, offset + pos, header, offset + end):
                        yield Damage(
                            path, offset + pos, "record length runs past the end of the file"
                        )
                    return
                if end > len(buffer):
                    break  # needs the next chunk
                payload = buffer[pos + _REC.size : end]
                bad = length < _ENTRY.size or zlib.crc32(payload) != crc
                if bad and _still_bad(path, inode, offset + pos, end - pos, buffer[pos:end]):
                    yield Damage(path, offset + pos, "record checksum mismatch")
                    return  # lengths after a bad record can't be trusted
                pos = end
            offset += pos
            buffer = buffer[pos:]


def _overruns(path: str, inode: int, offset: int, header: bytes, end: int) -> bool:
    """Whether, a moment later, the same file still holds ``header`` at ``offset`` and
    still ends before ``end`` (an append in flight would have completed)."""
    time.sleep(0.05)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_ino != inode or st.st_size >= end:
                return False
            f.seek(offset)
            return f.read(len(header)) == header
    except FileNotFoundError:
        return False


def _still_bad(path: str, inode: int, offset: int, length: int, seen: bytes) -> bool:
    """Whether the same file (inode) still holds the same bytes at ``offset``: a
    concurrent truncate-and-append could make a record read across two reads look bad."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_ino != inode:
                return False
            f.seek(offset)
            return f.read(length) == seen
    except FileNotFoundError:
        return False


def snapshot(path: str) -> Iterator[Progress]:
    """Check the snapshot at ``path`` (``backend.check_snapshot_steps``: its magic and
    its whole-file CRC-32), through one descriptor: a snapshot replaced meanwhile is
    read as it was when opened."""
    try:
        f = open(path, "rb")  # noqa: SIM115 -- closed below, read in steps
    except FileNotFoundError:
        return
    with f:
        try:
            yield from check_snapshot_steps(f, path)
        except SnapshotError as exc:
            yield Damage(path, 0, str(exc).removeprefix(f"{path}: "))
