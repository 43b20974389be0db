"""Sustained on-chain throughput of a finished run, from one node's log.

    p2p-l2 run configs/bitcoin-like.toml --run-dir runs/btc
    python scripts/l1_throughput.py runs/btc [NODE]

Counts the transactions in the blocks of the final best chain (block.accepted events,
minus blocks later reorged away) and divides by the time between the first and the last
block that carried any.  `p2p-l2 analyze` will report this among its metrics.
"""

import sys
from pathlib import Path

from p2p_l2 import events as ev
from p2p_l2.log import read_events


def main(run_dir: str, node: str | None = None) -> None:
    nodes = sorted(p.name for p in (Path(run_dir) / "nodes").iterdir())
    node = node or nodes[-1]
    events, _ = read_events(Path(run_dir) / "nodes" / node / "events.jsonl")
    best: dict[int, dict] = {}  # height -> the block accepted last at that height
    for e in events:
        if e["event"] == ev.BLOCK_ACCEPTED:
            best[e["height"]] = e
    blocks = [best[h] for h in sorted(best) if best[h]["txs"]]
    if len(blocks) < 2:
        sys.exit(f"{node}: fewer than two blocks with transactions")
    txs = sum(b["txs"] for b in blocks[1:])  # the first block opens the window
    span = blocks[-1]["time"] - blocks[0]["time"]
    reorgs = sum(1 for e in events if e["event"] == ev.CHAIN_REORG)
    print(f"{node}: {len(blocks)} blocks with txs, {txs} txs in {span:.1f} s -> "
          f"{txs / span:.2f} tx/s sustained (reorgs seen: {reorgs})")


if __name__ == "__main__":
    main(*sys.argv[1:])
