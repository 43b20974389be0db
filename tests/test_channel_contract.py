"""The `channel` L1 contract, driven through `ledger.apply_tx` on a journaled State."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from p2p_l2.chain.contracts import CONTRACTS
from p2p_l2.chain.contracts import channel as ch
from p2p_l2.chain.ledger import (
    TxRejected,
    apply_reward,
    apply_tx,
    genesis_state,
    total_balances,
    total_locked,
)
from p2p_l2.chain.state import State
from p2p_l2.chain.store import pack_value, unpack_value
from p2p_l2.chain.tx import Tx, call
from p2p_l2.channel.commitment import (
    ChannelState,
    Htlc,
    SignedState,
    open_digest,
    payment_hash,
    sign_state,
)
from p2p_l2.channel.commitment import A as PA
from p2p_l2.channel.commitment import B as PB
from p2p_l2.wire.identity import Identity

NET = "testnet"
A, B, C, W, M = (Identity.derive(7, n) for n in ("alice", "bob", "carol", "tower", "miner"))
GENESIS = {A.pubkey: 1000, B.pubkey: 500, C.pubkey: 300, W.pubkey: 20}
CID = b"c" * 32
DISPUTE = 10
PRE1, PRE2 = b"preimage-one", b"preimage-two"


@pytest.fixture
def state() -> State:
    s = genesis_state(GENESIS)
    s.begin()  # as in a block: rejected calls roll back to their savepoint
    return s


def apply(state: State, tx: Tx, height: int = 1) -> None:
    apply_tx(state, tx, height, M.pubkey, net=NET)


def rejected(state: State, tx: Tx, reason: str = "contract_error", height: int = 1) -> str:
    """Assert `tx` is rejected with `reason` and leaves `state` exactly as it was."""
    before = dict(state.kv)
    with pytest.raises(TxRejected) as info:
        apply(state, tx, height)
    assert info.value.reason == reason, info.value
    assert state.kv == before and state.journaling
    return info.value.detail


def nonce(state: State, who: Identity) -> int:
    return state.nonce(who.pubkey)


def conserved(state: State, minted: int = 0) -> bool:
    return total_balances(state) + total_locked(state) == sum(GENESIS.values()) + minted


def sig_open(b: Identity, a: Identity, cid: bytes, fund_a: int, fund_b: int,
             dispute: int = DISPUTE, net: str = NET) -> bytes:
    return b.sign(open_digest(net, cid, a.pubkey, b.pubkey, fund_a, fund_b, dispute))


def open_tx(state: State, a: Identity = A, b: Identity = B, fund_a: int = 100, fund_b: int = 50,
            dispute: int = DISPUTE, cid: bytes = CID, sig: bytes | None = None,
            amount: int | None = None) -> Tx:
    sig = sig_open(b, a, cid, fund_a, fund_b, dispute) if sig is None else sig
    args = ch.open_args(cid, b.pubkey, fund_a, fund_b, dispute, sig)
    amount = fund_a if amount is None else amount
    return call(a, NET, "channel", "open", args, nonce(state, a), amount=amount)


def opened(state: State, fund_a: int = 100, fund_b: int = 50, height: int = 1) -> bytes:
    apply(state, open_tx(state, fund_a=fund_a, fund_b=fund_b), height)
    return CID


def signed(seq: int, bal_a: int, bal_b: int, htlcs: tuple[Htlc, ...] = (), cid: bytes = CID,
           signers: tuple[Identity, Identity] = (A, B), net: str = NET) -> SignedState:
    s = ChannelState(cid, seq, bal_a, bal_b, htlcs)
    return SignedState(s, sign_state(signers[0], s, net), sign_state(signers[1], s, net))


def record(state: State, cid: bytes = CID) -> dict:
    rec = ch.channel_record(state, cid)
    assert rec is not None
    return rec


def bal(state: State, who: Identity) -> int:
    return state.balance(who.pubkey)


# ------------------------------------------------------------------ open


def test_registered_with_its_methods():
    assert CONTRACTS["channel"] is ch.CHANNEL
    assert ch.CHANNEL.methods == {"open", *ch.TRANSITIONS}


def test_open_dual_funding(state):
    apply(state, open_tx(state, fund_a=100, fund_b=50), height=3)
    assert bal(state, A) == 1000 - 100 - 1 and bal(state, B) == 500 - 50
    rec = record(state)
    assert rec["status"] == "open" and rec["a"] == A.pubkey and rec["b"] == B.pubkey
    assert (rec["fund_a"], rec["fund_b"], rec["total"]) == (100, 50, 150)
    assert rec["dispute_blocks"] == DISPUTE and rec["opened_at"] == 3 and rec["paid"] == 0
    assert total_locked(state) == 150 and conserved(state)


@pytest.mark.parametrize("fund_a, fund_b", [(100, 0), (0, 80)])
def test_open_single_funding(state, fund_a, fund_b):
    apply(state, open_tx(state, fund_a=fund_a, fund_b=fund_b))
    assert bal(state, A) == 1000 - fund_a - 1 and bal(state, B) == 500 - fund_b
    assert record(state)["total"] == fund_a + fund_b == total_locked(state)
    assert conserved(state)


def test_open_misuse(state):
    def bad(tx: Tx, reason: str = "contract_error") -> None:
        rejected(state, tx, reason)

    bad(open_tx(state, amount=99))  # amount != fund_a
    bad(open_tx(state, amount=0))
    bad(open_tx(state, sig=sig_open(B, A, CID, 100, 49)))  # B agreed to other terms
    bad(open_tx(state, sig=sig_open(B, A, CID, 100, 50, net="other")))  # on another network
    bad(open_tx(state, sig=sig_open(C, A, CID, 100, 50)))  # not B's signature
    bad(open_tx(state, sig=b"\0" * 64))
    bad(open_tx(state, b=A, sig=sig_open(A, A, CID, 100, 50)))  # a == b
    bad(open_tx(state, fund_a=0, fund_b=0))  # nothing to lock
    bad(open_tx(state, dispute=0))
    bad(open_tx(state, dispute=ch.MAX_DISPUTE_BLOCKS + 1))
    bad(open_tx(state, fund_b=501), "insufficient_funds")  # B is short
    bad(open_tx(state, fund_a=1000), "insufficient_funds")  # A cannot pay amount + fee
    bad(open_tx(state, fund_b=2**63 - 50, fund_a=60))  # total out of range
    good = open_tx(state).args
    assert good is not None
    for args in (
        None,
        [1, 2],
        {**good, "x": 1},
        {k: v for k, v in good.items() if k != "sig_b"},
        {**good, "cid": CID[:31]},
        {**good, "b": "bob"},
        {**good, "fund_b": -1},
        {**good, "fund_b": True},
        {**good, "dispute_blocks": 10.0},
        {**good, "sig_b": good["sig_b"][:63]},
    ):
        bad(call(A, NET, "channel", "open", args, 0, amount=100))
    apply(state, open_tx(state))
    assert "already used" in rejected(state, open_tx(state))  # cid taken
    assert total_locked(state) == 150 and conserved(state)


def test_open_at_the_dispute_bounds(state):
    apply(state, open_tx(state, dispute=1))
    apply(state, open_tx(state, dispute=ch.MAX_DISPUTE_BLOCKS, cid=b"d" * 32))
    assert record(state, b"d" * 32)["dispute_blocks"] == ch.MAX_DISPUTE_BLOCKS


def test_unknown_method_is_refused_before_running(state):
    rejected(state, call(A, NET, "channel", "steal", {"cid": CID}, 0), "unknown_method")


# ------------------------------------------------------------------ cooperative close


@pytest.mark.parametrize("closer", [A, B])
def test_coop_close_pays_exactly_the_signed_balances(state, closer):
    opened(state)
    apply(state, ch.close_tx(closer, NET, CID, signed(7, 30, 120), nonce(state, closer)), 2)
    fee_a, fee_b = (2, 0) if closer is A else (1, 1)
    assert bal(state, A) == 1000 - 100 - fee_a + 30
    assert bal(state, B) == 500 - 50 - fee_b + 120
    rec = record(state)
    assert rec["status"] == "closed" and rec["paid"] == 150 and not rec["penalized"]
    assert total_locked(state) == 0 and conserved(state)
    # closed for good: nothing else runs, and the cid stays taken
    rejected(state, ch.close_tx(A, NET, CID, signed(8, 30, 120), nonce(state, A)))
    rejected(state, ch.force_close_tx(A, NET, CID, signed(8, 30, 120), nonce(state, A)))
    rejected(state, ch.settle_tx(A, NET, CID, nonce(state, A)), height=100)
    rejected(state, open_tx(state))


def test_coop_close_misuse(state):
    opened(state)
    h = Htlc(0, PA, 10, payment_hash(PRE1), 50)

    def bad(sender: Identity, s, **kw) -> str:
        wire = s.to_wire() if isinstance(s, SignedState) else s
        args = {"cid": CID, "signed": wire}
        tx = call(sender, NET, "channel", "close", args, nonce(state, sender), **kw)
        return rejected(state, tx)

    bad(C, signed(1, 75, 75))  # not a party
    bad(A, signed(1, 75, 75), amount=5)  # carries an amount
    bad(A, signed(1, 65, 75, (h,)))  # HTLCs pending: only a force close
    bad(A, signed(1, 75, 74))  # does not hold the channel total
    bad(A, signed(1, 75, 76))
    bad(A, signed(1, 75, 75, signers=(A, A)))  # only A signed
    bad(A, signed(1, 75, 75, signers=(B, A)))  # signatures swapped
    bad(A, signed(1, 75, 75, net="other"))
    bad(A, signed(1, 75, 75, cid=b"x" * 32))  # a state of another channel
    good = signed(1, 75, 75).to_wire()
    bad(A, {**good, "sa": b"short"})
    bad(A, {**good, "s": {**good["s"], "seq": -1}})
    bad(A, "garbage")
    rejected(state, ch.close_tx(A, NET, b"x" * 32, signed(1, 75, 75, cid=b"x" * 32), 1))
    rejected(state, call(A, NET, "channel", "close", {"cid": CID}, 1))
    assert record(state)["status"] == "open" and total_locked(state) == 150


# ------------------------------------------------------------------ force close and settle


@pytest.mark.parametrize("closer", [A, B])
def test_force_close_then_settle_pays_the_posted_state(state, closer):
    opened(state)
    apply(state, ch.force_close_tx(closer, NET, CID, signed(4, 90, 60), nonce(state, closer)), 5)
    rec = record(state)
    assert rec["status"] == "closing" and rec["closer"] == (PA if closer is A else PB)
    assert rec["seq"] == 4 and rec["dispute_until"] == 5 + DISPUTE
    assert total_locked(state) == 150 and conserved(state)
    a0, b0 = bal(state, A), bal(state, B)
    rejected(state, ch.settle_tx(C, NET, CID, 0), height=5 + DISPUTE - 1)  # window still open
    rejected(state, ch.force_close_tx(A, NET, CID, signed(5, 90, 60), nonce(state, A)), height=6)
    rejected(state, ch.close_tx(A, NET, CID, signed(5, 90, 60), nonce(state, A)), height=6)
    apply(state, ch.settle_tx(C, NET, CID, 0), height=5 + DISPUTE)  # anyone may settle
    assert bal(state, A) == a0 + 90 and bal(state, B) == b0 + 60 and bal(state, C) == 299
    rec = record(state)
    assert rec["status"] == "closed" and rec["paid"] == 150 and not rec["penalized"]
    assert total_locked(state) == 0 and conserved(state)
    rejected(state, ch.settle_tx(C, NET, CID, 1), height=100)  # once only
    rejected(state, ch.challenge_tx(B, NET, CID, signed(9, 0, 150), nonce(state, B)), height=100)


def test_force_close_misuse(state):
    opened(state)
    rejected(state, ch.force_close_tx(C, NET, CID, signed(1, 75, 75), 0))  # not a party
    rejected(state, ch.force_close_tx(A, NET, CID, signed(1, 75, 74), 1))  # wrong total
    rejected(state, ch.force_close_tx(A, NET, CID, signed(1, 75, 75, signers=(A, C)), 1))
    rejected(state, ch.force_close_tx(A, NET, CID, signed(1, 75, 75, cid=b"x" * 32), 1))
    args = {"cid": CID, "signed": signed(1, 75, 75).to_wire()}
    rejected(state, call(A, NET, "channel", "force_close", args, 1, amount=1))
    rejected(state, call(A, NET, "channel", "force_close", {**args, "x": 0}, 1))
    rejected(state, ch.settle_tx(A, NET, CID, 1), height=1000)  # not closing
    assert record(state)["status"] == "open"


# ------------------------------------------------------------------ challenge (penalty)


@pytest.mark.parametrize("closer", [A, B])
@pytest.mark.parametrize("sender", ["victim", "tower", "closer"])
def test_challenge_gives_everything_to_the_victim(state, closer, sender):
    opened(state)
    victim = B if closer is A else A
    stale = signed(3, 140, 10) if closer is A else signed(3, 10, 140)
    apply(state, ch.force_close_tx(closer, NET, CID, stale, nonce(state, closer)), height=2)
    by = {"victim": victim, "tower": W, "closer": closer}[sender]
    before = {p: bal(state, p) for p in (A, B, W)}
    tx = ch.challenge_tx(by, NET, CID, signed(5, 75, 75), nonce(state, by))
    apply(state, tx, height=2 + DISPUTE - 1)  # the last block of the window
    assert bal(state, victim) == before[victim] + 150 - (1 if by is victim else 0)
    assert bal(state, closer) == before[closer] - (1 if by is closer else 0)
    assert bal(state, W) == before[W] - (1 if by is W else 0)  # the tower gains nothing
    rec = record(state)
    assert rec["status"] == "closed" and rec["penalized"] and rec["paid"] == 150
    assert total_locked(state) == 0 and conserved(state)
    rejected(state, ch.settle_tx(C, NET, CID, 0), height=100)
    rejected(state, ch.challenge_tx(W, NET, CID, signed(6, 75, 75), nonce(state, W)), height=3)


def test_one_step_newer_state_replaces_the_posted_one_without_penalty(state):
    """A closer that missed the peer's last ack posts seq N while the peer holds N+1."""
    opened(state)
    apply(state, ch.force_close_tx(A, NET, CID, signed(3, 140, 10), nonce(state, A)), height=2)
    apply(state, ch.challenge_tx(B, NET, CID, signed(4, 75, 75), nonce(state, B)), height=3)
    rec = record(state)
    assert rec["status"] == "closing" and not rec["penalized"] and rec["seq"] == 4
    a0, b0 = bal(state, A), bal(state, B)
    apply(state, ch.settle_tx(C, NET, CID, 0), height=2 + DISPUTE)
    assert bal(state, A) == a0 + 75 and bal(state, B) == b0 + 75 and conserved(state)


def test_challenge_refused(state):
    opened(state)
    rejected(state, ch.challenge_tx(B, NET, CID, signed(4, 75, 75), 0), height=2)  # still open
    apply(state, ch.force_close_tx(A, NET, CID, signed(3, 140, 10), nonce(state, A)), height=2)
    for s in (signed(3, 75, 75), signed(2, 75, 75), signed(0, 0, 150)):  # seq not higher
        rejected(state, ch.challenge_tx(B, NET, CID, s, 0), height=3)
    for s in (
        signed(4, 75, 74),  # wrong total
        signed(4, 75, 75, signers=(B, B)),  # forged: A never signed it
        signed(4, 75, 75, cid=b"x" * 32),
        signed(4, 75, 75, net="other"),
    ):
        rejected(state, ch.challenge_tx(W, NET, CID, s, 0), height=3)
    args = {"cid": CID, "signed": signed(4, 75, 75).to_wire()}
    rejected(state, call(B, NET, "channel", "challenge", args, 0, amount=1), height=3)
    late = 2 + DISPUTE
    rejected(state, ch.challenge_tx(B, NET, CID, signed(4, 75, 75), 0), height=late)
    apply(state, ch.settle_tx(B, NET, CID, 0), height=late)
    assert bal(state, A) == 1000 - 100 - 2 + 140 and bal(state, B) == 500 - 50 - 1 + 10
    assert not record(state)["penalized"] and conserved(state)


# ------------------------------------------------------------------ HTLCs on chain

# A offers 30 to B (expiry 40), B offers 20 to A (expiry 30); balances 60 + 40.
H1 = Htlc(1, PA, 30, payment_hash(PRE1), 40)
H2 = Htlc(2, PB, 20, payment_hash(PRE2), 30)
WITH_HTLCS = signed(5, 60, 40, (H1, H2))


def closing_with_htlcs(state: State, closer: Identity = A, height: int = 1) -> None:
    opened(state, height=height)
    apply(state, ch.force_close_tx(closer, NET, CID, WITH_HTLCS, nonce(state, closer)), height)


def htlc(state: State, hid: int) -> dict:
    return next(h for h in record(state)["htlcs"] if h["id"] == hid)


def test_htlc_claimed_while_closing_is_paid_at_settle(state):
    closing_with_htlcs(state)
    assert htlc(state, 1)["status"] == "pending" and htlc(state, 1)["preimage"] is None
    b0 = bal(state, B)
    apply(state, ch.claim_htlc_tx(C, NET, CID, 1, PRE1, 0), height=5)  # anyone may reveal it
    assert htlc(state, 1)["status"] == "claimed" and htlc(state, 1)["preimage"] == PRE1
    assert bal(state, B) == b0 and total_locked(state) == 150  # paid at settle
    rejected(state, ch.claim_htlc_tx(B, NET, CID, 1, PRE1, nonce(state, B)), height=6)  # twice
    a0 = bal(state, A)
    apply(state, ch.settle_tx(B, NET, CID, nonce(state, B)), height=1 + DISPUTE)
    assert bal(state, A) == a0 + 60 and bal(state, B) == b0 - 1 + 40 + 30
    rec = record(state)
    assert rec["status"] == "settled" and total_locked(state) == 20  # H2 still pending
    # H2 after settle, before expiry: paid to A (B offered it) at once; the channel closes
    apply(state, ch.claim_htlc_tx(A, NET, CID, 2, PRE2, nonce(state, A)), height=29)
    assert bal(state, A) == a0 + 60 + 20 - 1
    assert record(state)["status"] == "closed" and total_locked(state) == 0 and conserved(state)
    rejected(state, ch.refund_htlc_tx(B, NET, CID, 2, nonce(state, B)), height=30)


def test_htlc_refunded_after_expiry(state):
    closing_with_htlcs(state)
    rejected(state, ch.refund_htlc_tx(A, NET, CID, 1, nonce(state, A)), height=50)  # closing
    apply(state, ch.settle_tx(C, NET, CID, 0), height=1 + DISPUTE)
    assert record(state)["status"] == "settled" and total_locked(state) == 50
    rejected(state, ch.refund_htlc_tx(A, NET, CID, 1, nonce(state, A)), height=39)  # too early
    rejected(state, ch.claim_htlc_tx(B, NET, CID, 1, PRE1, nonce(state, B)), height=40)  # expired
    a0, b0 = bal(state, A), bal(state, B)
    apply(state, ch.refund_htlc_tx(C, NET, CID, 1, 1), height=40)  # back to A, the offerer
    assert bal(state, A) == a0 + 30 and bal(state, B) == b0
    rejected(state, ch.refund_htlc_tx(A, NET, CID, 1, nonce(state, A)), height=41)  # twice
    assert record(state)["status"] == "settled"
    apply(state, ch.refund_htlc_tx(B, NET, CID, 2, nonce(state, B)), height=30)  # back to B
    assert bal(state, B) == b0 - 1 + 20
    rec = record(state)
    assert rec["status"] == "closed" and [h["status"] for h in rec["htlcs"]] == ["refunded"] * 2
    assert total_locked(state) == 0 and conserved(state)


def test_settle_with_every_htlc_claimed_closes_the_channel(state):
    closing_with_htlcs(state, closer=B)
    apply(state, ch.claim_htlc_tx(B, NET, CID, 1, PRE1, nonce(state, B)), height=2)
    apply(state, ch.claim_htlc_tx(A, NET, CID, 2, PRE2, nonce(state, A)), height=3)
    a0, b0 = bal(state, A), bal(state, B)
    apply(state, ch.settle_tx(W, NET, CID, 0), height=1 + DISPUTE)
    assert bal(state, A) == a0 + 60 + 20 and bal(state, B) == b0 + 40 + 30
    assert record(state)["status"] == "closed" and total_locked(state) == 0 and conserved(state)


def test_htlc_claim_misuse(state):
    opened(state)
    rejected(state, ch.claim_htlc_tx(B, NET, CID, 1, PRE1, 0))  # channel still open
    apply(state, ch.force_close_tx(A, NET, CID, WITH_HTLCS, nonce(state, A)))
    rejected(state, ch.claim_htlc_tx(B, NET, CID, 1, PRE2, 0))  # wrong preimage
    rejected(state, ch.claim_htlc_tx(B, NET, CID, 9, PRE1, 0))  # no such htlc
    rejected(state, ch.claim_htlc_tx(B, NET, CID, 1, PRE1, 0), height=40)  # at expiry
    rejected(state, ch.claim_htlc_tx(B, NET, CID, 1, b"", 0))
    rejected(state, ch.claim_htlc_tx(B, NET, CID, 1, b"p" * (ch.MAX_PREIMAGE + 1), 0))
    rejected(state, ch.claim_htlc_tx(B, NET, CID, -1, PRE1, 0))
    args = {"cid": CID, "id": 1, "preimage": PRE1}
    rejected(state, call(B, NET, "channel", "claim_htlc", {**args, "preimage": "x"}, 0))
    rejected(state, call(B, NET, "channel", "claim_htlc", args, 0, amount=1))
    rejected(state, call(B, NET, "channel", "refund_htlc", args, 0))  # extra key
    rejected(state, ch.refund_htlc_tx(B, NET, CID, 1, 0), height=100)  # closing: not yet
    assert all(h["status"] == "pending" for h in record(state)["htlcs"])


def test_challenge_after_a_claim_still_pays_the_victim_everything(state):
    closing_with_htlcs(state, closer=A)
    apply(state, ch.claim_htlc_tx(B, NET, CID, 1, PRE1, 0), height=2)
    b0 = bal(state, B)
    apply(state, ch.challenge_tx(W, NET, CID, signed(7, 0, 150), 0), height=3)
    assert bal(state, B) == b0 + 150 and record(state)["penalized"]
    assert htlc(state, 1)["preimage"] == PRE1  # still readable by an upstream hop
    rejected(state, ch.claim_htlc_tx(A, NET, CID, 2, PRE2, nonce(state, A)), height=4)
    assert total_locked(state) == 0 and conserved(state)


# ------------------------------------------------------------------ views, builders, atomicity


def test_channel_record_is_a_plain_storable_copy(state):
    assert ch.channel_record(state, CID) is None
    closing_with_htlcs(state)
    apply(state, ch.claim_htlc_tx(B, NET, CID, 1, PRE1, 0), height=2)
    rec = record(state)
    assert unpack_value(pack_value(rec)) == rec  # msgpack-friendly, strict types
    assert rec["cid"] == CID and rec["seq"] == 5 and (rec["bal_a"], rec["bal_b"]) == (60, 40)
    assert rec["closer"] == PA and rec["dispute_until"] == 1 + DISPUTE
    assert rec["htlcs"][0] == {"id": 1, "offerer": PA, "amount": 30, "expiry": 40,
                               "payment_hash": H1.payment_hash, "status": "claimed",
                               "preimage": PRE1}
    rec["htlcs"][0]["status"] = "mangled"
    rec["status"] = "mangled"
    assert record(state)["status"] == "closing" and htlc(state, 1)["status"] == "claimed"


def test_builders_sign_calls_to_the_contract(state):
    sig = sig_open(B, A, CID, 10, 5)
    tx = ch.open_tx(A, NET, CID, B.pubkey, 10, 5, DISPUTE, sig, nonce=0, fee=3)
    assert tx.verify() and (tx.contract, tx.method, tx.amount, tx.fee) == ("channel", "open", 10, 3)
    assert tx.args == ch.open_args(CID, B.pubkey, 10, 5, DISPUTE, sig)
    s = signed(1, 10, 5)
    txs = [
        ch.close_tx(A, NET, CID, s, 1),
        ch.force_close_tx(A, NET, CID, s, 1),
        ch.challenge_tx(W, NET, CID, s, 0),
        ch.settle_tx(C, NET, CID, 0),
        ch.claim_htlc_tx(B, NET, CID, 1, PRE1, 0),
        ch.refund_htlc_tx(B, NET, CID, 1, 0),
    ]
    for t, method in zip(txs, ["close", "force_close", "challenge", "settle", "claim_htlc",
                               "refund_htlc"]):
        assert t.verify() and t.method == method and t.amount == 0 and t.fee == 1
    apply(state, tx)
    assert record(state)["total"] == 15


def test_rejected_open_undoes_the_fee_and_nonce_without_a_block_journal():
    s = genesis_state(GENESIS)  # no journal open: apply_tx opens its own
    before = dict(s.kv)
    with pytest.raises(TxRejected):
        apply(s, open_tx(s, fund_b=501))
    assert s.kv == before and not s.journaling


def test_several_channels_are_independent(state):
    apply(state, open_tx(state, cid=b"1" * 32, fund_a=100, fund_b=0))
    apply(state, open_tx(state, a=C, b=B, cid=b"2" * 32, fund_a=50, fund_b=50))
    assert total_locked(state) == 200
    s2 = signed(1, 0, 100, cid=b"2" * 32, signers=(C, B))
    apply(state, ch.close_tx(B, NET, b"2" * 32, s2, nonce(state, B)))
    assert bal(state, B) == 500 - 50 - 1 + 100
    assert total_locked(state) == 100 and record(state, b"1" * 32)["status"] == "open"
    assert conserved(state)


# ------------------------------------------------------------------ hypothesis

PEOPLE = (A, B, C, W)  # W never opens channels: it only sends challenges, settles, claims
REWARD = 5


@dataclass
class Chan:
    cid: bytes
    a: Identity
    b: Identity
    total: int
    dispute: int
    status: str = "open"
    closer: int | None = None
    posted: ChannelState | None = None
    until: int = 0
    htlc_status: dict[int, str] = field(default_factory=dict)
    paid: int = 0
    states: list[tuple[SignedState, bool]] = field(default_factory=list)  # (state, forged)
    seq: int = 0

    def pk(self, party: int) -> bytes:
        return (self.a if party == PA else self.b).pubkey


class ChannelHistory(RuleBasedStateMachine):
    """Random opens, off-chain updates, closes, challenges, settles, claims and refunds at
    random heights; a model predicts every outcome, coins are conserved, and undoing every
    block restores genesis (no stored record was changed in place)."""

    def __init__(self):
        super().__init__()
        self.state = genesis_state(GENESIS)
        self.genesis = dict(self.state.kv)
        self.balances = dict(GENESIS)
        self.chans: list[Chan] = []
        self.preimages = [bytes([i]) * 8 for i in range(4)]
        self.height, self.minted, self.undos = 1, 0, []
        self.state.begin()

    # -- helpers -----------------------------------------------------------------------
    def send(self, tx: Tx, label: str, ok: bool, payouts: dict[bytes, int]) -> bool:
        """Apply `tx`; check it passed iff the model says `ok`, and then the payouts."""
        before = dict(self.state.kv)
        can_pay = self.balances[tx.sender] >= tx.amount + tx.fee
        try:
            apply_tx(self.state, tx, self.height, M.pubkey, net=NET)
        except TxRejected as exc:
            assert self.state.kv == before
            assert not (ok and can_pay), f"{label} refused: {exc}"
            event(f"{label}: {exc.reason}")
            return False
        assert ok and can_pay, f"{label} accepted against the model"
        event(f"{label}: ok")
        self.balances[tx.sender] -= tx.amount + tx.fee
        self.balances[M.pubkey] = self.balances.get(M.pubkey, 0) + tx.fee
        for pk, amount in payouts.items():
            self.balances[pk] = self.balances.get(pk, 0) + amount
        return True

    def chan(self, pick: int) -> Chan | None:
        return self.chans[-1 - pick % len(self.chans)] if self.chans else None  # recent first

    def pay(self, c: Chan, payouts: dict[bytes, int], pk: bytes, amount: int) -> None:
        payouts[pk] = payouts.get(pk, 0) + amount
        c.paid += amount

    # -- rules -------------------------------------------------------------------------
    @initialize(fund_a=st.integers(0, 150), fund_b=st.integers(1, 150), dispute=st.integers(1, 8),
                updates=st.integers(0, 3), data=st.data())
    def first_channel(self, fund_a, fund_b, dispute, updates, data):
        self.open(0, 1, fund_a, fund_b, dispute, reuse=0)
        assert self.chans
        for _ in range(updates):
            self.update(0, data)

    @precondition(lambda self: sum(c.status != "closed" for c in self.chans) < 3)
    @rule(
        a=st.integers(0, 2),
        b=st.integers(0, 2),
        fund_a=st.integers(0, 150),
        fund_b=st.integers(0, 150),
        dispute=st.integers(1, 8),
        reuse=st.integers(0, 5),  # 1: the cid of the last channel, taken
    )
    def open(self, a, b, fund_a, fund_b, dispute, reuse):
        ia, ib = PEOPLE[a], PEOPLE[b]
        cid = self.chans[-1].cid if reuse == 1 and self.chans else bytes([len(self.chans)]) * 32
        sig = sig_open(ib, ia, cid, fund_a, fund_b, dispute)
        n = nonce(self.state, ia)
        tx = ch.open_tx(ia, NET, cid, ib.pubkey, fund_a, fund_b, dispute, sig, n)
        ok = (a != b and fund_a + fund_b > 0 and self.balances[ib.pubkey] >= fund_b
              and not (reuse == 1 and self.chans))
        if self.send(tx, "open", ok, {ib.pubkey: -fund_b}):
            self.chans.append(Chan(cid, ia, ib, fund_a + fund_b, dispute))

    @rule(pick=st.integers(0, 3), data=st.data())
    def update(self, pick, data):
        """An off-chain state both sign (or, now and then, one forged by a single party)."""
        c = self.chan(pick)
        if c is None:
            return
        left, htlcs = c.total, []
        for hid in range(data.draw(st.integers(0, 2))):
            if left == 0:
                break
            amount = data.draw(st.integers(1, left))
            left -= amount
            hash_ = payment_hash(self.preimages[data.draw(st.integers(0, 3))])
            expiry = self.height + data.draw(st.integers(0, 25))
            htlcs.append(Htlc(hid, data.draw(st.sampled_from([PA, PB])), amount, hash_, expiry))
        bal_a = data.draw(st.integers(0, left))
        c.seq += data.draw(st.sampled_from([1, 1, 2]))
        forged = data.draw(st.integers(0, 9)) == 0
        signers = (c.a, c.a) if forged else (c.a, c.b)
        s = signed(c.seq, bal_a, left - bal_a, tuple(htlcs), cid=c.cid, signers=signers)
        c.states.append((s, forged))

    def pick_state(self, c: Chan, which: int) -> tuple[SignedState, bool]:
        """Often the latest state (which == 0), else any earlier one."""
        if not c.states:  # the opening state, seq 0, both balances as funded
            return signed(0, c.total, 0, cid=c.cid, signers=(c.a, c.b)), False
        return c.states[-1 - which % len(c.states)] if which else c.states[-1]

    @rule(pick=st.integers(0, 3), which=st.integers(0, 9), who=st.integers(0, 3),
          force=st.sampled_from([True, True, False]))
    def close(self, pick, which, who, force):
        c = self.chan(pick)
        if c is None:
            return
        s, forged = self.pick_state(c, which)
        sender = PEOPLE[who]
        party = PA if sender is c.a else PB if sender is c.b else None
        ok = c.status == "open" and party is not None and not forged
        payouts: dict[bytes, int] = {}
        if force:
            tx = ch.force_close_tx(sender, NET, c.cid, s, nonce(self.state, sender))
            if self.send(tx, "force_close", ok, payouts):
                c.status, c.closer, c.posted = "closing", party, s.state
                c.until = self.height + c.dispute
                c.htlc_status = {h.id: "pending" for h in s.state.htlcs}
            return
        ok = ok and not s.state.htlcs
        tx = ch.close_tx(sender, NET, c.cid, s, nonce(self.state, sender))
        if ok:
            self.pay(c, payouts, c.a.pubkey, s.state.bal_a)
            self.pay(c, payouts, c.b.pubkey, s.state.bal_b)
        if self.send(tx, "close", ok, payouts):
            c.status = "closed"
        elif ok:
            c.paid = 0

    @rule(pick=st.integers(0, 3), which=st.integers(0, 9), who=st.integers(0, 3))
    def challenge(self, pick, which, who):
        c = self.chan(pick)
        if c is None:
            return
        s, forged = self.pick_state(c, which)
        sender = PEOPLE[who]
        ok = (c.status == "closing" and self.height < c.until and not forged
              and c.posted is not None and s.state.seq > c.posted.seq)
        update = ok and s.state.seq == c.posted.seq + 1  # one step newer: replaces, no penalty
        payouts: dict[bytes, int] = {}
        if ok and not update:
            victim = c.pk(PB if c.closer == PA else PA)
            payouts[victim] = c.total - c.paid
        tx = ch.challenge_tx(sender, NET, c.cid, s, nonce(self.state, sender))
        if self.send(tx, "challenge", ok, payouts):
            if update:
                old = {h.id: h for h in c.posted.htlcs}
                c.htlc_status = {
                    h.id: "claimed" if (c.htlc_status.get(h.id) == "claimed" and old.get(h.id) == h)
                    else "pending" for h in s.state.htlcs}
                c.posted = s.state
            else:
                c.status, c.paid = "closed", c.total

    def resolved(self, c: Chan) -> None:
        if c.status == "settled" and "pending" not in c.htlc_status.values():
            c.status = "closed"

    @rule(pick=st.integers(0, 3), who=st.integers(0, 3))
    def settle(self, pick, who):
        c = self.chan(pick)
        if c is None:
            return
        sender = PEOPLE[who]
        ok = c.status == "closing" and self.height >= c.until
        payouts: dict[bytes, int] = {}
        paid = c.paid
        if ok:
            assert c.posted is not None
            self.pay(c, payouts, c.a.pubkey, c.posted.bal_a)
            self.pay(c, payouts, c.b.pubkey, c.posted.bal_b)
            for h in c.posted.htlcs:
                if c.htlc_status[h.id] == "claimed":
                    self.pay(c, payouts, c.pk(1 - h.offerer), h.amount)
        if self.send(ch.settle_tx(sender, NET, c.cid, nonce(self.state, sender)), "settle", ok,
                     payouts):
            c.status = "settled"
            self.resolved(c)
        else:
            c.paid = paid

    def pick_htlc(self, c: Chan, which: int) -> Htlc | None:
        if c.posted is None or not c.posted.htlcs:
            return None
        return c.posted.htlcs[which % len(c.posted.htlcs)]

    @rule(pick=st.integers(0, 3), which=st.integers(0, 3), right=st.integers(0, 3),
          who=st.integers(0, 3))
    def claim(self, pick, which, right, who):
        c = self.chan(pick)
        h = self.pick_htlc(c, which) if c else None
        if c is None or h is None:
            return
        known = next(p for p in self.preimages if payment_hash(p) == h.payment_hash)
        sender = PEOPLE[who]
        preimage = known if right else self.preimages[which]  # which: any, maybe the right one
        ok = (c.status in ("closing", "settled") and c.htlc_status[h.id] == "pending"
              and self.height < h.expiry and payment_hash(preimage) == h.payment_hash)
        payouts: dict[bytes, int] = {}
        paid = c.paid
        if ok and c.status == "settled":
            self.pay(c, payouts, c.pk(1 - h.offerer), h.amount)
        tx = ch.claim_htlc_tx(sender, NET, c.cid, h.id, preimage, nonce(self.state, sender))
        if self.send(tx, "claim", ok, payouts):
            c.htlc_status[h.id] = "claimed"
            assert ch.channel_record(self.state, c.cid)["htlcs"][h.id]["preimage"] == preimage
            self.resolved(c)
        else:
            c.paid = paid

    @rule(pick=st.integers(0, 3), which=st.integers(0, 3), who=st.integers(0, 3))
    def refund(self, pick, which, who):
        c = self.chan(pick)
        h = self.pick_htlc(c, which) if c else None
        if c is None or h is None:
            return
        sender = PEOPLE[who]
        ok = (c.status == "settled" and c.htlc_status[h.id] == "pending"
              and self.height >= h.expiry)
        payouts: dict[bytes, int] = {}
        paid = c.paid
        if ok:
            self.pay(c, payouts, c.pk(h.offerer), h.amount)
        tx = ch.refund_htlc_tx(sender, NET, c.cid, h.id, nonce(self.state, sender))
        if self.send(tx, "refund", ok, payouts):
            c.htlc_status[h.id] = "refunded"
            self.resolved(c)
        else:
            c.paid = paid

    @rule(jump=st.sampled_from([1, 1, 2, 5, 12]))
    def block(self, jump):
        self.undos.append(self.state.commit())
        self.state.begin()
        self.height += jump
        apply_reward(self.state, M.pubkey, REWARD)
        self.balances[M.pubkey] = self.balances.get(M.pubkey, 0) + REWARD
        self.minted += REWARD

    # -- invariants --------------------------------------------------------------------
    @invariant()
    def coins_are_conserved(self):
        assert conserved(self.state, self.minted)
        assert total_locked(self.state) == sum(c.total - c.paid for c in self.chans)

    @invariant()
    def balances_match_the_model(self):
        for pk, amount in self.balances.items():
            assert self.state.balance(pk) == amount
        for c in self.chans:
            rec = ch.channel_record(self.state, c.cid)
            assert rec is not None and rec["status"] == c.status and rec["paid"] == c.paid
            assert [h["status"] for h in rec["htlcs"]] == list(c.htlc_status.values())

    def teardown(self):
        self.undos.append(self.state.commit())
        for undo in reversed(self.undos):
            self.state.undo(undo)
        assert self.state.kv == self.genesis


ChannelHistory.TestCase.settings = settings(
    max_examples=200, stateful_step_count=100, deadline=None
)
test_channel_history = ChannelHistory.TestCase
