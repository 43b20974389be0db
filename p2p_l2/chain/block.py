"""Block headers and blocks: hashing, signing, strict wire decoding (sans-IO).

Design: header hash = blake2b-32 of msgpack([height, prev, time, miner, merkle]); the miner
signs b"p2p_l2/block/v1" + hash; the Merkle root binds the txs.  `from_wire` checks shape,
types, count and size only; whether a block fits the chain is the BlockTree's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from hashlib import blake2b
from typing import Any

import msgpack

from p2p_l2.chain.merkle import merkle_root
from p2p_l2.chain.tx import Tx
from p2p_l2.errors import RemoteProtocolError
from p2p_l2.wire.identity import Identity, verify

__all__ = ["MAX_BLOCK_BYTES", "Block", "Header", "genesis", "make_block"]

MAX_BLOCK_BYTES = 32 * 1024 * 1024
SIG_DOMAIN = b"p2p_l2/block/v1"
HEADER_BYTES = 160  # generous msgpack size of a header + signature, for Block.size
_ZERO32 = bytes(32)
_HEADER_KEYS = frozenset(("n", "p", "t", "m", "r"))
_BLOCK_KEYS = frozenset(("h", "s", "x"))
_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def _bad(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_block", detail)


@dataclass(frozen=True)
class Header:
    height: int
    prev: bytes
    time: float
    miner: bytes
    merkle: bytes

    @cached_property
    def hash(self) -> bytes:
        body = _packb([self.height, self.prev, self.time, self.miner, self.merkle])
        return blake2b(body, digest_size=32).digest()

    def to_wire(self) -> dict[str, Any]:
        return {"n": self.height, "p": self.prev, "t": self.time, "m": self.miner, "r": self.merkle}

    @classmethod
    def from_wire(cls, d: Any) -> Header:
        """Strict decode (exact keys and types); raises RemoteProtocolError("bad_block")."""
        if type(d) is not dict or d.keys() != _HEADER_KEYS:
            raise _bad("header: expected a map with keys n, p, t, m, r")
        height, prev, time, miner, root = d["n"], d["p"], d["t"], d["m"], d["r"]
        if type(height) is not int or not 0 <= height < 2**63:
            raise _bad("header.n: expected a height in [0, 2**63)")
        if type(time) is not float or not math.isfinite(time):
            raise _bad("header.t: expected a finite float")
        for name, v in (("p", prev), ("m", miner), ("r", root)):
            if type(v) is not bytes or len(v) != 32:
                raise _bad(f"header.{name}: expected 32 bytes")
        return cls(height, prev, time, miner, root)


@dataclass(frozen=True)
class Block:
    header: Header
    sig: bytes
    txs: tuple[Tx, ...]

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @cached_property
    def size(self) -> int:
        """Approximate encoded size (exact tx sizes plus a fixed header allowance)."""
        return HEADER_BYTES + sum(tx.size for tx in self.txs)

    def to_wire(self) -> dict[str, Any]:
        return {"h": self.header.to_wire(), "s": self.sig, "x": [tx.to_wire() for tx in self.txs]}

    @classmethod
    def from_wire(cls, d: Any, max_txs: int) -> Block:
        """Strict decode: shape, types, at most `max_txs` txs, no duplicate txids, at most
        MAX_BLOCK_BYTES; raises RemoteProtocolError("bad_block", detail)."""
        if type(d) is not dict or d.keys() != _BLOCK_KEYS:
            raise _bad("expected a map with keys h, s, x")
        header = Header.from_wire(d["h"])
        sig, wires = d["s"], d["x"]
        if type(sig) is not bytes or len(sig) != 64:
            raise _bad("s: expected 64 bytes")
        if type(wires) is not list:
            raise _bad("x: expected a list of txs")
        if len(wires) > max_txs:
            raise _bad(f"x: {len(wires)} txs > max {max_txs}")
        txs = []
        seen = set()
        size = HEADER_BYTES
        for i, w in enumerate(wires):
            try:
                tx = Tx.from_wire(w)
            except RemoteProtocolError as exc:
                raise _bad(f"x[{i}]: {exc}") from None
            txid = tx.txid
            if txid in seen:
                raise _bad(f"x[{i}]: duplicate txid {txid.hex()[:16]}")
            seen.add(txid)
            size += tx.size
            if size > MAX_BLOCK_BYTES:
                raise _bad(f"larger than {MAX_BLOCK_BYTES} bytes")
            txs.append(tx)
        return cls(header, sig, tuple(txs))

    @cached_property
    def _sig_ok(self) -> bool:
        return verify(self.header.miner, SIG_DOMAIN + self.header.hash, self.sig)

    def verify_sig(self) -> bool:
        """True iff `sig` is the header miner's signature (cached)."""
        return self._sig_ok

    @cached_property
    def _merkle_ok(self) -> bool:
        return merkle_root([tx.txid for tx in self.txs]) == self.header.merkle

    def merkle_ok(self) -> bool:
        """True iff the header's Merkle root is the root of these txids (cached)."""
        return self._merkle_ok


def make_block(identity: Identity, prev: Header, txs: Any, time: float) -> Block:
    """A block on top of `prev` with `txs` (in the given order), signed by `identity`."""
    txs = tuple(txs)
    header = Header(
        prev.height + 1, prev.hash, float(time), identity.pubkey,
        merkle_root([tx.txid for tx in txs]),
    )
    return Block(header, identity.sign(SIG_DOMAIN + header.hash), txs)


def genesis(net: str) -> Block:
    """The genesis block of network `net`: the same on every node, different per network
    (the merkle field holds a network tag, as there are no txs to commit to); never validated."""
    tag = blake2b(b"p2p_l2/genesis/v1/" + net.encode("utf-8"), digest_size=32).digest()
    return Block(Header(0, _ZERO32, 0.0, _ZERO32, tag), bytes(64), ())
