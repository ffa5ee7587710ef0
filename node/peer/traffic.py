"""Bytes exchanged with each peer, per channel, and the round-trip time to each peer.

Channels: ``raft`` (Raft frames and their answers, on the link threads and in the Raft
RPC handler), ``replica`` (CRDT-tier replication), ``gossip`` (SWIM messages and
anti-entropy). What is counted is the payload each side hands to gRPC -- the frames,
the encoded replica and gossip messages -- not HTTP/2 and TLS framing, so the figures
compare channels and peers, not what the network interface carries.

The round-trip time is SWIM's: a direct probe's ping to its ack (the protocol's own
clock, measured on the event loop), which is what a probe's timeout is judged
against. Counts are updated from several threads (the Raft links have their own), so
one lock guards them; an update is a dict lookup and an add.
"""

from __future__ import annotations

import threading

from consensus.durable import Histogram

__all__ = ["CHANNELS", "RTT_BUCKETS", "PeerTraffic"]

CHANNELS = ("raft", "replica", "gossip")
# Seconds: a LAN round trip is well under a millisecond, a loaded 2-core test machine
# a few; SWIM's probe timeout is 0.5 s in the LAN profile.
RTT_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class PeerTraffic:
    """Peer names come from the callers' claims (authenticated peers, but still
    strings from the network), so at most :attr:`MAX_PEERS` distinct ones get series
    of their own; traffic of any further name is filed under ``"other"``."""

    MAX_PEERS = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, str], int] = {}
        self._received: dict[tuple[str, str], int] = {}
        self._rtt: dict[str, Histogram] = {}
        self._peers: set[str] = set()

    def _name(self, peer: str) -> str:
        if peer in self._peers:
            return peer
        if len(self._peers) >= self.MAX_PEERS:
            return "other"
        self._peers.add(peer)
        return peer

    def sent(self, peer: str, channel: str, n: int) -> None:
        with self._lock:
            key = (self._name(peer), channel)
            self._sent[key] = self._sent.get(key, 0) + n

    def received(self, peer: str, channel: str, n: int) -> None:
        with self._lock:
            key = (self._name(peer), channel)
            self._received[key] = self._received.get(key, 0) + n

    def round_trip(self, peer: str, seconds: float) -> None:
        with self._lock:
            peer = self._name(peer)
            histogram = self._rtt.get(peer)
            if histogram is None:
                histogram = self._rtt[peer] = Histogram(RTT_BUCKETS)
            histogram.observe(seconds)

    def bytes_sent(self) -> dict[tuple[str, str], int]:
        """``(peer, channel) -> bytes``, a copy."""
        with self._lock:
            return dict(self._sent)

    def bytes_received(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._received)

    def round_trips(self) -> dict[str, Histogram]:
        """Each peer's round-trip histogram (read with ``snapshot()``)."""
        with self._lock:
            return dict(self._rtt)
