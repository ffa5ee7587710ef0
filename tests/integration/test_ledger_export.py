"""The outbox exporter into a real PostgreSQL and SQLite: every lifecycle change
reaches the ledger exactly once -- across racing exporters, a database outage and a
rebuild from an empty database -- and the sweeper expires units exactly once.

The system tier here is the in-memory backend (the same state machine Raft
replicates); tests/integration/test_ledger_cluster.py drives real nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from consensus.memory import MemorySystem
from node.errors import FailedPrecondition
from node.ledger import analysis as an
from node.ledger import lifecycle as lc
from node.ledger.export import Exporter
from node.ledger.migrate import engine_for
from node.ledger.reports import run_report
from node.ledger.schema import Base
from node.ledger.service import Lifecycle
from tests.support.ledger_db import empty_postgres
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

POOL = {"compute_units": 16, "memory_mb": 4096, "bandwidth_mbps": 100, "thread_count": 16}


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield empty_postgres()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def system() -> MemorySystem:
    return MemorySystem()


@pytest.fixture
def life(system: MemorySystem, clock: Clock) -> Lifecycle:
    return Lifecycle(system, clock=clock)


def exporter(system: MemorySystem, life: Lifecycle, url: str, clock: Clock) -> Exporter:
    return Exporter(system, life, url, is_leader=lambda: True, clock=clock)


async def call(life: Lifecycle, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return (await life.run(lambda tx: fn(tx, *args, **kwargs)))[0]


async def workload(life: Lifecycle, clock: Clock) -> None:
    """A job with a worker and a tadpole that complete, and one left running."""
    await call(life, lc.set_pool, "default", POOL)
    await call(life, lc.assign_job, "j1", objective="scan", reward_signal=0.5,
               resources={"compute_units": 4}, metadata={"team": "a"})  # fmt: skip
    await call(life, lc.spawn, "worker", "w1", "j1", 60, resources={"memory_mb": 256})
    await call(life, lc.spawn, "tadpole", "t1", "j1", 60, worker_id="w1", protocol="grpc")
    await call(life, lc.record_event, "w1", "heartbeat", {"load": 0.3})
    await call(life, lc.record_tadpole_metrics, "t1", entropy=0.7, resource_pressure=0.2)
    await call(life, lc.start_job, "j1")
    clock.t += 1.5
    await call(life, lc.finish_job, "j1", "completed", efficiency=0.9)
    await call(life, lc.assign_job, "j2", resources={"compute_units": 2})


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every ledger row the lifecycle writes, surrogate ids left out."""
    columns = {
        "jobs": "job_id objective status reward_signal requested_resources metadata"
        " spawned_at started_at completed_at",
        "resource_allocations": "allocation_id job_id pool compute_units memory_mb"
        " allocated_at released_at",
        "workers": "worker_id job_id worker_type status spawned_at retired_at ttl_seconds"
        " expiry_at",
        "worker_events": "event_id worker_id event_type payload occurred_at",
        "tadpole_instances": "tadpole_id worker_id job_id communication_protocol status expiry_at",
        "tadpole_metrics": "tadpole_id recorded_at entropy resource_pressure",
        "job_metrics": "job_id recorded_at latency_ms efficiency ttl_expirations details",
    }
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            out = {}
            for name, names in columns.items():
                table = Base.metadata.tables[name]
                picked = [table.c[n] for n in names.split()]
                query = select(*picked).order_by(*picked[:2])
                out[name] = [tuple(r) for r in conn.execute(query)]
            return out
    finally:
        engine.dispose()


async def test_every_change_reaches_the_ledger(
    url: str, system: MemorySystem, life: Lifecycle, clock: Clock
) -> None:
    await workload(life, clock)
    ex = exporter(system, life, url, clock)
    try:
        await ex.round()
        assert ex.status().last_error == ""
        rows = snapshot(url)
    finally:
        await ex.close()
    jobs = {r[0]: r for r in rows["jobs"]}
    assert jobs["j1"][2] == "completed" and jobs["j2"][2] == "assigned"
    assert jobs["j1"][4] == {**dict.fromkeys(lc.RESOURCES, 0), "compute_units": 4}
    assert jobs["j1"][5] == {"team": "a"}
    completed = jobs["j1"][8]
    if url.startswith("sqlite"):  # SQLite keeps no offset: the ledger writes UTC
        assert completed.utcoffset() is None
        completed = completed.replace(tzinfo=UTC)
    assert completed.timestamp() == clock.t and completed.utcoffset() is not None
    released = {r[0]: r[6] is not None for r in rows["resource_allocations"]}
    assert released == {"j1#1": True, "worker:w1": True, "j2#1": False}
    assert sorted(r[2] for r in rows["worker_events"]) == ["heartbeat", "retired", "spawned"]
    assert rows["workers"][0][3] == "retired" and rows["tadpole_instances"][0][4] == "retired"
    assert len(rows["tadpole_metrics"]) == 1
    (metric,) = rows["job_metrics"]
    assert metric[2] == 1500.0 and metric[3] == 0.9 and metric[5]["outcome"] == "completed"


async def test_racing_exporters_apply_each_event_once(
    url: str, system: MemorySystem, life: Lifecycle, clock: Clock
) -> None:
    old, new = (exporter(system, life, url, clock) for _ in range(2))
    try:
        assert await old.export() == 0  # the old leader's exporter read the cursor (0)...
        await workload(life, clock)
        assert await new.export() == len(_events(system))  # ...then the new one moved it
        assert await old.export() == 0  # its stale claim fails; it writes nothing
        assert await asyncio.gather(old.export(), new.export()) == [0, 0]
        assert old.status().cursor == new.status().cursor  # it read where it stands
        rows = snapshot(url)
    finally:
        await old.close()
        await new.close()
    assert len(rows["job_metrics"]) == 1 and len(rows["tadpole_metrics"]) == 1


def _events(system: MemorySystem) -> list[Any]:
    return system.sm.range(lc.OUTBOX, limit=0, start_after="")[0]


async def test_an_empty_database_replays_to_the_same_rows(
    url: str, system: MemorySystem, life: Lifecycle, clock: Clock, tmp_path: Path
) -> None:
    await workload(life, clock)
    ex = exporter(system, life, url, clock)
    try:
        await ex.round()
    finally:
        await ex.close()
    before = snapshot(url)
    if url.startswith("sqlite"):  # the database is lost; a new, empty one replaces it
        Path(make_url(url).database or "").unlink()
    else:
        empty_postgres()
    rebuilt = exporter(system, life, url, clock)
    try:
        await rebuilt.round()
    finally:
        await rebuilt.close()
    assert snapshot(url) == before


async def test_the_history_compacted_past_the_cursor_falls_back_to_the_outbox(
    url: str, clock: Clock
) -> None:
    system = MemorySystem(history=4)  # far less history than the workload's events
    life = Lifecycle(system, clock=clock)
    await workload(life, clock)
    ex = exporter(system, life, url, clock)
    try:
        await ex.round()
        assert ex.status().exported == len(_events(system))
        assert len(snapshot(url)["worker_events"]) == 3
    finally:
        await ex.close()


async def test_a_database_outage_grows_the_lag_and_loses_nothing(
    system: MemorySystem, life: Lifecycle, clock: Clock
) -> None:
    target = make_url(empty_postgres())
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    url = target.set(port=proxy.port).render_as_string(hide_password=False)
    ex = exporter(system, life, url, clock)
    try:
        await call(life, lc.set_pool, "default", POOL)
        await call(life, lc.assign_job, "j0")
        await ex.round()
        assert ex.status().lag_s == 0
        proxy.cut()
        for i in range(1, 6):  # the cluster goes on acknowledging
            await call(life, lc.assign_job, f"j{i}", resources={"thread_count": 1})
            clock.t += 10
            await ex.round()
        status = ex.status()
        assert status.last_error and "OperationalError" in status.last_error
        assert status.lag_s == 50.0  # the first unexported change is 50 s old
        proxy.restore()
        await ex.round()
        assert ex.status().last_error == "" and ex.status().lag_s == 0
        rows = snapshot(url)
    finally:
        await ex.close()
        proxy.close()
    assert [r[0] for r in rows["jobs"]] == [f"j{i}" for i in range(6)]
    assert len(rows["resource_allocations"]) == 6


async def test_the_sweeper_expires_once_and_the_ledger_sees_it(
    url: str, system: MemorySystem, life: Lifecycle, clock: Clock
) -> None:
    await call(life, lc.set_pool, "default", POOL)
    await call(life, lc.assign_job, "j1")
    await call(life, lc.spawn, "worker", "w1", "j1", 30, resources={"compute_units": 8})
    await call(life, lc.spawn, "worker", "w2", "j1", 300)
    first, second = (exporter(system, life, url, clock) for _ in range(2))
    try:
        assert await first.sweep() == 0
        clock.t += 31
        assert sorted(await asyncio.gather(first.sweep(), second.sweep())) == [0, 1]
        await first.round()
        rows = snapshot(url)
    finally:
        await first.close()
        await second.close()
    workers = {r[0]: r[3] for r in rows["workers"]}
    assert workers == {"w1": "expired", "w2": "active"}
    released = [r for r in rows["resource_allocations"] if r[6] is not None]
    assert [r[0] for r in released] == ["worker:w1"]
    pool = lc.pool_key("default")
    kv = system.sm.get(pool)
    assert kv is not None and b'"compute_units":0' in kv.value


async def test_analysis_work_reaches_the_ledger_and_the_findings_report_ranks_it(
    url: str, system: MemorySystem, life: Lifecycle, clock: Clock
) -> None:
    await workload(life, clock)  # j1 (completed, with worker w1) and j2
    digest = "sha256:" + "cd" * 32
    await call(life, an.register_code, digest, worker_type="quest_worker")
    await call(life, an.submit_code_report, "cr1", digest, "cache the pond map", worker_id="w1")
    await call(life, an.review_code_report, "cr1", "rejected", "ada")
    await call(life, an.request_analysis, "r1", "monetization_scan", "where is the money?")
    await call(life, an.start_analysis, "r1", "run-1", job_id="j2", worker_id="w1")
    findings = [
        {"finding_id": "f-low", "title": "Sell pond water", "monetization_score": 0.2,
         "novelty_score": 0.9},
        {"finding_id": "f-high", "title": "Map subscriptions", "monetization_score": 0.8,
         "novelty_score": 0.3, "artifacts": [{"artifact_id": "a1", "uri": "s3://b/m.ipynb",
                                              "kind": "notebook"}]},
        {"finding_id": "f-tie", "title": "Guided tours", "monetization_score": 0.8,
         "novelty_score": 0.6},
    ]  # fmt: skip
    await call(life, an.complete_analysis, "r1", outcome_summary="three leads", findings=findings)
    await call(life, an.propose_improvement, "ir1", "price the maps", request_id="r1",
               job_id="j2", bundle={"price": 5})  # fmt: skip
    await call(life, an.decide_improvement, "ir1", "approved", "ada")
    await call(life, an.record_learning_snapshot, "s1", "worker", "w1", "v2", {"care": 0.7},
               overall_score=0.7)  # fmt: skip
    ex = exporter(system, life, url, clock)
    try:
        await ex.round()
        assert ex.status().last_error == ""
        engine = await ex.engine()
        report = run_report(engine, "findings", capacities={})
    finally:
        await ex.close()
    assert [r[0] for r in report["rows"]] == ["f-tie", "f-high", "f-low"]
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            t = Base.metadata.tables
            request = conn.execute(select(t["analysis_requests"].c.status)).all()
            run = conn.execute(
                select(t["analysis_runs"].c.status, t["analysis_runs"].c.job_id)
            ).all()
            artifact = conn.execute(select(t["finding_artifacts"].c.finding_id)).all()
            review = conn.execute(select(t["code_update_reports"].c.status)).all()
            improvement = conn.execute(select(t["improvement_reports"].c.status)).all()
            snapshot = conn.execute(
                select(
                    t["learning_snapshots"].c.subject_id, t["learning_snapshots"].c.overall_score
                )
            ).all()
    finally:
        engine.dispose()
    assert request == [("completed",)] and run == [("completed", "j2")]
    assert artifact == [("f-high",)] and review == [("rejected",)]
    assert improvement == [("approved",)] and snapshot == [("w1", 0.7)]


async def test_pruning_never_stalls_the_export(
    url: str, system: MemorySystem, life: Lifecycle, clock: Clock
) -> None:
    await call(life, lc.set_pool, "default", POOL)
    await asyncio.gather(*(call(life, lc.assign_job, f"j{i}") for i in range(600)))
    ex = Exporter(system, life, url, is_leader=lambda: True, clock=clock, retain_s=10)
    try:
        await ex.round()
        clock.t += 60
        # Whole pages of deletes after the cursor: the export must look past them.
        assert await ex.prune(force=True) > 0
        await ex.prune(force=True)
        await call(life, lc.assign_job, "after-prune")
        await ex.round()
        assert ex.status().last_error == "" and ex.status().lag_s == 0
        jobs = [r[0] for r in snapshot(url)["jobs"]]
    finally:
        await ex.close()
    assert len(jobs) == 601 and "after-prune" in jobs
    assert _events(system) == [k for k in _events(system) if b"after-prune" in k.value]


async def test_the_outbox_scan_exports_whole_revisions_in_their_order(url: str) -> None:
    system = MemorySystem(history=20)  # the history is gone; the outbox scan must do
    clock = Clock()
    life = Lifecycle(system, clock=clock)
    await call(life, lc.set_pool, "default", POOL)
    await call(life, lc.assign_job, "first")
    ex = Exporter(system, life, url, is_leader=lambda: True, clock=clock)
    try:
        await ex.round()
        # 600 assignments in batches of up to 64 per revision, then pairs of start and
        # finish of one job in one batch: their order within a revision matters.
        await asyncio.gather(*(call(life, lc.assign_job, f"j{i}") for i in range(600)))
        await asyncio.gather(
            *(
                step
                for i in range(20)
                for step in (
                    call(life, lc.start_job, f"j{i}"),
                    call(life, lc.finish_job, f"j{i}", "completed"),
                )
            )
        )
        await ex.round()
        rows = snapshot(url)["jobs"]
    finally:
        await ex.close()
    assert len(rows) == 601  # none lost at a page boundary inside a revision
    status = {r[0]: r[2] for r in rows}
    assert all(status[f"j{i}"] == "completed" for i in range(20))


async def test_a_request_failed_before_its_run_is_exported(
    url: str, system: MemorySystem, life: Lifecycle, clock: Clock
) -> None:
    await call(life, an.request_analysis, "r1", "forecast", "rain?")
    await call(life, an.complete_analysis, "r1", outcome="failed", outcome_summary="no data")
    with pytest.raises(FailedPrecondition, match="it has no run to hold findings"):
        await call(life, an.request_analysis, "r2", "forecast", "sun?")
        await call(life, an.complete_analysis, "r2", outcome="failed",
                   findings=[{"finding_id": "f", "title": "t"}])  # fmt: skip
    ex = exporter(system, life, url, clock)
    try:
        await ex.round()
        assert ex.status().last_error == ""
        engine = await ex.engine()
        with engine.connect() as conn:
            t = Base.metadata.tables
            requests = conn.execute(select(t["analysis_requests"].c.request_id,
                                           t["analysis_requests"].c.status)).all()  # fmt: skip
            runs = conn.execute(select(t["analysis_runs"].c.run_id)).all()
    finally:
        await ex.close()
    assert sorted(requests) == [("r1", "failed"), ("r2", "queued")] and runs == []
