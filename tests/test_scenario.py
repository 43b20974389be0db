"""Workloads and the experiment timeline (`Scenario`, `p2p-l2 run`)."""

import json
import subprocess
import sys

from p2p_l2 import events as ev
from p2p_l2.config import make_config
from p2p_l2.faults.scenario import Scenario, natural_length, timeline

TIMED = """
[chain]
block_interval = 1.0
max_block_txs = 50
[accounts]
n1 = 1000000
n2 = 1000000
[[workload]]
kind = "l1-transfers"
rate = 10.0
amount = [1, 10]
start = 1.0
duration = 20.0
from = ["n1", "n2"]
to = ["n3"]
[[fault]]
at = 5.0
action = "partition"
groups = [["n0", "n1"], ["n2", "n3"]]
duration = 8.0
[[fault]]
at = 6.0
action = "clock-skew"
node = "n3"
offset_s = 2.0
"""


def config(extra=TIMED, n=4):
    return make_config(n, "ring", name="scn", roles={"n0": ["miner"]}, extra=extra)


def test_timeline_orders_steps_and_lifts():
    steps = timeline(config())
    assert [(s.at, s.what) for s in steps] == [(1.0, "workload"), (5.0, "fault"), (6.0, "fault"),
                                               (13.0, "lift")]
    assert natural_length(config()) == 21.0


async def test_scenario_plays_workloads_and_faults(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(config())
    scenario = Scenario(cluster)
    outcomes = []
    await scenario.run(lambda step, outcome: outcomes.append((step.what, outcome)))
    assert outcomes == [("workload", "ok"), ("fault", "ok"), ("fault", "ok"), ("lift", "ok")]
    skewed = await cluster.wait_for_event("n3", ev.FAULT_APPLIED, action="clock-skew")
    assert skewed["offset_s"] == 2.0
    n1, n3 = cluster.nodes["n1"], cluster.nodes["n3"]
    assert abs(n3.wall() - n1.wall() - 2.0) < 1e-6  # its timestamps and block times follow
    applied = await cluster.wait_for_event("n1", ev.FAULT_APPLIED)
    assert applied["peer"] == "n2" and applied["params"]["blackhole"]
    started = next(e for e in cluster.events("n1") if e["event"] == ev.WORKLOAD_STARTED)
    assert abs((applied["ts"] - started["ts"]) - (5.0 - 1.0)) <= 0.5  # on schedule
    assert abs((skewed["ts"] - 2.0 - started["ts"]) - (6.0 - 1.0)) <= 0.5  # (n3's clock is +2)
    await cluster.wait_for_event("n1", ev.FAULT_CLEARED, peer="n2")
    counts = await cluster.workload_counts()
    sent = sum(counts["w0 l1-transfers"].values())
    assert 150 <= sent <= 250  # 10/s for 20 s, Poisson
    # n2 is cut off from the miner for 8 s: its queue fills (64 pending nonces) and the
    # overflow is refused with a reason, nothing else fails
    assert counts["w0 l1-transfers"].get("ok", 0) >= 0.8 * sent
    assert set(counts["w0 l1-transfers"]) <= {"ok", "nonce_gap_too_large"}
    stopped = await cluster.wait_for_event("n1", ev.WORKLOAD_STOPPED)
    assert stopped["workload"] == "w0"
    # the transfers reached the chain once the partition healed
    await cluster.wait_for(lambda: cluster.nodes["n3"].chain.tree.state.balance(
        cluster.nodes["n3"].identity.pubkey) > 0, timeout=60)


async def test_workload_control_errors(autojump_clock, memory_cluster_factory):
    import pytest

    from p2p_l2.errors import ControlError
    cluster = await memory_cluster_factory(config(extra="[accounts]\nn1 = 100\n"))
    for params, code in [({"kind": "nope", "rate": 1, "amount": [1, 2], "to": ["n2"]}, "unknown_workload"),
                         ({"kind": "l1-transfers", "rate": 0, "amount": [1, 2], "to": ["n2"]}, "bad_params"),
                         ({"kind": "l1-transfers", "rate": 1, "amount": [3, 2], "to": ["n2"]}, "bad_params"),
                         ({"kind": "l1-transfers", "rate": 1, "amount": [1, 2], "to": ["zz"]}, "bad_params")]:
        with pytest.raises(ControlError) as err:
            await cluster["n1"].call("workload.start", **params)
        assert err.value.code == code
    # a workload that overspends counts its failures by code and keeps going
    await cluster["n1"].call("workload.start", kind="l1-transfers", rate=5.0, amount=[60, 60],
                             to=["n2"], duration=4.0, id="poor")
    stopped = await cluster.wait_for_event("n1", ev.WORKLOAD_STOPPED, workload="poor")
    assert stopped["counts"].get("insufficient_funds", 0) >= 1 and stopped["counts"].get("ok") == 1


def test_cli_run_plays_a_short_config(tmp_path):
    cfg = tmp_path / "short.toml"
    cfg.write_text(_short_toml())
    res = subprocess.run([sys.executable, "-m", "p2p_l2", "run", str(cfg), "--run-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "w0 l1-transfers" in res.stdout and "ok=" in res.stdout
    timeline_file = json.loads((tmp_path / "run" / "timeline.json").read_text())
    assert timeline_file["seed"] == 1 and timeline_file["steps"][0]["what"] == "workload"


def _short_toml() -> str:
    return """
[cluster]
name = "short"
seed = 1
[topology]
generate = { kind = "ring" }
[[node]]
name = "n0"
roles = ["miner"]
[[node]]
name = "n1"
[[node]]
name = "n2"
[chain]
block_interval = 0.5
[accounts]
n1 = 100000
[[workload]]
kind = "l1-transfers"
rate = 20.0
amount = [1, 5]
start = 0.5
duration = 3.0
from = ["n1"]
to = ["n2"]
[[fault]]
at = 1.0
action = "kill"
node = "n2"
restart_after = 1.0
"""
