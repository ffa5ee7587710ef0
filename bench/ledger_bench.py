"""The lifecycle API into PostgreSQL: ``AssignJob`` throughput and export lag, beside a
direct SQLAlchemy insert loop into the same database, in the same run.

    .venv/bin/python bench/ledger_bench.py [--seconds 5] [--clients 1,16,64] [--rounds 3]

A fresh three-node cluster exports to a fresh database ``tadpole_bench`` (made, and
dropped at the end, through ``--url``'s server; ``make postgres`` gives one). For each
client level: ``--seconds`` of concurrent ``AssignJob`` calls (each its own job and
allocation) from one asyncio client; a poller reads the ``jobs`` table every 10 ms and
records when each acknowledged job first appears (export lag = appeared - answered).
Then the same number of connections insert ``jobs`` rows directly, one transaction per
row, for ``--seconds``. Rounds alternate the two so drift of a shared machine hits
both; medians are reported. The load generator shares the machine's cores with the
three nodes and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from node.client import AsyncClient
from node.dev.cluster import LocalCluster, exit_on_sigterm, free_base_port
from node.ledger.migrate import migrate
from node.ledger.schema import Job

DEFAULT_URL = "postgresql+psycopg://tadpole:tadpole@127.0.0.1:5432/tadpole_test"
POOL = {"compute_units": 1 << 30, "memory_mb": 1 << 30, "bandwidth_mbps": 0, "thread_count": 0}


def fresh_database(url: str, name: str) -> str:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, name: str) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


class Poller(threading.Thread):
    """Records when each job of ``prefix`` first appears in the ledger."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url)
        self.prefix = prefix
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with self.engine.connect() as conn:
                ids = conn.execute(select(Job.job_id).where(Job.job_id.like(self.prefix + "%")))
                now = time.monotonic()
                for (job_id,) in ids:
                    self.seen.setdefault(job_id, now)
            self.stop.wait(0.01)
        self.engine.dispose()


async def assign_load(
    endpoints: list[str], clients: int, seconds: float, prefix: str
) -> dict[str, float]:
    answered: dict[str, float] = {}
    latencies: list[float] = []
    async with AsyncClient(endpoints, timeout=30.0) as client:
        await client.ledger("SetPool", {"name": "bench", "capacity": POOL})
        deadline = time.monotonic() + seconds

        async def worker(w: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                job_id = f"{prefix}{w}-{n}"
                n += 1
                started = time.monotonic()
                await client.ledger(
                    "AssignJob",
                    {"job_id": job_id, "pool": "bench", "resources": {"compute_units": 1}},
                )
                answered[job_id] = time.monotonic()
                latencies.append(answered[job_id] - started)

        began = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        elapsed = time.monotonic() - began
    latencies.sort()
    return {"answered": answered, "ops": len(answered) / elapsed,  # type: ignore[dict-item]
            "p50_ms": latencies[len(latencies) // 2] * 1000}  # fmt: skip


def direct_inserts(url: str, clients: int, seconds: float, prefix: str) -> float:
    engine = create_engine(url, pool_size=clients, max_overflow=0)
    counts = [0] * clients
    deadline = time.monotonic() + seconds

    def loop(w: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            with engine.begin() as conn:
                conn.execute(
                    insert(Job).values(
                        job_id=f"{prefix}{w}-{n}",
                        status="assigned",
                        requested_resources={"compute_units": 1},
                        spawned_at=datetime.now(UTC),
                    )
                )
            n += 1
        counts[w] = n

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    engine.dispose()
    return sum(counts) / elapsed


def one_level(
    cluster: LocalCluster, db: str, clients: int, seconds: float, tag: str
) -> dict[str, Any]:
    prefix = f"{tag}-c{clients}-"
    poller = Poller(db, prefix)
    poller.start()
    load = asyncio.run(assign_load(cluster.endpoints.split(","), clients, seconds, prefix))
    answered: dict[str, float] = load["answered"]  # type: ignore[assignment]
    deadline = time.monotonic() + 60
    while len(poller.seen) < len(answered) and time.monotonic() < deadline:
        time.sleep(0.05)
    poller.stop.set()
    poller.join()
    missing = [j for j in answered if j not in poller.seen]
    lags = sorted(max(0.0, poller.seen[j] - t) for j, t in answered.items() if j in poller.seen)
    direct = direct_inserts(db, clients, seconds, f"direct-{prefix}")
    return {
        "clients": clients,
        "assign_ops_per_s": load["ops"],
        "assign_p50_ms": load["p50_ms"],
        "lag_p50_ms": lags[len(lags) // 2] * 1000 if lags else float("nan"),
        "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000
        if lags
        else float("nan"),
        "missing": len(missing),
        "direct_rows_per_s": direct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("TADPOLE_TEST_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    db = fresh_database(args.url, "tadpole_bench")
    migrate(db)
    work = tempfile.mkdtemp(prefix="tadpole-ledger-bench-")
    # plaintext: figures comparable with earlier runs; its client has no certificate
    cluster = LocalCluster(work, ["n1", "n2", "n3"], free_base_port(3),
                           extra_args=["--set", f"ledger_url={db}"], tls=False)  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        cluster.start()
        cluster.wait_leader(30, all_up=True)
        for r in range(args.rounds):
            for clients in (int(c) for c in args.clients.split(",")):
                print(f"round {r + 1}/{args.rounds}: {clients} clients", file=sys.stderr)
                rows.append(one_level(cluster, db, clients, args.seconds, f"r{r}"))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
        drop_database(args.url, "tadpole_bench")
    summary = []
    for clients in sorted({r["clients"] for r in rows}):
        mine = [r for r in rows if r["clients"] == clients]
        line = {k: statistics.median(r[k] for r in mine) for k in mine[0] if k != "clients"}
        line["clients"] = clients
        line["missing"] = sum(r["missing"] for r in mine)
        line["ratio"] = line["assign_ops_per_s"] / line["direct_rows_per_s"]
        summary.append(line)
    if args.json:
        json.dump({"rows": rows, "summary": summary}, sys.stdout, indent=1)
        print()
        return
    print(f"medians of {args.rounds} rounds, {args.seconds:.0f} s each; PostgreSQL ledger")
    print(f"{'clients':>7} {'assign/s':>9} {'p50':>8} {'lag p50':>8} {'lag p99':>8}"
          f" {'direct/s':>9} {'ratio':>6} {'missing':>7}")  # fmt: skip
    for s in summary:
        print(
            f"{s['clients']:>7} {s['assign_ops_per_s']:>9.0f} {s['assign_p50_ms']:>6.1f}ms"
            f" {s['lag_p50_ms']:>6.0f}ms {s['lag_p99_ms']:>6.0f}ms {s['direct_rows_per_s']:>9.0f}"
            f" {s['ratio']:>6.2f} {s['missing']:>7}"
        )


if __name__ == "__main__":
    main()
