"""What every cluster offers, in-process or on real processes: calls, waits and faults.

`wait_for_event` keeps a cursor per node, like pyln-testing's log search: each call looks
only at events after the last one it returned for that node, so no event is matched twice.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from fnmatch import fnmatchcase

import trio

from ..config import Config
from ..errors import P2PL2Error, WaitTimeout


def matches(event: dict, name: str, fields: dict) -> bool:
    return event.get("event") == name and all(event.get(k) == v for k, v in fields.items())


def _ends(between, from_, to) -> list[tuple[str, str]]:
    """The (node, peer) sides a link fault is set on: both `between` two nodes, or one."""
    return [(between[0], between[1]), (between[1], between[0])] if between else [(from_, to)]


class ClusterBase(ABC):
    config: Config

    def __init__(self, config: Config):
        self.config = config
        self._cursors: dict[str, int] = {}

    # -- provided by subclasses --------------------------------------------------------
    @abstractmethod
    def __getitem__(self, name: str):
        """The handle of node `name` (its `call` / `request` reach the control API)."""

    @abstractmethod
    def events(self, node: str) -> list[dict]:
        """Every event the node has logged so far, oldest first."""

    @abstractmethod
    def alive(self, name: str) -> bool:
        """Is the node running?"""

    # -- shared ------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return self.config.node_names

    async def call(self, node: str, method: str, **params):
        return await self[node].call(method, **params)

    async def wait_for(self, predicate: Callable, timeout: float = 30.0, what: str = "") -> object:
        """Poll `predicate` (sync or async) with backoff until it returns a truthy value."""
        delay = 0.01
        with trio.move_on_after(timeout):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                await trio.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        raise WaitTimeout(f"timed out after {timeout}s waiting for {what or predicate!r}")

    async def wait_for_event(self, node: str, event: str, timeout: float = 30.0, **fields) -> dict:
        """The first `event` on `node` with these field values after the last one returned."""
        found: dict = {}

        def scan() -> bool:
            log = self.events(node)
            for i in range(self._cursors.get(node, 0), len(log)):
                if matches(log[i], event, fields):
                    self._cursors[node] = i + 1
                    found["event"] = log[i]
                    return True
            return False

        await self.wait_for(scan, timeout, what=f"{event} {fields or ''} on {node}")
        return found["event"]

    def errors(self, expected: list[str] = ()) -> list[dict]:
        """Error-level events on any node not matching an expected pattern (`event` or glob)."""
        out = []
        for name in self.names:
            for e in self.events(name):
                if e.get("level") == "error" and not any(
                        fnmatchcase(e.get("event", ""), pat) for pat in expected):
                    out.append(e)
        return out

    async def partition(self, *groups: list[str], oneway: bool = False,
                        shape: str | None = None, node: str | None = None,
                        seed: int | None = None) -> list[tuple[str, str]]:
        """Cut the topology links between `groups` (nodes named in none form one more
        group), or in a Jepsen `shape` (isolate, halves, bridge, majorities-ring; nodes
        picked from the config seed, or `seed`).  A two-way cut is a blackhole on both ends;
        `oneway` (with groups) drops only what an earlier group sends to a later one.
        Returns the cut (from, to) pairs that are links; `heal` lifts them all."""
        from ..faults.partitions import partition_pairs
        pairs = partition_pairs(self.config, groups, oneway, shape, node, seed)
        for me, peer in pairs:
            if self.alive(me):
                if oneway:
                    await self[me].call("fault.link", peer=peer, loss=1.0)
                else:
                    await self[me].call("fault.link", peer=peer, blackhole=True)
        return pairs

    async def link(self, *, between: tuple[str, str] | None = None, from_: str | None = None,
                   to: str | None = None, **shape) -> None:
        """Condition a link (SPEC §5 `link`): both directions `between` two nodes, or one
        direction `from_` -> `to`: latency_ms, jitter_ms, loss, duplicate, reorder,
        bandwidth_kbps, blackhole, drop_types, ... (see `fault.link`)."""
        for me, peer in _ends(between, from_, to):
            if self.alive(me):
                await self[me].call("fault.link", peer=peer, **shape)

    async def unlink(self, *, between: tuple[str, str] | None = None, from_: str | None = None,
                     to: str | None = None) -> None:
        """Lift what `link` set on those ends."""
        for me, peer in _ends(between, from_, to):
            if self.alive(me):
                await self[me].call("fault.clear", peer=peer)

    async def skew(self, node: str, offset_s: float) -> None:
        """Set `node`'s clock `offset_s` seconds off (its timestamps, block times, expiries)."""
        await self[node].call("clock.skew", offset_s=offset_s)

    async def misbehave(self, node: str, behaviour: str, enable: bool = True) -> None:
        await self[node].call("fault.misbehave", behaviour=behaviour, enable=enable)

    async def open_config_channels(self, timeout: float = 120.0, report=None) -> None:
        """Open the config's `[[channel]]`s and wait until each is confirmed on L1, open at
        both ends and known to every channel node's graph (what `up` waits for)."""
        specs = self.config.channel_specs
        if not specs:
            return
        if not self.config.nodes_with_role("miner"):
            raise P2PL2Error("[[channel]] needs a miner: channels open on layer 1")
        cids = []
        for spec in specs:
            a, b = spec.between
            res = await self[a].call("channel.open", peer=b, funding=list(spec.funding),
                                     push=spec.push)
            cids.append(res["channel_id"])
        holders = [n for n in self.config.nodes_with_role("channels") if self.alive(n)]

        async def ready() -> bool:
            done = 0
            for cid, spec in zip(cids, specs):
                states = [c["state"] for n in spec.between
                          for c in await self[n].call("channel.list") if c["channel_id"] == cid]
                known = [cid in {c["channel_id"] for c in (await self[n].call("graph"))["channels"]}
                         for n in holders]
                done += states == ["open", "open"] and all(known)
            if report:
                report("channels", done, len(specs))
            return done == len(specs)
        await self.wait_for(ready, timeout, what="every [[channel]] open and announced")

    async def wait_plasma_ready(self, timeout: float = 120.0, report=None) -> None:
        """Wait until every plasma chain is registered on L1 and every user's configured
        `plasma_deposit` is in its plasma balance (what `up` waits for)."""
        users = [n for n in self.config.nodes if "plasma-user" in n.roles and n.plasma_deposit]
        if not users:
            return

        async def ready() -> bool:
            done = 0
            for n in users:
                done += (await self[n.name].call("plasma.balance"))["total"] >= n.plasma_deposit
            if report:
                report("plasma deposits", done, len(users))
            return done == len(users)
        await self.wait_for(ready, timeout, what="every plasma_deposit in its plasma chain")

    async def start_workload(self, spec, id: str) -> None:
        """Start a `[[workload]]` on each of its `from` nodes, the rate split between them."""
        senders = [n for n in spec.from_ if self.alive(n)]
        for name in senders:
            await self[name].call("workload.start", kind=spec.kind, rate=spec.rate / len(senders),
                                  amount=list(spec.amount), to=list(spec.to),
                                  duration=spec.duration, id=id)

    async def workload_counts(self) -> dict[str, dict[str, int]]:
        """Outcome counts of every workload, summed over the nodes that ran it."""
        out: dict[str, dict[str, int]] = {}
        for name in self.names:
            if not self.alive(name):
                continue
            for w in await self[name].call("workload.list"):
                counts = out.setdefault(f"{w['id']} {w['kind']}", {})
                for code, n in w["counts"].items():
                    counts[code] = counts.get(code, 0) + n
        return out

    async def heal(self) -> None:
        """Lift every link fault on every running node."""
        for name in self.names:
            if self.alive(name):
                await self[name].call("fault.clear")

    async def linked(self) -> bool:
        """True when every node is connected to every topology neighbour."""
        for name in self.names:
            status = await self[name].call("status")
            if not set(self.config.neighbours(name)) <= set(status["peers"]):
                return False
        return True

    async def wait_connected(self, timeout: float = 30.0) -> None:
        await self.wait_for(self.linked, timeout, what="every topology link up")
