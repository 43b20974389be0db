"""Every close path, fuzzed across nodes: random payments both ways, then a random close
(cooperative, forced, or stale by either side, the victim online), and the L1 balances must
end as the last committed state says, or as the penalty says (in-memory cluster under an
autojump clock, one cluster per example).  Fees: each L1 tx costs its sender 1 coin, and a
node's nonce counts its txs."""

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_l2 import events as ev
from p2p_l2.cluster.memory import open_memory_cluster
from p2p_l2.config import loads_config

PAIR = """
[cluster]
name = "fuzz-close"
seed = 3
[chain]
confirmations = 1
[channels]
dispute_blocks = 4
[accounts]
alice = 500000
bob = 500000
[[node]]
name = "miner"
roles = ["miner"]
[[node]]
name = "alice"
roles = ["channels"]
[[node]]
name = "bob"
roles = ["channels"]
[topology]
links = [["miner", "alice"], ["miner", "bob"]]
[[channel]]
between = ["alice", "bob"]
funding = [100000, 50000]
"""

payments = st.lists(st.tuples(st.sampled_from(["alice", "bob"]), st.integers(1, 5_000)),
                    max_size=12)
closes = st.sampled_from([("coop", "alice"), ("coop", "bob"), ("force", "alice"),
                          ("force", "bob"), ("stale", "alice"), ("stale", "bob")])


async def _play(pays, close) -> None:
    async with open_memory_cluster(loads_config(PAIR)) as cluster:
        async def state(node):
            b = await cluster[node].call("chain.balance")
            return b["balance"], b["nonce"]

        for payer, amount in pays:
            payee = "bob" if payer == "alice" else "alice"
            res = await cluster[payer].call("keysend", to=payee, amount=amount)
            assert res["status"] == "succeeded", res
        async def quiet():  # every HTLC settled and both ends on the same state
            c = {n: (await cluster[n].call("channel.list"))[0] for n in ("alice", "bob")}
            return c if (c["alice"]["htlcs"] == c["bob"]["htlcs"] == 0
                         and c["alice"]["seq"] == c["bob"]["seq"]) else None
        chans = await cluster.wait_for(quiet, timeout=30)
        cid = chans["alice"]["channel_id"]
        assert chans["alice"]["local"] + chans["alice"]["remote"] == 150_000
        before = {n: await state(n) for n in ("alice", "bob")}
        kind, who = close
        if kind == "stale":
            await cluster[who].call("fault.misbehave", behaviour="close-stale")
        else:
            await cluster[who].call("channel.close", channel_id=cid, force=kind == "force")
        for n in ("alice", "bob"):
            await cluster.wait_for_event(n, ev.CHANNEL_SETTLED, channel_id=cid, timeout=300)
        seq0 = chans["alice"]["seq"]
        penalized = kind == "stale" and seq0 >= 2  # one step behind only replaces (README)

        async def settled_as_expected():
            for n in ("alice", "bob"):
                bal, nonce = await state(n)
                fees = nonce - before[n][1]
                if penalized:
                    gets = 150_000 if n != who else 0
                else:
                    gets = chans[n]["local"]
                if bal != before[n][0] + gets - fees:
                    return False
            return True
        await cluster.wait_for(settled_as_expected, timeout=60)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.tuples(payments, closes).filter(lambda c: c[1][0] != "stale" or c[0]))
def test_every_close_pays_the_last_state_or_the_penalty(case):
    """(A stale close needs a payment first: there is no older state than the first.)"""
    pays, close = case
    trio.run(_play, pays, close, clock=trio.testing.MockClock(autojump_threshold=0))
