"""The sans-IO gossip core, driven synchronously over a fake network."""

import pytest

from p2p_l2.errors import RemoteProtocolError
from p2p_l2.gossip import Deliver, Gossip, Reject, Send, message_id


class FakeNet:
    """Gossip cores joined by links; `run` delivers queued sends until quiet."""

    def __init__(self, edges, **opts):
        names = sorted({n for e in edges for n in e})
        self.cores = {n: Gossip(n, **opts) for n in names}
        for a, b in edges:
            self.cores[a].add_peer(b)
            self.cores[b].add_peer(a)
        self.queue = []
        self.delivered = {n: [] for n in names}
        self.carried = {}  # (frozenset link, msg_id) -> object copies carried
        self.rejected = []

    def feed(self, src, actions):
        for a in actions:
            if isinstance(a, Send):
                self.queue.append((src, a))
            elif isinstance(a, Deliver):
                self.delivered[src].append(a)
            elif isinstance(a, Reject):
                self.rejected.append((src, a))

    def run(self, now=0.0):
        while self.queue:
            src, send = self.queue.pop(0)
            if send.kind == "gossip":
                key = (frozenset((src, send.peer)), send.payload["id"])
                self.carried[key] = self.carried.get(key, 0) + 1
            self.feed(send.peer, self.cores[send.peer].receive(src, send.kind, send.payload, now))


RING = [(f"n{i}", f"n{(i + 1) % 8}") for i in range(8)] + [("n0", "n4"), ("n2", "n6")]


def test_flood_reaches_everyone_once():
    net = FakeNet(RING)
    msg_id, actions = net.cores["n0"].publish("t", b"hi", 0.0)
    net.feed("n0", actions)
    net.run()
    for name, got in net.delivered.items():
        assert [d.msg_id for d in got] == [msg_id], name
    assert all(d.hops >= 1 for n, g in net.delivered.items() if n != "n0" for d in g)


def test_inventory_objects_cross_each_link_at_most_once():
    net = FakeNet(RING, inv_threshold=100)
    msg_id, actions = net.cores["n3"].publish("blocks", b"x" * 5000, 0.0)
    net.feed("n3", actions)
    net.run()
    assert all(len(got) == 1 for got in net.delivered.values())
    assert max(net.carried.values()) == 1
    assert sum(net.carried.values()) == len(net.cores) - 1  # exactly one copy per receiver


def test_fetch_retries_another_announcer_after_timeout():
    g = Gossip("me", inv_threshold=10, fetch_timeout=1.0)
    g.add_peer("a")
    g.add_peer("b")
    mid = message_id("t", b"y" * 20)
    assert g.receive("a", "inv", {"ids": [mid]}, 0.0) == [Send("a", "getdata", {"ids": [mid]})]
    assert g.receive("b", "inv", {"ids": [mid]}, 0.1) == []  # already asked a
    assert g.tick(0.5) == []
    assert g.tick(1.5) == [Send("b", "getdata", {"ids": [mid]})]


def test_rejected_messages_are_not_relayed():
    def no_bad(data, peer):
        if data == b"bad":
            raise RemoteProtocolError("invalid", "bad data")

    net = FakeNet([("a", "b"), ("b", "c")])
    net.cores["b"].add_validator("t", no_bad)
    for data in (b"bad", b"good"):
        mid, actions = net.cores["a"].publish("t", data, 0.0)
        net.feed("a", actions)
        net.run()
    assert [d.data for d in net.delivered["c"]] == [b"good"]
    assert [(n, r.reason) for n, r in net.rejected] == [("b", "invalid")]
    own = Gossip("me")
    own.add_validator("t", no_bad)
    with pytest.raises(RemoteProtocolError):
        own.publish("t", b"bad", 0.0)


def test_forged_msg_id_is_a_protocol_error():
    g = Gossip("me")
    g.add_peer("a")
    payload = {"id": b"\0" * 16, "t": "t", "d": b"x", "h": 0, "o": "a", "ts": 0.0}
    with pytest.raises(RemoteProtocolError) as err:
        g.receive("a", "gossip", payload, 0.0)
    assert err.value.reason == "bad_msg_id"


def test_seen_cache_is_bounded():
    g = Gossip("me", seen_size=10)
    for i in range(50):
        g.publish("t", str(i).encode(), 0.0)
    assert len(g._seen) == 10


def test_ignored_messages_are_forgotten_not_punished():
    from p2p_l2.gossip import Ignore

    ready = {"ok": False}

    def later(data, peer):
        if not ready["ok"]:
            raise Ignore

    net = FakeNet([("a", "b"), ("b", "c")])
    net.cores["b"].add_validator("t", later)
    payload = {"id": message_id("t", b"x"), "t": "t", "d": b"x", "h": 0, "o": "a", "ts": 0.0}
    assert net.cores["b"].receive("a", "gossip", dict(payload), 0.0) == []
    assert not net.cores["b"].has(payload["id"]) and not net.rejected
    ready["ok"] = True  # e.g. the missing parent arrived: the same message is now accepted
    net.feed("b", net.cores["b"].receive("a", "gossip", dict(payload), 0.0))
    net.run()
    assert [d.data for d in net.delivered["c"]] == [b"x"]
