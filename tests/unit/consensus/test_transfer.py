"""Leadership transfer on a real RaftBackend (tick thread, journal in a temporary
directory, no peers): the pause in new commands it starts always ends, and one
transfer runs at a time. The handover itself, under writes, is
tests/integration/test_system_tier.py::test_compare_and_swap_admits_exactly_one_winner."""

from __future__ import annotations

import asyncio
import queue
import time
from pathlib import Path
from typing import Any

import pytest

from consensus.errors import ProposalError, ProposalTimeout
from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.raft.bridge import RaftSystem
from consensus.statemachine import PutOp, Txn

HOLD_S = 0.4


def started(tmp_path: Path) -> RaftBackend:
    config = RaftConfig(leader_fallback_s=HOLD_S)
    backend = RaftBackend("n1", [], str(tmp_path), sender=lambda peer, frames: None, config=config)
    backend.start()
    deadline = time.monotonic() + 10
    while backend.status().role != "leader":
        assert time.monotonic() < deadline, "a lone node did not lead"
        time.sleep(0.01)
    return backend


def test_a_transfer_that_cannot_happen_ends_on_time_and_lets_the_held_writes_through(
    tmp_path: Path,
) -> None:
    backend = started(tmp_path)
    try:
        answers: queue.Queue[tuple[str, bool, str, float]] = queue.Queue()
        written: queue.Queue[tuple[Any, Any, float]] = queue.Queue()

        def answer(name: str) -> Any:
            return lambda ok, why: answers.put((name, ok, why, time.monotonic()))

        asked = time.monotonic()
        backend.transfer_leadership("", answer("first"))  # no follower to hand over to
        backend.transfer_leadership("", answer("second"))
        backend.propose(
            Txn(success=(PutOp("k", b"v"),)),
            lambda result, error: written.put((result, error, time.monotonic())),
        )
        second = answers.get(timeout=5)
        assert second[:3] == ("second", False, "another leadership transfer is under way")
        first = answers.get(timeout=5)
        assert first[:2] == ("first", False) and "not caught up" in first[2]
        assert HOLD_S * 0.9 <= first[3] - asked < HOLD_S + 2.0
        # the write waited for the transfer to give up, then went through
        result, error, at = written.get(timeout=5)
        assert error is None and result.revision == 1
        assert at - asked >= HOLD_S * 0.9
        transport = backend._transport
        assert transport is not None and not transport.hold_commands
        # the pause is over: a new request is taken (and fails for the same reason)
        backend.transfer_leadership("", answer("third"))
        third = answers.get(timeout=5)
        assert third[:2] == ("third", False) and "not caught up" in third[2]
        done: queue.Queue[Any] = queue.Queue()
        backend.propose(Txn(success=(PutOp("k", b"w"),)), lambda r, e: done.put((r, e)))
        result, error = done.get(timeout=5)
        assert error is None and result.revision == 2
    finally:
        backend.stop()


async def test_a_transfer_that_outlasts_its_deadline_is_a_timeout_not_a_crash(
    tmp_path: Path,
) -> None:
    """The caller's budget covers the request and the handover together; running out
    is a ProposalTimeout (an answer for the client), not asyncio's TimeoutError (an
    unhandled exception in the servicer)."""
    config = RaftConfig(leader_fallback_s=HOLD_S)
    system = RaftSystem("n1", [], str(tmp_path), sender=lambda peer, frames: None, config=config)
    await system.start()
    try:
        while system.info().role != "leader":
            await asyncio.sleep(0.01)
        with pytest.raises(ProposalTimeout, match="did not take the transfer request"):
            await system.transfer_leadership("", HOLD_S / 4)
        # the refusal that comes later (no follower) is answered to nobody, harmlessly
        await asyncio.sleep(HOLD_S)
        with pytest.raises(ProposalError, match="not caught up"):
            await system.transfer_leadership("", HOLD_S * 5)
    finally:
        await system.stop()
