"""Encryption at rest on real nodes: nothing written reaches the disk in plaintext (the
Raft journal, term/vote file and snapshots, the tier store and its WAL); acknowledged
writes survive kill -9; a follower catches up from an encrypted snapshot; a rotation
re-seals everything under the new key so the old one can go; a rotten ciphertext is
found and repaired from another owner."""

from __future__ import annotations

import json
import os
import pathlib
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from node.client import Client
from node.dev.cluster import LocalCluster, free_base_port
from node.replication.coordinator import owners
from node.tiers.ops import TIERS
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration

MARK = b"PLAINTEXT-MARK"


def files_holding(root: str, needle: bytes) -> list[str]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if name.endswith((".log", ".lock", ".pid")):
                continue
            with open(path, "rb") as f:
                if needle in f.read():
                    found.append(os.path.relpath(path, root))
    return sorted(found)


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def metric(cluster: LocalCluster, node_id: str, name: str) -> float:
    with urllib.request.urlopen(
        cluster.http_url(node_id, "/metrics"), context=cluster.http_context(), timeout=5
    ) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def write(client: Client, start: int, stop: int) -> None:
    for i in range(start, stop):
        client.put(f"/secret/{i:04d}", (MARK + b"-system-%d" % i).decode())
        if i % 5 == 0:
            client.register_set("agent", f"agent-{i}", {"note": (MARK + b"-tier-%d" % i).decode()})


def caught_up(cluster: LocalCluster) -> bool:
    statuses = [cluster.status(n) for n in cluster.node_ids]
    return None not in statuses and len({s.applied_index for s in statuses if s}) == 1


def check(client: Client, stop: int) -> None:
    for i in range(stop):
        kv = client.get(f"/secret/{i:04d}")
        assert kv is not None and kv.value == MARK + b"-system-%d" % i
        if i % 5 == 0:
            read = client.tier_read("agent", f"agent-{i}", consistency="all")
            assert read.value is not None and read.value.value == {
                "note": (MARK + b"-tier-%d" % i).decode()
            }


def test_plaintext_control_the_marker_is_found_when_encryption_is_off(
    tmp_path: pathlib.Path,
) -> None:
    """Without encryption the same writes are readable on disk: the check that follows
    for the encrypted cluster can fail."""
    cluster = LocalCluster(str(tmp_path / "c"), ["n1"], free_base_port(1))
    cluster.start()
    try:
        cluster.wait_leader(30, all_up=True)
        with cluster.client() as client:
            write(client, 0, 6)
        data = cluster.data_dir("n1")
        assert any(f.startswith("raft.journal") for f in files_holding(data, MARK + b"-system"))
        assert any(f.startswith("tiers.db") for f in files_holding(data, MARK + b"-tier"))
    finally:
        cluster.kill("n1")


def test_an_encrypted_cluster_keeps_no_plaintext_survives_kill_and_rotates(
    tmp_path: pathlib.Path,
) -> None:
    base, http = free_base_port(3), free_base_port(3)
    while abs(base - http) < 10:
        http = free_base_port(3)
    cluster = LocalCluster(
        str(tmp_path / "c"), ["n1", "n2", "n3"], base, metrics_base_port=http, encrypt=True,
        extra_args=["--set", "raft.snapshot_min_entries=60", "--set", "scrub_interval_s=1",
                    "--set", "scrub_bytes_per_s=1e8"],
    )  # fmt: skip
    cluster.start()
    try:
        cluster.wait_leader(30, all_up=True)
        with cluster.client() as client:
            write(client, 0, 150)
            for node_id in cluster.node_ids:
                snap = pathlib.Path(cluster.data_dir(node_id), "raft.snapshot")
                wait(snap.exists, 30, f"{node_id} wrote no snapshot")

            # kill -9 a follower, go on writing past another snapshot, bring it back: it
            # catches up (from the leader's encrypted snapshot) and nothing is lost.
            leader = cluster.wait_leader(10)
            victim = next(n for n in cluster.node_ids if n != leader)
            cluster.kill(victim)
            write(client, 150, 260)
            cluster.start_node(victim)
            cluster.wait_leader(30, all_up=True)
            check(client, 260)
            wait(lambda: caught_up(cluster), 30, "the restarted node did not catch up")

            for node_id in cluster.node_ids:
                assert files_holding(cluster.data_dir(node_id), MARK) == [], node_id
                assert pathlib.Path(cluster.data_dir(node_id), "raft.snapshot").read_bytes()[
                    :8
                ] == (b"TPSNAP03")

            # Rotate: a new key first in the keyring, `keys rotate`, then the old key goes.
            keyring = pathlib.Path(cluster.keyring_file)
            out = run_cli(cluster, "keys", "generate", "--name", "k2", "--add-to", str(keyring))
            assert out.returncode == 0, out.stderr
            assert keyring.stat().st_mode & 0o777 == 0o600
            rotated = run_cli(cluster, "keys", "rotate")
            assert rotated.returncode == 0, rotated.stdout + rotated.stderr
            assert rotated.stdout.count("writes under k2") == 3 and "dev1" not in rotated.stdout
            write(client, 260, 280)
            resealed = sum(
                metric(cluster, n, "tadpole_encryption_resealed_total") for n in cluster.node_ids
            )
            assert resealed >= 52  # at least one copy of each of the 52 agent values
            assert metric(cluster, "n1", "tadpole_encryption_at_rest_enabled") == 1
        both_keys = keyring.read_text()
        keyring.write_text(both_keys.splitlines()[0] + "\n")
        for node_id in cluster.node_ids:
            assert cluster.stop_node(node_id)
        cluster.start()
        cluster.wait_leader(30, all_up=True)
        with cluster.client() as client:
            check(client, 280)
        status = json.loads(run_cli(cluster, "keys", "status", "--json").stdout)
        for node_id, s in status.items():
            assert s["primary"].startswith("k2 ") and s["journal"] == s["primary"], s
            assert s["snapshot"] == s["primary"] and [c["key"] for c in s["store"]] == [
                s["primary"]
            ], (node_id, s)

        # A ciphertext that rots on disk is found (it fails authentication) and
        # replaced by another owner's copy.
        key = next(f"agent-{i}" for i in range(0, 280, 5)
                   if "n1" in owners(TIERS["agent"], f"agent-{i}", cluster.node_ids))  # fmt: skip
        db = os.path.join(cluster.data_dir("n1"), "tiers.db")
        with sqlite3.connect(db, timeout=10) as raw:
            (stored,) = raw.execute(
                "SELECT value FROM state WHERE tier='agent' AND key=?", (key,)
            ).fetchone()
            rotten = bytearray(stored)
            rotten[len(rotten) // 2] ^= 0x01
            raw.execute(
                "UPDATE state SET value=? WHERE tier='agent' AND key=?", (bytes(rotten), key)
            )
        wait(lambda: metric(cluster, "n1", "tadpole_corruption_repaired_total") >= 1, 20,
             "the rotten ciphertext was not repaired")  # fmt: skip
        with cluster.client() as client:
            check(client, 280)
        # No key material in any log or CLI output of the run.
        secrets = [line.split(":", 1)[1] for line in both_keys.splitlines() if line]
        assert len(secrets) == 2
        logs = "".join(pathlib.Path(cluster.log_file(n)).read_text() for n in cluster.node_ids)
        for secret in secrets:
            assert secret not in logs and secret not in rotated.stdout + rotated.stderr
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def test_a_node_without_its_key_refuses_to_start_with_a_message(tmp_path: pathlib.Path) -> None:
    cluster = LocalCluster(str(tmp_path / "c"), ["n1"], free_base_port(1), encrypt=True)
    cluster.start()
    try:
        cluster.wait_leader(30, all_up=True)
        with cluster.client() as client:
            write(client, 0, 6)
    finally:
        assert cluster.stop_node("n1")
    keyring = pathlib.Path(cluster.keyring_file)
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "keys", "generate", "--name", "wrong"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    keyring.write_text(out.stdout)
    started = subprocess.run(
        cluster.command("n1"), capture_output=True, text=True, timeout=60, check=False
    )
    assert started.returncode == 1, started.stderr[-2000:]
    assert "error: " in started.stderr and "which is not in" in started.stderr
    assert "Traceback" not in started.stderr + started.stdout
