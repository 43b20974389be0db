"""Payment channels across nodes: open from the config, pay directly and across hops with
fees, close every way, and punish a stale close."""

import pytest
import trio

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


TOWER = """
[cluster]
name = "tower"
seed = 11
[channels]
dispute_blocks = 6
[accounts]
alice = 100000
bob = 100000
tower = 1000
[[node]]
name = "miner"
roles = ["miner"]
[[node]]
name = "alice"
roles = ["channels"]
[[node]]
name = "bob"
roles = ["channels"]
watchtower = "tower"
[[node]]
name = "tower"
roles = ["watchtower"]
[topology]
links = [["miner", "alice"], ["miner", "tower"]]
[[channel]]
between = ["alice", "bob"]
funding = [50000, 0]
"""


async def pay(cluster, payer, payee, amount, **kw):
    inv = await cluster[payee].call("invoice.create", amount=amount)
    return await cluster[payer].call("pay", invoice=inv["invoice"], **kw)


async def test_close_stale_with_the_victim_online(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    assert (await pay(cluster, "alice", "bob", 20_000))["status"] == "succeeded"
    ch = await channel(cluster, "alice", "bob")
    b0 = await l1_balance(cluster, "bob")
    await cluster["alice"].call("fault.misbehave", behaviour="close-stale")
    challenge = await cluster.wait_for_event("bob", ev.CHANNEL_CLOSING, kind="challenge", timeout=60)
    assert challenge["posted_seq"] == 0 and challenge["our_seq"] == ch["seq"]
    await cluster.wait_for_event("bob", ev.CHANNEL_PENALIZED, timeout=60)
    await cluster.wait_for_event("bob", ev.CHANNEL_SETTLED, channel_id=ch["channel_id"], timeout=60)
    total = ch["local"] + ch["remote"]
    assert await l1_balance(cluster, "bob") == b0 + total - 1  # the whole channel, minus a fee


async def test_close_stale_against_an_offline_victim_meets_its_tower(autojump_clock,
                                                                      memory_cluster_factory):
    from p2p_l2.config import loads_config
    cluster = await memory_cluster_factory(loads_config(TOWER))
    assert (await pay(cluster, "alice", "bob", 30_000))["status"] == "succeeded"
    await channel(cluster, "bob", "alice")  # bob holds an open channel
    await cluster.wait_for(lambda: cluster.nodes["tower"].tower.states, timeout=10)
    b0 = await l1_balance(cluster, "bob")
    await cluster.kill("bob")
    await cluster["alice"].call("fault.misbehave", behaviour="close-stale")
    await cluster.wait_for_event("tower", ev.CHANNEL_CLOSING, kind="challenge", timeout=60)
    await cluster.restart("bob")  # later: bob finds its money on chain
    await cluster.wait_for_event("bob", ev.CHANNEL_PENALIZED, timeout=60)
    # the whole channel; bob may pay 2 to cancel his own challenge, beaten by the tower's
    assert b0 + 50_000 - 2 <= await l1_balance(cluster, "bob") <= b0 + 50_000


async def test_a_tower_without_fees_retries_once_funded(autojump_clock, memory_cluster_factory):
    """The tower learns the channel's states before its chain shows the channel, cannot pay
    the fee of its first challenge, and challenges again once someone funds it."""
    from p2p_l2.config import loads_config
    config = TOWER.replace("dispute_blocks = 6", "dispute_blocks = 12").replace(
        "tower = 1000\n", "")
    cluster = await memory_cluster_factory(loads_config(config))
    assert (await pay(cluster, "alice", "bob", 30_000))["status"] == "succeeded"
    await cluster.wait_for(lambda: cluster.nodes["tower"].tower.states, timeout=10)
    b0 = await l1_balance(cluster, "bob")
    await cluster.kill("bob")
    await cluster["alice"].call("fault.misbehave", behaviour="close-stale")
    failed = await cluster.wait_for_event("tower", ev.NODE_ERROR, timeout=60)
    assert "insufficient_funds" in failed["error"]
    await cluster["alice"].call("chain.send", to="tower", amount=100)  # not knowing why
    retry = await cluster.wait_for_event("tower", ev.CHANNEL_CLOSING, kind="challenge",
                                         timeout=60)
    assert retry["attempt"] is True
    await cluster.restart("bob")
    await cluster.wait_for_event("bob", ev.CHANNEL_PENALIZED, timeout=60)
    # the whole channel; bob may pay 2 to cancel his own challenge, beaten by the tower's
    assert b0 + 50_000 - 2 <= await l1_balance(cluster, "bob") <= b0 + 50_000


async def test_withheld_preimage_is_resolved_on_chain(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    ch = await channel(cluster, "alice", "bob")
    a0 = await l1_balance(cluster, "alice")
    await cluster["bob"].call("fault.misbehave", behaviour="withhold-preimage")
    inv = await cluster["bob"].call("invoice.create", amount=5_000)
    res = await cluster["alice"].call("pay", invoice=inv["invoice"], timeout=5.0)
    assert res["status"] == "pending"  # the HTLC is out: it may still settle
    with pytest.raises(ControlError) as err:  # paying it again would pay twice
        await cluster["alice"].call("pay", invoice=inv["invoice"])
    assert err.value.code == "duplicate_payment"
    closing = await cluster.wait_for_event("alice", ev.CHANNEL_CLOSING, kind="htlc_expiring",
                                           timeout=120)
    assert closing["channel_id"] == ch["channel_id"]
    await cluster.wait_for_event("alice", ev.CHANNEL_SETTLED, channel_id=ch["channel_id"],
                                 timeout=120)

    async def refunded():  # the held HTLC came back to alice on chain after its expiry
        return await l1_balance(cluster, "alice") >= a0 + ch["local"] - 3
    await cluster.wait_for(refunded, timeout=120)
    failed = await cluster.wait_for_event("alice", ev.PAYMENT_FAILED, timeout=10)
    assert failed["payment_hash"] == res["payment_hash"]
    assert failed["reason"] == "channel_closed_on_chain"


async def test_unresponsive_peer_is_force_closed(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    ch = await channel(cluster, "alice", "bob")
    await cluster["bob"].call("fault.misbehave", behaviour="unresponsive")
    res = await pay(cluster, "alice", "bob", 100, timeout=3.0)
    assert res["status"] == "pending"
    closing = await cluster.wait_for_event("alice", ev.CHANNEL_CLOSING, kind="unresponsive_peer",
                                           timeout=60)
    assert closing["peer"] == "bob"
    await cluster.wait_for_event("alice", ev.CHANNEL_SETTLED, channel_id=ch["channel_id"],
                                 timeout=120)
    assert any(e["event"] == ev.PAYMENT_FAILED and e["payment_hash"] == res["payment_hash"]
               for e in cluster.events("alice"))  # never committed: it simply failed


async def test_fee_policy_updates_reach_payers(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    before = await pay(cluster, "alice", "erin", 10_000)
    await cluster["carol"].call("channel.policy", base_fee=50, fee_ppm=0)
    await cluster.wait_for(lambda: any(
        c["policy_a"]["base_fee"] == 50 or c["policy_b"]["base_fee"] == 50
        for c in cluster.nodes["alice"].channels.graph.to_dict()["channels"]), timeout=10)
    after = await pay(cluster, "alice", "erin", 10_000)
    assert after["status"] == "succeeded" and after["fee"] == before["fee"] - (1 + 10) + 50


async def test_closed_channels_leave_everyones_graph(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    ch = await channel(cluster, "carol", "dave")
    await cluster["carol"].call("channel.close", channel_id=ch["channel_id"])
    await cluster.wait_for(lambda: ch["channel_id"] not in {
        c["channel_id"] for c in cluster.nodes["alice"].channels.graph.to_dict()["channels"]}, 60)
    res = await pay(cluster, "alice", "erin", 10)
    assert res["status"] == "failed" and res["error"].startswith("no_route")


async def test_payments_workload(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    await cluster["alice"].call("workload.start", kind="payments", rate=20.0, amount=[1, 100],
                                to=["erin", "carol"], duration=5.0, id="p")
    stopped = await cluster.wait_for_event("alice", ev.WORKLOAD_STOPPED, workload="p", timeout=30)
    assert stopped["counts"].get("ok", 0) >= 70 and set(stopped["counts"]) == {"ok"}


async def test_a_killed_hop_restarts_and_channels_resync(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    for _ in range(10):
        assert (await pay(cluster, "alice", "erin", 50))["status"] == "succeeded"
    await cluster.kill("carol")  # mid-route hop, kill -9 style: its tasks just stop
    res = await pay(cluster, "alice", "erin", 50, timeout=5.0)
    assert res["status"] == "pending"  # alice's HTLC to bob is out: it may yet settle
    await cluster.restart("carol")
    await cluster.wait_connected()
    store = cluster.nodes["alice"].channels.store
    await cluster.wait_for(  # and it does end, one way or the other, in alice's records
        lambda: store.payment(bytes.fromhex(res["payment_hash"]))["status"] != "pending",
        timeout=120)

    async def agreed():
        for a, b in (("bob", "carol"), ("carol", "dave")):
            x, y = await channel(cluster, a, b), await channel(cluster, b, a)
            if (x["seq"], x["local"], x["remote"]) != (y["seq"], y["remote"], y["local"]):
                return False
        return True
    await cluster.wait_for(agreed, timeout=60)  # same committed state on both ends
    for _ in range(10):
        assert (await pay(cluster, "alice", "erin", 50))["status"] == "succeeded"


async def test_a_payer_restarted_mid_payment_learns_how_it_ended(autojump_clock,
                                                                 memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    await cluster.kill("carol")
    res = await pay(cluster, "alice", "erin", 50, timeout=5.0)
    assert res["status"] == "pending"
    await cluster.kill("alice")
    await cluster.restart("alice")  # a new service: the payment comes back from SQLite
    await cluster.restart("carol")
    h = bytes.fromhex(res["payment_hash"])
    store = cluster.nodes["alice"].channels.store
    await cluster.wait_for(lambda: store.payment(h)["status"] != "pending", timeout=120)
    await cluster.wait_connected()
    again = await pay(cluster, "alice", "erin", 50)
    assert again["status"] == "succeeded", again["error"]  # and alice pays on as before


async def test_concurrent_payments_both_ways_never_fork(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    a, b = cluster.nodes["alice"].channels, cluster.nodes["bob"].channels
    assert (await a.keysend("bob", 5_000))["status"] == "succeeded"  # bob can pay back too
    start = await channel(cluster, "alice", "bob")
    results = []

    async def many(svc, to, n):
        for _ in range(n):
            results.append((await svc.keysend(to, 7))["status"])
    async with trio.open_nursery() as nursery:  # both sides propose at the same moments
        for _ in range(5):
            nursery.start_soon(many, a, "bob", 20)
            nursery.start_soon(many, b, "alice", 20)
    assert results.count("succeeded") == 200

    async def agreed():  # the last acks settle: then both ends hold the same committed state
        x, y = await channel(cluster, "alice", "bob"), await channel(cluster, "bob", "alice")
        return (x["seq"], x["local"], x["remote"], x["htlcs"]) == (
            y["seq"], y["remote"], y["local"], 0) and (x, y)
    x, y = await cluster.wait_for(agreed, timeout=10)
    assert x["local"] + x["remote"] == start["local"] + start["remote"]  # the funding, always
    assert x["local"] == start["local"]  # 100 payments of 7 each way cancel out


async def test_an_invoice_is_paid_once(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    inv = await cluster["erin"].call("invoice.create", amount=100)
    first = await cluster["alice"].call("pay", invoice=inv["invoice"])
    assert first["status"] == "succeeded"
    local = (await channel(cluster, "alice", "bob"))["local"]
    again = await cluster["alice"].call("pay", invoice=inv["invoice"])
    assert again == first  # the payer's own record answers: nothing is paid twice
    assert (await channel(cluster, "alice", "bob"))["local"] == local
    other = await cluster["bob"].call("pay", invoice=inv["invoice"])
    assert other["status"] == "failed" and "invoice_already_paid" in other["error"]


async def test_a_close_one_state_behind_is_corrected_not_punished(autojump_clock,
                                                                  memory_cluster_factory):
    """What a lost ack looks like on chain: the closer posts seq N, the peer holds N+1.
    The newer state replaces the posted one; nobody is punished; balances are the latest."""
    from p2p_l2.channel.commitment import SignedState
    cluster = await memory_cluster_factory(line5())
    node = cluster.nodes["alice"].channels
    cid = next(iter(node.channels))
    history = {}
    put = node.store.put_state
    node.store.put_state = lambda c, seq, wire: (history.__setitem__(seq, wire), put(c, seq, wire))
    assert (await pay(cluster, "alice", "bob", 700))["status"] == "succeeded"
    latest = await channel(cluster, "alice", "bob")
    behind = SignedState.from_wire(history[latest["seq"] - 1])
    a0, b0 = await l1_balance(cluster, "alice"), await l1_balance(cluster, "bob")
    node._force_close(node.channels[cid], behind)
    await cluster.wait_for_event("bob", ev.CHANNEL_CLOSING, kind="challenge", timeout=60)
    settled = await cluster.wait_for_event("alice", ev.CHANNEL_SETTLED, channel_id=cid.hex(),
                                           timeout=120)
    assert not settled["penalized"]
    # the latest balances, less a few 1-coin fees (close, challenge, settle)
    assert 0 <= a0 + latest["local"] - await l1_balance(cluster, "alice") <= 3
    assert 0 <= b0 + latest["remote"] - await l1_balance(cluster, "bob") <= 3


async def test_crossing_cooperative_closes_settle_once(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(line5())
    ch = await channel(cluster, "bob", "carol")
    async with trio.open_nursery() as nursery:  # both ask at the same instant
        nursery.start_soon(lambda: cluster["bob"].call("channel.close", channel_id=ch["channel_id"]))
        nursery.start_soon(lambda: cluster["carol"].call("channel.close", channel_id=ch["channel_id"]))
    for n in ("bob", "carol"):
        await cluster.wait_for_event(n, ev.CHANNEL_SETTLED, channel_id=ch["channel_id"], timeout=60)
    # the losing side's L1 account is not stuck behind a failed close tx
    res = await cluster["carol"].call("chain.send", to="alice", amount=1)

    async def confirmed():
        return (await cluster["carol"].call("chain.tx", txid=res["txid"]))["status"] == "confirmed"
    await cluster.wait_for(confirmed, timeout=60)


DIAMOND = """
[cluster]
name = "diamond"
seed = 5
[accounts]
alice = 200000
bob = 100000
carol = 100000
dave = 100000
[[node]]
name = "miner"
roles = ["miner"]
[[node]]
name = "alice"
roles = ["channels"]
[[node]]
name = "bob"
roles = ["channels"]
[[node]]
name = "carol"
roles = ["channels"]
[[node]]
name = "dave"
roles = ["channels"]
[topology]
links = [["miner", "alice"], ["miner", "dave"]]
[[channel]]
between = ["alice", "bob"]
funding = [50000, 0]
[[channel]]
between = ["bob", "dave"]
funding = [0, 50000]
[[channel]]
between = ["bob", "carol"]
funding = [50000, 0]
[[channel]]
between = ["carol", "dave"]
funding = [50000, 0]
"""


async def test_a_retry_routes_around_the_channel_that_failed(autojump_clock,
                                                            memory_cluster_factory):
    """bob's channel to dave has no balance on bob's side: the direct route through bob
    fails there, the failure names that channel (not alice's first hop, which would leave
    no route at all), and the retry goes bob -> carol -> dave."""
    from p2p_l2.config import loads_config
    cluster = await memory_cluster_factory(loads_config(DIAMOND))
    await cluster["carol"].call("channel.policy", base_fee=20, fee_ppm=0)
    await cluster.wait_for(lambda: any(
        20 in (c["policy_a"]["base_fee"], c["policy_b"]["base_fee"])
        for c in cluster.nodes["alice"].channels.graph.to_dict()["channels"]), timeout=10)
    res = await pay(cluster, "alice", "dave", 1_000)
    assert res["status"] == "succeeded" and res["attempts"] == 2
    assert res["route"] == ["alice", "bob", "carol", "dave"]
