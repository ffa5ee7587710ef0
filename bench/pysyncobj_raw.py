"""Raw pysyncobj, the ceiling of the library Tadpole's Raft tier is built on.

One process per member: a minimal ``SyncObj`` holding a replicated dict, its
own TCP transport, its ``FileJournal`` (which does **not** fsync: writes go
through an mmap and are never synced, so acknowledged writes are not
durable — the comparison says so). ``bench/run.py`` starts three of these and
sends JSON commands on stdin (append-entries period 2 ms, tick 1 ms: see
``main``); the load runs *inside* the leader process (closed loop: each of
``clients`` virtual clients issues its next command from the previous one's
callback), so no RPC layer is measured at all.

Commands (one JSON object per line; one JSON answer per line on stdout):
``{"cmd": "state"}`` -> ``{"leader": bool, "ready": bool}``;
``{"cmd": "run", "op": ..., "clients": n, "seconds": s, "warmup": w}`` ->
``{"ops": n, "latencies": [...], "errors": n}``;
``{"cmd": "fill", "keys": n, "clients": c}`` -> ``{"done": n}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated

VALUE = b"x" * 256


class Store(SyncObj):  # type: ignore[misc]
    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf=conf)
        self.data: dict[str, tuple[bytes, int]] = {}

    @replicated  # type: ignore[misc]
    def put(self, key: str, value: bytes) -> int:
        _, version = self.data.get(key, (b"", 0))
        self.data[key] = (value, version + 1)
        return version + 1

    @replicated  # type: ignore[misc]
    def cas(self, key: str, expected_version: int, value: bytes) -> bool:
        _, version = self.data.get(key, (b"", 0))
        if version != expected_version:
            return False
        self.data[key] = (value, version + 1)
        return True

    @replicated  # type: ignore[misc]
    def barrier(self) -> None:
        """Committing it proves every earlier entry is applied here: a
        linearizable read is a barrier, then a local read."""


def run_load(
    store: Store, op: str, clients: int, seconds: float, warmup: float, fill_keys: int
) -> dict[str, Any]:
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds
    done = threading.Event()
    active = clients
    rng = random.Random(1)

    if op == "get_ser":
        # A local dict read: there is nothing to wait for, so no concurrency.
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            store.data.get(f"fill/{rng.randrange(max(fill_keys, 1))}")
            if t0 >= measure_from:
                latencies.append(time.perf_counter() - t0)
        return {"ops": len(latencies), "latencies": latencies, "errors": 0}

    def client(c: int) -> None:
        state = {"i": 0, "version": 0}

        def issue() -> None:
            nonlocal active
            now = time.perf_counter()
            if now >= stop_at:
                with lock:
                    active -= 1
                    if active == 0:
                        done.set()
                return
            t0 = now

            def finished(result: Any, error: Any) -> None:
                nonlocal errors
                t1 = time.perf_counter()
                if op == "get_lin" and error == 0:
                    store.data.get(f"fill/{rng.randrange(max(fill_keys, 1))}")
                    t1 = time.perf_counter()
                with lock:
                    if error != 0:
                        errors += 1
                    elif t0 >= measure_from:
                        latencies.append(t1 - t0)
                if op == "cas" and error == 0:
                    state["version"] = state["version"] + 1 if result else state["version"]
                issue()

            state["i"] += 1
            if op == "put":
                store.put(f"bench/{c}/{state['i'] % 1000}", VALUE, callback=finished)
            elif op == "get_lin":
                store.barrier(callback=finished)
            elif op == "cas":
                store.cas(f"cas/{c}", state["version"], VALUE, callback=finished)
            else:
                raise ValueError(op)

        issue()

    for c in range(clients):
        client(c)
    done.wait(seconds + warmup + 30)
    return {"ops": len(latencies), "latencies": latencies, "errors": errors}


def fill(store: Store, keys: int, clients: int) -> int:
    lock = threading.Lock()
    nxt = 0
    finished_count = 0
    done = threading.Event()

    def issue() -> None:
        nonlocal nxt
        with lock:
            n = nxt
            nxt += 1
        if n >= keys:
            return

        def cb(_result: Any, error: Any) -> None:
            nonlocal finished_count
            if error != 0:  # retry the same key
                store.put(f"fill/{n}", VALUE, callback=cb)
                return
            with lock:
                finished_count += 1
                if finished_count == keys:
                    done.set()
            issue()

        store.put(f"fill/{n}", VALUE, callback=cb)

    for _ in range(min(clients, keys)):
        issue()
    done.wait(600)
    return finished_count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--self", dest="self_addr", required=True)
    parser.add_argument("--partners", required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    conf = SyncObjConf(
        journalFile=os.path.join(args.dir, "journal"),
        fullDumpFile=os.path.join(args.dir, "dump"),
        dynamicMembershipChange=False,
        # Tuned for latency, as a ceiling should be: pysyncobj sends new entries
        # only with the next periodic append-entries, so its defaults (100 ms
        # period, 50 ms tick) put ~100 ms on every commit.
        appendEntriesPeriod=0.002,
        autoTickPeriod=0.001,
    )
    store = Store(args.self_addr, args.partners.split(","), conf)
    fill_keys = 0
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "state":
            answer: dict[str, Any] = {
                "leader": store._isLeader(),
                "ready": store.isReady(),
            }
        elif cmd["cmd"] == "run":
            answer = run_load(
                store, cmd["op"], cmd["clients"], cmd["seconds"], cmd["warmup"], fill_keys
            )
        elif cmd["cmd"] == "fill":
            fill_keys = cmd["keys"]
            answer = {"done": fill(store, cmd["keys"], cmd["clients"])}
        else:
            answer = {"error": f"unknown command {cmd['cmd']!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    store.destroy()


if __name__ == "__main__":
    main()
