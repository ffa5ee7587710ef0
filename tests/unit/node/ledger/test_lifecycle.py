"""The lifecycle operations and their driver, on the in-memory system tier (the same
state machine Raft replicates): pools never go negative, transitions are checked,
every change carries its outbox event, and a resent call applies once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from consensus.memory import MemorySystem
from consensus.statemachine import PutOp, Txn
from node.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from node.ledger import lifecycle as lc
from node.ledger.service import Lifecycle, decode


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def system() -> MemorySystem:
    return MemorySystem()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def life(system: MemorySystem, clock: Clock) -> Lifecycle:
    return Lifecycle(system, clock=clock)


async def run(
    life: Lifecycle, fn: Any, *args: Any, request_id: str = "", once: bool = False, **kwargs: Any
) -> Any:
    answer, _rev = await life.run(
        lambda tx: fn(tx, *args, **kwargs), request_id=request_id, once=once
    )
    return answer


def record(system: MemorySystem, key: str) -> Any:
    kv = system.sm.get(key)
    return None if kv is None else decode(kv.value)


def outbox(system: MemorySystem) -> list[dict[str, Any]]:
    kvs, _more, _count = system.sm.range(lc.OUTBOX, limit=0, start_after="")
    return [decode(kv.value) for kv in sorted(kvs, key=lambda kv: kv.mod_revision)]


def rows(system: MemorySystem, table: str) -> list[dict[str, Any]]:
    return [r["row"] for e in outbox(system) for r in e["rows"] if r["table"] == table]


POOL = {"compute_units": 10, "memory_mb": 1024, "bandwidth_mbps": 100, "thread_count": 8}


async def test_assign_takes_units_and_completion_gives_them_back(
    life: Lifecycle, system: MemorySystem, clock: Clock
) -> None:
    await run(life, lc.set_pool, "default", POOL)
    job = await run(life, lc.assign_job, "j1", objective="map", resources={"compute_units": 4})
    assert job["status"] == "assigned"
    assert record(system, lc.pool_key("default"))["in_use"]["compute_units"] == 4
    await run(life, lc.spawn, "worker", "w1", "j1", 60, resources={"memory_mb": 512})
    assert record(system, lc.pool_key("default"))["in_use"]["memory_mb"] == 512
    await run(life, lc.start_job, "j1")
    clock.t += 2.5
    done = await run(life, lc.finish_job, "j1", "completed", efficiency=0.75)
    assert done["status"] == "completed"
    pool = record(system, lc.pool_key("default"))
    assert pool["in_use"] == dict.fromkeys(lc.RESOURCES, 0)
    assert record(system, lc.unit_key("worker", "w1"))["status"] == "retired"
    allocations = rows(system, "resource_allocations")
    assert [a["released_at"] is None for a in allocations] == [True, True, False, False]
    metric = rows(system, "job_metrics")[0]
    assert metric["latency_ms"] == 2500.0 and metric["efficiency"] == 0.75
    # No open allocation and no expiry entry is left behind.
    assert system.sm.range(lc.PREFIX + "allocations/", limit=0, start_after="")[0] == []
    assert system.sm.range(lc.EXPIRY, limit=0, start_after="")[0] == []


async def test_a_pool_never_goes_negative_under_concurrent_assignments(
    system: MemorySystem, clock: Clock
) -> None:
    # Three drivers (three nodes) race for a pool with room for 5 jobs of 2 units; every
    # read and commit yields, so their reads and commits interleave.
    for name in ("get", "txn"):
        real = getattr(system, name)

        async def yielding(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return await _real(*args, **kwargs)

        setattr(system, name, yielding)
    lives = [Lifecycle(system, clock=clock) for _ in range(3)]
    await lives[0].run(lambda tx: lc.set_pool(tx, "p", {"compute_units": 10}))

    async def assign(i: int) -> str:
        try:
            await lives[i % 3].run(
                lambda tx: lc.assign_job(tx, f"j{i}", resources={"compute_units": 2}, pool="p")
            )
            return "ok"
        except FailedPrecondition as exc:
            assert "pool 'p' has 0 compute_units free of 10; 2 asked" in str(exc)
            return "full"

    answers = await asyncio.gather(*(assign(i) for i in range(12)))
    assert answers.count("ok") == 5
    assert sum(life.conflicts for life in lives) > 0  # they did race
    assert record(system, lc.pool_key("p"))["in_use"]["compute_units"] == 10
    open_allocations = system.sm.range(lc.PREFIX + "allocations/", limit=0, start_after="")[0]
    assert sum(decode(kv.value)["compute_units"] for kv in open_allocations) == 10


async def test_conflicting_change_between_read_and_commit_is_redone(
    life: Lifecycle, system: MemorySystem
) -> None:
    await run(life, lc.set_pool, "p", {"compute_units": 4})
    original = system.txn

    async def racing_txn(txn: Txn, timeout: float) -> Any:
        # Just before the assignment commits, another change fills the pool.
        if txn.compares and not racing_txn.done:  # type: ignore[attr-defined]
            racing_txn.done = True  # type: ignore[attr-defined]
            pool = record(system, lc.pool_key("p"))
            pool["in_use"]["compute_units"] = 4
            await original(Txn(success=(PutOp(lc.pool_key("p"), json.dumps(pool).encode()),)), 1)
        return await original(txn, timeout)

    racing_txn.done = False  # type: ignore[attr-defined]
    system.txn = racing_txn  # type: ignore[method-assign]
    with pytest.raises(FailedPrecondition, match="0 compute_units free"):
        await run(life, lc.assign_job, "j1", resources={"compute_units": 1}, pool="p")
    assert life.conflicts == 1
    assert record(system, lc.job_key("j1")) is None
    assert outbox(system) == []


async def test_a_resent_call_applies_once(life: Lifecycle, system: MemorySystem) -> None:
    await run(life, lc.set_pool, "default", POOL)
    await run(life, lc.assign_job, "j1")
    await run(life, lc.spawn, "worker", "w1", "j1", 60)
    for _ in range(2):  # the client lost the first answer and resends
        await run(life, lc.record_event, "w1", "heartbeat", {"n": 1}, request_id="r-1", once=True)
    assert [e["event_type"] for e in rows(system, "worker_events")] == ["spawned", "heartbeat"]
    # ... also when the resend travels in the same batch as the first.
    await asyncio.gather(
        *(
            run(life, lc.record_event, "w1", "tick", None, request_id="r-2", once=True)
            for _ in range(3)
        )
    )
    assert [e["event_type"] for e in rows(system, "worker_events")].count("tick") == 1


async def test_concurrent_calls_share_one_transaction_and_fail_alone(
    life: Lifecycle, system: MemorySystem
) -> None:
    await run(life, lc.set_pool, "default", {**POOL, "compute_units": 5})
    before = life.batches

    async def assign(i: int) -> Any:
        try:
            return await run(life, lc.assign_job, f"j{i}", resources={"compute_units": 1})
        except FailedPrecondition as exc:
            return exc

    answers = await asyncio.gather(*(assign(i) for i in range(8)))
    # All eight queued before the driver ran: one transaction.
    assert life.batches - before == 1
    # Each saw the ones planned before it: five fit, three are refused by name.
    assert [isinstance(a, dict) for a in answers] == [True] * 5 + [False] * 3
    assert "0 compute_units free of 5; 1 asked" in str(answers[5])
    assert record(system, lc.pool_key("default"))["in_use"]["compute_units"] == 5
    assert len(rows(system, "jobs")) == 5  # one outbox event per applied call


async def test_transitions_are_checked_and_name_the_current_state(life: Lifecycle) -> None:
    await run(life, lc.set_pool, "default", POOL)
    await run(life, lc.assign_job, "j1")
    await run(life, lc.finish_job, "j1", "failed")
    with pytest.raises(FailedPrecondition, match="job 'j1' is failed; it can't become running"):
        await run(life, lc.start_job, "j1")
    with pytest.raises(FailedPrecondition, match="is failed; it can't be assigned again"):
        await run(life, lc.assign_job, "j1")
    # The same transition again is a resend: the job as it is, nothing new.
    again = await run(life, lc.finish_job, "j1", "failed")
    assert again["status"] == "failed"
    with pytest.raises(NotFound, match="no job 'nope'"):
        await run(life, lc.start_job, "nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resources": {"compute_units": -1}}, "resources.compute_units must be between 0"),
        ({"resources": {"gpus": 1}}, "unknown resource 'gpus'"),
        ({"resources": {"memory_mb": 1.5}}, "memory_mb must be a whole number"),
        ({"resources": [1]}, "resources must be an object"),
        ({"reward_signal": float("nan")}, "reward_signal must be a finite number"),
        ({"metadata": {"x": "y" * 20_000}}, "metadata is 20008 bytes of JSON; at most 16384"),
        ({"metadata": "text"}, "metadata must be a JSON object"),
        ({"pool": "a/b"}, "pool must be 1-64 characters"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    life: Lifecycle, system: MemorySystem, kwargs: dict[str, Any], message: str
) -> None:
    await run(life, lc.set_pool, "default", POOL)
    before = system.sm.revision
    with pytest.raises(InvalidArgument, match=message):
        await run(life, lc.assign_job, "j1", **kwargs)
    assert system.sm.revision == before


async def test_a_pool_cannot_shrink_below_what_is_in_use(life: Lifecycle) -> None:
    await run(life, lc.set_pool, "default", POOL)
    await run(life, lc.assign_job, "j1", resources={"thread_count": 6})
    with pytest.raises(
        FailedPrecondition, match="has 6 thread_count in use; its capacity can't be 4"
    ):
        await run(life, lc.set_pool, "default", {**POOL, "thread_count": 4})


async def test_reassigning_changes_the_allocation_in_one_step(
    life: Lifecycle, system: MemorySystem
) -> None:
    await run(life, lc.set_pool, "default", POOL)
    await run(life, lc.assign_job, "j1", resources={"compute_units": 6})
    # 6 of 10 are taken by j1 itself: asking 9 must count its own 6 as coming back.
    await run(life, lc.assign_job, "j1", resources={"compute_units": 9})
    assert record(system, lc.pool_key("default"))["in_use"]["compute_units"] == 9
    before = system.sm.revision
    await run(life, lc.assign_job, "j1", resources={"compute_units": 9})  # identical: no change
    assert system.sm.revision == before


async def test_spawning_again_is_idempotent_but_not_with_other_arguments(life: Lifecycle) -> None:
    await run(life, lc.set_pool, "default", POOL)
    await run(life, lc.assign_job, "j1")
    first = await run(life, lc.spawn, "tadpole", "t1", "j1", 30, protocol="grpc")
    assert await run(life, lc.spawn, "tadpole", "t1", "j1", 30, protocol="grpc") == first
    with pytest.raises(AlreadyExists, match="tadpole 't1' exists"):
        await run(life, lc.spawn, "tadpole", "t1", "j1", 31, protocol="grpc")


async def test_expiry_releases_once_and_counts_toward_the_job(
    life: Lifecycle, system: MemorySystem, clock: Clock
) -> None:
    await run(life, lc.set_pool, "default", POOL)
    await run(life, lc.assign_job, "j1")
    await run(life, lc.spawn, "worker", "w1", "j1", 10, resources={"compute_units": 3})
    key = lc.expiry_key(clock.t + 10, "worker", "w1")
    assert record(system, key) is not None
    clock.t += 5
    # Not due yet: the sweeper's step leaves it alone.
    await run(life, lc.sweep_one, key, clock.t)
    assert record(system, lc.unit_key("worker", "w1"))["status"] == "active"
    clock.t += 6
    for _ in range(2):  # two sweepers (an old leader and a new one) both try
        await run(life, lc.sweep_one, key, clock.t)
    assert record(system, key) is None
    assert record(system, lc.pool_key("default"))["in_use"]["compute_units"] == 0
    assert record(system, lc.job_key("j1"))["ttl_expirations"] == 1
    released = [a for a in rows(system, "resource_allocations") if a["released_at"] is not None]
    assert len(released) == 1
    with pytest.raises(FailedPrecondition, match="worker 'w1' is expired; it can't become retired"):
        await run(life, lc.retire, "worker", "w1", "retired")


async def test_a_call_that_breaks_fails_alone(life: Lifecycle, system: MemorySystem) -> None:
    await run(life, lc.set_pool, "default", POOL)

    def broken(tx: lc.Tx) -> Any:
        tx.get(lc.pool_key("default"))
        raise RuntimeError("a bug in one operation")

    results = await asyncio.gather(
        life.run(broken),
        life.run(lambda tx: lc.assign_job(tx, "j1", resources={"compute_units": 1})),
        return_exceptions=True,
    )
    assert isinstance(results[0], RuntimeError)
    assert not isinstance(results[1], BaseException) and results[1][0]["status"] == "assigned"
    assert record(system, lc.job_key("j1")) is not None


async def test_reassigning_without_resources_keeps_them(
    life: Lifecycle, system: MemorySystem
) -> None:
    await run(life, lc.set_pool, "default", POOL)
    await run(life, lc.set_pool, "other", POOL)
    await run(life, lc.assign_job, "j1", resources={"compute_units": 3}, pool="other")
    job = await run(life, lc.assign_job, "j1", objective="now with an objective")
    assert job["requested_resources"]["compute_units"] == 3 and job["pool"] == "other"
    assert record(system, lc.pool_key("other"))["in_use"]["compute_units"] == 3


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "message"),
    [
        (lc.assign_job, ("j1",), {"reward_signal": 10**400}, "reward_signal must be a finite"),
        (lc.assign_job, ("j" * 121,), {}, "job_id must be 1-120 characters"),
        (lc.assign_job, ("j1",), {"pool": "p" * 65}, "pool must be 1-64 characters"),
        (lc.assign_job, ("j1",), {"objective": "a\x00b"}, "must not contain NUL"),
        (lc.assign_job, ("j1",), {"metadata": {"x": float("nan")}}, "without NaN or infinities"),
        (lc.assign_job, ("j1",), {"resources": {"memory_mb": 2**31}}, "between 0 and 2147483647"),
        (lc.record_attribute, (["job"], "j1", "k", 1), {}, "entity_type must be job, worker"),
    ],
)
async def test_input_the_ledger_columns_cant_hold_is_refused(
    life: Lifecycle, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    await run(life, lc.set_pool, "default", POOL)
    with pytest.raises(InvalidArgument, match=message):
        await run(life, fn, *args, **kwargs)


async def test_details_cannot_rewrite_a_jobs_outcome(life: Lifecycle, system: MemorySystem) -> None:
    await run(life, lc.set_pool, "default", POOL)
    await run(life, lc.assign_job, "j1")
    await run(life, lc.finish_job, "j1", "failed", details={"outcome": "completed", "why": "x"})
    assert rows(system, "job_metrics")[0]["details"] == {"outcome": "failed", "why": "x"}
