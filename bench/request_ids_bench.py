"""What a request id costs the tier store as the table of ids applied grows: this
tree against a reference checkout, on fresh stores, alternating.

    .venv/bin/python bench/request_ids_bench.py --ref CHECKOUT [--held 0,1000000]
        [--batches 100] [--batch 256] [--rounds 3] [--expired]

A coordinating owner keeps every request id it applied for an hour
(``REQUEST_WINDOW_NS``), so under sustained updates the ``requests`` table holds
millions of ids, every update writes one more into it, and once the table is an hour
old every update's id also has an expired one to delete. For each ``--held`` count a
fresh ``TierStore`` (on the project's disk, plaintext) holds 10,000 counters and that
many ids applied over the last hour, oldest first, written straight into its
``requests`` table in the form the tree's own schema keeps them (before schema v5 the
whole scoped id and when it was applied; from v5 its 16-byte digest under the
hour-long slot it was applied in; from v6 also the millisecond the id was made). Every
id is made as the tree's client library makes it (``new_request_id``): a random UUID
before v6, a UUIDv7 -- the millisecond it was made, then random bits -- from v6. With
``--expired``, the table also holds as many ids applied three hours ago as the run
writes, so the store's trims delete one expired id per id written, as in the steady
state. Then ``--batches`` work items of ``--batch`` updates (distinct keys), each with
a new id, go through ``update_many_once`` as ``Replication`` sends them. (Until
2026-12-07 a work item of 69 to 175 ids got a query plan that scanned every id held:
``--batch 128``.) Reported: median process CPU and
wall time per update, and the file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = 10_000
BATCH = 256  # updates per work item unless --batch
TIER = "population"


def _measure(
    held: int, batches: int, workdir: str, expired: bool, batch: int = BATCH
) -> dict[str, float]:
    """Run in a subprocess whose ``sys.path`` starts with the tree under test."""
    import asyncio

    from node.client.messages import new_request_id
    from node.replication import store as store_mod

    digest = getattr(store_mod, "request_digest", None)
    born = getattr(store_mod, "request_born", None)
    timed = uuid.UUID(new_request_id()).version == 7  # the tree's client makes UUIDv7s
    path = os.path.join(tempfile.mkdtemp(dir=workdir), "tiers.db")
    rng = random.Random(7)
    keys = [f"job_resource_ledger/job-{i}" for i in range(KEYS)]

    def scoped(key: str, at_ns: int) -> str:
        """A request id as the tree's client library makes it at ``at_ns``."""
        bits = rng.getrandbits(128)
        if timed:  # UUIDv7: the millisecond, version 7, the RFC variant, random bits
            ms = at_ns // 1_000_000
            bits = (
                ms << 80
                | 0x7 << 76
                | (bits >> 64 & 0xFFF) << 64
                | 0b10 << 62
                | bits >> 2 & (1 << 62) - 1
            )
        return f"{TIER}\x00{key}\x00{uuid.UUID(int=bits).hex}"

    async def run() -> dict[str, float]:
        store = store_mod.TierStore(path)
        await store.put_many([(TIER, k, b"\x00" * 24) for k in keys])
        await store.aclose()
        conn = sqlite3.connect(path, isolation_level=None)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(requests)")]
        window = store_mod.REQUEST_WINDOW_NS
        now = time.time_ns()
        # held: applied over the last window, oldest first; expired: three windows ago
        when = [now - window + window * n // max(held, 1) for n in range(held)]
        when += [now - 3 * window] * (batches * batch if expired else 0)
        conn.execute("BEGIN")
        for start in range(0, len(when), 100_000):
            rows: list[tuple[object, ...]] = []
            for at in when[start : start + 100_000]:
                rid = scoped(keys[len(rows) % KEYS], at)
                if "born" in columns:
                    rows.append((at // window, born(rid), digest(rid)))
                elif "slot" in columns:
                    rows.append((at // window, digest(rid)))
                else:
                    rows.append((rid if digest is None else digest(rid), at))
            names = [c for c in ("slot", "born", "id", "at_ns") if c in columns]
            marks = ", ".join("?" * len(names))
            conn.executemany(
                f"INSERT OR IGNORE INTO requests ({', '.join(names)}) VALUES ({marks})", rows
            )
        conn.execute("COMMIT")
        conn.close()
        store = store_mod.TierStore(path)
        plan = []
        for _ in range(batches):
            picked = rng.sample(keys, batch)
            plan.append([(k, scoped(k, time.time_ns())) for k in picked])

        def fn(value: bytes | None, seen: frozenset[str], rid: str = "") -> tuple[bytes, list[str]]:
            return (value or b"")[:23] + bytes([len(seen)]), [rid]

        cpu0, wall0 = time.process_time(), time.perf_counter()
        for work in plan:
            items = [(TIER, k, lambda v, s, r=rid: fn(v, s, r), [rid]) for k, rid in work]
            await store.update_many_once(items)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await store.aclose()
        n = batches * batch
        return {"cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6,
                "mib": os.path.getsize(path) / 2**20}  # fmt: skip

    return asyncio.run(run())


def _child(
    tree: str, held: int, batches: int, workdir: str, expired: bool, batch: int
) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
        "import request_ids_bench as b;"
        "print(json.dumps(b._measure(int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],"
        " sys.argv[6] == '1', int(sys.argv[7]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, tree, str(HERE), str(held), str(batches), workdir,
         "1" if expired else "0", str(batch)],
        check=True, capture_output=True, text=True, cwd=tree,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", required=True, help="a checkout to compare with")
    parser.add_argument("--held", default="0,1000000", help="ids in the table first")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch", type=int, default=BATCH, help="updates per work item")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--expired", action="store_true", help="also as many expired ids as the run writes"
    )
    args = parser.parse_args()
    trees = {"ref": os.path.abspath(args.ref), "this": str(HERE.parent)}
    rows: dict[tuple[int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(dir=HERE.parent) as workdir:
        for held in (int(h) for h in args.held.split(",")):
            for r in range(args.rounds):
                for name, tree in trees.items():
                    print(f"{held} ids held, round {r + 1}/{args.rounds}: {name}", flush=True)
                    rows.setdefault((held, name), []).append(
                        _child(tree, held, args.batches, workdir, args.expired, args.batch)
                    )
    print(f"medians of {args.rounds} alternating rounds, {args.batch} updates a work item;"
          f" ref = {trees['ref']}", end="")  # fmt: skip
    print("; plus as many expired ids as each run writes" if args.expired else "")
    print("| ids held | tree | CPU µs per update | wall µs per update | file MiB |")
    print("|---:|---|---:|---:|---:|")
    for (held, name), runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {held:,} | {name} | {med['cpu_us']:.1f} | {med['wall_us']:.1f} "
              f"| {med['mib']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
