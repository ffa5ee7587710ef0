"""The one table from exceptions to gRPC status codes, used by every servicer.

=======================================  ===================  ===========  ==================
exception                                code                 outcome      client resends?
=======================================  ===================  ===========  ==================
node.errors.InvalidArgument              INVALID_ARGUMENT     not-applied  no (fix the input)
node.errors.NotFound                     NOT_FOUND            not-applied  no
node.errors.AlreadyExists                ALREADY_EXISTS       not-applied  no
node.errors.FailedPrecondition           FAILED_PRECONDITION  not-applied  no (state changed)
node.errors.Unavailable                  UNAVAILABLE          not-applied  yes, elsewhere
node.errors.DeadlineExpired              DEADLINE_EXCEEDED    not-applied  no (clocks disagree)
node.errors.ReplicationIncomplete        ABORTED              applied      never
node.errors.ReplicationError             ABORTED              unknown      never
consensus NotLeaderError / retryable     UNAVAILABLE          not-applied  yes (leader hint)
consensus OutcomeUnknownError            ABORTED              unknown      only with request id
consensus ProposalTimeout, TimeoutError  DEADLINE_EXCEEDED    unknown      only with request id
consensus ProposalError (other)          FAILED_PRECONDITION  not-applied  no
consensus CompactedError                 OUT_OF_RANGE         not-applied  from a newer revision
anything else (a bug)                    INTERNAL             unknown      no; logged once
=======================================  ===================  ===========  ==================

The outcome travels as trailing metadata :data:`OUTCOME_KEY` on every error, so what a
client does never depends on the words of a message; the message is for people.
Leader hints and the compacted revision travel as metadata too (:data:`LEADER_ID_KEY`,
:data:`LEADER_ADDRESS_KEY`, :data:`COMPACT_REVISION_KEY`). The HTTP face maps the same
:class:`Status` values to HTTP statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import grpc

from consensus.errors import (
    CompactedError,
    NotLeaderError,
    OutcomeUnknownError,
    ProposalError,
    ProposalTimeout,
)
from node.errors import (
    AlreadyExists,
    DeadlineExpired,
    FailedPrecondition,
    InvalidArgument,
    NodeError,
    NotFound,
    Outcome,
    PermissionDenied,
    ReplicationError,
    ReplicationIncomplete,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "COMPACT_REVISION_KEY",
    "LEADER_ADDRESS_KEY",
    "LEADER_ID_KEY",
    "OUTCOME_KEY",
    "RESEND_ALONE_KEY",
    "Status",
    "abort",
    "status_for",
]

log = logging.getLogger(__name__)

# Trailing-metadata keys (gRPC lowercases keys; the client reads the same names).
OUTCOME_KEY = "tadpole-outcome"
LEADER_ID_KEY = "tadpole-leader-id"
LEADER_ADDRESS_KEY = "tadpole-leader-address"
COMPACT_REVISION_KEY = "tadpole-compact-revision"
# On a batch item the node left unanswered (the answer was full): send it again alone.
RESEND_ALONE_KEY = "tadpole-resend-alone"


@dataclass(frozen=True, slots=True)
class Status:
    """What a failed request answers: code, message for people, outcome, extra metadata."""

    code: grpc.StatusCode
    message: str
    outcome: Outcome
    metadata: tuple[tuple[str, str], ...] = ()

    def trailers(self) -> tuple[tuple[str, str], ...]:
        return ((OUTCOME_KEY, self.outcome.value), *self.metadata)


# (exception class, code, outcome or None for the class's own outcome); first match wins,
# so subclasses come before their bases.
_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode, Outcome | None], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, None),
    (NotFound, grpc.StatusCode.NOT_FOUND, None),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, None),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, None),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, None),
    (DeadlineExpired, grpc.StatusCode.DEADLINE_EXCEEDED, None),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, None),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, None),
    (ReplicationIncomplete, grpc.StatusCode.ABORTED, None),
    (ReplicationError, grpc.StatusCode.ABORTED, None),
    (CompactedError, grpc.StatusCode.OUT_OF_RANGE, Outcome.NOT_APPLIED),
    (NotLeaderError, grpc.StatusCode.UNAVAILABLE, Outcome.NOT_APPLIED),
    (OutcomeUnknownError, grpc.StatusCode.ABORTED, Outcome.UNKNOWN),
    (ProposalTimeout, grpc.StatusCode.DEADLINE_EXCEEDED, Outcome.UNKNOWN),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED, Outcome.UNKNOWN),
)


def status_for(exc: BaseException, *, leader: tuple[str, str] | None = None) -> Status:
    """The status answering ``exc``. ``leader`` (id, address), when known, is attached as a
    hint to answers that send the client elsewhere."""
    hint: tuple[tuple[str, str], ...] = ()
    if leader is not None and leader[0]:
        hint = ((LEADER_ID_KEY, leader[0]), (LEADER_ADDRESS_KEY, leader[1]))
    if isinstance(exc, ProposalError) and exc.retryable and not isinstance(exc, NotLeaderError):
        return Status(grpc.StatusCode.UNAVAILABLE, str(exc), Outcome.NOT_APPLIED, hint)
    for kind, code, outcome in _TABLE:
        if isinstance(exc, kind):
            if outcome is None:
                outcome = exc.outcome if isinstance(exc, NodeError) else Outcome.UNKNOWN
            message = str(exc) or _DEFAULT_MESSAGE.get(code, code.name.lower())
            metadata: tuple[tuple[str, str], ...] = ()
            if code is grpc.StatusCode.UNAVAILABLE:
                metadata = hint
            if isinstance(exc, CompactedError):
                metadata = ((COMPACT_REVISION_KEY, str(exc.compact_revision)),)
            return Status(code, message, outcome, metadata)
    if isinstance(exc, ProposalError):
        return Status(grpc.StatusCode.FAILED_PRECONDITION, str(exc), Outcome.NOT_APPLIED)
    return Status(
        grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}", Outcome.UNKNOWN
    )


_DEFAULT_MESSAGE = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline passed; a write may or may not have been applied",
}


async def abort(
    context: grpc.aio.ServicerContext,
    exc: BaseException,
    *,
    leader: Callable[[], tuple[str, str] | None] | None = None,
) -> NoReturn:
    """Answer the call with ``exc``'s status; never returns. An INTERNAL answer (a bug) is
    logged with its traceback; everything else is an expected answer and is not logged."""
    status = status_for(exc, leader=leader() if leader is not None else None)
    if status.code is grpc.StatusCode.INTERNAL:
        log.error("unexpected error serving a request", exc_info=exc)
    context.set_trailing_metadata(status.trailers())
    await context.abort(status.code, status.message)
    raise AssertionError("context.abort() returned")  # it raises; this keeps mypy honest
