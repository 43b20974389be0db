"""`p2p-l2 bench NAME`: benchmarks reported as same-run ratios to the machine's limits (SPEC §7)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable

BENCHES: dict[str, str] = {
    "cluster": "p2p_l2.bench.cluster",
    "gossip": "p2p_l2.bench.gossip",
    "l1": "p2p_l2.bench.l1",
    "channel": "p2p_l2.bench.channel",
    "multihop": "p2p_l2.bench.channel",
    "plasma": "p2p_l2.bench.plasma",
}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine()}


def result(name: str, value: float, unit: str, reference: dict, extra: dict,
           ratio: float | None = None) -> dict:
    """One benchmark's JSON object; `ratio` defaults to value / reference value."""
    if ratio is None:
        ratio = value / reference["value"] if reference["value"] else None
    return {"name": name, "value": value, "unit": unit, "ratio": ratio, "reference": reference,
            "extra": extra, "machine": machine()}


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"bench {res['name']}", show_header=False)
    ref = res["reference"]
    table.add_row("[bold]headline[/]", f"[bold]{res['value']:.4g} {res['unit']}[/]")
    table.add_row("reference", f"{ref['value']:.4g} {ref['unit']} ({ref['name']})")
    table.add_row("ratio", f"{res['ratio']:.3g}" if res["ratio"] is not None else "-")
    for key, value in res["extra"].items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def run_bench(name: str, as_json: bool = False, **options) -> int:
    import importlib

    import trio

    module = importlib.import_module(BENCHES[name])
    run: Callable = module.run
    if BENCHES[name].endswith(".channel"):
        options["name"] = name
    res = trio.run(lambda: run(**options))
    if as_json:
        print(json.dumps(res))
    else:
        print_table(res)
    return 0
