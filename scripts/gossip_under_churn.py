"""Gossip under churn: flood messages on a ring while one node is killed and restarted.

    python scripts/gossip_under_churn.py [configs/ring12.toml]

Shows the Python API (SPEC §4): launch a cluster, call control methods, kill and restart
a node, wait on events with a cursor, and read the nodes' logs afterwards.
"""

import sys

import trio

from p2p_l2 import Cluster, load_config, events as ev
from p2p_l2.demo import propagation


async def main(path: str) -> None:
    async with Cluster.launch(load_config(path)) as cluster:
        names = cluster.names
        victim, source = names[len(names) // 2], names[0]
        print(f"{len(names)} nodes up; flooding from {source}, killing {victim}")
        await cluster[source].call("gossip.publish_many", topic="churn", count=200, rate=200.0)
        await cluster.kill(victim)
        await cluster[source].call("gossip.publish_many", topic="churn", count=200, rate=200.0)
        await cluster.restart(victim)  # returns once it is linked to its neighbours again
        res = await cluster[source].call("gossip.publish", topic="churn", data="after restart")
        event = await cluster.wait_for_event(victim, ev.GOSSIP_DELIVERED, msg_id=res["msg_id"])
        print(f"{victim} is back: got the last message after {event['hops']} hops")
    published, delays = propagation(cluster.run_dir, names, "churn")
    print(f"{published} published, {len(delays)} deliveries "
          f"(a full flood would be {published * (len(names) - 1)}; the gap is what {victim} missed "
          f"while dead), p50 {1000 * delays[len(delays) // 2]:.2f} ms; logs in {cluster.run_dir}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "configs/ring12.toml")
