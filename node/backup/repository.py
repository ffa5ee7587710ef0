"""Where backups live: a small storage interface and its local-directory form.

Layout of a local repository (``docs/backup.md``)::

    <repo>/tadpole-backup.json          marks the directory: {"format": 1, "id": ...}
    <repo>/packs/<ab>/<sha256>          a pack: sealed chunks (each a whole age file)
                                        one after another, named by the SHA-256 of the
                                        pack's bytes; <ab> = its first 2 hex digits
    <repo>/backups/<backup id>.json     a backup's manifest: for every chunk, its pack,
                                        offset, length and checksums

Chunks are small (a few KiB), so they are stored in packs of up to ``PACK_BYTES``: a
backup writes a handful of files, one fsync each, instead of one file (and two fsyncs)
per chunk. Every file is written to a temporary name, fsynced, renamed into place and
its directory fsynced, so a crash leaves the old file or the new one, and a manifest
is written only after every pack it names. Packs are immutable: a chunk already in a
pack is not written again (that is the incremental part).

:class:`BlobStore` is what a repository needs of storage -- put, get (whole or a
range), list, delete of named blobs -- so an object store can stand in for the
directory later.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from typing import Final, Protocol

from consensus.durable import atomic_write, fsync_dir
from node.backup.manifest import Manifest, ManifestError, from_json

REPOSITORY_FORMAT: Final = 1
MARKER: Final = "tadpole-backup.json"


class RepositoryError(Exception):
    """The repository is missing, not a repository, or not readable as one."""


class BlobStore(Protocol):
    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` durably, replacing any blob of that name."""
        ...

    def get(self, name: str) -> bytes:
        """The blob's bytes; FileNotFoundError if there is none."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer if the blob ends sooner)."""
        ...

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int:
        """The blob's length in bytes (0 if there is none)."""
        ...

    def names(self, prefix: str) -> Iterator[str]:
        """Names of the blobs under ``prefix`` (a folder, ``/``-separated)."""
        ...

    def delete(self, name: str) -> None: ...

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """A lock held by whoever writes the store (create, prune)."""
        ...

    def describe(self, name: str) -> str:
        """Where a blob is, for people (a path, a URL)."""
        ...


class LocalDirectory:
    """:class:`BlobStore` over a local directory; names are relative paths."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _path(self, name: str) -> str:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"bad blob name {name!r}")
        return os.path.join(self.root, *parts)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
            fsync_dir(os.path.dirname(folder))
        atomic_write(path, data)

    def get(self, name: str) -> bytes:
        with open(self._path(name), "rb") as f:
            return f.read()

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        with open(self._path(name), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def size(self, name: str) -> int:
        try:
            return os.path.getsize(self._path(name))
        except FileNotFoundError:
            return 0

    def names(self, prefix: str) -> Iterator[str]:
        top = self._path(prefix)
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            for name in sorted(files):
                if not name.endswith(".tmp"):
                    yield f"{rel}/{name}"

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(os.path.dirname(path))

    def describe(self, name: str) -> str:
        return self._path(name)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the directory's lock: one writer (create, prune) at a time, so a
        prune never deletes the chunks of a backup still being written."""
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RepositoryError(
                    f"{self.root}: another backup or prune is writing this repository"
                ) from None
            yield
        finally:
            os.close(fd)


PACK_BYTES: Final = 8 << 20


def pack_name(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


def manifest_name(backup_id: str) -> str:
    return f"backups/{backup_id}.json"


class Repository:
    """Backups in a :class:`BlobStore`: packs of chunks, manifests by backup id."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    @classmethod
    def local(cls, path: str, *, create: bool = False) -> Repository:
        """The repository in directory ``path``. ``create``: make it if the directory
        is missing or empty; a non-empty directory that is not a repository is refused."""
        repo = cls(LocalDirectory(path))
        if repo.store.exists(MARKER):
            repo._check_marker()
            return repo
        if not create:
            raise RepositoryError(f"{path}: not a backup repository (no {MARKER})")
        if os.path.isdir(path) and os.listdir(path):
            raise RepositoryError(
                f"{path}: a non-empty directory that is not a backup repository; "
                "choose an empty or new directory"
            )
        os.makedirs(path, exist_ok=True)
        marker = {"format": REPOSITORY_FORMAT, "id": secrets.token_hex(8)}
        repo.store.put(MARKER, json.dumps(marker).encode() + b"\n")
        return repo

    def _check_marker(self) -> None:
        where = self.store.describe(MARKER)
        try:
            marker = json.loads(self.store.get(MARKER))
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"{where}: unreadable ({exc})") from exc
        fmt = marker.get("format") if isinstance(marker, dict) else None
        if fmt != REPOSITORY_FORMAT:
            raise RepositoryError(
                f"{where}: repository format {fmt!r}; this version reads {REPOSITORY_FORMAT}"
            )

    # -- packs -------------------------------------------------------------------------

    def put_pack(self, data: bytes) -> str:
        """Store a pack; its name is the SHA-256 of its bytes."""
        pack_id = hashlib.sha256(data).hexdigest()
        self.store.put(pack_name(pack_id), data)
        return pack_id

    def read_chunk(self, pack_id: str, offset: int, length: int) -> bytes:
        """A sealed chunk's bytes from its pack; FileNotFoundError if the pack is gone."""
        return self.store.get_range(pack_name(pack_id), offset, length)

    def pack_size(self, pack_id: str) -> int:
        return self.store.size(pack_name(pack_id))

    def delete_pack(self, pack_id: str) -> None:
        self.store.delete(pack_name(pack_id))

    def stored_packs(self) -> set[str]:
        return {name.rsplit("/", 1)[1] for name in self.store.names("packs")}

    def describe_pack(self, pack_id: str) -> str:
        return self.store.describe(pack_name(pack_id))

    # -- manifests -----------------------------------------------------------------------

    def write_manifest(self, manifest: Manifest) -> None:
        self.store.put(manifest_name(manifest.id), manifest.to_json())

    def read_manifest(self, backup_id: str) -> Manifest:
        name = manifest_name(backup_id)
        try:
            data = self.store.get(name)
        except FileNotFoundError:
            raise RepositoryError(f"no backup {backup_id!r} in this repository") from None
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"{self.store.describe(name)}: {exc}") from exc
        manifest = from_json(data, self.store.describe(name))
        if manifest.id != backup_id:
            # prune deletes by id: a manifest under another name would keep its packs'
            # owner listed while its packs went away
            raise ManifestError(
                f"{self.store.describe(name)}: holds backup {manifest.id}, not {backup_id}"
            )
        return manifest

    def backup_ids(self) -> list[str]:
        """Every backup's id, oldest first (ids begin with their UTC time)."""
        return sorted(
            name.rsplit("/", 1)[1].removesuffix(".json")
            for name in self.store.names("backups")
            if name.endswith(".json")
        )

    def manifests(self) -> tuple[list[Manifest], list[ManifestError]]:
        """Every readable manifest, oldest first (by creation time), and the problems
        with the others."""
        found: list[Manifest] = []
        bad: list[ManifestError] = []
        for backup_id in self.backup_ids():
            try:
                found.append(self.read_manifest(backup_id))
            except ManifestError as exc:
                bad.append(exc)
        found.sort(key=lambda m: (m.created_ns, m.id))
        return found, bad

    def delete_manifest(self, backup_id: str) -> None:
        self.store.delete(manifest_name(backup_id))
