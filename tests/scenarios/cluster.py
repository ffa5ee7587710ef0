"""An in-memory cluster of real ``Replication`` drivers, driven by script commands.

Each node is the production driver over :mod:`node.replication.memory` (store,
membership, transport); every message goes through the real codec. Nothing runs in the
background: time is a counter advanced by each command, the background jobs (hand-off,
anti-entropy) run when a script says so, and after every command the asynchronous
backup copies are awaited, so a script's output is the same on every run.

Commands (``<tk>`` is ``tier/key``, e.g. ``population/job_event_log/j-1``; a node is
named by its id)::

    start n1 n2 n3                      the members, all up
    owners <tk>                         owners and fallbacks over the live members
    update <tk> <op> [args] [via=n]     one update, coordinated by ``via`` (default: the
                                        first node that is up); ops: counter_add N,
                                        set_add E.., set_remove E.., register_set JSON,
                                        map_set FIELD JSON, map_remove FIELD,
                                        log_append ID JSON
    read <tk> one|quorum|all [via=n]    one read
    copies <tk>                         each node's local copy
    hints                               the hints each node holds
    kill n                              n stops answering (gossip has not noticed)
    dead n                              gossip declares n dead: it leaves placement
    restart n                           n comes back: a fresh driver over its store
    wipe n                              n comes back with an empty store (its disk was
                                        lost or replaced): a fresh driver over a new store
    partition a b / heal                cut / restore the link between a and b
    lose-reply n [Type]                 n serves the next request (of message type Type,
                                        e.g. Forward), but its reply is lost
    handoff                             one hinted-handoff pass on every node that is up
    anti-entropy                        one anti-entropy round on every node that is up
    health                              what each node that is up reports (Tiers.Status):
                                        under-replicated keys of its last round, hints held
    expect-converged <tk> [value=JSON]  every live owner holds the same copy, of that
                                        value if given (fails the test otherwise,
                                        whatever the golden file says)
    expect-no-strays [<tk>]             no node that is up holds a copy of the key (or of
                                        any key) that placement does not give it (fails
                                        the test otherwise)
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from crdt import decode
from node.errors import NodeError
from node.placement import ranking
from node.replication import coordinator
from node.replication.driver import ALL, ONE, QUORUM, Replication
from node.replication.memory import MemoryNetwork, MemoryStore
from node.replication.store import ReplicaStore
from node.tiers.ops import TIERS, Op, render

T0_NS = 1_700_000_000 * 10**9
TICK_NS = 1_000_000  # each command is a millisecond later than the one before
LEVELS = {"one": ONE, "quorum": QUORUM, "all": ALL}


class ScenarioError(Exception):
    """A script asked for something impossible (a typo, an unknown node)."""


StoreFactory = Callable[[str, Callable[[], int]], ReplicaStore]


def memory_stores(name: str, clock_ns: Callable[[], int]) -> ReplicaStore:
    return MemoryStore(clock_ns=clock_ns)


class Cluster:
    """``stores`` makes a node's store (once: a restarted node keeps it); the default
    is :class:`MemoryStore`, and ``SCENARIOS_STORE=sqlite`` runs on TierStore."""

    def __init__(self, stores: StoreFactory = memory_stores) -> None:
        self.net = MemoryNetwork()
        self.nodes: dict[str, Replication] = {}
        self.stores: dict[str, ReplicaStore] = {}
        self._make_store = stores
        self._generation = 0  # names a wiped node's new store apart from its old one
        self._epochs = 0
        self.now_ns = T0_NS
        self._commands: dict[str, Callable[[list[str], dict[str, str]], Any]] = {
            "start": self.start,
            "owners": self.owners,
            "update": self.update,
            "read": self.read,
            "copies": self.copies,
            "hints": self.hints,
            "kill": self.kill,
            "dead": self.dead,
            "restart": self.restart,
            "wipe": self.wipe,
            "partition": self.partition,
            "heal": self.heal,
            "lose-reply": self.lose_reply,
            "handoff": self.handoff,
            "anti-entropy": self.anti_entropy,
            "health": self.health,
            "expect-converged": self.expect_converged,
            "expect-no-strays": self.expect_no_strays,
        }

    # -- running -------------------------------------------------------------------

    async def run(self, line: str) -> str:
        """Run one command line; return its output (lines, no blank ones)."""
        words = shlex.split(line)
        args = [w for w in words[1:] if "=" not in w or w.startswith(("{", "[", '"'))]
        opts = dict(w.split("=", 1) for w in words[1:] if w not in args)
        command = self._commands.get(words[0])
        if command is None:
            raise ScenarioError(f"unknown command {words[0]!r}")
        self.now_ns += TICK_NS
        out = await command(args, opts)
        for node in self.up():
            await self.nodes[node].settle()
        return "\n".join(out) if out else "ok"

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.stop()
        for store in self.stores.values():
            aclose = getattr(store, "aclose", None)
            if aclose is not None:
                await aclose()

    def _clock(self) -> int:
        return self.now_ns

    def _next_epoch(self) -> str:
        self._epochs += 1
        return f"e{self._epochs}"

    def _boot(self, node_id: str) -> None:
        store = self.stores[node_id]
        replication = Replication(
            node_id=node_id,
            store=store,
            membership=self.net.membership(node_id),
            transport=self.net.transport(node_id),
            clock_ns=self._clock,
            monotonic=lambda: self.now_ns / 1e9,
            cluster_size=len(self.stores),
            new_epoch=self._next_epoch,  # deterministic writer ids (node id ~ e1, e2 ...)
        )
        self.nodes[node_id] = replication
        self.net.attach(node_id, replication.on_replica)

    def up(self) -> list[str]:
        return [n for n in self.nodes if not self.net.is_down(n)]

    def live(self) -> list[str]:
        """The members placement uses (as every node sees it: one gossip view)."""
        return [m.id for m in self.net.members() if m.status == "alive"]

    def _node(self, node_id: str) -> Replication:
        if node_id not in self.nodes:
            raise ScenarioError(f"no node {node_id!r}")
        return self.nodes[node_id]

    def _via(self, opts: dict[str, str]) -> str:
        via = opts.get("via") or next(iter(self.up()), None)
        if via is None:
            raise ScenarioError("every node is down")
        self._node(via)
        return via

    # -- commands ------------------------------------------------------------------

    async def start(self, args: list[str], opts: dict[str, str]) -> list[str]:
        for node_id in args:
            if node_id not in self.stores:
                self.stores[node_id] = self._make_store(node_id, self._clock)
        for node_id in args:
            self._boot(node_id)
        return [f"members {' '.join(self.nodes)}"]

    async def owners(self, args: list[str], opts: dict[str, str]) -> list[str]:
        tier, key = _tier_key(args[0])
        live = self.live()
        own = coordinator.owners(TIERS[tier], key, live)
        rest = [m for m in _ranking(tier, key, live) if m not in own]
        return [f"owners {' '.join(own)}; fallbacks {' '.join(rest) or '-'}"]

    async def update(self, args: list[str], opts: dict[str, str]) -> list[str]:
        tier, key = _tier_key(args[0])
        via = self._via(opts)
        if self.net.is_down(via):
            return [f"{via} is down"]
        try:
            result = await self.nodes[via].update(tier, key, _op(args[1], args[2:]))
        except NodeError as exc:
            return [f"{via}: {_error(exc)}"]
        kind, value = result.value
        line = f"{via}: ok, coordinator {result.coordinator}, acks {', '.join(result.replicas)}"
        if result.hinted:
            line += f"; hinted {' '.join(result.hinted)}"
        return [line, f"  {kind} {value}"]

    async def read(self, args: list[str], opts: dict[str, str]) -> list[str]:
        tier, key = _tier_key(args[0])
        via = self._via(opts)
        if self.net.is_down(via):
            return [f"{via} is down"]
        try:
            result = await self.nodes[via].read(tier, key, LEVELS[args[1]])
        except NodeError as exc:
            return [f"{via}: {_error(exc)}"]
        value = "not found" if result.state is None else " ".join(render(result.state))
        return [
            f"{via}: from {' '.join(result.replicas)}; repaired {result.repaired}",
            f"  {value}",
        ]

    async def copies(self, args: list[str], opts: dict[str, str]) -> list[str]:
        tier, key = _tier_key(args[0])
        own = coordinator.owners(TIERS[tier], key, self.live())
        out = []
        for node_id, store in self.stores.items():
            raw = store.get(tier, key)
            shown = "-" if raw is None else " ".join(render(decode(raw)))
            role = " (owner)" if node_id in own else ""
            down = " [down]" if self.net.is_down(node_id) else ""
            out.append(f"{node_id}{role}{down}: {shown}")
        return out

    async def hints(self, args: list[str], opts: dict[str, str]) -> list[str]:
        out = []
        for node_id, store in self.stores.items():
            held = [h for target in self.stores for h in store.hints_for(target)]
            listed = ", ".join(f"{h.tier}/{h.key} for {h.target}" for h in held)
            out.append(f"{node_id}: {listed or '-'}")
        return out

    async def kill(self, args: list[str], opts: dict[str, str]) -> list[str]:
        self._node(args[0])
        self.net.down(args[0])
        return [f"{args[0]} down; live (gossip) {' '.join(self.live())}"]

    async def dead(self, args: list[str], opts: dict[str, str]) -> list[str]:
        self._node(args[0])
        self.net.declare_dead(args[0])
        return [f"{args[0]} declared dead; live {' '.join(self.live())}"]

    async def restart(self, args: list[str], opts: dict[str, str]) -> list[str]:
        node_id = args[0]
        await self._node(node_id).stop()
        self.net.up(node_id)
        self._boot(node_id)
        return [f"{node_id} up; live {' '.join(self.live())}"]

    async def wipe(self, args: list[str], opts: dict[str, str]) -> list[str]:
        node_id = args[0]
        await self._node(node_id).stop()
        old = self.stores[node_id]
        aclose = getattr(old, "aclose", None)
        if aclose is not None:
            await aclose()
        self._generation += 1
        self.stores[node_id] = self._make_store(f"{node_id}.{self._generation}", self._clock)
        self.net.up(node_id)
        self._boot(node_id)
        return [f"{node_id} up with an empty store; live {' '.join(self.live())}"]

    async def partition(self, args: list[str], opts: dict[str, str]) -> list[str]:
        self._node(args[0]), self._node(args[1])
        self.net.partition(args[0], args[1])
        return [f"{args[0]} and {args[1]} cut off from each other"]

    async def heal(self, args: list[str], opts: dict[str, str]) -> list[str]:
        self.net.heal()
        return ["every link restored"]

    async def lose_reply(self, args: list[str], opts: dict[str, str]) -> list[str]:
        self._node(args[0])
        kind = args[1] if len(args) > 1 else None
        self.net.lose_replies(args[0], kind)
        return [f"{args[0]} will serve the next {kind or 'request'}; its reply will be lost"]

    async def handoff(self, args: list[str], opts: dict[str, str]) -> list[str]:
        out = []
        for node_id in self.up():
            node = self.nodes[node_id]
            before = node.handed_off
            await node.hand_off()
            if node.handed_off != before:
                out.append(f"{node_id}: handed off {node.handed_off - before}")
        return out or ["nothing handed off"]

    async def anti_entropy(self, args: list[str], opts: dict[str, str]) -> list[str]:
        out = []
        for node_id in self.up():
            node = self.nodes[node_id]
            synced, sent = node.synced_keys, self.net.sent["Sync"]
            strays = node.strays_handed_off
            await node.anti_entropy_round()
            moved = node.synced_keys - synced
            under = {t: h.under_replicated for t, h in node.health().items() if h.under_replicated}
            line = f"{node_id}: {self.net.sent['Sync'] - sent} sync messages, {moved} values moved"
            if node.strays_handed_off != strays:
                line += f"; strays handed off {node.strays_handed_off - strays}"
            if under:
                line += "; under-replicated " + ", ".join(f"{t} {n}" for t, n in under.items())
            out.append(line)
        return out

    async def health(self, args: list[str], opts: dict[str, str]) -> list[str]:
        out = []
        for node_id in self.up():
            under = {t: h.under_replicated for t, h in self.nodes[node_id].health().items()}
            hints: dict[str, int] = {}
            for target in self.stores:
                for hint in self.stores[node_id].hints_for(target):
                    hints[hint.tier] = hints.get(hint.tier, 0) + 1
            parts = [
                f"{label} " + ", ".join(f"{t} {n}" for t, n in counts.items() if n)
                for label, counts in (("under-replicated", under), ("hints", hints))
                if any(counts.values())
            ]
            out.append(f"{node_id}: {'; '.join(parts) or 'all clear'}")
        return out

    async def expect_converged(self, args: list[str], opts: dict[str, str]) -> list[str]:
        tier, key = _tier_key(args[0])
        spec = TIERS[tier]
        live = self.live()
        own = coordinator.owners(spec, key, live)
        if len(own) < coordinator.replication_factor(spec, len(live)):
            raise AssertionError(f"{tier}/{key}: only {len(own)} live owners")
        held = {n: self.stores[n].get(tier, key) for n in own}
        if None in held.values() or len(set(held.values())) != 1:
            shown = {n: "-" if v is None else render(decode(v))[1] for n, v in held.items()}
            raise AssertionError(f"{tier}/{key} has not converged on its owners: {shown}")
        raw = next(iter(held.values()))
        assert raw is not None
        if "value" in opts and json.loads(render(decode(raw))[1]) != json.loads(opts["value"]):
            raise AssertionError(
                f"{tier}/{key} converged on {render(decode(raw))[1]}, not {opts['value']}"
            )
        return [f"converged on {' '.join(own)}: {' '.join(render(decode(raw)))}"]

    async def expect_no_strays(self, args: list[str], opts: dict[str, str]) -> list[str]:
        live = self.live()
        wanted = [_tier_key(args[0])] if args else None
        checked = 0
        strays = []
        for node_id in self.up():
            store = self.stores[node_id]
            held = wanted or [(t, k) for t in TIERS for k, _ in store.scan(t)]
            for tier, key in held:
                if store.get(tier, key) is None:
                    continue
                checked += 1
                if node_id not in coordinator.owners(TIERS[tier], key, live):
                    strays.append(f"{node_id} holds {tier}/{key}")
        if strays:
            raise AssertionError(f"copies outside their owners: {'; '.join(strays)}")
        down = [n for n in self.nodes if self.net.is_down(n)]
        line = f"{checked} copies, every one on an owner"
        if down:
            line += f" (not checked: {' '.join(down)}, down)"
        return [line]


def _tier_key(text: str) -> tuple[str, str]:
    tier, _, key = text.partition("/")
    if tier not in TIERS or not key:
        raise ScenarioError(f"{text!r} is not <tier>/<key>")
    return tier, key


def _ranking(tier: str, key: str, live: list[str]) -> list[str]:
    return ranking(coordinator.placement_key(tier, key), live)


def _op(kind: str, args: list[str]) -> Op:
    if kind == "counter_add":
        return Op(kind, amount=int(args[0]))
    if kind in ("set_add", "set_remove"):
        return Op(kind, elements=tuple(args))
    if kind == "register_set":
        return Op(kind, value=json.loads(args[0]))
    if kind == "map_set":
        return Op(kind, field=args[0], value=json.loads(args[1]))
    if kind == "map_remove":
        return Op("map_set", field=args[0], remove=True)
    if kind == "log_append":
        return Op(kind, entry_id=args[0], value=json.loads(args[1]))
    raise ScenarioError(f"unknown op {kind!r}")


def _error(exc: NodeError) -> str:
    """An error as the class and outcome a client acts on (never its words)."""
    return f"{type(exc).__name__} (outcome {exc.outcome.value})"
