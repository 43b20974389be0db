"""Plasma across nodes (in-memory clusters): deposits at start, transfers, exits, and the
honest outcome of every byzantine behaviour (DESIGN §6, SPEC §5)."""

import pytest

from p2p_l2 import events as ev
from p2p_l2.config import load_config
from p2p_l2.errors import ControlError

USERS = ("alice", "bob", "carol")
DEPOSITS = {"alice": 50_000, "bob": 50_000, "carol": 20_000}
GENESIS = 100_000


def plasma_config(**overrides):
    config = load_config("configs/plasma.toml")
    return config.__class__(**{**config.__dict__, "workloads": (), **overrides})


async def balance(cluster, node):
    return (await cluster[node].call("plasma.balance"))["total"]


async def l1(cluster, node):
    return (await cluster[node].call("chain.balance"))["balance"]


async def wait_balance(cluster, node, total, timeout=30):
    async def ok():
        return await balance(cluster, node) == total
    await cluster.wait_for(ok, timeout=timeout)


async def all_coins_back(cluster, users=USERS, fees=30):
    """Every honest user has its L1 genesis back, but for fees and what it sent on."""
    async def back():
        return all([await l1(cluster, u) >= GENESIS - fees for u in users])
    await cluster.wait_for(back, timeout=300)


async def test_deposits_at_start_and_transfers(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    for u in USERS:  # `up` waited for them
        assert await balance(cluster, u) == DEPOSITS[u]
    res = await cluster["alice"].call("plasma.transfer", to="bob", amount=1_000)
    assert len(res["tx_hash"]) == 64
    await wait_balance(cluster, "bob", 51_000)
    await wait_balance(cluster, "alice", 49_000)
    await cluster["bob"].call("plasma.transfer", to="carol", amount=50_500)  # two inputs
    await wait_balance(cluster, "carol", 70_500)
    assert await balance(cluster, "bob") == 500
    committed = await cluster.wait_for_event("op", ev.PLASMA_BLOCK_COMMITTED, timeout=10)
    assert committed["number"] % 1000 == 0


async def test_control_errors(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    for params, code in [({"to": "bob", "amount": 10**9}, "insufficient_funds"),
                         ({"to": "nobody", "amount": 1}, "bad_params"),
                         ({"to": "bob", "amount": -5}, "bad_params")]:
        with pytest.raises(ControlError) as err:
            await cluster["alice"].call("plasma.transfer", **params)
        assert err.value.code == code
    with pytest.raises(ControlError) as err:
        await cluster["alice"].call("plasma.exit", pos=123)
    assert err.value.code == "unknown_input"


async def test_a_user_exits_and_is_paid_on_l1(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    before = await l1(cluster, "carol")
    res = await cluster["carol"].call("plasma.exit", all=True)
    assert len(res["exits"]) == 1
    done = await cluster.wait_for_event("carol", ev.PLASMA_EXIT_FINALIZED, timeout=120)
    assert done["amount"] == 20_000
    assert await l1(cluster, "carol") >= before + 20_000 - 5
    assert [x["state"] for x in await cluster["alice"].call("plasma.exits")] == ["finalized"]


async def test_withholding_operator_every_user_exits_whole(autojump_clock,
                                                           memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    await cluster["alice"].call("plasma.transfer", to="bob", amount=1_000)
    await wait_balance(cluster, "bob", 51_000)
    await cluster["op"].call("fault.misbehave", behaviour="operator-withhold")
    await cluster["bob"].call("plasma.transfer", to="carol", amount=7_000)  # in a withheld block
    for u in USERS:
        alert = await cluster.wait_for_event(u, ev.WATCHER_ALERT, timeout=60)
        assert alert["kind"] == "block_withholding"
    await all_coins_back(cluster, ["bob", "carol"])  # bob's unconfirmed spend costs him nothing

    async def alice_whole():  # alice sent 1,000 to bob before the trouble
        return await l1(cluster, "alice") >= GENESIS - 1_000 - 30
    await cluster.wait_for(alice_whole, timeout=300)


async def test_invalid_block_users_exit_before_the_thief(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    await cluster["op"].call("fault.misbehave", behaviour="operator-invalid-tx")
    await cluster["alice"].call("plasma.transfer", to="bob", amount=1_000)  # a block is made
    for u in USERS:
        alert = await cluster.wait_for_event(u, ev.WATCHER_ALERT, timeout=60)
        assert alert["kind"] == "invalid_block"
    await all_coins_back(cluster, ["bob", "carol"])

    async def alice_whole():
        return await l1(cluster, "alice") >= GENESIS - 30
    await cluster.wait_for(alice_whole, timeout=300)
    exits = await cluster["alice"].call("plasma.exits")
    assert all(x["state"] != "finalized" for x in exits if x["owner"] == "op")


async def test_an_exit_of_a_spent_output_is_challenged(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    await cluster["alice"].call("plasma.transfer", to="bob", amount=50_000)  # all of it
    await wait_balance(cluster, "bob", 100_000)
    await cluster["alice"].call("fault.misbehave", behaviour="exit-spent")
    challenged = await cluster.wait_for_event("bob", ev.PLASMA_EXIT_CHALLENGED, timeout=60)
    exits = {x["pos"]: x for x in await cluster["bob"].call("plasma.exits")}

    async def settled():
        exits.update({x["pos"]: x for x in await cluster["bob"].call("plasma.exits")})
        return exits[challenged["pos"]]["state"] == "challenged"
    await cluster.wait_for(settled, timeout=60)
    assert await balance(cluster, "bob") == 100_000  # bob's coins are untouched


async def test_a_double_spend_is_refused(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    await cluster["alice"].call("fault.misbehave", behaviour="double-spend")
    await cluster["alice"].call("plasma.transfer", to="bob", amount=2_000)
    rejected = await cluster.wait_for_event("op", ev.PLASMA_TX_REJECTED, timeout=30)
    assert rejected["reason"] == "spent_input"
    await wait_balance(cluster, "bob", 52_000)
    await wait_balance(cluster, "alice", 48_000)


async def test_a_censored_user_leaves_with_its_coins(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    await cluster["op"].call("fault.misbehave", behaviour="censor")
    await cluster["carol"].call("plasma.transfer", to="bob", amount=5_000)
    await cluster.wait_for_event("miner", ev.BLOCK_ACCEPTED, timeout=30)
    assert await balance(cluster, "bob") == 50_000  # never included
    await cluster["carol"].call("plasma.exit", all=True)  # exits the censored tx's input
    await all_coins_back(cluster, ["carol"])


async def test_operator_and_user_restart_from_their_databases(autojump_clock,
                                                              memory_cluster_factory):
    cluster = await memory_cluster_factory(plasma_config())
    await cluster["alice"].call("plasma.transfer", to="bob", amount=1_000)
    await wait_balance(cluster, "bob", 51_000)
    await cluster.kill("op")
    await cluster.kill("bob")
    await cluster.restart("op")
    await cluster.restart("bob")
    await cluster.wait_connected()
    await wait_balance(cluster, "bob", 51_000)  # rebuilt from bob's database and L1
    assert cluster.nodes["op"].plasma.core.last_child >= 1000  # the operator's blocks too
    await cluster["bob"].call("plasma.transfer", to="carol", amount=1_000)
    await wait_balance(cluster, "carol", 21_000)
    assert await balance(cluster, "bob") == 50_000


async def test_mass_exit_on_a_contended_layer_1(autojump_clock, memory_cluster_factory):
    """20 users, a withholding operator, L1 blocks of 8 txs: everyone exits, all get paid,
    and the drain can be read from the logs (scripts/mass_exit.py does it for a run dir)."""
    from p2p_l2.plasma.report import mass_exit_report
    config = load_config("configs/plasma-mass-exit.toml")
    config = config.__class__(**{**config.__dict__, "workloads": (), "faults": ()})
    cluster = await memory_cluster_factory(config)
    users = config.nodes_with_role("plasma-user")
    await cluster["u01"].call("plasma.transfer", to="u02", amount=100)
    await wait_balance(cluster, "u02", 5_100)
    await cluster["op"].call("fault.misbehave", behaviour="operator-withhold")
    await cluster["u03"].call("plasma.transfer", to="u04", amount=100)  # a withheld block

    async def drained():
        return all([await l1(cluster, u) >= 10_000 - 200 for u in users])
    await cluster.wait_for(drained, timeout=600)
    report = mass_exit_report(cluster.logs)
    assert report["exits_started"] == report["exits_finalized"] == 21  # u02 has two outputs
    assert report["alerts"] == 20 and report["drain_seconds"] > 0
    assert report["l1_blocks"] >= 3  # 20 exits + their process calls: more than one block


async def test_payees_exit_what_they_were_paid_when_confirmations_are_withheld(
        autojump_clock, memory_cluster_factory):
    """bob never gets alice's confirmation of her payment to him from the operator (link
    faults drop it and bob's re-fetches), then the operator withholds: everyone leaves the
    chain, and bob gets the confirmation from alice by gossip, so he can exit what she paid
    him."""
    cluster = await memory_cluster_factory(plasma_config())
    await cluster.link(from_="op", to="bob", drop_types=["pl_confs"])  # pushed blocks pass
    await cluster.link(from_="bob", to="op", drop_types=["pl_get"])  # (a re-fetch's reply
    await cluster["alice"].call("plasma.transfer", to="bob", amount=1_000)  # carries them)
    await wait_balance(cluster, "alice", 49_000)
    assert await balance(cluster, "bob") == 50_000  # not his until alice's confirmation
    await cluster["op"].call("fault.misbehave", behaviour="operator-withhold")
    await cluster["carol"].call("plasma.transfer", to="alice", amount=10)  # a withheld block
    bob0 = await l1(cluster, "bob")

    async def bob_paid():
        return await l1(cluster, "bob") >= bob0 + 51_000 - 30
    await cluster.wait_for(bob_paid, timeout=300)
