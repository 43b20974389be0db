"""The layer-1 rule for one transaction, applied to a `State` (sans-IO).

Design: all checks (network, shape, signature, nonce, funds) run before the first write,
so a rejected transfer touches nothing; a contract call runs under a journal savepoint and
is rolled back whole if it raises.  Coins: balances + locked == genesis + rewards - burned.
"""

from __future__ import annotations

from .contracts import CONTRACTS
from .state import State
from .tx import MAX_INT, Tx, TxRejected

__all__ = [
    "REASONS",
    "TxRejected",
    "apply_reward",
    "apply_tx",
    "check_static",
    "genesis_state",
    "total_balances",
    "total_locked",
]

# Stable rejection codes of the ledger (the mempool adds its own, see mempool.REASONS).
REASONS = (
    "wrong_network",
    "malformed",  # a locally built Tx of the wrong shape (peer data fails in Tx.from_wire)
    "bad_amount",
    "unknown_contract",
    "unknown_method",
    "bad_signature",
    "bad_nonce",
    "insufficient_funds",
    "contract_error",
)


def check_static(tx: Tx, net: str) -> None:
    """The checks that need no state and no signature check; raises TxRejected."""
    if tx.net != net:
        raise TxRejected("wrong_network", f"tx for {tx.net!r}, this is {net!r}")
    amount, fee, nonce = tx.amount, tx.fee, tx.nonce
    if type(amount) is not int or type(fee) is not int:
        raise TxRejected("bad_amount", f"amount={amount!r} fee={fee!r}")
    if not (0 <= amount < MAX_INT and 0 <= fee < MAX_INT):
        raise TxRejected("bad_amount", f"amount={amount!r} fee={fee!r}")
    if type(nonce) is not int or not 0 <= nonce < MAX_INT:
        raise TxRejected("malformed", f"nonce={nonce!r}")
    if type(tx.sender) is not bytes or len(tx.sender) != 32:
        raise TxRejected("malformed", "sender must be 32 bytes")
    if tx.kind == "transfer":
        to = tx.to
        if type(to) is not bytes or len(to) != 32:
            raise TxRejected("malformed", "a transfer needs a 32-byte 'to'")
        if amount == 0:
            raise TxRejected("bad_amount", "a transfer must move a positive amount")
    elif tx.kind == "call":
        contract = CONTRACTS.get(tx.contract)  # type: ignore[arg-type]
        if contract is None:
            raise TxRejected("unknown_contract", repr(tx.contract))
        if tx.method not in contract.methods:
            raise TxRejected("unknown_method", f"{tx.contract}.{tx.method}")
    else:
        raise TxRejected("malformed", f"unknown kind {tx.kind!r}")


def apply_tx(
    state: State,
    tx: Tx,
    height: int,
    miner: bytes | None,
    *,
    net: str,
    check_sig: bool = True,
) -> None:
    """Apply `tx` at `height`, paying its fee to `miner` (None burns it); raises TxRejected
    and leaves `state` exactly as it was if any rule fails."""
    check_static(tx, net)
    if check_sig and not tx.verify():
        raise TxRejected("bad_signature", tx.txid.hex())
    sender = tx.sender
    nonce = state.nonce(sender)
    if tx.nonce != nonce:
        raise TxRejected("bad_nonce", f"nonce {tx.nonce}, expected {nonce}")
    fee = tx.fee
    cost = tx.amount + fee
    balance = state.balance(sender)
    if balance < cost:
        raise TxRejected("insufficient_funds", f"balance {balance} < amount + fee {cost}")

    if tx.kind == "transfer":  # nothing below can fail: no savepoint needed
        state.set(("bal", sender), balance - cost or None)
        state.set(("nonce", sender), nonce + 1)
        state.add_balance(tx.to, tx.amount)  # type: ignore[arg-type]
        if fee and miner is not None:
            state.add_balance(miner, fee)
        return

    contract = CONTRACTS[tx.contract]  # type: ignore[index]
    own_journal = not state.journaling
    if own_journal:
        state.begin()
    mark = state.savepoint()
    try:
        state.set(("bal", sender), balance - cost or None)
        state.set(("nonce", sender), nonce + 1)
        if fee and miner is not None:
            state.add_balance(miner, fee)
        contract.apply(state, tx, height)
    except BaseException:
        state.rollback_to(mark)
        if own_journal:
            state.abort()
        raise
    if own_journal:
        state.commit()


def apply_reward(state: State, miner: bytes, amount: int) -> None:
    """Mint the block reward to `miner`."""
    if type(amount) is not int or amount < 0:
        raise ValueError(f"block reward must be a non-negative int, got {amount!r}")
    if amount:
        state.add_balance(miner, amount)


def genesis_state(accounts: dict[bytes, int]) -> State:
    """The state at height 0: these balances, every nonce 0, no contract storage."""
    kv = {}
    for account, balance in accounts.items():
        if type(account) is not bytes or len(account) != 32:
            raise ValueError(f"genesis account must be a 32-byte pubkey, got {account!r}")
        if type(balance) is not int or balance < 0:
            raise ValueError(f"genesis balance must be a non-negative int, got {balance!r}")
        if balance:
            kv[("bal", account)] = balance
    return State(kv)


def total_balances(state: State) -> int:
    return sum(v for k, v in state.kv.items() if k[0] == "bal")


def total_locked(state: State) -> int:
    """Coins held by contracts (escrows, channels, plasma deposits...)."""
    return sum(c.locked(state) for c in CONTRACTS.values())
