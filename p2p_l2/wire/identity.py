"""Node identity: an ed25519 key derived from (cluster seed, node name).

Design: the 32-byte key seed is blake2b(b"p2p_l2/node-key" || seed as int64 big-endian ||
name utf-8), so a run is reproducible and configs can name accounts by node name.
Signing and verification call libsodium through `nacl.bindings` directly (no wrapper
objects per call); `verify` returns a bool and never raises, whatever it is given.
"""

from __future__ import annotations

from hashlib import blake2b

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair

__all__ = ["Identity", "verify"]

_KEY_DOMAIN = b"p2p_l2/node-key"
SIGNATURE_SIZE = 64
PUBKEY_SIZE = 32


class Identity:
    """An ed25519 key pair with the node's name; `sign` gives 64-byte detached signatures."""

    __slots__ = ("name", "pubkey", "_sk")

    def __init__(self, key_seed: bytes, name: str = ""):
        if type(key_seed) is not bytes or len(key_seed) != 32:
            raise ValueError("Identity key seed must be 32 bytes")
        self.name = name
        self.pubkey, self._sk = crypto_sign_seed_keypair(key_seed)

    @classmethod
    def derive(cls, seed: int, name: str) -> Identity:
        """The node key for `name` in a cluster configured with `seed` (an int64)."""
        try:
            seed_bytes = seed.to_bytes(8, "big", signed=True)
        except OverflowError:
            raise ValueError(f"seed {seed} does not fit in a signed 64-bit integer") from None
        key_seed = blake2b(_KEY_DOMAIN + seed_bytes + name.encode("utf-8"), digest_size=32).digest()
        return cls(key_seed, name)

    @property
    def pubkey_hex(self) -> str:
        return self.pubkey.hex()

    def sign(self, msg: bytes) -> bytes:
        """The 64-byte detached ed25519 signature of `msg`."""
        return crypto_sign(msg, self._sk)[:SIGNATURE_SIZE]

    def __repr__(self) -> str:
        return f"Identity(name={self.name!r}, pubkey={self.pubkey.hex()[:16]}…)"


def verify(pubkey: bytes, msg: bytes, sig: bytes) -> bool:
    """True iff `sig` is `pubkey`'s ed25519 signature of `msg`; False on any bad input."""
    try:
        if len(sig) != SIGNATURE_SIZE or len(pubkey) != PUBKEY_SIZE:
            return False
        # join() accepts any bytes-like object and rejects everything else (bytes(5) would not)
        crypto_sign_open(b"".join((sig, msg)), b"".join((pubkey,)))
        return True
    except Exception:
        return False
