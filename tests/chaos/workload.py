"""Register workload: concurrent clients doing read / write / cas, recorded as a History.

Each client is one asyncio task with its own :class:`node.client.AsyncClient` and
records every operation with ``History.invoke``/``complete`` (monotonic ns). Values
are unique per run (``"c<client>-<seq>"``), so a read names the write it saw.

**Keys rotate.** A slot's key ``k<slot>.<generation>`` moves to a new generation
after ``ops_per_key`` operations (Jepsen's independent keys): every key's history
stays short enough for the linearizability search, however long the run.

**Two client flavours**, alternating by client number, because they exercise
different code and allow different conclusions:

``single``
    ``RetryPolicy(attempts=1)``, routed to one node (``prefer_leader=False``; the
    first endpoint is node ``i mod n``), like a Jepsen client bound to a node.
``retrying``
    the library's default retries, leader-preferring. It resends writes of unknown
    outcome under the same request id (exactly-once). The register clients of this
    flavour share one ``AsyncClient``, as an application's tasks would, so their
    concurrent puts and gets travel together in ``KV.PutMany`` / ``KV.GetMany`` calls
    (``node/client/coalesce.py``) and the checker judges those too.

For both, :class:`Unavailable` is recorded ``fail``: the client's contract
(``node/client/attempts.py``) is that a write ends in ``Unavailable`` only when no
try of it may have been applied — the server says so in a structured field, never in
words. If that claim were ever false, the checker would see a read of a value whose
write "failed" (or, for counters, a total above what the acknowledged and unknown adds
allow).

**Counters** (``counter_clients``, CRDT population tier): each of these clients adds
small deltas to a few ``job_resource_ledger/chaos-<n>`` keys -- one at a time, or (a
client with retries) eight at once, which its client sends together where they wait
for the same node (``Tiers.UpdateEach``). ``ReplicationIncomplete``
(applied on some replica, below the write quorum) is recorded ``unknown``, like every
``OutcomeUnknown``: durable somewhere, but not promised to survive the loss of that
replica. After the final heal every node must answer the same total with
consistency=all, equal to the acknowledged adds plus some subset of the unknown ones.

**Sets and logs** (``set_clients``, ``log_clients``, population tier, W = 2): a set
client adds elements of its own (``s<client>-<seq>``) to a few
``worker_journal/chaos-set-<n>`` OR-sets and now and then removes one it saw added;
a log client appends entries with ids of its own to ``job_event_log/chaos-log-<n>``.
Each element and entry id is written by one client only, so after the final heal its
presence is decided by that client's outcomes alone (``checkers.check_set_history``,
``check_log_history``), and every node must answer the same state with
consistency=all.

**Causal sessions** (``session_clients``, agent tier, "1 + backup"): a session creates
an agent document of its own, then patches sequence numbers 1, 2, 3 ... into it and
reads it back, every op on a random node, always carrying the join of the causal
tokens it was given. ``checkers.check_sessions`` requires read-your-writes and
monotonic reads; a node must wait or refuse rather than answer older state.

After the heal, :func:`copies_settled` waits for every tier to hold exactly RF copies
of each key the workload created (none missing, none outside the owners once strays
are handed off), with nothing under-replicated and no hint pending on any node.

Everything else a write can end with -- ``OutcomeUnknown`` (ABORTED, lost in flight,
server-cancelled), ``WriteTimeout``/``Timeout``, ``ServerError``, anything
unexpected -- is ``unknown``. A cas answered "compare failed" is ``fail``. Reads that
fail are recorded ``fail`` (the checker ignores failed and unknown reads alike).

**A broken mode, to show the checker works** (``stale_reads``): every read is sent
serializable -- the node that receives it answers from its local state, with no read
barrier -- yet recorded as an ordinary (linearizable) read. That is what a node that
skipped its read barrier would answer, so a run that cuts clients off with an old
leader must come out *not* linearizable. The nodes themselves stay correct: the
broken reads exist only in this workload, and no production code has a switch for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from node.client import AsyncClient, RetryPolicy
from node.client.errors import (
    AlreadyExists,
    InvalidArgument,
    TadpoleError,
    Timeout,
    Unavailable,
)
from tests.agent_docs import agent_doc
from tests.chaos.history import History, Outcome, Pending, Value

log = logging.getLogger(__name__)

COUNTER_TIER = "population"


@dataclass(frozen=True, kw_only=True)
class WorkloadConfig:
    # Concurrent clients (>= 6 for the suite's contract).
    clients: int = 8
    # Key slots written concurrently; few slots = more contention per key.
    keys: int = 4
    # Operations on one key before its slot moves to a fresh key (bounds the search).
    ops_per_key: int = 300
    # Mix of operations, as weights.
    read_weight: int = 4
    write_weight: int = 4
    cas_weight: int = 2
    # Per-operation client deadline, seconds: shorter = more unknown outcomes.
    op_timeout_s: float = 2.0
    # Pause after a failed operation, seconds (keeps a client off a dead node).
    fail_pause_s: float = 0.05
    # Extra clients adding to CRDT counters (population tier), and how many keys.
    counter_clients: int = 2
    counter_keys: int = 2
    # Extra clients on OR-sets and event logs (population tier), and keys of each.
    set_clients: int = 1
    log_clients: int = 1
    collection_keys: int = 2
    # Causal sessions on agent documents (agent tier): one document each.
    session_clients: int = 1
    # Broken on purpose: reads go out serializable but are checked as linearizable
    # (see the module docstring). Only for showing that the checker catches it.
    stale_reads: bool = False


def classify_write_error(exc: BaseException) -> Outcome:
    """``fail`` only when the write was definitely not applied (the client says so by
    raising :class:`Unavailable`); else ``unknown``."""
    if isinstance(exc, InvalidArgument):
        raise exc  # a workload bug, not a fault outcome
    if isinstance(exc, Unavailable):
        return "fail"
    return "unknown"


@dataclass
class Workload:
    endpoints: Sequence[str]  # one per node, in node order
    history: History
    config: WorkloadConfig = field(default_factory=WorkloadConfig)
    seed: int = 0
    credentials: grpc.ChannelCredentials | None = None  # the cluster's TLS (None: plaintext)
    generation: list[int] = field(default_factory=list)
    ops_on_key: dict[str, int] = field(default_factory=dict)
    keys_used: set[str] = field(default_factory=set)
    session_agents: list[str] = field(default_factory=list)  # one per session client
    _shared: AsyncClient | None = None  # the retrying register clients' one client
    _sharing: int = 0

    def __post_init__(self) -> None:
        self.generation = [0] * self.config.keys

    def _key(self, slot: int) -> str:
        key = f"k{slot}.{self.generation[slot]}"
        n = self.ops_on_key.get(key, 0) + 1
        self.ops_on_key[key] = n
        if n >= self.config.ops_per_key:
            self.generation[slot] += 1
        self.keys_used.add(key)
        return key

    def _client(self, i: int) -> tuple[AsyncClient, bool]:
        n = len(self.endpoints)
        rotated = [self.endpoints[(i + j) % n] for j in range(n)]
        rng = random.Random(self.seed * 1000 + i)
        if i % 2 == 0:
            retry = RetryPolicy(attempts=1)
            client = AsyncClient(
                rotated,
                timeout=self.config.op_timeout_s,
                retry=retry,
                prefer_leader=False,
                rng=rng,
                credentials=self.credentials,
            )
            return client, True
        timeout = self.config.op_timeout_s
        return AsyncClient(rotated, timeout=timeout, rng=rng, credentials=self.credentials), False

    async def run(self, stop: asyncio.Event) -> None:
        """Run every client until ``stop`` is set; each finishes its current op."""
        cfg = self.config
        first_set = cfg.clients + cfg.counter_clients
        first_log = first_set + cfg.set_clients
        first_session = first_log + cfg.log_clients
        await asyncio.gather(
            *(self._run_client(i, stop) for i in range(cfg.clients)),
            *(self._run_counter(cfg.clients + j, stop) for j in range(cfg.counter_clients)),
            *(self._run_set(first_set + j, stop) for j in range(cfg.set_clients)),
            *(self._run_log(first_log + j, stop) for j in range(cfg.log_clients)),
            *(self._run_session(first_session + j, stop) for j in range(cfg.session_clients)),
        )

    def counter_keys(self) -> list[str]:
        if not self.config.counter_clients:
            return []
        return [f"job_resource_ledger/chaos-{n}" for n in range(self.config.counter_keys)]

    def set_keys(self) -> list[str]:
        if not self.config.set_clients:
            return []
        return [f"worker_journal/chaos-set-{n}" for n in range(self.config.collection_keys)]

    def log_keys(self) -> list[str]:
        if not self.config.log_clients:
            return []
        return [f"job_event_log/chaos-log-{n}" for n in range(self.config.collection_keys)]

    async def _run_set(self, i: int, stop: asyncio.Event) -> None:
        """Add fresh elements; remove, now and then, one whose add was acknowledged."""
        rng = random.Random(self.seed * 7919 + i)
        client, _single = self._client(i)
        keys, added, seq = self.set_keys(), list[tuple[str, str]](), 0
        try:
            while not stop.is_set():
                if added and rng.random() < 0.25:
                    key, element = added.pop(rng.randrange(len(added)))
                    p = self.history.invoke(i, "srem", key, value=element)
                    call = client.set_remove(COUNTER_TIER, key, element)
                else:
                    seq += 1
                    key, element = rng.choice(keys), f"s{i}-{seq}"
                    p = self.history.invoke(i, "sadd", key, value=element)
                    call = client.set_add(COUNTER_TIER, key, element)
                if await self._complete(p, call, rng) and p.kind == "sadd":
                    added.append((key, element))
        finally:
            await client.close()

    async def _run_log(self, i: int, stop: asyncio.Event) -> None:
        """Append entries with ids of this client's own."""
        rng = random.Random(self.seed * 6271 + i)
        client, _single = self._client(i)
        keys, seq = self.log_keys(), 0
        try:
            while not stop.is_set():
                seq += 1
                key, entry = rng.choice(keys), f"l{i}-{seq}"
                p = self.history.invoke(i, "lappend", key, value=entry)
                call = client.log_append(COUNTER_TIER, key, {"seq": seq}, entry)
                await self._complete(p, call, rng)
        finally:
            await client.close()

    async def _run_session(self, i: int, stop: asyncio.Event) -> None:
        """One causal session on an agent document of its own: patch sequence numbers
        1, 2, 3 ... into it and read it back, each op on a random node, always with the
        session's token (the join of every token it was given). The server must serve
        from state at least that new or refuse (``check_sessions``)."""
        rng = random.Random(self.seed * 4099 + i)
        agent = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.session_agents.append(agent)
        clients = [
            AsyncClient(
                [e],
                timeout=self.config.op_timeout_s,
                retry=RetryPolicy(attempts=1),
                credentials=self.credentials,
            )
            for e in self.endpoints
        ]
        token: dict[str, int] = {}

        def joined(more: dict[str, int]) -> dict[str, int]:
            return {w: max(token.get(w, 0), more.get(w, 0)) for w in token.keys() | more}

        try:
            while not stop.is_set():  # create it; an unknown outcome may have done so
                try:
                    created = await rng.choice(clients).doc_create("agent", agent, agent_doc(agent))
                    token = joined(created.causal_token)
                    break
                except AlreadyExists:
                    break
                except TadpoleError:
                    await asyncio.sleep(self.config.fail_pause_s)
            seq = 0
            while not stop.is_set():
                client = rng.choice(clients)
                if rng.random() < 0.5:
                    seq += 1
                    p = self.history.invoke(i, "dpatch", agent, value=seq)
                    patch = {"performance_state": {"current_metrics": {"chaos_seq": seq}}}
                    try:
                        done = await client.doc_put("agent", agent, patch, causal_token=token)
                    except Exception as exc:
                        self.history.complete(p, classify_write_error(exc))
                        await asyncio.sleep(self.config.fail_pause_s * (1 + rng.random()))
                        continue
                    token = joined(done.causal_token)
                    self.history.complete(p, "ok")
                    continue
                p = self.history.invoke(i, "dread", agent)
                try:
                    got = await client.doc_get("agent", agent, causal_token=token)
                except TadpoleError:
                    self.history.complete(p, "fail")
                    await asyncio.sleep(self.config.fail_pause_s * (1 + rng.random()))
                    continue
                if got is None:  # absent: fine before an acknowledged create, not after
                    self.history.complete(p, "ok", result=-1 if token else 0)
                    continue
                token = joined(got.causal_token)
                metrics = got.doc.get("performance_state", {}).get("current_metrics", {})
                self.history.complete(p, "ok", result=int(metrics.get("chaos_seq", 0)))
        finally:
            for c in clients:
                await c.close()

    async def _complete(self, p: Pending, call: Awaitable[object], rng: random.Random) -> bool:
        """Await one CRDT update and record its outcome; whether it was acknowledged."""
        try:
            await call
        except Exception as exc:
            self.history.complete(p, classify_write_error(exc))
            await asyncio.sleep(self.config.fail_pause_s * (1 + rng.random()))
            return False
        self.history.complete(p, "ok")
        return True

    # Concurrent adds of a counter client with retries: its client sends the ones that
    # wait for the same node together (Tiers.UpdateEach), so faults meet those too.
    COUNTER_BURST = 8

    async def _run_counter(self, i: int, stop: asyncio.Event) -> None:
        """Add small deltas (mostly positive) to the counter keys until ``stop``: one at
        a time (a single-try client), or :attr:`COUNTER_BURST` at once (retries)."""
        cfg = self.config
        rng = random.Random(self.seed * 104729 + i)
        client, single = self._client(i)
        keys = self.counter_keys()

        async def add(process: int | str) -> None:
            key = rng.choice(keys)
            delta = rng.choice((1, 2, 3, 5, 8, -1))
            p = self.history.invoke(process, "add", key, value=delta)
            try:
                await client.counter_add(COUNTER_TIER, key, delta)
            except Exception as exc:
                self.history.complete(p, classify_write_error(exc))
                await asyncio.sleep(cfg.fail_pause_s * (1 + rng.random()))
                return
            self.history.complete(p, "ok")

        try:
            while not stop.is_set():
                if single:
                    await add(i)
                else:
                    await asyncio.gather(*(add(f"{i}.{k}") for k in range(self.COUNTER_BURST)))
        finally:
            await client.close()

    def _register_client(self, i: int) -> tuple[AsyncClient, bool]:
        """A register client's: its own when ``single``, else the one the retrying
        register clients share (closed by the last of them to finish)."""
        if i % 2 == 0:
            return self._client(i)
        if self._shared is None:
            self._shared = self._client(i)[0]
        self._sharing += 1
        return self._shared, False

    async def _release(self, client: AsyncClient) -> None:
        if client is self._shared:
            self._sharing -= 1
            if self._sharing:
                return
        await client.close()

    async def _run_client(self, i: int, stop: asyncio.Event) -> None:
        cfg = self.config
        rng = random.Random(self.seed * 7919 + i)
        client, single = self._register_client(i)
        seen: dict[str, Value] = {}  # last value this client read or wrote, per key
        seq = 0
        kinds = ["read", "write", "cas"]
        weights = [cfg.read_weight, cfg.write_weight, cfg.cas_weight]
        try:
            while not stop.is_set():
                key = self._key(rng.randrange(cfg.keys))
                kind = rng.choices(kinds, weights)[0]
                if kind == "cas" and seen.get(key) is None:
                    kind = "write"  # the store's value compare is false on an absent key
                seq += 1
                value = f"c{i}-{seq}"
                if kind == "read":
                    ok = await self._read(client, i, key, seen)
                elif kind == "write":
                    ok = await self._write(client, i, key, value, single, seen)
                else:
                    ok = await self._cas(client, i, key, seen[key], value, single, seen)
                if not ok:
                    await asyncio.sleep(cfg.fail_pause_s * (1 + rng.random()))
        finally:
            await self._release(client)

    async def _read(self, client: AsyncClient, i: int, key: str, seen: dict[str, Value]) -> bool:
        p = self.history.invoke(i, "read", key)
        try:
            kv = await client.get(key, serializable=self.config.stale_reads)
        except TadpoleError as exc:
            if isinstance(exc, InvalidArgument):
                raise
            self.history.complete(p, "fail")
            return False
        value = kv.value.decode() if kv is not None else None
        self.history.complete(p, "ok", result=value)
        seen[key] = value
        return True

    async def _write(
        self,
        client: AsyncClient,
        i: int,
        key: str,
        value: str,
        single: bool,
        seen: dict[str, Value],
    ) -> bool:
        p = self.history.invoke(i, "write", key, value=value)
        try:
            await client.put(key, value)
        except Exception as exc:
            self.history.complete(p, classify_write_error(exc))
            return False
        self.history.complete(p, "ok")
        seen[key] = value
        return True

    async def _cas(
        self,
        client: AsyncClient,
        i: int,
        key: str,
        expected: Value,
        value: str,
        single: bool,
        seen: dict[str, Value],
    ) -> bool:
        p = self.history.invoke(i, "cas", key, value=value, expected=expected)
        try:
            swapped = await client.cas(key, new_value=value, expected_value=str(expected))
        except Exception as exc:
            self.history.complete(p, classify_write_error(exc))
            return False
        self.history.complete(p, "ok" if swapped else "fail")
        if swapped:
            seen[key] = value
        else:
            seen.pop(key, None)  # stale; read again before the next cas
        return True


async def read_back(
    endpoints: Sequence[str],
    keys: Sequence[str],
    *,
    timeout_s: float = 60.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> dict[str, Value]:
    """Linearizable read of every key after the final heal (retried until ``timeout_s``)."""
    final: dict[str, Value] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with AsyncClient(list(endpoints), timeout=5.0, credentials=credentials) as client:
        for key in sorted(keys):
            while True:
                try:
                    kv = await client.get(key)
                    break
                except (Unavailable, Timeout):
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            final[key] = kv.value.decode() if kv is not None else None
    return final


async def replica_values(
    endpoint: str, keys: Sequence[str], *, credentials: grpc.ChannelCredentials | None = None
) -> dict[str, Value]:
    """Every key as one node's local state has it (serializable reads, pinned)."""
    out: dict[str, Value] = {}
    async with AsyncClient(
        [endpoint],
        timeout=5.0,
        prefer_leader=False,
        retry=RetryPolicy(attempts=1),
        credentials=credentials,
    ) as client:
        for key in sorted(keys):
            kv = await client.get(key, serializable=True)
            out[key] = kv.value.decode() if kv is not None else None
    return out


async def copies_settled(
    endpoints: Sequence[str],
    keys: dict[str, int],
    *,
    timeout_s: float = 60.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> list[str]:
    """Wait until every tier holds exactly RF copies of each of its ``keys[tier]`` keys
    across the nodes (no copy missing, none left outside the owners after hand-off),
    with nothing under-replicated and no hint pending anywhere. Returns what is still
    off at the deadline (empty: settled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    client = AsyncClient(
        list(endpoints), timeout=5.0, retry=RetryPolicy(attempts=1), credentials=credentials
    )
    try:
        while True:
            problems: list[str] = []
            answers = await client.tier_status_all()
            copies: dict[str, int] = {}
            rf: dict[str, int] = {}
            for answer in answers:
                if answer.status is None:
                    problems.append(f"{answer.endpoint}: no tier status ({answer.error})")
                    continue
                for t in answer.status.tiers:
                    copies[t.tier] = copies.get(t.tier, 0) + t.local_keys
                    rf[t.tier] = t.rf
                    if t.under_replicated or t.hints_pending:
                        problems.append(
                            f"{answer.status.member_id} {t.tier}: under-replicated "
                            f"{t.under_replicated}, hints pending {t.hints_pending}"
                        )
            for tier, n in keys.items():
                want = n * rf.get(tier, 0)
                if copies.get(tier, 0) != want:
                    problems.append(
                        f"{tier}: {copies.get(tier, 0)} copies on the nodes, {want} wanted "
                        f"({n} keys x RF {rf.get(tier, 0)})"
                    )
            if not problems or loop.time() > deadline:
                return problems
            await asyncio.sleep(1.0)
    finally:
        await client.close()


async def existing_agents(
    endpoints: Sequence[str],
    agents: Sequence[str],
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> int:
    """How many of ``agents`` exist, read with consistency=all."""
    client = AsyncClient(list(endpoints), timeout=5.0, credentials=credentials)
    try:
        found = 0
        for agent in agents:
            if await client.doc_get("agent", agent, consistency="all") is not None:
                found += 1
        return found
    finally:
        await client.close()


async def converged_values(
    endpoints: Sequence[str],
    keys: Sequence[str],
    *,
    timeout_s: float = 60.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Each population key's value (its JSON form; None if absent) as every node answers
    it with consistency=all, once all nodes agree (hand-off and anti-entropy may need a
    few rounds after the heal). Returns (values, disagreements left at the deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    clients = [
        AsyncClient(
            [e],
            timeout=5.0,
            prefer_leader=False,
            retry=RetryPolicy(attempts=3),
            credentials=credentials,
        )
        for e in endpoints
    ]
    try:
        while True:
            answers: dict[str, list[str | None]] = {k: [] for k in keys}  # canonical JSON
            for client in clients:
                for key in keys:
                    try:
                        got = await client.tier_read(COUNTER_TIER, key, consistency="all")
                        value = got.value.value if got.value is not None else None
                        answers[key].append(json.dumps(value, sort_keys=True))
                    except TadpoleError:
                        answers[key].append(None)
            split = {k: v for k, v in answers.items() if len(set(v)) != 1 or None in v}
            if not split or loop.time() > deadline:
                values = {
                    k: json.loads(next((x for x in v if x is not None), "null"))
                    for k, v in answers.items()
                }
                return values, [f"{k}: nodes answer {v}" for k, v in split.items()]
            await asyncio.sleep(1.0)
    finally:
        for client in clients:
            await client.close()
