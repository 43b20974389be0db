"""bench plasma: child-chain transactions per second the operator validates and commits.

A process cluster: a miner, the operator and `users` plasma users, each with one deposit.
Phase 1 (not timed): each user splits its outputs in two, round after round
(`plasma.transfer_many` to itself for half of each output's value), until it holds `outputs`
equal outputs.  Phase 2 (timed): the operator is paused (SIGSTOP) while every user signs a
payment to the next user from each of its outputs, so the burst waits at the operator's door
(the users' wallets make one tx at a time: `users_sign_tx_per_s` in `extra`); then it is
resumed, checks a signature per input, makes a block every `block_interval`, commits its root
to L1 and takes the users' confirmations of the earlier blocks.  The headline is the txs in
those blocks (only blocks whose commitment reached L1) / seconds from the resume to the last
such block made, from the operator's log.  Reference, same run: raw ed25519 verifies per
second on one core (the operator validates on one core, one verify per input).  `extra`
also has the Merkle proof of the largest block and the L1 cost of exiting: a `start_exit`
tx's size and fee, and the bytes of the exits that would drain that block's outputs.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import trio

from .. import events as ev
from ..chain.contracts import plasma as contract
from ..chain.merkle import merkle_proof
from ..cluster.process import Cluster
from ..config import loads_config
from ..log import read_events
from ..plasma.tx import PlasmaTx, position
from ..wire import Identity
from . import result
from .l1 import verify_rate

USERS = ("alice", "bob", "carol", "dave")


def _config(users: int, deposit: int, interval: float) -> str:
    names = USERS[:users]
    nodes = "".join(f'[[node]]\nname = "{u}"\nroles = ["plasma-user"]\n'
                    f"plasma_deposit = {deposit}\n" for u in names)
    accounts = "".join(f"{n} = 1_000_000_000\n" for n in ("op", *names))
    links = ", ".join(f'["miner", "{n}"]' for n in ("op", *names))
    return f"""
[cluster]
name = "bench-plasma"
seed = 31
[chain]
block_interval = 0.25
confirmations = 1
[plasma]
block_interval = {interval}
exit_blocks = 4
exit_bond = 10
withholding_timeout = 30.0
[accounts]
{accounts}
[[node]]
name = "miner"
roles = ["miner"]
[[node]]
name = "op"
roles = ["plasma-operator"]
{nodes}
[topology]
links = [{links}]
"""


def _cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of process `pid` so far; 0.0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _idle(pid: int | None, timeout: float = 20.0, share: float = 0.2) -> None:
    """Wait until process `pid` uses less than `share` of a core over a quarter second."""
    with trio.move_on_after(timeout):
        while True:
            before = _cpu(pid)
            await trio.sleep(0.25)
            if _cpu(pid) - before < share * 0.25:
                return


async def _utxos(cluster: Cluster, user: str) -> list[dict]:
    return (await cluster[user].call("plasma.balance", _timeout=60))["utxos"]


async def _fan_out(cluster: Cluster, user: str, outputs: int, timeout: float) -> int:
    """Split `user`'s outputs in two until it holds `outputs` of them; returns rounds."""
    rounds = 0
    utxos = await _utxos(cluster, user)
    while len(utxos) < outputs:
        value = min(u["amount"] for u in utxos)
        count = min(len(utxos), outputs - len(utxos))
        await cluster[user].call("plasma.transfer_many", to=user, amount=value // 2,
                                 count=count, _timeout=timeout)
        want = len(utxos) + count
        utxos = await cluster.wait_for(lambda: _grown(cluster, user, want), timeout,
                                       what=f"{user} holding {want} outputs")
        rounds += 1
    return rounds


async def _grown(cluster: Cluster, user: str, want: int) -> list[dict] | None:
    utxos = await _utxos(cluster, user)
    return utxos if len(utxos) >= want else None


def exit_cost(block_txs: int) -> tuple[int, int, int]:
    """(proof bytes, start_exit tx bytes, its fee) for an output of a 1-input, 2-output tx
    of a block of `block_txs` txs (the proof of its first tx: every sibling a full hash)."""
    proof = merkle_proof([bytes(32)] * block_txs, 0)
    owner, op = Identity.derive(77, "bench-exiter"), Identity.derive(77, "bench-operator")
    ptx = PlasmaTx(op.pubkey, (position(1000, 0, 0),),
                   ((owner.pubkey, 1), (op.pubkey, 2**40))).signed([owner])
    confirms = [(owner.pubkey, owner.sign(b"c" * 64))]
    tx = contract.start_exit_tx(owner, "bench-plasma", op.pubkey, position(2000, 0, 0), ptx,
                                proof, 10, 0, confirms=confirms)
    return sum(len(s) for s in proof), tx.size, tx.fee


async def run(users: int = 3, outputs: int = 2048, interval: float = 0.25) -> dict:
    reference = verify_rate()
    deposit = outputs * 1024
    config = loads_config(_config(users, deposit, interval), "<bench plasma>")
    names = list(USERS[:users])
    with tempfile.TemporaryDirectory(prefix="p2p_l2-bench-") as tmp:
        async with Cluster.launch(config, run_dir=Path(tmp) / "run", timeout=120) as cluster:
            t_split = time.time()
            async with trio.open_nursery() as nursery:
                for u in names:
                    nursery.start_soon(_fan_out, cluster, u, outputs, 60)
            split_seconds = time.time() - t_split
            held = {u: await _utxos(cluster, u) for u in names}
            made, _ = read_events(cluster.run_dir / "nodes" / "op" / "events.jsonl")
            before = max([e["number"] for e in made if e["event"] == ev.PLASMA_BLOCK_MADE],
                         default=0)
            pids = {n: cluster.launcher.pid(n) for n in ("op", *names)}
            await _idle(pids["op"])  # done with the confirmations of the last split round
            await cluster.pause("op")  # (for less than the links' 20 s ping timeout)
            t_send = time.time()
            cpu_send = {u: _cpu(pids[u]) for u in names}
            async with trio.open_nursery() as nursery:
                for i, u in enumerate(names):
                    nursery.start_soon(lambda u=u, i=i: cluster[u].call(
                        "plasma.transfer_many", to=names[(i + 1) % users], amount=1,
                        count=len(held[u]), _timeout=120))
            send_seconds = time.time() - t_send
            await trio.sleep(0.2)  # the users' link writers hand the txs to their sockets
            cpu0 = {n: _cpu(p) for n, p in pids.items()}
            await cluster.resume("op")
            t0 = time.time()
            sent = sum(len(h) for h in held.values())
            await cluster.wait_for(lambda: _included(cluster, before, sent, t_send), 60,
                                   what=f"{sent} burst txs in committed blocks")
            t1 = time.time()
            cpu1 = {n: _cpu(p) for n, p in pids.items()}
            rejected = _rejected(cluster.events("op"), t_send)
            for u in names:  # the payers' confirmations, through the operator to the payees
                want = 2 * len(held[u]) - rejected
                await cluster.wait_for(lambda u=u, want=want: _grown(cluster, u, want), 60,
                                       what=f"{u}'s payments received and confirmed")
            settled = time.time() - t0
            op_cpu = _cpu(pids["op"]) - cpu0["op"]
        events, _ = read_events(cluster.run_dir / "nodes" / "op" / "events.jsonl")
    blocks = {e["number"]: e for e in events
              if e["event"] == ev.PLASMA_BLOCK_MADE and e["number"] > before}
    committed = {e["number"] for e in events if e["event"] == ev.PLASMA_BLOCK_COMMITTED}
    burst = [b for n, b in sorted(blocks.items()) if n in committed]
    txs = sum(b["txs"] for b in burst)
    seconds = burst[-1]["ts"] - t0
    value = txs / seconds
    largest = max(b["txs"] for b in burst)
    proof_bytes, exit_bytes, exit_fee = exit_cost(largest)
    exits = 2 * largest  # every tx of the burst has two outputs (payment and change)
    extra = {"txs": txs, "sent": sent, "rejected": rejected, "users": users, "outputs_per_user": outputs,
             "split_seconds": split_seconds,
             "blocks": len(burst), "mean_txs_per_block": txs / len(burst),
             "largest_block_txs": largest, "seconds": seconds, "users_send_seconds": send_seconds,
             "users_sign_tx_per_s": sent / send_seconds,
             "users_sign_cpu_seconds": sum(cpu0[u] - cpu_send[u] for u in names),
             "block_interval": interval,
             "operator_cpu_share": (cpu1["op"] - cpu0["op"]) / (t1 - t0),
             # until every payment is confirmed by its payer and the payee knows it: all the
             # operator's work for the burst (txs, blocks, commits, confirmations)
             "settled_seconds": settled, "settled_tx_per_s": txs / settled,
             "operator_cpu_seconds": op_cpu, "operator_cpu_us_per_tx": 1e6 * op_cpu / txs,
             "users_cpu_seconds": sum(cpu1[u] - cpu0[u] for u in names),
             "proof_bytes_largest_block": proof_bytes,
             "proof_hashes": math.ceil(math.log2(largest)) if largest > 1 else 0,
             "exit_tx_bytes": exit_bytes, "exit_tx_fee": exit_fee,
             "exits_per_block": exits, "exit_bytes_per_block": exits * exit_bytes,
             "exit_fees_per_block": exits * exit_fee, "target_tx_per_s": 5000,
             "ratio_meaning": "committed child-chain tx/s over raw ed25519 verifies/s on one "
                              "core"}
    return result("plasma", value, "tx/s", {"name": "ed25519 verify, one core",
                                           "value": reference, "unit": "verify/s"}, extra)


def _rejected(events: list[dict], since: float) -> int:
    return sum(1 for e in events if e["event"] == ev.PLASMA_TX_REJECTED and e["ts"] >= since)


async def _included(cluster: Cluster, before: int, sent: int, since: float) -> bool:
    """Are all `sent` burst txs (those sent since `since` and not refused) in blocks after
    `before` whose commitment reached L1?"""
    events = cluster.events("op")
    made = {e["number"]: e["txs"] for e in events
            if e["event"] == ev.PLASMA_BLOCK_MADE and e["number"] > before}
    done = {e["number"] for e in events if e["event"] == ev.PLASMA_BLOCK_COMMITTED}
    return sum(n for b, n in made.items() if b in done) + _rejected(events, since) >= sent
