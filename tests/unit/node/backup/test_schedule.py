"""When the leader runs a scheduled backup, and what kind (pure decisions), plus the
scheduler's claim/record protocol against an in-memory system tier."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
from typing import Any

import pytest

from consensus.memory import MemorySystem
from node.backup import archive, seal
from node.backup.layout import SCHEDULE_KEY
from node.backup.schedule import BackupScheduler, Policy, ScheduleState, decide
from node.config import ConfigError, NodeConfig

S = 10**9
POLICY = Policy(interval_s=3600, full_interval_s=86400, retry_s=300, claim_ttl_s=1800)
T = 1_800_000_000 * S


def test_nothing_ever_run_starts_with_a_full_backup() -> None:
    assert decide(ScheduleState(), T, POLICY) == "full"


def test_incrementals_hourly_and_a_full_daily() -> None:
    done = ScheduleState(last_success_ns=T, last_full_ns=T)
    assert decide(done, T + 3599 * S, POLICY) == ""
    assert decide(done, T + 3600 * S, POLICY) == "incremental"
    assert decide(done, T + 86400 * S, POLICY) == "full"


def test_a_failure_is_retried_after_the_retry_pause_not_at_once() -> None:
    failed = ScheduleState(last_success_ns=T, last_full_ns=T, last_attempt_ns=T + 3600 * S,
                           last_error="disk full")  # fmt: skip
    assert decide(failed, T + 3700 * S, POLICY) == ""
    assert decide(failed, T + 3900 * S, POLICY) == "incremental"


def test_a_claim_holds_until_it_expires_or_its_term_ends() -> None:
    claimed = ScheduleState(running_by="n2", claimed_ns=T, claimed_term=4)
    assert decide(claimed, T + 1799 * S, POLICY, term=4) == ""
    assert decide(claimed, T + 1800 * S, POLICY, term=4) == "full"  # n2 hung mid-backup
    assert decide(claimed, T + 1 * S, POLICY, term=5) == "full"  # a new leader takes over
    # its own claim whose outcome was never written (a timeout): not held against itself
    assert decide(claimed, T + 1 * S, POLICY, term=4, me="n2") == "full"
    assert decide(claimed, T + 1 * S, POLICY, term=4, me="n1") == ""


def test_the_state_round_trips_and_garbage_is_a_fresh_start() -> None:
    state = ScheduleState(1, 2, "id", 3, "err", "n1", 4, 5)
    assert ScheduleState.decode(state.encode()) == state
    for junk in (None, b"", b"{", b"[]", b'{"last_success_ns": "x"}'):
        assert ScheduleState.decode(junk) == ScheduleState()


class FakeClock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> int:
        return self.now


def test_the_leader_claims_runs_and_records(tmp_path: pathlib.Path) -> None:
    _, public = seal.generate_identity()
    system = MemorySystem("n1")
    clock = FakeClock()
    runs: list[bool] = []

    async def scenario() -> list[Any]:
        scheduler = BackupScheduler("n1", system, "unused:1", "token", str(tmp_path / "repo"),
                                    [public], POLICY, clock=clock)  # fmt: skip

        async def fake_run(*, full: bool) -> str:
            # while it runs, the claim is in the system tier
            kv, _ = await system.get(SCHEDULE_KEY, linearizable=True, timeout=1)
            assert kv is not None and ScheduleState.decode(kv.value).running_by == "n1"
            runs.append(full)
            if len(runs) == 3:
                raise archive.BackupError("repository unreachable")
            return f"backup-{len(runs)}"

        scheduler._run = fake_run  # type: ignore[method-assign]
        kinds = [await scheduler.round()]
        clock.now += 10 * S
        kinds.append(await scheduler.round())  # not due yet
        clock.now += 3600 * S
        kinds.append(await scheduler.round())
        clock.now += 3600 * S
        kinds.append(await scheduler.round())  # fails
        clock.now += 60 * S
        kinds.append(await scheduler.round())  # retry pause
        kv, _ = await system.get(SCHEDULE_KEY, linearizable=True, timeout=1)
        return [kinds, ScheduleState.decode(kv.value if kv else None), scheduler.runs]

    kinds, state, counts = asyncio.run(scenario())
    assert kinds == ["full", "", "incremental", "incremental", ""]
    assert runs == [True, False, False]
    assert state.last_id == "backup-2" and state.running_by == ""
    assert state.last_error == "repository unreachable"
    assert state.last_success_ns == T + 3610 * S and state.last_full_ns == T
    assert counts == {"ok": 2, "failed": 1}


def test_a_follower_only_reads(tmp_path: pathlib.Path) -> None:
    class Follower(MemorySystem):
        def info(self) -> Any:
            return dataclasses.replace(super().info(), role="follower")

    system = Follower("n2")
    scheduler = BackupScheduler("n2", system, "unused:1", "t", str(tmp_path), ["age1x"], POLICY)

    async def scenario() -> str:
        return await scheduler.round()

    assert asyncio.run(scenario()) == ""
    assert not (tmp_path / "tadpole-backup.json").exists()


def test_config_refuses_a_repository_without_recipients() -> None:
    with pytest.raises(ConfigError, match="backup_recipients is empty"):
        NodeConfig(backup_repo="/srv/backups")
    with pytest.raises(ConfigError, match="a private key") as info:
        NodeConfig(backup_repo="/srv/backups", backup_recipients="AGE-SECRET-KEY-1XYZ")
    assert "1XYZ" not in str(info.value)
    with pytest.raises(ConfigError, match="not an age"):
        NodeConfig(backup_repo="/srv/backups", backup_recipients="bob@example.com")
    with pytest.raises(ConfigError, match="must be positive"):
        NodeConfig(backup_interval_s=0)
    assert NodeConfig(backup_repo="/r", backup_recipients="age1a, age1b").backup_recipient_list == [
        "age1a",
        "age1b",
    ]
