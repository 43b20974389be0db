"""`escrow`: coins locked for a recipient, released early by the payer, claimed after a
height, or refunded to the payer if the recipient never claims.

Design: `lock {to, unlock_height}` stores ("c", "escrow", lock txid) -> [payer, to, amount,
unlock_height]; `release {id}` (payer, any time) or `claim {id}` (to, from unlock_height)
pay `to`; `refund {id}` (payer, from unlock_height + CLAIM_WINDOW) pays the payer back.
"""

from __future__ import annotations

from typing import Any

from ..state import State
from ..tx import MAX_INT, Tx, TxRejected
from . import Contract, register

__all__ = ["CLAIM_WINDOW", "Escrow", "ESCROW"]

CLAIM_WINDOW = 100  # blocks the recipient has, after unlock_height, before a refund


def _error(detail: str) -> TxRejected:
    return TxRejected("contract_error", f"escrow: {detail}")


def _bytes32(args: dict, key: str) -> bytes:
    v = args.get(key)
    if type(v) is not bytes or len(v) != 32:
        raise _error(f"{key} must be 32 bytes")
    return v


class Escrow(Contract):
    name = "escrow"
    methods = frozenset(("lock", "release", "claim", "refund"))

    def apply(self, state: State, tx: Tx, height: int) -> None:
        args: Any = tx.args if tx.args is not None else {}
        if type(args) is not dict:
            raise _error("args must be a map")
        if tx.method == "lock":
            if set(args) != {"to", "unlock_height"}:
                raise _error("lock takes {to, unlock_height}")
            to = _bytes32(args, "to")
            unlock = args["unlock_height"]
            if type(unlock) is not int or not 0 <= unlock < MAX_INT - CLAIM_WINDOW:
                raise _error("unlock_height must be a non-negative int")
            if tx.amount <= 0:
                raise _error("lock needs a positive amount")
            state.set(("c", "escrow", tx.txid), [tx.sender, to, tx.amount, unlock])
            return
        if tx.method not in self.methods:
            raise TxRejected("unknown_method", f"escrow has no method {tx.method!r}")
        if set(args) != {"id"}:
            raise _error(f"{tx.method} takes {{id}}")
        if tx.amount:
            raise _error(f"{tx.method} takes no amount")
        key = ("c", "escrow", _bytes32(args, "id"))
        entry = state.get(key)
        if entry is None:
            raise _error("no such escrow")
        payer, to, amount, unlock = entry
        if tx.method == "release":
            if tx.sender != payer:
                raise _error("only the payer may release")
            payee = to
        elif tx.method == "claim":
            if tx.sender != to:
                raise _error("only the recipient may claim")
            if height < unlock:
                raise _error(f"locked until height {unlock}")
            payee = to
        else:  # refund
            if tx.sender != payer:
                raise _error("only the payer may refund")
            if height < unlock + CLAIM_WINDOW:
                raise _error(f"refundable from height {unlock + CLAIM_WINDOW}")
            payee = payer
        state.set(key, None)
        state.add_balance(payee, amount)

    def locked(self, state: State) -> int:
        return sum(v[2] for _, v in state.items(("c", "escrow")))


ESCROW = register(Escrow())
