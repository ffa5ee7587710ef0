"""Writing, checking, reading and pruning backups in a repository.

A backup is gathered first (``node/backup/collect.py``), then written here: each
section's records are cut into chunks (``chunks.py``), each chunk not already in the
repository is sealed (zstd + age, ``seal.py``) and stored, and the manifest is
written last. Nothing here talks to a cluster.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from consensus.statemachine import KeyValue, SystemStateMachine
from node.backup import chunks, retention, seal
from node.backup.chunks import Record
from node.backup.layout import ORIGIN, TIMELINE_KEY
from node.backup.manifest import ChunkRef, Manifest, ManifestError, Section
from node.backup.repository import PACK_BYTES, Repository


class BackupError(Exception):
    """A backup can't be written, read or restored; the message says which file and why."""


@dataclass(slots=True)
class TierCopy:
    """A CRDT tier as gathered: joined records in key order, and who answered."""

    records: list[Record]
    members: tuple[str, ...]
    missing: tuple[str, ...]
    complete: bool


@dataclass(slots=True)
class Gathered:
    revision: int
    system: list[Record]
    tiers: dict[str, TierCopy]
    source: str
    members: tuple[str, ...]


@dataclass(slots=True)
class WriteStats:
    chunks_total: int = 0
    chunks_new: int = 0
    bytes_new: int = 0  # sealed bytes written by this backup
    bytes_total: int = 0  # sealed bytes the backup references
    plain_bytes: int = 0
    seconds: float = 0.0


# -- the system tier as records ------------------------------------------------------------


def system_records(state: SystemStateMachine) -> list[Record]:
    """Each key of the state as ``(key, msgpack [value, create_rev, mod_rev, version])``."""
    return [
        (kv.key, msgpack.packb([kv.value, kv.create_revision, kv.mod_revision, kv.version]))
        for kv in sorted(state.items(), key=lambda kv: kv.key)
    ]


def system_state(records: Iterable[Record], revision: int) -> SystemStateMachine:
    """The state the records describe at ``revision``; its history starts there
    (a watch from an earlier revision is told it was compacted)."""
    data: dict[str, KeyValue] = {}
    for key, raw in records:
        try:
            value, create, mod, version = msgpack.unpackb(raw, raw=False)
            kv = KeyValue(key, bytes(value), int(create), int(mod), int(version))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise BackupError(f"system key {key!r}: malformed record ({exc})") from exc
        if not 0 < kv.create_revision <= kv.mod_revision <= revision:
            raise BackupError(f"system key {key!r}: revisions out of order for revision {revision}")
        data[key] = kv
    return SystemStateMachine(revision=revision, compact_revision=revision, _data=data)


# -- write -------------------------------------------------------------------------------------


def new_backup_id(now_ns: int) -> str:
    """``YYYYMMDDTHHMMSS.ffffffZ-<8 hex>``: UTC to the microsecond, so ids sort in the
    order the backups were made (creates are serialized by the repository's lock)."""
    seconds, ns = divmod(now_ns, 10**9)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds))
    return f"{stamp}.{ns // 1000:06d}Z-{secrets.token_hex(4)}"


def write_backup(
    repo: Repository,
    gathered: Gathered,
    recipients: Sequence[str],
    *,
    now_ns: int | None = None,
    pack_bytes: int = PACK_BYTES,
    full: bool = False,
) -> tuple[Manifest, WriteStats]:
    """Store ``gathered`` as a new backup: new chunks sealed into packs, each pack
    written once it holds ``pack_bytes``, the manifest after the last pack. ``full``:
    reuse nothing, seal and store every chunk anew (an independent copy)."""
    started = time.monotonic()
    keys = [seal.parse_recipient(r) for r in recipients]
    if not keys:
        raise BackupError("no recipient: pass --recipient age1... (or --recipients-file)")
    now_ns = time.time_ns() if now_ns is None else now_ns
    known = {} if full else _known_chunks(repo, recipients)
    stats = WriteStats()
    pending: list[tuple[str, int, bytes]] = []  # (chunk id, plaintext size, sealed)
    pending_ids: set[str] = set()
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending_bytes
        if not pending:
            return
        pack_id = repo.put_pack(b"".join(sealed for _, _, sealed in pending))
        offset = 0
        for cid, size, sealed in pending:
            digest = hashlib.sha256(sealed).hexdigest()
            known[cid] = ChunkRef(cid, size, digest, len(sealed), pack_id, offset)
            offset += len(sealed)
        pending.clear()
        pending_ids.clear()
        pending_bytes = 0

    def store(records: list[Record]) -> list[str]:
        nonlocal pending_bytes
        ids = []
        for group in chunks.cut(records):
            plain = chunks.encode(group)
            cid = chunks.chunk_id(plain)
            if cid not in known and cid not in pending_ids:
                sealed = seal.seal(plain, keys)
                pending.append((cid, len(plain), sealed))
                pending_ids.add(cid)
                pending_bytes += len(sealed)
                stats.chunks_new += 1
                stats.bytes_new += len(sealed)
                if pending_bytes >= pack_bytes:
                    flush()
            ids.append(cid)
        return ids

    system_ids = store(gathered.system)
    tier_ids = {name: store(copy.records) for name, copy in sorted(gathered.tiers.items())}
    flush()

    def refs(ids: list[str]) -> tuple[ChunkRef, ...]:
        found = tuple(known[cid] for cid in ids)
        stats.chunks_total += len(found)
        stats.bytes_total += sum(r.stored_size for r in found)
        stats.plain_bytes += sum(r.size for r in found)
        return found

    system = Section(keys=len(gathered.system), chunks=refs(system_ids))
    tiers = {
        name: Section(
            keys=len(copy.records),
            chunks=refs(tier_ids[name]),
            members=copy.members,
            missing=copy.missing,
            complete=copy.complete,
        )
        for name, copy in sorted(gathered.tiers.items())
    }
    manifest = Manifest(
        timeline=_timeline(gathered.system),
        id=new_backup_id(now_ns),
        created_ns=now_ns,
        revision=gathered.revision,
        system=system,
        tiers=tiers,
        recipients=tuple(recipients),
        source=gathered.source,
        members=gathered.members,
    )
    repo.write_manifest(manifest)
    stats.seconds = time.monotonic() - started
    return manifest, stats


def _timeline(system: list[Record]) -> str:
    """The timeline the system tier's records carry (node/backup/wal.py), from its key."""
    for key, raw in system:
        if key == TIMELINE_KEY:
            try:
                value = msgpack.unpackb(raw, raw=False)[0]
                return bytes(value).decode("ascii", "replace")
            except (ValueError, TypeError, IndexError, msgpack.UnpackException):
                break
    return ORIGIN


def _known_chunks(repo: Repository, recipients: Sequence[str]) -> dict[str, ChunkRef]:
    """Chunks in packs that are there and named by a readable manifest sealed to the same
    recipients: reused as they are. A pack no manifest names (left by an interrupted
    backup) is not trusted, and after the recipients change every chunk is sealed anew
    (a key rotated because it leaked must not still open the new backup)."""
    known: dict[str, ChunkRef] = {}
    stored = repo.stored_packs()
    manifests, _bad = repo.manifests()
    wanted = sorted(recipients)
    for m in manifests:
        if sorted(m.recipients) != wanted:
            continue
        for section in m.sections().values():
            for ref in section.chunks:
                if ref.pack in stored:
                    known[ref.id] = ref
    return known


# -- verify and read ---------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    backup_id: str
    chunks_checked: int = 0
    bytes_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(repo: Repository, manifest: Manifest, identities: Sequence[Any] | None) -> Report:
    """Re-read every chunk the backup names: present, the stored bytes' SHA-256 as
    recorded; with ``identities`` also decrypted, decompressed, its plaintext SHA-256
    equal to its id and its records decodable, and each section's key count as
    recorded. Every problem names the chunk's file."""
    report = Report(manifest.id)
    seen: dict[str, tuple[str | None, int]] = {}  # chunk id -> (problem, records)
    for name, section in manifest.sections().items():
        keys, broken = 0, False
        for ref in section.chunks:
            if ref.id not in seen:
                seen[ref.id] = _check_chunk(repo, ref, identities)
                report.chunks_checked += 1
                report.bytes_checked += ref.stored_size
                if seen[ref.id][0]:
                    report.problems.append(f"{name}: {seen[ref.id][0]}")
            problem, count = seen[ref.id]
            broken = broken or problem is not None
            keys += count
        if identities is not None and not broken and keys != section.keys:
            report.problems.append(
                f"{name}: chunks hold {keys} keys, the manifest says {section.keys}"
            )
    return report


def describe(repo: Repository, ref: ChunkRef) -> str:
    """Where a chunk is, for people: its pack file, offset and id."""
    return f"{repo.describe_pack(ref.pack)} @{ref.offset} (chunk {ref.id[:16]})"


def _check_chunk(
    repo: Repository, ref: ChunkRef, identities: Sequence[Any] | None
) -> tuple[str | None, int]:
    where = describe(repo, ref)
    try:
        stored = repo.read_chunk(ref.pack, ref.offset, ref.stored_size)
    except FileNotFoundError:
        return f"{where}: pack missing", 0
    except OSError as exc:
        return f"{where}: unreadable ({exc.strerror or exc})", 0
    if len(stored) != ref.stored_size:
        return f"{where}: truncated (the pack ends {ref.stored_size - len(stored)} bytes early)", 0
    if hashlib.sha256(stored).hexdigest() != ref.stored_sha256:
        return f"{where}: corrupt (the stored bytes' checksum does not match the manifest)", 0
    if identities is None:
        return None, 0
    try:
        records = _open(ref, stored, identities)
    except BackupError as exc:
        return f"{where}: {exc}", 0
    return None, len(records)


def _open(ref: ChunkRef, stored: bytes, identities: Sequence[Any]) -> list[Record]:
    try:
        plain = seal.unseal(stored, identities, max_size=ref.size)
    except seal.SealError as exc:
        raise BackupError(str(exc)) from exc
    if chunks.chunk_id(plain) != ref.id:
        raise BackupError("decrypted, but its content does not match its id (corrupt)")
    try:
        return chunks.decode(plain)
    except chunks.ChunkError as exc:
        raise BackupError(str(exc)) from exc


def read_section(
    repo: Repository, manifest: Manifest, name: str, identities: Sequence[Any]
) -> list[Record]:
    """Every record of a section, checked; BackupError naming the chunk file if one
    can't be used."""
    section = manifest.sections()[name]
    out: list[Record] = []
    for ref in section.chunks:
        where = describe(repo, ref)
        try:
            stored = repo.read_chunk(ref.pack, ref.offset, ref.stored_size)
        except FileNotFoundError:
            raise BackupError(f"{where}: pack missing (backup {manifest.id}, {name})") from None
        except OSError as exc:
            raise BackupError(f"{where}: unreadable ({exc.strerror or exc})") from exc
        if hashlib.sha256(stored).hexdigest() != ref.stored_sha256:
            raise BackupError(f"{where}: corrupt (checksum does not match the manifest)")
        try:
            out.extend(_open(ref, stored, identities))
        except BackupError as exc:
            raise BackupError(f"{where}: {exc}") from exc
    if len(out) != section.keys:
        raise BackupError(
            f"backup {manifest.id}, {name}: chunks hold {len(out)} keys, "
            f"the manifest says {section.keys}"
        )
    return out


# -- prune -------------------------------------------------------------------------------------


@dataclass(slots=True)
class PruneResult:
    kept: list[str]
    removed: list[str]
    packs_removed: int
    bytes_removed: int


def prune(
    repo: Repository,
    now_ns: int,
    *,
    schedule: retention.Schedule = retention.SPEC_SCHEDULE,
    dry_run: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> PruneResult:
    """Delete the backups the schedule does not keep, then every pack no kept backup
    needs a chunk of. A pack that holds one needed chunk is kept whole (its other
    chunks are dead weight until a future repack). A manifest that can't be read stops
    the prune before anything is deleted: its packs can't be told apart from garbage."""
    manifests, bad = repo.manifests()
    if bad:
        raise BackupError(
            "refusing to prune: some manifests can't be read, so the chunks they need "
            "are unknown: " + "; ".join(str(e) for e in bad)
        )
    keep_ids = retention.keep(((m.id, m.created_ns) for m in manifests), now_ns, schedule)
    kept = [m for m in manifests if m.id in keep_ids]
    removed = [m for m in manifests if m.id not in keep_ids]
    needed: set[str] = set().union(*(m.pack_ids() for m in kept))
    garbage = sorted(repo.stored_packs() - needed)
    result = PruneResult(
        kept=[m.id for m in kept],
        removed=[m.id for m in removed],
        packs_removed=len(garbage),
        bytes_removed=sum(repo.pack_size(p) for p in garbage),
    )
    if dry_run:
        return result
    for m in removed:  # manifests first: a crash midway leaves garbage, never a hole
        repo.delete_manifest(m.id)
        log(f"removed backup {m.id}")
    for pack_id in garbage:
        repo.delete_pack(pack_id)
    return result


__all__ = [
    "BackupError",
    "Gathered",
    "ManifestError",
    "PruneResult",
    "Report",
    "TierCopy",
    "WriteStats",
    "prune",
    "read_section",
    "system_records",
    "system_state",
    "verify",
    "write_backup",
]
