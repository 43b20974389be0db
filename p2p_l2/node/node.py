"""A p2p_l2 node: identity, authenticated peer links, gossip and the control registry.

The same class runs as an OS process over TCP (`node/process.py`) or many to one trio
process over memory streams (`cluster/memory.py`).  Role services (miner, channels, ...)
plug in through `handlers` (wire kinds), `gossip.add_validator` + `subscribe` (topics),
`control.register` (methods) and `services` (background tasks started with the node).
Protocol decisions live in the sans-IO cores; this file only moves bytes and timers.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import trio

from .. import events as ev
from ..chain.service import ChainService
from ..channel.service import ChannelService, TowerService
from ..plasma.service import OperatorService, UserService
from ..config import Config
from ..errors import ControlError, RemoteProtocolError
from ..faults.conditioner import Conditioner, LinkShape
from ..faults.links import LinkFaults
from ..gossip import Deliver, Gossip, Reject, Send
from ..log import EventLog
from ..net.frames import receive_frame
from ..net.link import FATAL, PeerLink
from ..net.policy import Backoff, Scoreboard
from ..wire import MAX_FRAME_SIZE, FrameDecoder, Handshake, Identity, ReplayCache, codec, encode_frame
from .control import ControlRegistry, ControlServer
from .workload import WorkloadRunner

PROTOCOL_VERSION = 1
HANDSHAKE_TIMEOUT = 5.0
STABLE_LINK = 10.0  # seconds a link must last before the dial backoff starts over
HANDSHAKE_FRAME = 4096  # largest frame before the peer is authenticated
MAX_HANDSHAKES = 64  # unauthenticated connections at once
BEHAVIOURS = ("close-stale", "withhold-preimage", "unresponsive", "operator-withhold",
              "operator-invalid-tx", "exit-spent", "double-spend", "censor")
TICK = 0.2  # idle housekeeping: flush the log tail, re-request timed-out gossip fetches


class Node:
    def __init__(self, config: Config, name: str, transport, *, log: EventLog,
                 data_dir: Path | None = None, control_port: int | None = None,
                 token: str | None = None, ping_interval: float = 5.0, ban_seconds: float = 60.0,
                 epoch: float | None = None):
        self.config = config
        self.name = name
        self.spec = config.node(name)
        self.transport = transport
        self.log = log
        self.data_dir = data_dir
        self.identity = Identity.derive(config.cluster.seed, name)
        self.pubkeys = {n: Identity.derive(config.cluster.seed, n).pubkey for n in config.node_names}
        self.names = {pk: n for n, pk in self.pubkeys.items()}
        self.rng = random.Random(f"{config.cluster.seed}/{name}")
        self.skew = 0.0
        self._epoch = epoch  # wall time at trio time 0; set in run() unless shared
        log.clock = self.wall
        order = {n: i for i, n in enumerate(config.node_names)}
        # Of each linked pair the node listed first dials; the other one listens.
        self.neighbours = set(config.neighbours(name))  # the only peers we accept
        self.outbound = [p for p in config.neighbours(name) if order[p] > order[name]]
        self._handshakes = 0
        self.links: dict[str, PeerLink] = {}
        self.scores = Scoreboard(ban_seconds=ban_seconds)
        self.replay_cache = ReplayCache()
        self.ping_interval = ping_interval
        self.gossip = Gossip(name)
        self.subscribers: dict[str, list[Callable[[Deliver], None]]] = {}
        self.handlers: dict[str, Callable[[str, object], None]] = {
            kind: self._gossip_handler(kind) for kind in ("gossip", "inv", "getdata")}
        self.services: list[Callable] = []
        self.status_hooks: list[Callable[[], dict]] = []
        self.on_connect: list[Callable[[str], None]] = []  # called with the peer's name
        self.on_disconnect: list[Callable[[str], None]] = []
        self.misbehaviours: set[str] = set()  # byzantine behaviours switched on (SPEC §5)
        # behaviour -> action run when switched on (None: a flag the service checks); each
        # layer adds the behaviours it implements
        self.behaviours: dict[str, Callable[[], None] | None] = {}
        self.quiet_topics: set[str] = set()  # topics whose layer logs its own events instead
        self.control = ControlRegistry(on_error=self._control_failed)
        self.control_server = (ControlServer(self.control, token, control_port,
                                             on_reject=self._control_rejected)
                               if control_port is not None else None)
        self._links_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.stopped = trio.Event()
        self.faults = LinkFaults()
        # the link conditioner on our side of each link: the config's [topology]
        # default_link / [[link]] shape, replaced by a `fault.link` until `fault.clear`
        self._base_shapes = {p: s for p in self.neighbours
                             if not (s := LinkShape.from_params(asdict(config.link_params(name, p)))).is_identity}
        self._fault_shapes: dict[str, LinkShape] = {}
        self.conditioners: dict[str, Conditioner] = {}
        self._shapes_set = 0
        for peer, shape in self._base_shapes.items():
            self._set_shape(peer, shape)
        self.workloads = WorkloadRunner(self)
        self.chain = ChainService(self)  # every node validates layer 1
        self.channels = ChannelService(self) if "channels" in self.spec.roles else None
        self.tower = TowerService(self) if "watchtower" in self.spec.roles else None
        roles = self.spec.roles
        self.plasma = OperatorService(self) if "plasma-operator" in roles else None
        self.plasma_user = UserService(self) if "plasma-user" in roles else None
        for method, fn in {"status": self.status, "peers": self.peers, "shutdown": self.shutdown,
                           "gossip.publish": self.publish, "gossip.publish_many": self.publish_many,
                           "gossip.stats": self.gossip_stats, "fault.link": self.fault_link,
                           "fault.clear": self.fault_clear,
                           "fault.misbehave": self.misbehave,
                           "clock.skew": self.clock_skew, "ping": self.ping}.items():
            self.control.register(method, fn)

    # -- time --------------------------------------------------------------------------
    def wall(self) -> float:
        """This node's clock in epoch seconds, skew included (follows trio's clock)."""
        try:
            return self._epoch + trio.current_time() + self.skew
        except (TypeError, RuntimeError):  # before run() or outside trio
            return time.time() + self.skew

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self._epoch is None:
            self._epoch = time.time() - trio.current_time()
        self.log.info(ev.NODE_STARTED, pubkey=self.identity.pubkey_hex, roles=list(self.spec.roles),
                      pid=os.getpid())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.transport.serve, self._accept)
                control_port = None
                if self.control_server is not None:
                    await nursery.start(self.control_server.serve)
                    control_port = self.control_server.port
                for peer in self.outbound:
                    nursery.start_soon(self._dial_loop, peer)
                nursery.start_soon(self._tick_loop)
                for service in self.services:
                    await nursery.start(service)
                self.log.info(ev.NODE_LISTENING, port=self.transport.port, control_port=control_port)
                task_status.started(self)
        finally:
            self.log.info(ev.NODE_STOPPED)
            self.log.flush()
            self.stopped.set()

    def misbehaving(self, behaviour: str) -> bool:
        return behaviour in self.misbehaviours

    def spawn(self, fn, *args) -> None:
        """Run a background task in the node's nursery (it ends with the node)."""
        if self._nursery is None:
            raise ControlError("unavailable", "node is not running")
        self._nursery.start_soon(fn, *args)

    def stop(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- connections -------------------------------------------------------------------
    async def _accept(self, stream: trio.abc.Stream, addr: str) -> None:
        done = await self._handshake(stream, addr, initiator=False, expect=None)
        if done is not None:
            await self._run_link(stream, *done, addr=addr, direction="in")

    async def _dial_loop(self, peer: str) -> None:
        backoff = Backoff(rng=self.rng)
        while True:
            while peer in self.links or self.faults.blackholed(peer):
                await self.wait_links_changed()
            now = trio.current_time()
            if self.scores.is_banned(peer, now):
                await trio.sleep(self.scores.banned_until[peer] - now)
                continue
            try:
                stream, addr = await self.transport.connect(peer)
            except (OSError, trio.TooSlowError) as exc:
                delay = backoff.next_delay()
                self.log.emit(ev.PEER_DIAL_FAILED, "debug", peer=peer, attempt=backoff.attempt,
                              delay=round(delay, 3), error=str(exc))
                await trio.sleep(delay)
                continue
            done = await self._handshake(stream, addr, initiator=True, expect=self.pubkeys[peer])
            if done is None:
                await trio.sleep(backoff.next_delay())
                continue
            started = trio.current_time()
            await self._run_link(stream, *done, addr=addr, direction="out")
            if trio.current_time() - started > STABLE_LINK:
                backoff.reset()  # only a link that lasted resets the backoff: no redial storms
            await trio.sleep(backoff.next_delay())

    async def _handshake(self, stream, addr: str, *, initiator: bool, expect: bytes | None):
        hs = Handshake(self.identity, self.config.cluster.name, initiator, expect=expect,
                       is_known=self.names.__contains__, replay_cache=self.replay_cache,
                       version=PROTOCOL_VERSION)
        decoder = FrameDecoder(HANDSHAKE_FRAME)
        self._handshakes += 1
        try:
            if self._handshakes > MAX_HANDSHAKES:
                raise RemoteProtocolError("too_many_handshakes", f"more than {MAX_HANDSHAKES} at once")
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await stream.send_all(b"".join(encode_frame(b) for b in hs.start()))
                while not hs.complete:
                    frame = await receive_frame(stream, decoder)
                    if frame is None:
                        raise RemoteProtocolError("eof", "closed during handshake")
                    out = hs.receive(frame)
                    if out:
                        await stream.send_all(b"".join(encode_frame(b) for b in out))
            name = self.names[hs.peer_pubkey]
            if name not in self.neighbours:
                raise RemoteProtocolError("not_a_neighbour", f"{name} is not linked to us")
            if self.faults.blackholed(name):
                raise RemoteProtocolError("blackholed", f"a fault cuts us off from {name}")
            if self.scores.is_banned(name, trio.current_time()):
                raise RemoteProtocolError("banned", name)
            decoder.max_size = MAX_FRAME_SIZE
            return hs.session(), decoder, name, hs.peer_pubkey
        except RemoteProtocolError as exc:
            if exc.reason != "eof":
                peer = self.names.get(hs.peer_pubkey) if hs.peer_pubkey else None
                self.log.warning(ev.MSG_REJECTED, peer=peer, addr=addr, reason=exc.reason,
                                 detail=exc.detail, stage="handshake")
        except trio.TooSlowError:
            self.log.warning(ev.MSG_REJECTED, addr=addr, reason="handshake_timeout", stage="handshake")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._handshakes -= 1
        await trio.aclose_forcefully(stream)
        return None

    async def _run_link(self, stream, session, decoder, name: str, pubkey: bytes, *,
                        addr: str, direction: str) -> None:
        old = self.links.get(name)
        if old is not None:
            old.close("replaced")
        link = PeerLink(stream, session, decoder, name=name, pubkey=pubkey, addr=addr,
                        direction=direction, since=self.wall(), on_message=self._on_message,
                        on_reject=self._on_reject, ping_interval=self.ping_interval,
                        ping_timeout=4 * self.ping_interval,
                        muted=lambda: self.faults.blackholed(name))
        link.conditioner = self.conditioners.get(name)
        self.links[name] = link
        self.gossip.add_peer(name)
        self.log.info(ev.PEER_CONNECTED, peer=name, direction=direction, addr=addr)
        self._notify_links()
        for callback in self.on_connect:
            callback(name)
        reason = await link.run()
        if self.links.get(name) is link:
            del self.links[name]
            self._execute(self.gossip.remove_peer(name))
            self._notify_links()
            for callback in self.on_disconnect:
                callback(name)
        self.log.info(ev.PEER_DISCONNECTED, peer=name, reason=reason)

    def _notify_links(self) -> None:
        self._links_changed.set()
        self._links_changed = trio.Event()

    async def wait_links_changed(self) -> None:
        await self._links_changed.wait()

    # -- messages ----------------------------------------------------------------------
    def send(self, peer: str, kind: str, payload) -> bool:
        link = self.links.get(peer)
        if link is None or self.faults.blackholed(peer):
            return False
        link.send(kind, payload)
        return True

    def _on_message(self, link: PeerLink, kind: str, payload) -> None:
        if self.faults.blackholed(link.name):
            return
        handler = self.handlers.get(kind)
        try:
            if handler is None:
                raise RemoteProtocolError("unexpected_message", kind)
            handler(link.name, payload)
        except RemoteProtocolError as exc:
            self._on_reject(link, exc, kind)
        except Exception as exc:
            self.log.error(ev.NODE_ERROR, peer=link.name, kind=kind,
                           error=f"{type(exc).__name__}: {exc}")

    def _on_reject(self, link: PeerLink, exc: RemoteProtocolError, kind: str | None = None) -> None:
        self.log.warning(ev.MSG_REJECTED, peer=link.name, reason=exc.reason, detail=exc.detail, kind=kind)
        self._penalize(link.name, exc.reason)
        if exc.reason in FATAL:
            link.close(exc.reason)

    def _penalize(self, peer: str, reason: str) -> None:
        if self.scores.penalize(peer, reason, trio.current_time()):
            until = self.scores.banned_until[peer]
            self.log.warning(ev.PEER_BANNED, peer=peer, reason=reason,
                             until=self.wall() + until - trio.current_time())
            link = self.links.get(peer)
            if link is not None:
                link.close("banned")

    # -- gossip ------------------------------------------------------------------------
    def subscribe(self, topic: str, callback: Callable[[Deliver], None]) -> None:
        self.subscribers.setdefault(topic, []).append(callback)

    def _gossip_handler(self, kind: str) -> Callable[[str, dict], None]:
        def handle(peer: str, payload: dict) -> None:
            self._execute(self.gossip.receive(peer, kind, payload, trio.current_time()))
        return handle

    def _execute(self, actions: list) -> None:
        last_payload = last_body = None
        for action in actions:
            if type(action) is Send:
                link = self.links.get(action.peer)
                if link is None or self.faults.blackholed(action.peer):
                    continue
                if action.payload is not last_payload:
                    last_payload, last_body = action.payload, codec.encode(action.kind, action.payload)
                link.send_body(last_body)
            elif type(action) is Deliver:
                if action.peer is not None:
                    self.log.info(ev.GOSSIP_DELIVERED, msg_id=action.msg_id.hex(), topic=action.topic,
                                  hops=action.hops, origin=action.origin, peer=action.peer,
                                  sent_at=action.sent_at)
                for callback in self.subscribers.get(action.topic, ()):
                    callback(action)
            elif type(action) is Reject:
                self.log.warning(ev.MSG_REJECTED, peer=action.peer, reason=action.reason,
                                 msg_id=action.msg_id.hex(), topic=action.topic, kind="gossip")
                self._penalize(action.peer, action.reason)

    async def _tick_loop(self) -> None:
        while True:
            await trio.sleep(TICK)
            if self.log.dirty:
                self.log.flush()
            self._execute(self.gossip.tick(trio.current_time()))

    # -- control methods ---------------------------------------------------------------
    def status(self) -> dict:
        out = {"name": self.name, "pubkey": self.identity.pubkey_hex, "roles": list(self.spec.roles),
               "peers": sorted(self.links)}
        for hook in self.status_hooks:
            out.update(hook())
        return out

    def peers(self) -> list[dict]:
        return [self.links[n].info() for n in sorted(self.links)]

    async def ping(self, peer: str, timeout: float = 10.0) -> dict:
        """One round trip to a linked peer, through the link's faults: `{peer, rtt_ms}`."""
        link = self.links.get(peer)
        if link is None:
            raise ControlError("unknown_peer", f"{peer!r} is not connected to {self.name}")
        done = trio.Event()
        t0 = trio.current_time()
        link.ping(done)
        with trio.move_on_after(timeout):
            await done.wait()
            return {"peer": peer, "rtt_ms": (trio.current_time() - t0) * 1000}
        raise ControlError("timeout", f"no pong from {peer} within {timeout} s")

    def publish(self, topic: str, data, force: bool = False) -> dict:
        if not isinstance(topic, str) or not topic:
            raise ControlError("bad_params", "topic must be a non-empty string")
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, bytes):
            raise ControlError("bad_params", "data must be a string or bytes")
        try:
            msg_id, actions = self.gossip.publish(topic, data, self.wall(), force=force)
        except RemoteProtocolError as exc:
            raise ControlError("invalid", f"rejected by the {topic!r} validator: {exc}") from None
        if topic not in self.quiet_topics:
            self.log.info(ev.GOSSIP_PUBLISHED, msg_id=msg_id.hex(), topic=topic, size=len(data))
        self._execute(actions)
        return {"msg_id": msg_id.hex()}

    async def publish_many(self, topic: str, count: int, size: int = 100, rate: float = 0.0) -> dict:
        """Originate `count` distinct messages of (at least) `size` bytes, at `rate`/s (0 = at once).

        A load generator for gossip experiments and `p2p-l2 bench gossip`; each message is
        logged like a `gossip.publish` one.  Returns when all are published.
        """
        ints = all(type(v) is int for v in (count, size))
        if not (ints and 0 < count <= 1_000_000 and 16 <= size <= 1_000_000
                and type(rate) in (int, float) and (rate == 0 or 0.01 <= rate <= 1e6)):
            raise ControlError("bad_params", "need 0 < count <= 1e6, 16 <= size <= 1e6, "
                               "rate 0 (at once) or in [0.01, 1e6]")
        start, t0 = self.wall(), trio.current_time()
        pad = b"\0" * size
        for i in range(count):
            if rate:
                await trio.sleep_until(t0 + i / rate)
            elif i % 256 == 0:
                await trio.sleep(0)  # let links drain between bursts
            head = f"{i}:{self.name}:{start:.6f}:".encode()  # distinct across nodes and runs
            data = head + pad[:max(0, size - len(head))]
            self.publish(topic, data)
        return {"count": count, "seconds": trio.current_time() - t0}

    def gossip_stats(self) -> dict:
        """Gossip counters and per-link traffic counters."""
        return {**self.gossip.stats, "links": {n: dict(link.stats) for n, link in self.links.items()}}

    def _set_shape(self, peer: str, shape: LinkShape | None) -> None:
        """Condition what we send to `peer` (None: send as is), on the live link too."""
        if shape is None or shape.is_identity:
            self.conditioners.pop(peer, None)
        else:  # seeded per node, peer and change: a run replays the same losses and delays
            self._shapes_set += 1
            rng = random.Random(f"{self.config.cluster.seed}/{self.name}/{peer}/{self._shapes_set}")
            self.conditioners[peer] = Conditioner(shape, rng)
        link = self.links.get(peer)
        if link is not None:
            link.conditioner = self.conditioners.get(peer)

    def fault_link(self, peer: str, **params) -> dict:
        """Shape our side of the link to `peer` (SPEC §5 `link`): latency_ms, jitter_ms,
        jitter_dist, loss, loss_correlation, duplicate, reorder, reorder_ms,
        bandwidth_kbps, blackhole, drop_types, rules.  Replaces the link's previous fault."""
        if peer not in self.neighbours:
            raise ControlError("unknown_peer", f"{peer!r} is not linked to {self.name}")
        try:
            shape = LinkShape.from_params(params)
        except ValueError as exc:
            raise ControlError("bad_params", str(exc)) from None
        if shape.blackhole:  # nothing either way, and no re-dial (a partition is made of it)
            self.faults.set(peer, blackhole=True)
        else:
            self.faults.clear(peer)
        self._fault_shapes[peer] = shape
        self._set_shape(peer, shape)
        self.log.info(ev.FAULT_APPLIED, action="link", peer=peer, params=shape.to_dict())
        self._notify_links()
        return {"peer": peer, **shape.to_dict()}

    def fault_clear(self, peer: str | None = None) -> dict:
        """Lift the link faults on `peer`, or on every link (the config's shape returns)."""
        peers = [peer] if peer is not None else sorted(set(self._fault_shapes) | set(self.faults.by_peer))
        cleared = []
        for p in peers:
            had = self.faults.clear(p) + ([p] if self._fault_shapes.pop(p, None) else [])
            if had:
                self._set_shape(p, self._base_shapes.get(p))
                cleared.append(p)
                self.log.info(ev.FAULT_CLEARED, action="link", peer=p)
        self._notify_links()
        return {"cleared": cleared}

    def clock_skew(self, offset_s: float) -> dict:
        """Set this node's clock `offset_s` seconds off true time (SPEC §5 `clock-skew`):
        its log timestamps, block times, mempool expiry and the future-time check it applies
        to others' blocks all follow it; durations (timers, timeouts) do not change."""
        if type(offset_s) not in (int, float) or abs(offset_s) > 10 * 365 * 86400:
            raise ControlError("bad_params", "offset_s must be a number of seconds")
        old, self.skew = self.skew, float(offset_s)
        if offset_s:
            self.log.warning(ev.FAULT_APPLIED, action="clock-skew", offset_s=self.skew, was=old)
        else:
            self.log.info(ev.FAULT_CLEARED, action="clock-skew", was=old)
        return {"offset_s": self.skew}

    def misbehave(self, behaviour: str, enable: bool = True) -> dict:
        """Switch a byzantine behaviour on or off (SPEC §5)."""
        if behaviour not in BEHAVIOURS:
            raise ControlError("bad_params", f"behaviour must be one of: {', '.join(BEHAVIOURS)}")
        if behaviour not in self.behaviours:
            raise ControlError("unsupported", f"{self.name} ({', '.join(self.spec.roles) or 'no roles'})"
                               f" cannot {behaviour}")
        if enable:
            self.misbehaviours.add(behaviour)
            self.log.warning(ev.FAULT_APPLIED, action="misbehave", behaviour=behaviour)
            action = self.behaviours[behaviour]
            if action is not None:
                action()
        else:
            self.misbehaviours.discard(behaviour)
            self.log.info(ev.FAULT_CLEARED, action="misbehave", behaviour=behaviour)
        return {"behaviour": behaviour, "enabled": enable}

    async def shutdown(self) -> dict:
        if self._nursery is not None:
            self._nursery.start_soon(self._stop_soon)
        return {"stopping": True}

    async def _stop_soon(self) -> None:
        await trio.sleep(0.05)  # let the reply go out first
        self.stop()

    def _control_failed(self, method: str, exc: ControlError) -> None:
        self.log.warning(ev.CONTROL_ERROR, method=method, code=exc.code, message=exc.message)

    def _control_rejected(self, addr: str, reason: str) -> None:
        self.log.warning(ev.MSG_REJECTED, addr=addr, reason=reason, stage="control")
