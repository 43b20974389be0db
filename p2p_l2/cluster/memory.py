"""In-process clusters: many `Node`s in one trio run over memory streams (DESIGN §2.3).

Deterministic given the seed under `autojump_clock`, and fast: most multi-node tests use
this.  Calls go through the same control registry as the TCP API, and results are
round-tripped through msgpack so they are exactly what a remote caller would see.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import msgpack
import trio

from ..config import Config
from ..errors import P2PL2Error
from ..log import EventLog
from ..net.transport import MemoryNetwork
from ..node.node import Node
from .base import ClusterBase


class MemoryNodeHandle:
    def __init__(self, cluster: "MemoryCluster", name: str):
        self.cluster, self.name = cluster, name

    @property
    def node(self) -> Node:
        node = self.cluster.nodes.get(self.name)
        if node is None:
            raise P2PL2Error(f"node {self.name} is not running")
        return node

    async def call(self, method: str, /, **params):
        return await self.request(method, params)

    async def request(self, method: str, params: dict, timeout: float | None = None):
        result = await self.node.control.call(method, params)
        return msgpack.unpackb(msgpack.packb(result, use_bin_type=True), raw=False)


class MemoryCluster(ClusterBase):
    def __init__(self, config: Config, nursery: trio.Nursery, data_dir: Path, **node_options):
        super().__init__(config)
        self.network = MemoryNetwork()
        self.nursery = nursery
        self.data_dir = data_dir
        self.node_options = node_options
        self.nodes: dict[str, Node] = {}
        self.logs: dict[str, list[dict]] = {name: [] for name in config.node_names}
        self._scopes: dict[str, trio.CancelScope] = {}
        self.epoch = time.time() - trio.current_time()  # one clock for every node

    def __getitem__(self, name: str) -> MemoryNodeHandle:
        self.config.node(name)  # KeyError for unknown names
        return MemoryNodeHandle(self, name)

    def events(self, node: str) -> list[dict]:
        return self.logs[node]

    def alive(self, name: str) -> bool:
        return name in self.nodes

    def make_node(self, name: str) -> Node:
        log = EventLog(name)
        log.listeners.append(self.logs[name].append)
        return Node(self.config, name, self.network.transport(name), log=log,
                    data_dir=self.data_dir / name, epoch=self.epoch, **self.node_options)

    async def start(self, name: str) -> Node:
        """Start (or restart) one node; returns once it listens."""
        if name in self.nodes:
            raise P2PL2Error(f"node {name} is already running")
        return await self.nursery.start(self._run, name)

    async def _run(self, name: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        node = self.make_node(name)
        with trio.CancelScope() as scope:
            self._scopes[name] = scope
            self.nodes[name] = node
            try:
                await node.run(task_status=task_status)
            finally:
                if self.nodes.get(name) is node:
                    del self.nodes[name]

    async def kill(self, name: str) -> None:
        """Stop a node at once (its tasks are cancelled; no goodbye to peers)."""
        scope = self._scopes.pop(name, None)
        if scope is None:
            raise P2PL2Error(f"node {name} is not running")
        node = self.nodes.get(name)
        scope.cancel()
        if node is not None:
            await node.stopped.wait()

    async def pause(self, name: str) -> None:
        raise P2PL2Error("pause/resume stop a process (SIGSTOP); use a process cluster")

    resume = pause

    async def restart(self, name: str) -> Node:
        if name in self.nodes:
            await self.kill(name)
        return await self.start(name)


@asynccontextmanager
async def open_memory_cluster(config: Config, *, data_dir: Path | None = None,
                              connect_timeout: float = 60.0, **node_options):
    """Start every node of `config` in this trio run and wait until all links are up."""
    with tempfile.TemporaryDirectory(prefix="p2p_l2-mem-") as tmp:
        async with trio.open_nursery() as nursery:
            cluster = MemoryCluster(config, nursery, Path(data_dir or tmp), **node_options)
            for name in config.node_names:
                await cluster.start(name)
            await cluster.wait_connected(connect_timeout)
            await cluster.open_config_channels(connect_timeout)
            await cluster.wait_plasma_ready(connect_timeout)
            try:
                yield cluster
            finally:
                nursery.cancel_scope.cancel()
