"""Sans-IO gossip: flooding with a bounded seen-cache, inventory/fetch for large objects.

Small messages are pushed whole to every peer not known to have them.  Objects at or over
`inv_threshold` bytes (or on a topic in `inv_topics`) are announced by id (`inv`) and sent
only when a peer asks (`getdata`), one peer at a time, so a link carries each at most once.
Every object passes the topic's validator before it is delivered or relayed; what a node
rejects it never relays.  The core returns actions; the node's trio loop carries them out.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import RemoteProtocolError

ID_SIZE = 16

# validator(data, peer) -> None; peer is None for our own messages.  Raises
# RemoteProtocolError(reason) to reject, Ignore to pass over without judging.
Validator = Callable[[bytes, Any], None]
MAX_HOPS = 255
MAX_WANTED = 10_000  # objects being fetched at once; more announcements wait for a re-announce


class Ignore(Exception):
    """Raised by a validator that cannot judge a message yet (e.g. a block whose parent is
    unknown): it is neither delivered, relayed nor remembered, and nobody is penalised."""


def message_id(topic: str, data: bytes) -> bytes:
    return hashlib.blake2b(topic.encode() + b"\0" + data, digest_size=ID_SIZE).digest()


@dataclass(slots=True)
class Send:
    peer: Any
    kind: str
    payload: dict


@dataclass(slots=True)
class Deliver:
    msg_id: bytes
    topic: str
    data: bytes
    hops: int
    origin: str
    sent_at: float
    peer: Any  # None when published locally


@dataclass(slots=True)
class Reject:
    peer: Any
    msg_id: bytes
    topic: str
    reason: str


class _Bounded(OrderedDict):
    """Insertion-ordered dict that forgets its oldest entries past `maxlen`."""

    def __init__(self, maxlen: int):
        super().__init__()
        self.maxlen = maxlen

    def put(self, key, value) -> None:
        self[key] = value
        if len(self) > self.maxlen:
            self.popitem(last=False)


class Gossip:
    def __init__(self, origin: str, *, seen_size: int = 20_000, store_bytes: int = 64 << 20,
                 inv_threshold: int = 4096, inv_topics: frozenset[str] = frozenset(),
                 fetch_timeout: float = 2.0):
        self.origin = origin
        self.peers: set = set()
        self.validators: dict[str, Validator] = {}
        self.inv_threshold = inv_threshold
        self.inv_topics = set(inv_topics)
        self.fetch_timeout = fetch_timeout
        self._seen: _Bounded = _Bounded(seen_size)       # msg_id -> set of peers known to have it
        self._store: OrderedDict[bytes, dict] = OrderedDict()  # msg_id -> payload, for getdata
        self._store_bytes, self.store_limit = 0, store_bytes
        self._wanted: dict[bytes, tuple[Any, float, list]] = {}  # id -> (asked peer, deadline, other announcers)
        self.stats = {"published": 0, "delivered": 0, "duplicates": 0, "rejected": 0,
                      "objects_sent": 0}

    # -- peers -----------------------------------------------------------------------
    def add_peer(self, peer) -> None:
        self.peers.add(peer)

    def remove_peer(self, peer) -> list[Send]:
        self.peers.discard(peer)
        return self._reassign(lambda asked: asked == peer, now=None)

    def add_validator(self, topic: str, validator: Validator, *, inventory: bool = False) -> None:
        self.validators[topic] = validator
        if inventory:
            self.inv_topics.add(topic)

    def has(self, msg_id: bytes) -> bool:
        return msg_id in self._seen

    # -- outgoing ----------------------------------------------------------------------
    def publish(self, topic: str, data: bytes, now: float, force: bool = False) -> tuple[bytes, list]:
        """Originate a message; raises RemoteProtocolError if our own validator rejects it.

        A message seen before is not sent again, unless `force` (e.g. txs a reorg returned
        to the mempool): then it goes to every peer not known to have it."""
        msg_id = message_id(topic, data)
        if msg_id in self._seen:
            if not force:
                return msg_id, []
            payload = {"id": msg_id, "t": topic, "d": data, "h": 0, "o": self.origin, "ts": now}
            return msg_id, self._relay(payload, source=None)
        validator = self.validators.get(topic)
        if validator is not None:
            validator(data, None)
        payload = {"id": msg_id, "t": topic, "d": data, "h": 0, "o": self.origin, "ts": now}
        self.stats["published"] += 1
        actions: list = [Deliver(msg_id, topic, data, 0, self.origin, now, None)]
        self._seen.put(msg_id, set())
        actions += self._relay(payload, source=None)
        return msg_id, actions

    def _is_inventory(self, payload: dict) -> bool:
        return payload["t"] in self.inv_topics or len(payload["d"]) >= self.inv_threshold

    def _relay(self, payload: dict, source) -> list[Send]:
        msg_id = payload["id"]
        holders = self._seen[msg_id]
        targets = [p for p in self.peers if p != source and p not in holders]
        if self._is_inventory(payload):
            self._keep(msg_id, payload)
            for p in targets:
                holders.add(p)  # announced: never announce or send to this peer again
            return [Send(p, "inv", {"ids": [msg_id]}) for p in targets]
        out = dict(payload, h=min(payload["h"] + 1, MAX_HOPS)) if source is not None else payload
        for p in targets:
            holders.add(p)
        self.stats["objects_sent"] += len(targets)
        return [Send(p, "gossip", out) for p in targets]

    # -- incoming ----------------------------------------------------------------------
    def receive(self, peer, kind: str, payload: dict, now: float) -> list:
        if kind == "gossip":
            return self._on_object(peer, payload)
        if kind == "inv":
            return self._on_inv(peer, payload["ids"], now)
        if kind == "getdata":
            return self._on_getdata(peer, payload["ids"])
        raise RemoteProtocolError("unexpected_message", kind)

    def _keep(self, msg_id: bytes, payload: dict) -> None:
        """Store an inventory object for getdata, within a byte budget (oldest go first)."""
        self._store[msg_id] = payload
        self._store_bytes += len(payload["d"])
        while self._store_bytes > self.store_limit and len(self._store) > 1:
            _, old = self._store.popitem(last=False)
            self._store_bytes -= len(old["d"])

    def _on_object(self, peer, payload: dict) -> list:
        msg_id, topic, data = payload["id"], payload["t"], payload["d"]
        holders = self._seen.get(msg_id)
        if holders is not None:
            holders.add(peer)
            self.stats["duplicates"] += 1
            return []
        if message_id(topic, data) != msg_id:
            raise RemoteProtocolError("bad_msg_id", msg_id.hex())
        self._wanted.pop(msg_id, None)
        validator = self.validators.get(topic)
        if validator is not None:
            try:
                validator(data, peer)
            except Ignore:
                return []
            except RemoteProtocolError as exc:
                self._seen.put(msg_id, {peer})
                self.stats["rejected"] += 1
                return [Reject(peer, msg_id, topic, exc.reason)]
        self._seen.put(msg_id, {peer})
        self.stats["delivered"] += 1
        deliver = Deliver(msg_id, topic, data, payload["h"] + 1, payload["o"], payload["ts"], peer)
        return [deliver, *self._relay(payload, source=peer)]

    def _on_inv(self, peer, ids: list[bytes], now: float) -> list[Send]:
        want = []
        for msg_id in ids:
            holders = self._seen.get(msg_id)
            if holders is not None:
                holders.add(peer)
                continue
            asked = self._wanted.get(msg_id)
            if asked is None:
                if len(self._wanted) < MAX_WANTED:
                    self._wanted[msg_id] = (peer, now + self.fetch_timeout, [])
                    want.append(msg_id)
            elif asked[0] != peer and peer not in asked[2]:
                asked[2].append(peer)
        return [Send(peer, "getdata", {"ids": want})] if want else []

    def _on_getdata(self, peer, ids: list[bytes]) -> list[Send]:
        out = []
        for msg_id in ids:
            payload = self._store.get(msg_id)
            if payload is not None:
                holders = self._seen.get(msg_id)
                if holders is not None:
                    holders.add(peer)
                self.stats["objects_sent"] += 1
                out.append(Send(peer, "gossip", dict(payload, h=min(payload["h"] + 1, MAX_HOPS))))
        return out

    def tick(self, now: float) -> list[Send]:
        """Re-ask another announcer for objects whose fetch timed out."""
        return self._reassign(lambda _asked: True, now)

    def _reassign(self, stale: Callable[[Any], bool], now: float | None) -> list[Send]:
        out = []
        for msg_id, (asked, deadline, others) in list(self._wanted.items()):
            if not stale(asked) or (now is not None and deadline > now):
                continue
            others = [p for p in others if p in self.peers]
            if not others:
                del self._wanted[msg_id]
                continue
            nxt = others.pop(0)
            self._wanted[msg_id] = (nxt, (now or deadline) + self.fetch_timeout, others)
            out.append(Send(nxt, "getdata", {"ids": [msg_id]}))
        return out
