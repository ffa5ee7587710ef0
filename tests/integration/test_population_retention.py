"""Population retention on a node's real replication layer and store.

One node (no peers: it owns every key), its real TierStore on disk, and an
injected clock: entries are appended "in the past", then compaction runs
"later": detailed entries fold into day summaries, summaries expire, and an
archival subspace writes its entries to a gzip'd archive before dropping them.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from crdt import decode
from node.replication.driver import Replication
from node.replication.store import TierStore
from node.tiers.ops import Op
from node.tiers.population import PopulationLog

pytestmark = pytest.mark.integration

DAY_NS = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9  # 2023-11-14


class _Alone:
    """The membership of a one-node cluster (what GossipDriver provides)."""

    address = "127.0.0.1:1"

    def members(self) -> list[Any]:
        return []


async def test_detailed_entries_fold_into_summaries_and_archive(tmp_path: Path) -> None:
    clock = {"now": T0}
    store = TierStore(str(tmp_path / "tiers.db"))
    replication = Replication(
        node_id="n1",
        store=store,
        gossip=_Alone(),  # type: ignore[arg-type]
        token="t",
        clock_ns=lambda: clock["now"],
        archive_dir=str(tmp_path / "archive"),
        cluster_size=1,
    )
    try:
        for i in range(6):
            clock["now"] = T0 + i * 3_600 * 10**9
            for key in ("judgement_snapshots/j-1", "worker_journal/w-1"):
                await replication.update(
                    "population",
                    key,
                    Op("log_append", value={"event": "beat", "n": i}, entry_id=f"e{i}"),
                )
        state = decode(store.get("population", "judgement_snapshots/j-1") or b"")
        assert isinstance(state, PopulationLog) and len(state.log.entries()) == 6

        # 10 days later every entry is still detailed (90-day window), nothing archived...
        clock["now"] = T0 + 10 * DAY_NS
        await replication.compact_population()
        for key in ("judgement_snapshots/j-1", "worker_journal/w-1"):
            kept = decode(store.get("population", key) or b"")
            assert isinstance(kept, PopulationLog) and len(kept.log.entries()) == 6
        assert not (tmp_path / "archive").exists()
        # ...100 days later the judgement snapshots (90 days detailed, 1 year
        # summary) are one day summary; the worker journal is still detailed.
        clock["now"] = T0 + 100 * DAY_NS
        await replication.compact_population()
        judged = decode(store.get("population", "judgement_snapshots/j-1") or b"")
        assert isinstance(judged, PopulationLog)
        value = judged.value()
        assert value["entries"] == []
        # T0 is 22:13 UTC, so the six hourly entries span two UTC days.
        assert [(s["count"], s["labels"]) for s in value["summaries"]] == [
            (2, {"beat": 2}),
            (4, {"beat": 4}),
        ]
        journal = decode(store.get("population", "worker_journal/w-1") or b"")
        assert isinstance(journal, PopulationLog) and len(journal.log.entries()) == 6
        # ...400 days later the summary has expired, and the worker journal (365
        # days detailed, 3-year archive) archived its entries before dropping them.
        clock["now"] = T0 + 400 * DAY_NS
        assert await replication.compact_population() == 2
        judged = decode(store.get("population", "judgement_snapshots/j-1") or b"")
        assert isinstance(judged, PopulationLog) and judged.value()["summaries"] == []
        journal = decode(store.get("population", "worker_journal/w-1") or b"")
        assert isinstance(journal, PopulationLog) and journal.log.entries() == ()
        archives = sorted(os.listdir(tmp_path / "archive"))
        assert len(archives) == 1 and archives[0].startswith("worker_journal.")
        with gzip.open(tmp_path / "archive" / archives[0], "rt") as f:
            lines = [json.loads(line) for line in f]
        assert sorted(line.get("entry_id", "") for line in lines[1:]) == [f"e{i}" for i in range(6)]
        # Compacting again the same day changes nothing and writes nothing new.
        assert await replication.compact_population() == 0
        assert sorted(os.listdir(tmp_path / "archive")) == archives
    finally:
        await replication.stop()
        await store.aclose()
