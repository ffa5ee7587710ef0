"""Per-peer traffic counts stay bounded whatever names peers claim."""

from __future__ import annotations

from node.peer.traffic import PeerTraffic


def test_counts_add_up_per_peer_and_channel() -> None:
    traffic = PeerTraffic()
    traffic.sent("n2", "raft", 100)
    traffic.sent("n2", "raft", 20)
    traffic.received("n2", "gossip", 7)
    traffic.round_trip("n2", 0.002)
    assert traffic.bytes_sent() == {("n2", "raft"): 120}
    assert traffic.bytes_received() == {("n2", "gossip"): 7}
    assert traffic.round_trips()["n2"].snapshot()[0][-1][1] == 1


def test_names_past_the_bound_share_one_series() -> None:
    traffic = PeerTraffic()
    for i in range(PeerTraffic.MAX_PEERS + 50):
        traffic.sent(f"claimed-{i}", "replica", 1)
    sent = traffic.bytes_sent()
    assert len(sent) == PeerTraffic.MAX_PEERS + 1
    assert sent[("other", "replica")] == 50
    traffic.sent("claimed-0", "replica", 1)  # a name already counted keeps its own
    assert traffic.bytes_sent()[("claimed-0", "replica")] == 2
