"""`p2p-l2 run CONFIG`: start the cluster, play its timeline with a live display, stop it,
and summarise what the workloads did."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from . import events as ev
from .faults.scenario import Scenario, Step
from .log import read_events


# What the end-of-run summary counts, from every node's log.
SUMMARY = [
    (ev.BLOCK_MINED, "L1 blocks mined"), (ev.CHAIN_REORG, "L1 reorgs (node-events)"),
    (ev.TX_ACCEPTED, "L1 tx admissions (all nodes)"), (ev.CHANNEL_OPENED, "channel ends opened"),
    (ev.PAYMENT_SUCCEEDED, "payments succeeded"), (ev.PAYMENT_FAILED, "payments failed"),
    (ev.CHANNEL_CLOSING, "channel close steps"), (ev.CHANNEL_PENALIZED, "stale closes punished"),
    (ev.CHANNEL_SETTLED, "channel settlements seen"), (ev.PEER_BANNED, "peers banned"),
    (ev.PLASMA_BLOCK_COMMITTED, "plasma blocks committed"),
    (ev.PLASMA_TX_REJECTED, "plasma txs refused"), (ev.WATCHER_ALERT, "plasma watcher alerts"),
    (ev.PLASMA_EXIT_STARTED, "plasma exits started"),
    (ev.PLASMA_EXIT_CHALLENGED, "plasma exits challenged"),
    (ev.PLASMA_EXIT_FINALIZED, "plasma exits paid out"),
    (ev.MSG_REJECTED, "messages rejected"), (ev.FAULT_APPLIED, "faults applied (node-events)"),
]


def summarize(run_dir: Path) -> list[tuple[str, int]]:
    """Counts of the notable events of a finished run (what `analyze` will go far beyond)."""
    counts: dict[str, int] = {}
    for log in sorted(Path(run_dir).glob("nodes/*/events.jsonl")):
        events, _ = read_events(log)
        for e in events:
            counts[e["event"]] = counts.get(e["event"], 0) + 1
    return [(label, counts.get(name, 0)) for name, label in SUMMARY if counts.get(name)]


async def run(config_path: Path, run_dir: Path | None, duration: float | None,
              timeout: float = 120.0) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.markup import escape
    from rich.table import Table

    from .cli import _console, start_cluster

    console = Console()
    cluster, seconds = await start_cluster(config_path, run_dir, timeout)
    scenario = Scenario(cluster, duration=duration)
    (cluster.run_dir / "timeline.json").write_text(json.dumps(
        {"seed": cluster.config.cluster.seed, "duration": scenario.duration,
         "steps": [{"at": s.at, "what": s.what, "step": s.describe(),
                    **s.resolved(cluster.config)} for s in scenario.steps]},
        indent=1))
    log: list[str] = []

    def on_step(step: Step, outcome: str) -> None:
        line = escape(f"t={step.at:6.1f}s  {step.describe()}"
                      + ("" if outcome == "ok" else f"  [{outcome}]"))
        log.append(line)
        if outcome != "ok":
            _console().print(f"[yellow]{line}[/]")

    async def panel() -> Table:
        table = Table(show_header=False, title=f"{cluster.config.cluster.name} — {cluster.run_dir.name}")
        elapsed = trio.current_time() - t0
        table.add_row("elapsed", f"{elapsed:5.1f} / {scenario.duration:.1f} s")
        pending = [s for s in scenario.steps if s.at > elapsed]
        table.add_row("next", f"t={pending[0].at:.1f}s {pending[0].describe()}" if pending else "-")
        tips = {}
        for name in cluster.names:
            if cluster.alive(name):
                try:
                    tips[name] = (await cluster[name].call("chain.tip", _timeout=1.0))["height"]
                except Exception:  # noqa: BLE001 - a paused node does not answer; show what we have
                    continue
        if tips:
            table.add_row("L1 height", f"{min(tips.values())}..{max(tips.values())} on {len(tips)} nodes")
        for key, counts in (await _counts(cluster)).items():
            table.add_row(key, " ".join(f"{c}={n}" for c, n in sorted(counts.items())))
        for line in log[-5:]:
            table.add_row("", line)
        return table

    t0 = trio.current_time()
    counts: dict = {}
    try:
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            async with trio.open_nursery() as nursery:
                async def refresh():
                    while True:
                        live.update(await panel())
                        await trio.sleep(0.5)
                nursery.start_soon(refresh)
                await scenario.run(on_step)
                nursery.cancel_scope.cancel()
        counts = await _counts(cluster)
    finally:
        with trio.CancelScope(shield=True):
            await cluster.down()
    summary = Table(title=f"run {cluster.run_dir} ({scenario.duration:.0f} s)")
    summary.add_column("workload")
    summary.add_column("outcomes")
    for key, c in counts.items():
        summary.add_row(key, " ".join(f"{code}={n}" for code, n in sorted(c.items())))
    console.print(summary)
    for line in log:
        console.print(line)
    happened = Table(title="what happened (from the nodes' logs)")
    happened.add_column("events")
    happened.add_column("count", justify="right")
    for label, n in summarize(cluster.run_dir):
        happened.add_row(label, str(n))
    console.print(happened)
    console.print(f"logs: {cluster.run_dir}/nodes/*/events.jsonl")
    from .analysis import analyze
    from .analysis.report import summary_lines
    res = analyze(cluster.run_dir)
    for line in summary_lines(res["metrics"], res["verdicts"]):
        print(line)  # plain: long lines stay whole for grep and CI logs
    print(f"report: {res['out_dir'] / 'report.html'}")
    return 0 if res["ok"] else 1


async def _counts(cluster) -> dict:
    try:
        return await cluster.workload_counts()
    except Exception:  # noqa: BLE001 - the display must not end the run
        return {}
