"""Exceptions the node raises while serving a request: one root, one meaning per class.

::

    NodeError                       root; never raised directly
    ├── InvalidArgument             the request is malformed (also ValueError); nothing applied
    │   └── InvalidDocument         a document that breaks its tier's schema
    ├── NotFound                    the named thing does not exist (also LookupError)
    │                               (tiers: AgentNotFound, MeshNotFound; replication: a
    │                               forwarded "not found")
    ├── AlreadyExists               a create named a live document; nothing applied
    ├── FailedPrecondition          the state does not allow it now (a status transition,
    │                               a full resource pool); the message names the state
    ├── Unavailable                 the node could not serve it now (no owner of the key
    │                               answered); nothing applied, safe to resend
    ├── DeadlineExpired             a CRDT-tier write reached its owner after the client's
    │                               deadline (node/deadline.py); nothing applied
    ├── ReplicationIncomplete       a CRDT-tier update is durable on some replica but fewer
    │                               than the write quorum acknowledged it: applied, will
    │                               converge, must not be resent
    └── ReplicationError            a peer answered a replica message with something the
                                    protocol does not allow (internal; outcome unknown)

Every class carries :class:`Outcome`: whether the request's effect is known to be absent
(``NOT_APPLIED``), known to be durable somewhere (``APPLIED``), or ``UNKNOWN``. The outcome
travels to clients as a structured field (trailing metadata ``tadpole-outcome``, set by
:mod:`node.api.status`), never as words in a message: rewording a message must not change
what a client does. The other packages keep their own roots (``consensus.errors``,
``crdt.CRDTError``, ``gossip.errors``, the store's ``StoreError``); :mod:`node.api.status` is
the one table that turns any of them into a status code and an outcome.

Pure: no gRPC, no I/O, so the tier semantics (:mod:`node.tiers`) raise these directly.
"""

from __future__ import annotations

import enum

__all__ = [
    "AlreadyExists",
    "DeadlineExpired",
    "FailedPrecondition",
    "InvalidArgument",
    "InvalidDocument",
    "NodeError",
    "NotFound",
    "Outcome",
    "PermissionDenied",
    "ReplicationError",
    "ReplicationIncomplete",
    "Unauthenticated",
    "Unavailable",
]


class Outcome(enum.Enum):
    """What a failed request did to the state. The value is the wire form."""

    NOT_APPLIED = "not-applied"  # nothing changed anywhere: resending is safe
    APPLIED = "applied"  # durable on at least one replica: resending would repeat it
    UNKNOWN = "unknown"  # may or may not have been applied


class NodeError(Exception):
    """Root of every error a node reports for a request."""

    outcome: Outcome = Outcome.UNKNOWN


class InvalidArgument(NodeError, ValueError):
    """The request is malformed; the message names the problem."""

    outcome = Outcome.NOT_APPLIED


class InvalidDocument(InvalidArgument):
    """A well-formed document that breaks its tier's schema (HTTP 422; over gRPC an
    INVALID_ARGUMENT like any other bad input)."""


class NotFound(NodeError, LookupError):
    """The named object does not exist."""

    outcome = Outcome.NOT_APPLIED


class AlreadyExists(NodeError):
    """A create named an object that already exists."""

    outcome = Outcome.NOT_APPLIED


class FailedPrecondition(NodeError):
    """The request is well formed but the state does not allow it now (a backwards
    status transition, a pool without room); the message names the current state."""

    outcome = Outcome.NOT_APPLIED


class Unauthenticated(NodeError):
    """The credential presented names nobody now (an expired or foreign token, a wrong
    password); the message says which, never the credential."""

    outcome = Outcome.NOT_APPLIED


class PermissionDenied(NodeError):
    """The caller's roles do not grant what the request needs; the message names the
    missing permission. Checked before anything runs."""

    outcome = Outcome.NOT_APPLIED


class Unavailable(NodeError):
    """The request could not be served now; nothing was applied anywhere."""

    outcome = Outcome.NOT_APPLIED


class DeadlineExpired(NodeError):
    """A write would have been applied after the deadline its client gave it (the
    client has stopped waiting; applied now it could land after the client's later
    writes): refused, nothing applied. :mod:`node.deadline` says when."""

    outcome = Outcome.NOT_APPLIED


class ReplicationIncomplete(NodeError):
    """Durable on some replica, below the write quorum; converges by hints and anti-entropy."""

    outcome = Outcome.APPLIED


class ReplicationError(NodeError):
    """A replica exchange failed in a way the protocol does not name."""

    outcome = Outcome.UNKNOWN
