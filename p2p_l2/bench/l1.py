"""bench l1: transactions validated and included per second on one node with large blocks.

A one-node cluster (a miner with big, frequent blocks) is fed pre-signed transfers from
many funded accounts through `chain.submit`; the headline is txs / seconds from the first
admission to the block that includes the last one, from the node's own log.  Reference,
same run: raw ed25519 verifies per second on one core (a node validates on one core; each
tx needs one verify, the signature cache saves the second one at block time).  `extra`
also has the sans-IO core alone (mempool + blocks + store, no process or control API).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import trio
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

from .. import events as ev
from ..chain import tx as txmod
from ..chain.block import make_block
from ..chain.mempool import Mempool
from ..chain.store import ChainStore
from ..chain.tree import BlockTree
from ..cluster.process import Cluster
from ..config import make_config
from ..log import read_events
from ..wire import Identity, verify
from . import result

NET = "bench-l1"


def verify_rate(seconds: float = 1.0) -> float:
    pk, sk = crypto_sign_seed_keypair(b"\1" * 32)
    msg = b"m" * 64
    sig = crypto_sign(msg, sk)[:64]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(500):
            verify(pk, msg, sig)
        n += 500
    return n / (time.perf_counter() - t0)


def make_txs(count: int, senders: int) -> tuple[list[Identity], list[txmod.Tx]]:
    ids = [Identity.derive(99, f"bench-sender-{i}") for i in range(senders)]
    sink = Identity.derive(99, "bench-sink").pubkey
    txs = [txmod.transfer(ids[i % senders], NET, sink, 1, i // senders, fee=1) for i in range(count)]
    txmod.SIG_CACHE.clear()  # signing does not fill it, but be sure: every verify is real
    return ids, txs


def core_rate(txs: list[txmod.Tx], ids: list[Identity], block_txs: int) -> float:
    """The sans-IO path alone: admit (verify), select, build, connect, persist."""
    miner = Identity.derive(99, "bench-miner")
    accounts = {i.pubkey: 10**9 for i in ids}
    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore(Path(tmp) / "chain.sqlite")
        tree = BlockTree(NET, accounts, {miner.pubkey}, max_block_txs=block_txs, store=store)
        pool = Mempool(net=NET, max_size=len(txs) + 1)
        t0 = time.perf_counter()
        now = time.time()
        for tx in txs:
            pool.add(tx, tree.state, now)
        while len(pool):
            picked = pool.select(tree.state, block_txs, height=tree.height + 1)
            block = make_block(miner, tree.tip, picked, time=now)
            assert tree.add(block, now).status == "connected"
            pool.remove_included(block.txs)
        seconds = time.perf_counter() - t0
        store.close()
    txmod.SIG_CACHE.clear()
    return len(txs) / seconds


async def run(txs: int = 40_000, senders: int = 800, block_txs: int = 10_000,
              interval: float = 0.1, chunk: int = 1_000) -> dict:
    reference = verify_rate()
    ids, signed = make_txs(txs, senders)
    core = core_rate(signed, ids, block_txs)
    accounts = "".join(f"{i.pubkey.hex()} = 1_000_000_000\n" for i in ids)
    config = make_config(1, name=NET, roles={"n0": ["miner"]},
                         extra=f"[chain]\nblock_interval = {interval}\nmax_block_txs = {block_txs}\n"
                               f"[accounts]\n{accounts}")
    with tempfile.TemporaryDirectory(prefix="p2p_l2-bench-") as tmp:
        async with Cluster.launch(config, run_dir=Path(tmp) / "run") as cluster:
            node = cluster["n0"]
            rejected = 0
            chunks = [[t.to_wire() for t in signed[i:i + chunk]] for i in range(0, txs, chunk)]

            async def feed(mine):  # two feeders, so the node never waits for the next chunk
                nonlocal rejected
                for part in mine:
                    res = await node.call("chain.submit", txs=part, _timeout=120)
                    rejected += sum(res["rejected"].values())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed, chunks[0::2])
                nursery.start_soon(feed, chunks[1::2])
            last = signed[-1].txid.hex()
            await cluster.wait_for(lambda: _confirmed(node, last), timeout=120, what="all included")
            height = (await node.call("chain.tip"))["height"]
        events, _ = read_events(Path(tmp) / "run" / "nodes" / "n0" / "events.jsonl")
    accepted = [e["ts"] for e in events if e["event"] == ev.TX_ACCEPTED]
    mined = [(e["ts"], e["txs"]) for e in events if e["event"] == ev.BLOCK_MINED and e["txs"]]
    seconds = mined[-1][0] - accepted[0]
    value = txs / seconds
    extra = {"txs": txs, "senders": senders, "rejected": rejected, "blocks_with_txs": len(mined),
             "max_block_txs": block_txs, "height": height, "seconds": seconds,
             "core_tx_per_s": core, "core_ratio": core / reference, "target_ratio": 0.5,
             "ratio_meaning": "included tx/s on one node over raw ed25519 verifies/s on one core"}
    return result("l1", value, "tx/s", {"name": "ed25519 verify, one core", "value": reference,
                                       "unit": "verify/s"}, extra)


async def _confirmed(node, txid: str) -> bool:
    return (await node.call("chain.tx", txid=txid))["status"] == "confirmed"
