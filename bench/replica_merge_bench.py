"""What a replica merge costs the store: a counter joined into the copy held, against
one stored whole because the copy held is its base (``Merge.base``).

    .venv/bin/python bench/replica_merge_bench.py [--merges 256] [--batches 200]
        [--keys 10000] [--runs 5] [--plaintext]

A fresh ``TierStore`` (at-rest encryption on unless ``--plaintext``) holds ``--keys``
PN counters; each work item is one ``update_many`` of ``--merges`` merges, built as
``Replication.merge_many_local`` builds them (``driver._joiner``), of distinct keys:
each a counter one increment ahead of the copy held. ``joined`` sends no base, so the
store decrypts, decodes, joins and encodes the copy; ``whole`` sends the digest of the
copy held as the base, so the state is stored as it is. The two alternate run by run
(fresh stores); reported: median process CPU per merge, building the merges excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consensus.atrest import Key, Keyring
from crdt import PNCounter, encode
from node.replication.driver import _joiner
from node.replication.store import TierStore, digest_of

TIER = "population"


def _cpu() -> float:
    return time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)


async def run(path: str, args: argparse.Namespace, whole: bool) -> float:
    """CPU seconds per merge over ``args.batches`` work items."""
    keyring = None if args.plaintext else Keyring([Key("bench", hashlib.sha256(b"b").digest())])
    store = TierStore(path, keyring=keyring)
    held: dict[str, PNCounter] = {}
    try:
        keys = [f"job_resource_ledger/k{i}" for i in range(args.keys)]
        for start in range(0, len(keys), args.merges):
            chunk = keys[start : start + args.merges]
            for key in chunk:
                held[key] = PNCounter().increment("n1", 1)
            await store.update_many(
                [(TIER, k, _joiner(TIER, k, held[k], encode(held[k]))) for k in chunk]
            )
        spent: float = 0.0
        for batch in range(args.batches):
            chunk = [keys[(batch * args.merges + j) % len(keys)] for j in range(args.merges)]
            merges = []
            for key in chunk:
                old = held[key]
                new = held[key] = old.merge(PNCounter().increment("n2", batch + 1))
                base = digest_of(encode(old)) if whole else None
                merges.append((TIER, key, _joiner(TIER, key, new, encode(new), base)))
            started = _cpu()
            await store.update_many(merges)
            spent += _cpu() - started
        per_merge: float = spent / (args.batches * args.merges)
        return per_merge
    finally:
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--merges", type=int, default=256, help="merges per work item")
    parser.add_argument("--batches", type=int, default=200, help="work items per run")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--plaintext", action="store_true", help="no at-rest encryption")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"joined": [], "whole": []}
    with tempfile.TemporaryDirectory(dir=os.getcwd(), prefix=".merge-bench-") as scratch:
        for i in range(args.runs):
            for name in samples:
                path = os.path.join(scratch, f"{name}-{i}.db")
                samples[name].append(asyncio.run(run(path, args, name == "whole")))
    print(f"{args.merges} merges a work item, {args.batches} items a run, median of {args.runs}")
    print("| merge | CPU µs per merge |")
    print("|---|---:|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values) * 1e6:.1f} |")


if __name__ == "__main__":
    main()
