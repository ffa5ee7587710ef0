"""Configuration of the gossip subsystem: one frozen, keyword-only dataclass.

Defaults are the spec's (``state_synchronization.gossip_protocol``): a gossip interval
of 100 ms and a fanout of 3. Everything else follows SWIM (Das et al. 2002) and the
Lifeguard refinements (Dadgar et al. 2018); every field's comment gives its unit, its
default and the trade-off. Presets :meth:`GossipConfig.local`, :meth:`GossipConfig.lan`
and :meth:`GossipConfig.wan` are all built from :meth:`GossipConfig.base` with
:func:`dataclasses.replace`, so a field added to the base is inherited everywhere.
Cross-field rules are checked in ``__post_init__`` and raise
:class:`gossip.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gossip.errors import ConfigError

__all__ = ["GossipConfig"]


@dataclass(frozen=True, kw_only=True, slots=True)
class GossipConfig:
    """Tunables of :class:`gossip.swim.Swim` and its broadcast queue."""

    # --- dissemination --------------------------------------------------------------
    # Seconds between two push-gossip rounds (spec: 100 ms). Shorter spreads updates
    # faster but multiplies per-node packets; nothing is sent when the queue is empty.
    gossip_interval_s: float = 0.1
    # Members each gossip round pushes to (spec: 3). Higher = fewer rounds to reach
    # everyone (~log_{fanout+1} n) at proportionally more bandwidth per round.
    gossip_fanout: int = 3
    # Each queued update is sent retransmit_mult * ceil(log10(n + 1)) times before it
    # is dropped (the λ·log n of the epidemic literature). Higher = better coverage
    # under loss at the cost of bandwidth; 4 gives ~1e-5 miss probability at n=1000.
    retransmit_mult: int = 4
    # Upper bound, in bytes of encoded message, of one Ping/Ack/Gossip frame including
    # its piggybacked updates. Larger frames carry more updates per round but delay
    # everything behind them; ~1400 keeps a frame in one Ethernet MTU.
    max_message_bytes: int = 1400
    # Seconds a dead member is still gossiped to (so it can learn it was declared dead
    # and refute). Longer helps flapping nodes rejoin; costs a few packets to the void.
    gossip_to_dead_s: float = 30.0
    # Seconds a (key, version) of a user delta is remembered to suppress duplicates.
    # Must outlive an update's dissemination; longer costs memory per distinct key.
    delta_seen_ttl_s: float = 120.0

    # --- failure detection -----------------------------------------------------------
    # Seconds between two probes of this node (one random member, round-robin). The
    # detection latency is ~ probe_interval + suspicion timeout; shorter means more
    # pings per second per node (constant in n).
    probe_interval_s: float = 1.0
    # Seconds to wait for a direct Ack before asking indirect_checks others to probe.
    # Should exceed the network's p99 RTT; too low causes indirect probes (not false
    # suspicions, those need the whole probe interval to elapse).
    probe_timeout_s: float = 0.5
    # Members asked to ping the target on our behalf (SWIM's k). More = fewer false
    # suspicions under loss or a single bad path, at k extra messages per failed probe.
    indirect_checks: int = 3
    # Lifeguard suspicion timeout lower bound, in probe intervals, scaled by
    # log10(max(n, 1)) : min = suspicion_mult * log10(n) * probe_interval. Longer gives
    # a falsely suspected member more time to refute; shorter detects failures sooner.
    suspicion_mult: int = 4
    # Upper bound of the suspicion timeout as a multiple of the lower bound. The timeout
    # starts at the upper bound and shrinks toward the lower one as independent
    # suspicions arrive (suspicion_mult - 2 confirmations expected). 1 disables this.
    suspicion_max_mult: int = 6
    # Lifeguard local-health ("awareness") ceiling. A node that misses Acks/Nacks
    # scales its own probe interval and timeout by (score + 1) up to this value, so a
    # slow node stops accusing healthy ones. 1 disables local health awareness.
    awareness_max: int = 8

    # --- state exchange --------------------------------------------------------------
    # Seconds between full membership push-pulls with one random live member (scaled
    # up by log2 for clusters above 32 nodes, as memberlist does). Repairs anything the
    # gossip lost; each exchange costs O(n) bytes. 0 disables (not recommended).
    push_pull_interval_s: float = 30.0
    # Seconds between attempts to push-pull with one random dead (not left) member, so
    # that both sides of a healed partition find each other again. 0 disables.
    reconnect_interval_s: float = 10.0
    # Seconds a dead or left member stays in the table before it is forgotten. Must
    # be >= gossip_to_dead_s. Longer = more partition-heal chances, larger tables.
    dead_reap_s: float = 60.0

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"invalid GossipConfig: {what}")

        for name in ("gossip_interval_s", "probe_interval_s", "probe_timeout_s"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value!r}")
        need(self.gossip_fanout >= 1, "gossip_fanout must be >= 1")
        need(self.retransmit_mult >= 1, "retransmit_mult must be >= 1")
        need(self.max_message_bytes >= 256, "max_message_bytes must be >= 256")
        need(self.indirect_checks >= 0, "indirect_checks must be >= 0")
        need(self.suspicion_mult >= 1, "suspicion_mult must be >= 1")
        need(self.suspicion_max_mult >= 1, "suspicion_max_mult must be >= 1")
        need(self.awareness_max >= 1, "awareness_max must be >= 1")
        need(
            self.probe_timeout_s < self.probe_interval_s,
            "probe_timeout_s must be < probe_interval_s (the indirect probe needs time)",
        )
        need(self.push_pull_interval_s >= 0, "push_pull_interval_s must be >= 0")
        need(self.reconnect_interval_s >= 0, "reconnect_interval_s must be >= 0")
        need(self.gossip_to_dead_s >= 0, "gossip_to_dead_s must be >= 0")
        need(self.delta_seen_ttl_s > 0, "delta_seen_ttl_s must be > 0")
        need(self.dead_reap_s >= self.gossip_to_dead_s, "dead_reap_s must be >= gossip_to_dead_s")

    # --- presets -----------------------------------------------------------------------

    @classmethod
    def base(cls) -> GossipConfig:
        """The defaults: the spec's 100 ms / fanout 3 with LAN failure detection."""
        return cls()

    @classmethod
    def lan(cls) -> GossipConfig:
        """Same-datacenter cluster (RTT ~1 ms). Identical to :meth:`base`."""
        return cls.base()

    @classmethod
    def local(cls) -> GossipConfig:
        """Loopback / single-host cluster: faster detection, tighter timeouts."""
        return dataclasses.replace(
            cls.base(),
            probe_interval_s=0.5,
            probe_timeout_s=0.2,
            suspicion_mult=3,
            push_pull_interval_s=15.0,
            reconnect_interval_s=5.0,
        )

    @classmethod
    def wan(cls) -> GossipConfig:
        """Cross-region cluster (RTT ~100-300 ms): slower, more forgiving."""
        return dataclasses.replace(
            cls.base(),
            gossip_interval_s=0.5,
            gossip_fanout=4,
            probe_interval_s=5.0,
            probe_timeout_s=3.0,
            suspicion_mult=6,
            push_pull_interval_s=60.0,
            reconnect_interval_s=30.0,
            gossip_to_dead_s=60.0,
            dead_reap_s=120.0,
        )

    # --- derived quantities --------------------------------------------------------------

    def retransmit_limit(self, n: int) -> int:
        """Times one update is sent: ``retransmit_mult * ceil(log10(n + 1))``."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def suspicion_bounds_s(self, n: int) -> tuple[float, float]:
        """(min, max) suspicion timeout in seconds for a cluster of ``n`` members."""
        scale = max(1.0, math.log10(max(1, n)))
        lo = self.suspicion_mult * scale * self.probe_interval_s
        return lo, lo * self.suspicion_max_mult

    def push_pull_scaled_s(self, n: int) -> float:
        """Push-pull interval grown with log2(n) above 32 members (memberlist's rule)."""
        if n <= 32:
            return self.push_pull_interval_s
        return self.push_pull_interval_s * (math.ceil(math.log2(n) - math.log2(32)) + 1)
