"""The child-chain ledger rule, shared by the operator and every watcher (DESIGN §6).

Design: a `UtxoSet` maps output positions to (owner, amount).  A tx is valid iff it is of this
chain, has inputs (only deposit blocks hold input-less txs, and those come from L1 through
`add_deposit`), every input is unspent, known and not exiting, every input carries its owner's
signature, and its outputs do not exceed its inputs (the difference is the fee).  `check`
judges a tx and changes nothing; `apply` carries it out.  `apply_block` validates and applies a
block's txs in order, so a tx may spend an output of an earlier tx of the same block: invalid
txs are reported and skipped (the operator's restore relies on that), and with `atomic=True`
a block with any problem changes nothing at all (the watcher's rule: such a block is invalid).
Spent positions are remembered with the position of the spending tx, so a second spend is
`spent_input` (not `unknown_input`) and a watcher can find the spend that challenges an exit.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import P2PL2Error
from .tx import (
    CHILD_BLOCK_INTERVAL,
    MAX_AMOUNT,
    MAX_INPUTS,
    MAX_OUTPUTS,
    PlasmaBlock,
    PlasmaTx,
    position,
    split_pos,
)

__all__ = ["REASONS", "PlasmaRejected", "UtxoSet", "block_output"]

# The stable reason codes of PlasmaRejected raised by `UtxoSet.check`.  Other modules add
# their own (the operator: mempool_full, unknown_tx; the watcher: halted, insufficient_funds...).
REASONS = frozenset({
    "malformed",              # a shape PlasmaTx.from_wire would refuse (built in-process)
    "wrong_chain",            # the tx names another plasma chain
    "deposit_not_allowed",    # no inputs outside a deposit block
    "unknown_input",          # an input that never existed (as far as this set knows)
    "spent_input",            # an input spent before (also by an earlier tx of the same block)
    "exiting_input",          # an input with an exit on L1: treated as spent
    "bad_signature",          # input i not signed by its owner
    "outputs_exceed_inputs",  # more value out than in
})


class PlasmaRejected(P2PL2Error):
    """A child-chain tx (or a request about one) broke a rule; `reason` is a short stable code."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _shape_problem(tx: PlasmaTx) -> str | None:
    """What PlasmaTx.from_wire would refuse in a tx built in-process, or None."""
    if not 0 < len(tx.inputs) <= MAX_INPUTS or len(set(tx.inputs)) != len(tx.inputs):
        return f"expected 1 to {MAX_INPUTS} distinct inputs"
    if not 0 < len(tx.outputs) <= MAX_OUTPUTS:
        return f"expected 1 to {MAX_OUTPUTS} outputs"
    for owner, amount in tx.outputs:
        if type(owner) is not bytes or len(owner) != 32 or type(amount) is not int \
                or not 0 < amount < MAX_AMOUNT:
            return "outputs: expected (32-byte owner, positive amount)"
    if len(tx.sigs) != len(tx.inputs):
        return "expected one signature per input"
    return None


def block_output(blocks: Mapping[int, PlasmaBlock], pos: int) -> tuple[bytes, int] | None:
    """(owner, amount) of output `pos` as its block (in `blocks`) created it, spent or not."""
    number, tx_index, oindex = split_pos(pos)
    block = blocks.get(number)
    if block is None or tx_index >= len(block.txs):
        return None
    outputs = block.txs[tx_index].outputs
    return outputs[oindex] if oindex < len(outputs) else None


class UtxoSet:
    """Unspent outputs of one plasma chain (`chain` = the operator's key), by position."""

    __slots__ = ("chain", "utxos", "spent", "exiting")

    def __init__(self, chain: bytes):
        if type(chain) is not bytes or len(chain) != 32:
            raise ValueError("chain must be the operator's 32-byte key")
        self.chain = chain
        self.utxos: dict[int, tuple[bytes, int]] = {}  # pos -> (owner, amount)
        self.spent: dict[int, int] = {}                # pos -> position of the spending tx
        self.exiting: set[int] = set()                 # positions with an exit on L1

    def __len__(self) -> int:
        return len(self.utxos)

    def __contains__(self, pos: int) -> bool:
        return pos in self.utxos

    def get(self, pos: int) -> tuple[bytes, int] | None:
        return self.utxos.get(pos)

    def owned_by(self, owner: bytes) -> dict[int, int]:
        """pos -> amount of `owner`'s unspent outputs (exiting ones included)."""
        return {p: a for p, (o, a) in self.utxos.items() if o == owner}

    # -- the rule ----------------------------------------------------------------------
    def check(self, tx: PlasmaTx, *, sigs: bool = True) -> int:
        """The fee of `tx` if it is valid now (signatures checked unless `sigs` is False);
        raises PlasmaRejected otherwise.  Changes nothing."""
        if tx.chain != self.chain:
            raise PlasmaRejected("wrong_chain", "the tx is for another plasma chain")
        if not tx.inputs:
            raise PlasmaRejected("deposit_not_allowed",
                                 "a tx without inputs belongs in a deposit block only")
        problem = _shape_problem(tx)
        if problem:
            raise PlasmaRejected("malformed", problem)
        total = 0
        for i, pos in enumerate(tx.inputs):
            if pos in self.exiting:
                raise PlasmaRejected("exiting_input", f"input {pos} is exiting")
            utxo = self.utxos.get(pos)
            if utxo is None:
                if pos in self.spent:
                    raise PlasmaRejected("spent_input", f"input {pos} is already spent")
                raise PlasmaRejected("unknown_input", f"input {pos} does not exist")
            if sigs and not tx.sig_ok(i, utxo[0]):
                raise PlasmaRejected("bad_signature", f"input {i} is not signed by its owner")
            total += utxo[1]
        fee = tx.fee_given([total])
        if fee < 0:
            raise PlasmaRejected("outputs_exceed_inputs",
                                 f"outputs {total - fee} exceed inputs {total}")
        return fee

    def apply(self, tx: PlasmaTx, block: int, tx_index: int) -> None:
        """Carry out `tx` (already checked) as tx `tx_index` of `block`."""
        spend_pos = position(block, tx_index, 0)
        for pos in tx.inputs:
            self.utxos.pop(pos, None)
            self.spent[pos] = spend_pos
        for oi, (owner, amount) in enumerate(tx.outputs):
            self.utxos[position(block, tx_index, oi)] = (owner, amount)

    def apply_block(self, block: PlasmaBlock, *, sigs: bool = True,
                    atomic: bool = False) -> list[tuple[int, PlasmaRejected]]:
        """Validate and apply a child block's txs in order; returns [(tx_index, error)] for
        the invalid ones, which are skipped.  With `atomic`, a block with any problem leaves
        the set exactly as it was."""
        problems: list[tuple[int, PlasmaRejected]] = []
        undo: list[tuple[int, tuple[bytes, int] | None, int | None]] = []
        for i, tx in enumerate(block.txs):  # (a deposit block's tx fails: add_deposit)
            try:
                self.check(tx, sigs=sigs)
            except PlasmaRejected as exc:
                problems.append((i, exc))
                continue
            if atomic:
                for pos in tx.inputs:
                    undo.append((pos, self.utxos.get(pos), self.spent.get(pos)))
                for oi in range(len(tx.outputs)):
                    pos = position(block.number, i, oi)
                    undo.append((pos, self.utxos.get(pos), self.spent.get(pos)))
            self.apply(tx, block.number, i)
        if atomic and problems:
            for pos, utxo, spent in reversed(undo):
                if utxo is None:
                    self.utxos.pop(pos, None)
                else:
                    self.utxos[pos] = utxo
                if spent is None:
                    self.spent.pop(pos, None)
                else:
                    self.spent[pos] = spent
        return problems

    def add_deposit(self, number: int, owner: bytes, amount: int) -> int:
        """Add the output of deposit block `number`; returns its position."""
        if type(number) is not int or number <= 0 or number % CHILD_BLOCK_INTERVAL == 0:
            raise ValueError(f"deposit block number {number!r}: not a deposit block number")
        if type(owner) is not bytes or len(owner) != 32:
            raise ValueError("deposit owner must be a 32-byte key")
        if type(amount) is not int or not 0 < amount < MAX_AMOUNT:
            raise ValueError(f"deposit amount {amount!r} out of range")
        pos = position(number, 0, 0)
        if pos not in self.spent:
            self.utxos[pos] = (owner, amount)
        return pos
