"""``tadpole backup``: create, list, verify, restore and prune backups (docs/backup.md).

Loaded only when it runs. ``create`` needs the operator token (``--token-file``): it
reads every member's raw replicas. The repository is ``--repo`` or
``$TADPOLE_BACKUP_REPO``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from typing import Any, NoReturn

import click

from node.backup import archive, seal, wal
from node.backup.archive import BackupError
from node.backup.collect import gather
from node.backup.manifest import Manifest, ManifestError
from node.backup.repository import Repository, RepositoryError
from node.backup.restore import restore
from node.cli.app import EXIT_FAILURE, EXIT_USAGE, _fail, write_new_private_file
from node.config import ConfigError, NodeConfig

__all__ = ["backup"]

ENV_REPO = "TADPOLE_BACKUP_REPO"
_ERRORS = (BackupError, ManifestError, RepositoryError, seal.SealError, OSError)

_REPO = click.option(
    "--repo",
    envvar=ENV_REPO,
    required=True,
    metavar="DIR",
    help=f"The backup repository (a local directory; env {ENV_REPO}).",
)
_IDENTITY = click.option(
    "--identity",
    "-i",
    "identity_files",
    multiple=True,
    metavar="FILE",
    help="age identity file (or OpenSSH private key) that opens the backup; repeatable.",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _stop(exc: BaseException) -> NoReturn:
    _fail(str(exc), EXIT_FAILURE)


def _identities(files: tuple[str, ...]) -> list[Any]:
    found: list[Any] = []
    for path in files:
        try:
            found.extend(seal.load_identities(path))
        except seal.SealError as exc:
            _fail(str(exc), EXIT_USAGE)
    return found


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


@click.group()
def backup() -> None:
    """Backups of the whole cluster: system tier, CRDT tiers; zstd + age encrypted."""


@backup.command(name="keygen")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Identity file to write."
)
def keygen_command(out: str) -> None:
    """Write a new age identity (mode 0600) and print its public recipient."""
    secret, public = seal.generate_identity()
    text = f"# created: {_when(time.time_ns())}\n# public key: {public}\n{secret}\n"
    write_new_private_file(out, text, "a key")
    click.echo(public)


@backup.command(name="create")
@_REPO
@click.option("--recipient", "-r", "recipients", multiple=True, metavar="KEY",
              help="age (age1...) or SSH public key to encrypt to; repeatable.")  # fmt: skip
@click.option("--recipients-file", "-R", "recipient_files", multiple=True, metavar="FILE",
              help="File of recipients, one a line; repeatable.")  # fmt: skip
@click.option("--allow-incomplete", is_flag=True,
              help="Keep a backup even if too few members answered for some tier.")  # fmt: skip
@_JSON
@click.pass_obj
def create_command(
    settings: Any,
    repo: str,
    recipients: tuple[str, ...],
    recipient_files: tuple[str, ...],
    allow_incomplete: bool,
    as_json: bool,
) -> None:
    """Back up the cluster into the repository (created if the directory is new)."""
    keys = list(recipients)
    for path in recipient_files:
        try:
            with open(path, encoding="utf-8") as f:
                keys.extend(seal.recipients_from_lines(f))
        except OSError as exc:
            _fail(f"--recipients-file {path}: {exc.strerror or exc}", EXIT_USAGE)
    if not keys:
        _fail("no recipient: pass --recipient age1... or --recipients-file FILE", EXIT_USAGE)
    try:
        for key in keys:
            seal.parse_recipient(key)
    except seal.SealError as exc:
        _fail(str(exc), EXIT_USAGE)
    if not settings.token:
        _fail("backup create needs the operator token: --token-file FILE", EXIT_USAGE)
    try:
        repository = Repository.local(repo, create=True)
        with repository.store.exclusive():
            started = time.monotonic()
            gathered = asyncio.run(
                gather(
                    settings.endpoints,
                    settings.token,
                    timeout_s=max(settings.timeout_s, 60.0),
                    tls=settings.tls,
                )
            )
            incomplete = {t: c.missing for t, c in gathered.tiers.items() if not c.complete}
            if incomplete and not allow_incomplete:
                named = "; ".join(f"{t}: {', '.join(m)} did not answer"
                                  for t, m in incomplete.items())  # fmt: skip
                _fail(
                    f"not backed up: too few members answered to hold every acknowledged "
                    f"write ({named}); retry, or keep it anyway with --allow-incomplete",
                    EXIT_FAILURE,
                )
            manifest, stats = archive.write_backup(repository, gathered, keys)
            took = time.monotonic() - started
    except _ERRORS as exc:
        _stop(exc)
    keys_total = manifest.system.keys + sum(s.keys for s in manifest.tiers.values())
    if as_json:
        click.echo(json.dumps({
            "id": manifest.id, "revision": manifest.revision, "keys": keys_total,
            "chunks": stats.chunks_total, "chunks_new": stats.chunks_new,
            "bytes_new": stats.bytes_new, "bytes_total": stats.bytes_total,
            "plain_bytes": stats.plain_bytes, "seconds": round(took, 3),
            "complete": manifest.complete,
        }))  # fmt: skip
        return
    click.echo(f"backup {manifest.id}: revision {manifest.revision}, {keys_total} keys")
    for name, section in manifest.sections().items():
        note = "" if section.complete else f"  INCOMPLETE (missing {', '.join(section.missing)})"
        click.echo(f"  {name:<11} {section.keys:>8} keys  {len(section.chunks):>6} chunks{note}")
    click.echo(
        f"  {stats.chunks_new} of {stats.chunks_total} chunks new: stored {_size(stats.bytes_new)} "
        f"of {_size(stats.bytes_total)} ({_size(stats.plain_bytes)} before zstd) in {took:.2f} s"
    )


@backup.command(name="list")
@_REPO
@_JSON
def list_command(repo: str, as_json: bool) -> None:
    """The repository's backups, oldest first."""
    try:
        repository = Repository.local(repo)
        manifests, bad = repository.manifests()
    except _ERRORS as exc:
        _stop(exc)
    if as_json:
        click.echo(json.dumps([_summary(m) for m in manifests], indent=1))
    else:
        click.echo(f"{'ID':<32}  {'CREATED':<23}  {'REVISION':>8}  {'KEYS':>8}  "
                   f"{'SIZE':>10}  STATE")  # fmt: skip
        for m in manifests:
            s = _summary(m)
            state = "complete" if m.complete else "INCOMPLETE"
            click.echo(f"{m.id:<32}  {_when(m.created_ns):<23}  {m.revision:>8}  {s['keys']:>8}  "
                       f"{_size(s['stored_bytes']):>10}  {state}")  # fmt: skip
    for timeline in wal.timelines(repository) if not as_json else ():
        segments = wal.segments(repository, timeline)
        gaps = [f"{s.first}..{s.last}" for s in segments if s.gap]
        click.echo(f"timeline {timeline}: system tier archived for point-in-time recovery "
                   f"through revision {segments[-1].last} ({len(segments)} segments"
                   f"{'; never archived: ' + ', '.join(gaps) if gaps else ''})")  # fmt: skip
    for problem in bad:
        click.echo(f"unreadable: {problem}", err=True)
    if bad:
        raise SystemExit(EXIT_FAILURE)


def _summary(m: Manifest) -> dict[str, Any]:
    sections = m.sections().values()
    return {
        "id": m.id,
        "created": _when(m.created_ns),
        "revision": m.revision,
        "keys": sum(s.keys for s in sections),
        "chunks": sum(len(s.chunks) for s in sections),
        "stored_bytes": sum(c.stored_size for s in sections for c in s.chunks),
        "complete": m.complete,
    }


@backup.command(name="verify")
@_REPO
@click.argument("backup_ids", nargs=-1, metavar="[ID ...]")
@_IDENTITY
def verify_command(repo: str, backup_ids: tuple[str, ...], identity_files: tuple[str, ...]) -> None:
    """Re-read every chunk of the backups (default: all, and the point-in-time archive)
    and check it.

    Without --identity: every chunk is present and its stored bytes match the
    manifest's checksum, and the archive has no missing revisions. With it: every chunk
    also decrypts, decompresses, matches its id and decodes, each tier holds the keys
    the manifest counts, and every archive segment decrypts and decodes. Exit 1 naming
    every problem found."""
    identities = _identities(identity_files) or None
    try:
        repository = Repository.local(repo)
        ids = list(backup_ids) or repository.backup_ids()
        failed = False
        for backup_id in ids:
            try:
                manifest = repository.read_manifest(backup_id)
            except (ManifestError, RepositoryError) as exc:
                click.echo(f"{backup_id}: FAILED: {exc}")
                failed = True
                continue
            report = archive.verify(repository, manifest, identities)
            depth = "decrypted and checked" if identities else "checksums (no identity)"
            if report.ok:
                click.echo(f"{backup_id}: OK ({report.chunks_checked} chunks, "
                           f"{_size(report.bytes_checked)}, {depth})")  # fmt: skip
            else:
                failed = True
                click.echo(f"{backup_id}: FAILED ({len(report.problems)} problems)")
                for problem in report.problems:
                    click.echo(f"  {problem}")
        if not backup_ids and wal.segments(repository):
            problems = wal.verify(repository, identities)
            through = ", ".join(
                f"{t} through {wal.archived_through(repository, t)}"
                for t in wal.timelines(repository)
            )
            if problems:
                failed = True
                click.echo(f"archive: FAILED ({len(problems)} problems)")
                for problem in problems:
                    click.echo(f"  {problem}")
            else:
                depth = "decrypted and checked" if identities else "continuity only (no identity)"
                click.echo(f"archive: OK (timeline {through}, {depth})")
    except _ERRORS as exc:
        _stop(exc)
    if not ids:
        click.echo("no backups in the repository")
    if failed:
        raise SystemExit(EXIT_FAILURE)


def _targets(pairs: tuple[str, ...]) -> dict[str, str]:
    targets: dict[str, str] = {}
    for pair in pairs:
        member, sep, path = pair.partition("=")
        if not sep or not member or not path:
            _fail(f"--node {pair!r}: expected ID=DATA_DIR", EXIT_USAGE)
        if member in targets:
            _fail(f"--node {member}: named twice", EXIT_USAGE)
        targets[member] = path
    if len(set(map(os.path.abspath, targets.values()))) != len(targets):
        _fail("--node: two members share a data directory", EXIT_USAGE)
    return targets


@backup.command(name="restore")
@_REPO
@click.argument("backup_id")
@_IDENTITY
@click.option(
    "--node",
    "nodes",
    multiple=True,
    metavar="ID=DATA_DIR",
    required=True,
    help="A member of the new cluster and its data directory; one per member.",
)
@click.option("--force", is_flag=True, help="Replace data directories that are not empty.")
@click.option("--allow-incomplete", is_flag=True, help="Restore a backup marked incomplete.")
@click.option(
    "--to-revision",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Point in time: the system tier exactly as it was after revision N.",
)
@click.option("--to-time", default=None, metavar="TIME",
              help="Point in time: the system tier after the last revision committed at or "
              "before TIME (ISO 8601 with a zone, e.g. 2026-12-05T04:00:00Z).")  # fmt: skip
@click.option("--encryption-key-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The new cluster's encryption-at-rest keyring: its files are written"
              " encrypted from the start.")  # fmt: skip
def restore_command(
    repo: str,
    backup_id: str,
    identity_files: tuple[str, ...],
    nodes: tuple[str, ...],
    force: bool,
    allow_incomplete: bool,
    to_revision: int | None,
    to_time: str | None,
    encryption_key_file: str | None,
) -> None:
    """Build a new cluster's data directories from a backup (`latest` for the newest).

    With --to-revision or --to-time, the system tier is restored to that point: the
    newest backup before it (or the one named) with the archived revisions after it
    replayed. Start each member with its --data-dir and the same --id and peers as
    named here."""
    identities = _identities(identity_files)
    if not identities:
        _fail("restore needs the private key: --identity FILE", EXIT_USAGE)
    if to_revision is not None and to_time is not None:
        _fail("give --to-revision or --to-time, not both", EXIT_USAGE)
    to_time_ns = _parse_time(to_time) if to_time is not None else None
    targets = _targets(nodes)
    keyring = None
    if encryption_key_file is not None:
        try:
            keyring = NodeConfig(encryption_key_file=encryption_key_file).keyring()
        except ConfigError as exc:
            _fail(str(exc), EXIT_USAGE)
    started = time.monotonic()
    try:
        repository = Repository.local(repo)
        manifest = _base(repository, backup_id, to_revision, to_time_ns, allow_incomplete)
        state = None
        if to_revision is not None or to_time_ns is not None:
            base = archive.system_state(
                archive.read_section(repository, manifest, "system", identities),
                manifest.revision,
            )
            timeline = wal.timeline_of(base)
            revisions = wal.load(repository, identities, timeline, manifest.revision, to_revision)
            state = wal.replay(base, revisions, to_revision=to_revision, to_time_ns=to_time_ns)
        done = restore(
            repository, manifest, identities, targets, force=force,
            allow_incomplete=allow_incomplete, system=state, keyring=keyring,
        )  # fmt: skip
    except _ERRORS as exc:
        _stop(exc)
    tiers = ", ".join(f"{t} {n}" for t, n in done.tier_keys.items())
    replayed = ""
    if state is not None and state.revision > manifest.revision:
        replayed = f" + archived revisions {manifest.revision + 1}..{state.revision}"
    click.echo(
        f"restored backup {done.backup_id}{replayed}: system tier at revision {done.revision}, "
        f"{done.system_keys} keys; {tiers} in {time.monotonic() - started:.2f} s"
    )
    for member, count in done.copies_written.items():
        click.echo(f"  {member}: {targets[member]} ({count} tier values)")


def _parse_time(text: str) -> int:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--to-time {text!r}: not an ISO 8601 time (2026-12-05T04:00:00Z)", EXIT_USAGE)
    if when.tzinfo is None:
        _fail(f"--to-time {text!r}: give a time zone (Z, +01:00, ...)", EXIT_USAGE)
    return int(when.timestamp() * 1e9)


def _base(
    repo: Repository,
    backup_id: str,
    to_revision: int | None,
    to_time_ns: int | None,
    allow_incomplete: bool,
) -> Manifest:
    """The backup to start from: the one named, or with `latest` the newest readable one
    (complete unless allowed) at or before the point in time."""
    if backup_id != "latest":
        manifest = repo.read_manifest(backup_id)
        if to_revision is not None and manifest.revision > to_revision:
            raise BackupError(
                f"backup {backup_id} is at revision {manifest.revision}, after {to_revision}"
            )
        if to_time_ns is not None and manifest.created_ns > to_time_ns:
            raise BackupError(f"backup {backup_id} was made after that time")
        return manifest
    readable, _ = repo.manifests()
    usable = [
        m
        for m in readable
        if (m.complete or allow_incomplete)
        and (to_revision is None or m.revision <= to_revision)
        and (to_time_ns is None or m.created_ns <= to_time_ns)
    ]
    if not usable:
        raise BackupError("no readable backup in the repository at or before that point")
    return usable[-1]


@backup.command(name="prune")
@_REPO
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def prune_command(repo: str, dry_run: bool) -> None:
    """Keep the newest backup of each of the last 24 hours, 30 days and 52 weeks;
    remove the other backups, every pack no kept backup needs, and the point-in-time
    archive's segments from before the oldest kept backup."""
    try:
        repository = Repository.local(repo)
        with repository.store.exclusive():
            result = archive.prune(repository, time.time_ns(), dry_run=dry_run)
            segments = wal.prune(repository, kept=set(result.kept), dry_run=dry_run)
    except _ERRORS as exc:
        _stop(exc)
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"kept {_count(len(result.kept), 'backup')}; {verb} "
        f"{_count(len(result.removed), 'backup')} and {_count(result.packs_removed, 'pack')} "
        f"({_size(result.bytes_removed)}), and {_count(len(segments), 'archive segment')} "
        "no kept backup can replay"
    )
    for backup_id in result.removed:
        click.echo(f"  {verb} {backup_id}")
