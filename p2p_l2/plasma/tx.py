"""Plasma transactions and blocks: the data the operator, the users and the L1 contract share.

Design (Plasma MVP, DESIGN §6): an output is addressed by its position `block * BLOCK_SPAN +
tx_index * TX_SPAN + output_index`.  Child blocks are numbered in steps of CHILD_BLOCK_INTERVAL;
the L1 contract numbers deposit blocks in between (one deposit tx, no inputs).  A tx has up to 2
inputs and 2 outputs and one signature per input over `SIG_DOMAIN + hash`; the hash covers the
chain (the operator's key), inputs and outputs, so a signature cannot be replayed on another
plasma chain.  A block's Merkle leaves are `PlasmaTx.leaf`, the hash of the full signed
encoding: the root commits the signatures too, so an exit can name the owner of each input of
the tx and the contract checks that owner's signature without recovering a signer from it
(ed25519 cannot).  A spender signs a *confirmation* of its tx in a block (`confirm_digest`) only
after it has checked that block: only a confirmed spend can challenge an exit, so a tx caught in
a withheld or invalid block never costs its sender the input (MVP confirmation signatures);
and exiting an output of a tx takes the confirmations of its inputs (see the plasma contract).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import msgpack

from ..chain.merkle import merkle_proof, merkle_root
from ..errors import RemoteProtocolError
from ..wire.identity import Identity, verify

__all__ = [
    "BLOCK_SPAN",
    "CHILD_BLOCK_INTERVAL",
    "MAX_BLOCK_TXS",
    "MAX_INPUTS",
    "MAX_OUTPUTS",
    "PlasmaBlock",
    "PlasmaTx",
    "confirm_digest",
    "deposit_block",
    "deposit_tx",
    "pos_block",
    "position",
    "split_pos",
]

CHILD_BLOCK_INTERVAL = 1000  # child block numbers are multiples; deposits take the gaps
TX_SPAN = 10_000  # output positions: block * BLOCK_SPAN + tx_index * TX_SPAN + oindex
BLOCK_SPAN = 1_000_000_000
MAX_INPUTS = MAX_OUTPUTS = 2
MAX_BLOCK_TXS = BLOCK_SPAN // TX_SPAN  # 100,000
MAX_AMOUNT = 2**63
SIG_DOMAIN = b"p2p_l2/plasma-tx/v1"
CONFIRM_DOMAIN = b"p2p_l2/plasma-confirm/v1"

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def position(block: int, tx_index: int, oindex: int) -> int:
    return block * BLOCK_SPAN + tx_index * TX_SPAN + oindex


def split_pos(pos: int) -> tuple[int, int, int]:
    """(block, tx index, output index) of an output position."""
    block, rest = divmod(pos, BLOCK_SPAN)
    tx_index, oindex = divmod(rest, TX_SPAN)
    return block, tx_index, oindex


def pos_block(pos: int) -> int:
    return pos // BLOCK_SPAN


def confirm_digest(tx_hash: bytes, root: bytes) -> bytes:
    """What a spender signs once it has seen its tx (hash) valid in the block with `root`."""
    return CONFIRM_DOMAIN + tx_hash + root


def _bad(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_plasma_tx", detail)


@dataclass(frozen=True)
class PlasmaTx:
    """A child-chain tx.  `outputs` are (owner pubkey, amount); `sigs[i]` signs for input i.
    A deposit tx has no inputs and one output (no signature).  `hash` (chain, inputs,
    outputs) is what the input owners sign and confirm; `leaf` (the hash of `encode()`,
    signatures included) is what a block's Merkle tree holds."""

    chain: bytes
    inputs: tuple[int, ...]
    outputs: tuple[tuple[bytes, int], ...]
    sigs: tuple[bytes, ...] = ()
    hash: bytes = field(init=False, repr=False, compare=False)  # what is signed, confirmed
    leaf: bytes = field(init=False, repr=False, compare=False)  # the Merkle leaf (with sigs)

    def __post_init__(self) -> None:
        body = _packb([b"plasma-tx", self.chain, list(self.inputs),
                       [list(o) for o in self.outputs]])
        object.__setattr__(self, "hash", blake2b(body, digest_size=32).digest())
        object.__setattr__(self, "leaf", blake2b(self.encode(), digest_size=32).digest())

    def fee_given(self, input_amounts: list[int]) -> int:
        return sum(input_amounts) - sum(a for _, a in self.outputs)

    @property
    def is_deposit(self) -> bool:
        return not self.inputs

    def signed(self, identities: list[Identity]) -> PlasmaTx:
        """This tx with one signature per input, `identities[i]` signing for input i."""
        if len(identities) != len(self.inputs):
            raise ValueError(f"{len(self.inputs)} inputs need as many signers")
        sigs = tuple(ident.sign(SIG_DOMAIN + self.hash) for ident in identities)
        return PlasmaTx(self.chain, self.inputs, self.outputs, sigs)

    def sig_ok(self, i: int, owner: bytes) -> bool:
        """True iff `sigs[i]` is `owner`'s signature of this tx."""
        return i < len(self.sigs) and verify(owner, SIG_DOMAIN + self.hash, self.sigs[i])

    def to_wire(self) -> list:
        return [self.chain, list(self.inputs), [list(o) for o in self.outputs], list(self.sigs)]

    def encode(self) -> bytes:
        return _packb(self.to_wire())

    @classmethod
    def from_wire(cls, d: Any) -> PlasmaTx:
        """Validate a decoded tx strictly (shape, types, bounds; not signatures or inputs'
        existence); raises RemoteProtocolError("bad_plasma_tx", ...)."""
        if type(d) is not list or len(d) != 4:
            raise _bad("expected [chain, inputs, outputs, sigs]")
        chain, inputs, outputs, sigs = d
        if type(chain) is not bytes or len(chain) != 32:
            raise _bad("chain: expected 32 bytes")
        if type(inputs) is not list or len(inputs) > MAX_INPUTS:
            raise _bad(f"inputs: expected a list of at most {MAX_INPUTS}")
        for p in inputs:
            if type(p) is not int or not 0 < p < MAX_AMOUNT:
                raise _bad("inputs: positions are positive ints")
        if len(set(inputs)) != len(inputs):
            raise _bad("inputs: the same output twice")
        if type(outputs) is not list or not 0 < len(outputs) <= MAX_OUTPUTS:
            raise _bad(f"outputs: expected 1 to {MAX_OUTPUTS}")
        outs = []
        for o in outputs:
            if (type(o) is not list or len(o) != 2 or type(o[0]) is not bytes
                    or len(o[0]) != 32 or type(o[1]) is not int or not 0 < o[1] < MAX_AMOUNT):
                raise _bad("outputs: expected [32-byte owner, positive amount]")
            outs.append((o[0], o[1]))
        if type(sigs) is not list or len(sigs) != len(inputs):
            raise _bad("sigs: expected one per input")
        for s in sigs:
            if type(s) is not bytes or len(s) != 64:
                raise _bad("sigs: expected 64 bytes each")
        if not inputs and len(outs) != 1:
            raise _bad("a deposit has exactly one output")
        return cls(chain, tuple(inputs), tuple(outs), tuple(sigs))

    @classmethod
    def decode(cls, data: bytes) -> PlasmaTx:
        try:
            d = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise _bad(f"undecodable: {exc}") from None
        return cls.from_wire(d)


def deposit_tx(chain: bytes, owner: bytes, amount: int) -> PlasmaTx:
    """The one-output tx of a deposit block."""
    return PlasmaTx(chain, (), ((owner, amount),))


@dataclass(frozen=True)
class PlasmaBlock:
    """A child block (or a deposit block: number not a multiple of CHILD_BLOCK_INTERVAL)."""

    number: int
    txs: tuple[PlasmaTx, ...]
    root: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", merkle_root([t.leaf for t in self.txs]))

    def proof(self, tx_index: int) -> list[bytes]:
        """The Merkle proof of `txs[tx_index].leaf` under `root`."""
        return merkle_proof([t.leaf for t in self.txs], tx_index)

    def to_wire(self) -> list:
        return [self.number, [t.to_wire() for t in self.txs]]

    @classmethod
    def from_wire(cls, d: Any) -> PlasmaBlock:
        if type(d) is not list or len(d) != 2 or type(d[0]) is not int or type(d[1]) is not list:
            raise RemoteProtocolError("bad_plasma_block", "expected [number, [tx...]]")
        if not 0 < d[0] < MAX_AMOUNT // BLOCK_SPAN:
            raise RemoteProtocolError("bad_plasma_block", "number out of range")
        if len(d[1]) > MAX_BLOCK_TXS:
            raise RemoteProtocolError("bad_plasma_block", f"more than {MAX_BLOCK_TXS} txs")
        return cls(d[0], tuple(PlasmaTx.from_wire(t) for t in d[1]))


def deposit_block(chain: bytes, number: int, owner: bytes, amount: int) -> PlasmaBlock:
    """Deposit block `number`: the one deposit tx the L1 contract committed for it."""
    return PlasmaBlock(number, (deposit_tx(chain, owner, amount),))
