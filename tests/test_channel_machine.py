"""The channel state machine (p2p_l2/channel/machine.py), driven synchronously by a pair of
Channels joined by a fake link (two FIFO queues, delivered from either side in any order)."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from p2p_l2.channel.commitment import (
    A, B, ChannelState, Htlc, SignedState, payment_hash, sign_state,
)
from p2p_l2.channel.machine import (
    DISCONNECTED, IDLE, PROPOSED, SYNCING, AddHtlc, Channel, Committed, FailHtlc, FulfillHtlc,
    HtlcAdded, HtlcFailed, HtlcFulfilled, InvalidOp, OpRejected, Persist, Rejected, Send,
)
from p2p_l2.channel.machine import _apply, _Ledger, _op_from_wire
from p2p_l2.errors import LocalProtocolError, RemoteProtocolError
from p2p_l2.wire import Identity, codec

NET = "test-net"
CID = bytes(range(32))
IDS = {A: Identity.derive(7, "alice"), B: Identity.derive(7, "bob")}
DELTA = 6  # min_expiry_delta


def opened(fund=(10_000, 10_000)) -> SignedState:
    state = ChannelState(CID, 0, *fund)
    return SignedState(state, sign_state(IDS[A], state, NET), sign_state(IDS[B], state, NET))


def both_signed(state: ChannelState) -> SignedState:
    return SignedState(state, sign_state(IDS[A], state, NET), sign_state(IDS[B], state, NET))


def preimage(n: int) -> bytes:
    return n.to_bytes(32, "big")


class ChannelPair:
    """Two Channels and the link between them.  Every message goes through the wire codec;
    the harness checks persist-before-ack and that no two committed states share a seq."""

    def __init__(self, fund=(10_000, 10_000), *, connect=True, **opts):
        self.fund, self.opts = fund, opts
        self.opened = opened(fund)
        self.ch = {p: self.make(p, self.opened) for p in (A, B)}
        self.wire = {A: deque(), B: deque()}  # messages sent by A (for B), by B (for A)
        self.persisted = {A: self.opened, B: self.opened}
        self.max_seq = {A: 0, B: 0}
        self.events = {A: [], B: []}
        self.rejected = {A: [], B: []}
        self.by_seq = {0: self.opened.state}  # every committed state, by seq: no fork
        if connect:
            self.reconnect()
            self.drain()

    def make(self, p, signed):
        return Channel(NET, CID, IDS[p], p, IDS[1 - p].pubkey, signed,
                       min_expiry_delta=DELTA, **self.opts)

    def feed(self, p, actions):
        for a in actions:
            if isinstance(a, Send):
                if a.kind == "ch_ack":  # persist before sign
                    assert self.persisted[p].state.seq == a.payload["seq"]
                self.wire[p].append(codec.encode(a.kind, a.payload))
            elif isinstance(a, Persist):
                s = a.signed
                assert s.verify(NET, IDS[A].pubkey, IDS[B].pubkey)
                assert s.state.seq >= self.persisted[p].state.seq, "seq went backwards"
                assert self.by_seq.setdefault(s.state.seq, s.state) == s.state, "fork"
                self.persisted[p] = s
                self.max_seq[p] = max(self.max_seq[p], s.state.seq)
            elif isinstance(a, Rejected):
                self.rejected[p].append(a)
            else:
                self.events[p].append(a)
        return actions

    def deliver(self, sender, n=1):
        out = []
        for _ in range(n):
            kind, payload = codec.decode(self.wire[sender].popleft())
            out += self.feed(1 - sender, self.ch[1 - sender].receive(kind, payload))
        return out

    def flush(self, p):
        return self.feed(p, self.ch[p].flush())

    def drain(self, flush=True, limit=10_000):
        for _ in range(limit):
            if flush:
                self.flush(A)
                self.flush(B)
            if not (self.wire[A] or self.wire[B]):
                return
            for p in (A, B):
                if self.wire[p]:
                    self.deliver(p)
        raise AssertionError("the pair did not go quiet")

    def disconnect(self):
        self.wire[A].clear()
        self.wire[B].clear()
        for p in (A, B):
            self.ch[p].on_disconnect()

    def reconnect(self):
        for p in (A, B):
            self.feed(p, self.ch[p].on_reconnect())

    def restart(self, p):
        """Kill p (its link drops) and rebuild it from its last Persist."""
        self.disconnect()
        self.ch[p] = self.make(p, self.persisted[p])

    def agree(self):
        ca, cb = self.ch[A].committed, self.ch[B].committed
        assert ca == cb, (ca.state, cb.state)
        return ca.state

    def pay(self, payer, amount, n, expiry=100, onion=b""):
        return self.ch[payer].add_htlc(amount, payment_hash(preimage(n)), expiry, onion)

    def of(self, p, cls):
        return [e for e in self.events[p] if isinstance(e, cls)]


def nack(actions):
    sends = [a for a in actions if isinstance(a, Send) and a.kind == "ch_nack"]
    return sends[0].payload if sends else None


# ------------------------------------------------------------------ basics


def test_open_then_sync_makes_both_idle():
    pair = ChannelPair(connect=False)
    assert pair.ch[A].state == DISCONNECTED
    with pytest.raises(LocalProtocolError, match="first ch_sync"):
        pair.pay(A, 10, 1)
    pair.reconnect()
    assert pair.ch[A].state == pair.ch[B].state == SYNCING
    pair.drain()
    assert pair.ch[A].state == pair.ch[B].state == IDLE
    assert pair.agree() == pair.opened.state
    assert pair.ch[A].balance(A) == 10_000 and pair.ch[A].balance(B) == 10_000


@pytest.mark.parametrize("batch", [1, 10, 30])
def test_direct_payments_in_batches(batch):
    pair = ChannelPair()
    ids = [pair.pay(A, 100 + i, i, onion=b"onion%d" % i) for i in range(batch)]
    assert len(set(ids)) == batch and all(i % 2 == A for i in ids)
    assert len(pair.flush(A)) == 1 and pair.ch[A].state == PROPOSED
    pair.drain(flush=False)
    added = pair.of(B, HtlcAdded)
    assert [(e.htlc.id, e.htlc.amount, e.onion) for e in added] == \
        [(ids[i], 100 + i, b"onion%d" % i) for i in range(batch)]
    for i, e in enumerate(added):
        pair.ch[B].fulfill_htlc(e.htlc.id, preimage(i))
    pair.drain()
    assert [(e.id, e.preimage) for e in pair.of(A, HtlcFulfilled)] == \
        [(ids[i], preimage(i)) for i in range(batch)]
    state = pair.agree()
    paid = sum(100 + i for i in range(batch))
    assert state.seq == 2 and state.htlcs == ()
    assert (state.bal_a, state.bal_b) == (10_000 - paid, 10_000 + paid)
    assert [e.signed.state.seq for e in pair.of(A, Committed)] == [1, 2]


def test_fail_returns_the_amount_to_the_offerer():
    pair = ChannelPair()
    hid = pair.pay(B, 500, 1)
    pair.drain()
    assert pair.ch[A].pending_htlcs == (Htlc(hid, B, 500, payment_hash(preimage(1)), 100),)
    assert pair.ch[A].balance(B) == 9_500
    pair.ch[A].fail_htlc(hid, "no route")
    pair.drain()
    assert [(e.id, e.reason) for e in pair.of(B, HtlcFailed)] == [(hid, "no route")]
    state = pair.agree()
    assert (state.bal_a, state.bal_b, state.htlcs) == (10_000, 10_000, ())


def test_ops_queued_while_in_flight_go_in_the_next_batch():
    pair = ChannelPair()
    pair.pay(A, 1, 0)
    pair.flush(A)
    for i in range(1, 6):
        pair.pay(A, 1, i)
    assert pair.flush(A) == []  # one proposal in flight at most
    assert len(pair.ch[A].queued) == 5 and pair.ch[A].in_flight[0] == 1
    pair.deliver(A)
    pair.deliver(B)  # the ack
    assert pair.ch[A].state == IDLE and pair.ch[A].committed.state.seq == 1
    (send,) = pair.flush(A)
    assert send.kind == "ch_update" and len(send.payload["ops"]) == 5 and send.payload["seq"] == 2
    pair.drain()
    assert len(pair.agree().htlcs) == 6


def test_receiver_persists_before_it_acks_then_reports_ops():
    pair = ChannelPair()
    pair.pay(A, 7, 1, onion=b"o")
    pair.flush(A)
    actions = pair.deliver(A)
    assert [type(a) for a in actions] == [Persist, Send, Committed, HtlcAdded]
    assert actions[1].kind == "ch_ack" and actions[0].signed.state.seq == 1
    actions = pair.deliver(B)
    assert [type(a) for a in actions] == [Persist, Committed]
    assert actions[0].signed == pair.ch[B].committed


def test_message_formats():
    pair = ChannelPair()
    hid = pair.pay(A, 5, 1, expiry=50, onion=b"x")
    (upd,) = pair.ch[A].flush()
    assert upd.kind == "ch_update"
    assert set(upd.payload) == {"cid", "seq", "ops", "sig"}
    assert upd.payload["ops"] == [[0, hid, 5, payment_hash(preimage(1)), 50, b"x"]]
    (sync,) = Channel(NET, CID, IDS[A], A, IDS[B].pubkey, opened()).on_reconnect()
    assert sync.payload == {"cid": CID, "seq": 0, "signed": opened().to_wire()}


# ------------------------------------------------------------------ concurrency


@pytest.mark.parametrize("first", [A, B])
def test_concurrent_proposals_a_wins_b_reproposes(first):
    pair = ChannelPair()
    ha = pair.pay(A, 100, 1)
    hb = pair.pay(B, 200, 2)
    pair.flush(A)
    pair.flush(B)
    assert pair.ch[A].state == pair.ch[B].state == PROPOSED
    out = {first: pair.deliver(first)}
    out[1 - first] = pair.deliver(1 - first)
    assert out[B] == []  # A ignored B's update (no nack: B gives way when it sees A's)
    assert [type(a) for a in out[A]] == [Persist, Send, Committed, HtlcAdded]
    # B abandoned its own update, acked A's and re-queued its op
    assert pair.ch[B].committed.state.seq == 1 and pair.ch[B].queued[0].id == hb
    pair.drain()
    state = pair.agree()
    assert state.seq == 2
    assert [h.id for h in pair.by_seq[1].htlcs] == [ha]  # seq 1 is A's proposal
    assert {h.id for h in state.htlcs} == {ha, hb}
    assert pair.rejected == {A: [], B: []}
    assert [e.htlc.id for e in pair.of(B, HtlcAdded)] == [ha]
    assert [e.htlc.id for e in pair.of(A, HtlcAdded)] == [hb]


def test_concurrent_rounds_never_fork():
    pair = ChannelPair()
    n = 0
    for rnd in range(40):
        for p in (A, B):
            for _ in range(rnd % 3 + 1):
                n += 1
                pair.pay(p, 1, n)
            pair.flush(p)
        order = [A, B] if rnd % 2 else [B, A]
        while pair.wire[A] or pair.wire[B]:
            for p in order:
                if pair.wire[p]:
                    pair.deliver(p)
            pair.flush(A)
            pair.flush(B)
        # settle everything each side received
        for p in (A, B):
            for h in pair.ch[p].pending_htlcs:
                if h.offerer != p:
                    pair.ch[p].fulfill_htlc(h.id, preimage(next(
                        k for k in range(n + 1) if payment_hash(preimage(k)) == h.payment_hash)))
    pair.drain()
    state = pair.agree()
    assert state.htlcs == () and state.total() == 20_000
    assert state.bal_a == state.bal_b == 10_000  # both paid the same
    assert sorted(pair.by_seq) == list(range(state.seq + 1))
    assert pair.rejected == {A: [], B: []}


def test_b_abandons_even_when_a_update_is_refused():
    # A's height is behind B's: B refuses A's HTLC (expiry too close) while B's own is in flight
    pair = ChannelPair()
    pair.ch[B].set_height(50)
    ha = pair.pay(A, 1, 1, expiry=20)
    ha2 = pair.pay(A, 1, 2, expiry=100)
    hb = pair.pay(B, 1, 3, expiry=100)
    pair.flush(A)
    pair.flush(B)
    pair.deliver(B)  # A ignores B's
    out = pair.deliver(A)  # B abandons its own, refuses A's first op
    assert nack(out) == {"cid": CID, "seq": 1, "reason": "bad_expiry",
                         "detail": nack(out)["detail"], "op": 0}
    assert pair.ch[B].state == IDLE and pair.ch[B].queued[0].id == hb
    out = pair.deliver(B)  # the nack: A drops op 0, re-queues op 1
    assert out == [OpRejected(AddHtlc(ha, 1, payment_hash(preimage(1)), 20, b""), "bad_expiry")]
    pair.drain()
    assert {h.id for h in pair.agree().htlcs} == {ha2, hb}
    assert [r.error.reason for r in pair.rejected[B]] == ["bad_expiry"]


# ------------------------------------------------------------------ bad input


def _pending_pair():
    """A pair at seq 2 with one HTLC of each direction pending: A's (id ha) and B's (id hb)."""
    pair = ChannelPair(max_htlcs=3)
    ha, hb = pair.pay(A, 100, 1), pair.pay(B, 100, 2)
    pair.drain()
    return pair, ha, hb


def _update(pair, ops, *, seq=None, sig=None, **extra):
    """A ch_update from A to B, signed correctly if its ops are valid."""
    ch = pair.ch[B]
    seq = ch.committed.state.seq + 1 if seq is None else seq
    if sig is None:
        try:
            led = _Ledger(ch.committed.state)
            for w in ops:
                _apply(led, _op_from_wire(w), A, ch.height, DELTA, ch.max_htlcs)
            sig = sign_state(IDS[A], led.state(CID, seq), NET)
        except InvalidOp:
            sig = bytes(64)
    return {"cid": CID, "seq": seq, "ops": ops, "sig": sig, **extra}


H = payment_hash(preimage(99))
NEW_A = (5 << 32) | A  # an unused id of A's parity


def _add(amount=5, expiry=100, id=NEW_A, hash=H, onion=b""):
    return [0, id, amount, hash, expiry, onion]


def _up(*ops, **kw):
    return lambda pr, ha, hb: _update(pr, list(ops), **kw)

BAD_UPDATES = {
    # name: (payload builder (pair, ha, hb) -> payload, nack reason, nack op index)
    "bad_sig": (_up(_add(), sig=bytes(64)), "bad_sig", None),
    "sig_of_other_state": (lambda pr, ha, hb: dict(_update(pr, [_add()]),
                                                    sig=_update(pr, [_add(6)])["sig"]),
                           "bad_sig", None),
    "sig_by_b": (_up(_add(), sig=sign_state(IDS[B], ChannelState(CID, 3, 0, 0), NET)),
                 "bad_sig", None),
    "wrong_cid": (lambda pr, ha, hb: dict(_update(pr, [_add()]), cid=bytes(32)), "wrong_cid", None),
    "seq_backwards": (_up(_add(), seq=1), "bad_seq", None),
    "seq_replayed": (_up(_add(), seq=2), "bad_seq", None),
    "seq_zero": (_up(_add(), seq=0), "bad_seq", None),
    "seq_ahead": (_up(_add(), seq=4), "bad_seq", None),
    "seq_not_int": (_up(_add(), seq="3"), "bad_seq", None),
    "beyond_balance": (_up(_add(9_901)), "insufficient_balance", 0),
    "beyond_balance_in_batch": (_up(_add(5_000), _add(4_901, id=NEW_A + 2)),
                                "insufficient_balance", 1),
    "zero_amount": (_up(_add(0)), "bad_amount", 0),
    "negative_amount": (_up(_add(-5)), "bad_amount", 0),
    "amount_bool": (_up(_add(True)), "bad_amount", 0),
    "too_many_htlcs": (_up(*[_add(1, id=NEW_A + 2 * i) for i in range(3)]), "too_many_htlcs", 2),
    "expiry_at_min_delta": (_up(_add(expiry=DELTA)), "bad_expiry", 0),
    "expiry_past": (_up(_add(expiry=0)), "bad_expiry", 0),
    "duplicate_id": (lambda pr, ha, hb: _update(pr, [_add(id=ha)]), "duplicate_id", 0),
    "duplicate_id_in_batch": (_up(_add(), _add()), "duplicate_id", 1),
    "id_of_b_parity": (_up(_add(id=NEW_A + 1)), "bad_id", 0),
    "unknown_htlc_fulfil": (_up([1, 12345, preimage(2)]), "unknown_htlc", 0),
    "unknown_htlc_fail": (_up([2, 12345, "x"]), "unknown_htlc", 0),
    "bad_preimage": (lambda pr, ha, hb: _update(pr, [[1, hb, preimage(3)]]), "bad_preimage", 0),
    "empty_preimage": (lambda pr, ha, hb: _update(pr, [[1, hb, b""]]), "bad_preimage", 0),
    "fulfil_own_htlc": (lambda pr, ha, hb: _update(pr, [[1, ha, preimage(1)]]), "not_receiver", 0),
    "fail_own_htlc": (lambda pr, ha, hb: _update(pr, [[2, ha, "x"]]), "not_receiver", 0),
    "fulfil_twice": (lambda pr, ha, hb: _update(pr, [[1, hb, preimage(2)], [1, hb, preimage(2)]]),
                     "unknown_htlc", 1),
    "no_ops": (_up(), "bad_op", None),
    "op_unknown_code": (_up([7, 1]), "bad_op", 0),
    "op_short": (_up(_add()[:5]), "bad_op", 0),
    "op_not_list": (_up("add"), "bad_op", 0),
    "hash_short": (_up(_add(hash=H[:31])), "bad_op", 0),
    "onion_too_big": (_up(_add(onion=bytes(9000))), "bad_op", 0),
    "extra_key": (_up(_add(), x=1), "bad_payload", None),
    "not_a_map": (lambda pr, ha, hb: [1, 2], "bad_payload", None),
}


@pytest.mark.parametrize("name", sorted(BAD_UPDATES))
def test_bad_update_is_nacked_and_changes_nothing(name):
    build, reason, index = BAD_UPDATES[name]
    pair, ha, hb = _pending_pair()
    b = pair.ch[B]
    before = (b.committed, b.state, b.queued, b.in_flight)
    out = b.receive("ch_update", build(pair, ha, hb))
    assert [type(a) for a in out] == [Send, Rejected]
    assert nack(out)["reason"] == reason and nack(out)["op"] == index
    assert isinstance(out[1].error, RemoteProtocolError) and out[1].error.reason == reason
    assert (b.committed, b.state, b.queued, b.in_flight) == before
    codec.decode(codec.encode("ch_nack", nack(out)))  # a well-formed nack
    # and the channel still works
    pair.ch[A].fulfill_htlc(hb, preimage(2))
    pair.drain()
    assert pair.agree().seq == 3


def test_the_control_case_of_the_bad_update_table_is_accepted():
    pair, ha, hb = _pending_pair()
    out = pair.ch[B].receive("ch_update", _update(pair, [_add(), [1, hb, preimage(2)]]))
    assert [type(a) for a in out] == [Persist, Send, Committed, HtlcAdded, HtlcFulfilled]


def test_nack_for_a_refused_op_drops_only_that_op():
    pair = ChannelPair()
    pair.ch[B].set_height(30)  # B is ahead of A on L1
    ok1 = pair.pay(A, 1, 1, expiry=100)
    bad = pair.pay(A, 1, 2, expiry=35)  # fine for A (height 0), too close for B
    ok2 = pair.pay(A, 1, 3, expiry=100)
    pair.flush(A)
    pair.deliver(A)
    out = pair.deliver(B)
    assert [type(a) for a in out] == [OpRejected] and out[0].op.id == bad
    assert [op.id for op in pair.ch[A].queued] == [ok1, ok2]
    pair.drain()
    assert [h.id for h in pair.agree().htlcs] == [ok1, ok2]


def test_bad_ack_is_nacked_and_the_proposal_stays_in_flight():
    pair = ChannelPair()
    pair.pay(A, 5, 1)
    pair.flush(A)
    pair.deliver(A)
    good = codec.decode(pair.wire[B].popleft())[1]
    a = pair.ch[A]
    for payload, reason in [
        (dict(good, sig=bytes(64)), "bad_sig"),
        (dict(good, sig=good["sig"][:63]), "bad_sig"),
        (dict(good, seq=2), "bad_seq"),
        (dict(good, seq=0), "bad_seq"),
        (dict(good, cid=bytes(32)), "wrong_cid"),
        ({"cid": CID, "seq": 1}, "bad_payload"),
    ]:
        out = a.receive("ch_ack", payload)
        assert nack(out)["reason"] == reason and out[-1].error.reason == reason
        assert a.committed.state.seq == 0 and a.state == PROPOSED
    assert [type(x) for x in a.receive("ch_ack", good)] == [Persist, Committed]


def test_unexpected_and_unknown_messages():
    pair = ChannelPair()
    a = pair.ch[A]
    for kind, payload, reason in [
        ("ch_ack", {"cid": CID, "seq": 1, "sig": bytes(64)}, "unexpected_message"),
        ("ch_sync", {"cid": CID, "seq": 0, "signed": opened().to_wire()}, "unexpected_message"),
        ("ch_bogus", {"cid": CID}, "unknown_kind"),
    ]:
        out = a.receive(kind, payload)
        assert nack(out)["reason"] == reason and a.state == IDLE
    # a nack is never answered with a nack; a stale one is ignored
    stale = {"cid": CID, "seq": 5, "reason": "x", "detail": "", "op": None}
    assert a.receive("ch_nack", stale) == []
    out = a.receive("ch_nack", {"cid": bytes(32), "seq": 1})
    assert [type(x) for x in out] == [Rejected]


def test_bad_sync_is_refused():
    pair = ChannelPair(connect=False)
    pair.reconnect()
    b = pair.ch[B]
    higher = both_signed(ChannelState(CID, 5, 9_000, 11_000))
    forged = SignedState(higher.state, higher.sig_a, bytes(64))
    wrong_total = both_signed(ChannelState(CID, 5, 9_000, 12_000))
    other_at_0 = both_signed(ChannelState(CID, 0, 9_000, 11_000))
    for payload, reason in [
        ({"cid": CID, "seq": 5, "signed": forged.to_wire()}, "bad_sig"),
        ({"cid": CID, "seq": 5, "signed": wrong_total.to_wire()}, "bad_state"),
        ({"cid": CID, "seq": 6, "signed": higher.to_wire()}, "bad_state"),
        ({"cid": CID, "seq": 5, "signed": {"s": 1}}, "bad_state"),
        ({"cid": CID, "seq": -1, "signed": higher.to_wire()}, "bad_seq"),
        ({"cid": CID, "seq": 0, "signed": other_at_0.to_wire()}, "sync_conflict"),
        ({"cid": bytes(32), "seq": 5, "signed": higher.to_wire()}, "wrong_cid"),
    ]:
        out = b.receive("ch_sync", payload)
        assert nack(out)["reason"] == reason, payload
        assert b.committed == pair.opened and b.state == SYNCING
    out = b.receive("ch_sync", {"cid": CID, "seq": 5, "signed": higher.to_wire()})
    assert [type(x) for x in out] == [Persist, Committed] and b.committed == higher


def test_illegal_local_calls_raise():
    pair = ChannelPair()
    with pytest.raises(LocalProtocolError):
        pair.ch[A].on_reconnect()  # already connected
    pair.disconnect()
    with pytest.raises(LocalProtocolError):
        pair.ch[A].receive("ch_ack", {})
    pair.ch[A].on_disconnect()  # twice is fine
    assert pair.flush(A) == []


def test_local_ops_are_checked_against_everything_queued():
    pair, ha, hb = _pending_pair()  # max_htlcs=3, balances 9_900 each
    a = pair.ch[A]
    cases = [
        (lambda: a.add_htlc(0, H, 100), "bad_amount"),
        (lambda: a.add_htlc(9_901, H, 100), "insufficient_balance"),
        (lambda: a.add_htlc(5, H, DELTA), "bad_expiry"),
        (lambda: a.add_htlc(5, H[:5], 100), "bad_op"),
        (lambda: a.add_htlc(5, H, 100, onion="x"), "bad_op"),
        (lambda: a.fulfill_htlc(ha, preimage(1)), "not_receiver"),
        (lambda: a.fulfill_htlc(hb, preimage(1)), "bad_preimage"),
        (lambda: a.fulfill_htlc(777, preimage(1)), "unknown_htlc"),
        (lambda: a.fail_htlc(777, "x"), "unknown_htlc"),
        (lambda: a.fail_htlc(hb, 5), "bad_op"),
    ]
    for call, reason in cases:
        with pytest.raises(InvalidOp) as info:
            call()
        assert info.value.reason == reason
        assert isinstance(info.value, LocalProtocolError)
    a.add_htlc(9_000, H, 100)
    with pytest.raises(InvalidOp, match="insufficient_balance"):
        a.add_htlc(901, H, 100)  # 9_900 - 9_000 left
    a.add_htlc(800, H, 100)
    with pytest.raises(InvalidOp, match="too_many_htlcs"):
        a.add_htlc(1, H, 100)  # ha and two queued: 3 pending
    a.fulfill_htlc(hb, preimage(2))
    with pytest.raises(InvalidOp, match="unknown_htlc"):
        a.fail_htlc(hb, "already being fulfilled")
    pair.drain()
    assert pair.agree().bal_a == 200 and pair.rejected == {A: [], B: []}


def test_flush_drops_ops_that_expired_meanwhile():
    pair = ChannelPair()
    h1 = pair.pay(A, 1, 1, expiry=20)
    h2 = pair.pay(A, 1, 2, expiry=200)
    pair.ch[A].set_height(15)
    out = pair.flush(A)
    assert out[0] == OpRejected(AddHtlc(h1, 1, payment_hash(preimage(1)), 20, b""),
                                "bad_expiry")
    assert out[1].kind == "ch_update" and len(out[1].payload["ops"]) == 1
    pair.drain()
    assert [h.id for h in pair.agree().htlcs] == [h2]


def test_flush_with_nothing_valid_proposes_nothing():
    pair = ChannelPair()
    pair.pay(A, 1, 1, expiry=20)
    pair.ch[A].set_height(100)
    out = pair.flush(A)
    assert [type(x) for x in out] == [OpRejected] and pair.ch[A].state == IDLE


# ------------------------------------------------------------------ disconnects and restarts


def test_update_lost_is_reproposed_after_resync():
    pair = ChannelPair()
    hid = pair.pay(A, 5, 1)
    pair.flush(A)
    pair.disconnect()  # the update never arrived
    assert pair.ch[A].queued[0].id == hid and pair.ch[A].in_flight is None
    pair.reconnect()
    pair.drain()
    assert [h.id for h in pair.agree().htlcs] == [hid] and pair.agree().seq == 1


def test_ack_lost_resync_adopts_and_drops_contained_ops():
    pair = ChannelPair()
    h1 = pair.pay(A, 5, 1)
    pair.flush(A)
    h2 = pair.pay(A, 6, 2)  # queued behind the in-flight one
    pair.deliver(A)  # B commits seq 1 and acks
    pair.disconnect()  # the ack is lost
    assert [op.id for op in pair.ch[A].queued] == [h1, h2]
    pair.reconnect()
    pair.deliver(B)  # B's sync: A adopts seq 1
    assert pair.ch[A].committed.state.seq == 1
    assert [op.id for op in pair.ch[A].queued] == [h2]  # h1 is already in
    pair.drain()
    state = pair.agree()
    assert [h.id for h in state.htlcs] == [h1, h2] and state.seq == 2


def test_fulfil_ack_lost_is_not_sent_twice():
    pair = ChannelPair()
    hid = pair.pay(A, 5, 1)
    pair.drain()
    pair.ch[B].fulfill_htlc(hid, preimage(1))
    pair.flush(B)
    pair.deliver(B)  # A commits the fulfil, acks
    pair.disconnect()
    assert len(pair.ch[B].queued) == 1
    pair.reconnect()
    pair.drain()
    assert pair.ch[B].queued == () and pair.agree().seq == 2
    assert pair.agree().bal_b == 10_005
    assert pair.rejected == {A: [], B: []}


def test_disconnect_during_concurrent_proposals():
    pair = ChannelPair()
    ha, hb = pair.pay(A, 1, 1), pair.pay(B, 2, 2)
    pair.flush(A)
    pair.flush(B)
    pair.deliver(A)  # B abandons, acks A's
    pair.disconnect()  # B's update (to A) and B's ack are lost
    pair.reconnect()
    pair.drain()
    state = pair.agree()
    assert {h.id for h in state.htlcs} == {ha, hb} and state.seq == 2


@pytest.mark.parametrize("who", [A, B])
def test_proposer_restarts_after_the_peer_committed(who):
    pair = ChannelPair()
    old = pair.pay(who, 5, 1)
    pair.flush(who)
    pair.deliver(who)  # the peer persists seq 1 and acks; the proposer dies before the ack
    pair.restart(who)
    assert pair.ch[who].committed.state.seq == 0 and pair.ch[who].queued == ()
    pair.reconnect()
    pair.drain()
    assert pair.ch[who].committed.state.seq == 1
    new = pair.pay(who, 5, 2)
    assert new > old and new % 2 == who
    pair.drain()
    assert [h.id for h in pair.agree().htlcs] == [old, new]


@pytest.mark.parametrize("who", [A, B])
def test_receiver_restarts_after_acking(who):
    pair = ChannelPair()
    hid = pair.pay(1 - who, 5, 1)
    pair.flush(1 - who)
    pair.deliver(1 - who)
    pair.restart(who)  # its Persist survived, the ack did not reach the proposer
    pair.reconnect()
    pair.drain()
    assert [h.id for h in pair.agree().htlcs] == [hid]


def test_restart_twice_without_commit_reuses_no_committed_id():
    pair = ChannelPair()
    first = pair.pay(A, 1, 1)
    pair.flush(A)
    pair.deliver(A)  # B commits `first`
    pair.restart(A)
    pair.reconnect()
    pair.deliver(A)  # A's sync reaches B; B's sync to A is lost
    pair.restart(A)
    pair.reconnect()
    pair.drain()
    second = pair.pay(A, 1, 2)
    assert second != first
    pair.drain()
    assert sorted(h.id for h in pair.agree().htlcs) == sorted([first, second])


# ------------------------------------------------------------------ hypothesis


class ChannelPairMachine(RuleBasedStateMachine):
    """Random interleavings of both sides' payments, fulfils, fails, deliveries, flushes,
    disconnects, restarts and L1 heights."""

    FUND = (1_000, 1_000)

    def __init__(self):
        super().__init__()
        self.pair = ChannelPair(self.FUND, max_htlcs=4)
        self.n = 0
        self.preimages = {}

    @rule(payer=st.sampled_from([A, B]), amount=st.integers(1, 400), slack=st.integers(1, 8),
          flush=st.booleans())
    def pay(self, payer, amount, slack, flush):
        ch = self.pair.ch[payer]
        self.n += 1
        self.preimages[payment_hash(preimage(self.n))] = preimage(self.n)
        try:
            self.pair.pay(payer, amount, self.n, expiry=ch.height + DELTA + slack)
            event("pay: queued")
        except InvalidOp as exc:
            assert exc.reason in ("insufficient_balance", "too_many_htlcs"), exc
            event(f"pay: {exc.reason}")
        except LocalProtocolError:
            assert ch.state in (DISCONNECTED, SYNCING)  # restarted, not synced yet
            event("pay: not synced")
        if flush:
            self.pair.flush(payer)

    def _settle(self, p, i, flush, fn):
        theirs = [h for h in self.pair.ch[p].pending_htlcs if h.offerer != p]
        if theirs:
            h = theirs[i % len(theirs)]
            try:
                fn(self.pair.ch[p], h)
            except InvalidOp as exc:
                assert exc.reason == "unknown_htlc"  # already being settled
                event("settle: already queued")
        if flush:
            self.pair.flush(p)

    @rule(p=st.sampled_from([A, B]), i=st.integers(0, 7), flush=st.booleans())
    def fulfil(self, p, i, flush):
        self._settle(p, i, flush,
                     lambda ch, h: ch.fulfill_htlc(h.id, self.preimages[h.payment_hash]))

    @rule(p=st.sampled_from([A, B]), i=st.integers(0, 7), flush=st.booleans())
    def fail(self, p, i, flush):
        self._settle(p, i, flush, lambda ch, h: ch.fail_htlc(h.id, "because"))

    def _deliver(self, sender):
        if not self.pair.wire[sender]:
            return
        receiver = self.pair.ch[1 - sender]
        kind = codec.decode(self.pair.wire[sender][0])[0]
        had_proposal = receiver.in_flight is not None
        out = self.pair.deliver(sender)
        if kind == "ch_update" and not out:
            event("deliver: A ignored B's concurrent update")
        elif kind == "ch_update" and had_proposal and receiver.in_flight is None:
            event("deliver: B abandoned its update for A's")
        elif kind == "ch_sync" and any(isinstance(a, Persist) for a in out):
            event("deliver: sync adopted a higher state")
        elif any(isinstance(a, OpRejected) for a in out):
            event("deliver: nack dropped an op")
        else:
            event(f"deliver: {kind}")

    @rule(sender=st.sampled_from([A, B]), n=st.integers(1, 3))
    def deliver(self, sender, n):
        for _ in range(n):
            self._deliver(sender)

    @rule(sender=st.sampled_from([A, B]), flush=st.booleans())
    def deliver_one_and_flush(self, sender, flush):  # a second delivery rule: links are busy
        self._deliver(sender)
        if flush:
            self.pair.flush(1 - sender)

    @rule(p=st.sampled_from([A, B]))
    def flush(self, p):
        self.pair.flush(p)

    @rule(fault=st.sampled_from(["disconnect", "restart A", "restart B"]))
    def fault(self, fault):
        if fault == "disconnect":
            self.pair.disconnect()
        else:
            self.pair.restart(A if fault == "restart A" else B)
        self.pair.reconnect()
        event(f"fault: {fault}")

    @rule(delta=st.integers(1, 5), who=st.sampled_from(["both", A, B]))
    def advance_height(self, delta, who):
        for p in (A, B):
            if who in ("both", p):
                self.pair.ch[p].set_height(self.pair.ch[p].height + delta)

    @rule()
    def settle(self):
        self.pair.drain()
        first = self.pair.agree()
        for ch in self.pair.ch.values():
            assert ch.state == IDLE and ch.queued == () and ch.in_flight is None
        self.pair.disconnect()
        self.pair.reconnect()
        self.pair.drain()
        assert self.pair.agree() == first  # a resync of an agreeing pair changes nothing

    @invariant()
    def totals_equal_the_funding(self):
        for p in (A, B):
            assert self.pair.ch[p].committed.state.total() == sum(self.FUND)

    @invariant()
    def nothing_persisted_is_lost(self):
        for p in (A, B):
            assert self.pair.ch[p].committed == self.pair.persisted[p]
            assert self.pair.ch[p].committed.state.seq == self.pair.max_seq[p]

    @invariant()
    def honest_peers_only_disagree_on_heights(self):
        for p in (A, B):
            assert all(r.error.reason == "bad_expiry" for r in self.pair.rejected[p]), \
                self.pair.rejected[p]
            dropped = [e for e in self.pair.events[p] if isinstance(e, OpRejected)]
            assert all(e.reason == "bad_expiry" for e in dropped), dropped

    @invariant()
    def each_settlement_is_reported_once(self):
        for p in (A, B):
            for cls in (HtlcAdded, HtlcFulfilled, HtlcFailed):
                ids = [e.htlc.id if cls is HtlcAdded else e.id for e in self.pair.of(p, cls)]
                assert len(ids) == len(set(ids)), (cls, ids)
                assert all((i & 1) == (p if cls is not HtlcAdded else 1 - p) for i in ids)
            for e in self.pair.of(p, HtlcFulfilled):
                assert self.preimages[payment_hash(e.preimage)] == e.preimage

    def teardown(self):
        self.settle()


ChannelPairMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60,
                                                deadline=None)
TestChannelPair = ChannelPairMachine.TestCase
