"""bench gossip: messages/s fully delivered on an N-node process cluster, propagation delay,
and link copies per message (flooded vs inventory objects).

Phases: a burst (`burst` messages published at once from `publishers` nodes; headline =
messages / seconds from first publish to last delivery), a paced run (`rate` msgs/s from
one node; p50/p99 delay per delivery and to full delivery), and inventory objects (large
messages: each must cross a link at most once).

Reference, same run: the machine's raw per-hop capacity, i.e. encode + seal + open +
decode of one gossip message per second on one core, times the cores.  The ratio is the
share of that capacity turned into useful deliveries: rate * (N - 1) / capacity.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import trio

from .. import events as ev
from .. import gossip as _gossip  # noqa: F401 - registers the gossip wire kinds
from ..cluster.process import Cluster
from ..config import make_config
from ..log import read_events
from ..wire import Identity, codec, session_pair
from . import result


def hop_capacity(seconds: float = 1.0) -> float:
    """encode+seal+open+decode of one ~150-byte gossip message, per second on one core."""
    sa, sb = session_pair(Identity.derive(0, "a"), Identity.derive(0, "b"), "bench")
    payload = {"id": b"i" * 16, "t": "bench", "d": b"x" * 100, "h": 1, "o": "n0", "ts": 1.0}
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            codec.decode(sb.open(sa.seal(codec.encode("gossip", payload))))
        n += 1000
    return n / (time.perf_counter() - t0)


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def _delivered(cluster: Cluster) -> int:
    return await _stat_sum(cluster, "delivered")


async def _wait_delivered(cluster: Cluster, target: int, timeout: float) -> None:
    await cluster.wait_for(lambda: _at_least(cluster, target), timeout,
                           what=f"{target} gossip deliveries")


async def _at_least(cluster: Cluster, target: int) -> bool:
    return await _delivered(cluster) >= target


async def _stat_sum(cluster: Cluster, key: str) -> int:
    total = 0
    for name in cluster.names:
        total += (await cluster[name].call("gossip.stats"))[key]
    return total


async def run(nodes: int = 50, degree: int = 4, burst: int = 4000, publishers: int = 10,
              rate: float = 200.0, seconds: float = 3.0, size: int = 100,
              objects: int = 20, object_size: int = 20_000) -> dict:
    capacity = hop_capacity() * (os.cpu_count() or 1)
    config = make_config(nodes, "random-regular", name="bench-gossip", degree=degree)
    links = len(config.links)
    with tempfile.TemporaryDirectory(prefix="p2p_l2-bench-") as tmp:
        cluster = Cluster.create(config, Path(tmp) / "run")
        try:
            await cluster.start(timeout=120)
            delivered = await _delivered(cluster)
            sent0 = await _stat_sum(cluster, "objects_sent")
            per = burst // publishers
            async with trio.open_nursery() as nursery:
                for name in cluster.names[:publishers]:
                    nursery.start_soon(lambda n=name: cluster[n].call(
                        "gossip.publish_many", topic="burst", count=per, size=size, _timeout=300))
            delivered += per * publishers * (nodes - 1)
            await _wait_delivered(cluster, delivered, 300)
            flood_copies = (await _stat_sum(cluster, "objects_sent") - sent0) / (per * publishers)

            count = int(rate * seconds)
            await cluster[cluster.names[0]].call("gossip.publish_many", topic="paced", count=count,
                                                 size=size, rate=rate, _timeout=seconds + 60)
            delivered += count * (nodes - 1)
            await _wait_delivered(cluster, delivered, 120)

            sent0 = await _stat_sum(cluster, "objects_sent")
            dup0 = await _stat_sum(cluster, "duplicates")
            await cluster[cluster.names[-1]].call("gossip.publish_many", topic="objects",
                                                  count=objects, size=object_size, rate=20.0)
            delivered += objects * (nodes - 1)
            await _wait_delivered(cluster, delivered, 120)
            inv_copies = await _stat_sum(cluster, "objects_sent") - sent0
            inv_dups = await _stat_sum(cluster, "duplicates") - dup0
        finally:
            await cluster.down()
        burst_span, paced_delay, paced_full = _from_logs(cluster.run_dir, cluster.names)
    value = burst / burst_span
    extra = {
        "nodes": nodes, "links": links, "burst_messages": burst, "burst_seconds": burst_span,
        "deliveries_per_s": value * (nodes - 1),
        "paced_rate": rate, "paced_delay_ms_p50": 1000 * quantile(paced_delay, 0.5),
        "paced_delay_ms_p99": 1000 * quantile(paced_delay, 0.99),
        "paced_full_delivery_ms_p50": 1000 * quantile(paced_full, 0.5),
        "paced_full_delivery_ms_p99": 1000 * quantile(paced_full, 0.99),
        "flood_copies_per_link_per_msg": flood_copies / links,
        "inv_copies_per_link_per_msg": inv_copies / (objects * links),
        "inv_copies_per_receiver": inv_copies / (objects * (nodes - 1)),
        "inv_duplicates": inv_dups,
        "ratio_meaning": "deliveries/s over raw per-hop capacity of all cores",
    }
    return result("gossip", value, "msg/s",
                  {"name": "encode+seal+open+decode per second x cores", "value": capacity,
                   "unit": "hops/s"}, extra, ratio=value * (nodes - 1) / capacity)


def _from_logs(run_dir: Path, names: list[str]) -> tuple[float, list[float], list[float]]:
    first_pub, last_burst = float("inf"), 0.0
    delays: list[float] = []
    full: dict[str, float] = {}
    sent: dict[str, float] = {}
    for name in names:
        events, _ = read_events(run_dir / "nodes" / name / "events.jsonl")
        for e in events:
            kind, topic = e["event"], e.get("topic")
            if kind == ev.GOSSIP_PUBLISHED and topic == "burst":
                first_pub = min(first_pub, e["ts"])
            elif kind == ev.GOSSIP_DELIVERED and topic == "burst":
                last_burst = max(last_burst, e["ts"])
            elif kind == ev.GOSSIP_DELIVERED and topic == "paced":
                delay = e["ts"] - e["sent_at"]
                delays.append(delay)
                full[e["msg_id"]] = max(full.get(e["msg_id"], 0.0), delay)
            elif kind == ev.GOSSIP_PUBLISHED and topic == "paced":
                sent[e["msg_id"]] = e["ts"]
    return last_burst - first_pub, delays, list(full.values())
