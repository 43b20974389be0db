"""The plasma operator's core: mempool, block making, deposits, exits and confirmations.

Sans-IO (DESIGN §2): the service feeds it submitted txs, L1 deposits and exits (at
`confirmations` depth) and asks for a block every `block_interval`; it commits the block's root
to L1 and serves `blocks[number]` with `confirmations_for(number)`.  Nothing here reads a clock.
"""

# Design: the mempool keeps txs in arrival order and the set of inputs they spend, so a second
# pending spend of an input is refused `spent_input` (the double-spend defence); signatures are
# checked once, at submit.  An output of a child block is spent only once every input owner of
# the tx that made it has confirmed that tx (`unconfirmed_input` until then, MVP-style: an
# unconfirmed tx "did not happen" yet): else a payer could leave its tx unconfirmed, spend its
# change onwards, exit the first tx's input (nothing can challenge it) *and* the descendant's
# change, whose exit shows only the descendant's confirmation.  An output with an exit on L1 is
# treated as spent (`mark_exiting`), which drops the pending txs that spend it.  Empty blocks
# are never made.  The whole state is rebuilt by `restore` from what the service persists: the
# child blocks made, the deposits, `exiting` (pos -> the last child block made when the exit was
# seen) and the confirmations; replaying the blocks with the ledger rule (`UtxoSet.apply_block`,
# invalid txs skipped) reproduces exactly the UTXO set the operator had, byzantine blocks
# included.  Pending txs are not persisted: a user whose tx is lost resubmits it.

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice

from ..errors import LocalProtocolError
from ..wire.identity import Identity, verify
from .ledger import PlasmaRejected, UtxoSet, block_output
from .tx import (
    CHILD_BLOCK_INTERVAL,
    MAX_BLOCK_TXS,
    PlasmaBlock,
    PlasmaTx,
    confirm_digest,
    deposit_block,
    position,
    split_pos,
)

__all__ = ["INVALID_TX_KINDS", "OperatorCore"]

INVALID_TX_KINDS = ("create-coins", "steal")
# Reasons of PlasmaRejected beyond the ledger's: mempool_full, unconfirmed_input (submit),
# unknown_tx, bad_confirmation (add_confirmation).


class OperatorCore:
    """One operator's view of its chain.  `blocks` holds every block by number (child blocks it
    made, deposit blocks rebuilt from their L1 record) so users can fetch any of them."""

    def __init__(self, chain: bytes, *, max_block_txs: int = 10_000, max_pending: int = 100_000):
        if not 0 < max_block_txs <= MAX_BLOCK_TXS:
            raise ValueError(f"max_block_txs must be in 1..{MAX_BLOCK_TXS}")
        if max_pending <= 0:
            raise ValueError("max_pending must be positive")
        self.chain = chain
        self.max_block_txs, self.max_pending = max_block_txs, max_pending
        self.utxos = UtxoSet(chain)
        self.blocks: dict[int, PlasmaBlock] = {}
        self.deposits: dict[int, tuple[bytes, int]] = {}    # number -> (owner, amount)
        self.exiting: dict[int, int] = {}                    # pos -> last_child when marked
        self.last_child = 0                                  # the last child block made
        self._pending: dict[bytes, tuple[PlasmaTx, int]] = {}  # hash -> (tx, fee), FIFO
        self._pending_spent: dict[int, bytes] = {}             # input pos -> pending tx hash
        self._tx_loc: dict[bytes, tuple[int, int]] = {}        # hash -> (number, tx index)
        self._confirms: dict[int, dict[bytes, list[bytes]]] = {}

    def __repr__(self) -> str:
        return (f"<OperatorCore {self.chain.hex()[:8]} last_child={self.last_child} "
                f"utxos={len(self.utxos)} pending={len(self._pending)}>")

    # -- queries ------------------------------------------------------------------------
    @property
    def pending(self) -> list[PlasmaTx]:
        """The mempool, in arrival order."""
        return [tx for tx, _ in self._pending.values()]

    @property
    def next_number(self) -> int:
        """The number the next child block will get."""
        return self.last_child + CHILD_BLOCK_INTERVAL

    def locate(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(block number, tx index) of a tx in a block made, or None."""
        return self._tx_loc.get(tx_hash)

    def output(self, pos: int) -> tuple[bytes, int] | None:
        """(owner, amount) of the output at `pos` as its block created it (spent or not)."""
        return block_output(self.blocks, pos)

    def confirmed_output(self, pos: int) -> bool:
        """True iff output `pos` is of a deposit block or of a tx every input owner of which
        confirmed it (False for an output of no block)."""
        number, tx_index, _ = split_pos(pos)
        block = self.blocks.get(number)
        if block is None or tx_index >= len(block.txs):
            return False
        if number % CHILD_BLOCK_INTERVAL:
            return True
        sigs = self._confirms.get(number, {}).get(block.txs[tx_index].hash)
        return sigs is not None and all(sigs)

    def confirmations_for(self, number: int) -> dict[bytes, list[bytes]]:
        """tx hash -> one confirmation signature per input (b"" where missing) for the txs of
        block `number` that have any; served with the block data."""
        return {h: list(sigs) for h, sigs in self._confirms.get(number, {}).items()}

    def confirmations_of(self, tx_hash: bytes) -> list[bytes]:
        """The confirmation signatures (b"" where missing) of one tx in a block made."""
        loc = self._tx_loc.get(tx_hash)
        return list(self._confirms.get(loc[0], {}).get(tx_hash, ())) if loc else []

    # -- inputs -------------------------------------------------------------------------
    def submit(self, tx: PlasmaTx) -> int:
        """Accept `tx` into the mempool and return its fee, or raise PlasmaRejected (the
        ledger's reasons, `spent_input` for an input a pending tx spends, `mempool_full`,
        `unconfirmed_input` for an output of a tx not confirmed by all its input owners yet).
        Submitting a pending tx again is a no-op."""
        if not isinstance(tx, PlasmaTx):
            raise PlasmaRejected("malformed", "expected a PlasmaTx")
        known = self._pending.get(tx.hash)
        if known is not None and known[0].sigs == tx.sigs:
            return known[1]
        if len(self._pending) >= self.max_pending:
            raise PlasmaRejected("mempool_full", f"{self.max_pending} txs pending")
        fee = self.utxos.check(tx, sigs=False)  # cheap checks before the signatures
        for pos in tx.inputs:
            if pos in self._pending_spent:
                raise PlasmaRejected("spent_input", f"input {pos} is spent by a pending tx")
            if not self.confirmed_output(pos):
                raise PlasmaRejected("unconfirmed_input", f"input {pos}: the tx that made it "
                                     "is not confirmed by all its inputs' owners yet")
        self.utxos.check(tx, sigs=True)
        self._pending[tx.hash] = (tx, fee)
        for pos in tx.inputs:
            self._pending_spent[pos] = tx.hash
        return fee

    def add_deposit(self, number: int, owner: bytes, amount: int) -> bool:
        """Record deposit block `number` from L1 (at `confirmations` depth); True if new.  The
        same deposit twice is a no-op; a different one under a known number is a bug."""
        known = self.deposits.get(number)
        if known is not None:
            if known != (owner, amount):
                raise LocalProtocolError(f"deposit block {number} is already {known}")
            return False
        pos = self.utxos.add_deposit(number, owner, amount)  # validates
        self.deposits[number] = (owner, amount)
        self.blocks[number] = deposit_block(self.chain, number, owner, amount)
        if pos in self.exiting:
            self.utxos.exiting.add(pos)
        return True

    def mark_exiting(self, pos: int) -> list[PlasmaTx]:
        """An exit of `pos` started on L1: treat the output as spent from now on.  Returns the
        pending txs that spent it, dropped from the mempool.  Idempotent."""
        if type(pos) is not int or pos <= 0:
            raise ValueError(f"bad position {pos!r}")
        if pos not in self.exiting:
            self.exiting[pos] = self.last_child
        self.utxos.exiting.add(pos)
        tx_hash = self._pending_spent.get(pos)
        if tx_hash is None:
            return []
        tx, _ = self._pending.pop(tx_hash)
        for p in tx.inputs:
            self._pending_spent.pop(p, None)
        return [tx]

    def make_block(self, extra: Iterable[PlasmaTx] = ()) -> PlasmaBlock | None:
        """The next child block: up to `max_block_txs` pending txs in arrival order, applied.
        None when there is nothing to put in it.  `extra` txs are appended unchecked (a
        byzantine operator); the ledger rule decides whether they take effect."""
        extra = list(extra)
        if not self._pending and not extra:
            return None
        number = self.next_number
        taken: list[PlasmaTx] = []
        for tx_hash in list(islice(self._pending, self.max_block_txs)):
            tx, _ = self._pending.pop(tx_hash)
            for p in tx.inputs:
                self._pending_spent.pop(p, None)
            try:
                self.utxos.check(tx, sigs=False)  # signed at submit; cannot fail, but cheap
            except PlasmaRejected:
                continue
            self.utxos.apply(tx, number, len(taken))
            taken.append(tx)
        for tx in extra:
            try:
                self.utxos.check(tx, sigs=True)
            except PlasmaRejected:
                pass
            else:
                self.utxos.apply(tx, number, len(taken))
            taken.append(tx)
        if not taken:
            return None
        block = PlasmaBlock(number, tuple(taken))
        self._add_block(block)
        return block

    def add_confirmation(self, tx_hash: bytes, input_index: int, sig: bytes) -> None:
        """Store a spender's confirmation of its tx in the block that holds it; raises
        PlasmaRejected `unknown_tx` or `bad_confirmation` (not the input owner's signature of
        confirm_digest(tx_hash, root))."""
        loc = self._tx_loc.get(tx_hash) if type(tx_hash) is bytes else None
        if loc is None:
            raise PlasmaRejected("unknown_tx", "no block holds that tx")
        number, tx_index = loc
        block = self.blocks[number]
        tx = block.txs[tx_index]
        if type(input_index) is not int or not 0 <= input_index < len(tx.inputs):
            raise PlasmaRejected("bad_confirmation", f"the tx has no input {input_index!r}")
        owner = self.output(tx.inputs[input_index])
        if type(sig) is not bytes or owner is None \
                or not verify(owner[0], confirm_digest(tx_hash, block.root), sig):
            raise PlasmaRejected("bad_confirmation", "not the input owner's confirmation")
        sigs = self._confirms.setdefault(number, {}).setdefault(tx_hash, [b""] * len(tx.inputs))
        sigs[input_index] = sig

    # -- byzantine helpers (fault.misbehave) ----------------------------------------------
    def invalid_tx(self, kind: str, operator: Identity, amount: int = 1_000_000) -> PlasmaTx:
        """A tx that breaks the ledger rule, signed by the operator, for make_block(extra=...):
        "create-coins" spends an output that never existed, "steal" spends the largest
        output of another user."""
        if kind == "create-coins":
            ghost = position(1, 1, 0)  # deposit blocks hold a single tx: index 1 never exists
            tx = PlasmaTx(self.chain, (ghost,), ((operator.pubkey, amount),))
        elif kind == "steal":
            victims = [(a, p) for p, (o, a) in self.utxos.utxos.items()
                       if o != operator.pubkey and p not in self.utxos.exiting]
            if not victims:
                raise LocalProtocolError("steal: no output of another user to steal")
            amount, pos = max(victims)
            tx = PlasmaTx(self.chain, (pos,), ((operator.pubkey, amount),))
        else:
            raise LocalProtocolError(f"unknown invalid tx kind {kind!r}; "
                                     f"expected one of {INVALID_TX_KINDS}")
        return tx.signed([operator])

    # -- persistence ----------------------------------------------------------------------
    @classmethod
    def restore(cls, chain: bytes, blocks: Iterable[PlasmaBlock],
                deposits: Iterable[tuple[int, bytes, int]], exiting: Mapping[int, int],
                confirmations: Mapping[int, Mapping[bytes, list[bytes]]] | None = None,
                **opts) -> OperatorCore:
        """Rebuild a core from persisted data: the child blocks it made, the deposits
        (number, owner, amount), `exiting` as in `core.exiting` and the confirmations as in
        `confirmations_for`.  The mempool starts empty."""
        core = cls(chain, **opts)
        for number, owner, amount in deposits:
            core.add_deposit(number, owner, amount)
        marks = sorted((last, pos) for pos, last in exiting.items())
        for block in sorted(blocks, key=lambda b: b.number):
            if block.number % CHILD_BLOCK_INTERVAL or block.number <= core.last_child:
                raise ValueError(f"block {block.number}: not a child block in order")
            while marks and marks[0][0] < block.number:
                core.mark_exiting(marks.pop(0)[1])
            core.utxos.apply_block(block, sigs=True)
            core._add_block(block)
        for _, pos in marks:
            core.mark_exiting(pos)
        core.exiting = dict(exiting)
        for number, confs in (confirmations or {}).items():
            if number in core.blocks:
                core._confirms[number] = {h: list(s) for h, s in confs.items()}
        return core

    def _add_block(self, block: PlasmaBlock) -> None:
        self.blocks[block.number] = block
        self.last_child = block.number
        for i, tx in enumerate(block.txs):
            self._tx_loc.setdefault(tx.hash, (block.number, i))
