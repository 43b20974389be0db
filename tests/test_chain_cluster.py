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
    await cluster.partition(["n0", "n1"], ["n2", "n3"])
    await trio.sleep(40)
    during = tips(cluster)
    assert during["n0"] == during["n1"] != during["n2"] == during["n3"]  # a fork
    heights = {n: node.chain.tree.height for n, node in cluster.nodes.items()}
    losers = ["n0", "n1"] if heights["n0"] < heights["n2"] else ["n2", "n3"]
    await cluster.heal()
    reorg = await cluster.wait_for_event(losers[0], ev.CHAIN_REORG, timeout=60)
    assert reorg["depth"] >= 1 and reorg["old_tip"] == during[losers[0]].hex()
    await cluster.wait_for(lambda: converged(cluster, max(heights.values())), timeout=60)


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
