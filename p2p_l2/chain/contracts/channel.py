"""`channel`: the layer-1 side of a Lightning-style payment channel (DESIGN §5).

Design: one record per cid, its `status` moved by `TRANSITIONS`. A unilateral close posts a
double-signed state for `dispute_blocks`; a higher seq inside that window pays the whole total to
the non-closer. Posted HTLCs are claimed by preimage before expiry, refunded after.
"""

from __future__ import annotations

from typing import Any

from ...channel.commitment import A, B, ChannelState, SignedState, open_digest, payment_hash
from ...errors import RemoteProtocolError
from ...wire.identity import Identity, verify
from ..state import State
from ..tx import MAX_INT, Tx, TxRejected, call
from . import ArgChecks, Contract, register

__all__ = [
    "CHANNEL",
    "Channel",
    "MAX_DISPUTE_BLOCKS",
    "MAX_PREIMAGE",
    "TRANSITIONS",
    "challenge_tx",
    "channel_record",
    "claim_htlc_tx",
    "close_tx",
    "force_close_tx",
    "open_args",
    "open_tx",
    "refund_htlc_tx",
    "settle_tx",
]

NAME = "channel"
MAX_DISPUTE_BLOCKS = 10_000
MAX_PREIMAGE = 256  # bytes

# method -> the channel statuses it may run in (`open` needs an unused cid).  Results:
#   close: open -> closed            force_close: open -> closing
#   challenge: closing -> closed (penalized)
#   settle: closing -> settled (HTLCs left unresolved) | closed
#   claim_htlc: closing -> closing | settled -> settled | closed (last one resolved)
#   refund_htlc: settled -> settled | closed (last one resolved)
TRANSITIONS: dict[str, frozenset[str]] = {
    "close": frozenset({"open"}),
    "force_close": frozenset({"open"}),
    "challenge": frozenset({"closing"}),
    "settle": frozenset({"closing"}),
    "claim_htlc": frozenset({"closing", "settled"}),
    "refund_htlc": frozenset({"settled"}),
}

# Storage record (str-keyed map, msgpack-friendly; never mutated in place, since the journal
# keeps the old value by reference):
#   a, b, fund_a, fund_b, total, dispute_blocks, status, opened_at, paid, penalized,
#   closer (party or None), seq, bal_a, bal_b, dispute_until (None until force_close),
#   htlcs: [{id, offerer, amount, payment_hash, expiry, status, preimage}]
#   with htlc status "pending" | "claimed" | "refunded".


_checks = ArgChecks(NAME)
_error, _bytes, _int = _checks.error, _checks.bytes, _checks.int


def _key(cid: bytes) -> tuple:
    return ("c", NAME, cid)


class Channel(Contract):
    name = NAME
    methods = frozenset(("open", *TRANSITIONS))

    _ARGS = {
        "open": {"cid", "b", "fund_a", "fund_b", "dispute_blocks", "sig_b"},
        "close": {"cid", "signed"},
        "force_close": {"cid", "signed"},
        "challenge": {"cid", "signed"},
        "settle": {"cid"},
        "claim_htlc": {"cid", "id", "preimage"},
        "refund_htlc": {"cid", "id"},
    }

    def apply(self, state: State, tx: Tx, height: int) -> None:
        method = tx.method
        args: Any = _checks.call_args(tx, self._ARGS)
        cid = _bytes(args, "cid", 32)
        if method == "open":
            _open(state, tx, height, args, cid)
            return
        if tx.amount:
            raise _error(f"{method} takes no amount")
        rec = state.get(_key(cid))
        if rec is None:
            raise _error("no such channel")
        if rec["status"] not in TRANSITIONS[method]:  # type: ignore[index]
            raise _error(f"{method} on a channel that is {rec['status']}")
        rec = dict(rec)  # a copy: the journal holds the stored one as the old value
        _HANDLERS[method](state, tx, height, args, cid, rec)  # type: ignore[index]

    def locked(self, state: State) -> int:
        return sum(v["total"] - v["paid"] for _, v in state.items(("c", NAME)))


# -- methods ---------------------------------------------------------------------------
def _open(state: State, tx: Tx, height: int, args: dict, cid: bytes) -> None:
    """Lock fund_a (paid by A, the sender) and fund_b (debited from B, who signed it)."""
    a, b = tx.sender, _bytes(args, "b", 32)
    fund_a, fund_b = _int(args, "fund_a"), _int(args, "fund_b")
    dispute = _int(args, "dispute_blocks", 1, MAX_DISPUTE_BLOCKS)
    sig_b = _bytes(args, "sig_b", 64)
    if a == b:
        raise _error("a channel needs two different parties")
    total = fund_a + fund_b
    if not 0 < total < MAX_INT:
        raise _error(f"funding {total} out of range")
    if tx.amount != fund_a:
        raise _error(f"amount {tx.amount} != fund_a {fund_a}")
    if state.get(_key(cid)) is not None:
        raise _error("channel id already used")
    if not verify(b, open_digest(tx.net, cid, a, b, fund_a, fund_b, dispute), sig_b):
        raise _error("sig_b does not verify")
    if fund_b:
        have = state.balance(b)
        if have < fund_b:
            raise TxRejected("insufficient_funds", f"{NAME}: b has {have} < fund_b {fund_b}")
        state.add_balance(b, -fund_b)
    rec = {
        "a": a, "b": b, "fund_a": fund_a, "fund_b": fund_b, "total": total,
        "dispute_blocks": dispute, "status": "open", "opened_at": height, "paid": 0,
        "penalized": False, "closer": None, "seq": None, "bal_a": None, "bal_b": None,
        "dispute_until": None, "htlcs": [],
    }
    state.set(_key(cid), rec)


def _close(state: State, tx: Tx, height: int, args: dict, cid: bytes, rec: dict) -> None:
    """Cooperative close: pay the double-signed balances at once."""
    _party(rec, tx.sender)
    st = _signed_state(args, rec, tx.net, cid)
    if st.htlcs:
        raise _error("a cooperative close takes a state without HTLCs")
    rec.update(status="closed", seq=st.seq, bal_a=st.bal_a, bal_b=st.bal_b)
    _pay(state, rec, rec["a"], st.bal_a)
    _pay(state, rec, rec["b"], st.bal_b)
    state.set(_key(cid), rec)


def _force_close(state: State, tx: Tx, height: int, args: dict, cid: bytes, rec: dict) -> None:
    """Unilateral close: post the state; it pays out after the dispute window."""
    closer = _party(rec, tx.sender)
    st = _signed_state(args, rec, tx.net, cid)
    until = height + rec["dispute_blocks"]
    if until >= MAX_INT:
        raise _error("height out of range")
    htlcs = [
        {"id": h.id, "offerer": h.offerer, "amount": h.amount, "payment_hash": h.payment_hash,
         "expiry": h.expiry, "status": "pending", "preimage": None}
        for h in st.htlcs
    ]
    rec.update(status="closing", closer=closer, seq=st.seq, bal_a=st.bal_a, bal_b=st.bal_b,
               dispute_until=until, htlcs=htlcs)
    state.set(_key(cid), rec)


def _challenge(state: State, tx: Tx, height: int, args: dict, cid: bytes, rec: dict) -> None:
    """A newer state inside the window.  One step newer: the closer may just have missed
    the peer's last signature (a lost ack), so the newer state replaces the posted one and
    nobody is punished.  Two or more: the closer had countersigned a newer state than the
    one it posted — it lied, and the victim takes it all."""
    if height >= rec["dispute_until"]:
        raise _error(f"the dispute window ended at height {rec['dispute_until']}")
    st = _signed_state(args, rec, tx.net, cid)
    if st.seq <= rec["seq"]:
        raise _error(f"seq {st.seq} is not above the posted seq {rec['seq']}")
    if st.seq == rec["seq"] + 1:
        claimed = {(h["id"], h["offerer"], h["amount"], h["payment_hash"], h["expiry"]): h
                   for h in rec["htlcs"] if h["status"] == "claimed"}
        htlcs = [claimed[(h.id, h.offerer, h.amount, h.payment_hash, h.expiry)]
                 if (h.id, h.offerer, h.amount, h.payment_hash, h.expiry) in claimed else
                 {"id": h.id, "offerer": h.offerer, "amount": h.amount,
                  "payment_hash": h.payment_hash, "expiry": h.expiry, "status": "pending",
                  "preimage": None} for h in st.htlcs]
        rec.update(seq=st.seq, bal_a=st.bal_a, bal_b=st.bal_b, htlcs=htlcs)
        state.set(_key(cid), rec)
        return
    # Whoever sends it (the victim or its watchtower), the victim gets everything.
    victim = rec["b"] if rec["closer"] == A else rec["a"]
    rec.update(status="closed", penalized=True)
    _pay(state, rec, victim, rec["total"] - rec["paid"])
    state.set(_key(cid), rec)


def _settle(state: State, tx: Tx, height: int, args: dict, cid: bytes, rec: dict) -> None:
    """After the window: pay the posted balances and the HTLCs claimed so far."""
    if height < rec["dispute_until"]:
        raise _error(f"the dispute window runs until height {rec['dispute_until']}")
    _pay(state, rec, rec["a"], rec["bal_a"])
    _pay(state, rec, rec["b"], rec["bal_b"])
    for h in rec["htlcs"]:
        if h["status"] == "claimed":
            _pay(state, rec, _receiver(rec, h), h["amount"])
    rec["status"] = "settled"
    _maybe_closed(rec)
    state.set(_key(cid), rec)


def _claim_htlc(state: State, tx: Tx, height: int, args: dict, cid: bytes, rec: dict) -> None:
    """Reveal the preimage before expiry; the non-offerer is paid (now or at settle)."""
    preimage = args["preimage"]
    if type(preimage) is not bytes or not 0 < len(preimage) <= MAX_PREIMAGE:
        raise _error(f"preimage must be 1..{MAX_PREIMAGE} bytes")
    i, h = _pending_htlc(rec, args)
    if height >= h["expiry"]:
        raise _error(f"htlc {h['id']} expired at height {h['expiry']}")
    if payment_hash(preimage) != h["payment_hash"]:
        raise _error("preimage does not match the payment hash")
    h = dict(h, status="claimed", preimage=preimage)
    _replace_htlc(rec, i, h)
    if rec["status"] == "settled":  # while closing, `settle` pays it
        _pay(state, rec, _receiver(rec, h), h["amount"])
        _maybe_closed(rec)
    state.set(_key(cid), rec)


def _refund_htlc(state: State, tx: Tx, height: int, args: dict, cid: bytes, rec: dict) -> None:
    """After expiry, an unclaimed HTLC of a settled channel goes back to its offerer."""
    i, h = _pending_htlc(rec, args)
    if height < h["expiry"]:
        raise _error(f"htlc {h['id']} is refundable from height {h['expiry']}")
    _replace_htlc(rec, i, dict(h, status="refunded"))
    _pay(state, rec, rec["a"] if h["offerer"] == A else rec["b"], h["amount"])
    _maybe_closed(rec)
    state.set(_key(cid), rec)


_HANDLERS = {
    "close": _close,
    "force_close": _force_close,
    "challenge": _challenge,
    "settle": _settle,
    "claim_htlc": _claim_htlc,
    "refund_htlc": _refund_htlc,
}


# -- helpers ---------------------------------------------------------------------------
def _party(rec: dict, sender: bytes) -> int:
    if sender == rec["a"]:
        return A
    if sender == rec["b"]:
        return B
    raise _error("only a party of the channel may do this")


def _signed_state(args: dict, rec: dict, net: str, cid: bytes) -> ChannelState:
    """`args["signed"]` as a state of this channel signed by both parties; else raises."""
    try:
        signed = SignedState.from_wire(args["signed"])
    except RemoteProtocolError as exc:
        raise _error(f"signed: {exc.detail}") from None
    st = signed.state
    if st.cid != cid:
        raise _error("the signed state is for another channel")
    if not signed.verify(net, rec["a"], rec["b"]):
        raise _error("the state is not signed by both parties")
    if st.total() != rec["total"]:
        raise _error(f"the state holds {st.total()}, the channel {rec['total']}")
    return st


def _pay(state: State, rec: dict, to: bytes, amount: int) -> None:
    if amount:
        rec["paid"] += amount
        assert rec["paid"] <= rec["total"], "channel paid out more than it holds"
        state.add_balance(to, amount)


def _receiver(rec: dict, h: dict) -> bytes:
    return rec["b"] if h["offerer"] == A else rec["a"]


def _pending_htlc(rec: dict, args: dict) -> tuple[int, dict]:
    hid = _int(args, "id")
    for i, h in enumerate(rec["htlcs"]):
        if h["id"] == hid:
            if h["status"] != "pending":
                raise _error(f"htlc {hid} is already {h['status']}")
            return i, h
    raise _error(f"no htlc {hid} in the posted state")


def _replace_htlc(rec: dict, i: int, h: dict) -> None:
    htlcs = list(rec["htlcs"])
    htlcs[i] = h
    rec["htlcs"] = htlcs


def _maybe_closed(rec: dict) -> None:
    """A settled channel with no pending HTLC left is closed."""
    if rec["status"] == "settled" and all(h["status"] != "pending" for h in rec["htlcs"]):
        rec["status"] = "closed"


# -- views and builders for the node service ----------------------------------------------
def channel_record(state: State, cid: bytes) -> dict | None:
    """A plain copy of the channel's record (see the storage comment above), or None."""
    rec = state.get(_key(cid))
    if rec is None:
        return None
    return dict(rec, cid=cid, htlcs=[dict(h) for h in rec["htlcs"]])


def open_args(
    cid: bytes, b_pk: bytes, fund_a: int, fund_b: int, dispute_blocks: int, sig_b: bytes
) -> dict:
    """The args of `open`; B's `sig_b` is over `open_digest(net, cid, a, b, ...)`."""
    return {"cid": cid, "b": b_pk, "fund_a": fund_a, "fund_b": fund_b,
            "dispute_blocks": dispute_blocks, "sig_b": sig_b}


def open_tx(
    identity_a: Identity,
    net: str,
    cid: bytes,
    b_pk: bytes,
    fund_a: int,
    fund_b: int,
    dispute_blocks: int,
    sig_b: bytes,
    nonce: int,
    fee: int = 1,
) -> Tx:
    args = open_args(cid, b_pk, fund_a, fund_b, dispute_blocks, sig_b)
    return call(identity_a, net, NAME, "open", args, nonce, fee, amount=fund_a)


def close_tx(
    identity: Identity, net: str, cid: bytes, signed: SignedState, nonce: int, fee: int = 1
) -> Tx:
    """Cooperative close with a double-signed state without HTLCs (sent by A or B)."""
    return call(identity, net, NAME, "close", {"cid": cid, "signed": signed.to_wire()}, nonce, fee)


def force_close_tx(
    identity: Identity, net: str, cid: bytes, signed: SignedState, nonce: int, fee: int = 1
) -> Tx:
    """Unilateral close posting `signed` (sent by A or B); settle after `dispute_blocks`."""
    args = {"cid": cid, "signed": signed.to_wire()}
    return call(identity, net, NAME, "force_close", args, nonce, fee)


def challenge_tx(
    identity: Identity, net: str, cid: bytes, signed: SignedState, nonce: int, fee: int = 1
) -> Tx:
    """Anyone (a party or its watchtower) may send it; the penalty goes to the victim."""
    args = {"cid": cid, "signed": signed.to_wire()}
    return call(identity, net, NAME, "challenge", args, nonce, fee)


def settle_tx(identity: Identity, net: str, cid: bytes, nonce: int, fee: int = 1) -> Tx:
    return call(identity, net, NAME, "settle", {"cid": cid}, nonce, fee)


def claim_htlc_tx(
    identity: Identity, net: str, cid: bytes, htlc_id: int, preimage: bytes, nonce: int,
    fee: int = 1,
) -> Tx:
    args = {"cid": cid, "id": htlc_id, "preimage": preimage}
    return call(identity, net, NAME, "claim_htlc", args, nonce, fee)


def refund_htlc_tx(
    identity: Identity, net: str, cid: bytes, htlc_id: int, nonce: int, fee: int = 1
) -> Tx:
    return call(identity, net, NAME, "refund_htlc", {"cid": cid, "id": htlc_id}, nonce, fee)


CHANNEL = register(Channel())
