"""Layer-1 state as one flat key-value map with an undo journal (sans-IO).

Keys are tuples: ("bal", pubkey) -> int, ("nonce", pubkey) -> int, and contract storage
("c", contract_name, *key) -> msgpack-able value.  Every write goes through `set` while a
journal is open, so connecting a block yields an `Undo` (the old values of exactly the
keys it touched): rolling back a reorg replays undos in reverse, and the store persists
a block's effect by writing just those keys.  A missing key and a deleted key are the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MISSING = object()  # marks "key was absent" in an Undo
Key = tuple
Undo = list  # [(key, old_value_or_MISSING), ...] in write order


class State:
    def __init__(self, kv: dict[Key, Any] | None = None):
        self.kv: dict[Key, Any] = dict(kv or {})
        self._journal: Undo | None = None
        self._saves: list[int] = []

    # -- reads -------------------------------------------------------------------------
    def get(self, key: Key, default: Any = None) -> Any:
        return self.kv.get(key, default)

    def balance(self, account: bytes) -> int:
        return self.kv.get(("bal", account), 0)

    def nonce(self, account: bytes) -> int:
        return self.kv.get(("nonce", account), 0)

    def items(self, prefix: tuple = ()) -> Iterable[tuple[Key, Any]]:
        n = len(prefix)
        return ((k, v) for k, v in self.kv.items() if k[:n] == prefix)

    # -- writes ------------------------------------------------------------------------
    def set(self, key: Key, value: Any) -> None:
        """Write (value None deletes); journaled when a journal is open."""
        if self._journal is not None:
            self._journal.append((key, self.kv.get(key, MISSING)))
        if value is None:
            self.kv.pop(key, None)
        else:
            self.kv[key] = value

    def add_balance(self, account: bytes, delta: int) -> None:
        new = self.balance(account) + delta
        if new < 0:
            raise ValueError("balance would go negative")
        self.set(("bal", account), new or None)

    # -- journal -----------------------------------------------------------------------
    @property
    def journaling(self) -> bool:
        """True while a journal is open (between `begin` and `commit`/`abort`)."""
        return self._journal is not None

    def begin(self) -> None:
        """Open a journal (e.g. for one block); nested savepoints via `savepoint`."""
        if self._journal is not None:
            raise RuntimeError("journal already open")
        self._journal = []
        self._saves = []

    def savepoint(self) -> int:
        """Mark the journal so one transaction's writes can be rolled back alone."""
        assert self._journal is not None, "no journal open"
        return len(self._journal)

    def rollback_to(self, mark: int) -> None:
        assert self._journal is not None, "no journal open"
        while len(self._journal) > mark:
            key, old = self._journal.pop()
            self._restore(key, old)

    def commit(self) -> Undo:
        """Close the journal; returns the Undo of everything written since `begin`."""
        undo, self._journal = self._journal, None
        if undo is None:
            raise RuntimeError("no journal open")
        return undo

    def abort(self) -> None:
        """Close the journal, reverting everything written since `begin`."""
        if self._journal is not None:
            self.rollback_to(0)
            self._journal = None

    def undo(self, undo: Undo) -> None:
        """Revert a committed Undo (must be the most recent one still applied)."""
        for key, old in reversed(undo):
            self._restore(key, old)

    def _restore(self, key: Key, old: Any) -> None:
        if old is MISSING:
            self.kv.pop(key, None)
        else:
            self.kv[key] = old

    @staticmethod
    def touched(undo: Undo) -> set[Key]:
        return {key for key, _ in undo}
