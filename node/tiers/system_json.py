"""The system tier as one JSON object of keys (HTTP ``/state/system``), without I/O.

Values in the system tier are bytes. Over HTTP they are JSON: a value that is UTF-8
JSON text is shown as that JSON value; any other bytes (written by a gRPC client) are
shown as ``{"$base64": "..."}``, and writing that form stores those exact bytes, so
every value round-trips. An object with a ``$base64`` member and anything else is
refused on write, which keeps the form unambiguous.

A ``PATCH`` is an RFC 7396 merge patch of that object: ``null`` deletes a key, an
object merges into the key's JSON object value, anything else replaces the value.
:func:`plan_patch` turns a patch and the current values of the keys it names into
one transaction whose compares make it apply only if none of those keys changed
since they were read, so the whole patch applies atomically or not at all.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from consensus.statemachine import (
    Compare,
    CompareOp,
    CompareTarget,
    DeleteOp,
    Event,
    EventType,
    KeyValue,
    PutOp,
    Txn,
    TxnOp,
)
from node.errors import InvalidArgument
from node.tiers.agent import apply_merge_patch
from node.tiers.validation import MAX_TXN_OPS, check_key

__all__ = [
    "MAX_PATCH_KEYS",
    "RAW",
    "encode_value",
    "event_json",
    "plan_patch",
    "render_value",
    "touched_since",
]

RAW = "$base64"
MAX_PATCH_KEYS = MAX_TXN_OPS // 2  # one compare and one operation per key


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def render_value(raw: bytes) -> Any:
    """The JSON form of a stored value (see the module docstring)."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {RAW: base64.b64encode(raw).decode("ascii")}


def encode_value(value: Any, key: str) -> bytes:
    """The bytes stored for the JSON ``value`` of ``key``."""
    if isinstance(value, dict) and RAW in value:
        raw = value[RAW]
        if len(value) != 1 or not isinstance(raw, str):
            raise InvalidArgument(
                f"{key}: an object with {RAW!r} stores raw bytes and must hold only that "
                "base64 string"
            )
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument(f"{key}.{RAW} is not valid base64") from exc
    try:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except ValueError as exc:
        raise InvalidArgument(f"{key}: {exc}") from exc


def plan_patch(
    patch: Any, current: Mapping[str, KeyValue | None], max_value_bytes: int
) -> tuple[Txn, dict[str, Any]]:
    """The transaction applying merge ``patch`` over ``current`` (every key the patch
    names -> its value as read, None if absent), and the new JSON value of each named
    key (None = deleted). The transaction's compares fail if any named key changed
    since it was read.

    Raises:
        InvalidArgument: the patch is not a non-empty object, names too many keys or
            a bad key, a value cannot be stored, or the values exceed the size limit.
    """
    check_patch(patch)
    compares: list[Compare] = []
    ops: list[TxnOp] = []
    result: dict[str, Any] = {}
    size = 0
    for key in sorted(patch):
        kv = current.get(key)
        if kv is None:
            compares.append(Compare(key, CompareTarget.VERSION, CompareOp.EQUAL, 0))
        else:
            compares.append(Compare(key, CompareTarget.MOD, CompareOp.EQUAL, kv.mod_revision))
        value = patch[key]
        if value is None:
            result[key] = None
            if kv is not None:
                ops.append(DeleteOp(key))
            continue
        old = render_value(kv.value) if kv is not None else None
        if isinstance(old, dict) and RAW in old:
            old = None  # raw bytes are replaced, never merged into
        new = apply_merge_patch(old, value)
        raw = encode_value(new, key)
        size += len(raw)
        result[key] = new
        ops.append(PutOp(key, raw))
    if size > max_value_bytes:
        raise InvalidArgument(
            f"the patch stores {size} bytes of values; the limit is {max_value_bytes} bytes"
        )
    return Txn(compares=tuple(compares), success=tuple(ops)), result


def check_patch(patch: Any) -> None:
    if not isinstance(patch, dict) or not patch:
        raise InvalidArgument("the patch must be a non-empty JSON object of key -> value")
    if len(patch) > MAX_PATCH_KEYS:
        raise InvalidArgument(
            f"the patch names {len(patch)} keys; the limit is {MAX_PATCH_KEYS} per request"
        )
    for key in patch:
        check_key(key)


def touched_since(events: list[Event], keys: Mapping[str, Any]) -> list[str]:
    """The keys of ``keys`` that some event of ``events`` changed (for ``If-Match``)."""
    return sorted({e.kv.key for e in events if e.kv.key in keys})


def event_json(event: Event) -> dict[str, Any]:
    """One change event as the HTTP API shows it."""
    body: dict[str, Any] = {
        "type": "put" if event.type is EventType.PUT else "delete",
        "key": event.kv.key,
        "revision": event.kv.mod_revision,
    }
    if event.type is EventType.PUT:
        body["value"] = render_value(event.kv.value)
        body["version"] = event.kv.version
    if event.prev_kv is not None:
        body["prev_value"] = render_value(event.prev_kv.value)
    return body
