from __future__ import annotations

import dataclasses

import pytest

from gossip import ConfigError, GossipConfig, GossipError


def test_defaults_are_the_spec() -> None:
    cfg = GossipConfig()
    assert cfg.gossip_interval_s == 0.1
    assert cfg.gossip_fanout == 3
    assert GossipConfig.lan() == GossipConfig.base() == cfg


@pytest.mark.parametrize("preset", [GossipConfig.local, GossipConfig.lan, GossipConfig.wan])
def test_presets_are_valid_and_keep_the_base(preset: object) -> None:
    cfg = preset()  # type: ignore[operator]
    assert isinstance(cfg, GossipConfig)
    assert cfg.retransmit_mult == GossipConfig.base().retransmit_mult


@pytest.mark.parametrize(
    "change",
    [
        {"probe_timeout_s": 1.0, "probe_interval_s": 1.0},
        {"gossip_interval_s": 0.0},
        {"gossip_fanout": 0},
        {"max_message_bytes": 10},
        {"dead_reap_s": 1.0, "gossip_to_dead_s": 5.0},
        {"probe_interval_s": float("nan")},
    ],
)
def test_cross_field_rules(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(GossipConfig(), **change)  # type: ignore[arg-type]
    assert isinstance(err.value, GossipError) and isinstance(err.value, ValueError)


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        GossipConfig(0.2)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("n", "limit"), [(1, 4), (9, 4), (10, 8), (99, 8), (100, 12), (1000, 16), (2000, 16)]
)
def test_retransmit_limit(n: int, limit: int) -> None:
    assert GossipConfig().retransmit_limit(n) == limit


@pytest.mark.parametrize(("n", "lo", "hi"), [(1, 4.0, 24.0), (10, 4.0, 24.0), (100, 8.0, 48.0)])
def test_suspicion_bounds(n: int, lo: float, hi: float) -> None:
    assert GossipConfig().suspicion_bounds_s(n) == pytest.approx((lo, hi))


def test_push_pull_scales_above_32() -> None:
    cfg = GossipConfig()
    assert cfg.push_pull_scaled_s(32) == 30.0
    assert cfg.push_pull_scaled_s(1000) == 30.0 * 6
