"""The contract every CRDT type in this package shares.

Following riak_dt's single behaviour for all types (and Shapiro et al. 2011,
§2, "state-based objects"), every type here is a *join-semilattice value*:

* ``value()``             the query: what the application sees.
* mutators                (``increment``, ``add``, ``assign`` ...) never change
                          ``self``; they return a **delta**: a small state of the
                          same type holding just the effect of the operation
                          (Almeida, Shoker, Baquero, "Delta State Replicated Data
                          Types", JPDC 2018). The caller joins it locally and
                          ships it to peers.
* ``merge(other)``        the join (least upper bound): commutative, associative,
                          idempotent, with ``empty()`` as identity. Pure.
* ``apply_delta(delta)``  exactly ``merge``: a delta is just a (small) state.
* ``leq(other)``          the lattice order: ``a.leq(b)`` iff ``a.merge(b) == b``.
* ``==``                  structural equality of canonical states; equal states
                          have identical ``to_bytes()`` (Merkle hashes rely on it).
* ``to_bytes()`` / ``from_bytes()`` through the one versioned codec
  (:mod:`crdt.codec`).

States are frozen, slotted dataclasses; their container fields (dicts,
frozensets) are never mutated after construction, so sharing them between
states is safe.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from . import codec

__all__ = ["CRDTBase", "decode"]


class CRDTBase:
    """Mixin implementing the parts of the contract that are the same for every type.

    Subclasses set ``_TAG`` (the codec's append-only type number) and implement
    ``value``, ``merge``, ``_to_wire`` and ``_from_wire``.
    """

    __slots__ = ()

    _TAG: ClassVar[int]

    @classmethod
    def empty(cls) -> Self:
        """The bottom element of the lattice (identity of ``merge``)."""
        return cls()

    def value(self) -> Any:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def merge(self, other: Self) -> Self:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def apply_delta(self, delta: Self) -> Self:
        """Join a delta produced by a mutator (here or on a peer); same as ``merge``."""
        return self.merge(delta)

    def leq(self, other: Self) -> bool:
        """Lattice order: True iff ``other`` already includes everything in ``self``."""
        return self.merge(other) == other

    def to_bytes(self) -> bytes:
        """Canonical, versioned encoding (see :mod:`crdt.codec`)."""
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode bytes made by ``to_bytes``; raises CodecError if they are anything else."""
        return codec.decode_as(data, cls)

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    # --- codec hooks -------------------------------------------------------------------

    def _to_wire(self) -> Any:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


def decode(data: bytes, *, verified: bool = False) -> CRDTBase:
    """Any CRDT state from bytes made by ``to_bytes`` / :func:`crdt.encode`
    (``verified``: as in :func:`crdt.codec.decode`).

    Raises:
        UnsupportedVersionError: the bytes come from a newer codec.
        CodecError: anything else wrong with the bytes, including a registered
            type that is not a CRDT.
    """
    return codec.decode_as(data, CRDTBase, verified=verified)
