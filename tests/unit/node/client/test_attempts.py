"""The client's retry rules (node.client.attempts), pure: no server, time passed in.

The failures are built the way a node answers them — through the node's one exception →
status table (node.api.status) — or as gRPC transport failures that carry no outcome.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest

from consensus.errors import NotLeaderError, OutcomeUnknownError, ProposalTimeout
from node import errors as server
from node.api.status import status_for
from node.client.attempts import Attempts, Fate, RetryPolicy, Router, fate
from node.client.errors import (
    InvalidArgument,
    OutcomeUnknown,
    ReplicationIncomplete,
    TadpoleError,
    Timeout,
    Unavailable,
    WriteTimeout,
)
from node.placement import placement_key, ranking

S = grpc.StatusCode


def answered(exc: BaseException, message: str | None = None) -> grpc.aio.AioRpcError:
    """``exc`` as a node answers it (code, message, trailers); ``message`` rewords it."""
    status = status_for(exc)
    trailers = grpc.aio.Metadata(*status.trailers())
    details = status.message if message is None else message
    return grpc.aio.AioRpcError(status.code, grpc.aio.Metadata(), trailers, details)


def transport(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A failure gRPC reports itself: no Tadpole server answered."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


# Every kind of failed try a client can see, with what it did to the state.
FAILURES: dict[str, tuple[grpc.aio.AioRpcError, Fate]] = {
    "no-owner": (answered(server.Unavailable("n2, n3 down; nothing applied")), Fate.NOT_APPLIED),
    "not-leader": (answered(NotLeaderError("no leader")), Fate.NOT_APPLIED),
    "below-quorum": (answered(server.ReplicationIncomplete("1 of 2")), Fate.APPLIED),
    "leader-changed": (answered(OutcomeUnknownError("leadership changed")), Fate.UNKNOWN),
    "forward-lost": (answered(server.ReplicationError("owner's answer lost")), Fate.UNKNOWN),
    "commit-timeout": (answered(ProposalTimeout("commit timed out")), Fate.UNKNOWN),
    "invalid": (answered(server.InvalidArgument("key is empty")), Fate.NOT_APPLIED),
    "refused": (transport(S.UNAVAILABLE, "failed to connect to all addresses"), Fate.NOT_APPLIED),
    "lost": (transport(S.UNAVAILABLE, "Socket closed"), Fate.UNKNOWN),
    "try-timeout": (transport(S.DEADLINE_EXCEEDED, "Deadline Exceeded"), Fate.UNKNOWN),
    "cancelled": (transport(S.CANCELLED, "Cancelled"), Fate.UNKNOWN),
    "past-deadline": (answered(server.DeadlineExpired("reached its owner late")), Fate.NOT_APPLIED),
}


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_fate_of_each_failure(name: str) -> None:
    exc, expected = FAILURES[name]
    assert fate(exc) is expected


@dataclass(frozen=True)
class Kind:
    write: bool
    idempotent: bool
    tiers: bool


KINDS = {
    "read": Kind(write=False, idempotent=False, tiers=False),
    "kv-write": Kind(write=True, idempotent=True, tiers=False),  # carries a request id
    "tier-update": Kind(write=True, idempotent=False, tiers=True),
}


def run(kind: Kind, tries: Sequence[str]) -> list[float | TadpoleError]:
    """Feed the failed tries in order; stop at the first error. Three endpoints, no back-off,
    a far deadline, at most 3 tries (so long sequences also end by exhaustion)."""
    router = Router(["a:1", "b:2", "c:3"], prefer_leader=False, cooldown_s=0.0)
    policy = RetryPolicy(attempts=3, initial_backoff_s=0.0, max_backoff_s=0.0)
    attempts = Attempts(
        router,
        policy,
        random.Random(3),
        write=kind.write,
        idempotent=kind.idempotent,
        tiers=kind.tiers,
        timeout_s=60.0,
        now=0.0,
    )
    answers: list[float | TadpoleError] = []
    for name in tries:
        answer = attempts.failed(FAILURES[name][0], 0.0)
        answers.append(answer)
        if isinstance(answer, TadpoleError):
            break
    return answers


SEQUENCES = [seq for n in (1, 2, 3, 4) for seq in itertools.product(sorted(FAILURES), repeat=n)]


@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_every_sequence_of_failed_tries_keeps_the_outcome_rules(kind_name: str) -> None:
    """Exhaustive over every sequence of up to four failed tries of 11 kinds (16,104 per
    kind).

    * once any try of a write may have been applied, the call ends in success (more tries)
      or OutcomeUnknown — never in an error that says "safe to resend";
    * once a try is known applied, it ends in ReplicationIncomplete, and is not resent;
    * a write without a request id is resent only after a try that applied nothing;
    * a read never ends in OutcomeUnknown.
    """
    kind = KINDS[kind_name]
    checked = 0
    for seq in SEQUENCES:
        answers = run(kind, seq)
        fates = [FAILURES[name][1] for name in seq[: len(answers)]]
        for i, answer in enumerate(answers):
            if kind.write and not kind.idempotent and isinstance(answer, float):
                assert fates[i] is Fate.NOT_APPLIED, (seq, i)
            if kind.write and fates[i] is Fate.APPLIED:
                assert isinstance(answer, ReplicationIncomplete), (seq, i, answer)
        final = answers[-1]
        if not isinstance(final, TadpoleError):
            continue
        checked += 1
        worst = max(fates) if kind.write else Fate.NOT_APPLIED
        if not kind.write:
            assert not isinstance(final, OutcomeUnknown), (seq, final)
        elif worst is Fate.APPLIED:
            assert isinstance(final, ReplicationIncomplete), (seq, final)
        elif worst is Fate.UNKNOWN:
            assert isinstance(final, OutcomeUnknown), (seq, final)
            assert not isinstance(final, ReplicationIncomplete), (seq, final)
        else:
            assert not isinstance(final, OutcomeUnknown), (seq, final)
    assert checked > 1000


def test_the_probe_case_aborted_then_unavailable_is_outcome_unknown() -> None:
    """Issue 17, defect 1: a put ABORTED (outcome unknown) and then UNAVAILABLE until the
    deadline ended as Unavailable "... not applied, safe to retry" while it was applied."""
    answers = run(KINDS["kv-write"], ["leader-changed", "not-leader", "not-leader", "refused"])
    final = answers[-1]
    assert isinstance(final, OutcomeUnknown) and not isinstance(final, Unavailable)
    assert "may have been applied" in str(final)


def test_a_try_timeout_after_an_unknown_write_is_a_write_timeout() -> None:
    answers = run(KINDS["kv-write"], ["leader-changed", "try-timeout", "try-timeout"])
    assert isinstance(answers[-1], WriteTimeout)


def test_a_write_its_owner_refused_past_the_deadline_is_not_retried() -> None:
    # The owner's clock and the client's disagree (the client still waited): a new try
    # meets the same clocks. Nothing was applied: a Timeout, not an unknown outcome.
    for kind in ("kv-write", "tier-update"):
        answers = run(KINDS[kind], ["past-deadline"])
        assert len(answers) == 1 and isinstance(answers[0], Timeout), kind
        assert not isinstance(answers[0], OutcomeUnknown)
    assert isinstance(run(KINDS["read"], ["past-deadline"])[0], float)  # reads: retried


def test_invalid_argument_after_an_unknown_try_is_outcome_unknown_not_a_local_mistake() -> None:
    answers = run(KINDS["kv-write"], ["lost", "invalid"])
    assert isinstance(answers[-1], OutcomeUnknown)
    answers = run(KINDS["kv-write"], ["invalid"])
    assert isinstance(answers[-1], InvalidArgument)


# -- rewording a message changes nothing -------------------------------------------------

SERVER_FAILURES: list[BaseException] = [
    server.InvalidArgument("bad"),
    server.NotFound("gone"),
    server.AlreadyExists("there"),
    server.Unavailable("none of its owners answered; nothing applied"),
    server.ReplicationIncomplete("durable on n1, 1 of 2; resending would apply it twice"),
    server.ReplicationError("odd reply"),
    NotLeaderError("no leader; not applied, safe to retry"),
    OutcomeUnknownError("leadership changed while in flight"),
    ProposalTimeout("commit timed out"),
    TimeoutError("replicas slow"),
    RuntimeError("a bug"),
]
REWORDINGS = [
    "",
    "nothing applied",
    "applied everywhere; do not resend",
    "not applied, safe to retry",
    "Socket closed",
    "failed to connect to all addresses",
    "connection refused",
]


@pytest.mark.parametrize("exc", SERVER_FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_rewording_any_message_leaves_every_decision_unchanged(
    exc: BaseException, kind_name: str
) -> None:
    kind = KINDS[kind_name]

    def decisions(message: str | None) -> list[tuple[str, Fate]]:
        err = answered(exc, message)
        out: list[tuple[str, Fate]] = []
        for seq in ([err], [err, err], [err, err, err, err]):
            router = Router(["a:1", "b:2"], prefer_leader=False, cooldown_s=0.0)
            policy = RetryPolicy(attempts=3, initial_backoff_s=0.0, max_backoff_s=0.0)
            attempts = Attempts(
                router,
                policy,
                random.Random(1),
                write=kind.write,
                idempotent=kind.idempotent,
                tiers=kind.tiers,
                timeout_s=60.0,
                now=0.0,
            )
            for e in seq:
                answer = attempts.failed(e, 0.0)
                out.append((type(answer).__name__, fate(e)))
                if isinstance(answer, TadpoleError):
                    break
        return out

    reference = decisions(None)
    for message in REWORDINGS:
        assert decisions(message) == reference, message


def test_backs_off_once_every_endpoint_failed_a_round() -> None:
    """Regression: the round check ran after the round was reset, so a client
    burned its attempts in a tight loop (40 tries in 0.2 s) instead of waiting
    out a leader election."""
    router = Router(["a:1", "b:2", "c:3"], prefer_leader=False, cooldown_s=0.0)
    policy = RetryPolicy(attempts=100, initial_backoff_s=0.1, max_backoff_s=1.0, jitter=0.0)
    attempts = Attempts(router, policy, random.Random(1), write=False, timeout_s=60.0, now=0.0)
    err = answered(NotLeaderError("no leader"))
    delays = [attempts.failed(err, 0.0) for _ in range(9)]
    assert delays == [0.0, 0.0, 0.1, 0.0, 0.0, 0.2, 0.0, 0.0, 0.4]


def test_a_resendable_try_gets_the_attempt_timeout_a_plain_write_the_whole_deadline() -> None:
    router = Router(["a:1", "b:2"], prefer_leader=False, cooldown_s=0.0)
    policy = RetryPolicy(attempt_timeout_s=1.5)
    common = {"timeout_s": 5.0, "now": 0.0}
    read = Attempts(router, policy, random.Random(1), write=False, **common)  # type: ignore[arg-type]
    kv = Attempts(router, policy, random.Random(1), write=True, idempotent=True, **common)  # type: ignore[arg-type]
    tier = Attempts(router, policy, random.Random(1), write=True, **common)  # type: ignore[arg-type]
    assert (read.attempt_timeout(0.0), kv.attempt_timeout(0.0)) == (1.5, 1.5)
    assert tier.attempt_timeout(0.0) == 5.0
    assert read.attempt_timeout(4.0) == pytest.approx(1.0)  # the deadline still bounds it
    with pytest.raises(InvalidArgument):
        RetryPolicy(attempt_timeout_s=0)


@dataclass(frozen=True)
class Seen:
    """A member as a Members answer names it."""

    id: str
    address: str
    gossip_status: str = "alive"
    is_self: bool = False
    is_leader: bool = False


def test_first_owners_place_keys_as_the_nodes_do_over_the_live_members() -> None:
    router = Router(["a:1"], prefer_leader=False, cooldown_s=0.0)
    keys = [("population", f"job_resource_ledger/j{i}") for i in range(200)]
    assert router.first_owners(keys) == [None] * 200  # nothing learned: any endpoint
    members = [
        Seen("n1", "a:1", gossip_status="", is_self=True),  # the answering node
        Seen("n2", "b:2"),
        Seen("n3", "c:3", gossip_status="suspect"),  # still an owner, as on the nodes
        Seen("n4", "d:4", gossip_status="dead"),
    ]
    router.learn_members(members, now=10.0)
    assert router.placement_age(15.0) == 5.0
    address = {"n1": "a:1", "n2": "b:2", "n3": "c:3"}
    expected = [address[ranking(placement_key(t, k), ["n1", "n2", "n3"])[0]] for t, k in keys]
    assert router.first_owners(keys) == expected
    assert set(expected) == {"a:1", "b:2", "c:3"}  # every live member coordinates some


def test_an_answer_without_a_gossip_view_keeps_the_last_placement() -> None:
    router = Router(["a:1"], prefer_leader=False, cooldown_s=0.0)
    router.learn_members([Seen("n1", "a:1", is_self=True), Seen("n2", "b:2")], now=1.0)
    router.learn_members([Seen("n1", "a:1", gossip_status="", is_self=True)], now=2.0)
    assert set(router.first_owners([("agent", str(i)) for i in range(50)])) == {"a:1", "b:2"}
    assert router.placement_age(3.0) == 2.0


def test_a_routed_call_tries_its_owner_first_then_fails_over() -> None:
    router = Router(["a:1", "b:2", "c:3"], prefer_leader=False, cooldown_s=5.0)
    policy = RetryPolicy(initial_backoff_s=0.0, max_backoff_s=0.0)

    def attempts(now: float) -> Attempts:
        return Attempts(
            router, policy, random.Random(1), write=True, idempotent=True, timeout_s=5.0,
            now=now, first="c:3",
        )  # fmt: skip

    call = attempts(0.0)
    assert call.endpoint == "c:3"
    assert call.failed(transport(grpc.StatusCode.UNAVAILABLE, "connection refused"), 0.1) == 0.0
    assert call.endpoint == "a:1"  # the owner failed: the usual order, no waiting
    assert attempts(1.0).endpoint == "a:1"  # the owner is cooling down: not first
    assert attempts(6.0).endpoint == "c:3"
