"""The lifecycle API and the ledger on real node processes: gRPC and HTTP, a real
PostgreSQL (``ledger_url``) and the embedded SQLite default, TTL expiry, bad input,
and kill -9 of the leader during a burst of assignments."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from node.client import Client, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from node.dev.cluster import LocalCluster
from node.ledger.migrate import engine_for, status
from node.ledger.schema import Job, JobMetric, ResourceAllocation, Worker
from tests.integration.conftest import start_http_cluster
from tests.support.ledger_db import empty_postgres
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

POOL = {"compute_units": 64, "memory_mb": 65536, "bandwidth_mbps": 1000, "thread_count": 256}


def wait_for(check: Any, timeout: float = 20.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} did not hold within {timeout} s")


@pytest.fixture(scope="module")
def pg_url() -> str:
    return empty_postgres()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[LocalCluster]:
    cluster = start_http_cluster(
        str(tmp_path_factory.mktemp("ledger")), ["--set", f"ledger_url={pg_url}"]
    )
    try:
        yield cluster
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with cluster.client(timeout=20.0) as c:
        yield c


def http(cluster: LocalCluster, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    node = cluster.wait_leader(10)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(cluster.http_url(node, path), data=data, method=method.upper())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(
            request, context=cluster.http_context(), timeout=20
        ) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def rows(url: str, query: Any) -> list[Any]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query))
    finally:
        engine.dispose()


def test_the_walkthrough_over_http_and_grpc_reaches_postgres(
    cluster: LocalCluster, client: Client, pg_url: str
) -> None:
    status, pool = http(cluster, "put", "/api/v1/ledger/pools/walk", {"capacity": POOL})
    assert status == 200 and pool["in_use"]["compute_units"] == 0
    status, job = http(cluster, "post", "/assign_job", {"job_id": "walk-1", "pool": "walk",
                       "objective": "survey", "resources": {"compute_units": 8}})  # fmt: skip
    assert status == 200 and job["status"] == "assigned"
    spawn = {"job_id": "walk-1", "ttl_seconds": 1, "resources": {"memory_mb": 512}}
    status, worker = http(cluster, "put", "/api/v1/ledger/workers/walk-w1", spawn)
    assert status == 200 and worker["status"] == "active"
    # The sweeper on the leader expires it and gives its memory back.
    wait_for(
        lambda: client.ledger("GetJob", {"job_id": "walk-1"})["ttl_expirations"] == 1,
        what="the worker's TTL expiry",
    )
    pools = {p["name"]: p for p in client.ledger("Pools")["pools"]}
    assert pools["walk"]["in_use"]["memory_mb"] == 0
    assert pools["walk"]["in_use"]["compute_units"] == 8
    # The ledger in PostgreSQL follows.
    wait_for(
        lambda: (
            rows(pg_url, select(Worker.status).where(Worker.worker_id == "walk-w1"))
            == [("expired",)]
        ),
        what="the expiry in the ledger",
    )
    released = rows(
        pg_url,
        select(ResourceAllocation.allocation_id).where(ResourceAllocation.released_at.is_not(None)),
    )
    assert ("worker:walk-w1",) in released
    client.ledger("FinishJob", {"job_id": "walk-1", "outcome": "completed", "efficiency": 0.5})
    wait_for(
        lambda: (
            rows(pg_url, select(JobMetric.efficiency).where(JobMetric.job_id == "walk-1"))
            == [(0.5,)]
        ),
        what="the job's metrics in the ledger",
    )
    report = client.ledger("Report", {"name": "capacity"})
    walk = [r for r in report["rows"] if r[0] == "walk" and r[1] == "compute_units"]
    assert walk and walk[0][3] == 0 and walk[0][4] == 8  # none in use now; 8 at the peak
    status, export = http(cluster, "get", "/api/v1/ledger/export")
    assert (
        status == 200
        and "***" in export["database"]
        and "tadpole:tadpole@" not in export["database"]
    )


def test_bad_input_and_backwards_transitions_change_nothing(
    cluster: LocalCluster, client: Client
) -> None:
    client.ledger("SetPool", {"name": "strict", "capacity": {"compute_units": 4}})
    client.ledger("AssignJob", {"job_id": "strict-1", "pool": "strict"})
    before = client.ledger("Pools")
    job2, strict = "/api/v1/ledger/jobs/strict-2", {"pool": "strict"}
    cases = [
        ("put", job2, {**strict, "resources": {"gpus": 1}}, 400, "unknown resource 'gpus'"),
        ("put", job2, {**strict, "resources": {"compute_units": -3}}, 400, "between 0"),
        ("put", job2, {"job_id": "other"}, 400, "is not the path's"),
        ("put", job2, {**strict, "color": "red"}, 400, "unknown argument 'color'"),
        (
            "put",
            job2,
            {**strict, "resources": {"compute_units": 5}},
            409,
            "compute_units free of 4; 5 asked",
        ),
        ("put", "/api/v1/ledger/workers/w-x", {"job_id": "no", "ttl_seconds": 5}, 404, "no job"),
        ("post", "/api/v1/ledger/jobs/strict-1/fail", None, 200, ""),
        ("post", "/api/v1/ledger/jobs/strict-1/start", None, 409, "job 'strict-1' is failed"),
    ]
    for method, path, body, code, message in cases:
        status, answer = http(cluster, method, path, body)
        assert status == code, (path, body, answer)
        if message:
            assert message in answer["detail"], answer
    with pytest.raises(InvalidArgument, match="ttl_seconds must be a whole number"):
        client.ledger(
            "Spawn", {"kind": "worker", "id": "w-y", "job_id": "strict-1", "ttl_seconds": 0}
        )
    with pytest.raises(FailedPrecondition, match="is failed; nothing can be spawned"):
        client.ledger(
            "Spawn", {"kind": "worker", "id": "w-y", "job_id": "strict-1", "ttl_seconds": 9}
        )
    after = client.ledger("Pools")
    strict = [p for p in after["pools"] if p["name"] == "strict"]
    assert strict == [p for p in before["pools"] if p["name"] == "strict"]
    with pytest.raises(NotFound, match="no job 'strict-2'"):
        client.ledger("GetJob", {"job_id": "strict-2"})


def test_kill_9_of_the_leader_during_a_burst_of_assignments(
    cluster: LocalCluster, client: Client, pg_url: str
) -> None:
    client.ledger("SetPool", {"name": "burst", "capacity": POOL})
    acknowledged: list[str] = []
    one = {"thread_count": 1}
    acked_at: list[float] = []
    failed: list[str] = []

    def assign(i: int) -> None:
        job_id = f"burst-{i}"
        try:
            client.ledger("AssignJob", {"job_id": job_id, "pool": "burst", "resources": one})
            acknowledged.append(job_id)
            acked_at.append(time.monotonic())
        except Exception:
            failed.append(job_id)

    leader = cluster.wait_leader(10)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(assign, i) for i in range(120)]
        wait_for(lambda: len(acknowledged) >= 10, what="the burst under way")
        killed_at = time.monotonic()
        cluster.kill(leader)
        for f in futures:
            f.result()
    cluster.start_node(leader)
    cluster.wait_leader(30, all_up=True)
    assert len(acknowledged) >= 60, (len(acknowledged), len(failed))
    assert min(acked_at) < killed_at < max(acked_at)  # the kill fell inside the burst
    # The pool balances: its units in use are exactly the open allocations' ...
    burst = next(p for p in client.ledger("Pools")["pools"] if p["name"] == "burst")
    jobs = [client.ledger("GetJob", {"job_id": f"burst-{i}"}) for i in range(120)
            if f"burst-{i}" in acknowledged]  # fmt: skip
    assert all(j["status"] == "assigned" for j in jobs)
    held = sum(j["allocation"]["thread_count"] for j in jobs)
    assert burst["in_use"]["thread_count"] >= held  # acknowledged ones hold theirs ...
    # ... and an unacknowledged assignment that did commit holds its own, no more.
    committed = []
    for i in range(120):
        job_id = f"burst-{i}"
        if job_id in acknowledged:
            continue
        with contextlib.suppress(NotFound):  # not committed: nothing to hold
            committed.append(client.ledger("GetJob", {"job_id": job_id}))
    assert burst["in_use"]["thread_count"] == held + len(committed)
    # Every acknowledged job reaches the ledger exactly once, and so do its allocations.
    expected = set(acknowledged) | {j["job_id"] for j in committed}
    wait_for(
        lambda: (
            {r[0] for r in rows(pg_url, select(Job.job_id).where(Job.job_id.like("burst-%")))}
            == expected
        ),
        timeout=30,
        what="every committed job in the ledger",
    )
    allocations = rows(
        pg_url,
        select(ResourceAllocation.job_id, func.count())
        .where(ResourceAllocation.pool == "burst")
        .group_by(ResourceAllocation.job_id),
    )
    assert {job_id for job_id, _n in allocations} == expected
    assert all(n == 1 for _job, n in allocations)
    open_units = rows(
        pg_url,
        select(func.sum(ResourceAllocation.thread_count)).where(
            ResourceAllocation.pool == "burst", ResourceAllocation.released_at.is_(None)
        ),
    )
    assert open_units == [(burst["in_use"]["thread_count"],)]


def test_the_embedded_ledger_is_the_leaders(tmp_path_factory: pytest.TempPathFactory) -> None:
    cluster = start_http_cluster(str(tmp_path_factory.mktemp("embedded")))
    try:
        with cluster.client(timeout=20.0) as client:
            client.ledger("SetPool", {"name": "default", "capacity": POOL})
            client.ledger("AssignJob", {"job_id": "e1", "resources": {"compute_units": 2}})
            leader = cluster.wait_leader(10)
            path = f"{cluster.data_dir(leader)}/ledger.db"
            url = f"sqlite:///{path}"
            wait_for(
                # The file appears when the leader starts making its ledger; the
                # tables when that transaction commits.
                lambda: (
                    os.path.exists(path)
                    and status(url)[0] is not None
                    and rows(url, select(Job.job_id)) == [("e1",)]
                ),
                what="the embedded ledger",
            )
            # A report reads every change acknowledged before it was asked for, even from
            # a new leader whose embedded ledger was empty a moment ago.
            client.ledger("AssignJob", {"job_id": "e2", "resources": {"compute_units": 3}})
            token = Path(cluster.token_file).read_text().strip()
            with cluster.client(token=token, timeout=20.0) as operator:
                new_leader = operator.transfer_leadership()
            assert new_leader != leader
            report = client.ledger("Report", {"name": "capacity"})
            assert ["default", "compute_units", POOL["compute_units"], 5, 5, 0.078] in report[
                "rows"
            ]
            follower = next(n for n in cluster.node_ids if n != new_leader)
            # A follower sends the caller to the leader, which keeps the embedded ledger.
            direct = cluster.client(follower, prefer_leader=False, timeout=2.0)
            with direct, pytest.raises(Unavailable, match="embedded ledger is kept on the leader"):
                direct.ledger("Report", {"name": "capacity"})
            with cluster.client(follower, timeout=20.0) as routed:
                assert routed.ledger("Report", {"name": "capacity"})["rows"]
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def test_a_30_s_database_outage_under_load_loses_and_doubles_nothing(
    tmp_path_factory: pytest.TempPathFactory, pg_url: str
) -> None:
    # A database of its own (one cluster per ledger), reached through a proxy the test
    # cuts: to the cluster, PostgreSQL stops answering for 30 s.
    base = make_url(pg_url)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS tadpole_outage WITH (FORCE)"))
        conn.execute(text("CREATE DATABASE tadpole_outage"))
    proxy = TcpProxy((base.host or "127.0.0.1", base.port or 5432))
    direct = base.set(database="tadpole_outage").render_as_string(hide_password=False)
    via_proxy = base.set(database="tadpole_outage", port=proxy.port)
    cluster = start_http_cluster(
        str(tmp_path_factory.mktemp("outage")),
        ["--set", f"ledger_url={via_proxy.render_as_string(hide_password=False)}"],
    )
    acknowledged: list[str] = []
    try:
        with cluster.client(timeout=20.0) as client:
            client.ledger("SetPool", {"name": "default", "capacity": {"thread_count": 10**6}})
            client.ledger("AssignJob", {"job_id": "before"})
            wait_for(lambda: client.ledger("ExportStatus")["cursor"] > 0, what="a first export")
            proxy.cut()
            cut_at = time.monotonic()
            worst_lag = 0.0
            while time.monotonic() - cut_at < 30:
                job_id = f"during-{len(acknowledged)}"
                client.ledger("AssignJob", {"job_id": job_id, "resources": {"thread_count": 1}})
                acknowledged.append(job_id)  # the cluster goes on acknowledging
                status = client.ledger("ExportStatus")
                worst_lag = max(worst_lag, status["lag_s"])
                time.sleep(0.1)
            assert status["last_error"], status
            assert worst_lag > 20, worst_lag  # the lag grew with the outage
            proxy.restore()
            wait_for(
                lambda: (s := client.ledger("ExportStatus"))["lag_s"] == 0 and not s["last_error"],
                timeout=30,
                what="the lag to drain",
            )
        jobs = rows(direct, select(Job.job_id))
        allocations = rows(direct, select(ResourceAllocation.job_id))
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
        proxy.close()
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS tadpole_outage WITH (FORCE)"))
        admin.dispose()
    assert len(acknowledged) > 50
    assert sorted(j for (j,) in jobs) == sorted(["before", *acknowledged])  # none lost
    assert len(allocations) == len(jobs)  # none doubled
