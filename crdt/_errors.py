"""The exception tree of :mod:`crdt`.

Every exception the package raises on purpose derives from :class:`CRDTError`,
so a caller can catch the whole family with one ``except``::

    CRDTError                      root of everything raised by crdt
    ├── InvalidOperationError      a local mistake: bad argument to a mutator or
    │                              constructor (also a ValueError)
    ├── IncompatibleStateError     two states that can never be joined (e.g.
    │                              capability vectors of different dimensions)
    ├── ClockDriftError            a remote HLC timestamp is further in the future
    │                              than the configured drift bound allows
    └── CodecError                 bytes that are not a valid encoding: garbage,
        │                          truncation, checksum mismatch, wrong type,
        │                          broken invariant (also a ValueError)
        └── UnsupportedVersionError  encoded by a newer codec than this build reads

Local mistakes (``InvalidOperationError``) are kept apart from problems with data
that arrived from elsewhere (``CodecError``, ``ClockDriftError``), so a replica
can log-and-drop a bad peer message without hiding its own bugs.
"""

from __future__ import annotations

__all__ = [
    "CRDTError",
    "ClockDriftError",
    "CodecError",
    "IncompatibleStateError",
    "InvalidOperationError",
    "UnsupportedVersionError",
]


class CRDTError(Exception):
    """Root of every exception raised by :mod:`crdt`."""


class InvalidOperationError(CRDTError, ValueError):
    """A mutator or constructor was called with an argument it cannot accept."""


class IncompatibleStateError(CRDTError):
    """Two states cannot be joined (they are not states of the same lattice)."""


class ClockDriftError(CRDTError):
    """A remote hybrid-logical-clock timestamp lies too far in the future.

    Attributes:
        remote_wall_ns: the wall component of the rejected timestamp.
        physical_ns: the local physical time it was compared with.
        max_drift_ns: the configured bound.
    """

    def __init__(self, remote_wall_ns: int, physical_ns: int, max_drift_ns: int) -> None:
        self.remote_wall_ns = remote_wall_ns
        self.physical_ns = physical_ns
        self.max_drift_ns = max_drift_ns
        super().__init__(
            f"remote HLC wall time {remote_wall_ns} ns is "
            f"{remote_wall_ns - physical_ns} ns ahead of local physical time "
            f"{physical_ns} ns (max drift {max_drift_ns} ns)"
        )


class CodecError(CRDTError, ValueError):
    """Bytes handed to the decoder are not a valid encoding of a CRDT state."""


class UnsupportedVersionError(CodecError):
    """The bytes were produced by a newer codec version than this build understands.

    Attributes:
        version: the version found in the header.
        supported: the highest version this build reads.
    """

    def __init__(self, version: int, supported: int) -> None:
        self.version = version
        self.supported = supported
        super().__init__(
            f"encoded with crdt codec version {version}; this build reads versions "
            f"up to {supported} (upgrade this node before accepting its peers' data)"
        )
