"""Compact, versioned msgpack codec for every :data:`gossip.messages.Message`.

Frame layout: a msgpack array ``[WIRE_VERSION, type_tag, *fields]`` with nested values
as positional arrays (no field names on the wire). Type tags are append-only: a tag is
never reused or renumbered; a new message gets the next free number. A frame with a
different ``WIRE_VERSION`` is rejected rather than guessed at.

:func:`decode` validates shape and types and raises :class:`gossip.errors.CodecError` on
anything else (truncated bytes, trailing garbage, wrong types, unknown tag), with the
underlying msgpack exception chained, so a driver can reject a bad frame with one
``except CodecError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import msgpack

from gossip.errors import CodecError
from gossip.messages import (
    Ack,
    Alive,
    Dead,
    Delta,
    Gossip,
    MemberMeta,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Status,
    Suspect,
    SwimMessage,
    SyncBegin,
    SyncDone,
    SyncLeaves,
    SyncMessage,
    SyncNodes,
    SyncValues,
    Update,
)

__all__ = [
    "WIRE_VERSION",
    "decode",
    "decode_swim",
    "decode_sync",
    "encode",
    "encode_update",
    "update_size",
]

WIRE_VERSION = 1

# Append-only wire tags.
_T_PING, _T_ACK, _T_NACK, _T_PING_REQ, _T_GOSSIP, _T_PUSH_PULL = 1, 2, 3, 4, 5, 6
_T_SYNC_BEGIN, _T_SYNC_NODES, _T_SYNC_LEAVES, _T_SYNC_VALUES, _T_SYNC_DONE = 16, 17, 18, 19, 20
_U_ALIVE, _U_SUSPECT, _U_DEAD, _U_DELTA = 1, 2, 3, 4
_STATUS_CODE = {Status.ALIVE: 0, Status.SUSPECT: 1, Status.DEAD: 2, Status.LEFT: 3}
_CODE_STATUS = {v: k for k, v in _STATUS_CODE.items()}


# --- encoding ---------------------------------------------------------------------------


def _meta_wire(m: MemberMeta) -> list[Any]:
    flat_tags: list[str] = []
    for k, v in m.tags:
        flat_tags += (k, v)
    return [m.node_id, m.address, m.version, list(m.tiers), flat_tags]


def _update_wire(u: Update) -> list[Any]:
    if isinstance(u, Alive):
        return [_U_ALIVE, _meta_wire(u.meta), u.incarnation]
    if isinstance(u, Suspect):
        return [_U_SUSPECT, u.node, u.incarnation, u.src]
    if isinstance(u, Dead):
        return [_U_DEAD, u.node, u.incarnation, u.src]
    return [_U_DELTA, u.key, u.version, u.origin, u.data]


def _wire(msg: Message) -> list[Any]:
    ups = [_update_wire(u) for u in getattr(msg, "updates", ())]
    if isinstance(msg, Ping):
        return [_T_PING, msg.seq, msg.src, msg.src_addr, msg.target, ups]
    if isinstance(msg, Ack):
        return [_T_ACK, msg.seq, msg.src, ups]
    if isinstance(msg, Nack):
        return [_T_NACK, msg.seq, msg.src]
    if isinstance(msg, PingReq):
        return [_T_PING_REQ, msg.seq, msg.src, msg.src_addr, msg.target, msg.target_addr, ups]
    if isinstance(msg, Gossip):
        return [_T_GOSSIP, msg.src, ups]
    if isinstance(msg, PushPull):
        states = [[_meta_wire(s.meta), s.incarnation, _STATUS_CODE[s.status]] for s in msg.states]
        return [_T_PUSH_PULL, msg.src, msg.src_addr, msg.join, msg.reply, states]
    if isinstance(msg, SyncBegin):
        return [_T_SYNC_BEGIN, msg.space, msg.session, msg.branching, msg.depth, msg.root]
    if isinstance(msg, SyncNodes):
        return [_T_SYNC_NODES, msg.space, msg.session, msg.level, list(msg.parents), msg.hashes]
    if isinstance(msg, SyncLeaves):
        entries = []
        for leaf in msg.entries:
            flat: list[Any] = []
            for k, d in leaf:
                flat += (k, d)
            entries.append(flat)
        return [_T_SYNC_LEAVES, msg.space, msg.session, list(msg.leaves), entries]
    if isinstance(msg, SyncValues):
        flat_values: list[Any] = []
        for k, v in msg.values:
            flat_values += (k, v)
        return [
            _T_SYNC_VALUES,
            msg.space,
            msg.session,
            flat_values,
            list(msg.want),
            msg.final,
        ]
    if isinstance(msg, SyncDone):
        return [_T_SYNC_DONE, msg.space, msg.session]
    raise TypeError(f"not a gossip message: {type(msg).__name__}")


def encode(msg: Message) -> bytes:
    """Encode ``msg`` as one self-describing frame. Raises ``TypeError`` for non-messages."""
    out: bytes = msgpack.packb([WIRE_VERSION, *_wire(msg)], use_bin_type=True)
    return out


def encode_update(u: Update) -> bytes:
    """Encode one piggybacked update (used for size accounting)."""
    out: bytes = msgpack.packb(_update_wire(u), use_bin_type=True)
    return out


def update_size(u: Update) -> int:
    """Bytes ``u`` adds to a frame's update list."""
    return len(encode_update(u))


# --- decoding ---------------------------------------------------------------------------


def _bad(what: str) -> NoReturn:
    raise CodecError(f"malformed gossip frame: {what}")


def _int(v: Any) -> int:
    if type(v) is not int:
        _bad(f"expected int, got {type(v).__name__}")
    return v


def _uint(v: Any) -> int:
    if _int(v) < 0:
        _bad("expected non-negative int")
    return int(v)


def _str(v: Any) -> str:
    if type(v) is not str:
        _bad(f"expected str, got {type(v).__name__}")
    return v


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        _bad(f"expected bytes, got {type(v).__name__}")
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


def _pairs(v: Any, second: Callable[[Any], Any]) -> list[tuple[str, Any]]:
    flat = _list(v)
    if len(flat) % 2:
        _bad("odd-length pair list")
    return [(_str(flat[i]), second(flat[i + 1])) for i in range(0, len(flat), 2)]


def _meta(v: Any) -> MemberMeta:
    node_id, address, version, tiers, tags = _list(v, 5)
    return MemberMeta(
        _str(node_id),
        _str(address),
        _str(version),
        tuple(_str(t) for t in _list(tiers)),
        tuple(_pairs(tags, _str)),
    )


def _update(v: Any) -> Update:
    w = _list(v)
    if not w:
        _bad("empty update")
    tag = w[0]
    if tag == _U_ALIVE:
        _, meta, inc = _list(w, 3)
        return Alive(_meta(meta), _uint(inc))
    if tag == _U_SUSPECT:
        _, node, inc, src = _list(w, 4)
        return Suspect(_str(node), _uint(inc), _str(src))
    if tag == _U_DEAD:
        _, node, inc, src = _list(w, 4)
        return Dead(_str(node), _uint(inc), _str(src))
    if tag == _U_DELTA:
        _, key, ver, origin, data = _list(w, 5)
        return Delta(_str(key), _uint(ver), _str(origin), _bytes(data))
    _bad(f"unknown update tag {tag!r}")


def _updates(v: Any) -> tuple[Update, ...]:
    return tuple(_update(u) for u in _list(v))


def _state(v: Any) -> MemberState:
    meta, inc, status = _list(v, 3)
    code = _int(status)
    if code not in _CODE_STATUS:
        _bad(f"unknown status {code}")
    return MemberState(_meta(meta), _uint(inc), _CODE_STATUS[code])


def _message(tag: Any, f: list[Any]) -> Message:
    n = len(f)
    if tag == _T_PING and n == 5:
        return Ping(_uint(f[0]), _str(f[1]), _str(f[2]), _str(f[3]), _updates(f[4]))
    if tag == _T_ACK and n == 3:
        return Ack(_uint(f[0]), _str(f[1]), _updates(f[2]))
    if tag == _T_NACK and n == 2:
        return Nack(_uint(f[0]), _str(f[1]))
    if tag == _T_PING_REQ and n == 6:
        return PingReq(_uint(f[0]), _str(f[1]), _str(f[2]), _str(f[3]), _str(f[4]), _updates(f[5]))
    if tag == _T_GOSSIP and n == 2:
        return Gossip(_str(f[0]), _updates(f[1]))
    if tag == _T_PUSH_PULL and n == 5:
        states = tuple(_state(s) for s in _list(f[4]))
        return PushPull(_str(f[0]), _str(f[1]), _bool(f[2]), _bool(f[3]), states)
    if tag == _T_SYNC_BEGIN and n == 5:
        return SyncBegin(_str(f[0]), _uint(f[1]), _uint(f[2]), _uint(f[3]), _bytes(f[4]))
    if tag == _T_SYNC_NODES and n == 5:
        parents = tuple(_uint(p) for p in _list(f[3]))
        return SyncNodes(_str(f[0]), _uint(f[1]), _uint(f[2]), parents, _bytes(f[4]))
    if tag == _T_SYNC_LEAVES and n == 4:
        leaves = tuple(_uint(x) for x in _list(f[2]))
        entries = tuple(tuple(_pairs(e, _bytes)) for e in _list(f[3]))
        if len(leaves) != len(entries):
            _bad("leaves and entries differ in length")
        return SyncLeaves(_str(f[0]), _uint(f[1]), leaves, entries)
    if tag == _T_SYNC_VALUES and n == 5:
        values = tuple(_pairs(f[2], _bytes))
        want = tuple(_str(k) for k in _list(f[3]))
        return SyncValues(_str(f[0]), _uint(f[1]), values, want, _bool(f[4]))
    if tag == _T_SYNC_DONE and n == 2:
        return SyncDone(_str(f[0]), _uint(f[1]))
    _bad(f"unknown message tag {tag!r} with {n} fields")


def decode(data: bytes) -> Message:
    """Decode one frame produced by :func:`encode`.

    Raises :class:`CodecError` for anything that is not exactly one valid frame of
    :data:`WIRE_VERSION`. Never returns a partially decoded message.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    try:
        frame = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"undecodable gossip frame ({len(data)} bytes): {exc}") from exc
    w = _list(frame)
    if len(w) < 2:
        _bad("frame shorter than header")
    if w[0] != WIRE_VERSION or type(w[0]) is not int:
        raise CodecError(f"unsupported gossip wire version {w[0]!r} (want {WIRE_VERSION})")
    try:
        return _message(w[1], w[2:])
    except (ValueError, TypeError) as exc:  # tuple-unpack of a wrong-sized array
        raise CodecError(f"malformed gossip frame: {exc}") from exc


_SYNC_TYPES = (SyncBegin, SyncNodes, SyncLeaves, SyncValues, SyncDone)


def decode_sync(data: bytes) -> SyncMessage:
    """:func:`decode`, additionally requiring an anti-entropy message (the Sync RPC)."""
    msg = decode(data)
    if not isinstance(msg, _SYNC_TYPES):
        raise CodecError(f"expected a Sync* message, got {type(msg).__name__}")
    return msg


def decode_swim(data: bytes) -> SwimMessage:
    """:func:`decode`, additionally requiring a SWIM message (Ping/PingReq/Gossip RPCs)."""
    msg = decode(data)
    if isinstance(msg, _SYNC_TYPES):
        raise CodecError(f"expected a SWIM message, got {type(msg).__name__}")
    return msg
