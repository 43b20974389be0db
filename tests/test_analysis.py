"""Analysis (issue 7): loading, metrics with known answers, and every invariant shown both
holding on a good run and failing on a doctored one.  Run dirs are synthesised here, shaped
like real ones (field names as the nodes log them), so no cluster is started."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from p2p_l2 import events as ev
from p2p_l2.analysis import analyze, invariants, load, metrics
from p2p_l2.analysis.invariants import (
    channel_settlements_match, coins_conserved, honest_nodes_got_their_funds,
    no_spent_output_finalized, no_unpunished_revoked_state, plasma_exits_within_deposits,
)
from p2p_l2.analysis.metrics import METRIC_DOCS

T0 = 1_795_000_000.0
CID = "c1" * 32
CID2 = "c2" * 32
POS_SPENT, POS_OK = 5_000_000_000, 3_000_000_000

CONFIG = """
[cluster]
name = "t"
seed = 3
[chain]
block_interval = 1.0
[channels]
dispute_blocks = 6
[accounts]
miner = 1000
alice = 1000
bob = 1000
tower = 100
op = 1000
dave = 500
[[node]]
name = "miner"
roles = ["miner"]
[[node]]
name = "alice"
roles = ["channels"]
watchtower = "tower"
[[node]]
name = "bob"
roles = ["channels"]
[[node]]
name = "tower"
roles = ["watchtower"]
[[node]]
name = "op"
roles = ["plasma-operator"]
[[node]]
name = "dave"
roles = ["plasma-user"]
plasma = "op"
plasma_deposit = 300
[topology]
links = [["miner", "alice"], ["alice", "bob"], ["bob", "tower"], ["miner", "op"], ["op", "dave"]]
[[channel]]
between = ["alice", "bob"]
funding = [200, 100]
"""
KEYS = {n: f"{i:064x}" for i, n in enumerate(["miner", "alice", "bob", "tower", "op", "dave"], 1)}


class RunDir:
    """A run dir written by hand: per-node events at t seconds after the cluster was up."""

    def __init__(self, path: Path):
        self.path = path
        self.nodes: dict[str, list[dict]] = {}
        self.launcher = [{"ts": T0 - 2 + i * 0.01, "node": n, "event": ev.PROCESS_STARTED,
                          "level": "info", "pid": 100 + i} for i, n in enumerate(KEYS)]
        self.launcher.append({"ts": T0, "node": "launcher", "event": ev.LAUNCHER_UP,
                              "level": "info", "nodes": len(KEYS), "seconds": 2.0})
        self.final: dict | None = None
        self.timeline: dict | None = None
        self.tails: dict[str, bytes] = {}

    def log(self, t: float, node: str, event: str, level: str = "info", skew: float = 0.0, **f):
        self.nodes.setdefault(node, []).append(
            {"ts": T0 + t + skew, "node": node, "event": event, "level": level, **f})
        return self

    def lau(self, t: float, node: str, event: str, **f):
        self.launcher.append({"ts": T0 + t, "node": node, "event": event, "level": "info", **f})
        return self

    def write(self) -> Path:
        (self.path / "nodes").mkdir(parents=True, exist_ok=True)
        (self.path / "topology.toml").write_text(CONFIG)
        (self.path / "cluster.json").write_text(json.dumps(
            {"name": "t", "nodes": {n: {"pubkey": k} for n, k in KEYS.items()}}))
        for node, events in self.nodes.items():
            d = self.path / "nodes" / node
            d.mkdir(exist_ok=True)
            (d / "events.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events)
                                             + self.tails.get(node, b""))
        (self.path / "launcher.jsonl").write_bytes(
            b"".join(orjson.dumps(e) + b"\n" for e in sorted(self.launcher, key=lambda e: e["ts"])))
        for name, doc in (("final_state.json", self.final), ("timeline.json", self.timeline)):
            if doc is not None:
                (self.path / name).write_text(json.dumps(doc))
        return self.path


def channel_rec(**kw) -> dict:
    rec = {"a": KEYS["alice"], "b": KEYS["bob"], "fund_a": 200, "fund_b": 100, "total": 300,
           "dispute_blocks": 6, "status": "open", "opened_at": 1, "paid": 0, "penalized": False,
           "closer": None, "seq": None, "bal_a": None, "bal_b": None, "dispute_until": None,
           "htlcs": [], "cid": CID}
    rec.update(kw)
    return rec


def final_state(channel: dict | None = None, exits: list | None = None) -> dict:
    """Coins conserved: 4600 genesis = balances + 300 in the channel + 300 in plasma."""
    channel = channel or channel_rec()
    balances = {"miner": 1000, "alice": 800, "bob": 900, "tower": 100, "op": 1000, "dave": 200}
    if channel["paid"]:  # paid out: back on the parties' balances
        balances["alice"] += channel["paid"] - 100
        balances["bob"] += 100
    return {"height": 4, "tip": "b4", "genesis": {"miner": 1000, "alice": 1000, "bob": 1000,
                                                  "tower": 100, "op": 1000, "dave": 500},
            "genesis_total": 4600, "rewards": 0, "balances": balances,
            "total_balances": sum(balances.values()),
            "locked": {"escrow": 0, "channel": channel["total"] - channel["paid"], "plasma": 300},
            "channels": [channel],
            "plasma": {"op": {"chain": {"exit_blocks": 6, "bond": 10, "last_child": 2000,
                                        "next_deposit": 2001, "deposits": 300, "paid": 0,
                                        "bonds": 0},
                              "exits": exits or []}},
            "queried": "miner"}


def opened(r: RunDir) -> RunDir:
    r.log(-1, "alice", ev.CHANNEL_OPENED, channel_id=CID, peer="bob", capacity=300, party="a")
    r.log(-1, "bob", ev.CHANNEL_OPENED, channel_id=CID, peer="alice", capacity=300, party="b")
    return r


def stale_close(r: RunDir, penalized: bool, victim_seq: int = 9) -> RunDir:
    """bob closes alice's channel with seq 1; alice shows `victim_seq`."""
    opened(r)
    r.log(20, "bob", ev.FAULT_APPLIED, "warning", action="misbehave", behaviour="close-stale")
    r.log(20.1, "bob", ev.CHANNEL_CLOSING, channel_id=CID, kind="force", txid="aa" * 32, seq=1)
    r.log(21.2, "alice", ev.CHANNEL_CLOSING, "warning", channel_id=CID, kind="challenge",
          posted_seq=1, our_seq=victim_seq, attempt=False)
    r.log(21.2, "alice", ev.CHANNEL_CLOSING, channel_id=CID, kind="force", by="chain", seq=1)
    if penalized:
        for n in ("alice", "bob"):
            r.log(23, n, ev.CHANNEL_PENALIZED, "warning", channel_id=CID, victim="a", total=300)
            r.log(23, n, ev.CHANNEL_SETTLED, channel_id=CID, penalized=True, bal_a=190, bal_b=110)
    r.final = final_state(channel_rec(status="closed", paid=300, penalized=penalized, closer=1,
                                      seq=1, bal_a=190, bal_b=110, dispute_until=26))
    return r


def verdict(check, path: Path):
    return check(load(path))


# -- loading -----------------------------------------------------------------------------------
def test_load_tolerates_torn_lines_and_mixed_types(tmp_path):
    r = RunDir(tmp_path)
    r.log(1, "alice", ev.PEER_DIAL_FAILED, "debug", peer="bob", attempt=1, delay=0.02, error="x")
    r.log(2, "alice", ev.FAULT_APPLIED, action="link", peer="bob",
          params={"latency_ms": 200.0, "loss": 0.05})
    r.log(3, "alice", ev.CHANNEL_CLOSING, channel_id=CID, kind="challenge", posted_seq=1,
          our_seq=3, attempt=False)
    r.tails["alice"] = b'{"ts":1795000004.0,"node":"alice","event":"tx.acc'  # killed mid-line
    r.log(5, "bob", ev.TX_ACCEPTED, txid="t1", sender="bob", nonce=1, fee=1)
    r.tails["bob"] = (b'{"ts":1795000006.0,"node":"bob","ev'  # torn, then the restart appends
                      + orjson.dumps({"ts": T0 + 8, "node": "bob", "event": ev.NODE_STARTED,
                                      "level": "info", "pubkey": "k", "roles": ["channels"],
                                      "pid": 7}) + b"\n"
                      + orjson.dumps({"ts": T0 + 9, "node": "bob", "event": ev.NODE_LISTENING,
                                      "level": "info", "port": 1, "control_port": 2}) + b"\n")
    run = load(r.write())
    assert run.events["event"].to_list() == [ev.PEER_DIAL_FAILED, ev.FAULT_APPLIED,
                                             ev.CHANNEL_CLOSING, ev.TX_ACCEPTED, ev.NODE_LISTENING]
    assert run.events["t"].to_list() == pytest.approx([1, 2, 3, 5, 9])
    assert run.events.columns[:5] == ["ts", "t", "node", "event", "level"]
    params = run.events.filter(run.events["event"] == ev.FAULT_APPLIED)["params"][0]
    assert json.loads(params) == {"latency_ms": 200.0, "loss": 0.05}
    assert run.t0 == T0 and run.config.node("dave").plasma == "op"
    assert run.final is None and run.timeline is None


def test_clock_skew_is_corrected_until_cleared_or_restart(tmp_path):
    r = RunDir(tmp_path)
    r.log(10, "bob", ev.TX_ACCEPTED, txid="a")
    skew = ev.FAULT_APPLIED
    r.log(20, "bob", skew, "warning", skew=2.0, action="clock-skew", offset_s=2.0, was=0.0)
    r.log(25, "bob", ev.TX_ACCEPTED, skew=2.0, txid="b")
    r.log(26, "bob", skew, "warning", skew=-1.5, action="clock-skew", offset_s=-1.5, was=2.0)
    r.log(27, "bob", ev.TX_ACCEPTED, skew=-1.5, txid="c")
    r.log(30, "bob", ev.FAULT_CLEARED, action="clock-skew", was=-1.5)
    r.log(31, "bob", ev.TX_ACCEPTED, txid="d")
    r.log(40, "bob", skew, "warning", skew=5.0, action="clock-skew", offset_s=5.0, was=0.0)
    r.log(41, "bob", ev.NODE_STARTED, pubkey="k", roles=[], pid=9)  # restarted: no skew
    r.log(42, "bob", ev.TX_ACCEPTED, txid="e")
    run = load(r.write())
    assert run.events["t"].to_list() == pytest.approx([10, 20, 25, 26, 27, 30, 31, 40, 41, 42])
    labels = [(w.start, w.end, w.label) for w in run.fault_windows]
    assert labels == [(pytest.approx(20), pytest.approx(26), "clock-skew bob +2s"),
                      (pytest.approx(26), pytest.approx(30), "clock-skew bob -1.5s"),
                      (pytest.approx(40), pytest.approx(41), "clock-skew bob +5s")]


def test_fault_windows_group_one_fault_and_read_the_launcher(tmp_path):
    r = RunDir(tmp_path)
    for a, b in (("alice", "bob"), ("bob", "alice")):
        r.log(10.0, a, ev.FAULT_APPLIED, action="link", peer=b, params={"latency_ms": 200.0})
        r.log(20.0, a, ev.FAULT_CLEARED, action="link", peer=b)
    r.log(30.0, "miner", ev.FAULT_APPLIED, action="link", peer="op", params={"loss": 1.0})
    cut = [("miner", "alice"), ("alice", "miner"), ("op", "dave"), ("dave", "op")]
    for i, (a, b) in enumerate(cut):
        r.log(40.0 + 0.05 * i, a, ev.FAULT_APPLIED, action="link", peer=b,
              params={"blackhole": True})
        r.log(50.0 + 0.05 * i, a, ev.FAULT_CLEARED, action="link", peer=b)
    r.log(60.0, "bob", ev.FAULT_APPLIED, "warning", action="misbehave", behaviour="close-stale")
    r.lau(22.0, "tower", ev.PROCESS_KILLED, pid=1).lau(22.01, "tower", ev.PROCESS_EXITED, pid=1)
    r.lau(27.0, "tower", ev.PROCESS_STARTED, pid=2)
    r.lau(33.0, "dave", ev.PROCESS_PAUSED, pid=3).lau(35.0, "dave", ev.PROCESS_RESUMED, pid=3)
    run = load(r.write())
    got = [(round(w.start, 2), None if w.end is None else round(w.end, 2), w.label)
           for w in run.fault_windows]
    assert got == [(10.0, 20.0, "link alice↔bob"), (22.0, 27.0, "kill tower"),
                   (30.0, None, "link miner→op"), (33.0, 35.0, "pause dave"),
                   (40.0, 50.15, "partition"), (60.0, None, "misbehave bob close-stale")]


# -- metrics -------------------------------------------------------------------------------------
def small_run(r: RunDir) -> RunDir:
    """Known answers: see test_metrics_on_a_small_run."""
    prev = "g"
    for h, txs in enumerate([2, 3, 0, 5], 1):
        r.log(h, "miner", ev.BLOCK_MINED, block=f"b{h}", height=h, txs=txs, prev=prev)
        delays = (("miner", 0.0), ("alice", 0.1), ("op", 0.2), ("bob", 0.5 if h == 4 else 0.3))
        for node, d in delays:
            r.log(h + d, node, ev.BLOCK_ACCEPTED, block=f"b{h}", height=h, miner="miner",
                  txs=txs, peer=None if node == "miner" else "miner", time=T0 + h)
        prev = f"b{h}"
    r.log(3.1, "op", ev.BLOCK_MINED, block="x3", height=3, txs=1, prev="b2")  # orphaned
    r.log(3.1, "op", ev.BLOCK_ACCEPTED, block="x3", height=3, miner="op", txs=1, peer=None, time=T0)
    r.log(4.2, "op", ev.CHAIN_REORG, depth=1, old_tip="x3", new_tip="b4", height=4)
    for i, (lat, fee, hops) in enumerate([(0.1, 1, 2), (0.2, 1, 2), (0.3, 2, 3)]):
        r.log(5 + i, "alice", ev.PAYMENT_SENT, payment_hash=f"p{i}", amount=100, payee="bob")
        r.log(5 + i + lat, "alice", ev.PAYMENT_SUCCEEDED, payment_hash=f"p{i}", latency=lat,
              fee=fee, hops=hops, amount=100)
    r.log(8, "alice", ev.PAYMENT_SENT, payment_hash="p3", amount=100, payee="bob")
    r.log(8.5, "alice", ev.PAYMENT_FAILED, payment_hash="p3", latency=0.5,
          reason="temporary_channel_failure@" + CID)
    for n, t, txs, done in ((1000, 1.0, 4, 1.5), (2000, 2.0, 6, 3.0)):
        r.log(t, "op", ev.PLASMA_BLOCK_MADE, number=n, txs=txs, invalid=0)
        r.log(done, "op", ev.PLASMA_BLOCK_COMMITTED, number=n, height=2)
    r.log(5.0, "dave", ev.WATCHER_ALERT, "warning", kind="invalid_exit", detail="x", operator="op")
    r.log(5.5, "dave", ev.PLASMA_EXIT_STARTED, "warning", pos=POS_SPENT, txid="e1", spent=True)
    r.log(6.0, "dave", ev.PLASMA_EXIT_STARTED, pos=POS_OK, amount=100, txid="e2")
    r.log(6.5, "dave", ev.PLASMA_EXIT_CHALLENGED, "warning", pos=POS_SPENT, txid="c")
    r.log(9.0, "dave", ev.PLASMA_EXIT_FINALIZED, pos=POS_OK, amount=100, owner="dave")
    r.log(1.0, "miner", ev.GOSSIP_PUBLISHED, msg_id="m1", topic="block", size=100)
    for n in ("alice", "bob"):
        r.log(1.2, n, ev.GOSSIP_DELIVERED, msg_id="m1", topic="block", hops=1, origin="miner",
              peer="miner", sent_at=T0 + 1)
    r.log(2.0, "bob", ev.MSG_REJECTED, "warning", peer="alice", reason="bad_seq", detail="seq 3",
          kind="ch_update", channel_id=CID)
    r.log(10.0, "miner", ev.NODE_STOPPED)
    return r


def test_metrics_on_a_small_run(tmp_path):
    r = small_run(RunDir(tmp_path))
    r.final = final_state()
    m = metrics(load(r.write()))
    assert list(m) == list(METRIC_DOCS)
    assert m["duration_s"] == pytest.approx(10.0)
    assert m["l1.blocks"] == 4 and m["l1.tx_per_s"] == pytest.approx(1.0)
    assert m["l1.block_interval_s"] == {"mean": pytest.approx(1.0), "p50": pytest.approx(1.0)}
    assert (m["l1.forks"], m["l1.orphan_rate"]) == (1, pytest.approx(0.2))
    assert (m["l1.reorg_depth_max"], m["l1.reorg_depths"]) == (1, [1])
    assert m["l1.propagation_s"]["p50"] == pytest.approx(0.3)  # x3 did not reach everyone
    assert m["l1.propagation_s"]["p99"] == pytest.approx(0.3 + 0.2 * 0.97)
    assert (m["l2.payments"], m["l2.payments_per_s"], m["l2.success_rate"]) == (
        4, pytest.approx(0.3), pytest.approx(0.75))
    assert m["l2.failure_reasons"] == {"temporary_channel_failure": 1}
    assert m["l2.latency_s"]["p50"] == pytest.approx(0.2)
    assert (m["l2.route_hops"], m["l2.fees_total"]) == ({"2": 2, "3": 1}, 4)
    assert m["plasma.tx_per_s"] == pytest.approx(1.0) and m["plasma.blocks"] == 2
    assert m["plasma.commit_delay_s"] == {"p50": pytest.approx(0.75), "p90": pytest.approx(0.95)}
    assert m["plasma.exits"] == {"started": 2, "challenged": 1, "finalized": 1, "byzantine": 1}
    mass = m["plasma.mass_exit"]
    assert (mass["alerts"], mass["exits_started"], mass["amount_finalized"]) == (1, 1, 100)
    assert mass["first_alert_to_first_exit_s"] == pytest.approx(1.0)
    assert mass["drain_s"] == pytest.approx(4.0)
    assert m["plasma.alerts"] == {"invalid_exit": 1}
    assert m["net.messages_by_node"]["bob"] == {"published": 0, "delivered": 1, "rejected": 1}
    assert m["net.bytes_by_node"]["miner"] == {"published": 100, "delivered": 0}
    assert m["net.bytes_by_node"]["alice"]["delivered"] == 100
    assert m["net.gossip_delivered_by_topic"] == {"block": 2}
    assert m["net.rejected_by_reason"] == {"bad_seq": 1}
    assert m["l2_l1_ratio"] == pytest.approx(1.3)
    json.dumps(m)


def test_every_metric_is_there_for_an_empty_run(tmp_path):
    r = RunDir(tmp_path).log(0.5, "miner", ev.NODE_STARTED, pubkey="k", roles=["miner"], pid=1)
    m = metrics(load(r.write()))
    assert list(m) == list(METRIC_DOCS)
    assert (m["l1.blocks"], m["l1.tx_per_s"], m["l2.payments"], m["l2.success_rate"],
            m["l2_l1_ratio"], m["l2.failure_reasons"]) == (0, 0.0, 0, None, None, {})
    assert m["l1.propagation_s"] == {"p50": None, "p90": None, "p99": None}
    assert [v.ok for v in invariants(load(r.path))] == [None] * 6


# -- invariants: each holds on a good run and fails on a doctored one ------------------------
def test_coins_conserved(tmp_path):
    r = small_run(RunDir(tmp_path))
    r.final = final_state()
    assert verdict(coins_conserved, r.write()).ok is True
    r.final["balances"]["bob"] += 5  # five coins out of nowhere
    v = verdict(coins_conserved, r.write())
    assert v.ok is False and "+5 coins" in v.evidence
    r.final = final_state()
    r.final["locked"]["plasma"] -= 5
    r.final["balances"]["dave"] += 5  # conserved in total, but the lock disagrees with the records
    assert verdict(coins_conserved, r.write()).ok is False


def test_channel_settlements_match(tmp_path):
    r = stale_close(RunDir(tmp_path), penalized=True)
    assert verdict(channel_settlements_match, r.write()).ok is True
    # an honest close: bob posts seq 5, alice shows seq 6 (a lost ack): L1 must pay seq 6
    r = opened(RunDir(tmp_path / "b"))
    r.log(20, "bob", ev.CHANNEL_CLOSING, channel_id=CID, kind="force", txid="aa" * 32, seq=5)
    r.log(21, "alice", ev.CHANNEL_CLOSING, "warning", channel_id=CID, kind="challenge",
          posted_seq=5, our_seq=6, attempt=False)
    for n in ("alice", "bob"):
        r.log(28, n, ev.CHANNEL_SETTLED, channel_id=CID, penalized=False, bal_a=150, bal_b=150)
    r.final = final_state(channel_rec(status="closed", paid=300, closer=1, seq=6, bal_a=150,
                                      bal_b=150, dispute_until=26))
    assert verdict(channel_settlements_match, r.write()).ok is True
    r.final["channels"][0]["seq"] = 5  # the challenge was lost: L1 paid the older state
    v = verdict(channel_settlements_match, r.write())
    assert v.ok is False and "logged seq 6" in v.evidence
    r.final["channels"][0].update(seq=6, bal_a=160, bal_b=140)  # L1 paid other balances
    assert verdict(channel_settlements_match, r.write()).ok is False
    r.final["channels"][0].update(bal_a=150, bal_b=150, paid=290)  # closed but 10 kept
    assert verdict(channel_settlements_match, r.write()).ok is False


def test_no_unpunished_revoked_state(tmp_path):
    good = stale_close(RunDir(tmp_path / "a"), True)
    assert verdict(no_unpunished_revoked_state, good.write()).ok is True
    v = verdict(no_unpunished_revoked_state, stale_close(RunDir(tmp_path / "b"), False).write())
    assert v.ok is False and "no penalty while alice/tower up" in v.evidence
    # one state behind is a lost ack, not a revoked state: no penalty due
    r = stale_close(RunDir(tmp_path / "c"), False, victim_seq=2)
    assert verdict(no_unpunished_revoked_state, r.write()).ok is True
    # the victim and its tower were both down through the dispute window: excused
    r = stale_close(RunDir(tmp_path / "d"), False)
    for n in ("alice", "tower"):
        r.lau(19.0, n, ev.PROCESS_KILLED, pid=1).lau(40.0, n, ev.PROCESS_STARTED, pid=2)
    v = verdict(no_unpunished_revoked_state, r.write())
    assert v.ok is True and "excused" in v.evidence
    # only alice down, but her tower up: the tower should have got the penalty
    r = stale_close(RunDir(tmp_path / "e"), False)
    r.lau(19.0, "alice", ev.PROCESS_KILLED, pid=1)
    assert verdict(no_unpunished_revoked_state, r.write()).ok is False
    # the closer's log is lost: the final state names it, the victim's log shows the close
    r = stale_close(RunDir(tmp_path / "f"), False)
    r.nodes["bob"] = [e for e in r.nodes["bob"] if e["event"] != ev.CHANNEL_CLOSING]
    v = verdict(no_unpunished_revoked_state, r.write())
    assert v.ok is False and "bob posted seq 1, alice showed seq 9" in v.evidence
    # the stale close never reached L1 before the run ended (the channel is still open on
    # chain), or reached it with its window still open: nothing was due yet
    for status, until in (("open", None), ("closing", 99)):
        r = stale_close(RunDir(tmp_path / f"g-{status}"), False)
        r.final["channels"][0].update(status=status, dispute_until=until, paid=0)
        v = verdict(no_unpunished_revoked_state, r.write())
        assert v.ok is True and "not decided when the run ended" in v.evidence


def test_plasma_exits_within_deposits(tmp_path):
    exits = [{"owner": KEYS["dave"], "amount": 100, "bond": 10, "started": 3, "exitable_at": 9,
              "status": "finalized", "challenger": None, "pos": POS_OK}]
    r = small_run(RunDir(tmp_path))
    r.final = final_state(exits=exits)
    r.final["plasma"]["op"]["chain"]["paid"] = 100
    r.final["locked"]["plasma"] = 200
    r.final["balances"]["dave"] += 100
    assert verdict(plasma_exits_within_deposits, r.write()).ok is True
    r.final["plasma"]["op"]["chain"]["paid"] = 400  # more out than ever went in
    v = verdict(plasma_exits_within_deposits, r.write())
    assert v.ok is False and "paid 400 > deposits 300" in v.evidence


def test_no_spent_output_finalized(tmp_path):
    spent = {"owner": KEYS["dave"], "amount": 50, "bond": 10, "started": 3, "exitable_at": 9,
             "status": "challenged", "challenger": KEYS["op"], "pos": POS_SPENT}
    r = small_run(RunDir(tmp_path))
    r.log(5.4, "dave", ev.FAULT_APPLIED, "warning", action="misbehave", behaviour="exit-spent")
    r.final = final_state(exits=[spent])
    v = verdict(no_spent_output_finalized, r.write())
    assert v.ok is True and "challenged" in v.evidence
    r.final["plasma"]["op"]["exits"][0]["status"] = "finalized"
    v = verdict(no_spent_output_finalized, r.write())
    assert v.ok is False and "FINALIZED" in v.evidence
    assert verdict(no_spent_output_finalized, opened(RunDir(tmp_path / "x")).write()).ok is None


def test_honest_nodes_got_their_funds(tmp_path):
    r = stale_close(RunDir(tmp_path), penalized=True)
    v = verdict(honest_nodes_got_their_funds, r.write())
    assert v.ok is True and "misbehaving: bob" in v.evidence
    r.nodes["bob"] = [e for e in r.nodes["bob"] if e["event"] != ev.FAULT_APPLIED]
    v = verdict(honest_nodes_got_their_funds, r.write())  # penalized, never misbehaved
    assert v.ok is False and "honest bob penalized" in v.evidence
    r = opened(RunDir(tmp_path / "x"))
    r.final = final_state(exits=[{"owner": KEYS["dave"], "amount": 100, "bond": 10, "started": 3,
                                  "exitable_at": 9, "status": "challenged",
                                  "challenger": KEYS["op"], "pos": POS_OK}])
    v = verdict(honest_nodes_got_their_funds, r.write())
    assert v.ok is False and "honest dave's exit" in v.evidence


def test_analyze_writes_metrics_and_verdicts(tmp_path):
    r = stale_close(small_run(RunDir(tmp_path / "run")), penalized=False)
    out = tmp_path / "out"
    result = analyze(r.write(), out)
    assert result["out_dir"] == out and result["ok"] is False
    assert set(json.loads((out / "metrics.json").read_text())) == set(METRIC_DOCS)
    verdicts = {v["name"]: v["ok"] for v in json.loads((out / "verdicts.json").read_text())}
    assert verdicts["no_unpunished_revoked_state"] is False
    assert verdicts["coins_conserved"] is True
    good = stale_close(small_run(RunDir(tmp_path / "good")), penalized=True)
    assert analyze(good.write())["ok"] is True
    assert (good.path / "report" / "metrics.json").exists()
