"""Exceptions raised by :mod:`gossip`.

One root, so a driver can catch everything this package raises with one clause::

    GossipError                 root; never raised directly
    ├── ConfigError             a config value or combination is invalid (local mistake)
    ├── CodecError              bytes are not a valid encoded message (remote garbage,
    │                           truncated frame, unknown type, unsupported version)
    └── SyncError               an anti-entropy message cannot be served: unknown space,
                                Merkle layout mismatch, level/index out of range

``ConfigError`` also subclasses :class:`ValueError` so it reads naturally at a call site
that passes a bad argument. Remote failures (a peer not answering) are not exceptions at
all in this package: the protocol code sees them as missing messages and times out.
"""

from __future__ import annotations

__all__ = ["CodecError", "ConfigError", "GossipError", "SyncError"]


class GossipError(Exception):
    """Root of every exception raised by :mod:`gossip`."""


class ConfigError(GossipError, ValueError):
    """A :class:`gossip.config.GossipConfig` field or cross-field rule is violated."""


class CodecError(GossipError):
    """:func:`gossip.codec.decode` was given bytes that are not a valid message."""


class SyncError(GossipError):
    """An anti-entropy message is inconsistent with the local store or tree layout."""
