"""One side of a two-party payment channel: batched HTLC updates, acks and re-sync (DESIGN §5).

Sans-IO: local calls and peer messages go in, actions come out (`Send`, `Persist`, `Committed`,
`HtlcAdded`, `HtlcFulfilled`, `HtlcFailed`, `OpRejected`, `Rejected`).  The service carries the
actions out in order: it writes `Persist` to SQLite before it sends anything that follows it.
The L1 height is fed in with `set_height`; nothing here reads a clock.
"""

# Design: each side keeps `committed` (signed by both), a FIFO of its own ops and at most one
# proposal in flight (ops + our signature); the peer persists, then countersigns.  If both propose
# the same seq, A's wins and B re-queues its ops; on (re)connect both adopt the higher state.

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import LocalProtocolError, RemoteProtocolError
from ..wire import Identity, codec, verify
from ..wire.codec import Bytes, Optional, fields
from .commitment import A, B, ChannelState, Htlc, SignedState, payment_hash, sign_state

__all__ = [
    "DISCONNECTED", "SYNCING", "IDLE", "PROPOSED", "TRANSITIONS",
    "Channel", "InvalidOp", "AddHtlc", "FulfillHtlc", "FailHtlc",
    "Send", "Persist", "Committed", "HtlcAdded", "HtlcFulfilled", "HtlcFailed", "OpRejected",
    "Rejected", "Resync", "RESYNC_REASONS",
]

MAX_OPS = 1000            # ops in one ch_update (a state holds at most 1000 HTLCs anyway)
MAX_ONION = 8192          # bytes; an onion (channel/onion.py) is 2,625 (10 hops x 256)
MAX_PREIMAGE = 256        # bytes, as the channel contract accepts
MAX_REASON = 256          # characters of a fail reason
_ID_EPOCH_BITS = 32       # htlc id = (epoch << 32) | (counter << 1) | offerer, see _start_ids
_INT_MAX = 2**63

# ---------------------------------------------------------------- states and transitions

DISCONNECTED = "disconnected"  # no link: local ops queue up, nothing is sent
SYNCING = "syncing"            # our ch_sync is sent; waiting for the peer's
IDLE = "idle"                  # in sync, nothing of ours in flight
PROPOSED = "proposed"          # our ch_update is in flight (at most one)

# (state, event) -> next state.  Events are local calls and received message kinds; a pair that
# is missing is illegal: LocalProtocolError for a call, RemoteProtocolError("unexpected_message")
# for a message.  A bad message changes nothing (no transition).  `flush()` and the op calls
# (add/fulfil/fail) are legal in every state and only queue; flush() in IDLE raises "propose".
TRANSITIONS: dict[tuple[str, str], Any] = {
    (DISCONNECTED, "disconnect"): DISCONNECTED,
    (DISCONNECTED, "reconnect"): SYNCING,      # send ch_sync with our committed state
    (SYNCING, "disconnect"): DISCONNECTED,
    (SYNCING, "ch_sync"): IDLE,                # adopt the higher of the two committed states
    (IDLE, "disconnect"): DISCONNECTED,
    (IDLE, "propose"): PROPOSED,               # flush() with ops queued: send ch_update
    (IDLE, "ch_update"): IDLE,                 # persist, then ch_ack; the state is committed
    (IDLE, "ch_nack"): IDLE,                   # stale (not about a proposal in flight): ignored
    (PROPOSED, "disconnect"): DISCONNECTED,    # the in-flight ops go back to the queue front
    (PROPOSED, "ch_ack"): IDLE,                # persist; the state is committed
    (PROPOSED, "ch_nack"): IDLE,               # the refused op(s) are dropped, the rest re-queued
    # The peer's update at our proposal's seq (both proposed at once): A's proposal wins.  A
    # ignores B's; B abandons its own (re-queues the ops) and handles A's as in IDLE.
    (PROPOSED, "ch_update"): {A: PROPOSED, B: IDLE},
}

_MESSAGES = ("ch_update", "ch_ack", "ch_nack", "ch_sync")

# ---------------------------------------------------------------- ops


class AddHtlc(NamedTuple):
    """We (the proposer) offer `amount` to the peer against `payment_hash` until `expiry`."""
    id: int
    amount: int
    payment_hash: bytes
    expiry: int
    onion: bytes


class FulfillHtlc(NamedTuple):
    """We claim an HTLC the peer offered us with its preimage."""
    id: int
    preimage: bytes


class FailHtlc(NamedTuple):
    """We refuse an HTLC the peer offered us; the amount goes back to the peer."""
    id: int
    reason: str


_OP_CODES = {AddHtlc: 0, FulfillHtlc: 1, FailHtlc: 2}


def _op_to_wire(op) -> list:
    return [_OP_CODES[type(op)], *op]


class InvalidOp(LocalProtocolError):
    """An op breaks a channel rule; `reason` is a short stable word (the same word a peer's
    ch_nack carries when it refuses the op)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _is_int(v, lo: int = 0) -> bool:
    return type(v) is int and lo <= v < _INT_MAX


def _typed(op):
    """Check an op's field types and sizes (not the channel rules); returns it or raises."""
    t = type(op)
    if not _is_int(op.id):
        raise InvalidOp("bad_op", "htlc id: expected an integer >= 0")
    if t is AddHtlc:
        if not _is_int(op.amount):
            raise InvalidOp("bad_amount", "amount: expected an integer")
        if type(op.payment_hash) is not bytes or len(op.payment_hash) != 32:
            raise InvalidOp("bad_op", "payment_hash: expected 32 bytes")
        if not _is_int(op.expiry):
            raise InvalidOp("bad_expiry", "expiry: expected an integer >= 0")
        if type(op.onion) is not bytes or len(op.onion) > MAX_ONION:
            raise InvalidOp("bad_op", f"onion: expected at most {MAX_ONION} bytes")
    elif t is FulfillHtlc:
        if type(op.preimage) is not bytes or not 0 < len(op.preimage) <= MAX_PREIMAGE:
            raise InvalidOp("bad_preimage", f"preimage: expected 1..{MAX_PREIMAGE} bytes")
    elif t is FailHtlc:
        if type(op.reason) is not str or len(op.reason) > MAX_REASON:
            raise InvalidOp("bad_op", f"fail reason: expected a string of <= {MAX_REASON} chars")
    return op


def _op_from_wire(w):
    if type(w) is not list or not w or w[0] not in (0, 1, 2) or type(w[0]) is not int:
        raise InvalidOp("bad_op", "expected [0, id, amount, hash, expiry, onion], "
                                  "[1, id, preimage] or [2, id, reason]")
    cls = (AddHtlc, FulfillHtlc, FailHtlc)[w[0]]
    if len(w) != len(cls._fields) + 1:
        raise InvalidOp("bad_op", f"{cls.__name__}: expected {len(cls._fields)} fields")
    return _typed(cls(*w[1:]))


class _Ledger:
    """Balances and pending HTLCs of a state under construction (mutable, cheap to copy)."""

    __slots__ = ("bal", "htlcs", "count")

    def __init__(self, state: ChannelState | None = None):
        if state is not None:
            self.bal = [state.bal_a, state.bal_b]
            self.htlcs = {h.id: h for h in state.htlcs}  # insertion order = the state's order
            self.count = [0, 0]
            for h in state.htlcs:
                self.count[h.offerer] += 1

    def copy(self) -> _Ledger:
        new = _Ledger()
        new.bal, new.htlcs, new.count = list(self.bal), dict(self.htlcs), list(self.count)
        return new

    def state(self, cid: bytes, seq: int) -> ChannelState:
        return ChannelState(cid, seq, self.bal[A], self.bal[B], tuple(self.htlcs.values()))


def _apply(led: _Ledger, op, proposer: int, height: int, min_delta: int, max_htlcs: int) -> None:
    """Apply one op proposed by `proposer` to `led`, or raise InvalidOp leaving `led` unchanged."""
    t = type(op)
    if t is AddHtlc:
        if op.id & 1 != proposer:
            raise InvalidOp("bad_id", f"htlc {op.id}: ids offered by party {proposer} have "
                                      f"parity {proposer}")
        if op.id in led.htlcs:
            raise InvalidOp("duplicate_id", f"htlc {op.id} is already pending")
        if op.amount <= 0:
            raise InvalidOp("bad_amount", f"htlc {op.id}: amount {op.amount} is not positive")
        if op.amount > led.bal[proposer]:
            raise InvalidOp("insufficient_balance",
                            f"htlc {op.id}: amount {op.amount} > balance {led.bal[proposer]}")
        if led.count[proposer] >= max_htlcs:
            raise InvalidOp("too_many_htlcs", f"at most {max_htlcs} pending per direction")
        if op.expiry <= height + min_delta:
            raise InvalidOp("bad_expiry", f"htlc {op.id}: expiry {op.expiry} <= height "
                                          f"{height} + min delta {min_delta}")
        led.bal[proposer] -= op.amount
        led.count[proposer] += 1
        led.htlcs[op.id] = Htlc(op.id, proposer, op.amount, op.payment_hash, op.expiry)
        return
    h = led.htlcs.get(op.id)
    if h is None:
        raise InvalidOp("unknown_htlc", f"htlc {op.id} is not pending")
    if h.offerer == proposer:
        raise InvalidOp("not_receiver", f"htlc {op.id}: only its receiver settles it")
    if t is FulfillHtlc:
        if payment_hash(op.preimage) != h.payment_hash:
            raise InvalidOp("bad_preimage", f"htlc {op.id}: preimage does not match")
        led.bal[proposer] += h.amount
    else:
        led.bal[h.offerer] += h.amount
    led.count[h.offerer] -= 1
    del led.htlcs[op.id]


# ---------------------------------------------------------------- actions


@dataclass(slots=True)
class Send:
    """Send this message to the peer (after every Persist before it has been written)."""
    kind: str
    payload: dict


@dataclass(slots=True)
class Persist:
    """Write this state durably before carrying out the actions that follow."""
    signed: SignedState


@dataclass(slots=True)
class Committed:
    """Our committed state changed (a Persist of the same state came first)."""
    signed: SignedState


@dataclass(slots=True)
class HtlcAdded:
    """The peer offered us an HTLC (now committed): forward it or settle it."""
    htlc: Htlc
    onion: bytes


@dataclass(slots=True)
class HtlcFulfilled:
    """The peer claimed an HTLC we offered: pass the preimage upstream."""
    id: int
    preimage: bytes


@dataclass(slots=True)
class HtlcFailed:
    """The peer refused an HTLC we offered; its amount is back in our balance."""
    id: int
    reason: str


@dataclass(slots=True)
class OpRejected:
    """One of our queued ops was dropped: it broke a rule at flush time, or the peer nacked it."""
    op: Any
    reason: str


@dataclass(slots=True)
class Resync:
    """The two sides are out of step (a message was lost on the way: a lossy link): drop
    the link and re-synchronise on reconnect; our proposal in flight is re-queued by
    on_disconnect, not refused."""
    reason: str


# nack reasons that mean "we are out of step", not "your update is wrong"
RESYNC_REASONS = frozenset({"bad_seq"})


@dataclass(slots=True)
class Rejected:
    """The peer sent something invalid (`error.reason`); nothing changed.  Unless it was a
    ch_nack itself, a Send(ch_nack) with the same reason precedes this."""
    kind: str
    error: RemoteProtocolError


class _Proposal(NamedTuple):
    state: ChannelState
    digest: bytes
    ops: list
    sig: bytes
    ledger: _Ledger  # of `state`


# ---------------------------------------------------------------- the machine


class Channel:
    """One side of a channel.  `committed` is the highest state both parties signed (at open:
    seq 0 with the funding balances).  Call `on_reconnect()` when the link to the peer comes
    up (the first time too), `receive()` for each message, and `flush()` after local ops and
    after each `receive()`: it proposes everything queued when nothing of ours is in flight.
    New HTLCs can be offered once the first ch_sync since construction has been processed."""

    def __init__(self, net: str, cid: bytes, me: Identity, party: int, peer_pubkey: bytes,
                 committed: SignedState, *, max_htlcs: int = 30, min_expiry_delta: int = 6,
                 height: int = 0):
        if party not in (A, B) or type(party) is not int:
            raise ValueError("party must be A (0) or B (1)")
        if not 0 < max_htlcs <= 500:
            raise ValueError("max_htlcs must be in 1..500 (a state holds at most 1000 HTLCs)")
        if committed.state.cid != cid:
            raise ValueError("committed state is for another channel")
        self.net, self.cid, self.me, self.party = net, cid, me, party
        self.peer_pubkey = peer_pubkey
        self._pk = (me.pubkey, peer_pubkey) if party == A else (peer_pubkey, me.pubkey)
        if not committed.verify(net, *self._pk):
            raise ValueError("committed state does not carry both parties' signatures")
        self.max_htlcs, self.min_expiry_delta, self.height = max_htlcs, min_expiry_delta, height
        self._state = DISCONNECTED
        self._committed = committed
        self._ledger = _Ledger(committed.state)  # of `committed`; copied, never mutated
        self._queue: list = []
        self._hold = False  # the peer was not ready for our update: wait until it speaks
        self._inflight: _Proposal | None = None
        self._tip: _Ledger | None = None  # committed + in flight + queued, for local checks
        self._next_id: int | None = None  # set at the first ch_sync (see _start_ids)

    # -- queries ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def committed(self) -> SignedState:
        return self._committed

    def balance(self, party: int) -> int:
        return self._committed.state.balance(party)

    @property
    def pending_htlcs(self) -> tuple[Htlc, ...]:
        return self._committed.state.htlcs

    @property
    def in_flight(self) -> tuple | None:
        """(seq, ops) of our proposal awaiting the peer's ack, or None."""
        p = self._inflight
        return None if p is None else (p.state.seq, tuple(p.ops))

    @property
    def queued(self) -> tuple:
        return tuple(self._queue)

    def __repr__(self) -> str:
        return (f"<Channel {self.cid.hex()[:8]} party={'AB'[self.party]} {self._state} "
                f"seq={self._committed.state.seq} queued={len(self._queue)}>")

    # -- local calls --------------------------------------------------------------------
    def set_height(self, height: int) -> None:
        """The current L1 height (HTLC expiries are checked against it)."""
        self.height = height

    def add_htlc(self, amount: int, payment_hash: bytes, expiry: int, onion: bytes = b"") -> int:
        """Queue an HTLC we offer; returns its id.  Raises InvalidOp if it breaks a rule on
        top of everything already committed, in flight and queued."""
        if self._next_id is None:
            raise LocalProtocolError("add_htlc before the first ch_sync: ids are not set yet")
        if self._next_id >> _ID_EPOCH_BITS != self._id_epoch:
            raise LocalProtocolError("htlc ids of this epoch are used up: rebuild the channel")
        op = AddHtlc(self._next_id, amount, payment_hash, expiry, onion)
        self._queue_op(op)
        self._next_id += 2
        return op.id

    def fulfill_htlc(self, id: int, preimage: bytes) -> None:
        """Queue the claim of an HTLC the peer offered us."""
        self._queue_op(FulfillHtlc(id, preimage))

    def fail_htlc(self, id: int, reason: str) -> None:
        """Queue the refusal of an HTLC the peer offered us."""
        self._queue_op(FailHtlc(id, reason))

    def _queue_op(self, op) -> None:
        _apply(self._tip_ledger(), _typed(op), self.party, self.height, self.min_expiry_delta,
               self.max_htlcs)
        self._queue.append(op)

    def flush(self) -> list:
        """Propose one update with everything queued (up to MAX_OPS), if we are in sync and
        nothing of ours is in flight.  Ops that no longer pass are dropped (OpRejected)."""
        if self._state != IDLE or not self._queue or self._hold:
            return []
        led = self._ledger.copy()
        ops, actions, rest = [], [], self._queue[MAX_OPS:]
        for op in self._queue[:MAX_OPS]:
            try:
                _apply(led, op, self.party, self.height, self.min_expiry_delta, self.max_htlcs)
                ops.append(op)
            except InvalidOp as exc:
                actions.append(OpRejected(op, exc.reason))
        self._queue = rest
        if not ops:
            self._tip = None
            return actions
        state = led.state(self.cid, self._committed.state.seq + 1)
        digest = state.digest(self.net)
        sig = self.me.sign(digest)
        self._transition("propose")
        self._inflight = _Proposal(state, digest, ops, sig, led)
        actions.append(Send("ch_update", {"cid": self.cid, "seq": state.seq,
                                          "ops": [_op_to_wire(op) for op in ops], "sig": sig}))
        return actions

    def on_disconnect(self) -> None:
        """The link is gone: our proposal in flight is dropped and its ops re-queued in front
        (the peer may have committed it all the same: the next ch_sync tells)."""
        self._transition("disconnect")
        self._abandon()

    def on_reconnect(self) -> list:
        """The link is up (the first time too): send our committed state to the peer.  It
        carries both signatures, so a peer that is behind adopts it without asking."""
        self._transition("reconnect")
        return [Send("ch_sync", {"cid": self.cid, "seq": self._committed.state.seq,
                                 "signed": self._committed.to_wire()})]

    # -- messages from the peer ---------------------------------------------------------
    def receive(self, kind: str, payload: Any) -> list:
        """Handle one message from the peer; returns actions.  Invalid input never raises: it
        yields Send(ch_nack) (except for a ch_nack) and Rejected, and changes nothing."""
        if self._state == DISCONNECTED:
            raise LocalProtocolError(f"receive({kind!r}) while disconnected")
        self._hold = False
        try:
            if kind not in _MESSAGES:
                raise RemoteProtocolError("unknown_kind", repr(kind)[:64])
            if (self._state, kind) not in TRANSITIONS:
                raise RemoteProtocolError("unexpected_message", f"{kind} in state {self._state}")
            if type(payload) is not dict:
                raise RemoteProtocolError("bad_payload", "expected a map")
            if payload.get("cid") != self.cid:
                raise RemoteProtocolError("wrong_cid", "not this channel's id")
            return getattr(self, "_on_" + kind)(payload)
        except RemoteProtocolError as exc:
            return self._reject(kind, payload, exc)

    def _reject(self, kind, payload, error: RemoteProtocolError, index=None) -> list:
        actions: list = [Rejected(kind, error)]
        if kind != "ch_nack":  # never answer a nack with a nack
            seq = payload.get("seq") if type(payload) is dict else None
            actions.insert(0, Send("ch_nack", {
                "cid": self.cid, "seq": seq if _is_int(seq) else None, "reason": error.reason,
                "detail": error.detail[:200], "op": index}))
        return actions

    def _on_ch_update(self, p: dict) -> list:
        _keys(p, {"cid", "seq", "ops", "sig"})
        seq, wire_ops, sig = p["seq"], p["ops"], p["sig"]
        if not _is_int(seq) or seq != self._committed.state.seq + 1:
            raise RemoteProtocolError("bad_seq", f"seq {seq!r}: expected "
                                                 f"{self._committed.state.seq + 1}")
        if self._state == PROPOSED:  # both proposed this seq: A's update wins
            self._transition("ch_update")
            if self.party == A:
                return []  # B abandons its own update when it gets ours
            self._abandon()
        if type(wire_ops) is not list or not 0 < len(wire_ops) <= MAX_OPS:
            raise RemoteProtocolError("bad_op", f"ops: expected a list of 1..{MAX_OPS} ops")
        if type(sig) is not bytes or len(sig) != 64:
            raise RemoteProtocolError("bad_sig", "sig: expected 64 bytes")
        peer = 1 - self.party
        led = self._ledger.copy()
        ops = []
        for i, w in enumerate(wire_ops):
            try:
                op = _op_from_wire(w)
                _apply(led, op, peer, self.height, self.min_expiry_delta, self.max_htlcs)
            except InvalidOp as exc:  # the nack names the op, so the peer drops just that one
                return self._reject("ch_update", p, RemoteProtocolError(exc.reason, exc.detail), i)
            ops.append(op)
        state = led.state(self.cid, seq)
        digest = state.digest(self.net)
        if not verify(self.peer_pubkey, digest, sig):
            raise RemoteProtocolError("bad_sig", f"update {seq}: not signed by the peer")
        self._transition("ch_update")
        mine = self.me.sign(digest)
        signed = SignedState(state, *self._sigs(mine, sig))
        self._commit(signed, led)
        ack = Send("ch_ack", {"cid": self.cid, "seq": seq, "sig": mine})
        actions: list = [Persist(signed), ack, Committed(signed)]
        for op in ops:
            t = type(op)
            if t is AddHtlc:
                actions.append(HtlcAdded(led.htlcs[op.id], op.onion))
            elif t is FulfillHtlc:
                actions.append(HtlcFulfilled(op.id, op.preimage))
            else:
                actions.append(HtlcFailed(op.id, op.reason))
        return actions

    def _on_ch_ack(self, p: dict) -> list:
        _keys(p, {"cid", "seq", "sig"})
        prop = self._inflight
        if type(p["seq"]) is not int or p["seq"] != prop.state.seq:
            raise RemoteProtocolError("bad_seq", f"ack for {p['seq']!r}: ours is {prop.state.seq}")
        sig = p["sig"]
        if type(sig) is not bytes or not verify(self.peer_pubkey, prop.digest, sig):
            raise RemoteProtocolError("bad_sig", f"ack {prop.state.seq}: not signed by the peer")
        self._transition("ch_ack")
        self._inflight = None
        signed = SignedState(prop.state, *self._sigs(prop.sig, sig))
        self._commit(signed, prop.ledger)
        return [Persist(signed), Committed(signed)]

    def _on_ch_nack(self, p: dict) -> list:
        prop = self._inflight
        if prop is None or type(p.get("seq")) is not int or p["seq"] != prop.state.seq:
            return []  # about nothing in flight: stale
        _keys(p, {"cid", "seq", "reason", "detail", "op"})
        reason, index = p["reason"], p["op"]
        if type(reason) is not str or len(reason) > 64:
            raise RemoteProtocolError("bad_payload", "reason: expected a short string")
        if reason in RESYNC_REASONS:
            return [Resync(reason)]
        if reason == "unexpected_message":  # the peer is still re-synchronising: not a
            self._transition("ch_nack")     # refusal; propose it again once it speaks
            self._inflight = None
            self._tip = None
            self._queue[:0] = prop.ops
            self._hold = True
            return []
        self._transition("ch_nack")
        self._inflight = None
        self._tip = None
        if type(index) is int and 0 <= index < len(prop.ops):
            self._queue[:0] = prop.ops[:index] + prop.ops[index + 1:]
            return [OpRejected(prop.ops[index], reason)]
        return [OpRejected(op, reason) for op in prop.ops]  # the update as a whole was refused

    def _on_ch_sync(self, p: dict) -> list:
        _keys(p, {"cid", "seq", "signed"})
        seq, ours = p["seq"], self._committed.state.seq
        if not _is_int(seq):
            raise RemoteProtocolError("bad_seq", "seq: expected an integer >= 0")
        actions: list = []
        if seq >= ours:
            signed = SignedState.from_wire(p["signed"])  # RemoteProtocolError("bad_state")
            if signed.state.seq != seq or signed.state.cid != self.cid:
                raise RemoteProtocolError("bad_state", "signed state does not match cid/seq")
            if seq == ours:
                if signed.state != self._committed.state:
                    raise RemoteProtocolError("sync_conflict", f"another state at seq {seq}")
            else:
                if not signed.verify(self.net, *self._pk):
                    raise RemoteProtocolError("bad_sig", f"sync {seq}: lacks a valid signature")
                if signed.state.total() != self._committed.state.total():
                    raise RemoteProtocolError("bad_state", "state total differs from funding")
                self._commit(signed, _Ledger(signed.state))
                self._drop_contained(signed.state)
                actions = [Persist(signed), Committed(signed)]
        # seq < ours: the peer adopts the state our own ch_sync carried; nothing to send.
        self._transition("ch_sync")
        if self._next_id is None:
            self._start_ids()
        return actions

    # -- helpers ------------------------------------------------------------------------
    def _transition(self, event: str) -> None:
        nxt = TRANSITIONS.get((self._state, event))
        if nxt is None:
            raise LocalProtocolError(f"{event!r} is illegal in state {self._state!r}")
        self._state = nxt[self.party] if type(nxt) is dict else nxt

    def _sigs(self, mine: bytes, theirs: bytes) -> tuple[bytes, bytes]:
        return (mine, theirs) if self.party == A else (theirs, mine)

    def _commit(self, signed: SignedState, led: _Ledger) -> None:
        self._committed, self._ledger, self._tip = signed, led, None

    def _abandon(self) -> None:
        """Put our in-flight ops back at the front of the queue."""
        if self._inflight is not None:
            self._queue[:0] = self._inflight.ops
            self._inflight = None
        self._tip = None

    def _drop_contained(self, state: ChannelState) -> None:
        """Forget queued ops that an adopted state already contains.  Only our own proposal
        can commit on the peer's side first (the peer's are persisted here before we ack), so
        an add is in iff its HTLC is pending, a fulfil/fail iff its HTLC is gone."""
        ids = {h.id for h in state.htlcs}
        self._queue = [op for op in self._queue if (op.id in ids) != (type(op) is AddHtlc)]
        self._tip = None

    def _start_ids(self) -> None:
        """Our HTLC ids are (epoch << 32) | (n << 1) | party with epoch = the seq of the first
        sync + 1.  An id of an earlier run of this channel that reached any committed state
        was allocated after that run's first sync, so it lies below this epoch: ids never
        repeat, across restarts too (queued ops are lost on a restart)."""
        self._id_epoch = self._committed.state.seq + 1
        if self._id_epoch >= 1 << (63 - _ID_EPOCH_BITS):
            raise LocalProtocolError("channel seq too high for fresh htlc ids")
        self._next_id = (self._id_epoch << _ID_EPOCH_BITS) | self.party

    def _tip_ledger(self) -> _Ledger:
        if self._tip is None:
            led = self._ledger.copy()
            pending = (self._inflight.ops if self._inflight else []) + self._queue
            # Expiries are not re-checked: counting an op that flush() will drop is safe,
            # leaving out one that is in flight is not.
            for op in pending:
                try:
                    _apply(led, op, self.party, -_INT_MAX, 0, self.max_htlcs)
                except InvalidOp:
                    pass
            self._tip = led
        return self._tip


def _keys(p: dict, want: set) -> None:
    if p.keys() != want:
        raise RemoteProtocolError("bad_payload", f"expected keys {sorted(want)}")


# Shapes for the wire codec; Channel.receive checks everything again (tests feed it directly).
codec.register("ch_update", fields(cid=Bytes(32), seq=int, ops=[list], sig=Bytes(64)))
codec.register("ch_ack", fields(cid=Bytes(32), seq=int, sig=Bytes(64)))
codec.register("ch_nack", fields(cid=Bytes(32), seq=Optional(int), reason=str, detail=str,
                                 op=Optional(int)))
codec.register("ch_sync", fields(cid=Bytes(32), seq=int, signed=dict))
