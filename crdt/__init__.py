"""crdt — the convergent data types, clocks and codec of Tadpole State.

A pure library (stdlib + msgpack, no I/O, no threads, no clock reads) used by
the population, agent, mesh and metrics tiers. Every type follows one contract
(see :mod:`crdt._base`): ``value()``; mutators that return a *delta* of the same
type; a pure ``merge`` (join) with ``apply_delta = merge``; ``leq``; ``==``;
and ``to_bytes()`` / ``from_bytes()`` through the one versioned codec
(:mod:`crdt.codec`), where equal states encode to identical bytes.

Types: :class:`GCounter`, :class:`PNCounter`, :class:`GSet`, :class:`ORSet`,
:class:`LWWRegister`, :class:`MVRegister`, :class:`ORMap`, :class:`LWWMap`,
:class:`EventLog`, :class:`CapabilityVector`. Clocks: :class:`HybridLogicalClock`
and :class:`Timestamp`, :class:`VectorClock`, :class:`CausalContext`.
Errors: :class:`CRDTError` and its subclasses (tree in :mod:`crdt._errors`).
The usual loop::

    delta = state.increment("node-a")      # local op -> delta
    state = state.apply_delta(delta)       # apply locally
    send(delta.to_bytes())                 # ship; peers apply_delta(from_bytes(...))
"""

from __future__ import annotations

from ._base import CRDTBase, decode
from ._errors import (
    ClockDriftError,
    CodecError,
    CRDTError,
    IncompatibleStateError,
    InvalidOperationError,
    UnsupportedVersionError,
)
from ._values import Element, Payload
from .capvec import CAPABILITY_DIMS, QUANTUM_BITS, CapabilityVector
from .clocks import CausalContext, Dot, HybridLogicalClock, Ordering, Timestamp, VectorClock
from .codec import CODEC_VERSION, encode
from .counters import GCounter, PNCounter
from .eventlog import EventLog, LogEntry
from .maps import LWWMap, ORMap
from .registers import LWWRegister, MVRegister
from .sets import GSet, ORSet

__all__ = [
    "CAPABILITY_DIMS",
    "CODEC_VERSION",
    "QUANTUM_BITS",
    "CRDTBase",
    "CRDTError",
    "CapabilityVector",
    "CausalContext",
    "ClockDriftError",
    "CodecError",
    "Dot",
    "Element",
    "EventLog",
    "GCounter",
    "GSet",
    "HybridLogicalClock",
    "IncompatibleStateError",
    "InvalidOperationError",
    "LWWMap",
    "LWWRegister",
    "LogEntry",
    "MVRegister",
    "ORMap",
    "ORSet",
    "Ordering",
    "PNCounter",
    "Payload",
    "Timestamp",
    "UnsupportedVersionError",
    "VectorClock",
    "decode",
    "encode",
]
