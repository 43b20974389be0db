"""Load generators that run inside a node (SPEC §2 `[[workload]]`).

`workload.start {kind, rate, amount, to, duration?}` starts Poisson arrivals at `rate`/s
on this node; each arrival calls the kind's action with a random recipient and a uniform
amount.  Layers register kinds (`runner.register("l1-transfers", fn)`); the arrival
schedule and the random draws are sans-IO (`Arrivals`) and seeded from the node's seed.
Outcomes are counted by result code and logged when the workload ends.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .. import events as ev
from ..errors import ControlError

MAX_INFLIGHT = 10_000
Action = Callable[[str, int], object]  # (to, amount) -> anything; raises ControlError(code)


@dataclass
class Arrivals:
    """Poisson arrival times and uniform draws for one workload (sans-IO)."""

    rate: float
    amount: tuple[int, int]
    to: list[str]
    rng: random.Random

    def gap(self) -> float:
        return self.rng.expovariate(self.rate)

    def draw(self) -> tuple[str, int]:
        return self.rng.choice(self.to), self.rng.randint(*self.amount)


@dataclass
class Running:
    id: str
    kind: str
    rate: float
    counts: dict[str, int] = field(default_factory=dict)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: bool = False

    def info(self) -> dict:
        return {"id": self.id, "kind": self.kind, "rate": self.rate, "done": self.done,
                "counts": dict(self.counts)}


class WorkloadRunner:
    def __init__(self, node):
        self.node = node
        self.kinds: dict[str, Action] = {}
        self.running: dict[str, Running] = {}
        for method, fn in {"workload.start": self.start, "workload.stop": self.stop,
                           "workload.list": self.list}.items():
            node.control.register(method, fn)

    def register(self, kind: str, action: Action) -> None:
        self.kinds[kind] = action

    def start(self, kind: str, rate: float, amount: list, to: list,
              duration: float | None = None, id: str | None = None) -> dict:
        if kind not in self.kinds:
            raise ControlError("unknown_workload", f"{kind!r}; this node runs: {', '.join(sorted(self.kinds))}")
        if type(rate) not in (int, float) or not 0 < rate <= 100_000:
            raise ControlError("bad_params", "rate must be in (0, 100000] per second")
        if (not isinstance(amount, list) or len(amount) != 2 or any(type(a) is not int for a in amount)
                or not 1 <= amount[0] <= amount[1]):
            raise ControlError("bad_params", "amount must be [lo, hi] with 1 <= lo <= hi")
        targets = [t for t in to if t != self.node.name] if isinstance(to, list) else []
        if not targets or any(t not in self.node.pubkeys for t in targets):
            raise ControlError("bad_params", "to must list other nodes of the cluster")
        if duration is not None and (type(duration) not in (int, float) or duration <= 0):
            raise ControlError("bad_params", "duration must be positive")
        wid = id or f"{kind}-{len(self.running) + 1}"
        if wid in self.running and not self.running[wid].done:
            raise ControlError("bad_params", f"workload {wid} is already running")
        rng = random.Random(f"{self.node.config.cluster.seed}/{self.node.name}/workload/{wid}")
        run = Running(wid, kind, float(rate))
        self.running[wid] = run
        arrivals = Arrivals(float(rate), (amount[0], amount[1]), targets, rng)
        self.node.spawn(self._run, run, arrivals, duration)
        return {"id": wid}

    async def _run(self, run: Running, arrivals: Arrivals, duration: float | None) -> None:
        action = self.kinds[run.kind]
        self.node.log.info(ev.WORKLOAD_STARTED, workload=run.id, kind=run.kind, rate=run.rate)
        t0 = trio.current_time()
        async def one(to: str, amount: int) -> None:
            try:
                result = action(to, amount)
                if inspect.isawaitable(result):
                    await result
                code = "ok"
            except ControlError as exc:
                code = exc.code
            run.counts[code] = run.counts.get(code, 0) + 1

        # Open loop: arrivals do not wait for earlier ones to finish (a slow system sees its
        # backlog grow, as under real load); at most MAX_INFLIGHT are outstanding.
        async with trio.open_nursery() as nursery:
            with run.scope:
                if duration is not None:
                    run.scope.deadline = t0 + duration
                next_at = t0
                while True:
                    next_at += arrivals.gap()
                    await trio.sleep_until(next_at)
                    if len(nursery.child_tasks) >= MAX_INFLIGHT:
                        run.counts["overloaded"] = run.counts.get("overloaded", 0) + 1
                        continue
                    nursery.start_soon(one, *arrivals.draw())
        run.done = True
        self.node.log.info(ev.WORKLOAD_STOPPED, workload=run.id, kind=run.kind, counts=run.counts,
                           seconds=trio.current_time() - t0)

    def stop(self, id: str) -> dict:
        run = self.running.get(id)
        if run is None:
            raise ControlError("unknown_workload", f"no workload {id!r}")
        run.scope.cancel()
        return run.info()

    def list(self) -> list[dict]:
        return [run.info() for run in self.running.values()]
