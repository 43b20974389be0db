"""Onions: per-hop payment instructions, each readable only by its hop (DESIGN §5).

Design: a Sphinx-style packet of FIXED size (ONION_SIZE bytes, whatever the path length),
so neither its size nor its content tells a hop where it sits on the path:

    version (1) | ephemeral X25519 key (32) | MAC (32) | routing info (MAX_HOPS x HOP_SLOT)

A hop derives a shared secret from the ephemeral key and its own X25519 key (the birational
image of its ed25519 node key, so there is nothing new to announce), checks the MAC over the
routing info (plus `assoc`, normally the HTLC's payment hash, so an onion cannot be moved
to another HTLC), XORs the routing info, padded with one slot of zeros, with a ChaCha20
keystream, reads its own slot from the front and passes the rest on.  A slot holds the
NEXT hop's ephemeral key and MAC, then the msgpack payload.  Shifting a slot out and zeros in
keeps the size; the sender precomputes the "filler" those zeros turn into so that every
downstream MAC still checks.  Each hop gets its own ephemeral key (carried in the previous
slot), so no value is seen by two hops.  A MAC of all zeros marks the final hop.
"""

from __future__ import annotations

import os
from functools import lru_cache
from hashlib import blake2b
from hmac import compare_digest

import msgpack
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)

from ..errors import LocalProtocolError, RemoteProtocolError
from ..wire import Identity

__all__ = [
    "HOP_SLOT",
    "MAX_HOPS",
    "MAX_PAYLOAD",
    "ONION_SIZE",
    "build",
    "curve_public",
    "curve_secret",
    "peel",
]

VERSION = 0
MAX_HOPS = 10  # routes of up to 10 channels (Lightning's are rarely over 6); 20 cost the
#               payer ~25% of its multi-hop throughput in keystream, XOR and MAC work
HOP_SLOT = 256
ROUTING_SIZE = MAX_HOPS * HOP_SLOT
_KEY, _MAC = 32, 32
_SLOT_HEAD = _KEY + _MAC + 2  # next ephemeral key, next MAC, payload length
MAX_PAYLOAD = HOP_SLOT - _SLOT_HEAD  # 190 bytes of msgpack per hop
ONION_SIZE = 1 + _KEY + _MAC + ROUTING_SIZE
_NO_MAC = bytes(_MAC)
_ZERO_SLOT = bytes(HOP_SLOT)
_NONCE = bytes(12)
_INT_MAX = 2**63


# ---------------------------------------------------------------- keys


def curve_secret(identity: Identity) -> bytes:
    """The X25519 secret key matching `curve_public(identity.pubkey)`."""
    return crypto_sign_ed25519_sk_to_curve25519(identity._sk)


def curve_public(pubkey: bytes) -> bytes:
    """The X25519 public key of an ed25519 node key; LocalProtocolError if it is not one."""
    if type(pubkey) is not bytes or len(pubkey) != 32:
        raise LocalProtocolError("hop pubkey: expected 32 bytes")
    return _curve_public(pubkey)


@lru_cache(maxsize=4096)  # the conversion costs ~70 us and payers meet the same hops again
def _curve_public(pubkey: bytes) -> bytes:
    try:
        return crypto_sign_ed25519_pk_to_curve25519(pubkey)
    except Exception:
        raise LocalProtocolError(f"not an ed25519 public key: {pubkey.hex()}") from None


def _keys(shared: bytes, eph_pub: bytes) -> tuple[bytes, bytes]:
    """(rho, mu): the stream key and the MAC key of one hop."""
    rho = blake2b(shared + eph_pub, digest_size=32, person=b"p2pl2onion-rho").digest()
    mu = blake2b(shared + eph_pub, digest_size=32, person=b"p2pl2onion-mu").digest()
    return rho, mu


def _stream(key: bytes, n: int) -> bytes:
    """n bytes of ChaCha20 keystream (the AEAD of zeros, minus its tag)."""
    return crypto_aead_chacha20poly1305_ietf_encrypt(bytes(n), None, _NONCE, key)[:n]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _mac(mu: bytes, routing: bytes, assoc: bytes) -> bytes:
    return blake2b(routing + assoc, digest_size=_MAC, key=mu).digest()


# ---------------------------------------------------------------- payloads


def _check_payload(p, final: bool, err) -> dict:
    """A forwarding payload {next, amt, exp[, cid]} or a final one {final, amt, exp[, ph,
    secret]}; `err(detail)` builds the exception to raise."""
    if type(p) is not dict:
        raise err("payload: expected a map")
    if final:
        if p.get("final") is not True:
            raise err("payload: the last hop needs final=True")
        allowed, required = {"final", "amt", "exp", "ph", "secret"}, ("amt", "exp")
    else:
        if "final" in p:
            raise err("payload: final=True before the last hop")
        allowed, required = {"next", "amt", "exp", "cid"}, ("next", "amt", "exp")
    extra = set(p) - allowed
    if extra:
        raise err(f"payload: unexpected keys {sorted(map(str, extra))}")
    for k in required:
        if k not in p:
            raise err(f"payload: missing {k!r}")
    if type(p["amt"]) is not int or not 1 <= p["amt"] < _INT_MAX:
        raise err("payload amt: expected a positive integer")
    if type(p["exp"]) is not int or not 0 <= p["exp"] < _INT_MAX:
        raise err("payload exp: expected an integer >= 0")
    for k in ("next", "ph", "secret"):
        if k in p and (type(p[k]) is not bytes or len(p[k]) != 32):
            raise err(f"payload {k}: expected 32 bytes")
    if "cid" in p and (type(p["cid"]) is not bytes or not 1 <= len(p["cid"]) <= 32):
        raise err("payload cid: expected 1 to 32 bytes")
    return p


def _bad(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_onion", detail)


# ---------------------------------------------------------------- build / peel


def build(route_hops: list[tuple[bytes, dict]], assoc: bytes = b"", *,
          session_key: bytes | None = None) -> bytes:
    """An onion for `route_hops` [(ed25519 pubkey, payload)], first hop first; the last
    payload must be final.  `assoc` (e.g. the payment hash) must be given to every `peel`.
    `session_key` (32 bytes) makes the onion reproducible; by default it is random."""
    n = len(route_hops)
    if not 1 <= n <= MAX_HOPS:
        raise LocalProtocolError(f"an onion carries 1 to {MAX_HOPS} hops, not {n}")
    if session_key is None:
        session_key = os.urandom(32)
    elif type(session_key) is not bytes or len(session_key) != 32:
        raise LocalProtocolError("session_key: expected 32 bytes")
    payloads, ephs, streams, mus = [], [], [], []
    for i, (pubkey, payload) in enumerate(route_hops):
        _check_payload(payload, i == n - 1, LocalProtocolError)
        packed = msgpack.packb(payload, use_bin_type=True)
        if len(packed) > MAX_PAYLOAD:
            raise LocalProtocolError(f"hop {i} payload is {len(packed)} bytes, max {MAX_PAYLOAD}")
        payloads.append(packed)
        eph_sk = blake2b(session_key + bytes([i]), digest_size=32,
                         person=b"p2pl2onion-eph").digest()
        eph_pub = crypto_scalarmult_base(eph_sk)
        rho, mu = _keys(crypto_scalarmult(eph_sk, curve_public(pubkey)), eph_pub)
        ephs.append(eph_pub)
        streams.append(_stream(rho, ROUTING_SIZE + HOP_SLOT))
        mus.append(mu)

    # What the zeros shifted in by hops 0..n-2 have become when the last hop reads them.
    filler = b""
    for i in range(n - 1):
        filler = _xor(filler + _ZERO_SLOT, streams[i][ROUTING_SIZE - i * HOP_SLOT:])

    pad_key = blake2b(session_key, digest_size=32, person=b"p2pl2onion-pad").digest()
    routing = _stream(pad_key, ROUTING_SIZE)
    next_eph, next_mac = bytes(_KEY), _NO_MAC
    for i in reversed(range(n)):
        p = payloads[i]
        slot = b"".join((next_eph, next_mac, len(p).to_bytes(2, "big"), p,
                         bytes(MAX_PAYLOAD - len(p))))
        routing = _xor(slot + routing[:ROUTING_SIZE - HOP_SLOT], streams[i][:ROUTING_SIZE])
        if i == n - 1 and filler:
            routing = routing[:ROUTING_SIZE - len(filler)] + filler
        next_mac = _mac(mus[i], routing, assoc)
        next_eph = ephs[i]
    return b"".join((bytes([VERSION]), next_eph, next_mac, routing))


def peel(identity: Identity, onion: bytes, assoc: bytes = b"") -> tuple[dict, bytes | None]:
    """Open this hop's layer: (payload, the onion for the next hop), or (final payload,
    None) at the last hop.  RemoteProtocolError("bad_onion") if the onion is malformed, was
    not made for this hop, was tampered with, or does not match `assoc`."""
    if type(onion) is not bytes or len(onion) != ONION_SIZE:
        raise _bad(f"expected {ONION_SIZE} bytes")
    if onion[0] != VERSION:
        raise _bad(f"unknown version {onion[0]}")
    eph_pub, mac, routing = onion[1:33], onion[33:65], onion[65:]
    try:
        shared = crypto_scalarmult(curve_secret(identity), eph_pub)
    except Exception:  # a low-order point: libsodium refuses the all-zero result
        raise _bad("bad ephemeral key") from None
    rho, mu = _keys(shared, eph_pub)
    if not compare_digest(mac, _mac(mu, routing, assoc)):
        raise _bad("MAC mismatch: not for this hop, tampered with, or wrong payment hash")
    plain = _xor(routing + _ZERO_SLOT, _stream(rho, ROUTING_SIZE + HOP_SLOT))
    next_eph, next_mac = plain[:_KEY], plain[_KEY:_KEY + _MAC]
    plen = int.from_bytes(plain[_KEY + _MAC:_SLOT_HEAD], "big")
    if plen > MAX_PAYLOAD:
        raise _bad("payload length out of range")
    final = next_mac == _NO_MAC
    try:
        payload = msgpack.unpackb(plain[_SLOT_HEAD:_SLOT_HEAD + plen], raw=False,
                                  max_bin_len=64, max_str_len=64, max_array_len=0, max_map_len=8)
    except (ValueError, msgpack.UnpackException):
        raise _bad("payload is not msgpack") from None
    _check_payload(payload, final, _bad)
    if final:
        return payload, None
    return payload, b"".join((bytes([VERSION]), next_eph, next_mac, plain[HOP_SLOT:]))
