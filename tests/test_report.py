"""Plots, the HTML/Markdown report, the CLI summary and run comparison, on a small synthetic
run dir shaped like a real one (field names as the nodes log them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from p2p_l2 import events as ev
from p2p_l2.analysis import plots, report

T0 = 1_795_000_000.0
NODES = ("miner", "alice", "bob", "carol", "op")
TOPOLOGY = """[cluster]
name = "synth"
seed = 7

[[node]]
name = "miner"
roles = ["miner"]

[[node]]
name = "alice"
roles = ["channels"]
"""


@dataclass
class Window:
    start: float
    end: float | None
    label: str


@dataclass
class Verdict:
    name: str
    ok: bool | None
    evidence: str


@dataclass
class FakeRun:
    """The fields of `analysis.load.Run` the plots and the report read."""
    events: pl.DataFrame
    launcher: pl.DataFrame
    run_dir: Path
    t0: float
    fault_windows: list[Window] = field(default_factory=list)
    timeline: dict | None = None
    final: dict | None = None
    config: object = None


def _line(node: str, t: float, event: str, level: str = "info", **fields) -> dict:
    return {"ts": T0 + t, "node": node, "event": event, "level": level, **fields}


def write_run_dir(root: Path, *, payments: bool = True, faults: bool = True) -> Path:
    """A 30-second run: a block a second seen by every node, payments from alice, plasma
    blocks from op, a link fault on alice, carol killed at 12 s and back at 15 s, and bob
    closing a stale channel state that carol's side penalises."""
    logs: dict[str, list[dict]] = {n: [] for n in NODES}
    for n in NODES:
        logs[n].append(_line(n, 0.1, ev.NODE_STARTED, pubkey="00" * 32, roles=[], pid=1))
    for h in range(1, 30):
        block, t = f"{h:064x}", h + 0.3
        logs["miner"].append(_line("miner", t, ev.BLOCK_MINED, block=block, height=h, txs=h % 5,
                                   prev=f"{h - 1:064x}"))
        for i, n in enumerate(NODES):
            if n == "carol" and 12 <= t < 15:
                continue
            logs[n].append(_line(n, t + 0.002 * i, ev.BLOCK_ACCEPTED, block=block, height=h,
                                 miner="miner", txs=h % 5, peer=None if n == "miner" else "miner",
                                 time=T0 + t))
            logs[n].append(_line(n, t + 0.002 * i, ev.GOSSIP_DELIVERED, msg_id=f"{h:032x}",
                                 topic="block", hops=1, origin="miner", peer="miner"))
    if payments:
        for k in range(100):
            t, ph = 2 + k * 0.25, f"{k:064x}"
            logs["alice"].append(_line("alice", t, ev.PAYMENT_SENT, payment_hash=ph, amount=500,
                                       payee="carol"))
            if k % 10 == 9:
                logs["alice"].append(_line("alice", t + 0.05, ev.PAYMENT_FAILED, "warning",
                                           payment_hash=ph, reason="no_route", latency=0.05))
            else:
                lat = 0.02 + 0.001 * (k % 7) + (0.3 if 8 <= t < 14 else 0)
                logs["alice"].append(_line("alice", t + lat, ev.PAYMENT_SUCCEEDED,
                                           payment_hash=ph, latency=lat, fee=1, hops=2,
                                           amount=500))
    for k in range(50):
        logs["op"].append(_line("op", 1 + k * 0.5, ev.PLASMA_BLOCK_MADE, number=1000 * (k + 1),
                                txs=k % 4, invalid=0))
    logs["alice"].append(_line("alice", 8.0, ev.FAULT_APPLIED, action="link", peer="bob",
                               params={"latency_ms": 200.0}))
    logs["alice"].append(_line("alice", 14.0, ev.FAULT_CLEARED, action="link", peer="bob"))
    logs["bob"].append(_line("bob", 20.0, ev.FAULT_APPLIED, "warning", action="misbehave",
                             behaviour="close-stale"))
    cid = "ab" * 32
    logs["bob"].append(_line("bob", 20.1, ev.CHANNEL_CLOSING, channel_id=cid, kind="force", seq=0))
    logs["carol"].append(_line("carol", 21.0, ev.CHANNEL_CLOSING, "warning", channel_id=cid,
                               kind="challenge", posted_seq=0, our_seq=40, attempt=False))
    logs["carol"].append(_line("carol", 25.0, ev.CHANNEL_PENALIZED, channel_id=cid))
    for n in NODES:
        logs[n].sort(key=lambda d: d["ts"])
        d = root / "nodes" / n
        d.mkdir(parents=True)
        (d / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in logs[n]))
    launcher = [_line(n, 0.0, ev.PROCESS_STARTED, pid=10 + i) for i, n in enumerate(NODES)]
    launcher += [_line("launcher", 0.5, ev.LAUNCHER_UP, nodes=len(NODES), seconds=0.5),
                 _line("carol", 12.0, ev.PROCESS_KILLED, pid=13),
                 _line("carol", 12.01, ev.PROCESS_EXITED, pid=13, returncode=None),
                 _line("carol", 15.0, ev.PROCESS_STARTED, pid=20),
                 _line("launcher", 30.0, ev.LAUNCHER_DOWN, nodes=len(NODES))]
    (root / "launcher.jsonl").write_text("".join(json.dumps(x) + "\n" for x in launcher))
    (root / "topology.toml").write_text(TOPOLOGY)
    steps = [{"at": 7.5, "what": "fault", "step": "fault link between=('alice', 'bob')"},
             {"at": 13.5, "what": "lift", "step": "lift link between=('alice', 'bob')"},
             {"at": 11.5, "what": "fault", "step": "fault kill node=carol restart_after=3.0"},
             {"at": 19.5, "what": "fault", "step": "fault misbehave node=bob"}] if faults else []
    (root / "timeline.json").write_text(json.dumps({"seed": 7, "duration": 30.0, "steps": steps}))
    return root


def fake_load(run_dir: Path, faults: bool = True) -> FakeRun:
    """Stands in for `analysis.load` so these tests check plots and report on their own."""
    events = pl.concat([pl.read_ndjson(p, infer_schema_length=None)
                        for p in sorted(run_dir.glob("nodes/*/events.jsonl"))],
                       how="diagonal_relaxed")
    launcher = pl.read_ndjson(run_dir / "launcher.jsonl", infer_schema_length=None)
    t = (pl.col("ts") - T0).alias("t")
    windows = [Window(8.0, 14.0, "link between=('alice', 'bob')"),
               Window(12.0, 15.0, "kill node=carol restart_after=3.0"),
               Window(20.0, None, "misbehave node=bob")] if faults else []
    return FakeRun(events.with_columns(t), launcher.with_columns(t), run_dir, T0, windows,
                   json.loads((run_dir / "timeline.json").read_text()))


METRICS = {
    "l1.tx_per_s": 2.0, "l1.block_interval_s": {"mean": 1.0, "p50": 1.0},
    "l1.propagation_s": {"p50": 0.004, "p90": 0.008, "p99": 0.01},
    "l2.payments_per_s": 3.6, "l2.success_rate": 0.9,
    "l2.latency_s": {"p50": 0.023, "p90": 0.32, "p99": 0.326},
    "l2.failure_reasons": {"no_route": 10},
    "plasma.tx_per_s": 3.0, "plasma.exits": {"started": 1, "challenged": 1, "finalized": 0},
    "l2_l1_ratio": 1.8,
}
DOCS = {"l1.tx_per_s": "L1 transactions mined per second",
        "l2.latency_s": "payment latency at the payer, seconds"}
VERDICTS = [Verdict("coins_conserved", True, "6100000 = 5550000 + 550000 locked"),
            Verdict("no_spent_exit_finalized", False, "exit 1000:0:0 finalised after its spend"),
            Verdict("honest_funds", None, "no final state")]


@pytest.fixture
def run(tmp_path: Path) -> FakeRun:
    return fake_load(write_run_dir(tmp_path / "run"))


def _fault_spans(fig) -> list:
    return [p for ax in fig.axes for p in ax.patches if p.get_gid() == plots.FAULT_GID]


def test_make_plots_writes_each_plot_as_png(run: FakeRun, tmp_path: Path):
    paths = plots.make_plots(run, tmp_path / "out")
    assert [p.stem for p in paths] == ["throughput", "latency", "propagation", "timeline"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", list(plots.PLOTS))
def test_every_time_plot_shades_and_labels_every_fault_window(run: FakeRun, name: str):
    plt = plots._pyplot()
    fig = plots.PLOTS[name](run)
    try:
        spans = _fault_spans(fig)
        assert len(spans) >= len(run.fault_windows)
        # the open window (misbehave from 20 s) runs to the end of the run
        right_edges = {round(max(p.get_x() + p.get_width() for p in spans), 1)}
        assert right_edges == {round(plots.run_end(run), 1)}
        labels = {t.get_text().strip() for ax in fig.axes for t in ax.texts}
        for i in range(len(run.fault_windows)):
            assert any(lab.startswith(f"F{i + 1} ") for lab in labels)
    finally:
        plt.close(fig)


def test_no_fault_windows_no_spans_and_absent_data_skips_a_plot(tmp_path: Path):
    run = fake_load(write_run_dir(tmp_path / "run", payments=False, faults=False), faults=False)
    paths = plots.make_plots(run, tmp_path / "out")
    assert [p.stem for p in paths] == ["throughput", "propagation", "timeline"]
    fig = plots.timeline_figure(run)
    assert _fault_spans(fig) == []
    plots._pyplot().close(fig)


def test_plot_data(run: FakeRun):
    d = plots.propagation_delays(run)
    assert "miner" not in d["node"].to_list()
    assert d["delay"].min() == pytest.approx(0.002, abs=1e-6)
    assert plots.down_spans(run, 30.0) == [("carol", 12.0, 15.0, "down")]
    x, rate = plots.rate_series(run, ev.PAYMENT_SUCCEEDED, width=1.0)
    assert rate.sum() == 90 and x[1] - x[0] == 1.0
    assert plots.bin_width(30) == 1 and plots.bin_width(3600) == 15
    xs, ys = plots.cdf(list(range(10_000)))
    assert len(xs) == plots.CDF_POINTS and ys[-1] == 1.0


def test_report_is_self_contained_and_complete(run: FakeRun, tmp_path: Path):
    out = report.write_report(run, METRICS, VERDICTS, tmp_path / "report", docs=DOCS)
    page = out["html"].read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "src=\"http" not in page and "src='http" not in page and "<script" not in page
    assert "<link" not in page  # no stylesheet to fetch either
    assert "L1 transactions mined per second" in page
    assert "payment latency at the payer, seconds (p99)" in page  # parent's doc for a sub-key
    assert "name = &quot;synth&quot;" in page  # the config, escaped in a <pre>
    assert "F3" in page and "end of run" in page  # the fault table
    md = out["md"].read_text()
    assert "![timeline](timeline.png)" in md and "`l2.latency_s.p50`" in md
    assert all(p.exists() for p in out["plots"])


def test_verdicts_render_pass_fail_and_na(run: FakeRun, tmp_path: Path):
    out = report.write_report(run, METRICS, VERDICTS, tmp_path / "report", docs=DOCS,
                              plots=[])
    page = out["html"].read_text()
    assert ("<tr class='fail'><td><code>no_spent_exit_finalized</code></td>"
            "<td class=v>FAIL</td>") in page
    assert "<tr class='pass'><td><code>coins_conserved</code>" in page
    assert "<tr class='na'><td><code>honest_funds</code></td><td class=v>n/a</td>" in page
    assert "1 invariant(s) FAILED (1 pass, 1 fail, 1 n/a)" in page
    assert "| `no_spent_exit_finalized` | **FAIL** |" in out["md"].read_text()
    ok = report.write_report(run, METRICS, VERDICTS[:1], tmp_path / "ok", docs=DOCS, plots=[])
    assert "every checked invariant holds" in ok["html"].read_text()


def test_summary_lines():
    lines = report.summary_lines(METRICS, VERDICTS)
    text = "\n".join(lines)
    assert "2 tx/s" in text and "propagation p50/p90/p99 4/8/10 ms" in text
    assert "90.0% succeeded" in text and "top failure no_route (10)" in text
    assert "exits started/challenged/finalized 1/1/0" in text
    assert lines[-3:] == [
        "PASS    coins_conserved: 6100000 = 5550000 + 550000 locked",
        "FAIL    no_spent_exit_finalized: exit 1000:0:0 finalised after its spend",
        "n/a     honest_funds: no final state"]
    assert report.summary_lines({}, []) == []


def test_compare_two_runs_has_a_delta_column(tmp_path: Path):
    faulty = dict(METRICS, **{"l2.success_rate": 0.6,
                              "l2.failure_reasons": {"no_route": 10, "timeout": 4}})
    table = report.compare([("calm", METRICS), ("faulty", faulty)])
    header, rule, *rows = table.splitlines()
    assert header == "| metric | calm | faulty | Δ (faulty − calm) |"
    assert "| `l2.success_rate` | 0.9 | 0.6 | -0.3 (-33%) |" in rows
    assert "| `l2.latency_s.p50` | 0.023 | 0.023 | 0 |" in rows
    assert "| `l2.failure_reasons.timeout` | n/a | 4 |  |" in rows
    three = report.compare([("a", METRICS), ("b", METRICS), ("c", faulty)])
    assert "Δ" not in three.splitlines()[0]
    path = report.write_compare([("calm", METRICS), ("faulty", faulty)], tmp_path)
    assert "Δ (faulty − calm)" in path.read_text()


def test_flatten_and_docs():
    assert report.flatten({"a": {"b": {"c": 1}, "d": {}}, "e": [1]}) == {"a.b.c": 1, "a.d": {},
                                                                        "e": [1]}
    assert report.metric_doc("l2.latency_s.p50", DOCS) == DOCS["l2.latency_s"] + " (p50)"
    assert report.metric_doc("nope", DOCS) == ""
    assert report.format_value(None) == "n/a" and report.format_value(0.123456) == "0.1235"


def test_analyze_a_synthetic_run_dir_end_to_end(tmp_path: Path):
    """Through the real loader, metrics and invariants: the report gets every plot, the
    loader's fault windows and the documented metrics."""
    from p2p_l2.analysis import METRIC_DOCS, analyze, load

    run_dir = write_run_dir(tmp_path / "run")
    run = load(run_dir)
    assert [w.label for w in run.fault_windows][:2] == ["link alice\u2192bob", "kill carol"]
    result = analyze(run_dir)
    out = result["out_dir"]
    assert sorted(p.name for p in out.glob("*.png")) == [
        "latency.png", "propagation.png", "throughput.png", "timeline.png"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "kill carol" in page and METRIC_DOCS["l2.latency_s"] in page
    lines = report.summary_lines(result["metrics"], result["verdicts"])
    assert any(line.startswith("L2 ") and "90.0% succeeded" in line for line in lines)
