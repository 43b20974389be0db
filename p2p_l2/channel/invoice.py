"""Invoices: what a payee hands a payer - who to pay, how much, and the payment hash (DESIGN §5).

Design: an invoice is the msgpack list `[payee, amount, payment_hash, expiry_delta, created,
memo, signature]`, base32-encoded (lowercase, no padding) behind the prefix `p2pl2inv1`, so
it survives a shell, a URL or a TOML file.  The payee signs a domain-tagged blake2b digest
of the first six fields.  `Invoice.decode` is the one place a string from outside becomes an
Invoice: every failure (prefix, alphabet, msgpack, shape, types, bounds, signature) is a
RemoteProtocolError("bad_invoice"), and only the exact bytes `encode` would produce are
accepted, so an invoice has one spelling.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from hashlib import blake2b

import msgpack

from ..errors import LocalProtocolError, RemoteProtocolError
from ..wire import Identity, verify
from .commitment import payment_hash as hash_preimage

__all__ = [
    "DEFAULT_FINAL_EXPIRY_DELTA",
    "INVOICE_PREFIX",
    "Invoice",
    "new_invoice",
]

INVOICE_PREFIX = "p2pl2inv1"
DEFAULT_FINAL_EXPIRY_DELTA = 12  # L1 blocks the payee wants left on its HTLC when it arrives
MAX_MEMO_BYTES = 256
MAX_INVOICE_CHARS = 1024  # a full invoice with the longest memo is ~ 660 chars
_DOMAIN = b"p2p_l2/invoice/v1"
_B32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_INT_MAX = 2**63


def _bad(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_invoice", detail)


@dataclass(frozen=True)
class Invoice:
    """A payment request signed by `payee` (an ed25519 public key): pay `amount` against
    `payment_hash`, with at least `expiry_delta` L1 blocks left on the final HTLC; `created`
    is the payee's clock when it made the invoice (seconds), passed in - no clock here."""

    payee: bytes
    amount: int
    payment_hash: bytes
    expiry_delta: int
    created: float
    memo: str = ""

    def _fields(self) -> list:
        return [self.payee, self.amount, self.payment_hash, self.expiry_delta,
                float(self.created), self.memo]

    def signing_digest(self) -> bytes:
        """The 32 bytes the payee signs."""
        body = msgpack.packb([_DOMAIN, *self._fields()], use_bin_type=True)
        return blake2b(body, digest_size=32).digest()

    def encode(self, identity: Identity) -> str:
        """The invoice string, signed with `identity`, which must be the payee."""
        if identity.pubkey != self.payee:
            raise LocalProtocolError("an invoice must be signed by its payee")
        _check(self, LocalProtocolError)
        sig = identity.sign(self.signing_digest())
        return INVOICE_PREFIX + _b32(msgpack.packb([*self._fields(), sig], use_bin_type=True))

    @classmethod
    def decode(cls, s: object) -> Invoice:
        """Parse and verify an invoice string; RemoteProtocolError("bad_invoice") otherwise."""
        if type(s) is not str:
            raise _bad("expected a string")
        if len(s) > MAX_INVOICE_CHARS:
            raise _bad(f"longer than {MAX_INVOICE_CHARS} characters")
        if not s.startswith(INVOICE_PREFIX):
            raise _bad(f"does not start with {INVOICE_PREFIX!r}")
        body = s[len(INVOICE_PREFIX):]
        if not _B32_CHARS.issuperset(body):
            raise _bad("not lowercase base32")
        try:
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
            w = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=64,
                                max_str_len=MAX_MEMO_BYTES, max_array_len=8, max_map_len=0)
        except (binascii.Error, ValueError, msgpack.UnpackException):
            raise _bad("not base32 msgpack") from None
        if _b32(raw) != body:  # unused low bits of the last character must be zero
            raise _bad("not canonically encoded")
        if type(w) is not list or len(w) != 7:
            raise _bad("expected [payee, amount, payment_hash, expiry_delta, created, memo, sig]")
        payee, amount, ph, expiry_delta, created, memo, sig = w
        if type(sig) is not bytes or len(sig) != 64:
            raise _bad("signature: expected 64 bytes")
        if type(created) is not float:
            raise _bad("created: expected a float")
        inv = cls(payee, amount, ph, expiry_delta, created, memo)
        _check(inv, _bad)
        if msgpack.packb([*inv._fields(), sig], use_bin_type=True) != raw:
            raise _bad("not canonically encoded")
        if not verify(payee, inv.signing_digest(), sig):
            raise _bad("bad signature")
        return inv


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _check(inv: Invoice, err) -> None:
    """Field types and bounds; `err(detail)` builds the exception to raise."""
    if type(inv.payee) is not bytes or len(inv.payee) != 32:
        raise err("payee: expected a 32-byte public key")
    if type(inv.amount) is not int or not 1 <= inv.amount < _INT_MAX:
        raise err("amount: expected a positive integer")
    if type(inv.payment_hash) is not bytes or len(inv.payment_hash) != 32:
        raise err("payment_hash: expected 32 bytes")
    if type(inv.expiry_delta) is not int or not 1 <= inv.expiry_delta < 2**32:
        raise err("expiry_delta: expected a positive integer (L1 blocks)")
    if type(inv.created) not in (int, float) or not math.isfinite(inv.created) or inv.created < 0:
        raise err("created: expected a finite time >= 0")
    try:
        memo_ok = type(inv.memo) is str and len(inv.memo.encode("utf-8")) <= MAX_MEMO_BYTES
    except UnicodeEncodeError:
        memo_ok = False
    if not memo_ok:
        raise err(f"memo: expected a string of at most {MAX_MEMO_BYTES} UTF-8 bytes")


def new_invoice(identity: Identity, amount: int, rng_bytes: bytes, *, created: float,
                expiry_delta: int = DEFAULT_FINAL_EXPIRY_DELTA, memo: str = "",
                ) -> tuple[Invoice, bytes]:
    """An invoice payable to `identity` and its preimage; `rng_bytes` (32 random bytes from
    the caller, so runs stay reproducible) is the preimage itself."""
    if type(rng_bytes) is not bytes or len(rng_bytes) != 32:
        raise LocalProtocolError("preimage: expected 32 random bytes")
    inv = Invoice(identity.pubkey, amount, hash_preimage(rng_bytes), expiry_delta,
                  float(created), memo)
    _check(inv, LocalProtocolError)
    return inv, rng_bytes
