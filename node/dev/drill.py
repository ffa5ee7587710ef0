"""The disaster-recovery drill behind ``make dr-drill`` (docs/backup.md).

Start a three-node cluster, keep writers busy on the system tier and the population
tier, kill the leader with SIGKILL and take a backup while it restarts, keep writing,
then destroy the whole cluster (every process killed, every data directory deleted),
restore the backup into a new cluster with ``tadpole backup restore``, start it, and
check:

* **nothing acknowledged before the backup began is lost**: every system-tier write
  and every population increment acknowledged before ``backup create`` started;
* **the system tier is one consistent cut**: each writer writes its keys in sequence,
  so the restored keys of each writer must be a prefix with no holes;
* no counter holds more increments than were ever attempted.

The recovery time is measured from the moment the cluster is destroyed to the
moment the restored cluster has answered every check (the spec's RTO is 5 minutes).
Every step runs the real CLI as an operator would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import click

from node.backup import seal
from node.client import Client, CounterAdd, PutOp, TierUpdate
from node.client.errors import TadpoleError
from node.dev.cluster import LocalCluster, free_base_port

RTO_S = 300.0
IDS = ["n1", "n2", "n3"]


@dataclass
class Writer:
    """One writer's acknowledged history: system keys drill/w<n>/<seq> and one counter."""

    index: int
    acked_seq: list[tuple[int, float]] = field(default_factory=list)  # (seq, acked at)
    acked_adds: list[float] = field(default_factory=list)  # ack times of +1s
    attempted_adds: int = 0

    @property
    def counter(self) -> str:
        return f"job_event_log/drill-w{self.index}"

    def key(self, seq: int) -> str:
        return f"drill/w{self.index}/{seq:08d}"


@dataclass
class DrillResult:
    acked_before_backup: int  # preloaded writes included
    lost: list[str]
    holes: list[str]
    over: list[str]
    backup_seconds: float
    serving_seconds: float  # destroyed -> restored cluster elected a leader, all members up
    recovery_seconds: float  # destroyed -> every check passed
    restored_system_keys: int
    log: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.holes or self.over) and self.recovery_seconds <= RTO_S


def _tadpole(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _write(client: Client, writer: Writer, stop: threading.Event) -> None:
    seq = 0
    while not stop.is_set():
        try:
            client.put(writer.key(seq), str(seq))
        except TadpoleError:
            # Outcome unknown or not applied: the sequence must not skip, so the same
            # key is written again (a later success makes it acknowledged).
            time.sleep(0.05)
            continue
        writer.acked_seq.append((seq, time.monotonic()))
        seq += 1
        writer.attempted_adds += 1
        try:
            client.counter_add("population", writer.counter, 1)
        except TadpoleError:
            time.sleep(0.05)
            continue
        writer.acked_adds.append(time.monotonic())


PRELOAD_TXN = 128  # puts per preload transaction (the server's limit)


def _preload(client: Client, keys: int) -> None:
    """``keys`` system keys (1 KiB values, 128 per transaction) and as many population
    counters (batched), all acknowledged before the drill starts."""
    value = b"p" * 1024
    for start in range(0, keys, PRELOAD_TXN):
        ops = [
            PutOp(f"preload/{i:07d}", value) for i in range(start, min(keys, start + PRELOAD_TXN))
        ]
        client.txn([], ops)
    updates = [TierUpdate("population", f"job_resource_ledger/preload-{i:07d}", CounterAdd(i + 1))
               for i in range(keys)]  # fmt: skip
    failed = [o for o in client.tier_update_many(updates) if not o.applied]
    if failed:
        raise click.ClickException(f"preload: {len(failed)} population updates failed")


def drill(
    root: str,
    *,
    writers: int = 4,
    seconds: float = 6.0,
    kill_leader: bool = True,
    preload: int = 0,
) -> DrillResult:
    log: list[str] = []

    def say(message: str) -> None:
        log.append(message)
        click.echo(message)

    original = LocalCluster(
        os.path.join(root, "original"), list(IDS), free_base_port(3), encrypt=True
    )
    repo = os.path.join(root, "repo")
    key_file = os.path.join(root, "backup.key")
    secret, public = seal.generate_identity()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    original.start()
    original.wait_leader(30, all_up=True)
    say(f"cluster up: {original.endpoints}")
    if preload:
        started = time.monotonic()
        with original.client(timeout=60.0) as client:
            _preload(client, preload)
        say(f"preloaded {preload} system keys and {preload} population counters "
            f"in {time.monotonic() - started:.1f} s")  # fmt: skip
    stop = threading.Event()
    team = [Writer(i) for i in range(writers)]
    clients = [original.client(timeout=5.0) for _ in team]
    threads = [
        threading.Thread(target=_write, args=(c, w, stop), daemon=True)
        for c, w in zip(clients, team, strict=True)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(seconds / 2)
        if kill_leader:
            leader = original.wait_leader(30)
            original.kill(leader)
            say(f"killed the leader {leader} (SIGKILL); restarting it")
            original.start_node(leader)
        backup_started = time.monotonic()
        created = _tadpole("--endpoints", original.endpoints, *original.cli_flags(),
                           "--timeout", "30", "--token-file", original.token_file,
                           "backup", "create", "--repo", repo, "-r", public)  # fmt: skip
        backup_seconds = time.monotonic() - backup_started
        if created.returncode != 0:
            raise click.ClickException(f"backup create failed: {created.stderr.strip()}")
        say(created.stdout.rstrip())
        time.sleep(seconds / 2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for c in clients:
            c.close()
    verified = _tadpole("backup", "verify", "--repo", repo, "-i", key_file)
    say(verified.stdout.rstrip())
    if verified.returncode != 0:
        raise click.ClickException("backup verify failed")

    # The disaster: every process killed, every data directory gone.
    for node_id in IDS:
        original.kill(node_id)
    shutil.rmtree(original.root)
    destroyed = time.monotonic()
    say("destroyed the cluster: all nodes killed, all data directories deleted")

    new = LocalCluster(os.path.join(root, "restored"), list(IDS), free_base_port(3), encrypt=True)
    new.prepare()  # the new cluster's keyring (encryption at rest), before its files exist
    restored = _tadpole("backup", "restore", "--repo", repo, "latest", "-i", key_file,
                        "--encryption-key-file", new.keyring_file,
                        *(f"--node={n}={new.data_dir(n)}" for n in IDS))  # fmt: skip
    if restored.returncode != 0:
        raise click.ClickException(f"restore failed: {restored.stderr.strip()}")
    say(restored.stdout.rstrip())
    new.start()
    try:
        new.wait_leader(60, all_up=True)
        serving = time.monotonic() - destroyed
        lost, holes, over, system_keys = _check(new, team, backup_started, preload)
        recovery = time.monotonic() - destroyed
    finally:
        for node_id in IDS:
            new.kill(node_id)
    acked_before = 2 * preload + sum(
        sum(1 for _, at in w.acked_seq if at < backup_started)
        + sum(1 for at in w.acked_adds if at < backup_started)
        for w in team
    )
    return DrillResult(
        acked_before, lost, holes, over, backup_seconds, serving, recovery, system_keys, log
    )


def _check(
    cluster: LocalCluster, team: list[Writer], backup_started: float, preload: int
) -> tuple[list[str], list[str], list[str], int]:
    lost: list[str] = []
    holes: list[str] = []
    over: list[str] = []
    total = 0
    with cluster.client(timeout=30.0) as client:
        if preload:
            found = sum(1 for kv in client.scan("preload/") if len(kv.value) == 1024)
            if found != preload:
                lost.append(f"preload: {found} of {preload} system keys")
            counters = 0
            for i in range(preload):
                read = client.tier_read("population", f"job_resource_ledger/preload-{i:07d}")
                if read.found and read.value is not None and read.value.value == i + 1:
                    counters += 1
            if counters != preload:
                lost.append(f"preload: {counters} of {preload} population counters")
        for w in team:
            present = sorted(
                int(kv.key.rsplit("/", 1)[1]) for kv in client.scan(f"drill/w{w.index}/")
            )
            total += len(present)
            if present != list(range(len(present))):
                holes.append(f"writer {w.index}: keys are not a prefix ({len(present)} present)")
            have = set(present)
            lost += [w.key(s) for s, at in w.acked_seq if at < backup_started and s not in have]
            read = client.tier_read("population", w.counter, consistency="all")
            value = int(read.value.value) if read.found and read.value is not None else 0
            needed = sum(1 for at in w.acked_adds if at < backup_started)
            if value < needed:
                lost.append(f"{w.counter}: {value} < {needed} acknowledged before the backup")
            if value > w.attempted_adds:
                over.append(f"{w.counter}: {value} > {w.attempted_adds} attempted")
    return lost, holes, over, total


@click.command()
@click.option("--dir", "root", default=None, help="Work directory (default: a new temporary one).")
@click.option("--writers", default=4, show_default=True)
@click.option("--seconds", default=6.0, show_default=True, help="Write load duration.")
@click.option("--kill-leader/--no-kill-leader", default=True, show_default=True)
@click.option("--preload", default=0, show_default=True,
              help="System keys and population counters written before the drill.")  # fmt: skip
def main(root: str | None, writers: int, seconds: float, kill_leader: bool, preload: int) -> None:
    """Back up a cluster under load, destroy it, restore it, check every write."""
    work = root or tempfile.mkdtemp(prefix="tadpole-dr-")
    os.makedirs(work, exist_ok=True)
    if os.listdir(work):
        raise click.ClickException(f"{work}: not empty")
    result = drill(work, writers=writers, seconds=seconds, kill_leader=kill_leader, preload=preload)
    click.echo(
        f"\nDR drill: {result.acked_before_backup} writes acknowledged before the backup "
        f"({2 * preload} preloaded), "
        f"{len(result.lost)} lost, {len(result.holes)} holes in the system-tier cut, "
        f"{len(result.over)} counters over"
    )
    click.echo(f"backup took {result.backup_seconds:.2f} s; restored system tier: "
               f"{result.restored_system_keys} drill keys")  # fmt: skip
    click.echo(f"recovery time: serving {result.serving_seconds:.1f} s after the cluster was "
               f"destroyed, every write verified at {result.recovery_seconds:.1f} s "
               f"(RTO target {RTO_S:.0f} s)")  # fmt: skip
    for line in result.lost + result.holes + result.over:
        click.echo(f"  {line}")
    if not result.ok:
        raise SystemExit(1)
    if root is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
