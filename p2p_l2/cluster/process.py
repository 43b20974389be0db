"""`Cluster`: a cluster of real node processes, driven from Python (SPEC §4).

    async with Cluster.launch(load_config("configs/line5.toml")) as cluster:
        await cluster["alice"].call("status")

`Cluster.attach(run_dir)` gives the same object for a cluster started by `p2p-l2 up`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from .. import events as ev
from ..config import Config, load_config
from ..errors import ControlError, NodeStartError, P2PL2Error
from ..log import read_events
from ..node.control import ControlClient
from . import rundir
from .base import ClusterBase
from .launcher import Launcher

Progress = Callable[[str, int, int], None]


class ProcessNodeHandle:
    def __init__(self, name: str, client: ControlClient):
        self.name, self.client = name, client

    async def call(self, method: str, /, _timeout: float | None = None, **params):
        """Call a control method; raises ControlError(code) on failure.  (`_timeout` is the
        client's deadline, not a parameter; use `request` for arbitrary parameter names.)"""
        return await self.client.request(method, params, _timeout)

    async def request(self, method: str, params: dict, timeout: float | None = None):
        return await self.client.request(method, params, timeout)


class Cluster(ClusterBase):
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir).absolute()
        super().__init__(rundir.read_config(self.run_dir))
        self.launcher = Launcher(self.run_dir)
        token = rundir.read_token(self.run_dir)
        self._handles = {
            name: ProcessNodeHandle(name, ControlClient("127.0.0.1", node["control_port"], token))
            for name, node in self.launcher.info["nodes"].items()}
        self._logs: dict[str, list[dict]] = {n: [] for n in self._handles}
        self._offsets: dict[str, int] = {n: 0 for n in self._handles}

    # -- construction ------------------------------------------------------------------
    @classmethod
    def create(cls, config: Config | str | Path, run_dir: Path | None = None) -> "Cluster":
        """Lay out a run dir for `config` (nothing started yet)."""
        if not isinstance(config, Config):
            config = load_config(config)
        return cls(rundir.create(config, run_dir))

    @classmethod
    def attach(cls, run_dir: Path | str | None = None) -> "Cluster":
        """The cluster of an existing run dir (default: the newest under ./runs)."""
        return cls(Path(run_dir) if run_dir else rundir.newest_run_dir())

    @classmethod
    @asynccontextmanager
    async def launch(cls, config: Config | str | Path, run_dir: Path | None = None,
                     timeout: float = 60.0, on_progress: Progress | None = None):
        """Start every node, wait until all links are up, yield; stop them all on exit."""
        cluster = cls.create(config, run_dir)
        try:
            await cluster.start(timeout=timeout, on_progress=on_progress)
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                await cluster.down()

    # -- nodes -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> ProcessNodeHandle:
        try:
            return self._handles[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} in this cluster") from None

    def events(self, node: str) -> list[dict]:
        new, self._offsets[node] = read_events(
            self.run_dir / "nodes" / node / "events.jsonl", self._offsets[node])
        self._logs[node].extend(new)
        return self._logs[node]

    def alive(self, name: str) -> bool:
        return self.launcher.alive(name)

    async def start(self, names: list[str] | None = None, timeout: float = 60.0,
                    on_progress: Progress | None = None) -> float:
        """Spawn nodes, wait until they listen and every link is up; returns seconds taken."""
        t0 = time.monotonic()
        names = list(names or self.names)
        report = on_progress or (lambda stage, done, total: None)
        with trio.fail_after(timeout):
            try:
                await trio.to_thread.run_sync(self.launcher.spawn_many, names)
                report("spawned", len(names), len(names))
                await self._wait_listening(names, report)
                await self._wait_links(report)
                await self.open_config_channels(timeout, report)
                await self.wait_plasma_ready(timeout, report)
            except trio.TooSlowError:
                raise NodeStartError(f"cluster not ready after {timeout}s") from None
        seconds = time.monotonic() - t0
        self.launcher.log.info(ev.LAUNCHER_UP, nodes=len(names), seconds=round(seconds, 3))
        self.launcher.log.flush()
        return seconds

    async def _wait_listening(self, names: list[str], report: Progress) -> None:
        pending = list(names)
        while pending:
            for name in list(pending):
                if not self.launcher.alive(name):
                    raise NodeStartError(f"node {name} exited during start-up\n{self.launcher.tail(name)}")
                try:
                    await self[name].call("status", _timeout=2.0)
                except ControlError:
                    continue
                pending.remove(name)
                report("listening", len(names) - len(pending), len(names))
            if pending:
                await trio.sleep(0.05)

    async def _wait_links(self, report: Progress) -> None:
        total = len(self.config.links)
        while True:
            up = 0
            for name in self.names:
                if not self.launcher.alive(name):
                    raise NodeStartError(f"node {name} died before its links were up\n"
                                         f"{self.launcher.tail(name)}")
                peers = set((await self[name].call("status"))["peers"])
                up += sum(1 for a, b in self.config.links if a == name and b in peers)
            report("links", up, total)
            if up >= total:
                return
            await trio.sleep(0.05)

    async def wait_node_ready(self, name: str, timeout: float = 30.0) -> None:
        """Wait until `name` answers and is linked to each running neighbour."""
        async def ready():
            try:
                peers = set((await self[name].call("status", _timeout=2.0))["peers"])
            except ControlError:
                return False
            return all(p in peers for p in self.config.neighbours(name) if self.alive(p))
        await self.wait_for(ready, timeout, what=f"{name} up and linked")

    # -- process faults ----------------------------------------------------------------
    async def kill(self, name: str) -> None:
        """SIGKILL the node's process (its database stays for a restart)."""
        await trio.to_thread.run_sync(self.launcher.kill, name)

    async def restart(self, name: str, timeout: float = 30.0) -> None:
        """Start the node again on its database (stopping it first if it runs)."""
        if self.launcher.alive(name):
            await trio.to_thread.run_sync(self.launcher.stop, [name])
        self.launcher.spawn(name)
        await self.wait_node_ready(name, timeout)

    async def pause(self, name: str) -> None:
        self.launcher.pause(name)

    async def resume(self, name: str) -> None:
        self.launcher.resume(name)

    async def down(self) -> None:
        """Save the final layer-1 state (RUN/final_state.json, from the node with the
        highest tip), then stop every node of the run; no process of it is left behind."""
        with trio.move_on_after(15):
            await self.save_final_state()
        for handle in self._handles.values():
            await handle.client.aclose()
        await trio.to_thread.run_sync(self.launcher.stop_all)


    async def save_final_state(self) -> None:
        import json

        from ..log import jsonable
        best = None
        for name in self.names:
            if self.alive(name):
                try:
                    tip = await self[name].call("chain.tip", _timeout=3.0)
                except P2PL2Error:
                    continue
                if best is None or tip["height"] > best[1]:
                    best = (name, tip["height"])
        if best is None:
            return
        try:
            summary = await self[best[0]].call("chain.state", _timeout=10.0)
        except P2PL2Error:
            return
        summary["queried"] = best[0]
        (self.run_dir / "final_state.json").write_text(json.dumps(summary, default=jsonable,
                                                                   indent=1))


def require_running(cluster: Cluster) -> None:
    if not any(cluster.alive(n) for n in cluster.names):
        raise P2PL2Error(f"no node of {cluster.run_dir} is running")
