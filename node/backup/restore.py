"""Restoring a backup into the data directories of a new cluster.

Like ``etcdutl snapshot restore``, a restore builds fresh data directories, one per
member of the new cluster, from which the members start as a new cluster holding the
backup's data:

* **system tier**: every member is seeded with the same state at the backup's
  revision (``consensus.raft.backend.seed_data_dir``): a Raft snapshot and a journal
  of the two entries it ends with. The revision counter continues from the backup's;
  the watch history and the request-id table start empty. The state is stamped with
  a new *timeline* (``wal.stamp_timeline``), so the new cluster's archived revisions
  never mix with those its predecessor wrote under the same numbers, and the backup
  schedule's state is dropped (its claims belong to the old cluster's terms).
* **CRDT tiers**: each key is written to the ``tiers.db`` of its owners under the new
  cluster's membership (the placement every node computes), so the cluster starts
  fully replicated with nothing to hand off.
* **retention archives**: every archive file to every member (their names hash the
  key, so the owners can't be told from them; they are small and compressed).

Everything is read and checked before any target is touched: a missing, corrupt or
undecryptable chunk stops the restore with the file named and no directory changed.
Each member's directory is built beside its target (``<dir>.restoring``) and renamed
into place; a target that is not empty is refused unless ``force``, which replaces it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.atrest import Keyring
from consensus.durable import atomic_write, fsync_dir
from consensus.raft.backend import seed_data_dir
from consensus.statemachine import SystemStateMachine
from node.backup.archive import BackupError, read_section, system_state
from node.backup.layout import ARCHIVE, ARCHIVE_DIR, TIERS_DB
from node.backup.manifest import Manifest
from node.backup.repository import Repository
from node.backup.wal import stamp_timeline
from node.replication.coordinator import owners
from node.replication.store import TierStore
from node.tiers.ops import TIERS

# retention.archive_name: <subspace>.<16 hex>.<day>-<day>.<16 hex>.jsonl.gz
_ARCHIVE_NAME = re.compile(r"^[a-z_]+\.[0-9a-f]{16}\.[0-9]{8}-[0-9]{8}\.[0-9a-f]{16}\.jsonl\.gz$")


@dataclass(frozen=True, slots=True)
class Restored:
    backup_id: str
    revision: int
    system_keys: int
    tier_keys: dict[str, int]
    copies_written: dict[str, int]  # member -> CRDT values written to its store


def restore(
    repo: Repository,
    manifest: Manifest,
    identities: Sequence[Any],
    targets: Mapping[str, str],
    *,
    force: bool = False,
    allow_incomplete: bool = False,
    system: SystemStateMachine | None = None,
    keyring: Keyring | None = None,
) -> Restored:
    """Build one data directory per member id in ``targets`` (id -> directory).
    ``system``: the system tier's state to seed instead of the backup's (a
    point-in-time restore: the backup's state with archived revisions replayed).
    ``keyring``: the new cluster's encryption-at-rest keys; its files are written
    encrypted from the first byte (without it, in plaintext)."""
    if not targets:
        raise BackupError("name the new cluster's members: --node ID=DATA_DIR (one each)")
    if not manifest.complete and not allow_incomplete:
        short = [f"{t} (missing {', '.join(s.missing)})" for t, s in manifest.tiers.items()
                 if not s.complete]  # fmt: skip
        raise BackupError(
            f"backup {manifest.id} is incomplete for {'; '.join(short)}; "
            "restore it anyway with --allow-incomplete"
        )
    for member, path in targets.items():
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)) and not force:
            raise BackupError(
                f"{path} (member {member}): not empty; restore refuses to overwrite a data "
                "directory without --force"
            )
    unknown = set(manifest.tiers) - set(TIERS) - {ARCHIVE}
    if unknown:
        raise BackupError(f"backup {manifest.id} holds tiers this version lacks: {sorted(unknown)}")
    # Read and check everything first.
    state = (
        system
        if system is not None
        else system_state(read_section(repo, manifest, "system", identities), manifest.revision)
    )
    state = stamp_timeline(state, secrets.token_hex(8))
    tiers = {name: read_section(repo, manifest, name, identities) for name in manifest.tiers}
    archives = tiers.pop(ARCHIVE, [])
    for name, _ in archives:
        if not _ARCHIVE_NAME.match(name):
            raise BackupError(f"backup {manifest.id}: archive name {name[:80]!r} is not one")
    members = sorted(targets)
    placed: dict[str, list[tuple[str, str, bytes]]] = {m: [] for m in members}
    for name, records in tiers.items():
        spec = TIERS[name]
        for key, value in records:
            for owner in owners(spec, key, members):
                placed[owner].append((name, key, value))
    for member in members:
        _build(member, targets[member], state, placed[member], archives, keyring)
    return Restored(
        backup_id=manifest.id,
        revision=state.revision,
        system_keys=len(state),
        tier_keys={
            **{name: len(records) for name, records in tiers.items()},
            **({ARCHIVE: len(archives)} if archives else {}),
        },
        copies_written={m: len(placed[m]) for m in members},
    )


def _build(
    member: str,
    target: str,
    state: Any,
    rows: list[tuple[str, str, bytes]],
    archives: list[tuple[str, bytes]],
    keyring: Keyring | None,
) -> None:
    target = os.path.abspath(target)
    staging = target + ".restoring"
    if os.path.exists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging, mode=0o700)
    seed_data_dir(staging, state, keyring, node_id=member)
    asyncio.run(_fill(os.path.join(staging, TIERS_DB), rows, keyring))
    if archives:
        folder = os.path.join(staging, ARCHIVE_DIR)
        os.makedirs(folder)
        for name, data in archives:
            atomic_write(os.path.join(folder, name), data)
        fsync_dir(folder)
    fsync_dir(staging)
    if os.path.exists(target):
        old = target + ".replaced"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old)
    else:
        os.replace(staging, target)
    fsync_dir(os.path.dirname(target))


async def _fill(path: str, rows: list[tuple[str, str, bytes]], keyring: Keyring | None) -> None:
    store = TierStore(path, keyring=keyring)
    try:
        for start in range(0, len(rows), 2048):
            await store.put_many(rows[start : start + 2048])
    finally:
        store.close()
