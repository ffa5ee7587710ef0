"""The scrubber on real nodes: a CRDT value that rots on disk is found and replaced with
the other owner's copy; a damaged journal record is found and reported."""

from __future__ import annotations

import os
import pathlib
import re
import sqlite3
import time
import urllib.request

import pytest

from node.dev.cluster import LocalCluster
from node.replication.coordinator import owners
from node.replication.store import digest_of
from node.tiers.ops import TIERS
from tests.integration.conftest import start_http_cluster

pytestmark = pytest.mark.integration


def metric(cluster: LocalCluster, node_id: str, name: str) -> float:
    url = cluster.http_url(node_id, "/metrics")
    with urllib.request.urlopen(url, context=cluster.http_context(), timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_rot_is_found_and_repaired(tmp_path: pathlib.Path) -> None:
    cluster = start_http_cluster(
        str(tmp_path / "c"), ["--set", "scrub_interval_s=1", "--set", "scrub_bytes_per_s=1e8"]
    )
    try:
        with cluster.client() as client:
            for i in range(40):
                client.counter_add("population", f"job_resource_ledger/job-{i}", i + 1)
                client.put(f"k{i}", "v" * 200)
            key = next(
                f"job_resource_ledger/job-{i}"
                for i in range(40)
                if "n1"
                in owners(TIERS["population"], f"job_resource_ledger/job-{i}", cluster.node_ids)
            )
            good = int(key.rsplit("-", 1)[1]) + 1
            db = os.path.join(cluster.data_dir("n1"), "tiers.db")
            with sqlite3.connect(db, timeout=10) as raw:  # rot behind the node's back
                raw.execute(
                    "UPDATE state SET value=? WHERE tier='population' AND key=?",
                    (b"\x00rotten", key),
                )
            wait(lambda: metric(cluster, "n1", "tadpole_corruption_repaired_total") >= 1, 20,
                 "the rotten value was not repaired")  # fmt: skip
            assert metric(cluster, "n1", "tadpole_corruption_detected_total") >= 1
            read = client.tier_read("population", key, consistency="all")
            assert read.value is not None and read.value.value == good

            # Damage an early journal record of a running node: reported, with the file.
            journal = pathlib.Path(cluster.data_dir("n2"), "raft.journal")
            data = bytearray(journal.read_bytes())
            data[40] ^= 0x01
            journal.write_bytes(bytes(data))
            wait(lambda: metric(cluster, "n2", 'tadpole_corruption_detected_total{file="journal"}')
                 >= 1, 20, "the damaged journal record was not reported")  # fmt: skip
        log = pathlib.Path(cluster.log_file("n2")).read_text()
        assert f"corruption found by the scrubber: {journal} at byte" in log
        assert metric(cluster, "n3", "tadpole_corruption_detected_total") == 0
        assert metric(cluster, "n3", "tadpole_scrub_last_pass_timestamp_seconds") > 0
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def test_no_false_alarms_while_the_files_are_written_and_compacted(tmp_path: pathlib.Path) -> None:
    """Scrubbing without pause under write load, with the journal compacted (rewritten
    and renamed) every 200 entries and snapshots replaced: nothing may be reported."""
    cluster = start_http_cluster(
        str(tmp_path / "c"),
        ["--set", "scrub_interval_s=0.05", "--set", "scrub_bytes_per_s=1e9",
         "--set", "raft.snapshot_min_entries=200"],
    )  # fmt: skip
    try:
        snapshots = [pathlib.Path(cluster.data_dir(n), "raft.snapshot") for n in cluster.node_ids]
        # At least 8 s of load, and until every node has compacted: how many writes 8 s
        # holds depends on the host, and the test means nothing without compaction.
        start = time.monotonic()
        with cluster.client() as client:
            i = 0
            while time.monotonic() - start < 8 or (
                not all(s.exists() for s in snapshots) and time.monotonic() - start < 60
            ):
                client.put(f"k{i % 500}", "v" * (100 + i % 300))
                client.counter_add("population", f"job_resource_ledger/j{i % 50}", 1)
                i += 1
        assert all(s.exists() for s in snapshots)  # compaction did run meanwhile
        for node_id in cluster.node_ids:
            assert metric(cluster, node_id, "tadpole_corruption_detected_total") == 0, node_id
            assert metric(cluster, node_id, "tadpole_scrub_bytes_total") > 0
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def test_a_read_or_write_that_meets_rot_never_serves_or_launders_it(tmp_path: pathlib.Path) -> None:
    """With the scrubber slow (6 h), a read of a rotten copy is answered from the other
    owner and a write to it is refused (nothing applied, retry) until it is repaired --
    at once, by the node that met it. Review finding: the write joined into the rotten
    bytes and stored the result under a valid digest."""
    cluster = start_http_cluster(str(tmp_path / "c"), ["--set", "scrub_interval_s=21600"])
    try:
        node_ids = cluster.node_ids
        key = next(
            f"job_resource_ledger/job-{i}"
            for i in range(100)
            if "n1" in owners(TIERS["population"], f"job_resource_ledger/job-{i}", node_ids)
        )
        with cluster.client() as client:
            client.counter_add("population", key, 41)
        db = os.path.join(cluster.data_dir("n1"), "tiers.db")
        with sqlite3.connect(db, timeout=10) as raw:
            raw.execute(
                "UPDATE state SET value=? WHERE tier='population' AND key=?", (b"\x00rot", key)
            )
        with cluster.client("n1") as n1:  # n1 coordinates what it is asked
            read = n1.tier_read("population", key, consistency="one")
            assert read.value is not None and read.value.value == 41
            wait(lambda: metric(cluster, "n1", "tadpole_corruption_repaired_total") >= 1, 20,
                 "the rotten copy was not repaired")  # fmt: skip
            n1.counter_add("population", key, 1)
        with cluster.client() as client:
            read = client.tier_read("population", key, consistency="all")
            assert read.value is not None and read.value.value == 42
        with sqlite3.connect(db, timeout=10) as raw:
            value, digest = raw.execute(
                "SELECT value, digest FROM state WHERE tier='population' AND key=?", (key,)
            ).fetchone()
        assert b"rot" not in value and digest_of(value) == digest
        assert metric(cluster, "n1", 'tadpole_corruption_detected_total{file="tiers"}') == 1
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
