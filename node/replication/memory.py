"""In-memory stand-ins for the replication driver's world: store, membership, transport.

For whole-cluster tests in one event loop (``tests/scenarios``), deterministic: no
threads, no sockets, no clocks. A :class:`MemoryNetwork` connects the nodes and injects
faults::

    net = MemoryNetwork()
    net.add("n1"), net.add("n2"), net.add("n3")
    r1 = Replication(node_id="n1", store=MemoryStore(), membership=net.membership("n1"),
                     transport=net.transport("n1"), ...)
    net.attach("n1", r1.on_replica)   # what a peer's message reaches
    net.down("n2")                    # n2 stops answering (gossip has not noticed yet)
    net.declare_dead("n2")            # gossip declares it dead: it leaves live()
    net.partition("n1", "n3")         # no traffic between n1 and n3, both ways
    net.heal()
    net.lose_replies("n2", "Forward") # n2 serves the next Forward, but its reply is lost

A message to a peer that cannot be reached is never delivered and raises
:class:`~node.replication.errors.NotDelivered` (nothing applied); a message that was
served but whose reply did not come back (the peer went down while serving it, or a
reply injected as lost) raises plain :class:`~node.replication.errors.PeerUnreachable`
(outcome unknown), as a real transport would.

Every message crosses the real codec (``encode`` on one side, ``decode`` on the other),
so a scenario exercises the wire format too, and :attr:`MemoryNetwork.sent` counts
messages by type.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from node.replication import codec
from node.replication.errors import NotDelivered, PeerUnreachable
from node.replication.messages import Reply, Request
from node.replication.store import ChangePage, Hint, OnceFn, UpdateFn, digest_of

__all__ = ["MemoryMember", "MemoryMembership", "MemoryNetwork", "MemoryStore", "MemoryTransport"]

Handler = Callable[[bytes], Awaitable[bytes]]


class MemoryStore:
    """:class:`node.replication.store.ReplicaStore` in dicts. Not durable, by design:
    "restarting" a node in a test keeps the same object, which is what a durable store
    gives a restarted process. ``clock_ns`` stamps hints (default: a counter)."""

    def __init__(self, clock_ns: Callable[[], int] | None = None) -> None:
        self._state: dict[tuple[str, str], bytes] = {}
        self._hints: dict[int, Hint] = {}
        self._meta: dict[str, bytes] = {}
        self._versions: dict[str, int] = {}
        self._next_hint = 1
        self._feed: list[tuple[str, str]] = []  # (tier, key) per change; seq = index + 1
        self._requests: set[str] = set()  # request ids applied by update_once (no window)
        self.feed_id = "memory"
        self._ticks = 0
        self._clock_ns = clock_ns or self._tick

    def _tick(self) -> int:
        self._ticks += 1
        return self._ticks

    async def update(self, tier: str, key: str, fn: UpdateFn) -> bytes | None:
        _check_name("tier", tier)
        _check_name("key", key)
        current = self._state.get((tier, key))
        new = fn(current)
        if new is not None and not isinstance(new, bytes):
            raise TypeError(f"update function result must be bytes, got {type(new).__name__}")
        if new != current:
            self._versions[tier] = self._versions.get(tier, 0) + 1
            self._feed.append((tier, key))
        if new is None:
            self._state.pop((tier, key), None)
            return None
        self._state[(tier, key)] = new
        return new

    async def update_once(
        self, tier: str, key: str, fn: OnceFn, request_ids: Sequence[str]
    ) -> bytes | None:
        for rid in request_ids:
            _check_name("request id", rid)
        seen = frozenset(r for r in request_ids if r in self._requests)
        applied: list[str] = []

        def once(value: bytes | None) -> bytes | None:
            new, done = fn(value, seen)
            applied.extend(done)
            return new

        result = await self.update(tier, key, once)
        self._requests.update(i for i in applied if i in request_ids)
        return result

    async def update_many_once(
        self, items: Sequence[tuple[str, str, OnceFn, Sequence[str]]]
    ) -> list[bytes | Exception | None]:
        out: list[bytes | Exception | None] = []
        for tier, key, fn, ids in items:
            try:
                out.append(await self.update_once(tier, key, fn, ids))
            except Exception as exc:
                out.append(exc)
        return out

    async def update_many(
        self, items: Sequence[tuple[str, str, UpdateFn]]
    ) -> list[bytes | Exception | None]:
        out: list[bytes | Exception | None] = []
        for tier, key, fn in items:
            try:
                out.append(await self.update(tier, key, fn))
            except Exception as exc:
                out.append(exc)
        return out

    def changes(
        self, tier: str, prefix: str, after: int, limit: int, *, digests: bool = False
    ) -> ChangePage:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if after == -1:
            return ChangePage(self.feed_id, [], len(self._feed), 0)
        rows = []
        for seq, (t, k) in enumerate(self._feed, start=1):
            if seq > after and t == tier and k.startswith(prefix):
                value = self._state.get((t, k))
                rows.append((seq, k, digest_of(value) if digests and value is not None else value))
                if len(rows) == limit:
                    break
        through = rows[-1][0] if len(rows) == limit else max(len(self._feed), after)
        last: dict[str, tuple[int, str, bytes | None]] = {}
        for row in rows:
            last.pop(row[1], None)
            last[row[1]] = row
        return ChangePage(self.feed_id, list(last.values()), through, 0)

    def version(self, tier: str) -> int:
        return self._versions.get(tier, 0)

    async def add_hint(self, target: str, tier: str, key: str, value: bytes) -> int:
        for name, v in (("target", target), ("tier", tier), ("key", key)):
            _check_name(name, v)
        hint_id, self._next_hint = self._next_hint, self._next_hint + 1
        self._hints[hint_id] = Hint(hint_id, target, tier, key, bytes(value), self._clock_ns())
        return hint_id

    async def delete_hints(self, ids: Iterable[int]) -> int:
        return sum(1 for i in ids if self._hints.pop(int(i), None) is not None)

    def get(self, tier: str, key: str) -> bytes | None:
        return self._state.get((tier, key))

    def get_checked(self, tier: str, key: str) -> bytes | None:
        return self.get(tier, key)  # memory does not rot

    async def replace_if(self, tier: str, key: str, expected: bytes, new: bytes) -> bool:
        if self._state.get((tier, key)) != expected:
            return False
        self._state[(tier, key)] = new
        self._versions[tier] = self._versions.get(tier, 0) + 1
        self._feed.append((tier, key))
        return True

    async def set_meta(self, name: str, value: bytes) -> None:
        _check_name("name", name)
        self._meta[name] = bytes(value)

    def get_meta(self, name: str) -> bytes | None:
        return self._meta.get(name)

    def scan(
        self, tier: str, prefix: str = "", after: str = "", limit: int = 0
    ) -> list[tuple[str, bytes]]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = [
            (k, v) for (t, k), v in sorted(self._state.items())
            if t == tier and k.startswith(prefix) and (not after or k > after)
        ]  # fmt: skip
        return rows[:limit] if limit else rows

    def keys_and_digests(self, tier: str) -> Iterator[tuple[str, bytes]]:
        for key, value in self.scan(tier):
            yield key, digest_of(value)

    def count(self, tier: str) -> int:
        return sum(1 for t, _ in self._state if t == tier)

    def hints_for(self, target: str, limit: int = 0) -> list[Hint]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        hints = [h for _, h in sorted(self._hints.items()) if h.target == target]
        return hints[:limit] if limit else hints

    def hints_about(self, tier: str, key: str) -> list[Hint]:
        return [h for _, h in sorted(self._hints.items()) if (h.tier, h.key) == (tier, key)]


def _check_name(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")


@dataclass(frozen=True, slots=True)
class MemoryMember:
    id: str
    address: str
    status: str  # "alive" or "dead", as gossip would report it


class MemoryNetwork:
    """Nodes, their reachability and gossip's verdicts, for one in-memory cluster.

    Reachability (transport) and liveness (membership) are separate on purpose, as in
    a real cluster: a node that stopped answering stays in ``live()`` until gossip
    declares it dead, and in that window writes hint for it.
    """

    def __init__(self) -> None:
        self._members: dict[str, str] = {}  # id -> address, in join order
        self._handlers: dict[str, Handler] = {}
        self._down: set[str] = set()
        self._dead: set[str] = set()
        self._cuts: set[frozenset[str]] = set()
        self._lost: list[tuple[str, str | None]] = []  # (sender, request type or None)
        self.sent: collections.Counter[str] = collections.Counter()

    # -- topology ------------------------------------------------------------------

    def add(self, node_id: str) -> None:
        self._members.setdefault(node_id, f"mem://{node_id}")

    def attach(self, node_id: str, handler: Handler) -> None:
        """``handler`` serves the replica messages sent to ``node_id`` (``on_replica``)."""
        self.add(node_id)
        self._handlers[node_id] = handler

    def ids(self) -> list[str]:
        return list(self._members)

    def address(self, node_id: str) -> str:
        return self._members[node_id]

    # -- faults --------------------------------------------------------------------

    def down(self, node_id: str) -> None:
        """``node_id`` stops answering (crashed, not yet declared dead)."""
        self._down.add(node_id)

    def up(self, node_id: str) -> None:
        """``node_id`` answers again and gossip sees it alive (a restart)."""
        self._down.discard(node_id)
        self._dead.discard(node_id)

    def declare_dead(self, node_id: str) -> None:
        """Gossip declares ``node_id`` dead: it leaves every node's ``live()``."""
        self._dead.add(node_id)

    def partition(self, a: str, b: str) -> None:
        """No messages between ``a`` and ``b`` (both directions)."""
        self._cuts.add(frozenset((a, b)))

    def heal(self) -> None:
        self._cuts.clear()

    def lose_replies(self, node_id: str, kind: str | None = None, count: int = 1) -> None:
        """The next ``count`` replies ``node_id`` sends (to requests of type ``kind``, a
        message class name, or to any request) are lost: it serves the request —
        applies it — but the caller gets no answer."""
        self._lost += [(node_id, kind)] * count

    def is_down(self, node_id: str) -> bool:
        return node_id in self._down

    def reachable(self, src: str, dst: str) -> bool:
        return (
            dst in self._handlers
            and dst not in self._down
            and src not in self._down
            and frozenset((src, dst)) not in self._cuts
        )

    # -- views ---------------------------------------------------------------------

    def live(self, viewer: str) -> dict[str, str]:
        view = {m: a for m, a in self._members.items() if m not in self._dead}
        view.setdefault(viewer, self._members[viewer])
        return view

    def members(self) -> list[MemoryMember]:
        return [
            MemoryMember(m, a, "dead" if m in self._dead else "alive")
            for m, a in self._members.items()
        ]

    def membership(self, node_id: str) -> MemoryMembership:
        self.add(node_id)
        return MemoryMembership(self, node_id)

    def transport(self, node_id: str) -> MemoryTransport:
        self.add(node_id)
        return MemoryTransport(self, node_id)

    async def deliver(self, src: str, dst: str, message: Request) -> Reply:
        kind = type(message).__name__
        if not self.reachable(src, dst):
            raise NotDelivered(f"{dst} is unreachable from {src} (memory network)")
        self.sent[kind] += 1
        payload = await self._handlers[dst](codec.encode(message))
        if not self.reachable(src, dst):  # went down while serving: the reply is lost
            raise PeerUnreachable(f"{dst} did not answer {src} (memory network)")
        for i, (sender, lost_kind) in enumerate(self._lost):
            if sender == dst and lost_kind in (None, kind):
                del self._lost[i]
                raise PeerUnreachable(f"{dst} served {kind} but its reply was lost")
        return codec.decode_reply(payload)


class MemoryMembership:
    """:class:`node.replication.transport.Membership` over a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, self_id: str) -> None:
        self._network = network
        self._self_id = self_id

    @property
    def self_id(self) -> str:
        return self._self_id

    def live(self) -> dict[str, str]:
        return self._network.live(self._self_id)

    def members(self) -> Sequence[MemoryMember]:
        return self._network.members()


class MemoryTransport:
    """:class:`node.replication.transport.PeerTransport` over a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, self_id: str) -> None:
        self._network = network
        self._self_id = self_id

    async def call(self, peer: str, address: str, message: Request) -> Reply:
        return await self._network.deliver(self._self_id, peer, message)

    async def close(self) -> None:
        return None
