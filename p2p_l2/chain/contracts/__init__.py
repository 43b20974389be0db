"""Native L1 contracts: named objects a `call` tx routes to, registered in `CONTRACTS`.

Design: `apply(state, tx, height)` keeps its storage under ("c", name, ...) and raises
TxRejected on misuse; the ledger has already charged the sender amount + fee and undoes
everything if `apply` raises.  `locked(state)` is the coin held, for conservation checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..state import State
    from ..tx import Tx

__all__ = ["CONTRACTS", "ArgChecks", "Contract", "register"]


class Contract(ABC):
    """One native contract.  `methods` lists what `apply` accepts, so the ledger and the
    mempool can reject an unknown method before running anything."""

    name: ClassVar[str]
    methods: ClassVar[frozenset[str]]

    @abstractmethod
    def apply(self, state: State, tx: Tx, height: int) -> None:
        """Carry out `tx` (kind "call", method in `methods`) at `height`; raise TxRejected."""

    @abstractmethod
    def locked(self, state: State) -> int:
        """Coins the contract holds in `state` (paid in, not yet paid out)."""


class ArgChecks:
    """Checked reads of a call's args for the contract `name`; a bad arg is TxRejected
    ("contract_error", "NAME: detail")."""

    def __init__(self, name: str):
        self.name = name

    def error(self, detail: str):
        from ..tx import TxRejected
        return TxRejected("contract_error", f"{self.name}: {detail}")

    def call_args(self, tx: Tx, keys: dict[str, set[str]]) -> dict:
        """The args of `tx`, a call of one of `keys`' methods with exactly its keys."""
        from ..tx import TxRejected
        if tx.method not in keys:
            raise TxRejected("unknown_method", f"{self.name} has no method {tx.method!r}")
        args = tx.args
        if type(args) is not dict:
            raise self.error("args must be a map")
        want = keys[tx.method]
        if set(args) != want:
            raise self.error(f"{tx.method} takes {{{', '.join(sorted(want))}}}")
        return args

    def bytes(self, args: dict, key: str, size: int) -> bytes:
        v = args.get(key)
        if type(v) is not bytes or len(v) != size:
            raise self.error(f"{key} must be {size} bytes")
        return v

    def int(self, args: dict, key: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
        v = args.get(key)
        if type(v) is not int or not lo <= v <= hi:
            raise self.error(f"{key} must be an int in [{lo}, {hi}]")
        return v


CONTRACTS: dict[str, Contract] = {}


def register(contract: Contract) -> Contract:
    """Make `contract` callable by name; a second contract with the same name is a bug."""
    if not isinstance(contract, Contract):
        raise TypeError(f"{contract!r} is not a Contract")
    old = CONTRACTS.get(contract.name)
    if old is not None and old is not contract:
        raise ValueError(f"contract {contract.name!r} is already registered")
    CONTRACTS[contract.name] = contract
    return contract


# Built-in contracts register themselves on import; later layers add theirs the same way.
from . import escrow  # noqa: E402,F401
from . import channel  # noqa: E402,F401
from . import plasma  # noqa: E402,F401
