"""Stalls of the Raft tick thread: measured from when a tick was due, reported when
they reach the election timeout (consensus/raft/stalls.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from consensus.raft.stalls import Stall, TickStalls
from tests.support.raft_pair import RaftPair, wait_for


def counts(stalls: TickStalls) -> dict[float, int]:
    buckets, _ = stalls.seconds.snapshot()
    return dict(buckets)


def test_a_tick_on_time_is_no_stall_but_is_measured() -> None:
    stalls = TickStalls(0.15)
    assert stalls.tick(due=10.0, started=10.0002, ended=10.0012) is None
    assert stalls.tick(due=None, started=11.0, ended=11.004) is None  # woken, no timer
    assert stalls.stalls == 0
    assert counts(stalls)[0.001] == 0 and counts(stalls)[0.0025] == 1
    assert counts(stalls)[0.005] == 2


def test_a_late_start_and_a_long_tick_both_count() -> None:
    stalls = TickStalls(0.15, quiet_s=0)
    # Woken 200 ms after its heartbeat was due (the GIL held by a collection).
    assert stalls.tick(due=1.0, started=1.2, ended=1.201) == Stall(
        pytest.approx(0.201), pytest.approx(0.2), 0
    )
    # Woken early by a message, then 300 ms in the tick itself (a slow fsync).
    assert stalls.tick(due=5.0, started=2.0, ended=2.3) == Stall(pytest.approx(0.3), 0.0, 0)
    # Late by 100 ms and 60 ms of work: 160 ms in all, past 150.
    report = stalls.tick(due=3.0, started=3.1, ended=3.16)
    assert report is not None and report.seconds == pytest.approx(0.16)
    assert stalls.stalls == 3


def test_reports_are_spaced_and_name_the_stalls_left_unreported() -> None:
    stalls = TickStalls(0.15, quiet_s=10.0)
    assert stalls.tick(due=0.0, started=0.2, ended=0.2) is not None
    assert stalls.tick(due=1.0, started=1.3, ended=1.3) is None  # counted, not reported
    assert stalls.tick(due=2.0, started=2.0, ended=2.001) is None  # no stall at all
    assert stalls.tick(due=5.0, started=5.2, ended=5.2) is None
    report = stalls.tick(due=11.0, started=11.4, ended=11.4)
    assert report is not None and report.unreported == 2
    assert stalls.stalls == 4
    again = stalls.tick(due=30.0, started=30.5, ended=30.5)
    assert again is not None and again.unreported == 0


def test_the_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TickStalls(0)
    with pytest.raises(ValueError):
        TickStalls(0.15, quiet_s=-1)


def test_a_leader_whose_tick_thread_is_held_reports_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real backend: 300 ms in one tick (as a long collection or fsync would take) is
    counted, measured, and logged with the leader's role."""
    caplog.set_level(logging.WARNING, logger="consensus.raft.backend")
    with RaftPair(tmp_path) as pair:
        leader = pair.leader()
        leader.tick_stalls.quiet_s = 0  # every report logged, whatever a busy host did
        before = leader.tick_stalls.stalls
        buckets, _ = leader.tick_stalls.seconds.snapshot()
        over_250ms = buckets[-1][1] - dict(buckets)[0.25]
        leader.call_in_tick(lambda: time.sleep(0.3))
        wait_for(lambda: leader.tick_stalls.stalls > before)
        buckets, _ = leader.tick_stalls.seconds.snapshot()
        assert buckets[-1][1] - dict(buckets)[0.25] > over_250ms
        wanted = f"node {leader.node_id} (leader): the raft tick thread stalled"

        def reported() -> list[str]:
            return [r.getMessage() for r in caplog.records if wanted in r.getMessage()]

        wait_for(lambda: bool(reported()))
        assert "its followers may elect another leader" in reported()[-1]
        assert "past the 150 ms election timeout" in reported()[-1]
