"""Point-in-time recovery on real nodes: the leader archives the system tier's changes
into the repository; a restore to revision N (or to a time) rebuilds exactly the state
after N, checked against what the client saw."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest

from node.backup import seal, wal
from node.backup.repository import MARKER, Repository
from node.client import DeleteOp
from node.dev.cluster import LocalCluster, free_base_port
from tests.integration.test_backup import tadpole

pytestmark = pytest.mark.integration


def state_at(history: list[tuple[int, str, str | None]], revision: int) -> dict[str, str]:
    """The oracle: the test's keys after ``revision``, from the writes the client saw."""
    state: dict[str, str] = {}
    for rev, key, value in history:
        if rev > revision:
            break
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


def restored_state(
    root: pathlib.Path, repo: pathlib.Path, key: pathlib.Path, *args: str
) -> tuple[dict[str, str], int]:
    new = LocalCluster(str(root), ["n1", "n2", "n3"], free_base_port(3))
    done = tadpole("backup", "restore", "--repo", str(repo), "latest", "-i", str(key),
                   *(f"--node={n}={new.data_dir(n)}" for n in new.node_ids), *args)  # fmt: skip
    assert done.returncode == 0, done.stderr
    new.start()
    try:
        new.wait_leader(30, all_up=True)
        with new.client() as client:
            got = {kv.key: kv.value.decode() for kv in client.scan("pitr/")}
            revision = client.put("after-restore", "x").revision - 1
        return got, revision
    finally:
        for node_id in new.node_ids:
            new.kill(node_id)


def test_restore_to_a_revision_and_to_a_time(make_cluster: Any, tmp_path: pathlib.Path) -> None:
    secret, public = seal.generate_identity()
    key = tmp_path / "key"
    key.write_text(secret + "\n")
    repo = tmp_path / "repo"
    cluster: LocalCluster = make_cluster(3, extra_args=[
        "--set", f"backup_repo={repo}", "--set", f"backup_recipients={public}",
        "--set", "backup_interval_s=3600", "--set", "backup_wal_seal_s=1",
    ])  # fmt: skip
    history: list[tuple[int, str, str | None]] = []
    with cluster.client() as client:
        deadline = time.monotonic() + 30
        while not (repo / MARKER).exists() or not Repository.local(str(repo)).backup_ids():
            assert time.monotonic() < deadline, "no first backup"
            time.sleep(0.2)
        for i in range(60):
            k = f"pitr/{i % 17}"
            if i % 11 == 10:  # deletes too, through a txn to learn their revision
                history.append((client.txn([], [DeleteOp(k)]).revision, k, None))
            else:
                history.append((client.put(k, f"v{i}").revision, k, f"v{i}"))
        # a pause, a marked moment, a pause, then one more write
        time.sleep(1.0)
        moment = time.time()
        time.sleep(1.0)
        last = client.put("pitr/late", "late").revision
        history.append((last, "pitr/late", "late"))
        deadline = time.monotonic() + 30
        while wal.archived_through(Repository.local(str(repo))) < last:
            assert time.monotonic() < deadline, "the archive did not catch up"
            time.sleep(0.2)
    for node_id in cluster.node_ids:
        cluster.kill(node_id)
    verified = tadpole("backup", "verify", "--repo", str(repo), "-i", str(key))
    assert verified.returncode == 0, verified.stdout
    assert "archive: OK (timeline origin through " in verified.stdout
    target = history[len(history) // 2][0]
    got, revision = restored_state(tmp_path / "r1", repo, key, f"--to-revision={target}")
    assert revision == target
    assert got == state_at(history, target)
    got, revision = restored_state(
        tmp_path / "r2", repo, key,
        "--to-time=" + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        + f".{int(moment * 1e6) % 1_000_000:06d}+00:00",
    )  # fmt: skip
    assert "pitr/late" not in got and revision < last
    assert got == state_at(history, last - 1)
