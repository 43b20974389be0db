"""The link conditioner on real node links (in-memory transport, autojump clock): each
feature measured on a two-node link, partitions, rules that close links, clearing."""

import statistics

from p2p_l2 import events as ev
from p2p_l2.config import make_config


async def two(memory_cluster_factory, extra=""):
    return await memory_cluster_factory(make_config(2, "line", name="lf", extra=extra))


async def rtts(cluster, n=1, frm="n0", to="n1"):
    return [(await cluster[frm].call("ping", peer=to))["rtt_ms"] for _ in range(n)]


def delivered(cluster, node):
    return [e for e in cluster.events(node) if e["event"] == ev.GOSSIP_DELIVERED]


async def flood(cluster, count, size=100, frm="n0", to="n1"):
    """Publish `count` messages at `frm`; once nothing is in flight on the frm -> to link
    (none held by the conditioner, none queued, as many received as written), return what
    `to` delivered of them."""
    before = len(delivered(cluster, to))
    a, b = cluster.nodes[frm], cluster.nodes[to]
    await cluster[frm].call("gossip.publish_many", topic="t", count=count, size=size)

    def settled():
        out, into = a.links.get(to), b.links.get(frm)
        return out is None or into is None or (
            not out._held and out.queued_bytes == 0
            and out.stats["msgs_out"] == into.stats["msgs_in"])
    await cluster.wait_for(settled, timeout=120)
    return delivered(cluster, to)[before:]


async def test_latency_one_way_and_both_ways(autojump_clock, memory_cluster_factory):
    cluster = await two(memory_cluster_factory)
    assert (await rtts(cluster))[0] < 1
    await cluster.link(from_="n0", to="n1", latency_ms=50)
    assert abs((await rtts(cluster))[0] - 50) <= 10  # one direction: the round trip is 50
    await cluster.link(between=("n0", "n1"), latency_ms=50)
    assert abs((await rtts(cluster))[0] - 100) <= 10
    applied = await cluster.wait_for_event("n1", ev.FAULT_APPLIED, action="link")
    assert applied["params"] == {"latency_ms": 50.0}
    await cluster.heal()
    assert (await rtts(cluster))[0] < 1
    await cluster.wait_for_event("n0", ev.FAULT_CLEARED, peer="n1")


async def test_jitter_spreads_round_trips(autojump_clock, memory_cluster_factory):
    cluster = await two(memory_cluster_factory)
    await cluster.link(from_="n0", to="n1", latency_ms=50, jitter_ms=10)
    samples = await rtts(cluster, 200)
    assert abs(statistics.mean(samples) - 50) <= 3
    assert 7 <= statistics.stdev(samples) <= 13


async def test_loss_drops_its_share(autojump_clock, memory_cluster_factory):
    cluster = await two(memory_cluster_factory)
    await cluster.link(from_="n0", to="n1", loss=0.3)
    got = await flood(cluster, 2000)
    assert 0.25 <= 1 - len(got) / 2000 <= 0.35


async def test_duplicates_arrive_twice_and_are_deduplicated(autojump_clock,
                                                            memory_cluster_factory):
    cluster = await two(memory_cluster_factory)
    before = (await cluster["n1"].call("gossip.stats"))["links"]["n0"]["msgs_in"]
    await cluster.link(from_="n0", to="n1", duplicate=0.2)
    got = await flood(cluster, 1000)
    assert len(got) == 1000  # each once, whatever the wire carried
    stats = await cluster["n1"].call("gossip.stats")
    extra = stats["links"]["n0"]["msgs_in"] - before - 1000
    assert 150 <= extra <= 260 and stats["duplicates"] >= 150


async def test_bandwidth_cap_holds(autojump_clock, memory_cluster_factory):
    import trio
    cluster = await two(memory_cluster_factory)
    await cluster.link(from_="n0", to="n1", bandwidth_kbps=100)
    t0 = trio.current_time()
    await cluster["n0"].call("gossip.publish_many", topic="t", count=100, size=1000)
    await cluster.wait_for(lambda: len(delivered(cluster, "n1")) >= 100, timeout=60)
    took = trio.current_time() - t0
    # 100 bodies of ~1,050 bytes (1,000 of data plus the envelope) at 100 kbit/s: 8.4 s,
    # less the 16 KiB burst allowance (1.3 s)
    assert 7.1 * 0.9 <= took <= 8.4 * 1.1


async def test_drop_types_and_rules_close_the_link(autojump_clock, memory_cluster_factory):
    cluster = await two(memory_cluster_factory)
    await cluster.link(from_="n0", to="n1", drop_types=["gossip"])
    assert await flood(cluster, 20) == []
    assert (await rtts(cluster))[0] < 1  # other kinds pass
    await cluster.link(from_="n0", to="n1",
                       rules=[{"kind": "gossip", "action": "close-after", "after": 2}])
    await cluster["n0"].call("gossip.publish_many", topic="t", count=5, size=16)
    gone = await cluster.wait_for_event("n0", ev.PEER_DISCONNECTED, peer="n1", timeout=10)
    assert gone["reason"] == "fault:close-after"
    await cluster.heal()
    await cluster.wait_connected()  # the link comes back once the fault is lifted


async def test_oneway_partition_cuts_one_direction(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(3, "line", name="ow"))
    cut = await cluster.partition(["n0"], ["n1", "n2"], oneway=True)
    assert cut == [("n0", "n1")]
    assert await flood(cluster, 10, frm="n0", to="n1") == []
    assert len(await flood(cluster, 10, frm="n1", to="n0")) == 10
    await cluster.heal()
    assert len(await flood(cluster, 10, frm="n0", to="n1")) == 10


async def test_partition_shapes_on_a_cluster(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(5, "full", name="shp"))
    cut = await cluster.partition(shape="isolate", node="n3")
    assert sorted(cut) == sorted([(a, b) for a, b in
                                  [(f"n{i}", "n3") for i in (0, 1, 2, 4)]
                                  + [("n3", f"n{i}") for i in (0, 1, 2, 4)]])
    assert await flood(cluster, 5, frm="n3", to="n0") == []
    assert len(await flood(cluster, 5, frm="n0", to="n4")) == 5
    await cluster.heal()
    halves = await cluster.partition(shape="halves")
    assert len(halves) == 2 * 3 * 2  # 3 × 2 nodes across, both ways
