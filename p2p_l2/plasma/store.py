"""What a plasma node must never forget, in SQLite (WAL), written before anything depends
on it (DESIGN §2.4).  The operator keeps the blocks it made, the deposits and exits it saw
and the confirmations it was given (enough for `OperatorCore.restore`); a user keeps the
blocks it fetched (so it can rebuild its watcher even if the operator withholds them after
a restart) and its own txs not yet confirmed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS confs (number INTEGER, hash BLOB, sigs BLOB, PRIMARY KEY (number, hash));
CREATE TABLE IF NOT EXISTS deposits (number INTEGER PRIMARY KEY, owner BLOB, amount INTEGER);
CREATE TABLE IF NOT EXISTS exiting (pos INTEGER PRIMARY KEY, last INTEGER);
CREATE TABLE IF NOT EXISTS own (hash BLOB PRIMARY KEY, tx BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
"""


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(blob: bytes):
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


class PlasmaStore:
    def __init__(self, path: Path | str | None):
        self.db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def _put(self, sql: str, *args) -> None:
        self.db.execute(sql, args)  # autocommit: durable once this returns

    def put_block(self, number: int, wire: list) -> None:
        self._put("INSERT OR REPLACE INTO blocks VALUES (?, ?)", number, _pack(wire))

    def blocks(self) -> dict[int, list]:
        return {n: _unpack(d) for n, d in self.db.execute("SELECT number, data FROM blocks")}

    def put_confirmations_many(self, rows) -> None:
        """(number, tx hash, sigs) rows, in one transaction."""
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR REPLACE INTO confs VALUES (?, ?, ?)",
                                ((n, h, _pack(sigs)) for n, h, sigs in rows))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def confirmations(self) -> dict[int, dict[bytes, list[bytes]]]:
        out: dict[int, dict[bytes, list[bytes]]] = {}
        for n, h, sigs in self.db.execute("SELECT number, hash, sigs FROM confs"):
            out.setdefault(n, {})[h] = _unpack(sigs)
        return out

    def put_deposit(self, number: int, owner: bytes, amount: int) -> None:
        self._put("INSERT OR IGNORE INTO deposits VALUES (?, ?, ?)", number, owner, amount)

    def deposits(self) -> list[tuple[int, bytes, int]]:
        return list(self.db.execute("SELECT number, owner, amount FROM deposits ORDER BY number"))

    def put_exiting(self, pos: int, last: int) -> None:
        self._put("INSERT OR IGNORE INTO exiting VALUES (?, ?)", pos, last)

    def exiting(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT pos, last FROM exiting"))

    def put_own(self, tx_hash: bytes, wire: list) -> None:
        self._put("INSERT OR REPLACE INTO own VALUES (?, ?)", tx_hash, _pack(wire))

    def drop_own(self, tx_hash: bytes) -> None:
        self._put("DELETE FROM own WHERE hash = ?", tx_hash)

    def own(self) -> list[list]:
        return [_unpack(t) for (t,) in self.db.execute("SELECT tx FROM own")]

    def put_meta(self, key: str, value) -> None:
        self._put("INSERT OR REPLACE INTO meta VALUES (?, ?)", key, _pack(value))

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return _unpack(row[0]) if row else default
