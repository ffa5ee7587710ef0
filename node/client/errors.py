"""Exceptions raised by the Tadpole client (:mod:`node.client`) and CLI.

One root, so a caller can catch everything the client raises with one clause::

    TadpoleError                    root; never raised directly
    ├── InvalidArgument             the request is malformed (empty key, key or value too
    │                               large, bad revision, bad client option); a local
    │                               mistake: fix the request, never retry. Also a ValueError.
    ├── NotFound                    the named thing does not exist (unknown node id, no
    │                               such mesh document)
    ├── AlreadyExists               a create named a document that already exists (a live
    │                               mesh); change it instead. Nothing was applied
    ├── FailedPrecondition          the cluster refuses in its current state (the transfer
    │                               target cannot take over)
    ├── Compacted                   a watch asked for history that was already dropped;
    │                               ``compact_revision`` says how far
    ├── Unavailable                 no endpoint could serve the call before retries or the
    │                               deadline ran out (no leader, nodes down, shutting down;
    │                               a read the server cancelled)
    ├── Timeout                     a read did not complete within its deadline
    ├── OutcomeUnknown              a write was sent but its fate is unknown: it may or may
    │   │                           not have been applied (leadership changed in flight,
    │   │                           connection lost or call cancelled by the server mid-call).
    │   │                           Never retried automatically;
    │   │                           read the key to find out.
    │   ├── WriteTimeout            a write hit its deadline (also a Timeout)
    │   └── ReplicationIncomplete   a CRDT-tier update is durable on some replicas but fewer
    │                               than the write quorum acknowledged it; it will converge.
    │                               Do not resend (a counter add would count twice)
    └── ServerError                 any other gRPC status (INTERNAL, UNKNOWN, UNIMPLEMENTED,
                                    ...): a bug or a version mismatch, not a retry case

``InvalidArgument`` is the only *local* mistake; every other class is a remote failure.
Every instance carries ``code`` (the gRPC status name, e.g. ``"UNAVAILABLE"``, or
``None`` when raised without a server round trip) and ``details`` (the server's message).

gRPC status codes are mapped to this tree in exactly one place, :func:`from_rpc_error`.
Call sites keep the original error as ``__cause__``::

    except grpc.RpcError as exc:
        raise from_rpc_error(exc, write=True) from exc

Retry decisions (which failures may be re-sent) live in :mod:`node.client.attempts`; this module
only names what happened.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

__all__ = [
    "COMPACT_REVISION_KEY",
    "LEADER_ADDRESS_KEY",
    "LEADER_ID_KEY",
    "OUTCOME_KEY",
    "AlreadyExists",
    "Compacted",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OutcomeUnknown",
    "PermissionDenied",
    "ReplicationIncomplete",
    "ServerError",
    "TadpoleError",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "WriteTimeout",
    "from_rpc_error",
    "rpc_code",
    "rpc_details",
    "trailing_metadata",
]

# Trailing-metadata keys the server may set (gRPC lowercases metadata keys); the server
# side of this contract is node/api/status.py.
# Whether a failed request was applied: "not-applied", "applied" or "unknown".
OUTCOME_KEY = "tadpole-outcome"
LEADER_ID_KEY = "tadpole-leader-id"
LEADER_ADDRESS_KEY = "tadpole-leader-address"
# Optional on OUT_OF_RANGE from Watch; without it the number is read from the message.
COMPACT_REVISION_KEY = "tadpole-compact-revision"


class TadpoleError(Exception):
    """Root of every exception raised by the Tadpole client.

    ``code`` is the gRPC status name the server (or the transport) reported, ``None``
    when the error was detected locally; ``details`` is the status message.
    """

    def __init__(self, message: str, *, code: str | None = None, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details


class InvalidArgument(TadpoleError, ValueError):
    """The request is malformed; the message names the problem. Never retried."""


class NotFound(TadpoleError):
    """The named object (e.g. a node id) does not exist."""


class AlreadyExists(TadpoleError):
    """A create named something that already exists (a live mesh document); nothing
    was applied. Change the existing one, or delete it first."""


class Unauthenticated(TadpoleError):
    """The call lacked the credential it needs (an operator call without the operator
    token); nothing was applied. Never retried."""


class PermissionDenied(TadpoleError):
    """The caller's roles do not grant what the call needs (the message names the
    missing permission); nothing was applied. Never retried."""


class FailedPrecondition(TadpoleError):
    """The cluster cannot do this in its current state (e.g. transfer target lagging)."""


class Compacted(TadpoleError):
    """A watch's ``start_revision`` is older than the history the cluster keeps.

    Revisions up to and including ``compact_revision`` are gone; watch again from
    ``oldest_revision`` (``compact_revision + 1``) or later, after re-reading state.
    """

    def __init__(
        self, compact_revision: int, *, code: str | None = None, details: str = ""
    ) -> None:
        super().__init__(
            f"revisions up to {compact_revision} were compacted; "
            f"watch from revision {compact_revision + 1} or later",
            code=code,
            details=details,
        )
        self.compact_revision = compact_revision

    @property
    def oldest_revision(self) -> int:
        """The oldest revision a watch may still start from."""
        return self.compact_revision + 1


class Unavailable(TadpoleError):
    """No endpoint could serve the call (retries or deadline exhausted).

    ``leader_id`` / ``leader_address`` carry the server's hint when it knew the leader.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: str = "",
        leader_id: str = "",
        leader_address: str = "",
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.leader_id = leader_id
        self.leader_address = leader_address


class Timeout(TadpoleError):
    """The call did not complete within its deadline."""


class OutcomeUnknown(TadpoleError):
    """A write may or may not have been applied. It was not retried automatically."""


class WriteTimeout(OutcomeUnknown, Timeout):
    """A write hit its deadline: both a timeout and an unknown outcome."""


class ReplicationIncomplete(OutcomeUnknown):
    """A CRDT-tier update reached fewer replicas than its write quorum (``ABORTED`` from
    the Tiers or Documents service). Unlike a plain :class:`OutcomeUnknown` the update
    *was* applied: it is durable on at least one replica and spreads to the others by
    hint hand-off and anti-entropy. Tier updates are not idempotent, so resending it
    would apply it twice.
    """


class ServerError(TadpoleError):
    """A gRPC status outside the Tadpole error contract (INTERNAL, UNKNOWN, ...)."""


# -- mapping ---------------------------------------------------------------------


def rpc_code(exc: BaseException) -> grpc.StatusCode | None:
    """The status code of a gRPC error, or ``None`` if it carries none."""
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:  # a half-built call object; treat as "no code"
        return None
    return value if isinstance(value, grpc.StatusCode) else None


def rpc_details(exc: BaseException) -> str:
    """The status message of a gRPC error ("" when absent)."""
    details = getattr(exc, "details", None)
    if not callable(details):
        return ""
    try:
        value = details()
    except Exception:
        return ""
    return value if isinstance(value, str) else ""


def trailing_metadata(exc: BaseException) -> dict[str, str]:
    """The string-valued trailing metadata of a gRPC error, keys lowercased."""
    getter = getattr(exc, "trailing_metadata", None)
    if not callable(getter):
        return {}
    try:
        pairs: Any = getter()
    except Exception:
        return {}
    out: dict[str, str] = {}
    for item in pairs or ():
        key, value = item[0], item[1]
        if isinstance(value, str):
            out[str(key).lower()] = value
    return out


_UP_TO = re.compile(r"up to (?:revision )?(\d+)")
_FROM = re.compile(r"revision (\d+)")


def _compact_revision(details: str, metadata: dict[str, str]) -> int:
    """How far history was compacted, from metadata or the server's message.

    Accepted message forms: "... up to N ..." (N compacted) or "... revision N ..."
    (N is the oldest watchable revision, so N - 1 was compacted). 0 when unknown.
    """
    raw = metadata.get(COMPACT_REVISION_KEY, "")
    if raw.isdigit():
        return int(raw)
    match = _UP_TO.search(details)
    if match:
        return int(match.group(1))
    match = _FROM.search(details)
    if match:
        return max(int(match.group(1)) - 1, 0)
    return 0


def from_rpc_error(exc: BaseException, *, write: bool = False, tiers: bool = False) -> TadpoleError:
    """Translate a ``grpc.RpcError`` / ``grpc.aio.AioRpcError`` into a :class:`TadpoleError`.

    ``write`` says whether the failed call could have changed state: then
    ``DEADLINE_EXCEEDED`` means :class:`WriteTimeout` (outcome unknown) instead of
    :class:`Timeout`, unless the server's outcome field says ``not-applied`` (the key's
    owner refused a write that reached it after its deadline). ``ABORTED`` is
    :class:`OutcomeUnknown`, or :class:`ReplicationIncomplete` when the server's outcome
    field says ``applied`` ("below write quorum, durable somewhere"); a server too old to
    send the field is taken at its service's meaning (``tiers``: the call went to Tiers or
    Documents). The caller raises the result ``from exc``; this function never raises.
    """
    code = rpc_code(exc)
    details = rpc_details(exc)
    name = code.name if code is not None else None
    said = f": {details}" if details else ""
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"invalid argument{said}", code=name, details=details)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(f"not found{said}", code=name, details=details)
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(f"already exists{said}", code=name, details=details)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(f"unauthenticated{said}", code=name, details=details)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"permission denied{said}", code=name, details=details)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"failed precondition{said}", code=name, details=details)
    if code is grpc.StatusCode.OUT_OF_RANGE:
        metadata = trailing_metadata(exc)
        return Compacted(_compact_revision(details, metadata), code=name, details=details)
    if code is grpc.StatusCode.UNAVAILABLE:
        metadata = trailing_metadata(exc)
        return Unavailable(
            f"unavailable{said}",
            code=name,
            details=details,
            leader_id=metadata.get(LEADER_ID_KEY, ""),
            leader_address=metadata.get(LEADER_ADDRESS_KEY, ""),
        )
    outcome = trailing_metadata(exc).get(OUTCOME_KEY, "")
    if code is grpc.StatusCode.ABORTED and not write:
        # A read changes nothing: aborted (leadership changed under it) means "try again".
        return Unavailable(f"unavailable: the read was aborted{said}", code=name, details=details)
    if code is grpc.StatusCode.ABORTED and (outcome == "applied" or (tiers and not outcome)):
        return ReplicationIncomplete(
            "replication incomplete (durable on some replicas, will converge; "
            f"do not resend){said}",
            code=name,
            details=details,
        )
    if code is grpc.StatusCode.ABORTED:
        return OutcomeUnknown(
            f"outcome unknown (the write may or may not have been applied){said}",
            code=name,
            details=details,
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        if write and outcome != "not-applied":
            return WriteTimeout(
                "deadline exceeded; the write may or may not have been applied",
                code=name,
                details=details,
            )
        return Timeout(f"deadline exceeded{said}", code=name, details=details)
    if code is grpc.StatusCode.CANCELLED:
        # Not cancelled by us (the client swallows its own cancellations): the server
        # dropped the call, e.g. while shutting down.
        if write:
            return OutcomeUnknown(
                f"the server cancelled the write; it may or may not have been applied{said}",
                code=name,
                details=details,
            )
        return Unavailable(
            f"unavailable: the server cancelled the call{said}", code=name, details=details
        )
    if code is None:
        return ServerError(f"rpc failed: {exc!r}", code=None, details=details)
    return ServerError(f"server error {name}{said}", code=name, details=details)
