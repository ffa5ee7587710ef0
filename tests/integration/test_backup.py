"""Backups of a real cluster through the CLI: create, verify, list, the coverage rule
with a member down, corruption named by verify, and a restore into a new cluster that
serves every acknowledged write."""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest

from crdt import EventLog, Timestamp
from node.backup import archive, seal
from node.backup.archive import describe
from node.backup.repository import MARKER, Repository
from node.dev.cluster import LocalCluster
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.tiers.retention import write_archive
from tests.integration.conftest import free_base_port

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tadpole(
    *args: str, cluster: LocalCluster | None = None, token: str = ""
) -> subprocess.CompletedProcess[str]:
    """The CLI; with ``cluster``, pointed at it (and presenting its client certificate)."""
    cmd = [sys.executable, "-m", "node.cli"]
    if cluster is not None:
        cmd += ["--endpoints", cluster.endpoints, *cluster.cli_flags(), "--timeout", "30"]
    if token:
        cmd += ["--token-file", token]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )


def write_data(cluster: LocalCluster) -> dict[str, Any]:
    """Acknowledged writes in every tier; returns what a restore must show."""
    acked: dict[str, Any] = {"system": {}, "population": {}, "agent": {}, "mesh": {}}
    with cluster.client() as client:
        for i in range(300):
            client.put(f"config/{i:04d}", f"value-{i}")
            acked["system"][f"config/{i:04d}"] = f"value-{i}".encode()
        client.put("config/0007", "overwritten")
        acked["system"]["config/0007"] = b"overwritten"
        client.delete("config/0008")
        del acked["system"]["config/0008"]
        for i in range(60):
            key = f"job_resource_ledger/job-{i}"
            client.counter_add("population", key, i + 1)
            client.counter_add("population", key, 100)
            acked["population"][key] = i + 101
            client.register_set("agent", f"agent-{i}", {"n": i})
            acked["agent"][f"agent-{i}"] = {"n": i}
        client.set_add("mesh", "mesh-1", "a", "b", "c")
        acked["mesh"]["mesh-1"] = ["a", "b", "c"]
    return acked


def write_archive_files(cluster: LocalCluster) -> pathlib.Path:
    """A population retention archive as its key's owners would have written it
    (the same content-named file on two members)."""
    log = EventLog()
    for n in range(3):
        log = log.merge(
            log.append(Timestamp(1_700_000_000 * 10**9 + n, 0), "n1", f"e{n}", {"n": n})
        )
    path = pathlib.Path()
    for node_id in ("n1", "n2"):
        path = write_archive(
            os.path.join(cluster.data_dir(node_id), "archive"),
            "job_event_log",
            "job_event_log/archived",
            list(log.value()),
            0,
        )
    return path


def check_data(cluster: LocalCluster, acked: dict[str, Any]) -> None:
    with cluster.client() as client:
        for key, value in acked["system"].items():
            got = client.get(key)
            assert got is not None and got.value == value, key
        assert client.get("config/0008") is None
        for tier in ("population", "agent", "mesh"):
            for key, value in acked[tier].items():
                read = client.tier_read(tier, key, consistency="all")
                assert read.found and read.value is not None, (tier, key)
                assert read.value.value == value, (tier, key)
                assert len(read.replicas) == 2, (tier, key)


def test_backup_verify_and_restore_into_a_new_cluster(
    make_cluster: Any, tmp_path: pathlib.Path
) -> None:
    # The audit trail's copy in the event log writes system keys of its own while the
    # backup runs (its calls are audited); this test counts the keys it wrote.
    cluster: LocalCluster = make_cluster(3, ["--set", "audit_to_event_log=false"])
    acked = write_data(cluster)
    archived = write_archive_files(cluster)
    key = tmp_path / "backup.key"
    made = tadpole("backup", "keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    recipient = made.stdout.strip()
    assert recipient.startswith("age1") and oct(key.stat().st_mode & 0o777) == "0o600"
    repo = tmp_path / "repo"
    token = cluster.token_file

    # The operator credential is required, on the CLI and on the wire.
    refused = tadpole("backup", "create", "--repo", str(repo), "-r", recipient, cluster=cluster)
    assert refused.returncode == 2 and "operator token" in refused.stderr
    with cluster.channel("n1") as channel:
        with pytest.raises(grpc.RpcError) as denied:
            list(pb_grpc.BackupStub(channel).Rows(pb.BackupRowsRequest(tier="agent"), timeout=5))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED

    created = tadpole("backup", "create", "--repo", str(repo), "-r", recipient,
                      cluster=cluster, token=token)  # fmt: skip
    assert created.returncode == 0, created.stderr
    sections = {line.split()[0]: int(line.split()[1]) for line in created.stdout.splitlines()[1:7]}
    assert sections == {"system": 299, "agent": 60, "population": 60, "mesh": 1, "archive": 1,
                        "metrics": sections["metrics"]}, created.stdout  # fmt: skip
    listed = tadpole("backup", "list", "--repo", str(repo))
    assert listed.returncode == 0 and "complete" in listed.stdout
    verified = tadpole("backup", "verify", "--repo", str(repo), "-i", str(key))
    assert verified.returncode == 0 and ": OK (" in verified.stdout, verified.stdout

    # A second backup after a small change stores only the changed chunks.
    with cluster.client() as client:
        client.put("config/0100", "changed")
    acked["system"]["config/0100"] = b"changed"
    second = tadpole("backup", "create", "--repo", str(repo), "-r", recipient, "--json",
                     cluster=cluster, token=token)  # fmt: skip
    assert second.returncode == 0, second.stderr
    stats = json.loads(second.stdout)
    assert stats["chunks_new"] <= 3 < stats["chunks"], stats  # system chunk + metrics

    # With a member down, tiers with W = 1 can't be shown complete: refused, by name.
    cluster.kill("n3")
    partial = tadpole("backup", "create", "--repo", str(repo), "-r", recipient,
                      cluster=cluster, token=token)  # fmt: skip
    assert partial.returncode == 1, partial.stdout
    assert "agent: n3 did not answer" in partial.stderr
    assert "population" not in partial.stderr  # W = 2 tolerates one missing member
    assert len(tadpole("backup", "list", "--repo", str(repo)).stdout.splitlines()) == 3

    # Restore the newest backup into a new cluster's directories and start it.
    for node_id in cluster.node_ids:
        cluster.kill(node_id)
    new = LocalCluster(str(tmp_path / "restored"), ["n1", "n2", "n3"], free_base_port(3))
    nodes = [f"--node={n}={new.data_dir(n)}" for n in new.node_ids]
    restored = tadpole("backup", "restore", "--repo", str(repo), "latest", "-i", str(key), *nodes)
    assert restored.returncode == 0, restored.stderr
    try:
        for node_id in new.node_ids:  # every member gets the archives, byte for byte
            copy = pathlib.Path(new.data_dir(node_id), "archive", archived.name)
            assert copy.read_bytes() == archived.read_bytes()
        new.start()
        new.wait_leader(30, all_up=True)
        check_data(new, acked)
        with new.client() as client:
            assert client.put("after-restore", "x").revision > stats["revision"]
    finally:
        for node_id in new.node_ids:
            new.kill(node_id)
    # A second restore into the same directories is refused without --force.
    again = tadpole("backup", "restore", "--repo", str(repo), "latest", "-i", str(key), *nodes)
    assert again.returncode == 1 and "not empty" in again.stderr


def test_verify_names_a_corrupted_chunk_and_restore_refuses_it(
    make_cluster: Any, tmp_path: pathlib.Path
) -> None:
    cluster: LocalCluster = make_cluster(3)
    with cluster.client() as client:
        for i in range(50):
            client.put(f"k{i}", "v")
    secret, public = seal.generate_identity()
    key = tmp_path / "key"
    key.write_text(secret + "\n")
    repo = tmp_path / "repo"
    created = tadpole("backup", "create", "--repo", str(repo), "-r", public,
                      cluster=cluster, token=cluster.token_file)  # fmt: skip
    assert created.returncode == 0, created.stderr
    repository = Repository.local(str(repo))
    manifest = repository.read_manifest(repository.backup_ids()[-1])
    victim = manifest.system.chunks[-1]
    pack = pathlib.Path(repository.describe_pack(victim.pack))
    data = bytearray(pack.read_bytes())
    data[victim.offset + victim.stored_size // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    named = describe(repository, victim)
    verified = tadpole("backup", "verify", "--repo", str(repo))
    assert verified.returncode == 1
    assert f"{named}: corrupt" in verified.stdout, verified.stdout
    target = tmp_path / "n1"
    restored = tadpole("backup", "restore", "--repo", str(repo), "latest", "-i", str(key),
                       f"--node=n1={target}")  # fmt: skip
    assert restored.returncode == 1 and named in restored.stderr, restored.stderr
    assert not target.exists() and "Traceback" not in restored.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text(seal.generate_identity()[0] + "\n")
    os.chmod(wrong, 0o600)
    bad_key = tadpole("backup", "verify", "--repo", str(repo), "-i", str(wrong))
    assert bad_key.returncode == 1 and "does not decrypt with the given identity" in bad_key.stdout


def test_the_cluster_backs_itself_up_on_its_leader(
    make_cluster: Any, tmp_path: pathlib.Path
) -> None:
    secret, public = seal.generate_identity()
    key = tmp_path / "key"
    key.write_text(secret + "\n")
    repo = tmp_path / "shared-repo"  # every node mounts it at the same path
    cluster: LocalCluster = make_cluster(3, extra_args=[
        "--set", f"backup_repo={repo}", "--set", f"backup_recipients={public}",
        "--set", "backup_interval_s=1.5", "--set", "backup_full_interval_s=4",
        "--set", "backup_prune=false",  # all in one hour: the schedule would keep one
    ])  # fmt: skip
    with cluster.client() as client:
        client.put("before", "1")

        def statuses() -> list[Any]:
            return [r.status for r in client.status_all() if r.status is not None]

        def wait_for_backups(count: int) -> None:
            deadline = time.monotonic() + 40
            while (
                not (repo / MARKER).exists()
                or len(Repository.local(str(repo)).backup_ids()) < count
            ):
                assert time.monotonic() < deadline, "no scheduled backup"
                time.sleep(0.2)

        wait_for_backups(2)
        first_leader = cluster.wait_leader(10)
        # Every node reports the schedule's state from the system tier.
        deadline = time.monotonic() + 10
        while not all(s.backup_age_s is not None and s.backup_id for s in statuses()):
            assert time.monotonic() < deadline, statuses()
            time.sleep(0.2)
        shown = tadpole("status", cluster=cluster)
        assert "last backup: " in shown.stdout and " ago" in shown.stdout, shown.stdout
        client.put("after", "2")
        cluster.kill(first_leader)
        # With a member down the new leader still backs up, marked incomplete (agent and
        # metrics need every member), and every node reports the shortfall.
        deadline = time.monotonic() + 40
        while not any("incomplete" in s.backup_error for s in statuses()):
            assert time.monotonic() < deadline, statuses()
            time.sleep(0.2)
        shown = tadpole("status", cluster=cluster)
        assert "last attempt failed: backup " in shown.stdout, shown.stdout
        assert f"agent without {first_leader}" in shown.stdout
        cluster.start_node(first_leader)
        made = len(Repository.local(str(repo)).backup_ids())
        wait_for_backups(made + 2)  # complete again once it is back
        deadline = time.monotonic() + 20
        while any(s.backup_error for s in statuses()):
            assert time.monotonic() < deadline, statuses()
            time.sleep(0.2)
    repository = Repository.local(str(repo))
    manifests, bad = repository.manifests()
    assert not bad
    assert all(archive.verify(repository, m, seal.load_identities(str(key))).ok for m in manifests)
    assert manifests[-1].complete and manifests[-1].revision >= 2
    assert any(not m.complete for m in manifests)  # made during the outage, marked
    sources = {m.source for m in manifests}
    assert len(sources) >= 2 and first_leader in sources, sources  # leadership moved
    created = [m.created_ns for m in manifests]
    gaps = [b - a for a, b in itertools.pairwise(created)]
    assert min(gaps) >= 1.5e9 * 0.9, gaps  # one at a time, at the interval
