"""What `make bench` reports: medians over repetitions, the counters it reads from
/metrics, and each target's verdict (bench/run.py's pure parts; the run itself needs
etcd and minutes, so no test starts it)."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def bench() -> Any:
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_run", os.path.join(ROOT, "bench", "run.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def row(system: str, op: str, clients: int, ops: float, **extra: Any) -> dict[str, Any]:
    out = {
        "system": system,
        "op": op,
        "clients": clients,
        "ops_per_s": ops,
        "calls_per_s": ops,
        "p50_ms": 10.0,
        "p95_ms": 20.0,
        "p99_ms": 30.0,
        "errors": 0,
    }
    out.update(extra)
    return out


def test_aggregate_takes_medians_per_row_and_sums_errors(bench: Any) -> None:
    rows = [
        row("etcd", "put", 64, 100, errors=1, cpu_ms_per_op=0.3),
        row("etcd", "put", 64, 300, errors=0, cpu_ms_per_op=0.1),
        row("etcd", "put", 64, 200, errors=2, cpu_ms_per_op=0.2),
        row("tadpole-raft", "update", 6, 5000, batch=256),
        row("tadpole-raft", "update", 6, 900, batch=16),
    ]
    out = {(r["system"], r["op"], r.get("batch")): r for r in bench.aggregate(rows)}
    put = out[("etcd", "put", None)]
    assert (put["ops_per_s"], put["cpu_ms_per_op"], put["errors"], put["reps"]) == (
        200,
        0.2,
        3,
        3,
    )
    # batches of different sizes stay apart, and a batch row gets no etcd ratio
    assert out[("tadpole-raft", "update", 256)]["ops_per_s"] == 5000
    assert out[("tadpole-raft", "update", 16)]["ops_per_s"] == 900
    agg = bench.aggregate(rows)
    bench.add_ratios(agg)
    assert all("x_etcd_ops" not in r for r in agg if "batch" in r)


def test_the_counters_read_from_metrics(bench: Any) -> None:
    peer = bench._PEER_CALLS
    fsyncs = bench._FSYNCS
    assert peer.match('tadpole_request_duration_seconds_count{method="tadpole.v1.Peer/Raft"} 12.0')
    assert not peer.match('tadpole_request_duration_seconds_count{method="tadpole.v1.KV/Put"} 9.0')
    assert not peer.match('tadpole_request_duration_seconds_sum{method="tadpole.v1.Peer/Raft"} 1')
    for line in (
        "tadpole_raft_journal_fsync_seconds_count 7.0",
        "tadpole_store_commit_seconds_count 3.0",
        "etcd_disk_wal_fsync_duration_seconds_count 41",
    ):
        m = fsyncs.match(line)
        assert m is not None and float(m.group(1)) == float(line.split()[-1])
    assert not fsyncs.match("etcd_disk_wal_fsync_duration_seconds_sum 0.5")
    assert not fsyncs.match('tadpole_raft_journal_fsync_seconds_bucket{le="0.01"} 7.0')


def test_a_server_that_does_not_count_shows_no_figure(bench: Any) -> None:
    probe = bench.Probe(lambda: [], peer_rpcs=True)
    nan = float("nan")
    cost = probe.cost(
        {"cpu_s": 1.0, "wakeups": 100.0, "peer_rpcs": nan, "fsyncs": 5.0},
        {"cpu_s": 3.0, "wakeups": 4100.0, "peer_rpcs": nan, "fsyncs": 9.0},
        1000,
    )
    assert cost["cpu_ms_per_op"] == pytest.approx(2.0)
    assert cost["fsyncs_per_op"] == pytest.approx(0.004)
    assert cost["wakeups_per_op"] == pytest.approx(4.0)
    assert cost["peer_rpcs_per_op"] != cost["peer_rpcs_per_op"]  # NaN: printed as "-"
    assert bench._num(cost["peer_rpcs_per_op"], ".2f") == "-"


def test_population_rows_parse(bench: Any) -> None:
    assert bench._population("0x64,1x64,16x6,256x6r") == [
        (0, 64, False), (1, 64, False), (16, 6, False), (256, 6, True)
    ]  # fmt: skip
    assert bench._population("") == []


def test_routed_and_raw_rows_stay_apart_and_each_is_held_to_its_like(bench: Any) -> None:
    # Raw one-call-per-update stubs against raw puts; the client library, which sends
    # concurrent counter adds together as it sends puts together, against its puts.
    rows = [
        row("tadpole-raft", "put", 64, 1000),
        row("tadpole-client", "put", 64, 4000),
        row("tadpole-raft", "update", 64, 3200, batch=0),
        row("tadpole-raft", "update", 64, 3100, batch=0, routed=True),
    ]
    agg = bench.aggregate(rows)
    singles = sorted(r["ops_per_s"] for r in agg if r.get("batch") == 0)
    assert singles == [3100, 3200]
    text = {t: (f, ok) for t, f, ok in bench.targets(agg, {})}
    assert text["population unbatched >= 3x system put at 64 clients"] == (
        "3,200 vs 1,000/s = 3.20x",
        True,
    )
    assert text["population unbatched >= 3x system put at 64 clients, client library"] == (
        "3,100 vs 4,000/s = 0.78x",
        False,
    )


def _run(put64: float, put256: float, get64: float, p50_one: float, cpu: float) -> list[Any]:
    return [
        row("etcd", "put", 1, 1000, p50_ms=1.0),
        row("etcd", "put", 64, 6000),
        row("etcd", "put", 256, 8000),
        row("etcd", "get_lin", 64, 8000),
        row("tadpole-raft", "put", 1, 300, p50_ms=p50_one),
        row("tadpole-raft", "put", 64, put64, cpu_ms_per_op=cpu),
        row("tadpole-raft", "put", 256, put256),
        row("tadpole-raft", "get_lin", 64, get64),
        row("tadpole-ref", "put", 64, 600, cpu_ms_per_op=2.0),
        row("tadpole-raft", "update", 64, 9000, batch=0),
        row("tadpole-raft", "update", 6, 21000, batch=256),
    ]


def _memory(idle: float, node_rss: float, peak: float) -> dict[str, Any]:
    raft = {"idle_cpu": idle, "keys": 100_000, "rss_mib": {"n1": node_rss, "n2": node_rss}}
    raft["restart"] = {
        "process": "n2",
        "steady_mib": node_rss,
        "restart_peak_mib": peak,
        "after_mib": node_rss,
        "catch_up_s": 1.0,
    }
    etcd = {"idle_cpu": 0.01, "keys": 100_000, "rss_mib": {"etcd1": 100.0, "etcd2": 100.0}}
    return {"tadpole-raft": {"reps": [raft]}, "etcd": {"reps": [etcd]}}


def test_targets_met_and_missed(bench: Any) -> None:
    met = _run(put64=3000, put256=4000, get64=5600, p50_one=3.0, cpu=1.0)
    bench.add_ratios(met)
    verdicts = {t: ok for t, _, ok in bench.targets(met, _memory(0.02, 120.0, 240.0))}
    assert len(verdicts) == 10 and all(verdicts.values()), verdicts

    missed = _run(put64=2999, put256=3999, get64=5599, p50_one=3.01, cpu=1.01)
    missed[-2]["ops_per_s"] = 1000  # unbatched population < 3x the 2,999 puts/s
    missed[-1]["ops_per_s"] = 19_999
    bench.add_ratios(missed)
    figures = bench.targets(missed, _memory(0.0201, 121.0, 242.1))
    assert [ok for _, _, ok in figures] == [False] * 10, figures
    text = dict((t, f) for t, f, _ in figures)
    assert text["server CPU per put at 64 clients <= 0.5x the reference's"] == (
        "1.01 vs 2.00 ms = 0.51x"
    )


def test_node_env_reads_name_value_pairs_and_names_a_bad_one(bench: Any) -> None:
    assert bench.node_env(None) == {}
    assert bench.node_env(["TADPOLE_GIL_SWITCH_INTERVAL_S=0.005", "TADPOLE_X=a=b", "E="]) == {
        "TADPOLE_GIL_SWITCH_INTERVAL_S": "0.005",
        "TADPOLE_X": "a=b",
        "E": "",
    }
    for bad in ("TADPOLE_X", "=1", "BAD NAME=1", "A-B=1"):
        with pytest.raises(ValueError, match="is not NAME=VALUE"):
            bench.node_env([bad])
    shown = bench.envs_shown({"ref": {}, "this": {"TADPOLE_A": "1", "TADPOLE_B": ""}})
    assert shown == ["this's nodes with TADPOLE_A=1 TADPOLE_B="]
