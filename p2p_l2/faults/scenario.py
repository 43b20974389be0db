"""The experiment timeline: a config's `[[workload]]` and `[[fault]]` entries, played on a
cluster relative to the moment it is ready (DESIGN §7).

`timeline(config)` is sans-IO (a sorted list of steps); `Scenario.run` sleeps until each
step and carries it out through the cluster's API, so the same timeline can be driven
from the CLI (`p2p-l2 run`) or a Python script.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..config import Config, FaultSpec, WorkloadSpec
from ..errors import P2PL2Error



@dataclass(frozen=True)
class Step:
    at: float
    what: str  # "workload" | "fault" | "lift"
    index: int  # position among the config's workloads or faults
    spec: WorkloadSpec | FaultSpec

    def resolved(self, config: Config) -> dict:
        """What the step will do, with its random choices made (from the config seed): a
        partition's cut link directions.  Recorded in RUN/timeline.json."""
        p = self.spec.params if self.what != "workload" else {}
        if self.what == "fault" and self.spec.action == "partition":
            from .partitions import partition_pairs
            pairs = partition_pairs(config, p.get("groups", ()), p.get("oneway", False),
                                    p.get("shape"), p.get("node"))
            return {"cut": [list(pair) for pair in pairs]}
        return {}

    def describe(self) -> str:
        if self.what == "workload":
            s = self.spec
            return f"workload {s.kind} at {s.rate}/s from {','.join(s.from_)}"
        params = " ".join(f"{k}={v}" for k, v in self.spec.params.items())
        verb = "lift" if self.what == "lift" else "fault"
        return f"{verb} {self.spec.action} {params}".strip()


def timeline(config: Config) -> list[Step]:
    steps = [Step(w.start, "workload", i, w) for i, w in enumerate(config.workloads)]
    for i, f in enumerate(config.faults):
        steps.append(Step(f.at, "fault", i, f))
        if f.duration is not None:
            steps.append(Step(f.at + f.duration, "lift", i, f))
    return sorted(steps, key=lambda s: (s.at, s.what != "lift"))


def natural_length(config: Config) -> float:
    """When the last workload or fault of the config ends (0 if nothing is scheduled)."""
    ends = [w.start + (w.duration or 0) for w in config.workloads]
    ends += [f.at + (f.duration or 0) for f in config.faults]
    return max(ends, default=0.0)


class Scenario:
    def __init__(self, cluster, config: Config | None = None, duration: float | None = None):
        self.cluster = cluster
        self.config = config or cluster.config
        self.steps = timeline(self.config)
        self.duration = duration if duration is not None else natural_length(self.config)
        self.skipped: list[Step] = []
        self.done: list[Step] = []

    async def run(self, on_step: Callable[[Step, str], None] | None = None) -> None:
        """Play every step at its time, then wait out `duration`; stop open workloads."""
        report = on_step or (lambda step, outcome: None)
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for step in self.steps:
                await trio.sleep_until(t0 + step.at)
                outcome = await self.apply(step, nursery)
                (self.done if outcome == "ok" else self.skipped).append(step)
                report(step, outcome)
            await trio.sleep_until(t0 + self.duration)
            # a kill's restart_after may fall after the end: it still happens (never leave a
            # node dead that the config said would come back)
        await self.stop_workloads()

    async def apply(self, step: Step, nursery: trio.Nursery) -> str:
        try:
            return await self._apply(step, nursery)
        except P2PL2Error as exc:  # e.g. a workload kind or behaviour no node implements yet
            return f"skipped: {exc}"

    async def _apply(self, step: Step, nursery: trio.Nursery) -> str:
        c = self.cluster
        if step.what == "workload":
            await c.start_workload(step.spec, id=f"w{step.index}")
            return "ok"
        spec, p = step.spec, step.spec.params
        ends = {"between": p.get("between"), "from_": p.get("from"), "to": p.get("to")}
        if step.what == "lift":
            if spec.action == "partition":
                await c.heal()
            elif spec.action == "link":
                await c.unlink(**ends)
            elif spec.action == "pause":
                await c.resume(p["node"])
            elif spec.action == "clock-skew":
                await c.skew(p["node"], 0.0)
            elif spec.action == "misbehave":
                await c.misbehave(p["node"], p["behaviour"], enable=False)
            return "ok"
        if spec.action == "partition":
            await c.partition(*[list(g) for g in p.get("groups", ())], oneway=p.get("oneway", False),
                              shape=p.get("shape"), node=p.get("node"))
        elif spec.action == "link":
            shape = {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()
                     if k not in ("between", "from", "to")}
            await c.link(**ends, **shape)
        elif spec.action == "clock-skew":
            await c.skew(p["node"], p["offset_s"])
        elif spec.action == "heal":
            await c.heal()
        elif spec.action == "kill":
            await c.kill(p["node"])
            if p.get("restart_after") is not None:
                async def later(node=p["node"], delay=p["restart_after"]):
                    await trio.sleep(delay)
                    await c.restart(node)
                nursery.start_soon(later)
        elif spec.action == "pause":
            await c.pause(p["node"])
        elif spec.action == "restart":
            await c.restart(p["node"])
        elif spec.action == "misbehave":
            await c.misbehave(p["node"], p["behaviour"])
        return "ok"

    async def stop_workloads(self) -> None:
        for i, w in enumerate(self.config.workloads):
            for name in w.from_:
                if self.cluster.alive(name):
                    try:
                        await self.cluster[name].call("workload.stop", id=f"w{i}")
                    except P2PL2Error:
                        pass
