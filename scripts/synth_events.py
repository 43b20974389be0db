"""Synthesise a plausible run dir of about N events from the project's event catalogue, to
measure `analyze` on big runs without running a cluster that long (issue 7).

    python scripts/synth_events.py RUN_DIR --events 1000000 --nodes 20 [--seed 1] [--analyze]

The run: two miners (one block a second, an orphaned block every 97 blocks), L1 transfers
gossiped to every node, payments over a line of channels n2=n3=n4=n5 (watched by tower n6),
a plasma operator n7 with users; a link fault on n2-n3, a kill and restart of n11 (leaving a
torn line mid-file), a +2 s clock skew on n12, n3 closing stale (penalized), and n8 exiting
a spent plasma output (challenged).  RUN/final_state.json conserves coins.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import tomli_w

from p2p_l2 import events as ev
from p2p_l2.config import loads_config
from p2p_l2.log import dumps
from p2p_l2.wire import Identity

T0 = 1_800_000_000.0
TX_RATE, PAY_RATE, PLASMA_INTERVAL = 40, 10, 0.5
CHANNELS = [("n2", "n3"), ("n3", "n4"), ("n4", "n5")]
FUNDING = (200_000, 100_000)
USERS = ("n8", "n9", "n10")
DEPOSIT = 100_000
SPENT_POS = 5_000_000_000


def config_text(names: list[str]) -> str:
    roles = {"n0": "miner", "n1": "miner", "n2": "channels", "n3": "channels", "n4": "channels",
             "n5": "channels", "n6": "watchtower", "n7": "plasma-operator"}
    out = ['[cluster]\nname = "synth"\nseed = 1\n', "[accounts]"]
    out += [f"{n} = 1000000" for n in names]
    for n in names:
        role = roles.get(n, "plasma-user" if n in USERS else None)
        out.append(f'\n[[node]]\nname = "{n}"\nroles = {json.dumps([role] if role else [])}')
        if role == "channels":
            out.append('watchtower = "n6"')
        if n in USERS:
            out.append(f'plasma = "n7"\nplasma_deposit = {DEPOSIT}')
    ring = [[names[i], names[(i + 1) % len(names)]] for i in range(len(names))]
    out.append(f"\n[topology]\nlinks = {json.dumps(ring)}\n")
    for a, b in CHANNELS:
        out.append(f'[[channel]]\nbetween = ["{a}", "{b}"]\nfunding = {list(FUNDING)}\n')
    return "\n".join(out)


class Writer:
    """Per-node event lines, written in each node's time order (a second's lag allowed)."""

    def __init__(self, run_dir: Path, names: list[str]):
        self.files = {}
        for n in names:
            (run_dir / "nodes" / n).mkdir(parents=True, exist_ok=True)
            self.files[n] = open(run_dir / "nodes" / n / "events.jsonl", "wb")
        self.pending: dict[str, list] = {n: [] for n in names}
        self.skew: dict[str, float] = {n: 0.0 for n in names}
        self.down: set[str] = set()
        self.count = 0

    def emit(self, t: float, node: str, event: str, level: str = "info", **fields) -> None:
        if node in self.down:
            return
        self.pending[node].append((t, {"ts": T0 + t + self.skew[node], "node": node,
                                       "event": event, "level": level, **fields}))
        self.count += 1

    def flush(self, before: float | None = None) -> None:
        for node, items in self.pending.items():
            items.sort(key=lambda x: x[0])
            cut = len(items) if before is None else next(
                (i for i, x in enumerate(items) if x[0] >= before), len(items))
            if cut:
                self.files[node].write(b"".join(dumps(e) for _, e in items[:cut]))
                del items[:cut]

    def torn(self, node: str) -> None:
        """A SIGKILL mid-write: half a line, then the restarted process appends."""
        self.flush()
        self.files[node].write(b'{"ts":%f,"node":"%s","event":"tx.acc' % (T0, node.encode()))

    def close(self) -> None:
        self.flush()
        for f in self.files.values():
            f.close()


def hexid(rng: random.Random, n: int = 32) -> str:
    return rng.getrandbits(n * 8).to_bytes(n, "big").hex()


def synth(run_dir: Path, events: int, nodes: int, seed: int = 1) -> int:
    if nodes < 13:
        raise SystemExit("--nodes must be at least 13 (the scenario's roles)")
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(nodes)]
    config = loads_config(config_text(names), "<synth>")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "topology.toml").write_text(tomli_w.dumps(config.to_dict()))
    keys = {n: Identity.derive(1, n).pubkey_hex for n in names}
    (run_dir / "cluster.json").write_text(json.dumps(
        {"name": "synth", "seed": 1, "created": T0,
         "nodes": {n: {"pubkey": keys[n]} for n in names}}))
    per_second = TX_RATE * (2 * nodes - 1) + 2 * nodes + 1 + 2 * PAY_RATE + 4
    duration = max(60, round(events / per_second))
    kill_at, back_at = 0.30 * duration, 0.35 * duration
    skew_at, unskew_at = 0.50 * duration, 0.60 * duration
    link_at, unlink_at = 0.10 * duration, 0.20 * duration
    stale_at, spent_at = 0.80 * duration, 0.85 * duration
    def lau(t: float, node: str, event: str, **fields) -> dict:
        return {"ts": T0 + t, "node": node, "event": event, "level": "info", **fields}

    launcher = [lau(-3.5 + i * 0.01, n, ev.PROCESS_STARTED, pid=1000 + i)
                for i, n in enumerate(names)]
    launcher += [lau(0.0, "launcher", ev.LAUNCHER_UP, nodes=nodes, seconds=3.5),
                 lau(kill_at, "n11", ev.PROCESS_KILLED, pid=1011),
                 lau(kill_at + 0.01, "n11", ev.PROCESS_EXITED, pid=1011, returncode=None),
                 lau(back_at, "n11", ev.PROCESS_STARTED, pid=2011)]
    w = Writer(run_dir, names)
    cids = {pair: hexid(rng) for pair in CHANNELS}
    for i, n in enumerate(names):
        w.emit(-3.4 + i * 0.01, n, ev.NODE_STARTED, pubkey=keys[n],
               roles=list(config.node(n).roles), pid=1000 + i)
        w.emit(-3.3, n, ev.NODE_LISTENING, port=40000 + 2 * i, control_port=40001 + 2 * i)
    for (a, b), cid in cids.items():
        w.emit(-3.0, a, ev.CHANNEL_OPENING, channel_id=cid, peer=b, txid=hexid(rng),
               capacity=sum(FUNDING))
        w.emit(-0.5, a, ev.CHANNEL_OPENED, channel_id=cid, peer=b, capacity=sum(FUNDING), party="a")
        w.emit(-0.5, b, ev.CHANNEL_OPENED, channel_id=cid, peer=a, capacity=sum(FUNDING), party="b")

    height, tip, chain = 0, hexid(rng), []
    nonce = {n: 0 for n in names}
    seq, plasma_number, pay_counts = 0, 0, {"ok": 0, "temporary_channel_failure": 0}
    closed = False
    s = 0
    while s < duration:
        base = float(s)
        # faults at their times
        if s == int(link_at):
            for a, b in (("n2", "n3"), ("n3", "n2")):
                w.emit(base, a, ev.FAULT_APPLIED, action="link", peer=b,
                       params={"latency_ms": 200.0, "loss": 0.05})
        if s == int(unlink_at):
            for a, b in (("n2", "n3"), ("n3", "n2")):
                w.emit(base, a, ev.FAULT_CLEARED, action="link", peer=b)
        if s == int(kill_at):
            w.torn("n11")
            w.down.add("n11")
        if s == int(back_at):
            w.down.discard("n11")
            w.emit(back_at + 0.4, "n11", ev.NODE_STARTED, pubkey=keys["n11"], roles=[], pid=2011)
        if s == int(skew_at):
            w.skew["n12"] = 2.0
            w.emit(base, "n12", ev.FAULT_APPLIED, "warning", action="clock-skew", offset_s=2.0,
                   was=0.0)
        if s == int(unskew_at):
            w.skew["n12"] = 0.0
            w.emit(base, "n12", ev.FAULT_CLEARED, action="clock-skew", was=2.0)
        # one block a second; every 97th height a competing block that loses
        height += 1
        block = hexid(rng)
        t = base + rng.uniform(0, 0.5)
        ntx = rng.randint(TX_RATE - 5, TX_RATE + 5)
        w.emit(t, "n0", ev.BLOCK_MINED, block=block, height=height, txs=ntx, prev=tip)
        if height % 97 == 0:
            orphan = hexid(rng)
            w.emit(t + 0.01, "n1", ev.BLOCK_MINED, block=orphan, height=height, txs=3, prev=tip)
            w.emit(t + 0.01, "n1", ev.BLOCK_ACCEPTED, block=orphan, height=height, miner="n1",
                   txs=3, peer=None, time=T0 + t)
            w.emit(t + 0.3, "n1", ev.CHAIN_REORG, depth=1, old_tip=orphan, new_tip=block,
                   height=height)
        for n in names:
            d = 0.0 if n == "n0" else rng.expovariate(1 / 0.05)
            w.emit(t + d, n, ev.BLOCK_ACCEPTED, block=block, height=height, miner="n0", txs=ntx,
                   peer=None if n == "n0" else "n0", time=T0 + t)
            if n != "n0":
                w.emit(t + d, n, ev.GOSSIP_DELIVERED, msg_id=hexid(rng, 16), topic="block", hops=2,
                       origin="n0", peer="n0", sent_at=T0 + t)
        w.emit(t, "n0", ev.GOSSIP_PUBLISHED, msg_id=hexid(rng, 16), topic="block",
               size=220 + 130 * ntx)
        chain.append(block)
        tip = block
        # L1 transfers: admitted and gossiped everywhere
        for _ in range(TX_RATE):
            sender = rng.choice(names)
            t = base + rng.random()
            txid, msg = hexid(rng), hexid(rng, 16)
            nonce[sender] += 1
            for n in names:
                d = 0.0 if n == sender else rng.expovariate(1 / 0.03)
                w.emit(t + d, n, ev.TX_ACCEPTED, txid=txid, sender=sender, nonce=nonce[sender],
                       fee=1)
                if n != sender:
                    w.emit(t + d, n, ev.GOSSIP_DELIVERED, msg_id=msg, topic="tx",
                           hops=rng.randint(1, 4), origin=sender, peer=rng.choice(names),
                           sent_at=T0 + t)
        # payments n2 -> n5 over three channels
        for _ in range(PAY_RATE if not closed else 0):
            t = base + rng.random()
            h = hexid(rng)
            amount = rng.randint(10, 1000)
            w.emit(t, "n2", ev.PAYMENT_SENT, payment_hash=h, amount=amount, payee="n5")
            lat = rng.lognormvariate(-3.5, 0.6) + (0.4 if link_at <= t < unlink_at else 0.0)
            if rng.random() < 0.9:
                seq += 1
                pay_counts["ok"] += 1
                w.emit(t + lat, "n2", ev.PAYMENT_SUCCEEDED, payment_hash=h, latency=lat, fee=2,
                       hops=3, amount=amount)
            else:
                pay_counts["temporary_channel_failure"] += 1
                w.emit(t + lat, "n2", ev.PAYMENT_FAILED, payment_hash=h,
                       reason=f"temporary_channel_failure@{cids[('n3', 'n4')]}", latency=lat)
        # plasma blocks made and committed
        for k in range(int(1 / PLASMA_INTERVAL)):
            plasma_number += 1000
            t = base + k * PLASMA_INTERVAL
            w.emit(t, "n7", ev.PLASMA_BLOCK_MADE, number=plasma_number, txs=rng.randint(0, 6),
                   invalid=0)
            w.emit(t + rng.uniform(0.5, 1.5), "n7", ev.PLASMA_BLOCK_COMMITTED, number=plasma_number,
                   height=height + 1)
        # n3 closes stale: the victim and the tower challenge, n3 is penalized
        if s == int(stale_at):
            cid = cids[("n2", "n3")]
            closed = True
            w.emit(base, "n3", ev.FAULT_APPLIED, "warning", action="misbehave",
                   behaviour="close-stale")
            w.emit(base + 0.01, "n3", ev.CHANNEL_CLOSING, channel_id=cid, kind="force",
                   txid=hexid(rng), seq=0)
            for n, extra in (("n2", {}), ("n6", {"by": "tower", "txid": hexid(rng)})):
                w.emit(base + 1.2, n, ev.CHANNEL_CLOSING, "warning", channel_id=cid,
                       kind="challenge", **extra, posted_seq=0, our_seq=seq, attempt=False)
            w.emit(base + 1.2, "n2", ev.CHANNEL_CLOSING, channel_id=cid, kind="force", by="chain",
                   seq=0)
            for n in ("n2", "n3"):
                w.emit(base + 3.0, n, ev.CHANNEL_PENALIZED, "warning", channel_id=cid, victim="a",
                       total=sum(FUNDING))
                w.emit(base + 3.0, n, ev.CHANNEL_SETTLED, channel_id=cid, penalized=True,
                       bal_a=FUNDING[0], bal_b=FUNDING[1])
        # n8 exits an output it spent; watchers alert and n9 challenges
        if s == int(spent_at):
            w.emit(base, "n8", ev.FAULT_APPLIED, "warning", action="misbehave",
                   behaviour="exit-spent")
            w.emit(base + 0.01, "n8", ev.PLASMA_EXIT_STARTED, "warning", pos=SPENT_POS,
                   txid=hexid(rng), spent=True)
            for n in ("n9", "n10"):
                w.emit(base + 1.1, n, ev.WATCHER_ALERT, "warning", kind="invalid_exit",
                       detail=f"exit of a spent output {SPENT_POS}", operator="n7")
            w.emit(base + 1.2, "n9", ev.PLASMA_EXIT_CHALLENGED, "warning", pos=SPENT_POS,
                   txid=hexid(rng))
            w.emit(base + 2.5, "n9", ev.PLASMA_EXIT_CHALLENGED, "warning", pos=SPENT_POS,
                   amount=50, owner="n8", confirmed=True)
        w.flush(before=base - 1.0)
        s += 1
    end = float(s) + 1.0
    w.emit(end - 1.0, "n2", ev.WORKLOAD_STOPPED, workload="w0", kind="payments", counts=pay_counts,
           seconds=end - 1.0)
    for n in names:
        w.emit(end, n, ev.NODE_STOPPED)
    w.close()
    launcher += [lau(end + 0.1, n, ev.PROCESS_EXITED, pid=1000 + i, returncode=0)
                 for i, n in enumerate(names)]
    launcher.append(lau(end + 0.2, "launcher", ev.LAUNCHER_DOWN, nodes=nodes))
    (run_dir / "launcher.jsonl").write_bytes(b"".join(dumps(e) for e in launcher))
    link = "link between=('n2', 'n3') latency_ms=200.0 loss=0.05"
    steps = [(0.0, "workload", "workload payments at 10/s from n2"),
             (link_at, "fault", f"fault {link}"), (unlink_at, "lift", f"lift {link}"),
             (kill_at, "fault", f"fault kill node=n11 restart_after={back_at - kill_at}"),
             (skew_at, "fault", "fault clock-skew node=n12 offset_s=2.0"),
             (stale_at, "fault", "fault misbehave node=n3 behaviour=close-stale"),
             (spent_at, "fault", "fault misbehave node=n8 behaviour=exit-spent")]
    (run_dir / "timeline.json").write_text(json.dumps({"seed": 1, "duration": end, "steps": [
        {"at": at, "what": what, "step": step} for at, what, step in steps]}))
    # the final L1 state: coins conserved, one channel penalized, one exit challenged
    balances = dict(config.accounts)
    channels = []
    for (a, b), cid in cids.items():
        balances[a] -= FUNDING[0]
        balances[b] -= FUNDING[1]
        rec = {"a": keys[a], "b": keys[b], "fund_a": FUNDING[0], "fund_b": FUNDING[1],
               "total": sum(FUNDING), "dispute_blocks": 6, "status": "open", "opened_at": 1,
               "paid": 0, "penalized": False, "closer": None, "seq": None, "bal_a": None,
               "bal_b": None, "dispute_until": None, "htlcs": [], "cid": cid}
        if (a, b) == ("n2", "n3"):
            rec.update(status="closed", paid=sum(FUNDING), penalized=True, closer=1, seq=0,
                       bal_a=FUNDING[0], bal_b=FUNDING[1], dispute_until=int(stale_at) + 6)
            balances[a] += sum(FUNDING)
        channels.append(rec)
    for u in USERS:
        balances[u] -= DEPOSIT
    balances["n8"] -= 10  # the bond of its spent-output exit, to the challenger
    balances["n9"] += 10
    locked = {"escrow": 0, "channel": sum(c["total"] - c["paid"] for c in channels),
              "plasma": DEPOSIT * len(USERS)}
    chain = {"exit_blocks": 6, "bond": 10, "last_child": plasma_number,
             "next_deposit": plasma_number + 1, "deposits": locked["plasma"], "paid": 0, "bonds": 0}
    exits = [{"owner": keys["n8"], "amount": 50, "bond": 10, "started": 1, "exitable_at": 20,
              "status": "challenged", "challenger": keys["n9"], "pos": SPENT_POS}]
    final = {"height": height, "tip": tip, "genesis": dict(config.accounts),
             "genesis_total": sum(config.accounts.values()), "rewards": 0, "balances": balances,
             "total_balances": sum(balances.values()), "locked": locked, "channels": channels,
             "plasma": {"n7": {"chain": chain, "exits": exits}}, "queried": "n0"}
    (run_dir / "final_state.json").write_text(json.dumps(final, indent=1))
    return w.count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--analyze", action="store_true", help="then time `analyze` on it")
    args = p.parse_args(argv)
    t = time.perf_counter()
    n = synth(args.run_dir, args.events, args.nodes, args.seed)
    print(f"{n} events from {args.nodes} nodes in {args.run_dir} ({time.perf_counter() - t:.1f} s)")
    if args.analyze:
        from p2p_l2.analysis import analyze
        t = time.perf_counter()
        result = analyze(args.run_dir)
        print(f"analyze: {time.perf_counter() - t:.2f} s -> {result['out_dir']}")
        for v in result["verdicts"]:
            print(f"  {v.name}: {v.ok}  {v.evidence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
