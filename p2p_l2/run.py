"""`p2p-l2 run CONFIG`: start the cluster, play its timeline with a live display, stop it,
and summarise what the workloads did."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from .faults.scenario import Scenario, Step


async def run(config_path: Path, run_dir: Path | None, duration: float | None,
              timeout: float = 120.0) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from .cli import _console, start_cluster

    console = Console()
    cluster, seconds = await start_cluster(config_path, run_dir, timeout)
    scenario = Scenario(cluster, duration=duration)
    (cluster.run_dir / "timeline.json").write_text(json.dumps(
        {"seed": cluster.config.cluster.seed, "duration": scenario.duration,
         "steps": [{"at": s.at, "what": s.what, "step": s.describe()} for s in scenario.steps]},
        indent=1))
    log: list[str] = []

    def on_step(step: Step, outcome: str) -> None:
        line = f"t={step.at:6.1f}s  {step.describe()}" + ("" if outcome == "ok" else f"  [{outcome}]")
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
    return 0


async def _counts(cluster) -> dict:
    try:
        return await cluster.workload_counts()
    except Exception:  # noqa: BLE001 - the display must not end the run
        return {}
