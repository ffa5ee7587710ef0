"""Whole-cluster scenarios in the deterministic simulator (fixed seeds, simulated time)."""

from __future__ import annotations

from gossip.config import GossipConfig
from gossip.messages import Status
from gossip.sim import NetConfig, Sim, main, measure_detection, measure_dissemination


def test_same_seed_same_run() -> None:
    def run(seed: int) -> tuple[int, int, list[int]]:
        sim = Sim(30, seed=seed, net=NetConfig(loss=0.05))
        sim.run_until(20.0)
        return sim.delivered, sim.dropped, [n.bytes_sent for n in sim.nodes]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_dissemination_reaches_everyone_within_a_bound() -> None:
    for seed in (1, 2, 3):
        r = measure_dissemination(200, seed=seed)
        assert r["all"] <= 1.0, r  # 10 gossip intervals at 100 ms


def test_join_all_converges() -> None:
    sim = Sim(40, seed=3, bootstrap=False)
    sim.join_all(seed_index=0)
    sim.run_until(10.0)
    assert sim.converged()


def test_crash_is_detected_by_everyone_within_a_bound() -> None:
    cfg = GossipConfig.lan()
    r = measure_detection(50, seed=4, loss=0.0, config=cfg)
    _lo, hi = cfg.suspicion_bounds_s(50)
    # one protocol period to notice + at most the full (unconfirmed) suspicion timeout
    assert r["all_dead"] <= 2 * cfg.probe_interval_s + hi + 1.0
    assert r["first_suspect"] <= 8 * cfg.probe_interval_s  # geometric: ~1.6 periods mean


def test_no_false_dead_under_five_percent_loss() -> None:
    sim = Sim(40, seed=5, net=NetConfig(loss=0.05))
    sim.run_until(300.0)
    assert sum(n.swim.stats.deaths_declared for n in sim.nodes) == 0
    assert sim.converged()


def test_partition_then_heal_reconverges() -> None:
    cfg = GossipConfig.local()
    sim = Sim(30, seed=6, config=cfg)
    sim.run_until(2.0)
    left, right = list(range(15)), list(range(15, 30))
    sim.partition([left, right])
    sim.run_until(40.0)
    assert sim.status(0, 20) is Status.DEAD
    assert sim.status(20, 0) is Status.DEAD
    sim.heal()
    sim.run_until(40.0 + 2 * cfg.reconnect_interval_s + 10.0)
    assert sim.converged()


def test_crash_restart_rejoins_with_higher_incarnation() -> None:
    sim = Sim(20, seed=8, config=GossipConfig.local())
    sim.run_until(1.0)
    sim.crash(7)
    sim.run_until(30.0)
    assert sim.converged(expect_dead=[7])
    sim.restart(7, seed_index=0)
    sim.run_until(35.0)
    assert sim.converged()
    assert sim.nodes[7].swim.incarnation >= 1
    assert all(n.swim.member("n0007").incarnation >= 1 for n in sim.nodes)  # type: ignore[union-attr]


def test_cli_prints_tables(capsys: object) -> None:
    assert main(["dissemination", "--sizes", "10", "--runs", "1"]) == 0
    assert main(["antientropy", "--keys", "1000", "--diffs", "1"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "| 10 |" in out and "| 1,000 | 1 |" in out
