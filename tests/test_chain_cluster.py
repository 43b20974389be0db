"""Layer 1 across nodes: convergence, forks and reorgs, catch-up, persistence, bad input."""

from dataclasses import replace

import msgpack
import pytest
import trio

from p2p_l2 import events as ev
from p2p_l2.chain.block import make_block
from p2p_l2.chain.tx import transfer
from p2p_l2.config import make_config
from p2p_l2.errors import ControlError
from p2p_l2.gossip import message_id
from p2p_l2.wire import Identity, encode_frame

from test_node_memory import _raw_session

ACCOUNTS = '[accounts]\nn1 = 100000\nn3 = 50000\n'


def chain_config(n=6, miners=(0, 3), interval=1.0, extra=""):
    roles = {f"n{i}": ["miner"] for i in miners}
    return make_config(n, "ring", roles=roles, extra=f"[chain]\nblock_interval = {interval}\n"
                       f"max_block_txs = 500\nblock_reward = 50\n{ACCOUNTS}{extra}")


def tips(cluster):
    return {n: node.chain.tree.tip.hash for n, node in cluster.nodes.items()}


async def converged(cluster, min_height):
    heights = [node.chain.tree.height for node in cluster.nodes.values()]
    return min(heights) >= min_height and len(set(tips(cluster).values())) == 1


async def test_miners_converge_and_coins_are_conserved(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(chain_config(6, miners=(0, 2, 4)))
    sent = [await cluster["n1"].call("chain.send", to="n3", amount=10 + i) for i in range(5)]
    await cluster.wait_for(lambda: converged(cluster, 15), timeout=120)
    for res in sent:
        status = await cluster["n5"].call("chain.tx", txid=res["txid"])
        assert status["status"] == "confirmed" and status["confirmations"] >= 1
    miners = {(await cluster["n0"].call("chain.block", height=h))["miner"] for h in range(1, 16)}
    assert len(miners) >= 2  # several miners really produced blocks
    supply = cluster.nodes["n5"].chain.tree.supply()
    assert supply["genesis"] + supply["rewards"] == supply["balances"] + supply["locked"]
    assert supply["rewards"] == 50 * cluster.nodes["n5"].chain.tree.height
    bal = await cluster["n3"].call("chain.balance")
    assert bal["balance"] == 50000 + sum(10 + i for i in range(5))  # n3 mines nothing
    assert (await cluster["n1"].call("chain.balance"))["nonce"] == 5


async def test_partition_forks_and_healing_reorgs_the_losing_side(autojump_clock,
                                                                  memory_cluster_factory):
    cluster = await memory_cluster_factory(chain_config(4, miners=(0, 2)))
    await cluster.wait_for(lambda: converged(cluster, 3), timeout=60)
    fork = cluster.nodes["n0"].chain.tree.height
    await cluster.partition(["n0", "n1"], ["n2", "n3"])
    # one tx per side, each mined only on its side of the fork
    sent = {"n1": await cluster["n1"].call("chain.send", to="n3", amount=7),
            "n3": await cluster["n3"].call("chain.send", to="n1", amount=9)}

    def split():
        t = tips(cluster)
        return (t["n0"] == t["n1"] != t["n2"] == t["n3"]
                and min(n.chain.tree.height for n in cluster.nodes.values()) >= fork + 5)
    await cluster.wait_for(split, timeout=120)  # a fork: each side built its own branch
    mark = {n: len(cluster.events(n)) for n in cluster.names}
    await cluster.heal()
    await cluster.wait_for(lambda: converged(cluster, fork + 6), timeout=120)
    reorgs = {n: [e for e in cluster.events(n)[mark[n]:] if e["event"] == ev.CHAIN_REORG]
              for n in cluster.names}
    losers = [n for n in cluster.names if reorgs[n]]
    assert losers in (["n0", "n1"], ["n2", "n3"])  # exactly one side switched branches
    assert all(r[0]["depth"] >= 5 for r in reorgs.values() if r)  # the whole losing branch
    # the losing side's tx went back to the mempool, was announced again, and is mined
    # on the winning chain
    orphaned = sent["n1" if "n1" in losers else "n3"]["txid"]

    async def confirmed_everywhere():
        for name in cluster.names:
            if (await cluster[name].call("chain.tx", txid=orphaned))["status"] != "confirmed":
                return False
        return True
    await cluster.wait_for(confirmed_everywhere, timeout=120)


async def test_restarted_node_resumes_from_its_database(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(chain_config(4, miners=(0,)))
    await cluster.wait_for(lambda: converged(cluster, 5), timeout=60)
    await cluster.kill("n2")
    before = cluster.nodes["n1"].chain.tree.height
    await cluster.wait_for(lambda: cluster.nodes["n1"].chain.tree.height >= before + 5, 60)
    node = await cluster.restart("n2")
    assert node.chain.tree.height >= 5  # loaded from chain.sqlite before any peer spoke
    await cluster.wait_for(lambda: converged(cluster, before + 5), timeout=60)


async def test_chain_control_methods(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(chain_config(4, miners=(0,)))
    res = await cluster["n1"].call("chain.send", to="n3", amount=1000, fee=5)
    assert (await cluster["n1"].call("chain.tx", txid=res["txid"]))["status"] == "pending"
    pool = await cluster["n1"].call("mempool")
    assert pool["size"] == 1 and pool["txids"] == [res["txid"]]
    await cluster.wait_for_event("n2", ev.BLOCK_ACCEPTED, timeout=30)
    tip = await cluster["n2"].call("chain.tip")
    block = await cluster["n2"].call("chain.block", height=tip["height"])
    assert block["hash"] == tip["hash"] and block["miner"] == "n0"
    cases = [("chain.send", {"to": "n3", "amount": 10**12}, "insufficient_funds"),
             ("chain.send", {"to": "nobody", "amount": 1}, "bad_params"),
             ("chain.send", {"to": "n3", "amount": -1}, "bad_params"),
             ("chain.block", {"height": 10**6}, "unknown_block"),
             ("chain.tx", {"txid": "zz"}, "bad_params"),
             ("chain.balance", {"account": "12ab"}, "bad_params")]
    for method, params, code in cases:
        with pytest.raises(ControlError) as err:
            await cluster["n1"].call(method, **params)
        assert err.value.code == code, (method, params)
    unknown = await cluster["n1"].call("chain.tx", txid="00" * 32)
    assert unknown == {"status": "unknown"}


async def _inject(cluster, target, as_node, topic, data):
    stream, session = await _raw_session(cluster, target, as_node)
    payload = {"id": message_id(topic, data), "t": topic, "d": data, "h": 0, "o": as_node, "ts": 0.0}
    body = msgpack.packb(["gossip", payload])
    await stream.send_all(encode_frame(session.seal(len(body).to_bytes(4, "big") + body)))
    return stream, payload["id"].hex()


async def test_forged_blocks_and_txs_are_rejected_and_never_relayed(autojump_clock,
                                                                    memory_cluster_factory):
    cluster = await memory_cluster_factory(chain_config(4, miners=(0,), interval=1000.0),
                                           ban_seconds=600)
    seed, net = cluster.config.cluster.seed, cluster.config.cluster.name
    await cluster.kill("n0")  # n0 (a miner) is impersonated towards n1 and n3; n2 watches
    tip = cluster.nodes["n1"].chain.tree.tip
    # a block from a key that is no miner
    stranger = make_block(Identity.derive(seed, "n2"), tip, [], time=tip.time + 1)
    data = msgpack.packb(stranger.to_wire())
    _, mid = await _inject(cluster, "n1", "n0", "block", data)
    rejected = await cluster.wait_for_event("n1", ev.MSG_REJECTED, msg_id=mid)
    assert rejected["reason"] == "unknown_miner"
    # a tx with a forged signature (signed by n2's key, claiming n1's account)
    good = transfer(Identity.derive(seed, "n1"), net, Identity.derive(seed, "n3").pubkey, 5, 0)
    forged = replace(good, sig=Identity.derive(seed, "n2").sign(b"x" * 32))
    _, mid = await _inject(cluster, "n3", "n0", "tx", forged.encode())
    rejected = await cluster.wait_for_event("n3", ev.MSG_REJECTED, msg_id=mid)
    assert rejected["reason"] == "bad_signature"
    for name in ("n1", "n3"):  # forgeries ban at once
        await cluster.wait_for_event(name, ev.PEER_BANNED, peer="n0")
    assert not [e for e in cluster.events("n2") if e["event"] == ev.GOSSIP_DELIVERED]
    assert cluster.nodes["n2"].chain.tree.height == 0 and len(cluster.nodes["n2"].chain.mempool) == 0


async def test_tampered_block_copy_does_not_blacklist_the_real_one(autojump_clock,
                                                                  memory_cluster_factory):
    cluster = await memory_cluster_factory(chain_config(4, miners=(0,), interval=1000.0),
                                           ban_seconds=600)
    await cluster["n1"].call("chain.send", to="n3", amount=5)
    await cluster.wait_for(lambda: len(cluster.nodes["n0"].chain.mempool) == 1, timeout=10)
    await cluster.kill("n0")
    # the miner's real next block, and a copy with the tx signature swapped (same hash)
    seed = cluster.config.cluster.seed
    n1 = cluster.nodes["n1"]
    txs = list(n1.chain.mempool.select(n1.chain.tree.state, 10))
    real = make_block(Identity.derive(seed, "n0"), n1.chain.tree.tip, txs, time=n1.wall())
    fake = replace(real, txs=(replace(txs[0], sig=bytes(64)),))
    assert fake.hash == real.hash
    stream, mid = await _inject(cluster, "n1", "n0", "block", msgpack.packb(fake.to_wire()))
    rejected = await cluster.wait_for_event("n1", ev.MSG_REJECTED, msg_id=mid)
    assert rejected["reason"] == "invalid_tx"
    assert n1.chain.tree.is_invalid(real.hash) is None  # the genuine block is not blacklisted
    await cluster.restart("n0")  # the real miner brings the real block (via sync)
    result = n1.chain.tree.add(real, n1.wall())
    assert result.status in ("connected", "duplicate") and n1.chain.tree.height == 1


async def test_bad_blocks_are_rejected_with_reasons(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(chain_config(4, miners=(0,), interval=1000.0),
                                           ban_seconds=1)
    await cluster.kill("n0")
    seed = cluster.config.cluster.seed
    miner = Identity.derive(seed, "n0")
    n1 = cluster.nodes["n1"]
    tip = n1.chain.tree.tip
    good = make_block(miner, tip, [], time=n1.wall())
    bad_merkle = replace(good, header=replace(good.header, merkle=b"\x01" * 32))
    orphan_parent = make_block(miner, replace(tip, height=5), [], time=n1.wall())
    cases = [(msgpack.packb(replace(good, sig=bytes(64)).to_wire()), "bad_signature"),
             (msgpack.packb({"h": 1}), "bad_block"),
             (b"\xc1not msgpack", "bad_block"),
             (msgpack.packb(replace(bad_merkle, sig=miner.sign(b"p2p_l2/block/v1" + bad_merkle.hash))
                            .to_wire()), "bad_merkle")]
    for data, reason in cases:
        stream, mid = await _inject(cluster, "n1", "n0", "block", data)
        rejected = await cluster.wait_for_event("n1", ev.MSG_REJECTED, msg_id=mid)
        assert rejected["reason"] == reason
        await trio.sleep(2)  # let the 1 s ban lapse before the next case
    # a block whose parent is unknown is not a fault: it is passed over and synced later
    stream, mid = await _inject(cluster, "n1", "n0", "block", msgpack.packb(orphan_parent.to_wire()))
    await trio.sleep(1)
    assert not [e for e in cluster.events("n1") if e.get("msg_id") == mid]
    assert not [e for e in cluster.events("n2") if e["event"] == ev.GOSSIP_DELIVERED]
    assert cluster.nodes["n2"].chain.tree.height == 0


async def test_own_pending_txs_survive_a_crash(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(chain_config(4, miners=(0,), interval=1000.0))
    first = await cluster["n1"].call("chain.send", to="n3", amount=5)
    await cluster.kill("n1")
    await cluster.kill("n0")  # nobody else remembers it either
    await cluster.kill("n2")
    await cluster.restart("n1")
    assert (await cluster["n1"].call("chain.tx", txid=first["txid"]))["status"] == "pending"
    second = await cluster["n1"].call("chain.send", to="n3", amount=6)
    assert second["txid"] != first["txid"]
    assert (await cluster["n1"].call("mempool"))["size"] == 2  # nonce 1, not a reuse of 0


async def test_an_unminable_own_tx_does_not_freeze_the_account(autojump_clock,
                                                               memory_cluster_factory):
    from p2p_l2.chain.tx import call
    cluster = await memory_cluster_factory(chain_config(4, miners=(0,)))
    n1 = cluster.nodes["n1"]
    # a claim of an escrow that does not exist: admitted (calls are judged on the chain's
    # state), but never minable
    bad = call(n1.identity, cluster.config.cluster.name, "escrow", "claim", {"id": b"\\1" * 32},
               n1.chain.next_nonce())
    n1.chain._submit_one(bad)
    after = await cluster["n1"].call("chain.send", to="n3", amount=5)  # queued behind it
    dropped = await cluster.wait_for_event("n1", ev.TX_DROPPED, timeout=60)
    assert dropped["txid"] == bad.txid.hex() and dropped["reason"] == "contract_error"

    async def mined():  # the send queued behind the bad call goes through, exactly once
        return (await cluster["n2"].call("chain.tx", txid=after["txid"]))["status"] == "confirmed"
    await cluster.wait_for(mined, timeout=60)
    n3 = cluster.nodes["n3"]
    assert n3.chain.tree.state.balance(n3.identity.pubkey) == 50_005
