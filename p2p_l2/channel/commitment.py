"""The channel state both parties sign, and the signatures the L1 contract checks (DESIGN §5).

A state is `(cid, seq, bal_a, bal_b, htlcs)`; party A is the channel opener, B its peer.
Its digest commits to the network id too, so a state of one network means nothing on
another.  The same bytes are signed off chain (by the state machine) and checked on chain
(by the channel contract), so this module is the one place that defines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b

import msgpack

from ..errors import RemoteProtocolError
from ..wire import Identity, verify

A, B = 0, 1  # party indexes: A opened the channel


def _digest(*parts) -> bytes:
    return blake2b(msgpack.packb(list(parts), use_bin_type=True), digest_size=32).digest()


def _bad(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_state", detail)


def _int(v, name: str, lo: int = 0) -> int:
    if type(v) is not int or not lo <= v < 2**63:
        raise _bad(f"{name}: expected an integer >= {lo}")
    return v


def _b32(v, name: str) -> bytes:
    if type(v) is not bytes or len(v) != 32:
        raise _bad(f"{name}: expected 32 bytes")
    return v


@dataclass(frozen=True)
class Htlc:
    """A pending conditional payment: `amount` from `offerer` (A or B) to the other party,
    paid with the preimage of `payment_hash` before L1 height `expiry`, else refunded."""

    id: int
    offerer: int
    amount: int
    payment_hash: bytes
    expiry: int

    def to_wire(self) -> list:
        return [self.id, self.offerer, self.amount, self.payment_hash, self.expiry]

    @classmethod
    def from_wire(cls, w) -> "Htlc":
        if type(w) is not list or len(w) != 5:
            raise _bad("htlc: expected [id, offerer, amount, payment_hash, expiry]")
        if w[1] not in (A, B) or type(w[1]) is not int:
            raise _bad("htlc offerer: expected 0 or 1")
        return cls(_int(w[0], "htlc id"), w[1], _int(w[2], "htlc amount", 1),
                   _b32(w[3], "payment_hash"), _int(w[4], "htlc expiry"))


@dataclass(frozen=True)
class ChannelState:
    cid: bytes
    seq: int
    bal_a: int
    bal_b: int
    htlcs: tuple[Htlc, ...] = ()

    def total(self) -> int:
        """Everything the channel holds: balances plus pending HTLCs (= the funding)."""
        return self.bal_a + self.bal_b + sum(h.amount for h in self.htlcs)

    def balance(self, party: int) -> int:
        return self.bal_a if party == A else self.bal_b

    def digest(self, net: str) -> bytes:
        return _digest(b"p2p_l2/channel-state/v1", net, self.cid, self.seq, self.bal_a,
                       self.bal_b, [h.to_wire() for h in self.htlcs])

    def to_wire(self) -> dict:
        return {"cid": self.cid, "seq": self.seq, "a": self.bal_a, "b": self.bal_b,
                "h": [h.to_wire() for h in self.htlcs]}

    @classmethod
    def from_wire(cls, d) -> "ChannelState":
        if type(d) is not dict or set(d) != {"cid", "seq", "a", "b", "h"}:
            raise _bad("expected a map with keys cid, seq, a, b, h")
        if type(d["h"]) is not list or len(d["h"]) > 1000:
            raise _bad("h: expected a list of at most 1000 htlcs")
        htlcs = tuple(Htlc.from_wire(w) for w in d["h"])
        if len({h.id for h in htlcs}) != len(htlcs):
            raise _bad("h: duplicate htlc ids")
        return cls(_b32(d["cid"], "cid"), _int(d["seq"], "seq"), _int(d["a"], "a"),
                   _int(d["b"], "b"), htlcs)


@dataclass(frozen=True)
class SignedState:
    """A state with both parties' signatures over `state.digest(net)`: a committed state."""

    state: ChannelState
    sig_a: bytes
    sig_b: bytes

    def verify(self, net: str, pk_a: bytes, pk_b: bytes) -> bool:
        d = self.state.digest(net)
        return verify(pk_a, d, self.sig_a) and verify(pk_b, d, self.sig_b)

    def to_wire(self) -> dict:
        return {"s": self.state.to_wire(), "sa": self.sig_a, "sb": self.sig_b}

    @classmethod
    def from_wire(cls, d) -> "SignedState":
        if type(d) is not dict or set(d) != {"s", "sa", "sb"}:
            raise _bad("expected a map with keys s, sa, sb")
        for k in ("sa", "sb"):
            if type(d[k]) is not bytes or len(d[k]) != 64:
                raise _bad(f"{k}: expected a 64-byte signature")
        return cls(ChannelState.from_wire(d["s"]), d["sa"], d["sb"])


def sign_state(identity: Identity, state: ChannelState, net: str) -> bytes:
    return identity.sign(state.digest(net))


def open_digest(net: str, cid: bytes, a: bytes, b: bytes, fund_a: int, fund_b: int,
                dispute_blocks: int) -> bytes:
    """What B signs to agree to an open that A posts (B's funds are locked too)."""
    return _digest(b"p2p_l2/channel-open/v1", net, cid, a, b, fund_a, fund_b, dispute_blocks)


def payment_hash(preimage: bytes) -> bytes:
    return blake2b(preimage, digest_size=32).digest()
