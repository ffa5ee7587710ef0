"""Local store benchmark: group-committed durable updates at growing concurrency.

    .venv/bin/python bench/store_bench.py [--seconds 3] [--levels 1,16,64,256] [--dir DIR]
        [--once] [--keys 100000] [--tree CHECKOUT]

For each level, a fresh ``TierStore`` in ``--dir`` (default: a temporary
directory under the current one, so it is on the project's disk rather than
a tmpfs) and N coroutines on one event loop, each awaiting
``update(tier, random key, fn -> 256-byte value)`` in a loop for
``--seconds``. Reports updates/s, p50/p99 latency, items per commit and fsyncs
per item (from ``TierStore.stats``: one WAL fsync per commit) and the process's CPU
per update (the event loop's and the writer's). The first line is the disk's own
fdatasync latency, the floor for a lone write.

``--once``: ``update_once`` instead, each update with a fresh request id as the client
library makes them and a new value (as a counter's), as a coordinating owner applies
lone ``Tiers.Update`` calls. ``--keys``: how many keys are updated at random.
``--tree``: the ``TierStore`` of another checkout (to compare, run once per tree).

To count the fsync system calls themselves (checkpoints included)::

    strace -f -c -e trace=fsync,fdatasync .venv/bin/python bench/store_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if "--tree" in sys.argv[:-1]:  # before the imports: they come from that checkout
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--tree") + 1]))

from node.client.messages import new_request_id
from node.replication.store import TierStore


def fdatasync_latency_ms(directory: str, rounds: int = 200) -> float:
    path = os.path.join(directory, "fsync.probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        samples = []
        block = b"x" * 4096
        for i in range(rounds):
            os.pwrite(fd, block, (i % 64) * 4096)
            start = time.perf_counter()
            os.fdatasync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(samples) * 1000


async def run_level(
    directory: str,
    clients: int,
    seconds: float,
    value_size: int,
    once: bool = False,
    keys: int = 100_000,
) -> dict[str, float]:
    path = os.path.join(directory, f"bench-{clients}.db")
    value = os.urandom(value_size)
    latencies: list[float] = []
    async with TierStore(path) as store:
        deadline = time.perf_counter() + seconds

        async def client(c: int) -> None:
            rng = random.Random(c)
            while time.perf_counter() < deadline:
                key = f"bench/{rng.randrange(keys):06d}"
                start = time.perf_counter()
                if once:  # a new value each time, as a counter's
                    rid = f"population\x00{key}\x00{new_request_id()}"
                    new = value[:-16] + rid[-16:].encode()
                    await store.update_once(
                        "population", key, lambda _current, _seen, r=rid, v=new: (v, [r]), [rid]
                    )
                else:
                    await store.update("population", key, lambda _current: value)
                latencies.append(time.perf_counter() - start)

        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        stats = store.stats
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    latencies.sort()
    return {
        "clients": clients,
        "ops": len(latencies) / elapsed,
        "cpu_us": cpu / max(len(latencies), 1) * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "per_commit": stats.items / max(stats.commits, 1),
        "fsync_per_item": stats.fsyncs / max(stats.items, 1),
        "max_batch": stats.max_batch,
        "commits": stats.commits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--levels", default="1,16,64,256")
    parser.add_argument("--value-size", type=int, default=256)
    parser.add_argument("--dir", default=None, help="where the database goes (default: ./)")
    parser.add_argument("--once", action="store_true", help="update_once with a request id")
    parser.add_argument("--keys", type=int, default=100_000, help="keys updated at random")
    parser.add_argument("--tree", help="the checkout whose TierStore is measured")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix=".store-bench-", dir=args.dir or ".") as directory:
        print(f"disk fdatasync p50: {fdatasync_latency_ms(directory):.2f} ms ({directory})")
        print(
            f"{'clients':>7} {'updates/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'items/commit':>12} {'fsync/item':>10} {'max batch':>9} {'commits':>8}"
            f" {'CPU us/update':>13}"
        )
        for clients in levels:
            r = asyncio.run(
                run_level(directory, clients, args.seconds, args.value_size, args.once, args.keys)
            )
            print(
                f"{clients:>7} {r['ops']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
                f" {r['per_commit']:>12.1f} {r['fsync_per_item']:>10.4f} {r['max_batch']:>9.0f}"
                f" {r['commits']:>8.0f} {r['cpu_us']:>13.1f}"
            )


if __name__ == "__main__":
    main()
