"""The disaster-recovery drill (``make dr-drill``) as a test: a backup taken under
write load while the leader is killed restores into a new cluster with every write
acknowledged before the backup, a hole-free cut of the system tier, and no counter
above what was attempted."""

from __future__ import annotations

import pathlib

import pytest

from node.dev.drill import RTO_S, drill

pytestmark = pytest.mark.integration


def test_the_drill_loses_nothing_acknowledged(tmp_path: pathlib.Path) -> None:
    result = drill(str(tmp_path), writers=3, seconds=4.0, kill_leader=True, preload=500)
    assert result.acked_before_backup > 2 * 500 + 100  # the preload and the writers
    assert result.lost == [] and result.holes == [] and result.over == []
    assert result.restored_system_keys > 0
    assert result.recovery_seconds < RTO_S
    assert result.ok
    assert any("killed the leader" in line for line in result.log)
