"""Plain values stored inside CRDT states, and their canonical form.

Two kinds of plain value appear in states:

* **Elements** (members of sets, nothing else): ``str``, ``bytes`` or ``int``
  in the signed 64-bit range. ``bool`` is refused on purpose: ``True == 1`` in
  Python, so a set could hold "the same" element in two encodings and equal
  states would no longer encode to identical bytes. Elements are totally
  ordered by :func:`element_key` (ints, then strings, then bytes) so sets
  encode in one canonical order.

* **Payloads** (register values, map values, log payloads): any tree of
  ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes``, lists /
  tuples and ``dict`` with ``str`` keys. A payload is stored as its canonical
  msgpack bytes (dict keys sorted, tuples as lists); states compare and order
  payloads by those bytes, so equality of states is exactly equality of
  encodings, and ``value()`` hands out a fresh copy that the caller may mutate
  without touching the state.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgpack

from ._errors import CodecError, InvalidOperationError

Element: TypeAlias = str | bytes | int
"""A member of a set (see module docstring)."""

Payload: TypeAlias = Any
"""A plain, msgpack-representable value (see module docstring)."""

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
_UINT_MAX = 2**64 - 1


def check_element(element: object) -> Element:
    """Return ``element`` if it may be a set member, else raise InvalidOperationError."""
    if isinstance(element, bool) or not isinstance(element, str | bytes | int):
        raise InvalidOperationError(
            f"set elements must be str, bytes or int (not bool), got {type(element).__name__}"
        )
    if isinstance(element, int) and not _INT_MIN <= element <= _INT_MAX:
        raise InvalidOperationError(f"integer element {element} outside the signed 64-bit range")
    return element


def element_key(element: Element) -> tuple[int, Element]:
    """Total order on elements: ints, then strs, then bytes; natural order within each."""
    if isinstance(element, int):
        return (0, element)
    if isinstance(element, str):
        return (1, element)
    return (2, element)


def _canonical(value: object, depth: int) -> Any:
    if depth > 64:
        raise InvalidOperationError("payload nested more than 64 levels deep")
    if value is None or isinstance(value, bool | float | str | bytes):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _UINT_MAX:
            raise InvalidOperationError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, list | tuple):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key in sorted(value):
            if not isinstance(key, str):
                raise InvalidOperationError(
                    f"payload dict keys must be str, got {type(key).__name__}"
                )
            out[key] = _canonical(value[key], depth + 1)
        return out
    raise InvalidOperationError(f"cannot store a {type(value).__name__} in a CRDT payload")


def pack_payload(value: Payload) -> bytes:
    """Canonical msgpack bytes of a payload; raises InvalidOperationError if unsupported."""
    packed: bytes = msgpack.packb(_canonical(value, 0), use_bin_type=True)
    return packed


def unpack_payload(blob: bytes) -> Payload:
    """A fresh Python copy of the payload stored as ``blob``."""
    return msgpack.unpackb(blob, raw=False, use_list=True, strict_map_key=True)


# --- decoding helpers (input comes from the network: validate everything) -----------


def wire_payload(obj: object) -> bytes:
    """Validate a payload blob read from the wire: it must be canonical msgpack."""
    if not isinstance(obj, bytes):
        raise CodecError("payload must be a msgpack bin")
    try:
        canon = pack_payload(unpack_payload(obj))
    except Exception as exc:
        raise CodecError(f"payload is not valid msgpack: {exc}") from exc
    if canon != obj:
        raise CodecError("payload is not in canonical form")
    return obj


def wire_element(obj: object) -> Element:
    try:
        return check_element(obj)
    except InvalidOperationError as exc:
        raise CodecError(str(exc)) from exc


def wire_str(obj: object, what: str) -> str:
    if not isinstance(obj, str):
        raise CodecError(f"{what} must be a string, got {type(obj).__name__}")
    return obj


def wire_int(obj: object, what: str, *, minimum: int | None = None) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise CodecError(f"{what} must be an integer, got {type(obj).__name__}")
    if minimum is not None and obj < minimum:
        raise CodecError(f"{what} must be >= {minimum}, got {obj}")
    return obj


def wire_list(obj: object, what: str, length: int | None = None) -> list[Any]:
    if not isinstance(obj, list):
        raise CodecError(f"{what} must be an array, got {type(obj).__name__}")
    if length is not None and len(obj) != length:
        raise CodecError(f"{what} must have {length} items, got {len(obj)}")
    return obj
