"""Backup and restore throughput, and what an incremental backup stores.

    .venv/bin/python bench/backup_bench.py [--keys 100000] [--value-bytes 256] [--runs 3]

On a fresh three-node cluster: ``--keys`` system-tier keys of ``--value-bytes`` each
(written 128 per transaction) and as many population counters (batched). Then, with
the real CLI, ``--runs`` times each (medians reported):

* a **full** backup into a new repository (gather from every member + chunk + zstd +
  age + write), in keys/s and MiB/s of plaintext;
* ``verify`` with the identity (every chunk re-read, decrypted, checked);
* a **restore** into three new data directories, in keys/s;
* after changing 1% of the keys of each tier, spread at random, an **incremental**
  backup into the same repository: the bytes it stored against the full backup's;
  then the same after changing 1% of the keys in one key range (new jobs, say).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from node.backup import seal  # noqa: E402
from node.client import Client, CounterAdd, PutOp, TierUpdate  # noqa: E402
from node.dev.cluster import LocalCluster, exit_on_sigterm, free_base_port  # noqa: E402


def tadpole(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"tadpole {' '.join(args[:3])}: {done.stderr.strip()}")
    return done


def fill(client: Client, keys: int, value_bytes: int, rng: random.Random, ids: list[int]) -> None:
    for start in range(0, len(ids), 128):
        client.txn(
            [],
            [PutOp(f"bench/{i:07d}", rng.randbytes(value_bytes)) for i in ids[start : start + 128]],
        )
    updates = [
        TierUpdate("population", f"job_resource_ledger/b{i:07d}", CounterAdd(1 + rng.randrange(9)))
        for i in ids
    ]
    for start in range(0, len(updates), 10_000):
        client.tier_update_many(updates[start : start + 10_000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    work = tempfile.mkdtemp(prefix="tadpole-backup-bench-")
    # plaintext: figures comparable with earlier runs; its client has no certificate
    cluster = LocalCluster(
        os.path.join(work, "cluster"), ["n1", "n2", "n3"], free_base_port(3), tls=False
    )
    secret, public = seal.generate_identity()
    key_file = os.path.join(work, "key")
    with open(key_file, "w") as f:
        f.write(secret + "\n")
    rng = random.Random(11)
    cli = ("--endpoints", "", "--timeout", "120", "--token-file", cluster.token_file)
    try:
        cluster.start()
        cluster.wait_leader(30, all_up=True)
        cli = (
            "--endpoints",
            cluster.endpoints,
            "--timeout",
            "120",
            "--token-file",
            cluster.token_file,
        )
        started = time.monotonic()
        with Client(cluster.endpoints.split(","), timeout=120) as client:
            fill(client, args.keys, args.value_bytes, rng, list(range(args.keys)))
        print(f"wrote {args.keys} system keys of {args.value_bytes} B and {args.keys} "
              f"population counters in {time.monotonic() - started:.1f} s")  # fmt: skip
        full, verify, restore, incremental, contiguous = [], [], [], [], []
        one_percent = args.keys // 100

        def create(repo: str) -> dict[str, Any]:
            made = tadpole(*cli, "backup", "create", "--repo", repo, "-r", public, "--json")
            result: dict[str, Any] = json.loads(made.stdout)
            return result

        def change(ids: list[int]) -> None:
            with Client(cluster.endpoints.split(","), timeout=120) as client:
                fill(client, args.keys, args.value_bytes, rng, ids)

        for run in range(args.runs):
            repo = os.path.join(work, f"repo{run}")
            t0 = time.monotonic()
            made = create(repo)
            full.append((time.monotonic() - t0, made))
            t0 = time.monotonic()
            tadpole("backup", "verify", "--repo", repo, "-i", key_file)
            verify.append(time.monotonic() - t0)
            target = os.path.join(work, f"restore{run}")
            t0 = time.monotonic()
            tadpole("backup", "restore", "--repo", repo, made["id"], "-i", key_file,
                    *(f"--node={n}={target}/{n}" for n in ("n1", "n2", "n3")))  # fmt: skip
            restore.append(time.monotonic() - t0)
            shutil.rmtree(target)
            change(rng.sample(range(args.keys), one_percent))
            incremental.append((create(repo), made))
            first = rng.randrange(args.keys - one_percent)
            change(list(range(first, first + one_percent)))
            contiguous.append((create(repo), made))
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
    keys = full[0][1]["keys"]
    plain = full[0][1]["plain_bytes"]
    med = statistics.median
    full_s = med(t for t, _ in full)
    mib = plain / 2**20
    print(f"\nbackup of {keys} keys ({mib:.1f} MiB of records), medians of {args.runs} runs:")
    stored = full[0][1]["bytes_total"] / 2**20
    print(f"  full backup     {full_s:6.2f} s  {keys / full_s:9.0f} keys/s  "
          f"{mib / full_s:6.1f} MiB/s  stored {stored:.1f} MiB")  # fmt: skip
    print(f"  verify (-i)     {med(verify):6.2f} s  {keys / med(verify):9.0f} keys/s")
    print(f"  restore         {med(restore):6.2f} s  {keys / med(restore):9.0f} keys/s")
    for what, pairs in (("scattered at random", incremental), ("in one key range", contiguous)):
        ratios = [a["bytes_new"] / m["bytes_total"] for a, m in pairs]
        news = [a["bytes_new"] for a, _ in pairs]
        print(f"  incremental after 1% of keys changed {what}: {med(news) / 2**20:.2f} MiB new "
              f"= {100 * med(ratios):.1f}% of the full backup")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
