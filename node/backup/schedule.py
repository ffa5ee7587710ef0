"""Backups the cluster runs itself: hourly incrementals and daily fulls, on the leader.

Every node runs a :class:`BackupScheduler` when ``backup_repo`` is set; only the one
that leads the Raft group acts. The schedule's state lives in the system tier under
:data:`SCHEDULE_KEY` (replicated, linearizable, so it survives a leader change and every
node can export it):

    {"last_success_ns", "last_full_ns", "last_id", "last_attempt_ns", "last_error",
     "running_by", "claimed_ns"}

A round on the leader: read the state (linearizably), ask :func:`decide` whether a
backup is due, *claim* it by writing ``running_by`` with a compare on the state's
mod revision (so of two nodes that both think they lead, one claim wins), run it --
gather from every member, write into the repository (a full backup every
``full_interval_s``: nothing reused, every chunk sealed and stored anew, so an old
pack going bad does not spoil every later backup), prune -- and record the outcome.
A claim made in an earlier Raft term (its leader was deposed or died mid-backup) or
older than ``claim_ttl_s`` is abandoned and the current leader takes over; running a
backup twice is harmless (the repository is locked while written, chunks are content-
addressed). A failed attempt is retried after ``retry_s``.

The repository is a directory on the leader's machine: for backups that survive the
loss of that machine, and to keep one repository as leadership moves, it must be
shared storage every node mounts at the same path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Final, Literal

from consensus.backend import SystemBackend
from consensus.errors import ConsensusError
from consensus.statemachine import Compare, CompareOp, CompareTarget, PutOp, Txn
from node.backup import archive, wal
from node.backup.collect import gather
from node.backup.layout import SCHEDULE_KEY
from node.backup.repository import Repository
from node.replication.background import Background
from node.tls import TlsFiles

log = logging.getLogger(__name__)

NS: Final = 10**9

Kind = Literal["", "incremental", "full"]


@dataclass(frozen=True, slots=True)
class ScheduleState:
    last_success_ns: int = 0
    last_full_ns: int = 0
    last_id: str = ""
    last_attempt_ns: int = 0
    last_error: str = ""
    running_by: str = ""
    claimed_ns: int = 0
    claimed_term: int = 0  # the Raft term of the leader that claimed it

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> ScheduleState:
        """The state stored at SCHEDULE_KEY; a missing or unreadable one is a fresh start
        (a later success overwrites it)."""
        if not data:
            return cls()
        try:
            raw = json.loads(data)
            return cls(
                **{k: type(getattr(cls(), k))(raw[k]) for k in cls.__dataclass_fields__ if k in raw}
            )
        except (ValueError, TypeError, AttributeError):
            return cls()


@dataclass(frozen=True, slots=True)
class Policy:
    interval_s: float = 3600.0
    full_interval_s: float = 86400.0
    retry_s: float = 300.0
    claim_ttl_s: float = 3600.0


def decide(state: ScheduleState, now_ns: int, policy: Policy, term: int = 0, me: str = "") -> Kind:
    """What to run now, for ``me``, the leader of ``term``: nothing, an incremental or
    a full backup. Pure. A claim made in an earlier term is its deposed leader's:
    abandoned (it died or lost its quorum mid-backup, and a backup is safe to run
    twice). A claim of ``me``'s own is one whose outcome was never recorded (a node
    runs one backup at a time): abandoned too."""
    held = state.claimed_term >= term and now_ns - state.claimed_ns < policy.claim_ttl_s * NS
    if state.running_by and state.running_by != me and held:
        return ""  # someone is on it
    if now_ns - state.last_success_ns < policy.interval_s * NS:
        return ""
    if state.last_error and now_ns - state.last_attempt_ns < policy.retry_s * NS:
        return ""
    if now_ns - state.last_full_ns >= policy.full_interval_s * NS:
        return "full"
    return "incremental"


class BackupScheduler(Background):
    """The driver: one asyncio task per node; acts only while this node leads."""

    task_name = "backup-schedule"

    def __init__(
        self,
        node_id: str,
        system: SystemBackend,
        endpoint: str,
        operator_token: str,
        repo_path: str,
        recipients: Sequence[str],
        policy: Policy,
        *,
        prune: bool = True,
        clock: Callable[[], int] = time.time_ns,
        tls: TlsFiles | None = None,
    ) -> None:
        self.node_id = node_id
        self.tls = tls  # the node's own certificate, to gather over TLS
        self.system = system
        self.endpoint = endpoint
        self.token = operator_token
        self.repo_path = repo_path
        self.recipients = list(recipients)
        self.policy = policy
        self.prune = prune
        self.clock = clock
        self.state = ScheduleState()  # as last read (any node; for /metrics and status)
        self.runs = {"ok": 0, "failed": 0}
        self.last_seconds = 0.0

    @property
    def tick_s(self) -> float:
        return max(0.5, min(30.0, self.policy.interval_s / 4))

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except (ConsensusError, TimeoutError) as exc:  # no quorum, leadership moving
                log.warning("backup schedule: the system tier did not answer: %s", exc)
            except Exception:
                log.exception("backup schedule round failed")
            # A follower looks again soon: when it becomes the leader, a backup that is
            # due (the first one, or one the old leader never ran) should not wait a tick.
            leading = self.system.info().role == "leader"
            await asyncio.sleep(self.tick_s if leading else min(1.0, self.tick_s))

    async def _read(self, linearizable: bool) -> tuple[ScheduleState, int]:
        kv, _ = await self.system.get(SCHEDULE_KEY, linearizable=linearizable, timeout=10.0)
        if kv is None:
            return ScheduleState(), 0
        return ScheduleState.decode(kv.value), kv.mod_revision

    async def _write(self, state: ScheduleState, expect_mod: int | None) -> bool:
        compares: tuple[Compare, ...] = ()
        if expect_mod is not None:
            compares = (Compare(SCHEDULE_KEY, CompareTarget.MOD, CompareOp.EQUAL, expect_mod),)
        result = await self.system.txn(
            Txn(compares=compares, success=(PutOp(SCHEDULE_KEY, state.encode()),)), 10.0
        )
        return result.succeeded

    async def round(self) -> Kind:
        """One look at the schedule; runs a backup if this node leads and one is due.
        Returns what it ran."""
        if self.system.info().role != "leader":
            self.state, _ = await self._read(linearizable=False)
            return ""
        term = self.system.info().term
        state, mod = await self._read(linearizable=True)
        self.state = state
        now = self.clock()
        kind = decide(state, now, self.policy, term, self.node_id)
        if not kind:
            return ""
        claimed = replace(state, running_by=self.node_id, claimed_ns=now, claimed_term=term)
        if not await self._write(claimed, mod):
            return ""  # another node moved the state first
        started = time.monotonic()
        try:
            backup_id = await self._run(full=kind == "full")
        except Exception as exc:  # recorded, retried after retry_s
            self.runs["failed"] += 1
            log.warning("scheduled %s backup failed: %s", kind, exc)
            last_id = exc.backup_id if isinstance(exc, Incomplete) else claimed.last_id
            outcome = replace(claimed, running_by="", last_attempt_ns=self.clock(),
                              last_error=str(exc)[:500], last_id=last_id)  # fmt: skip
        else:
            self.runs["ok"] += 1
            done = self.clock()
            log.info("scheduled %s backup %s done in %.1f s", kind, backup_id,
                     time.monotonic() - started)  # fmt: skip
            outcome = replace(
                claimed,
                running_by="",
                last_attempt_ns=done,
                last_error="",
                last_success_ns=done,
                last_full_ns=done if kind == "full" else claimed.last_full_ns,
                last_id=backup_id,
            )
        self.last_seconds = time.monotonic() - started
        current, mod = await self._read(linearizable=True)
        if current.running_by in ("", self.node_id):
            await self._write(outcome, mod)
            self.state = outcome
        return kind

    async def _run(self, *, full: bool) -> str:
        """Gather, write, prune; the new backup's id. A backup some tier of which is
        incomplete (members down) is kept, marked so, and reported as a failure: a
        backup missing some writes beats none while a member is down, but the schedule
        is not met until a complete one is made."""
        gathered = await gather([self.endpoint], self.token, tls=self.tls)

        def write() -> str:
            repo = Repository.local(self.repo_path, create=True)
            with repo.store.exclusive():
                manifest, _ = archive.write_backup(repo, gathered, self.recipients, full=full)
                if self.prune:
                    result = archive.prune(repo, self.clock())
                    wal.prune(repo, kept=set(result.kept))
            return manifest.id

        backup_id = await asyncio.to_thread(write)
        missing = {t: c.missing for t, c in gathered.tiers.items() if not c.complete}
        if missing:
            raise Incomplete(backup_id, missing)
        return backup_id


class Incomplete(archive.BackupError):
    """A backup was made, but some tier missed more members than its rule allows."""

    def __init__(self, backup_id: str, missing: dict[str, tuple[str, ...]]) -> None:
        named = "; ".join(f"{t} without {', '.join(m)}" for t, m in sorted(missing.items()))
        super().__init__(f"backup {backup_id} is incomplete ({named})")
        self.backup_id = backup_id
