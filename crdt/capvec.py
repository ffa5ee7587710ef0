"""CapabilityVector: a 256-dimension float32 vector edited concurrently, converging byte-exactly.

For the spec's ``capability_vector: float32_array_256_dimensions`` and its
"collaborative capability editing" with "commutative transformation rules".

Edits are **additive**: ``add(node, dim, amount)`` nudges one dimension. Addition
commutes, so concurrent edits need no transformation — but IEEE floating-point
addition is not associative, so replicas summing the same edits in different
orders would differ in the last bits. Two choices make convergence exact:

1. per-replica float contributions, summed in a canonical order; or
2. **fixed point**: every amount is quantised once, at the edit, to an integer
   number of quanta (``2**-24``); integers add exactly in any order.

This type uses **both ideas together**: per-replica contributions (needed anyway
— an edit must be idempotent under re-delivery, so the state is a
PN-counter-like map ``node -> (version, vector of int quanta)``, joined by
taking the higher version per node; Shapiro et al. 2011, Spec. 7, generalised
to vectors), each kept in fixed point. Choosing fixed point over float
contributions because:

* the value is a pure function of the multiset of edits — independent of how
  edits are spread over replicas, of delivery order, and of how many edits a
  replica folded together (float contributions are not: ``(a+b)+c`` at one
  replica differs from ``a+(b+c)`` split over two);
* the sum is exact, so ``value()`` is the correctly rounded float32 of the
  exact total: identical bytes everywhere (``to_float32_bytes()``), which the
  mesh tier can hash.

Resolution is ``2**-24`` ≈ 6e-8 (float32's epsilon at 1.0 is 1.2e-7, so values
of magnitude ≥ 1 lose nothing a float32 could show); each replica's per-dimension
total is bounded by ±2**62 quanta (≈ ±2.7e11). ``set(node, dim, target)`` is
provided as "add whatever makes my current view equal ``target``": concurrent
sets therefore add their adjustments (the commutative rule), they do not race.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from . import codec
from ._base import CRDTBase
from ._errors import CodecError, IncompatibleStateError, InvalidOperationError
from ._values import wire_int, wire_list, wire_str
from .clocks import _check_node

__all__ = ["CAPABILITY_DIMS", "QUANTUM_BITS", "CapabilityVector"]

CAPABILITY_DIMS = 256
QUANTUM_BITS = 24
_SCALE = 1 << QUANTUM_BITS
_LIMIT = 1 << 62

Contribution = tuple[int, tuple[int, ...]]
"""``(version, per-dimension totals in quanta)`` of one replica."""


def quantize(amount: float) -> int:
    """``amount`` as an integer number of ``2**-24`` quanta (round half to even)."""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise InvalidOperationError(f"amount must be a number, got {type(amount).__name__}")
    if not math.isfinite(amount):
        raise InvalidOperationError(f"amount must be finite, got {amount!r}")
    scaled = float(amount) * _SCALE
    if not math.isfinite(scaled) or abs(scaled) >= _LIMIT:
        raise InvalidOperationError(f"amount {amount!r} out of range")
    return round(scaled)


@codec.register
@dataclass(frozen=True, slots=True)
class CapabilityVector(CRDTBase):
    """Concurrently editable float32 vector (fixed-point per-replica contributions)."""

    _TAG = 11
    dims: int = CAPABILITY_DIMS
    contributions: Mapping[str, Contribution] = field(default_factory=dict)
    _cache: bytes | None = field(default=None, init=False, compare=False, repr=False)

    __hash__ = CRDTBase.__hash__

    def __post_init__(self) -> None:
        if isinstance(self.dims, bool) or not isinstance(self.dims, int) or self.dims < 1:
            raise InvalidOperationError(f"dims must be a positive int, got {self.dims!r}")

    # --- queries ---------------------------------------------------------------------

    def totals(self) -> tuple[int, ...]:
        """Exact per-dimension sums, in quanta."""
        totals = [0] * self.dims
        for _version, vector in self.contributions.values():
            for i, quanta in enumerate(vector):
                if quanta:
                    totals[i] += quanta
        return tuple(totals)

    def to_float32_bytes(self) -> bytes:
        """The vector as ``dims`` little-endian float32s: byte-identical on every replica."""
        cached = self._cache
        if cached is None:
            cached = struct.pack(f"<{self.dims}f", *(t / _SCALE for t in self.totals()))
            object.__setattr__(self, "_cache", cached)
        return cached

    def value(self) -> tuple[float, ...]:
        """The vector, each component a float32 value (as a Python float)."""
        return struct.unpack(f"<{self.dims}f", self.to_float32_bytes())

    # --- mutators (return deltas) ----------------------------------------------------

    def add(self, node_id: str, dim: int, amount: float) -> CapabilityVector:
        """Delta adding ``amount`` to dimension ``dim``."""
        return self.add_many(node_id, {dim: amount})

    def add_many(self, node_id: str, amounts: Mapping[int, float]) -> CapabilityVector:
        """Delta adding ``amounts[dim]`` to each listed dimension, as one edit."""
        return self._edit(node_id, {d: quantize(a) for d, a in amounts.items()})

    def set(self, node_id: str, dim: int, target: float) -> CapabilityVector:
        """Delta adjusting ``dim`` so that *this replica's view* becomes ``target``.

        Concurrent ``set``s on other replicas add their own adjustments.
        """
        self._check_dim(dim)
        return self._edit(node_id, {dim: quantize(target) - self.totals()[dim]})

    def _check_dim(self, dim: object) -> int:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < self.dims:
            raise InvalidOperationError(f"dimension {dim!r} outside 0..{self.dims - 1}")
        return dim

    def _edit(self, node_id: str, quanta: Mapping[int, int]) -> CapabilityVector:
        _check_node(node_id)
        version, vector = self.contributions.get(node_id, (0, (0,) * self.dims))
        new = list(vector)
        for dim, q in quanta.items():
            new[self._check_dim(dim)] += q
            if abs(new[dim]) >= _LIMIT:
                raise InvalidOperationError(f"dimension {dim} total out of range at {node_id!r}")
        return CapabilityVector(self.dims, {node_id: (version + 1, tuple(new))})

    # --- join ------------------------------------------------------------------------

    def merge(self, other: CapabilityVector) -> CapabilityVector:
        if self.dims != other.dims:
            raise IncompatibleStateError(
                f"cannot merge capability vectors of {self.dims} and {other.dims} dimensions"
            )
        a, b = self.contributions, other.contributions
        if len(b) > len(a):
            a, b = b, a
        out = dict(a)
        for node, theirs in b.items():
            mine = out.get(node)
            if mine is None or theirs > mine:
                out[node] = theirs
        return CapabilityVector(self.dims, out)

    # --- codec -----------------------------------------------------------------------

    def _to_wire(self) -> Any:
        return [
            self.dims,
            [[node, v, list(vec)] for node, (v, vec) in sorted(self.contributions.items())],
        ]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        dims_wire, contribs_wire = wire_list(obj, "capability vector", 2)
        dims = wire_int(dims_wire, "dims", minimum=1)
        contributions: dict[str, Contribution] = {}
        for item in wire_list(contribs_wire, "capability contributions"):
            node, version, vector = wire_list(item, "capability contribution", 3)
            values = wire_list(vector, "capability contribution vector", dims)
            quanta = tuple(wire_int(q, "quanta") for q in values)
            if any(abs(q) >= _LIMIT for q in quanta):
                raise CodecError("capability contribution out of range")
            node_id = wire_str(node, "node id")
            if not node_id:
                raise CodecError("capability contribution without a node id")
            contributions[node_id] = (wire_int(version, "version", minimum=1), quanta)
        return cls(dims, contributions)
