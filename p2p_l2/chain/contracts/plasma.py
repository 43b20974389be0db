"""`plasma`: the layer-1 side of a Plasma MVP chain with OMG-style standard exits (DESIGN §6).

Design: one chain record per operator key; the operator commits child-block roots (numbers in
steps of CHILD_BLOCK_INTERVAL), deposits get the numbers in between as one-tx blocks.  An
output exits with its tx, a Merkle proof and a bond, and pays out from
`max(start + exit_blocks, utxo_height + 2 * exit_blocks)` in `(exitable_at, pos)` order, so
an output of a later (maybe invalid) block never jumps ahead of an older one.  A challenge
must carry the spend, its inclusion proof *and* the owner's MVP confirmation signature over
`confirm_digest(spend.hash, root)` — a deviation from §6's bare "signed spend": it is what
keeps a tx caught in a withheld or invalid block from costing its sender the input.
Exits need the inputs' confirmations, MVP-style: the exit of an output of a tx with inputs
names each input's owner with that owner's confirmation of the tx in its block (else a payer
who never confirmed a tx could exit both its input, which nothing can challenge, and its
change).  ed25519 cannot recover a signer, but the Merkle leaf (`PlasmaTx.leaf`) commits the
tx's signatures, so the contract checks that each named owner signed the tx.  A confirmation
shown in an exit is public from then on: it cancels a pending exit of that input by that owner
(a challenge: the new exiter takes the bond), the exit is refused if that owner's exit of the
input was already paid, and that owner may never exit the input later.  Exits are paid only
while `deposits - paid` covers them (else "unfunded", the bond alone comes back), so
finalised exits never exceed deposits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import RemoteProtocolError
from ...plasma.tx import (
    BLOCK_SPAN,
    CHILD_BLOCK_INTERVAL,
    MAX_AMOUNT,
    PlasmaBlock,
    PlasmaTx,
    confirm_digest,
    deposit_tx,
    position,
    split_pos,
)
from ...wire.identity import Identity, verify
from ..merkle import verify_proof
from ..state import State
from ..tx import Tx, call
from . import ArgChecks, Contract, register

__all__ = [
    "MAX_BLOCK",
    "MAX_EXIT_BLOCKS",
    "PLASMA",
    "Plasma",
    "TRANSITIONS",
    "blocks_after",
    "chain_record",
    "challenge_tx",
    "commit_tx",
    "committed_block",
    "deposit_call_tx",
    "exit_record",
    "exits",
    "process_exits_tx",
    "register_tx",
    "start_exit_tx",
]

NAME = "plasma"
MAX_EXIT_BLOCKS = 10_000
MAX_BLOCK = MAX_AMOUNT // BLOCK_SPAN - 1  # the highest block number a PlasmaBlock may carry
MAX_PROOF = 64  # siblings in a Merkle proof

# Exit statuses (a record per position, never removed: a position exits at most once).
#   start_exit:    (none) -> pending
#   challenge:     pending -> challenged            (the bond goes to the challenger)
#   start_exit of an output, showing the confirmation of the spend of an exiting input:
#                  pending -> challenged            (the bond goes to the new exit's owner)
#   process_exits: pending -> finalized | unfunded  (amount + bond | the bond alone)
TRANSITIONS: dict[str, frozenset[str]] = {
    "challenge": frozenset({"pending"}),
    "process_exits": frozenset({"pending"}),
}

# Storage (str-keyed maps and lists, msgpack-friendly; never mutated in place, since the
# journal keeps the old value by reference):
#   ("c", "plasma", operator) -> {exit_blocks, bond, last_child, next_deposit, deposits,
#                                  paid, bonds}
#   ("c", "plasma", operator, "b", number) -> [root, l1_height, owner | None, amount]
#       (a deposit block: its depositor and amount; a child block: None, 0)
#   ("c", "plasma", operator, "x", pos) -> {owner, amount, bond, started, exitable_at,
#                                           status, challenger}
#   ("c", "plasma", operator, "s", pos, owner) -> position of the tx (output index 0) that
#       spends `pos`, shown with `owner`'s confirmation by an exit: `owner` may not exit `pos`


_checks = ArgChecks(NAME)
_error, _bytes, _int = _checks.error, _checks.bytes, _checks.int


def _ptx(args: dict, key: str) -> PlasmaTx:
    v = args.get(key)
    if type(v) is not bytes:
        raise _error(f"{key} must be an encoded plasma tx")
    try:
        return PlasmaTx.decode(v)
    except RemoteProtocolError as exc:
        raise _error(f"{key}: {exc.detail}") from None


def _proof(args: dict) -> list[bytes]:
    v = args.get("proof")
    if type(v) is not list or len(v) > MAX_PROOF or any(type(s) is not bytes for s in v):
        raise _error(f"proof must be a list of at most {MAX_PROOF} byte strings")
    return v


def _confirms(args: dict, n_inputs: int) -> list[tuple[bytes, bytes]]:
    v = args.get("confirms")
    if type(v) is not list or len(v) != n_inputs:
        raise _error(f"confirms must be a list of {n_inputs} [owner, confirmation] (one per "
                     "input of the tx)")
    out = []
    for c in v:
        if type(c) is not list or len(c) != 2 or type(c[0]) is not bytes or len(c[0]) != 32 \
                or type(c[1]) is not bytes or len(c[1]) != 64:
            raise _error("confirms: expected [32-byte owner, 64-byte confirmation] each")
        out.append((c[0], c[1]))
    return out


def _key(operator: bytes, *rest: Any) -> tuple:
    return ("c", NAME, operator, *rest)


class Plasma(Contract):
    name = NAME
    methods = frozenset(("register", "deposit", "commit", "start_exit", "challenge",
                         "process_exits"))

    _ARGS = {
        "register": {"operator", "exit_blocks", "bond"},
        "deposit": {"operator"},
        "commit": {"operator", "number", "root"},
        "start_exit": {"operator", "pos", "tx", "proof", "confirms"},
        "challenge": {"operator", "pos", "spend", "spend_pos", "proof", "confirm"},
        "process_exits": {"operator"},
    }

    def apply(self, state: State, tx: Tx, height: int) -> None:
        method = tx.method
        args: Any = _checks.call_args(tx, self._ARGS)
        operator = _bytes(args, "operator", 32)
        if method == "register":
            _register(state, tx, height, args, operator)
            return
        rec = state.get(_key(operator))
        if rec is None:
            raise _error("no such plasma chain")
        rec = dict(rec)  # a copy: the journal holds the stored one as the old value
        _HANDLERS[method](state, tx, height, args, operator, rec)  # type: ignore[index]

    def locked(self, state: State) -> int:
        return sum(v["deposits"] - v["paid"] + v["bonds"]
                   for k, v in state.items(("c", NAME)) if len(k) == 3)


# -- methods ---------------------------------------------------------------------------
def _register(state: State, tx: Tx, height: int, args: dict, operator: bytes) -> None:
    """The operator opens its chain: exit period and the bond every exit posts."""
    exit_blocks = _int(args, "exit_blocks", 1, MAX_EXIT_BLOCKS)
    bond = _int(args, "bond")
    if tx.sender != operator:
        raise _error("only the operator may register its chain")
    if tx.amount:
        raise _error("register takes no amount")
    if state.get(_key(operator)) is not None:
        raise _error("this operator already has a chain")
    state.set(_key(operator), {
        "exit_blocks": exit_blocks, "bond": bond, "last_child": 0, "next_deposit": 1,
        "deposits": 0, "paid": 0, "bonds": 0,
    })


def _deposit(state: State, tx: Tx, height: int, args: dict, operator: bytes, rec: dict) -> None:
    """Lock `amount` and record the one-output deposit block at the next free number."""
    if tx.amount <= 0:
        raise _error("deposit needs a positive amount")
    number = rec["next_deposit"]
    if number % CHILD_BLOCK_INTERVAL == 0:
        raise _error("too many deposits before the next child block")
    if number > MAX_BLOCK:
        raise _error("block numbers exhausted")
    root = PlasmaBlock(number, (deposit_tx(operator, tx.sender, tx.amount),)).root
    state.set(_key(operator, "b", number), [root, height, tx.sender, tx.amount])
    rec.update(next_deposit=number + 1, deposits=rec["deposits"] + tx.amount)
    state.set(_key(operator), rec)


def _commit(state: State, tx: Tx, height: int, args: dict, operator: bytes, rec: dict) -> None:
    """The operator commits a child block's root; numbers rise (gaps allowed)."""
    if tx.sender != operator:
        raise _error("only the operator may commit blocks")
    if tx.amount:
        raise _error("commit takes no amount")
    number = _int(args, "number", 1, MAX_BLOCK)
    root = _bytes(args, "root", 32)
    if number % CHILD_BLOCK_INTERVAL:
        raise _error(f"child block numbers are multiples of {CHILD_BLOCK_INTERVAL}")
    if number <= rec["last_child"]:
        raise _error(f"block {number} is not above the last child block {rec['last_child']}")
    state.set(_key(operator, "b", number), [root, height, None, 0])
    rec.update(last_child=number, next_deposit=number + 1)
    state.set(_key(operator), rec)


def _start_exit(
    state: State, tx: Tx, height: int, args: dict, operator: bytes, rec: dict
) -> None:
    """The owner of an output in a committed block exits it, posting the bond; for a tx with
    inputs, `confirms` names each input's owner with its confirmation of the tx."""
    if tx.amount != rec["bond"]:
        raise _error(f"amount {tx.amount} != the bond {rec['bond']}")
    pos = _int(args, "pos", 1)
    ptx = _ptx(args, "tx")
    proof = _proof(args)
    confirms = _confirms(args, len(ptx.inputs))
    block, tx_index, oindex = split_pos(pos)
    entry = state.get(_key(operator, "b", block))
    if entry is None:
        raise _error(f"block {block} is not committed")
    root, utxo_height = entry[0], entry[1]
    if ptx.chain != operator:
        raise _error("the tx is of another plasma chain")
    if not verify_proof(ptx.leaf, tx_index, proof, root):
        raise _error(f"the tx is not at index {tx_index} of block {block}")
    if oindex >= len(ptx.outputs):
        raise _error(f"the tx has no output {oindex}")
    owner, amount = ptx.outputs[oindex]
    if owner != tx.sender:
        raise _error("only the output's owner may exit it")
    if state.get(_key(operator, "x", pos)) is not None:
        raise _error(f"position {pos} already has an exit")
    if state.get(_key(operator, "s", pos, owner)) is not None:
        raise _error(f"position {pos}: a confirmed spend of it by its owner is on L1")
    digest = confirm_digest(ptx.hash, root)
    cancel = []
    for i, (in_owner, sig) in enumerate(confirms):
        if not ptx.sig_ok(i, in_owner):
            raise _error(f"confirms[{i}]: the tx is not signed by that owner of input {i}")
        if not verify(in_owner, digest, sig):
            raise _error(f"confirms[{i}]: not that owner's confirmation of the tx in block "
                         f"{block}")
        ex = state.get(_key(operator, "x", ptx.inputs[i]))
        if ex is not None and ex["owner"] == in_owner:
            if ex["status"] == "finalized":
                raise _error(f"input {ptx.inputs[i]} of the tx already exited (paid out)")
            if ex["status"] in TRANSITIONS["challenge"]:
                cancel.append((ptx.inputs[i], ex))
    spend_pos = position(block, tx_index, 0)
    for i, (in_owner, _) in enumerate(confirms):
        state.set(_key(operator, "s", ptx.inputs[i], in_owner), spend_pos)
    for in_pos, ex in cancel:  # the confirmation shown is a challenge of those exits
        state.set(_key(operator, "x", in_pos), dict(ex, status="challenged",
                                                     challenger=tx.sender))
        rec["bonds"] -= ex["bond"]
        if ex["bond"]:
            state.add_balance(tx.sender, ex["bond"])
    exit_blocks = rec["exit_blocks"]
    exitable_at = max(height + exit_blocks, utxo_height + 2 * exit_blocks)
    state.set(_key(operator, "x", pos), {
        "owner": owner, "amount": amount, "bond": rec["bond"], "started": height,
        "exitable_at": exitable_at, "status": "pending", "challenger": None,
    })
    rec["bonds"] += rec["bond"]
    state.set(_key(operator), rec)


def _challenge(
    state: State, tx: Tx, height: int, args: dict, operator: bytes, rec: dict
) -> None:
    """Cancel a pending exit with a confirmed, included spend of its output; the
    challenger (anyone) takes the bond."""
    if tx.amount:
        raise _error("challenge takes no amount")
    pos = _int(args, "pos", 1)
    spend = _ptx(args, "spend")
    spend_pos = _int(args, "spend_pos", 1)
    proof = _proof(args)
    confirm = _bytes(args, "confirm", 64)
    ex = state.get(_key(operator, "x", pos))
    if ex is None:
        raise _error(f"no exit of position {pos}")
    if ex["status"] not in TRANSITIONS["challenge"]:
        raise _error(f"challenge of an exit that is {ex['status']}")
    if spend.chain != operator:
        raise _error("the spend is of another plasma chain")
    if pos not in spend.inputs:
        raise _error(f"the tx does not spend position {pos}")
    owner = ex["owner"]
    if not spend.sig_ok(spend.inputs.index(pos), owner):
        raise _error("the spend is not signed by the exit's owner")
    block, tx_index, oindex = split_pos(spend_pos)
    if oindex:
        raise _error("spend_pos is the position of a tx: output index 0")
    entry = state.get(_key(operator, "b", block))
    if entry is None:
        raise _error(f"block {block} is not committed")
    root = entry[0]
    if not verify_proof(spend.leaf, tx_index, proof, root):
        raise _error(f"the spend is not at index {tx_index} of block {block}")
    if not verify(owner, confirm_digest(spend.hash, root), confirm):
        raise _error("confirm is not the owner's confirmation of the spend in that block")
    state.set(_key(operator, "x", pos), dict(ex, status="challenged", challenger=tx.sender))
    rec["bonds"] -= ex["bond"]
    state.set(_key(operator), rec)
    if ex["bond"]:
        state.add_balance(tx.sender, ex["bond"])


def _process_exits(
    state: State, tx: Tx, height: int, args: dict, operator: bytes, rec: dict
) -> None:
    """Pay every pending exit due by `height`, in (exitable_at, pos) order, while the
    deposits not yet paid out cover it; nothing due is a no-op."""
    if tx.amount:
        raise _error("process_exits takes no amount")
    due = sorted(
        (v["exitable_at"], k[4], v) for k, v in state.items(_key(operator, "x"))
        if v["status"] in TRANSITIONS["process_exits"] and v["exitable_at"] <= height
    )
    for _, pos, ex in due:
        amount, bond = ex["amount"], ex["bond"]
        if rec["deposits"] - rec["paid"] >= amount:
            rec["paid"] += amount
            pay, status = amount + bond, "finalized"
        else:
            pay, status = bond, "unfunded"
        rec["bonds"] -= bond
        state.set(_key(operator, "x", pos), dict(ex, status=status))
        if pay:
            state.add_balance(ex["owner"], pay)
    assert rec["paid"] <= rec["deposits"], "plasma paid out more than was deposited"
    state.set(_key(operator), rec)


_HANDLERS = {
    "deposit": _deposit,
    "commit": _commit,
    "start_exit": _start_exit,
    "challenge": _challenge,
    "process_exits": _process_exits,
}


# -- views and builders for the node service ----------------------------------------------
def chain_record(state: State, operator: bytes) -> dict | None:
    """A plain copy of the operator's chain record (see the storage comment above), or None."""
    rec = state.get(_key(operator))
    return None if rec is None else dict(rec)


def committed_block(
    state: State, operator: bytes, number: int
) -> tuple[bytes, int, bytes | None, int] | None:
    """(root, l1_height, depositor or None, amount) of a committed block, or None."""
    entry = state.get(_key(operator, "b", number))
    return None if entry is None else tuple(entry)  # type: ignore[return-value]


def blocks_after(state: State, operator: bytes, number: int) -> list[tuple]:
    """[(number, root, l1_height, depositor or None, amount)] of the committed blocks above
    `number`, by number."""
    return sorted((k[4], *v) for k, v in state.items(_key(operator, "b")) if k[4] > number)


def exit_record(state: State, operator: bytes, pos: int) -> dict | None:
    """A plain copy of the exit record of `pos`, or None."""
    ex = state.get(_key(operator, "x", pos))
    return None if ex is None else dict(ex)


def exits(state: State, operator: bytes) -> list[dict]:
    """Every exit of the chain (any status), each with its "pos", by (exitable_at, pos)."""
    out = [dict(v, pos=k[4]) for k, v in state.items(_key(operator, "x"))]
    out.sort(key=lambda e: (e["exitable_at"], e["pos"]))
    return out


def register_tx(
    identity: Identity, net: str, exit_blocks: int, bond: int, nonce: int, fee: int = 1
) -> Tx:
    """The operator (`identity`) registers its chain."""
    args = {"operator": identity.pubkey, "exit_blocks": exit_blocks, "bond": bond}
    return call(identity, net, NAME, "register", args, nonce, fee)


def deposit_call_tx(
    identity: Identity, net: str, operator: bytes, amount: int, nonce: int, fee: int = 1
) -> Tx:
    """Lock `amount` into the chain; it becomes a deposit block owned by `identity`."""
    return call(identity, net, NAME, "deposit", {"operator": operator}, nonce, fee,
                amount=amount)


def commit_tx(
    identity: Identity, net: str, number: int, root: bytes, nonce: int, fee: int = 1
) -> Tx:
    """The operator (`identity`) commits child block `number` with Merkle `root`."""
    args = {"operator": identity.pubkey, "number": number, "root": root}
    return call(identity, net, NAME, "commit", args, nonce, fee)


def start_exit_tx(
    identity: Identity,
    net: str,
    operator: bytes,
    pos: int,
    tx: PlasmaTx,
    proof: list[bytes],
    bond: int,
    nonce: int,
    fee: int = 1,
    confirms: Sequence[tuple[bytes, bytes]] = (),
) -> Tx:
    """Exit the output at `pos` (created by `tx`, proven by `proof`), posting `bond`.
    `confirms`: one (owner, confirmation of `tx` in its block) per input of `tx`, in input
    order; none for a deposit."""
    args = {"operator": operator, "pos": pos, "tx": tx.encode(), "proof": list(proof),
            "confirms": [[o, sig] for o, sig in confirms]}
    return call(identity, net, NAME, "start_exit", args, nonce, fee, amount=bond)


def challenge_tx(
    identity: Identity,
    net: str,
    operator: bytes,
    pos: int,
    spend: PlasmaTx,
    spend_pos: int,
    proof: list[bytes],
    confirm: bytes,
    nonce: int,
    fee: int = 1,
) -> Tx:
    """Challenge the exit of `pos` with `spend`, included at `spend_pos` (a tx position,
    output index 0) and confirmed by the owner; anyone may send it and takes the bond."""
    args = {"operator": operator, "pos": pos, "spend": spend.encode(), "spend_pos": spend_pos,
            "proof": list(proof), "confirm": confirm}
    return call(identity, net, NAME, "challenge", args, nonce, fee)


def process_exits_tx(
    identity: Identity, net: str, operator: bytes, nonce: int, fee: int = 1
) -> Tx:
    """Pay the exits due (anyone may send it)."""
    return call(identity, net, NAME, "process_exits", {"operator": operator}, nonce, fee)


PLASMA = register(Plasma())
