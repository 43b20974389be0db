"""One authenticated, encrypted link to a peer, after the handshake.

Outbound messages are queued without blocking and a writer task coalesces whatever is
queued into one sealed frame (the plaintext is a run of length-prefixed msgpack bodies),
so a burst costs one encryption and one syscall.  The reader opens frames, splits them
and hands `(kind, payload)` to the node.  Keepalive: a ping every `ping_interval`; a link
silent for `ping_timeout` is closed.  A link fault (`faults.conditioner`) is applied on
the way out: with one set, `send_body` asks it when each message leaves (or whether it is
lost, duplicated, or closes the link) and a delay task releases held messages on time;
without one, nothing of it runs.
"""

from __future__ import annotations

import heapq
import itertools
import struct
from collections.abc import Callable

import trio

from ..errors import RemoteProtocolError
from ..faults.conditioner import Conditioner, kind_of
from ..wire import FrameDecoder, Session, codec, encode_frame

MAX_BATCH_BYTES = 256 * 1024
QUEUE_LIMIT = 20_000
QUEUE_BYTES = 256 * 1024 * 1024  # a peer that lets this much pile up is dropped
_LEN = struct.Struct(">I")

# Errors that leave the stream's state unknown: the link must close.
FATAL = {"frame_too_large", "decrypt_failed", "malformed_batch"}


class PeerLink:
    def __init__(self, stream: trio.abc.Stream, session: Session, decoder: FrameDecoder, *,
                 name: str, pubkey: bytes, addr: str, direction: str, since: float,
                 on_message: Callable[["PeerLink", str, object], None],
                 on_reject: Callable[["PeerLink", RemoteProtocolError], None],
                 ping_interval: float = 5.0, ping_timeout: float = 20.0,
                 muted: Callable[[], bool] = lambda: False):
        self.stream, self.session, self.decoder = stream, session, decoder
        self.name, self.pubkey, self.addr, self.direction, self.since = name, pubkey, addr, direction, since
        self.on_message, self.on_reject = on_message, on_reject
        self.muted = muted  # a blackhole fault: keepalive answers stop too
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self._send, self._recv = trio.open_memory_channel[bytes](QUEUE_LIMIT)
        self._last_rx = trio.current_time()
        self._ping_n = 0
        self._pings: dict[int, tuple[float, trio.Event | None]] = {}  # n -> (sent at, waiter)
        self.rtt: float | None = None  # seconds, the last ping's round trip
        self.close_reason = "closed"
        self.queued_bytes = 0
        self.cancel_scope = trio.CancelScope()
        self.stats = {"frames_out": 0, "frames_in": 0, "msgs_out": 0, "msgs_in": 0,
                      "bytes_out": 0, "bytes_in": 0}
        self.conditioner: Conditioner | None = None
        self._held: list[tuple[float, int, bytes | None]] = []  # (leave at, seq, body/None=close)
        self._seq = itertools.count()
        self._held_changed = trio.Event()
        self._close_when_sent = False

    def info(self) -> dict:
        return {"name": self.name, "pubkey": self.pubkey.hex(), "addr": self.addr,
                "direction": self.direction, "since": self.since,
                "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3)}

    def ping(self, done: trio.Event | None = None) -> None:
        """Send a ping; its pong sets `rtt` (and `done`).  Unanswered pings are forgotten
        after a few newer ones."""
        self._ping_n += 1
        self._pings[self._ping_n] = (trio.current_time(), done)
        for n in [n for n in self._pings if n <= self._ping_n - 16]:
            del self._pings[n]
        self.send("ping", {"n": self._ping_n})

    # -- sending -----------------------------------------------------------------------
    def send(self, kind: str, payload) -> None:
        """Queue one message; never blocks.  A peer too slow to drain its queue is dropped."""
        self.send_body(codec.encode(kind, payload))

    def send_body(self, body: bytes) -> None:
        cond = self.conditioner
        if cond is not None:
            self._condition(cond, body)
            return
        self._queue(body)

    def _condition(self, cond: Conditioner, body: bytes) -> None:
        now = trio.current_time()
        decision = cond.decide(kind_of(body) if cond.needs_kind else "", len(body), now)
        if decision.close == "before":
            self.close("fault:close-before")
            return
        for t in decision.sends:
            if t <= now:
                self._queue(body)
            else:
                heapq.heappush(self._held, (t, next(self._seq), body))
        if decision.close == "after":
            last = decision.sends[-1] if decision.sends else now
            heapq.heappush(self._held, (last, next(self._seq), None))
        if self._held:
            self._held_changed.set()

    async def _release_held(self) -> None:
        """Send held (delayed) messages when their time comes."""
        held = self._held
        while True:
            if not held:
                self._held_changed = trio.Event()
                await self._held_changed.wait()
                continue
            t, _, body = held[0]
            if t > trio.current_time():
                self._held_changed = trio.Event()
                with trio.move_on_at(t):
                    await self._held_changed.wait()
                continue
            heapq.heappop(held)
            if body is None:  # close once what is queued (the rule's message) is out
                self._close_when_sent = True
                if self.queued_bytes == 0:
                    self.close("fault:close-after")
                return
            self._queue(body)

    def _queue(self, body: bytes) -> None:
        if self.queued_bytes > QUEUE_BYTES:
            self.close("send_queue_full")
            return
        try:
            self._send.send_nowait(body)
            self.queued_bytes += len(body)
        except trio.WouldBlock:
            self.close("send_queue_full")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def close(self, reason: str) -> None:
        if self.close_reason == "closed":
            self.close_reason = reason
        self.cancel_scope.cancel()

    async def _writer(self) -> None:
        recv = self._recv
        while True:
            body = await recv.receive()
            parts = [_LEN.pack(len(body)), body]
            size = len(body)
            count = 1
            while size < MAX_BATCH_BYTES:
                try:
                    body = recv.receive_nowait()
                except trio.WouldBlock:
                    break
                parts += (_LEN.pack(len(body)), body)
                size += len(body)
                count += 1
            self.queued_bytes -= size
            frame = encode_frame(self.session.seal(b"".join(parts)))
            self.stats["frames_out"] += 1
            self.stats["msgs_out"] += count
            self.stats["bytes_out"] += len(frame)
            await self.stream.send_all(frame)
            if self._close_when_sent and self.queued_bytes == 0:
                self.close("fault:close-after")
                return

    # -- receiving ---------------------------------------------------------------------
    def _dispatch_frame(self, frame: bytes) -> None:
        plain = self.session.open(frame)
        self.stats["frames_in"] += 1
        self.stats["bytes_in"] += len(frame) + 4
        pos, end = 0, len(plain)
        while pos < end:
            if pos + 4 > end:
                raise RemoteProtocolError("malformed_batch", "truncated length")
            (n,) = _LEN.unpack_from(plain, pos)
            pos += 4
            if pos + n > end:
                raise RemoteProtocolError("malformed_batch", "truncated body")
            body = plain[pos:pos + n]
            pos += n
            self.stats["msgs_in"] += 1
            try:
                kind, payload = codec.decode(body)
            except RemoteProtocolError as exc:
                self.on_reject(self, exc)
                continue
            if kind == "ping":
                if not self.muted():
                    self.send("pong", payload)
            elif kind == "pong":
                sent = self._pings.pop(payload.get("n"), None) if type(payload) is dict else None
                if sent is not None:
                    self.rtt = trio.current_time() - sent[0]
                    if sent[1] is not None:
                        sent[1].set()
            elif kind == "bye":
                self.close("peer_bye:" + payload["reason"])
                return
            else:
                self.on_message(self, kind, payload)

    async def _reader(self) -> None:
        decoder = self.decoder
        while True:
            frame = decoder.next_frame()
            while frame is not None:
                self._dispatch_frame(frame)
                frame = decoder.next_frame()
            data = await self.stream.receive_some(65536)
            if not data:
                self.close("eof")
                return
            self._last_rx = trio.current_time()
            decoder.feed(data)

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            if trio.current_time() - self._last_rx > self.ping_timeout:
                self.close("ping_timeout")
                return
            if not self.muted():
                self.ping()

    async def _guard(self, fn) -> None:
        try:
            await fn()
        except RemoteProtocolError as exc:
            self.on_reject(self, exc)
            self.close(exc.reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.close(f"io_error:{type(exc).__name__}")

    async def run(self) -> str:
        """Serve the link until it closes; returns the reason."""
        try:
            with self.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, self._writer)
                    nursery.start_soon(self._release_held)
                    nursery.start_soon(self._keepalive)
                    await self._guard(self._reader)
                    nursery.cancel_scope.cancel()
        finally:
            self._send.close()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
        return self.close_reason
