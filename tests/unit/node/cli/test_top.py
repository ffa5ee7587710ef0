"""``tadpole top``'s arithmetic: rates and quantiles from the difference of two samples."""

from __future__ import annotations

import dataclasses
import math

import pytest

from node.cli.top import frame, quantile, run
from node.client.types import EndpointStatus, MethodLoad, NodeStatus, TierReplicaStatus

BOUNDS = (0.001, 0.01, 0.1)


def status(
    node: str, uptime: float, cpu: float, loads: dict[str, tuple[int, ...]], **kw: object
) -> EndpointStatus:
    load = tuple(MethodLoad(method, sum(b), 0.0, b) for method, b in sorted(loads.items()))
    s = NodeStatus(
        id=node, raft_role=str(kw.get("role", "follower")), term=1,
        commit_index=int(kw.get("commit", 10)), applied_index=int(kw.get("applied", 10)),
        log_entries=0, keys=0, has_quorum=True, version="t", uptime_s=uptime, data_dir="",
        system_backend="raft", leader_id="n1", revision=1,
        tiers=tuple(kw.get("tiers", ())),  # type: ignore[arg-type]
        load=load, latency_bounds=BOUNDS, cpu_seconds=cpu, rss_bytes=64 << 20,
    )  # fmt: skip
    return EndpointStatus(endpoint=f"{node}:1", status=s, error=None)


def test_quantiles_interpolate_within_the_bucket_as_prometheus_does() -> None:
    assert quantile(0.5, BOUNDS, [0, 10, 0, 0]) == pytest.approx(0.0055)
    assert quantile(0.99, BOUNDS, [99, 0, 0, 1]) == pytest.approx(0.001)
    assert quantile(1.0, BOUNDS, [0, 0, 0, 5]) == 0.1  # +Inf: the last finite bound
    assert math.isnan(quantile(0.5, BOUNDS, [0, 0, 0, 0]))


def test_a_frame_describes_the_interval_between_two_samples() -> None:
    before = [status("n1", 100.0, 10.0, {"KV/Put": (1000, 0, 0, 0)})]
    hint = TierReplicaStatus("agent", 2, 5, 1, 3, 0.5, oldest_hint_age_s=4.0)
    after = [
        status(
            "n1", 102.0, 11.0, {"KV/Put": (1000, 0, 200, 0), "KV/Range": (0, 50, 0, 0)},
            commit=20, applied=17, tiers=(hint,),
        ),
        EndpointStatus(endpoint="n2:1", status=None, error=RuntimeError("down")),
    ]  # fmt: skip
    nodes, methods = frame(after, before)
    n1, n2 = nodes
    assert n1.ops_per_s == pytest.approx(125.0)  # 250 calls in 2 s, not since start
    # 250 calls: 50 in 1-10 ms, 200 in 10-100 ms; the median is the 75th of the latter
    assert n1.p50_s == pytest.approx(0.01 + 0.09 * (75 / 200))
    assert n1.cpu_percent == pytest.approx(50.0)
    assert (n1.apply_lag, n1.hints, n1.replica_lag_s, n1.under_replicated) == (3, 3, 4.0, 1)
    assert n2.role == "unreachable" and "down" in n2.error
    assert [(m.method, m.ops_per_s) for m in methods] == [("KV/Put", 100.0), ("KV/Range", 25.0)]


def test_the_first_frame_and_a_restarted_node_count_from_the_start() -> None:
    first = [status("n1", 10.0, 2.0, {"KV/Put": (50, 0, 0, 0)})]
    nodes, _ = frame(first, None)
    assert nodes[0].ops_per_s == pytest.approx(5.0)
    restarted = [status("n1", 4.0, 1.0, {"KV/Put": (8, 0, 0, 0)})]
    nodes, _ = frame(restarted, first)
    assert nodes[0].ops_per_s == pytest.approx(2.0)  # 8 calls in its 4 s, no negative rate


def test_run_prints_the_frames_it_was_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    samples = iter(
        [
            [status("n1", 1.0, 0.1, {"tadpole.v1.KV/Put": (10, 0, 0, 0)}, role="leader")],
            [status("n1", 1.5, 0.2, {"tadpole.v1.KV/Put": (30, 0, 0, 0)}, role="leader")],
        ]
    )
    run(lambda: next(samples), 0.2, 2)
    out = capsys.readouterr().out
    assert out.count("tadpole top") == 2
    assert "since start" in out and "last 0.2 s" in out
    assert "leader" in out and "tadpole.v1.KV/Put" in out and "40" in out  # 20 calls / 0.5 s


def test_nodes_with_another_bucket_layout_do_not_break_the_screen() -> None:
    mine = status("n1", 2.0, 0.1, {"KV/Put": (10, 0, 0, 0)})
    other = status("n2", 2.0, 0.1, {"KV/Put": (0, 4, 0)})  # one bucket fewer
    assert other.status is not None
    other = EndpointStatus(
        "n2:1", dataclasses.replace(other.status, latency_bounds=(0.001, 0.01)), None
    )
    broken = status("n3", 2.0, 0.1, {"KV/Put": (1, 2)})  # buckets that fit no layout
    nodes, methods = frame([mine, other, broken], None)
    assert [n.ops_per_s for n in nodes] == [5.0, 2.0, 1.5]
    assert nodes[1].p50_s == pytest.approx(0.001 + 0.009 * 0.5)  # its own layout
    assert math.isnan(nodes[2].p50_s)
    (put,) = methods
    assert put.ops_per_s == pytest.approx(8.5)
    assert put.p99_s == pytest.approx(0.001 * 0.99 * 10 / 10)  # n1's buckets only
