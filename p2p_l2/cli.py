"""The `p2p-l2` command line (SPEC §3)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import trio

from .errors import ConfigError, ControlError, P2PL2Error


def print_json(value) -> None:
    from .log import jsonable
    print(json.dumps(value, indent=2, default=jsonable))


def _console():
    from rich.console import Console
    return Console(stderr=True)


# -- up / down / status / ctl ------------------------------------------------------------
def _progress_bar(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    progress = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    tasks: dict[str, int] = {}
    labels = {"spawned": "starting processes", "listening": "nodes listening", "links": "links up",
              "channels": "channels open"}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(labels.get(stage, stage), total=total)
        progress.update(tasks[stage], completed=done, total=total)
    return progress, report


async def _status_rows(cluster) -> list[dict]:
    rows = []
    for name in cluster.names:
        row = {"name": name, "alive": cluster.alive(name)}
        if row["alive"]:
            try:
                row.update(await cluster[name].call("status", _timeout=5.0))
            except ControlError as exc:
                row["error"] = exc.code
        row.setdefault("peers", [])
        row.setdefault("height", None)
        row.setdefault("tip", None)
        rows.append(row)
    return rows


def _print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    for col in ("node", "alive", "roles", "height", "tip", "channels", "peers"):
        table.add_column(col)
    for r in rows:
        tip = (r.get("tip") or "")[:12]
        alive = "[green]yes[/]" if r["alive"] else "[red]no[/]"
        chans = (f"{r['channels']} ({r['channel_balance']} local)" if r.get("channels") is not None
                 else "-")
        table.add_row(r["name"], alive, ",".join(r.get("roles", [])),
                      str(r["height"]) if r.get("height") is not None else "-",
                      tip or "-", chans, f"{len(r['peers'])}: {' '.join(r['peers'])}")
    Console().print(table)


async def start_cluster(config, run_dir, timeout: float = 120.0):
    """Create and start a process cluster with a progress bar; stop it again on failure."""
    from .cluster.process import Cluster
    console = _console()
    cluster = Cluster.create(config, run_dir)
    console.print(f"run dir [bold]{cluster.run_dir}[/] ({len(cluster.names)} nodes, "
                  f"{len(cluster.config.links)} links)")
    progress, report = _progress_bar(console)
    try:
        with progress:
            seconds = await cluster.start(timeout=timeout, on_progress=report)
    except BaseException:
        with trio.CancelScope(shield=True):
            await cluster.down()
        raise
    return cluster, seconds


async def _up(args) -> int:
    cluster, seconds = await start_cluster(args.config, args.run_dir, args.timeout)
    _print_table(await _status_rows(cluster), f"{cluster.config.cluster.name}: up in {seconds:.2f}s")
    _console().print(f"stop it with: p2p-l2 down {cluster.run_dir}")
    return 0


async def _run(args) -> int:
    from .run import run
    return await run(args.config, args.run_dir, args.duration, args.timeout)


async def _status(args) -> int:
    from .cluster.process import Cluster
    cluster = Cluster.attach(args.run_dir)
    rows = await _status_rows(cluster)
    if args.json:
        print_json({"run_dir": str(cluster.run_dir), "nodes": rows})
    else:
        _print_table(rows, str(cluster.run_dir))
    return 0


async def _ctl(args) -> int:
    from .cluster.process import Cluster
    try:
        params = json.loads(args.params) if args.params else {}
    except ValueError as exc:
        raise P2PL2Error(f"--params is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise P2PL2Error("--params must be a JSON object")
    cluster = Cluster.attach(args.run_dir)
    try:
        result = await cluster[args.node].request(args.method, params)
    except KeyError as exc:
        raise P2PL2Error(exc.args[0]) from None
    except ControlError as exc:
        print_json(exc.to_wire())
        return 1
    print_json(result)
    return 0


def _fault_params(items: list[str]) -> dict:
    """`key=value` words: JSON values as such, `a,b` as a list, `a,b/c,d` as groups."""
    out: dict = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise P2PL2Error(f"expected key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
            if "/" in raw:
                value = [g.split(",") for g in raw.split("/")]
            elif "," in raw:
                value = raw.split(",")
        out[key] = value
    return out


async def _fault(args) -> int:
    from .cluster.process import Cluster
    from .config.schema import parse_fault
    from .faults.scenario import Scenario, Step
    cluster = Cluster.attach(args.run_dir)
    spec = parse_fault({"action": args.action, **_fault_params(args.params)}, cluster.config,
                       source="p2p-l2 fault")
    scenario = Scenario(cluster, duration=0)
    console = _console()
    async with trio.open_nursery() as nursery:
        step = Step(0.0, "fault", 0, spec)
        outcome = await scenario.apply(step, nursery)
        console.print(f"{step.describe()}: {outcome}")
        if outcome != "ok":
            return 1
        if spec.duration is not None:  # stay, then lift it (Ctrl-C lifts it early)
            try:
                await trio.sleep(spec.duration)
            finally:
                with trio.CancelScope(shield=True):
                    lift = Step(spec.duration, "lift", 0, spec)
                    console.print(f"{lift.describe()}: {await scenario.apply(lift, nursery)}")
    return 0


def _analyze(args) -> int:
    from .analysis import analyze, load, metrics
    from .analysis.report import summary_lines, write_compare
    from .cluster import rundir
    dirs = args.run_dirs or [rundir.newest_run_dir()]
    if len(dirs) == 1:
        res = analyze(dirs[0], args.out)
        for line in summary_lines(res["metrics"], res["verdicts"]):
            print(line)
        print(f"report: {res['out_dir'] / 'report.html'}")
        return 0 if res["ok"] else 1
    runs = [(d.name, metrics(load(d))) for d in dirs]
    path = write_compare(runs, args.out or dirs[-1] / "report")
    print(path.read_text())
    print(f"comparison: {path}")
    return 0


async def _down(args) -> int:
    from .cluster.process import Cluster
    cluster = Cluster.attach(args.run_dir)
    await cluster.down()
    _console().print(f"stopped {cluster.run_dir}")
    return 0


async def _demo(args) -> int:
    from .demo import run
    return await run(args.run_dir)


def _node(args) -> int:
    from .node.process import main
    return main(args.run_dir, args.name)


def _bench(args) -> int:
    from .bench import run_bench
    return run_bench(args.name, as_json=args.json,
                     **({"nodes": args.nodes} if args.nodes else {}))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="p2p-l2", description="Emulate layer-2 blockchain protocols "
                                "on real processes and sockets.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start a cluster and return once every link is up")
    up.add_argument("config", type=Path)
    up.add_argument("--run-dir", type=Path)
    up.add_argument("--timeout", type=float, default=120.0)
    up.set_defaults(run=_up)

    run = sub.add_parser("run", help="up, play the workloads and faults, down")
    run.add_argument("config", type=Path)
    run.add_argument("--run-dir", type=Path)
    run.add_argument("--duration", type=float, help="seconds after readiness (default: when "
                     "the last workload or fault ends)")
    run.add_argument("--timeout", type=float, default=120.0)
    run.set_defaults(run=_run)

    st = sub.add_parser("status", help="per-node status of a running cluster")
    st.add_argument("run_dir", nargs="?", type=Path)
    st.add_argument("--json", action="store_true")
    st.set_defaults(run=_status)

    ctl = sub.add_parser("ctl", help="call one control method and print its JSON result")
    ctl.add_argument("run_dir", type=Path)
    ctl.add_argument("node")
    ctl.add_argument("method")
    ctl.add_argument("--params", help="JSON object of parameters")
    ctl.set_defaults(run=_ctl)

    fault = sub.add_parser("fault", help="apply a fault to a running cluster (SPEC §5)",
                           description="Apply one fault to a running cluster, checked like a "
                           "[[fault]] entry. Parameters are key=value words: JSON values, "
                           "a,b for a list, a,b/c,d for partition groups. With duration=S "
                           "the command waits S seconds, then lifts the fault.",
                           epilog="examples: p2p-l2 fault RUN partition groups=alice,bob/carol "
                           "duration=10 | p2p-l2 fault RUN link between=alice,bob latency_ms=50 "
                           "loss=0.1 | p2p-l2 fault RUN kill node=carol restart_after=5 | "
                           "p2p-l2 fault RUN heal")
    fault.add_argument("run_dir", type=Path)
    fault.add_argument("action", help="partition, heal, link, kill, pause, restart, "
                       "clock-skew, misbehave")
    fault.add_argument("params", nargs="*", metavar="key=value")
    fault.set_defaults(run=_fault)

    analyze = sub.add_parser("analyze", help="metrics, invariant verdicts, plots and an HTML "
                             "report of a finished run; two runs: side by side",
                             description="Writes RUN/report/{metrics.json, verdicts.json, "
                             "report.md, report.html, *.png} and prints a summary; exits 1 when "
                             "an invariant fails. With two or more run dirs, prints their "
                             "metrics side by side (compare.md).")
    analyze.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR")
    analyze.add_argument("--out", type=Path, help="output directory (default RUN/report)")
    analyze.set_defaults(sync=_analyze)

    down = sub.add_parser("down", help="stop every node of a run")
    down.add_argument("run_dir", nargs="?", type=Path)
    down.set_defaults(run=_down)

    demo = sub.add_parser("demo", help="run the built-in demo config and report what happened")
    demo.add_argument("--run-dir", type=Path)
    demo.set_defaults(run=_demo)

    node = sub.add_parser("node", help="run one node (what the launcher spawns)")
    node.add_argument("--run-dir", required=True)
    node.add_argument("--name", required=True)
    node.set_defaults(sync=_node)

    bench = sub.add_parser("bench", help="benchmarks with same-run reference ratios")
    bench.add_argument("name", choices=["cluster", "gossip", "l1", "channel", "multihop",
                                        "plasma"])
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--nodes", type=int)
    bench.set_defaults(sync=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "sync"):
            return args.sync(args)
        return trio.run(args.run, args)
    except ConfigError as exc:
        print(f"p2p-l2: config error: {exc}", file=sys.stderr)
        return 2
    except P2PL2Error as exc:
        print(f"p2p-l2: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("p2p-l2: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
