"""SWIM membership, piggyback dissemination and Merkle anti-entropy, as pure logic.

Public surface (everything else is private to its module):

* :class:`Swim` (membership, failure detection, user-delta dissemination) with
  :class:`Outgoing`, :class:`MemberView`, :class:`MemberEvent`, :class:`DeltaEvent`;
* :class:`SyncPeer` + :class:`SyncStore` (anti-entropy) over :class:`MerkleTree`;
* the wire: message dataclasses in :mod:`gossip.messages`, :func:`encode` /
  :func:`decode` (and the kind-checking :func:`decode_swim` / :func:`decode_sync`),
  :func:`rpc_for`;
* :class:`GossipConfig`; exceptions rooted at :class:`GossipError`;
* :mod:`gossip.sim`, the deterministic simulator (``python -m gossip.sim --help``).

No module here opens sockets, reads clocks, sleeps or starts threads.
"""

from __future__ import annotations

from gossip.antientropy import DictStore, SyncPeer, SyncStore
from gossip.codec import WIRE_VERSION, decode, decode_swim, decode_sync, encode
from gossip.config import GossipConfig
from gossip.errors import CodecError, ConfigError, GossipError, SyncError
from gossip.merkle import MerkleLayout, MerkleTree
from gossip.messages import MemberMeta, Message, Rpc, Status, SwimMessage, SyncMessage, rpc_for
from gossip.swim import DeltaEvent, MemberEvent, MemberView, Outgoing, Swim

__all__ = [
    "WIRE_VERSION",
    "CodecError",
    "ConfigError",
    "DeltaEvent",
    "DictStore",
    "GossipConfig",
    "GossipError",
    "MemberEvent",
    "MemberMeta",
    "MemberView",
    "MerkleLayout",
    "MerkleTree",
    "Message",
    "Outgoing",
    "Rpc",
    "Status",
    "Swim",
    "SwimMessage",
    "SyncError",
    "SyncMessage",
    "SyncPeer",
    "SyncStore",
    "decode",
    "decode_swim",
    "decode_sync",
    "encode",
    "rpc_for",
]
