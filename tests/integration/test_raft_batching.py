"""Proposal batching: what is pending when the Raft thread runs is one log entry,
and every proposal in it still gets its own result, revision and request-id
deduplication -- on the leader and through a follower."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from consensus.errors import ProposalError
from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.statemachine import Batch, CommandResult, PutOp, Txn, decode_entry
from tests.support.raft_cluster import commit_index, settled_leader, start_cluster

pytestmark = pytest.mark.integration


def entry_command(backend: RaftBackend, index: int) -> Any:
    """The decoded command of the journal entry with Raft index ``index``."""
    journal = backend.journal
    assert journal is not None
    for command, idx, _term in reversed([journal[i] for i in range(len(journal))]):
        if idx == index:
            _func_id, (payload,) = pickle.loads(command[1:])
            return decode_entry(payload)
    raise AssertionError(f"no entry {index} in {[journal[i][1] for i in range(len(journal))]}")


class Answers:
    def __init__(self, count: int) -> None:
        self.results: dict[int, CommandResult | ProposalError] = {}
        self._all = threading.Semaphore(0)
        self.count = count

    def callback(self, i: int) -> Any:
        def done(result: CommandResult | None, error: ProposalError | None) -> None:
            self.results[i] = result if result is not None else error  # type: ignore[assignment]
            self._all.release()

        return done

    def wait(self) -> None:
        for _ in range(self.count):
            assert self._all.acquire(timeout=10), "a proposal never answered"


def propose_while_held(node: RaftBackend, txns: list[Txn]) -> Answers:
    """Propose ``txns`` while ``node``'s tick thread is held, so all are pending at
    its next tick."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(5)

    node.call_in_tick(hold)
    assert held.wait(5)
    answers = Answers(len(txns))
    try:
        for i, txn in enumerate(txns):
            node.propose(txn, answers.callback(i))
    finally:
        release.set()
    answers.wait()
    return answers


@pytest.fixture
def cluster(tmp_path: Any) -> Any:
    nodes = start_cluster(str(tmp_path), RaftConfig())
    try:
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def test_pending_proposals_share_one_entry_and_keep_their_own_results(cluster: Any) -> None:
    leader = settled_leader(cluster)
    before = commit_index(leader)
    rev0 = leader.read(lambda sm: sm.revision)
    txns = [Txn(success=(PutOp(f"k{i}", b"v%d" % i),), request_id=f"r{i}") for i in range(40)]
    txns.insert(10, Txn(success=(PutOp("k3", b"again"),), request_id="r3"))  # a resend
    answers = propose_while_held(leader, txns)

    assert commit_index(leader) == before + 1, "one entry for the whole batch"
    entry = entry_command(leader, before + 1)
    assert isinstance(entry, Batch) and len(entry.commands) == 41
    revisions = []
    for i, txn in enumerate(txns):
        result = answers.results[i]
        assert isinstance(result, CommandResult), result
        if i == 10:  # the resend of r3 is answered from its first application
            assert result == answers.results[3]
            continue
        revisions.append(result.revision)
        assert result.results[0].kvs[0].value == txn.success[0].value  # type: ignore[union-attr]
    assert revisions == list(range(rev0 + 1, rev0 + 41)), "one revision per command, in order"
    assert leader.read(lambda sm: sm.get("k3").value) == b"v3"


def test_a_follower_forwards_its_pending_proposals_as_one_entry(cluster: Any) -> None:
    leader = settled_leader(cluster)
    follower = next(n for n in cluster.values() if n is not leader)
    before = commit_index(leader)
    txns = [Txn(success=(PutOp(f"f{i}", b"x"),)) for i in range(25)]
    answers = propose_while_held(follower, txns)
    assert all(isinstance(r, CommandResult) for r in answers.results.values()), answers.results
    assert commit_index(leader) == before + 1
    # The follower answered only once it had applied the entry itself.
    assert follower.read(lambda sm: [sm.get(f"f{i}") is not None for i in range(25)]) == [True] * 25


def test_a_lone_proposal_is_its_own_entry(cluster: Any) -> None:
    leader = settled_leader(cluster)
    before = commit_index(leader)
    answers = Answers(1)
    leader.propose(Txn(success=(PutOp("alone", b"1"),)), answers.callback(0))
    answers.wait()
    assert isinstance(entry_command(leader, before + 1), Txn)
