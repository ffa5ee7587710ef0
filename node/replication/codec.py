"""Bytes for every :mod:`node.replication.messages` message, and back.

Frame: one **tag byte** naming the message type, then a **msgpack array** of its fields,
positional (no field names on the wire). Tags are append-only: a tag is never reused or
renumbered, and changing a message's fields means a new tag (the old one keeps decoding
what it always did), so the tag is also the layout's version.

======  ===============  ===========================================================
tag     message          body
======  ===============  ===========================================================
0x01    Merge            [tier, key, state]
0x02    MergeMany        [[tier, key, state], ...]
0x03    StoreHint        [target, tier, key, state]
0x04    Read             [tier, key]
0x05    Forward          [tier, key, op]   op: [0, kind, amount, elements, value,
                                           entry_id, field, remove] (Op) or
                                           [1, kind, args] (DocOp)
0x06    Scan             [tier, prefix, after]
0x07    Sync             [tier, a, b, step]   step: a gossip.codec frame
0x08    Observe          [tier, key]
0x09    Changes          [tier, prefix, after, limit]
0x0A    ForwardGroup     [tier, key, [[op, request_id], ...]]
0x0B    ForwardMany      [[tier, key, [[op, request_id], ...]], ...]
0x0C    Until            [deadline_ns, tag, body]   tag 0x05, 0x0A or 0x0B, with its body
0x0D    MergeMany        [[tier, key, state, base or nil], ...]  (sent when a merge has a base)
0x41    Done             []
0x42    MergeManyDone    [ok, ...]
0x43    ReadReply        [state or nil]
0x44    ForwardReply     [state, replicas, hinted]
0x45    ScanReply        [keys]
0x46    SyncReply        [step or nil]
0x47    ChangesReply     [feed, [[seq, key, state or nil], ...], through, trimmed]
0x48    ForwardGroupReply [state, replicas, hinted, [duplicate, ...], [error, ...]]
0x49    ForwardManyReply [[0x48 or 0x7F, body], ...]  (a ForwardGroupReply or Failure each)
0x7F    Failure          [kind, outcome, message]
======  ===============  ===========================================================

:func:`decode` checks shape and types and raises
:class:`node.replication.errors.CodecError` for anything else — empty input, an unknown
tag, a truncated or trailing body, a wrong type, a msgpack extension type — with the
underlying exception chained; it never returns a partly decoded message. Values inside
an op (``Op.value``, ``DocOp.args``) are plain msgpack data (JSON-like); tuples come back
as lists. Never pickle.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from gossip import codec as gossip_codec
from gossip.errors import CodecError as GossipCodecError
from gossip.messages import SyncMessage
from node.errors import Outcome
from node.replication.errors import CodecError
from node.replication.messages import (
    Changes,
    ChangesReply,
    Done,
    Failure,
    Forward,
    ForwardGroup,
    ForwardGroupReply,
    ForwardMany,
    ForwardManyReply,
    ForwardReply,
    Merge,
    MergeMany,
    MergeManyDone,
    Observe,
    Read,
    ReadReply,
    ReplicaMessage,
    Reply,
    Request,
    Scan,
    ScanReply,
    StoreHint,
    Sync,
    SyncReply,
    Until,
)
from node.tiers.documents import DocOp
from node.tiers.ops import Op

__all__ = ["TAGS", "decode", "decode_reply", "decode_request", "encode"]

# Append-only wire tags (one byte).
TAGS: dict[type[ReplicaMessage], int] = {
    Merge: 0x01,
    MergeMany: 0x02,
    StoreHint: 0x03,
    Read: 0x04,
    Forward: 0x05,
    Scan: 0x06,
    Sync: 0x07,
    Observe: 0x08,
    Changes: 0x09,
    ForwardGroup: 0x0A,
    ForwardMany: 0x0B,
    Until: 0x0C,
    Done: 0x41,
    MergeManyDone: 0x42,
    ReadReply: 0x43,
    ForwardReply: 0x44,
    ScanReply: 0x45,
    ChangesReply: 0x47,
    ForwardGroupReply: 0x48,
    ForwardManyReply: 0x49,
    SyncReply: 0x46,
    Failure: 0x7F,
}
# MergeMany's second layout: each merge with its base (Merge.base). A MergeMany whose
# merges have none is sent under its first tag, as before.
_MERGE_MANY_BASED: int = 0x0D
_TYPES = {tag: klass for klass, tag in TAGS.items()} | {_MERGE_MANY_BASED: MergeMany}
_DIGEST_BYTES = 16
_OP, _DOC_OP = 0, 1
_REQUESTS = (
    Merge,
    MergeMany,
    StoreHint,
    Read,
    Forward,
    Scan,
    Sync,
    Observe,
    Changes,
    ForwardGroup,
    ForwardMany,
    Until,
)
_FENCED = (Forward, ForwardGroup, ForwardMany)


# --- encoding ---------------------------------------------------------------------------


def _op_wire(op: Op | DocOp) -> list[Any]:
    if isinstance(op, DocOp):
        return [_DOC_OP, op.kind, op.args]
    return [_OP, op.kind, op.amount, list(op.elements), op.value, op.entry_id, op.field, op.remove]


def _step_wire(step: SyncMessage | None) -> bytes | None:
    return None if step is None else gossip_codec.encode(step)


def _body(msg: ReplicaMessage) -> list[Any]:
    if isinstance(msg, Merge):
        return [msg.tier, msg.key, msg.state]
    if isinstance(msg, MergeMany):
        if _based(msg):
            return [[m.tier, m.key, m.state, m.base] for m in msg.items]
        return [[m.tier, m.key, m.state] for m in msg.items]
    if isinstance(msg, StoreHint):
        return [msg.target, msg.tier, msg.key, msg.state]
    if isinstance(msg, Read | Observe):
        return [msg.tier, msg.key]
    if isinstance(msg, Forward):
        return [msg.tier, msg.key, _op_wire(msg.op)]
    if isinstance(msg, ForwardGroup):
        return [msg.tier, msg.key, [[_op_wire(op), rid] for op, rid in msg.items]]
    if isinstance(msg, ForwardMany):
        return [_body(group) for group in msg.groups]
    if isinstance(msg, Until):
        return [msg.deadline_ns, TAGS[type(msg.request)], _body(msg.request)]
    if isinstance(msg, ForwardManyReply):
        return [[TAGS[type(r)], _body(r)] for r in msg.results]
    if isinstance(msg, ForwardGroupReply):
        return [
            msg.state,
            list(msg.replicas),
            list(msg.hinted),
            list(msg.duplicates),
            list(msg.errors),
        ]
    if isinstance(msg, Scan):
        return [msg.tier, msg.prefix, msg.after]
    if isinstance(msg, Sync):
        return [msg.tier, msg.pair[0], msg.pair[1], _step_wire(msg.step)]
    if isinstance(msg, Changes):
        return [msg.tier, msg.prefix, msg.after, msg.limit]
    if isinstance(msg, ChangesReply):
        return [msg.feed, [list(e) for e in msg.entries], msg.through, msg.trimmed]
    if isinstance(msg, Done):
        return []
    if isinstance(msg, MergeManyDone):
        return list(msg.ok)
    if isinstance(msg, ReadReply):
        return [msg.state]
    if isinstance(msg, ForwardReply):
        return [msg.state, list(msg.replicas), list(msg.hinted)]
    if isinstance(msg, ScanReply):
        return list(msg.keys)
    if isinstance(msg, SyncReply):
        return [_step_wire(msg.step)]
    if isinstance(msg, Failure):
        return [msg.kind, msg.outcome.value, msg.message]
    raise TypeError(f"not a replica message: {type(msg).__name__}")


def encode(msg: ReplicaMessage) -> bytes:
    """One frame for ``msg``. Raises ``TypeError`` for a non-message (or an op value
    msgpack cannot carry)."""
    body: bytes = msgpack.packb(_body(msg), use_bin_type=True)
    tag = _MERGE_MANY_BASED if isinstance(msg, MergeMany) and _based(msg) else TAGS[type(msg)]
    return bytes((tag,)) + body


def _based(msg: MergeMany) -> bool:
    return any(m.base is not None for m in msg.items)


# --- decoding ---------------------------------------------------------------------------


def _bad(what: str) -> NoReturn:
    raise CodecError(f"malformed replica message: {what}")


def _str(v: Any) -> str:
    if type(v) is not str:
        _bad(f"expected str, got {type(v).__name__}")
    return v


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        _bad(f"expected bytes, got {type(v).__name__}")
    return v


def _opt_bytes(v: Any) -> bytes | None:
    return None if v is None else _bytes(v)


def _int(v: Any) -> int:
    if type(v) is not int:
        _bad(f"expected int, got {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        _bad(f"expected bool, got {type(v).__name__}")
    return v


def _list(v: Any, n: int | None = None) -> list[Any]:
    if type(v) is not list:
        _bad(f"expected array, got {type(v).__name__}")
    if n is not None and len(v) != n:
        _bad(f"expected array of {n}, got {len(v)}")
    return v


def _strs(v: Any) -> tuple[str, ...]:
    return tuple(_str(s) for s in _list(v))


def _op(v: Any) -> Op | DocOp:
    w = _list(v)
    if w and w[0] == _DOC_OP and len(w) == 3:
        args = w[2]
        if type(args) is not dict or not all(type(k) is str for k in args):
            _bad("DocOp args must be a map with str keys")
        return DocOp(_str(w[1]), args)
    if w and w[0] == _OP and len(w) == 8:
        _, kind, amount, elements, value, entry_id, fld, remove = w
        return Op(_str(kind), _int(amount), _strs(elements), value, _str(entry_id), _str(fld),
                  _bool(remove))  # fmt: skip
    _bad(f"unknown op encoding {w[:1]!r} with {len(w)} fields")


def _step(v: Any) -> SyncMessage | None:
    if v is None:
        return None
    try:
        return gossip_codec.decode_sync(_bytes(v))
    except GossipCodecError as exc:
        raise CodecError(f"malformed anti-entropy step: {exc}") from exc


def _outcome(v: Any) -> Outcome:
    try:
        return Outcome(_str(v))
    except ValueError as exc:
        raise CodecError(f"malformed replica message: unknown outcome {v!r}") from exc


def _base(v: Any) -> bytes | None:
    base = _opt_bytes(v)
    if base is not None and len(base) != _DIGEST_BYTES:
        _bad(f"a merge's base must be a {_DIGEST_BYTES}-byte digest, got {len(base)} bytes")
    return base


def _message(klass: type[ReplicaMessage], f: list[Any], tag: int = 0) -> ReplicaMessage:
    """``klass`` from its fields ``f``; ``tag`` picks the layout of a MergeMany."""
    if klass is Merge:
        tier, key, state = _list(f, 3)
        return Merge(_str(tier), _str(key), _bytes(state))
    if klass is MergeMany:
        items = []
        for item in f:
            if tag == _MERGE_MANY_BASED:
                tier, key, state, base = _list(item, 4)
                items.append(Merge(_str(tier), _str(key), _bytes(state), _base(base)))
            else:
                tier, key, state = _list(item, 3)
                items.append(Merge(_str(tier), _str(key), _bytes(state)))
        return MergeMany(tuple(items))
    if klass is StoreHint:
        target, tier, key, state = _list(f, 4)
        return StoreHint(_str(target), _str(tier), _str(key), _bytes(state))
    if klass is Read or klass is Observe:
        tier, key = _list(f, 2)
        return klass(_str(tier), _str(key))
    if klass is Forward:
        tier, key, op = _list(f, 3)
        return Forward(_str(tier), _str(key), _op(op))
    if klass is ForwardGroup:
        tier, key, items = _list(f, 3)
        group = []
        for item in _list(items):
            op, rid = _list(item, 2)
            group.append((_op(op), _str(rid)))
        if not group:
            _bad("ForwardGroup without items")
        return ForwardGroup(_str(tier), _str(key), tuple(group))
    if klass is ForwardMany:
        groups = tuple(_message(ForwardGroup, _list(g)) for g in f)
        return ForwardMany(groups)  # type: ignore[arg-type]
    if klass is Until:
        deadline, tag, body = _list(f, 3)
        inner = _TYPES.get(tag) if type(tag) is int else None
        if inner not in _FENCED:
            _bad(f"Until carries tag {tag!r}, not a forwarded write")
        if not 0 < _int(deadline) < 2**63:
            _bad(f"Until deadline {deadline} out of range")
        return Until(deadline, _message(inner, _list(body)))  # type: ignore[arg-type]
    if klass is ForwardManyReply:
        results = []
        for entry in f:
            tag, body = _list(entry, 2)
            if tag not in (TAGS[ForwardGroupReply], TAGS[Failure]):
                _bad(f"ForwardManyReply holds tag {tag!r}")
            results.append(_message(_TYPES[tag], _list(body)))
        return ForwardManyReply(tuple(results))  # type: ignore[arg-type]
    if klass is ForwardGroupReply:
        state, replicas, hinted, duplicates, errors = _list(f, 5)
        flags = tuple(_bool(d) for d in _list(duplicates))
        return ForwardGroupReply(
            _bytes(state), _strs(replicas), _strs(hinted), flags, _strs(errors)
        )
    if klass is Scan:
        tier, prefix, after = _list(f, 3)
        return Scan(_str(tier), _str(prefix), _str(after))
    if klass is Sync:
        tier, a, b, step = _list(f, 4)
        decoded = _step(step)
        if decoded is None:
            _bad("Sync without a step")
        return Sync(_str(tier), (_str(a), _str(b)), decoded)
    if klass is Done:
        _list(f, 0)
        return Done()
    if klass is MergeManyDone:
        return MergeManyDone(tuple(_bool(ok) for ok in f))
    if klass is ReadReply:
        (state,) = _list(f, 1)
        return ReadReply(_opt_bytes(state))
    if klass is ForwardReply:
        state, replicas, hinted = _list(f, 3)
        return ForwardReply(_bytes(state), _strs(replicas), _strs(hinted))
    if klass is ScanReply:
        return ScanReply(_strs(f))
    if klass is Changes:
        tier, prefix, after, limit = _list(f, 4)
        return Changes(_str(tier), _str(prefix), _int(after), _int(limit))
    if klass is ChangesReply:
        feed, entries, through, trimmed = _list(f, 4)
        rows = []
        for entry in _list(entries):
            seq, key, state = _list(entry, 3)
            rows.append((_int(seq), _str(key), _opt_bytes(state)))
        return ChangesReply(_str(feed), tuple(rows), _int(through), _int(trimmed))
    if klass is SyncReply:
        (step,) = _list(f, 1)
        return SyncReply(_step(step))
    kind, outcome, message = _list(f, 3)
    return Failure(_str(kind), _outcome(outcome), _str(message))


def _no_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


def decode(data: bytes) -> ReplicaMessage:
    """The message in ``data`` (exactly one frame). Raises :class:`CodecError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise CodecError("empty replica message")
    klass = _TYPES.get(data[0])
    if klass is None:
        raise CodecError(
            f"unknown replica message tag 0x{data[0]:02x} (this node knows "
            + ", ".join(f"0x{t:02x}" for t in sorted(_TYPES))
            + "; a newer peer?)"
        )
    try:
        body = msgpack.unpackb(
            data[1:], raw=False, use_list=True, strict_map_key=True, ext_hook=_no_ext
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CodecError(
            f"undecodable {klass.__name__} body ({len(data) - 1} bytes): {exc}"
        ) from exc
    try:
        return _message(klass, _list(body), data[0])
    except (ValueError, TypeError) as exc:  # tuple-unpack of a wrong-sized array
        raise CodecError(f"malformed {klass.__name__}: {exc}") from exc


def decode_request(data: bytes) -> Request:
    """:func:`decode`, additionally requiring a request (what a replica serves)."""
    msg = decode(data)
    if not isinstance(msg, _REQUESTS):
        raise CodecError(f"expected a replica request, got {type(msg).__name__}")
    return msg


def decode_reply(data: bytes) -> Reply:
    """:func:`decode`, additionally requiring a reply (what a caller receives)."""
    msg = decode(data)
    if isinstance(msg, _REQUESTS):
        raise CodecError(f"expected a replica reply, got {type(msg).__name__}")
    return msg
