"""The one versioned codec for every state in :mod:`crdt`.

Frame layout (all integers big-endian)::

    +------+------+---------+---------------------------+---------+
    | 'T'  | 'S'  | version | msgpack [type_tag, body]  | crc32   |
    | 1 B  | 1 B  |  1 B    |  variable                 |  4 B    |
    +------+------+---------+---------------------------+---------+

* ``type_tag`` is an append-only integer per type (never reuse a number);
  ``body`` is the type's canonical wire form: msgpack arrays only (no maps),
  every set or map written as a list sorted by key, payloads as canonical
  msgpack ``bin``.
* **Canonical**: a state has exactly one encoding, so equal states give
  identical bytes. The decoder enforces it: after decoding it re-encodes and
  refuses input that does not reproduce byte for byte (unsorted lists,
  duplicates, zero entries, non-minimal forms all fail).
* **Never a wrong value**: bad magic, truncation, a CRC mismatch, the wrong
  structure, a broken invariant (say an OR-set dot outside its causal context)
  all raise :class:`~crdt.CodecError`; a newer version raises
  :class:`~crdt.UnsupportedVersionError` *before* anything else is read, since
  a newer format may change everything after the version byte.

Use :func:`encode` / :func:`decode` to ship any state, or each type's
``to_bytes()`` / ``from_bytes()`` when the type is known.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, ClassVar, Protocol, Self, TypeVar

import msgpack

from ._errors import CodecError, CRDTError, UnsupportedVersionError

__all__ = ["CODEC_VERSION", "Codable", "decode", "decode_as", "encode", "register"]

CODEC_VERSION = 1
"""Version written by this build; the decoder reads 1..CODEC_VERSION."""

_MAGIC = b"TS"
_HEADER = len(_MAGIC) + 1
_TRAILER = 4


class Codable(Protocol):
    """What the codec needs from a type; :class:`~crdt.CRDTBase` declares all three.

    The codec knows nothing else about the types it carries, so it sits below
    them: ``crdt._base`` imports the codec, never the reverse.
    """

    _TAG: ClassVar[int]
    """Append-only type number written before the body."""

    def _to_wire(self) -> Any:
        """The canonical body: msgpack arrays, sets and maps as sorted lists."""
        ...

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        """Inverse of ``_to_wire``; raises CodecError (or CRDTError) on bad input."""
        ...


_REGISTRY: dict[int, type[Codable]] = {}

C = TypeVar("C", bound=type[Codable])
T = TypeVar("T", bound=Codable)


def register(cls: C) -> C:
    """Class decorator: make ``cls`` decodable under its ``_TAG`` (append-only)."""
    tag = cls._TAG
    if tag in _REGISTRY and _REGISTRY[tag] is not cls:
        raise RuntimeError(f"codec tag {tag} used by {_REGISTRY[tag].__name__} and {cls.__name__}")
    _REGISTRY[tag] = cls
    return cls


def to_wire_tagged(state: Codable) -> list[Any]:
    """``[tag, body]`` of a state, for embedding one state inside another (ORMap)."""
    return [state._TAG, state._to_wire()]


def from_wire_tagged(obj: Any) -> Codable:
    """Inverse of :func:`to_wire_tagged`; raises CodecError."""
    if not isinstance(obj, list) or len(obj) != 2:
        raise CodecError("expected a [type_tag, body] pair")
    tag, body = obj
    if isinstance(tag, bool) or not isinstance(tag, int):
        raise CodecError("type tag must be an integer")
    cls = _REGISTRY.get(tag)
    if cls is None:
        raise CodecError(f"unknown type tag {tag}")
    return cls._from_wire(body)


def encode(state: Codable) -> bytes:
    """Canonical bytes of ``state``; equal states give identical bytes."""
    body: bytes = msgpack.packb(to_wire_tagged(state), use_bin_type=True)
    head = _MAGIC + bytes([CODEC_VERSION])
    return head + body + struct.pack(">I", zlib.crc32(head + body))


def decode(data: bytes, *, verified: bool = False) -> Codable:
    """Decode bytes produced by :func:`encode` (by any version up to CODEC_VERSION).

    Bytes that do not re-encode to themselves are refused (one state, one encoding),
    which costs an encode; ``verified`` skips that for bytes whose integrity something
    else vouches for -- a stored value whose digest was checked as it was read. Decoded
    that way, non-canonical bytes still give the state they spell, and the next write
    stores its canonical encoding.

    Raises:
        UnsupportedVersionError: the bytes come from a newer codec.
        CodecError: anything else wrong with the bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER + _TRAILER + 1:
        raise CodecError(f"too short to be a crdt encoding ({len(data)} bytes)")
    if data[: len(_MAGIC)] != _MAGIC:
        raise CodecError("not a crdt encoding (bad magic)")
    version = data[len(_MAGIC)]
    if version > CODEC_VERSION:
        raise UnsupportedVersionError(version, CODEC_VERSION)
    if version < 1:
        raise CodecError(f"invalid codec version {version}")
    (crc,) = struct.unpack(">I", data[-_TRAILER:])
    if zlib.crc32(data[:-_TRAILER]) != crc:
        raise CodecError("checksum mismatch (corrupted or truncated)")
    try:
        obj = msgpack.unpackb(
            data[_HEADER:-_TRAILER], raw=False, use_list=True, strict_map_key=True
        )
    except Exception as exc:
        raise CodecError(f"body is not valid msgpack: {exc}") from exc
    try:
        state = from_wire_tagged(obj)
    except CRDTError as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"invalid state: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise CodecError(f"malformed {type(exc).__name__}: {exc}") from exc
    if not verified and encode(state) != data:
        raise CodecError("encoding is not canonical")
    return state


def decode_as(data: bytes, cls: type[T], *, verified: bool = False) -> T:
    """:func:`decode`, then check the result is a ``cls``; raises CodecError if not."""
    state = decode(data, verified=verified)
    if not isinstance(state, cls):
        raise CodecError(f"expected {cls.__name__} bytes, found a {type(state).__name__}")
    return state
