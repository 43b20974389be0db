"""`p2p-l2 demo`: run the built-in demo config and show what happened.

What exists so far is the cluster backbone, so the demo starts `configs/demo.toml` as real
processes, floods gossip from every node, and reports delivery and propagation delay from
the nodes' logs.  Later layers (chain, channels, plasma, faults, analysis) extend it.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import events as ev
from .cluster.process import Cluster
from .config import builtin_config, load_config
from .log import read_events


def propagation(run_dir: Path, names: list[str], topic: str) -> tuple[int, list[float]]:
    """(messages published on `topic`, delivery delays in seconds) from the run's logs."""
    published, delays = 0, []
    for name in names:
        events, _ = read_events(run_dir / "nodes" / name / "events.jsonl")
        for e in events:
            if e.get("topic") != topic:
                continue
            if e["event"] == ev.GOSSIP_PUBLISHED:
                published += 1
            elif e["event"] == ev.GOSSIP_DELIVERED:
                delays.append(e["ts"] - e["sent_at"])
    return published, sorted(delays)


async def run(run_dir: Path | None = None, messages: int = 50) -> int:
    from rich.console import Console
    from rich.table import Table

    from .cli import _progress_bar

    console = Console()
    config = load_config(builtin_config("demo"))
    progress, report = _progress_bar(Console(stderr=True))
    t0 = time.monotonic()
    with progress:
        cluster = Cluster.create(config, run_dir)
        try:
            await cluster.start(on_progress=report)
        except BaseException:
            await cluster.down()
            raise
    try:
        console.print(f"[bold]{config.cluster.name}[/]: {len(cluster.names)} node processes, "
                      f"{len(config.links)} authenticated links, up in {time.monotonic() - t0:.2f}s")
        for name in cluster.names:
            await cluster[name].call("gossip.publish_many", topic="demo", count=messages, size=200,
                                     rate=100.0)
        expected = messages * len(cluster.names) * (len(cluster.names) - 1)

        async def delivered():
            total = 0
            for name in cluster.names:
                total += (await cluster[name].call("gossip.stats"))["delivered"]
            return total >= expected
        await cluster.wait_for(delivered, timeout=60, what="every gossip message everywhere")
    finally:
        await cluster.down()
    published, delays = propagation(cluster.run_dir, cluster.names, "demo")
    table = Table(title="gossip propagation (from the nodes' logs)")
    for col in ("published", "deliveries", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(col, justify="right")
    q = lambda f: f"{1000 * delays[min(len(delays) - 1, int(f * len(delays)))]:.2f}"  # noqa: E731
    table.add_row(str(published), str(len(delays)), q(0.5), q(0.9), q(0.99))
    console.print(table)
    console.print(f"logs: {cluster.run_dir}/nodes/*/events.jsonl")
    return 0
