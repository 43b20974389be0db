"""The node process: `p2p-l2 node --run-dir DIR --name NAME`, what the launcher spawns."""

from __future__ import annotations

import os
import signal
import traceback
from pathlib import Path

import trio

from .. import events as ev
from ..cluster import rundir
from ..log import EventLog
from ..net.transport import TcpTransport
from .node import Node


def build_node(run_dir: Path, name: str) -> Node:
    config = rundir.read_config(run_dir)
    info = rundir.read_info(run_dir)
    me = info["nodes"][name]
    addrs = {n: (v["host"], v["port"]) for n, v in info["nodes"].items()}
    log = EventLog(name, run_dir / "nodes" / name / "events.jsonl")
    return Node(config, name, TcpTransport(name, addrs), log=log, data_dir=Path(me["data_dir"]),
                control_port=me["control_port"], token=rundir.read_token(run_dir))


async def serve(node: Node) -> None:
    async with trio.open_nursery() as nursery:
        async def on_signals():
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    node.stop()
        nursery.start_soon(on_signals)
        await node.run()
        nursery.cancel_scope.cancel()


def main(run_dir: str, name: str) -> int:
    run_dir = Path(run_dir).absolute()
    # First thing: say who we are, so `down` finds us even if the launcher died mid-spawn.
    (run_dir / "nodes" / name).mkdir(parents=True, exist_ok=True)
    (run_dir / "nodes" / name / "pid").write_text(str(os.getpid()))
    node = build_node(run_dir, name)
    try:
        trio.run(serve, node)
    except BaseException as exc:  # log why we died, then die
        node.log.error(ev.NODE_ERROR, error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc())
        node.log.close()
        raise
    node.log.close()
    return 0
