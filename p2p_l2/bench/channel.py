"""bench channel / multihop: payments per second through real node processes.

`channel`: alice pays bob over one channel (two node processes, a miner beside them);
`multihop`: alice pays erin across a 5-node line (4 hops).  Each payment is a keysend
HTLC added, fulfilled and settled: two committed updates per channel, each persisted to
SQLite before it is signed.  A `payments` workload offers more than the nodes can carry
(open loop); the headline is completed payments per second from alice's log, and a second,
paced phase gives the latency quantiles.  Reference, same run: two processes pipelining
sign -> send -> verify -> sign -> send back -> verify over loopback TCP (what every
committed update costs at least, without any protocol).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from .. import events as ev
from ..cluster.process import Cluster
from ..config import load_config, loads_config
from ..config.model import LinkParams
from ..log import read_events
from ..wire import Identity, verify
from . import result
from .gossip import quantile

ECHO = r"""
import socket, struct, sys
from p2p_l2.wire import Identity, verify
me, peer = Identity.derive(1, "b"), Identity.derive(1, "a").pubkey
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = c.makefile("rb"); w = c.makefile("wb")
while True:
    head = f.read(96)
    if len(head) < 96: break
    msg, sig = head[:32], head[32:]
    assert verify(peer, msg, sig)
    w.write(msg + me.sign(msg)); w.flush()
"""


def sign_verify_rate(seconds: float = 2.0, window: int = 64) -> float:
    """Round trips/s of sign-send-verify-sign-send-verify between two processes, pipelined."""
    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        me, peer = Identity.derive(1, "a"), Identity.derive(1, "b").pubkey
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f, w = s.makefile("rb"), s.makefile("wb")
        n, t0 = 0, time.perf_counter()
        sent = 0
        while time.perf_counter() - t0 < seconds:
            while sent - n < window:
                msg = struct.pack(">Q", sent).ljust(32, b"\0")
                w.write(msg + me.sign(msg))
                sent += 1
            w.flush()
            head = f.read(96)
            assert verify(peer, head[:32], head[32:])
            n += 1
        rate = n / (time.perf_counter() - t0)
        s.close()
        return rate
    finally:
        proc.kill()
        proc.wait()


PAIR = """
[cluster]
name = "bench-channel"
seed = 21
[chain]
block_interval = 0.5
[channels]
max_htlcs = 480
[accounts]
alice = 1_000_000_000
bob = 1_000_000_000
[[node]]
name = "miner"
roles = ["miner"]
[[node]]
name = "alice"
roles = ["channels"]
[[node]]
name = "bob"
roles = ["channels"]
[topology]
links = [["miner", "alice"], ["miner", "bob"]]
[[channel]]
between = ["alice", "bob"]
funding = [500_000_000, 500_000_000]
"""


async def _phase(cluster: Cluster, payee: str, rate: float, seconds: float, wid: str) -> None:
    await cluster["alice"].call("workload.start", kind="payments", rate=rate, amount=[1, 10],
                                to=[payee], duration=seconds, id=wid)
    await cluster.wait_for_event("alice", ev.WORKLOAD_STOPPED, workload=wid, timeout=seconds + 120)


def _stats(run_dir: Path, since: float, until: float) -> tuple[int, float, list[float]]:
    events, _ = read_events(run_dir / "nodes" / "alice" / "events.jsonl")
    ok = [e for e in events if e["event"] == ev.PAYMENT_SUCCEEDED and since <= e["ts"] <= until]
    if len(ok) < 2:
        return len(ok), 0.0, []
    span = ok[-1]["ts"] - min(e["ts"] - e["latency"] for e in ok)
    return len(ok), span, [e["latency"] for e in ok]


async def run(name: str = "channel", rate: float = 6000.0, seconds: float = 3.0,
              paced: float = 100.0) -> dict:
    reference = sign_verify_rate()
    if name == "channel":
        config, payee = loads_config(PAIR, "<bench channel>"), "bob"
    else:
        from dataclasses import replace

        from ..config import builtin_config
        config, payee = load_config(builtin_config("line5")), "erin"
        # as for `channel`: room for many HTLCs in flight, so updates carry big batches;
        # and no configured link latency (line5 has 2 ms): the protocol's own cost is measured
        config = replace(config, channels=replace(config.channels, max_htlcs=480),
                         default_link=LinkParams(), link_overrides={})
    with tempfile.TemporaryDirectory(prefix="p2p_l2-bench-") as tmp:
        async with Cluster.launch(config, run_dir=Path(tmp) / "run", timeout=120) as cluster:
            t0 = time.time()
            await _phase(cluster, payee, rate, seconds, "load")
            t1 = time.time()
            await _phase(cluster, payee, paced, seconds, "paced")
            t2 = time.time()
            counts = await cluster.workload_counts()
        done, span, _ = _stats(cluster.run_dir, t0, t1)
        paced_done, _, latencies = _stats(cluster.run_dir, t1, t2)
    value = done / span if span else 0.0
    extra = {"offered_rate": rate, "completed": done, "seconds": span,
             "outcomes": counts, "paced_rate": paced, "paced_completed": paced_done,
             "latency_ms_p50": 1000 * quantile(latencies, 0.5),
             "latency_ms_p90": 1000 * quantile(latencies, 0.9),
             "latency_ms_p99": 1000 * quantile(latencies, 0.99),
             "hops": 1 if name == "channel" else 4,
             "ratio_meaning": "payments/s over pipelined sign-verify round trips/s between "
                              "two processes"}
    return result(name, value, "payments/s", {"name": "pipelined sign-verify-sign-verify over "
                                              "TCP", "value": reference, "unit": "round trips/s"},
                  extra)
