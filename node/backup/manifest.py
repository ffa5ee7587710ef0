"""A backup's manifest: what it holds and where. Pure: JSON in, JSON out, checked.

A manifest is the backup: it names, for the system tier and for each CRDT tier, the
chunks that hold its records in key order, each with the SHA-256 of its plaintext
(its id), its plaintext size, where its sealed bytes are (pack, offset, length) and
their SHA-256 (so ``verify`` checks every stored byte even without the private key).
It is written last, after every pack it names is durable, so a backup either has a
manifest that is whole or does not exist. Manifests are not encrypted: they hold
sizes, counts, times and hashes, never a key or a value.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Final

MANIFEST_FORMAT: Final = 1
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that is not one this version can use."""


@dataclass(frozen=True, slots=True)
class ChunkRef:
    id: str  # SHA-256 of the plaintext (hex)
    size: int  # plaintext bytes
    stored_sha256: str  # SHA-256 of the sealed bytes (hex)
    stored_size: int
    pack: str  # the pack holding the sealed bytes (its SHA-256, hex)
    offset: int  # where they start in the pack


@dataclass(frozen=True, slots=True)
class Section:
    """One tier's records: its chunks in key order."""

    keys: int
    chunks: tuple[ChunkRef, ...]
    # CRDT tiers: the members whose copies were joined, and those that did not answer.
    members: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Manifest:
    id: str
    created_ns: int
    revision: int  # the system tier's revision at the cut
    system: Section
    tiers: dict[str, Section]
    recipients: tuple[str, ...]
    source: str  # the member that gave the system tier
    members: tuple[str, ...]  # the cluster's members at the time
    format: int = MANIFEST_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    timeline: str = "origin"  # the system tier's history it belongs to (backup/wal.py)

    def sections(self) -> dict[str, Section]:
        return {"system": self.system, **self.tiers}

    def chunk_ids(self) -> set[str]:
        return {c.id for s in self.sections().values() for c in s.chunks}

    def pack_ids(self) -> set[str]:
        return {c.pack for s in self.sections().values() for c in s.chunks}

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.tiers.values())

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode()


def from_json(data: bytes, where: str) -> Manifest:
    """Parse and check a manifest; ManifestError naming ``where`` and the problem."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: not a manifest object")
    fmt = raw.get("format")
    if fmt != MANIFEST_FORMAT:
        raise ManifestError(
            f"{where}: manifest format {fmt!r}; this version reads {MANIFEST_FORMAT} "
            "(a newer tadpole wrote it?)"
        )
    try:
        backup_id = _str(raw, "id")
        if not _ID.match(backup_id):
            raise ValueError(f"id {backup_id!r} is not a backup id")
        return Manifest(
            id=backup_id,
            created_ns=_int(raw, "created_ns"),
            revision=_int(raw, "revision"),
            system=_section(raw.get("system")),
            tiers={str(k): _section(v) for k, v in _dict(raw, "tiers").items()},
            recipients=tuple(str(r) for r in _list(raw, "recipients")),
            source=_str(raw, "source"),
            members=tuple(str(m) for m in _list(raw, "members")),
            extra=dict(raw.get("extra") or {}),
            timeline=str(raw.get("timeline", "origin")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{where}: malformed manifest: {exc}") from exc


def _section(raw: Any) -> Section:
    if not isinstance(raw, dict):
        raise TypeError("a section is not an object")
    chunks = []
    for c in _list(raw, "chunks"):
        if not isinstance(c, dict):
            raise TypeError("a chunk entry is not an object")
        ref = ChunkRef(
            id=_str(c, "id"),
            size=_int(c, "size"),
            stored_sha256=_str(c, "stored_sha256"),
            stored_size=_int(c, "stored_size"),
            pack=_str(c, "pack"),
            offset=_int(c, "offset"),
        )
        if not all(_HEX64.match(h) for h in (ref.id, ref.stored_sha256, ref.pack)):
            raise ValueError(f"chunk {ref.id[:16]!r}: ids must be 64 hex digits")
        chunks.append(ref)
    return Section(
        keys=_int(raw, "keys"),
        chunks=tuple(chunks),
        members=tuple(str(m) for m in raw.get("members", ())),
        missing=tuple(str(m) for m in raw.get("missing", ())),
        complete=bool(raw.get("complete", True)),
    )


def _str(raw: dict[str, Any], name: str) -> str:
    value = raw[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def _int(raw: dict[str, Any], name: str) -> int:
    value = raw[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{name} must be a non-negative integer")
    return value


def _list(raw: dict[str, Any], name: str) -> list[Any]:
    value = raw[name]
    if not isinstance(value, list):
        raise TypeError(f"{name} must be a list")
    return value


def _dict(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw[name]
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be an object")
    return value
