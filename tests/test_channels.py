"""Payment channels across nodes: open from the config, pay directly and across hops with
fees, close every way, and punish a stale close."""

import pytest

from p2p_l2 import events as ev
from p2p_l2.config import load_config
from p2p_l2.errors import ControlError


def line5():
    return load_config("configs/line5.toml")


async def l1_balance(cluster, node):
    return (await cluster[node].call("chain.balance"))["balance"]


async def channel(cluster, node, peer):
    return next(c for c in await cluster[node].call("channel.list") if c["peer"] == peer)


async def test_hundred_payments_across_a_5_node_line(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    before = {n: (await channel(cluster, n, p))["local"] for n, p in
              [("alice", "bob"), ("bob", "carol"), ("carol", "dave"), ("dave", "erin")]}
    fees = 0
    for i in range(100):
        inv = await cluster["erin"].call("invoice.create", amount=100 + i)
        res = await cluster["alice"].call("pay", invoice=inv["invoice"])
        assert res["status"] == "succeeded", res
        assert res["route"] == ["alice", "bob", "carol", "dave", "erin"]
        # each of the 3 forwarding hops charges base 1 + 1000 ppm of what it forwards
        fees += res["fee"]
    paid = sum(100 + i for i in range(100))
    assert (await channel(cluster, "alice", "bob"))["local"] == before["alice"] - paid - fees
    erin = await channel(cluster, "erin", "dave")
    assert erin["local"] >= paid and erin["htlcs"] == 0
    assert 300 <= fees <= 400  # 3 hops x (1 + ~0.1) per payment
    ok = [e for e in cluster.events("alice") if e["event"] == ev.PAYMENT_SUCCEEDED]
    assert len(ok) == 100 and all(e["hops"] == 4 for e in ok)


async def test_cooperative_close_pays_the_last_state(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    inv = await cluster["bob"].call("invoice.create", amount=1234)
    assert (await cluster["alice"].call("pay", invoice=inv["invoice"]))["status"] == "succeeded"
    ch = await channel(cluster, "alice", "bob")
    a0, b0 = await l1_balance(cluster, "alice"), await l1_balance(cluster, "bob")
    await cluster["alice"].call("channel.close", channel_id=ch["channel_id"])
    for n in ("alice", "bob"):
        await cluster.wait_for_event(n, ev.CHANNEL_SETTLED, channel_id=ch["channel_id"], timeout=60)
    assert await l1_balance(cluster, "alice") == a0 + ch["local"] - 1  # minus the close tx fee
    assert await l1_balance(cluster, "bob") == b0 + ch["remote"]


async def test_force_close_settles_after_the_dispute_window(autojump_clock,
                                                           memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    inv = await cluster["carol"].call("invoice.create", amount=500)
    assert (await cluster["bob"].call("pay", invoice=inv["invoice"]))["status"] == "succeeded"
    ch = await channel(cluster, "bob", "carol")
    c0 = await l1_balance(cluster, "carol")
    res = await cluster["bob"].call("channel.close", channel_id=ch["channel_id"], force=True)
    assert res["txid"]
    settled = await cluster.wait_for_event("carol", ev.CHANNEL_SETTLED,
                                           channel_id=ch["channel_id"], timeout=120)
    assert not settled["penalized"]
    assert await l1_balance(cluster, "carol") >= c0 + ch["remote"] - 1


async def test_stale_close_is_penalised(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    node = cluster.nodes["alice"].channels
    cid = next(iter(node.channels))
    old = node.channels[cid].signed  # the state before the payment: alice had more
    inv = await cluster["bob"].call("invoice.create", amount=10_000)
    assert (await cluster["alice"].call("pay", invoice=inv["invoice"]))["status"] == "succeeded"
    ch = node.channels[cid]
    total = ch.fund_a + ch.fund_b
    b0 = await l1_balance(cluster, "bob")
    node._force_close(ch, old)  # what `close-stale` does: post an old state
    pen = await cluster.wait_for_event("bob", ev.CHANNEL_PENALIZED, channel_id=cid.hex(), timeout=60)
    assert pen["total"] == total
    await cluster.wait_for_event("bob", ev.CHANNEL_SETTLED, channel_id=cid.hex(), timeout=60)
    assert await l1_balance(cluster, "bob") >= b0 + total - 1  # everything, minus a fee


async def test_payment_errors(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    for params, code in [({"invoice": "garbage"}, "bad_invoice")]:
        with pytest.raises(ControlError) as err:
            await cluster["alice"].call("pay", **params)
        assert err.value.code == code
    inv = await cluster["erin"].call("invoice.create", amount=10**9)
    res = await cluster["alice"].call("pay", invoice=inv["invoice"])
    assert res["status"] == "failed" and res["error"].startswith("no_route")
    with pytest.raises(ControlError) as err:
        await cluster["alice"].call("channel.close", channel_id="00" * 32)
    assert err.value.code == "unknown_channel"
