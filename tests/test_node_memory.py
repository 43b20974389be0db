"""Multi-node behaviour on in-memory clusters under trio's autojump clock."""

import msgpack
import pytest
import trio
import trio.testing

from p2p_l2 import events as ev
from p2p_l2.errors import ControlError, RemoteProtocolError
from p2p_l2.net.frames import receive_frame
from p2p_l2.net.link import PeerLink
from p2p_l2.testing import make_config
from p2p_l2.wire import FrameDecoder, Handshake, Identity, encode_frame, session_pair


async def test_gossip_floods_a_ring_once_per_node(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(12, "ring"))
    res = await cluster["n0"].call("gossip.publish", topic="news", data="hello")
    for name in cluster.names[1:]:
        event = await cluster.wait_for_event(name, ev.GOSSIP_DELIVERED, msg_id=res["msg_id"])
        assert 1 <= event["hops"] <= 6 and event["origin"] == "n0"
    for name in cluster.names:
        delivered = [e for e in cluster.events(name) if e["event"] == ev.GOSSIP_DELIVERED]
        assert len(delivered) == (0 if name == "n0" else 1)


async def test_large_objects_cross_each_link_once(autojump_clock, memory_cluster_factory):
    cfg = make_config(16, "random-regular", seed=3)
    cluster = await memory_cluster_factory(cfg)
    res = await cluster["n5"].call("gossip.publish", topic="blob", data="z" * 50_000)
    for name in cluster.names:
        if name != "n5":
            await cluster.wait_for_event(name, ev.GOSSIP_DELIVERED, msg_id=res["msg_id"])
    sent = sum(node.gossip.stats["objects_sent"] for node in cluster.nodes.values())
    assert sent == len(cluster.names) - 1  # each receiver fetched exactly one copy
    dup = sum(node.gossip.stats["duplicates"] for node in cluster.nodes.values())
    assert dup == 0


async def test_validation_hook_stops_relay(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(3, "line"))

    def only_even(data: bytes, peer):
        if int(data) % 2:
            raise RemoteProtocolError("invalid", "odd number")

    cluster.nodes["n1"].gossip.add_validator("num", only_even)
    odd = await cluster["n0"].call("gossip.publish", topic="num", data="3")
    even = await cluster["n0"].call("gossip.publish", topic="num", data="4")
    await cluster.wait_for_event("n2", ev.GOSSIP_DELIVERED, msg_id=even["msg_id"])
    rejected = await cluster.wait_for_event("n1", ev.MSG_REJECTED, msg_id=odd["msg_id"])
    assert rejected["reason"] == "invalid" and rejected["peer"] == "n0"
    assert not [e for e in cluster.events("n2") if e.get("msg_id") == odd["msg_id"]]
    with pytest.raises(ControlError) as err:
        await cluster["n1"].call("gossip.publish", topic="num", data="5")
    assert err.value.code == "invalid"


async def test_peers_reconnect_after_restart(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(4, "ring"))
    await cluster.kill("n2")
    await cluster.wait_for_event("n1", ev.PEER_DISCONNECTED, peer="n2")
    assert "n2" not in (await cluster["n1"].call("status"))["peers"]
    await cluster.restart("n2")
    await cluster.wait_connected()
    # and gossip flows through the restarted node again
    res = await cluster["n1"].call("gossip.publish", topic="t", data="after")
    await cluster.wait_for_event("n3", ev.GOSSIP_DELIVERED, msg_id=res["msg_id"])


async def test_dialer_backs_off_until_peer_listens(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(2, "line"))
    await cluster.kill("n1")
    t0 = trio.current_time()
    await trio.sleep(10)
    fails = [e for e in cluster.events("n0") if e["event"] == ev.PEER_DIAL_FAILED]
    assert 5 <= len(fails) <= 60  # retried, but with growing, capped delays (not a busy loop)
    assert max(e["delay"] for e in fails) <= 1.0
    await cluster.restart("n1")
    await cluster.wait_connected(timeout=2)
    assert trio.current_time() - t0 < 12


async def test_control_errors_have_stable_codes(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(2, "line"))
    cases = [("no.such", {}, "unknown_method"), ("gossip.publish", {"topic": "t"}, "bad_params"),
             ("gossip.publish", {"topic": "t", "data": 5}, "bad_params"),
             ("status", {"x": 1}, "bad_params")]
    for method, params, code in cases:
        with pytest.raises(ControlError) as err:
            await cluster["n0"].call(method, **params)
        assert err.value.code == code, method
        logged = await cluster.wait_for_event("n0", ev.CONTROL_ERROR, method=method)
        assert logged["code"] == code
    assert (await cluster["n0"].call("status"))["name"] == "n0"


async def _raw_session(cluster, target: str, as_node: str):
    """Dial `target` over the memory network as `as_node`; returns (stream, session)."""
    node = cluster.nodes[target]
    ident = Identity.derive(cluster.config.cluster.seed, as_node)
    stream, _ = await cluster.network.transport(as_node + "-raw").connect(target)
    hs = Handshake(ident, cluster.config.cluster.name, True, expect=node.identity.pubkey)
    await stream.send_all(b"".join(encode_frame(b) for b in hs.start()))
    dec = FrameDecoder()
    while not hs.complete:
        frame = await receive_frame(stream, dec)
        await stream.send_all(b"".join(encode_frame(b) for b in hs.receive(frame)))
    return stream, hs.session()


async def test_misbehaving_peer_is_banned_for_a_while(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(3, "line"), ban_seconds=30)
    await cluster.kill("n0")  # we impersonate n0 (we know the seed, so its key)
    stream, session = await _raw_session(cluster, "n1", "n0")
    # sealed batches holding a body of unknown kind: each rejected and penalised
    body = msgpack.packb(["no-such-kind", {}])
    inner = len(body).to_bytes(4, "big") + body
    for _ in range(10):
        await stream.send_all(encode_frame(session.seal(inner)))
    banned = await cluster.wait_for_event("n1", ev.PEER_BANNED, peer="n0")
    assert banned["until"] >= banned["ts"] + 29
    rejected = [e for e in cluster.events("n1") if e["event"] == ev.MSG_REJECTED]
    assert rejected and rejected[0]["reason"] == "unknown_kind"
    # while banned, n0 (even the real one, dialling in) is refused ...
    await cluster.restart("n0")
    await cluster.wait_for_event("n1", ev.MSG_REJECTED, reason="banned")
    assert "n0" not in (await cluster["n1"].call("status"))["peers"]
    assert "n2" in (await cluster["n1"].call("status"))["peers"]  # others still served
    # ... and once the ban is over it is let back in
    await cluster.wait_connected(timeout=40)
    assert trio.current_time() >= banned["ts"] - cluster.epoch + 30


async def test_keepalive_holds_idle_links(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(3, "line"), ping_interval=1.0)
    await trio.sleep(60)  # 15 ping timeouts' worth of silence from the application
    assert not [e for n in cluster.names for e in cluster.events(n)
                if e["event"] == ev.PEER_DISCONNECTED]
    assert await cluster.linked()


async def test_only_topology_neighbours_are_accepted(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(3, "line"))
    with pytest.raises(trio.BrokenResourceError):  # n0 and n2 are not linked in n0-n1-n2
        stream, session = await _raw_session(cluster, "n0", "n2")
        await stream.receive_some(1)
        raise trio.BrokenResourceError
    rejected = await cluster.wait_for_event("n0", ev.MSG_REJECTED, reason="not_a_neighbour")
    assert rejected["peer"] == "n2"


async def test_out_of_range_gossip_fields_are_refused(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(3, "line"))
    await cluster.kill("n0")
    stream, session = await _raw_session(cluster, "n1", "n0")
    from p2p_l2.gossip import message_id
    payload = {"id": message_id("t", b"x"), "t": "t", "d": b"x", "h": 2**64 - 1, "o": "n0", "ts": 0.0}
    body = msgpack.packb(["gossip", payload])
    await stream.send_all(encode_frame(session.seal(len(body).to_bytes(4, "big") + body)))
    rejected = await cluster.wait_for_event("n1", ev.MSG_REJECTED, peer="n0")
    assert rejected["reason"] == "bad_payload"
    # the same message, honestly published later, still floods (it was never marked seen)
    await cluster.restart("n0")
    await cluster.wait_connected()
    res = await cluster["n0"].call("gossip.publish", topic="t", data="x")
    assert res["msg_id"] == payload["id"].hex()
    await cluster.wait_for_event("n2", ev.GOSSIP_DELIVERED, msg_id=res["msg_id"])


async def test_silent_link_times_out(autojump_clock):
    a, b = trio.testing.memory_stream_pair()
    ib = Identity.derive(1, "b")
    session, _ = session_pair(Identity.derive(1, "a"), ib, "net")
    link = PeerLink(a, session, FrameDecoder(), name="b", pubkey=ib.pubkey, addr="mem",
                    direction="out", since=0.0, on_message=lambda *a: None,
                    on_reject=lambda *a: None, ping_interval=1.0, ping_timeout=4.0)
    t0 = trio.current_time()
    assert await link.run() == "ping_timeout"  # b never answers a ping
    assert 4.0 <= trio.current_time() - t0 <= 6.0
