"""The bounded chaos subset that ``make test`` and CI run (about 2-3 minutes).

Every fault of the catalogue runs at least once against a real three-node cluster,
grouped into short runs, and each run must be clean: linearizable (including the
final read-back, so no acknowledged write is lost), no lost writes, replicas equal.
One run uses a deliberately broken read mode (serializable reads checked as
linearizable ones) and must be *caught*.

Network faults need root (namespaces, nftables); without it those tests skip with
the reason, and the loopback test checks that the fallback reports the skip.
``make chaos`` is the long version; a failing seed here reproduces with the command
printed in the test output.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.chaos import netns
from tests.chaos.history import History, Op
from tests.chaos.nemesis import Event
from tests.chaos.runner import (
    RunConfig,
    RunResult,
    failover_times,
    longest_gap,
    percentile,
    run,
)
from tests.chaos.workload import WorkloadConfig, classify_write_error

ROOT, WHY_NOT_ROOT = netns.available()
needs_root = pytest.mark.skipif(not ROOT, reason=f"chaos faults need root: {WHY_NOT_ROOT}")

WORKLOAD = WorkloadConfig(clients=8, keys=4)


def _run(
    faults: str,
    seed: int,
    duration_s: float,
    workload: WorkloadConfig = WORKLOAD,
    **kw: object,
) -> RunResult:
    cfg = RunConfig(
        duration_s=duration_s,
        faults=tuple(faults.split(",")),
        seed=seed,
        workload=workload,
        **kw,  # type: ignore[arg-type]
    )
    return run(cfg)


def _assert_clean(result: RunResult) -> None:
    assert result.events, "no fault was injected"
    assert result.summary.by_outcome.get("ok", 0) > 100, "the workload made no progress"
    assert result.clean, (
        f"seed {result.config.seed} not clean; reproduce: {result.config.command()}\n"
        f"{result.summary.format()}\ndivergence: {result.divergence}\nerrors: {result.errors}\n"
        f"evidence: {result.run_dir}"
    )


@pytest.mark.chaos
@needs_root
def test_process_faults_lose_nothing() -> None:
    _assert_clean(_run("kill-leader,kill-follower,kill-random,kill-all,pause", 101, 25))


@pytest.mark.chaos
@needs_root
def test_partitions_and_packet_loss_lose_nothing() -> None:
    faults = (
        "partition-leader,partition-leader-client,partition-majority,"
        "partition-bridge,partition-oneway,net-drop"
    )
    result = _run(faults, 202, 30)
    _assert_clean(result)
    assert result.heal_s, "no heal time measured"


@pytest.mark.chaos
@needs_root
def test_storage_faults_lose_nothing() -> None:
    result = _run("lose-unfsynced,torn-tail,restart-empty,clock-skew", 303, 30)
    _assert_clean(result)


@pytest.mark.chaos
def test_a_starved_host_and_a_slow_disk_lose_nothing() -> None:
    result = _run("cpu-hog,slow-disk", 606, 20, use_netns=False)
    _assert_clean(result)
    assert {e.fault for e in result.events} <= {"cpu-hog", "slow-disk"}
    assert all("elections" in e.detail for e in result.events)


@pytest.mark.chaos
@needs_root
def test_broken_local_reads_are_caught() -> None:
    """Reads that skip the read barrier must be flagged under a partition that
    leaves clients talking to the isolated old leader. The workload sends them
    serializable (answered from the receiving node's local state, as a node without
    a barrier would) and records them as linearizable reads."""
    stale = dataclasses.replace(WORKLOAD, stale_reads=True)
    result = _run("partition-leader-client", 404, 15, stale)
    assert result.events
    assert result.summary.violations > 0, (
        f"the broken mode went unnoticed: {result.summary.format()}; "
        f"reproduce: {result.config.command()}"
    )


@pytest.mark.chaos
def test_loopback_fallback_reports_skipped_partitions() -> None:
    result = _run("kill-random,partition-leader", 505, 10, use_netns=False)
    assert not result.netns
    assert "partition-leader" in result.skipped
    _assert_clean(result)


# -- pure pieces -------------------------------------------------------------------


def test_longest_gap_is_the_worst_window_without_a_success() -> None:
    def op(invoke_ns: int, complete_ns: int, outcome: str) -> Op:
        return Op(
            process=1, kind="write", key="k", value="v", invoke_ns=invoke_ns,
            complete_ns=complete_ns, outcome=outcome,  # type: ignore[arg-type]
        )  # fmt: skip

    s = 10**9
    ops = [op(0, s, "ok"), op(s, 4 * s, "fail"), op(2 * s, 5 * s, "ok"), op(5 * s, 6 * s, "fail")]
    assert longest_gap(History(ops)) == 4.0  # from the success at 1 s to the next at 5 s
    assert longest_gap(History([])) == 0.0


def test_failover_is_kill_to_first_ack_invoked_after_it() -> None:
    def op(kind: str, invoke_ns: int, complete_ns: int) -> Op:
        return Op(
            process=1, kind=kind, key="k", value="v",  # type: ignore[arg-type]
            invoke_ns=invoke_ns, complete_ns=complete_ns, outcome="ok",
        )  # fmt: skip

    ops = [op("write", 50, 150), op("write", 120, 400), op("read", 110, 130)]
    events = [Event("kill-leader", "n1", 100), Event("pause", "n2", 100)]
    assert failover_times(History(ops), events) == [300 / 1e9]
    # Time to first success, for every fault: the read does not count.
    assert [e.first_ok_s for e in events] == [300 / 1e9, 300 / 1e9]
    late = Event("kill-follower", "n3", 500)
    failover_times(History(ops), [late])
    assert late.first_ok_s is None  # nothing acknowledged after it
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0


def test_write_errors_are_fail_only_when_the_client_says_not_applied() -> None:
    """The client raises Unavailable only when no try of the write may have been applied
    (a structured outcome, node/client/attempts.py); everything else is unknown. The
    message text plays no part."""
    from node.client.errors import (
        OutcomeUnknown,
        ReplicationIncomplete,
        ServerError,
        Unavailable,
        WriteTimeout,
    )

    for said in ("no leader; not applied, safe to retry", "socket closed", ""):
        assert classify_write_error(Unavailable("x", code="UNAVAILABLE", details=said)) == "fail"
    unknowns = (
        OutcomeUnknown("x", details="not applied"),
        ReplicationIncomplete("x"),
        WriteTimeout("x"),
        ServerError("x"),
        RuntimeError("x"),
    )
    for exc in unknowns:
        assert classify_write_error(exc) == "unknown"
