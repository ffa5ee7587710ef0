"""Errors raised by the consensus package.

::

    ConsensusError
    ├── CommandError        a command could not be decoded (local bug or corrupt log)
    ├── SnapshotError       a snapshot could not be decoded
    ├── CompactedError      a watch asked for history that was already dropped
    ├── JournalError        the on-disk Raft journal is unusable
    └── ProposalError       a command was not committed
        ├── NotLeaderError      no leader is known right now (retry later)
        ├── ProposalTimeout     no answer within the deadline (outcome unknown)
        └── OutcomeUnknownError leadership changed while the command was in flight

``ProposalError.retryable`` says whether the same request may simply be sent
again. A write whose outcome is unknown may or may not have been applied.
"""

from __future__ import annotations


class ConsensusError(Exception):
    """Root of every error raised by this package."""


class CommandError(ConsensusError):
    pass


class SnapshotError(ConsensusError):
    """A snapshot file is damaged, or (``unknown_key``) encrypted under a key that the
    keyring it was read with lacks."""

    def __init__(self, message: str, *, unknown_key: bool = False) -> None:
        super().__init__(message)
        self.unknown_key = unknown_key


class JournalError(ConsensusError):
    pass


class CompactedError(ConsensusError):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(
            f"revisions up to {compact_revision} were compacted; "
            f"watch from revision {compact_revision + 1} or later"
        )
        self.compact_revision = compact_revision


class ProposalError(ConsensusError):
    retryable = False


class NotLeaderError(ProposalError):
    retryable = True


class ProposalTimeout(ProposalError):
    pass


class OutcomeUnknownError(ProposalError):
    pass
