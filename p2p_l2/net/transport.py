"""How a node listens and dials: real TCP, or in-memory streams for in-process clusters.

Both offer `serve(handler, task_status)` (calls `handler(stream, addr)` per inbound
connection) and `connect(name) -> (stream, addr)`; the node above them is the same.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

Handler = Callable[[trio.abc.Stream, str], Awaitable[None]]


class TcpTransport:
    """Listens on `addrs[me]`, dials `addrs[peer]`; addrs map node name -> (host, port)."""

    def __init__(self, me: str, addrs: dict[str, tuple[str, int]], connect_timeout: float = 5.0):
        self.me = me
        self.addrs = addrs
        self.connect_timeout = connect_timeout
        self.port: int | None = None

    async def serve(self, handler: Handler, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        host, port = self.addrs[self.me]
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]

        async def on_conn(stream: trio.SocketStream) -> None:
            try:
                peer_host, peer_port = stream.socket.getpeername()[:2]
                addr = f"{peer_host}:{peer_port}"
            except OSError:
                addr = "?"
            await handler(stream, addr)

        await trio.serve_listeners(on_conn, listeners, task_status=task_status)

    async def connect(self, name: str) -> tuple[trio.abc.Stream, str]:
        host, port = self.addrs[name]
        with trio.fail_after(self.connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
        return stream, f"{host}:{port}"


class MemoryNetwork:
    """A switchboard of in-process nodes joined by `trio.testing.memory_stream_pair`."""

    def __init__(self) -> None:
        self._servers: dict[str, tuple[trio.Nursery, Handler]] = {}

    def transport(self, name: str) -> "MemoryTransport":
        return MemoryTransport(self, name)


class MemoryTransport:
    def __init__(self, network: MemoryNetwork, me: str):
        self.network = network
        self.me = me
        self.port = 0

    async def serve(self, handler: Handler, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.network._servers[self.me] = (nursery, handler)
            try:
                task_status.started()
                await trio.sleep(math.inf)
            finally:
                if self.network._servers.get(self.me, (None,))[0] is nursery:
                    del self.network._servers[self.me]

    async def connect(self, name: str) -> tuple[trio.abc.Stream, str]:
        await trio.sleep(0)
        server = self.network._servers.get(name)
        if server is None:
            raise OSError(f"connection refused: {name} is not listening")
        from trio.testing import memory_stream_pair  # imports pytest: keep it out of node processes

        nursery, handler = server
        ours, theirs = memory_stream_pair()
        nursery.start_soon(handler, theirs, f"mem:{self.me}")
        return ours, f"mem:{name}"
