"""The control API (SPEC §4): a method registry and its TCP server on 127.0.0.1.

Wire format: the same 4-byte length prefix + msgpack as the peer wire.  Request
`{"id", "token", "method", "params"}`; response `{"id", "result"}` or
`{"id", "error": {"code", "message"}}`.  Services register their own methods
(`registry.register("chain.balance", fn)`), so each layer keeps its methods in its module.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Callable

import msgpack
import trio

from ..errors import ControlError, RemoteProtocolError
from ..log import jsonable
from ..net.frames import receive_frame
from ..wire import FrameDecoder, encode_frame

MAX_REQUEST = 1024 * 1024


class ControlRegistry:
    """Maps method names to callables taking keyword params (sync or async)."""

    def __init__(self, on_error: Callable[[str, ControlError], None] | None = None):
        self.methods: dict[str, Callable] = {}
        self.on_error = on_error

    def register(self, name: str, fn: Callable) -> None:
        if name in self.methods:
            raise ValueError(f"control method {name!r} registered twice")
        self.methods[name] = fn

    async def call(self, method: str, params: dict | None = None):
        """Run one method; every failure becomes a ControlError with a stable code."""
        try:
            return await self._call(method, params)
        except ControlError as exc:
            if self.on_error is not None:
                self.on_error(method, exc)
            raise

    async def _call(self, method, params):
        fn = self.methods.get(method) if isinstance(method, str) else None
        if fn is None:
            raise ControlError("unknown_method", f"no control method {method!r}; "
                               f"known: {', '.join(sorted(self.methods))}")
        if params is None:
            params = {}
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise ControlError("bad_params", "params must be an object")
        try:
            inspect.signature(fn).bind(**params)
        except TypeError as exc:
            raise ControlError("bad_params", f"{method}: {exc}") from None
        try:
            result = fn(**params)
            if inspect.isawaitable(result):
                result = await result
        except ControlError:
            raise
        except (TypeError, ValueError) as exc:
            raise ControlError("bad_params", f"{method}: {exc}") from None
        except Exception as exc:  # a bug: report it as a code, keep serving
            raise ControlError("internal", f"{method}: {type(exc).__name__}: {exc}") from exc
        return result


class ControlServer:
    """Serves a registry on 127.0.0.1:port to clients holding the run's token."""

    def __init__(self, registry: ControlRegistry, token: str, port: int = 0,
                 on_reject: Callable[[str, str], None] | None = None):
        self.registry, self.token, self.port = registry, token, port
        self.on_reject = on_reject or (lambda addr, reason: None)

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._handle, listeners, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(MAX_REQUEST)
        try:
            async with stream:
                while (frame := await receive_frame(stream, decoder)) is not None:
                    response = await self._respond(frame)
                    await stream.send_all(encode_frame(response))
        except RemoteProtocolError as exc:
            self.on_reject("control", exc.reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _respond(self, frame: bytes) -> bytes:
        req_id = req = None
        try:
            try:
                req = msgpack.unpackb(frame, raw=False)
            except Exception:
                raise ControlError("bad_request", "request is not msgpack") from None
            if not isinstance(req, dict):
                raise ControlError("bad_request", "request must be a map")
            req_id = req.get("id")
            token = req.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token, self.token):
                raise ControlError("unauthorized", "missing or wrong control token")
            result = await self.registry.call(req.get("method"), req.get("params"))
            out = {"id": req_id, "result": result}
        except ControlError as exc:
            if exc.code in ("bad_request", "unauthorized") and self.registry.on_error:
                method = req.get("method") if isinstance(req, dict) else None
                self.registry.on_error(str(method), exc)
            out = {"id": req_id, **exc.to_wire()}
        try:
            return msgpack.packb(out, use_bin_type=True, default=jsonable)
        except Exception as exc:
            return msgpack.packb({"id": req_id, **ControlError(
                "internal", f"result not serialisable: {exc}").to_wire()})


class ControlClient:
    """A small client with a pool of connections, so concurrent calls never interleave."""

    def __init__(self, host: str, port: int, token: str, timeout: float = 60.0):
        self.host, self.port, self.token, self.timeout = host, port, token, timeout
        self._idle: list[tuple[trio.SocketStream, FrameDecoder]] = []
        self._next_id = 0

    async def call(self, method: str, /, **params):
        """Call `method`; returns its result or raises ControlError(code)."""
        return await self.request(method, params)

    async def request(self, method: str, params: dict, timeout: float | None = None):
        """Like `call`, with the params as a dict and an optional deadline."""
        self._next_id += 1
        req = {"id": self._next_id, "token": self.token, "method": method, "params": params}
        conn = self._idle.pop() if self._idle else None
        try:
            with trio.fail_after(timeout or self.timeout):
                if conn is None:
                    stream = await trio.open_tcp_stream(self.host, self.port)
                    conn = (stream, FrameDecoder(64 * 1024 * 1024))
                stream, decoder = conn
                await stream.send_all(encode_frame(msgpack.packb(req, use_bin_type=True)))
                frame = await receive_frame(stream, decoder)
                if frame is None:
                    raise ControlError("unavailable", f"{self.host}:{self.port} closed the connection")
        except trio.TooSlowError:
            await self._discard(conn)
            raise ControlError("timeout", f"{method}: no answer within {timeout or self.timeout}s") from None
        except OSError as exc:
            await self._discard(conn)
            raise ControlError("unavailable", f"{self.host}:{self.port}: {exc}") from None
        except BaseException:
            await self._discard(conn)
            raise
        self._idle.append(conn)
        resp = msgpack.unpackb(frame, raw=False)
        if "error" in resp:
            err = resp["error"]
            raise ControlError(err.get("code", "internal"), err.get("message", ""))
        return resp.get("result")

    async def _discard(self, conn) -> None:
        if conn is not None:
            await trio.aclose_forcefully(conn[0])

    async def aclose(self) -> None:
        while self._idle:
            await trio.aclose_forcefully(self._idle.pop()[0])
