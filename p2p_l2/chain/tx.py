"""Layer-1 transactions: an immutable, signed envelope for a transfer or a contract call.

Design: the txid hashes every field but the signature, which signs a domain tag + txid.
`from_wire` is the one door for peer data and checks every type and bound; verified
(txid, sig) pairs go into `SIG_CACHE`, so a tx checked at admission is not checked again.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import msgpack

from ..errors import P2PL2Error, RemoteProtocolError
from ..wire.identity import Identity
from ..wire.identity import verify as _verify

__all__ = [
    "KINDS",
    "MAX_TX_SIZE",
    "SIG_CACHE",
    "SigCache",
    "Tx",
    "TxRejected",
    "call",
    "transfer",
]

MAX_TX_SIZE = 16 * 1024
MAX_INT = 2**63  # every top-level integer is in [0, MAX_INT)
MAX_NAME = 64  # net, contract and method names, in characters
MAX_ARGS_DEPTH = 8
KINDS = ("transfer", "call")
SIG_DOMAIN = b"p2p_l2/tx/v1"

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


class TxRejected(P2PL2Error):
    """A transaction broke a ledger or mempool rule; `reason` is a short stable code.

    Defined here (the bottom of the chain package) so contracts can raise it without an
    import cycle; `p2p_l2.chain.ledger.TxRejected` is the same class."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SigCache:
    """A bounded set of (txid, sig) pairs whose signature checked out (cf. Bitcoin Core's
    sigcache).  Two generations of maxlen/2: when the young one fills it becomes the old
    one and the previous old one is dropped, so every operation is O(1)."""

    __slots__ = ("maxlen", "_new", "_old")

    def __init__(self, maxlen: int = 200_000):
        self.maxlen = maxlen
        self._new: set = set()
        self._old: set = set()

    def __contains__(self, key: tuple[bytes, bytes]) -> bool:
        return key in self._new or key in self._old

    def add(self, key: tuple[bytes, bytes]) -> None:
        new = self._new
        new.add(key)
        if len(new) >= self.maxlen // 2:
            self._old, self._new = new, set()

    def clear(self) -> None:
        self._new, self._old = set(), set()

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


SIG_CACHE = SigCache(200_000)


class _cached:
    """A lock-free cached property: the first read stores the value in the instance
    __dict__, which later reads find first (functools.cached_property takes a lock on 3.11
    and frozen dataclasses only guard setattr, not __dict__)."""

    def __init__(self, fn: Any):
        self.fn, self.name = fn, fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass(frozen=True)
class Tx:
    """One L1 transaction.  `transfer` moves `amount` to `to`; `call` runs
    `contract.method(args)` with `amount` paid from the sender into the contract."""

    net: str
    kind: str
    sender: bytes
    nonce: int
    fee: int
    to: bytes | None = None
    amount: int = 0
    contract: str | None = None
    method: str | None = None
    args: dict | None = None
    sig: bytes = b""

    @_cached
    def txid(self) -> bytes:
        body = _packb(
            [
                self.net,
                self.kind,
                self.sender,
                self.nonce,
                self.fee,
                self.to,
                self.amount,
                self.contract,
                self.method,
                self.args,
            ]
        )
        return blake2b(body, digest_size=32).digest()

    @_cached
    def size(self) -> int:
        return len(self.encode())

    @property
    def cost(self) -> int:
        """What the sender pays: amount + fee."""
        return self.amount + self.fee

    def __hash__(self) -> int:  # args is a dict, so the generated field hash would fail
        return hash((self.txid, self.sig))

    def __repr__(self) -> str:
        what = f"to={self.to.hex()[:8]}" if self.kind == "transfer" and self.to else ""
        if self.kind == "call":
            what = f"{self.contract}.{self.method}"
        return (
            f"Tx({self.txid.hex()[:12]} {self.kind} {self.sender.hex()[:8]}#{self.nonce} "
            f"{what} amount={self.amount} fee={self.fee})"
        )

    # -- wire ------------------------------------------------------------------------------
    def to_wire(self) -> dict:
        return {
            "net": self.net,
            "k": self.kind,
            "s": self.sender,
            "n": self.nonce,
            "f": self.fee,
            "to": self.to,
            "a": self.amount,
            "c": self.contract,
            "m": self.method,
            "x": self.args,
            "sig": self.sig,
        }

    def encode(self) -> bytes:
        """The msgpack wire encoding (its length is `size`)."""
        return _packb(self.to_wire())

    @classmethod
    def from_wire(cls, d: Any) -> Tx:
        """Validate a decoded wire map strictly; raises RemoteProtocolError("bad_tx", ...)."""
        if type(d) is not dict or d.keys() != _WIRE_KEYS:
            if type(d) is not dict:
                raise _bad(f"expected a map, got {type(d).__name__}")
            missing = sorted(_WIRE_KEYS - d.keys())
            extra = sorted(repr(k) for k in d.keys() - _WIRE_KEYS)
            raise _bad(f"missing {missing} / unknown {', '.join(extra)[:200]}")
        net, kind, sender, to, sig = d["net"], d["k"], d["s"], d["to"], d["sig"]
        nonce, fee, amount = d["n"], d["f"], d["a"]
        contract, method, args = d["c"], d["m"], d["x"]
        if type(net) is not str or not 0 < len(net) <= MAX_NAME:
            raise _bad("net: expected a short non-empty str")
        if type(sender) is not bytes or len(sender) != 32:
            raise _bad("s: expected 32 bytes")
        if type(sig) is not bytes or len(sig) != 64:
            raise _bad("sig: expected 64 bytes")
        if type(nonce) is not int or not 0 <= nonce < MAX_INT:
            raise _bad("n: expected an int in [0, 2**63)")
        if type(fee) is not int or not 0 <= fee < MAX_INT:
            raise _bad("f: expected an int in [0, 2**63)")
        if type(amount) is not int or not 0 <= amount < MAX_INT:
            raise _bad("a: expected an int in [0, 2**63)")
        size = 0  # only args can make a tx large: the other fields are bounded above
        if kind == "transfer":
            if type(to) is not bytes or len(to) != 32:
                raise _bad("to: a transfer needs 32 bytes")
            if contract is not None or method is not None or args is not None:
                raise _bad("a transfer carries no c/m/x")
        elif kind == "call":
            if to is not None:
                raise _bad("to: a call carries no 'to' (use args)")
            if type(contract) is not str or not 0 < len(contract) <= MAX_NAME:
                raise _bad("c: a call needs a short non-empty str")
            if type(method) is not str or not 0 < len(method) <= MAX_NAME:
                raise _bad("m: a call needs a short non-empty str")
            if args is not None:
                if type(args) is not dict:
                    raise _bad("x: expected a map or nil")
                _check_value(args, 0)
                size = len(_packb(d))
                if size > MAX_TX_SIZE:
                    raise _bad(f"{size} bytes > {MAX_TX_SIZE}")
        else:
            raise _bad(f"k: unknown kind {str(kind)[:32]!r}")
        # Every field is checked: skip the frozen __init__ (11 guarded setattrs).
        tx = object.__new__(cls)
        tx.__dict__.update(
            net=net,
            kind=kind,
            sender=sender,
            nonce=nonce,
            fee=fee,
            to=to,
            amount=amount,
            contract=contract,
            method=method,
            args=args,
            sig=sig,
        )
        if size:
            tx.__dict__["size"] = size
        return tx

    # -- signatures --------------------------------------------------------------------------
    def signed(self, identity: Identity) -> Tx:
        """This tx signed by `identity`, which must be the sender."""
        if identity.pubkey != self.sender:
            raise ValueError(f"{identity.name or 'identity'} is not the sender of {self!r}")
        sig = identity.sign(SIG_DOMAIN + self.txid)
        tx = dataclasses.replace(self, sig=sig)
        tx.__dict__["txid"] = self.txid  # the sig is not part of it
        return tx

    def verify(self) -> bool:
        """True iff `sig` is the sender's signature; verified pairs are cached in SIG_CACHE."""
        txid = self.txid
        key = (txid, self.sig)
        if key in SIG_CACHE:
            return True
        if _verify(self.sender, SIG_DOMAIN + txid, self.sig):
            SIG_CACHE.add(key)
            return True
        return False


_WIRE_KEYS = frozenset(("net", "k", "s", "n", "f", "to", "a", "c", "m", "x", "sig"))
_SCALARS = (type(None), bool, int, str, bytes)


def _bad(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_tx", detail)


def _check_value(v: Any, depth: int) -> None:
    """Contract args: nil, bool, int, str, bytes, lists and str-keyed maps, nested <= 8."""
    t = type(v)
    if t in _SCALARS:
        return
    if depth >= MAX_ARGS_DEPTH:
        raise _bad("x: nested too deeply")
    if t is dict:
        for k, x in v.items():
            if type(k) is not str:
                raise _bad("x: map keys must be str")
            _check_value(x, depth + 1)
    elif t is list:
        for x in v:
            _check_value(x, depth + 1)
    else:
        raise _bad(f"x: unsupported value type {t.__name__}")


def transfer(identity: Identity, net: str, to: bytes, amount: int, nonce: int, fee: int = 1) -> Tx:
    """A signed transfer of `amount` from `identity` to `to`."""
    return Tx(net, "transfer", identity.pubkey, nonce, fee, to=to, amount=amount).signed(identity)


def call(
    identity: Identity,
    net: str,
    contract: str,
    method: str,
    args: dict | None,
    nonce: int,
    fee: int = 1,
    amount: int = 0,
) -> Tx:
    """A signed call of `contract.method(args)`, paying `amount` into the contract."""
    tx = Tx(net, "call", identity.pubkey, nonce, fee, None, amount, contract, method, args)
    return tx.signed(identity)
