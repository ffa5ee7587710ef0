"""Records into content-addressed chunks, and back. Pure: no I/O.

A backup stores each tier as *records* -- ``(key, value bytes)`` in key order -- cut
into chunks. Where a chunk ends depends on the keys alone: a record closes its chunk
when a keyed hash of its key has its low bits zero (one key in ``2**AVERAGE_BITS``
on average), or when the chunk has reached ``MAX_CHUNK_BYTES``. So a changed value
changes only the chunk that holds its key, and an inserted or deleted key only the
chunk it falls in: the other chunks encode to the same bytes as last time, get the
same id (SHA-256 of the encoding) and are not stored again. That is what makes every
backup after the first incremental, with no chain of deltas to replay at restore.

Chunk encoding (msgpack)::

    [CHUNK_FORMAT, [[key, value], ...]]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Final

import msgpack

CHUNK_FORMAT: Final = 1
# One key in 2**4 ends a chunk: ~16 records a chunk. Chunks are stored in packs, so
# many small ones cost little; smaller ones make an incremental backup after scattered
# changes smaller, but each carries its own age header (~200 bytes).
AVERAGE_BITS: Final = 4
MAX_CHUNK_BYTES: Final = 1 << 20
_BOUNDARY_KEY: Final = b"tadpole-backup-chunk-boundary"

Record = tuple[str, bytes]


class ChunkError(ValueError):
    """A chunk's bytes are not a chunk of this format."""


def ends_chunk(key: str, bits: int = AVERAGE_BITS) -> bool:
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=8, key=_BOUNDARY_KEY
    ).digest()
    return int.from_bytes(digest, "big") & ((1 << bits) - 1) == 0


def cut(
    records: Iterable[Record], *, bits: int = AVERAGE_BITS, max_bytes: int = MAX_CHUNK_BYTES
) -> Iterator[list[Record]]:
    """Group ``records`` (in key order) into chunks by the rule above."""
    chunk: list[Record] = []
    size = 0
    for key, value in records:
        chunk.append((key, value))
        size += len(key) + len(value)
        if ends_chunk(key, bits) or size >= max_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def encode(records: list[Record]) -> bytes:
    data: bytes = msgpack.packb([CHUNK_FORMAT, [[k, v] for k, v in records]], use_bin_type=True)
    return data


def chunk_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes) -> list[Record]:
    """The records of an encoded chunk; ChunkError if it is not one."""
    try:
        fmt, rows = msgpack.unpackb(data, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ChunkError(f"undecodable chunk: {exc}") from exc
    if fmt != CHUNK_FORMAT:
        raise ChunkError(f"chunk format {fmt!r} is not supported (this version reads 1)")
    out: list[Record] = []
    for row in rows:
        if (
            not isinstance(row, list)
            or len(row) != 2
            or not isinstance(row[0], str)
            or not isinstance(row[1], bytes)
        ):
            raise ChunkError("malformed chunk: a record is not [key, value bytes]")
        out.append((row[0], row[1]))
    return out
