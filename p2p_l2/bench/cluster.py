"""bench cluster: seconds from `up` to a connected N-node cluster, and memory per node.

Reference, same run: N bare Python processes that import trio and listen on a port,
from spawn until every one accepts a connection (what any Python cluster pays at least).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from ..config import make_config
from ..cluster.process import Cluster
from . import result

BARE = ("import trio, sys\n"
        "async def main():\n"
        "    ls = await trio.open_tcp_listeners(0, host='127.0.0.1')\n"
        "    print(ls[0].socket.getsockname()[1], flush=True)\n"
        "    await trio.serve_listeners(lambda s: s.aclose(), ls)\n"
        "trio.run(main)\n")


def _proc_kb(pid: int, path: str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def bare_listeners(n: int) -> tuple[float, float]:
    """Seconds until n bare trio processes all accept a connection; their mean RSS (MB)."""
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", BARE], stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    try:
        for p in procs:
            port = int(await trio.to_thread.run_sync(p.stdout.readline))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.aclose()
        seconds = time.monotonic() - t0
        rss = sum(_proc_kb(p.pid, "status", "VmRSS") for p in procs) / n / 1024
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return seconds, rss


async def run(nodes: int = 50, degree: int = 4) -> dict:
    ref_seconds, ref_rss = await bare_listeners(nodes)
    config = make_config(nodes, "random-regular", name="bench-cluster", degree=degree)
    with tempfile.TemporaryDirectory(prefix="p2p_l2-bench-") as tmp:
        cluster = Cluster.create(config, Path(tmp) / "run")
        try:
            seconds = await cluster.start(timeout=120)
            pids = [cluster.launcher.pid(n) for n in cluster.names]
            rss = [_proc_kb(p, "status", "VmRSS") / 1024 for p in pids]
            pss = [_proc_kb(p, "smaps_rollup", "Pss") / 1024 for p in pids]
        finally:
            await cluster.down()
    extra = {"nodes": nodes, "links": len(config.links), "rss_mb_mean": sum(rss) / len(rss),
             "rss_mb_max": max(rss), "pss_mb_mean": sum(pss) / len(pss),
             "bare_rss_mb_mean": ref_rss, "target_seconds": 8.0, "target_rss_mb": 40.0,
             "ratio_meaning": "cluster seconds / bare-listener seconds (lower is better)"}
    return result("cluster", seconds, "s",
                  {"name": f"{nodes} bare trio listener processes", "value": ref_seconds, "unit": "s"},
                  extra)
