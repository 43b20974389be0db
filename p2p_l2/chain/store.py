"""SQLite persistence of a BlockTree: blocks, undos, the state at the tip, meta.

Design: sqlite3, WAL, synchronous=NORMAL; each `BlockTree.add` hands over one StoreBatch
(new blocks, invalid hashes, undos, touched state keys, tip) written in ONE transaction, so
a kill -9 leaves the last committed add; restart loads the state as stored, replaying
nothing.  Values are msgpack with ext types for tuple and state.MISSING, so they round-trip.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from p2p_l2.chain.block import Block
from p2p_l2.chain.state import MISSING, Key, Undo

__all__ = ["ChainStore", "Snapshot", "StoreBatch"]

SCHEMA_VERSION = 1
_EXT_TUPLE, _EXT_MISSING = 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    hash BLOB PRIMARY KEY, height INTEGER NOT NULL, prev BLOB NOT NULL,
    seq INTEGER NOT NULL, wire BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS undo (
    hash BLOB PRIMARY KEY, reward INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (key BLOB PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS invalid (hash BLOB PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB);
"""


# ---------------------------------------------------------------- exact msgpack codec


def _default(o: Any) -> Any:
    if type(o) is tuple:
        return msgpack.ExtType(_EXT_TUPLE, _pack_nested(list(o)))
    if o is MISSING:
        return msgpack.ExtType(_EXT_MISSING, b"")
    raise TypeError(f"cannot store a {type(o).__name__}")


def _pack_nested(o: Any) -> bytes:  # a fresh packer: the shared one is not re-entrant
    return msgpack.packb(o, use_bin_type=True, strict_types=True, default=_default)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_unpack(data))
    if code == _EXT_MISSING:
        return MISSING
    return msgpack.ExtType(code, data)


def _unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False, ext_hook=_ext_hook, strict_map_key=False)


_pack = msgpack.Packer(use_bin_type=True, strict_types=True, default=_default, autoreset=True).pack
_pack_plain = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def pack_key(key: Key) -> bytes:
    """A state key as stored: the msgpack array of its elements.  A key is hashable, so it
    holds no list or map: every array in it was a tuple, and decoding is exact."""
    return _pack_plain(key)


def unpack_key(b: bytes) -> Key:
    return msgpack.unpackb(b, raw=False, use_list=False)


def pack_value(v: Any) -> bytes:
    return _pack(v)


def unpack_value(b: bytes) -> Any:
    return _unpack(b)


def pack_undo(undo: Undo) -> bytes:
    """[keys, old values]: keys as plain arrays (see pack_key), values exact."""
    return _pack_plain([_pack_plain([k for k, _ in undo]), _pack([old for _, old in undo])])


def unpack_undo(b: bytes) -> Undo:
    keys, olds = msgpack.unpackb(b, raw=False)
    return list(zip(msgpack.unpackb(keys, raw=False, use_list=False), _unpack(olds)))


# ---------------------------------------------------------------- batches and snapshots


@dataclass
class StoreBatch:
    """Everything one `BlockTree.add` changed, written in one transaction."""

    new_blocks: list[tuple[Block, int]] = field(default_factory=list)  # (block, seq)
    invalid: dict[bytes, str] = field(default_factory=dict)  # also deleted from blocks
    connected: list[bytes] = field(default_factory=list)
    disconnected: list[bytes] = field(default_factory=list)
    undo_put: list[tuple[bytes, Undo, int]] = field(default_factory=list)  # (hash, undo, reward)
    touched: set[Key] = field(default_factory=set)
    state_put: dict[Key, Any] = field(default_factory=dict)  # value or MISSING (delete)
    tip: bytes | None = None
    minted: int | None = None


@dataclass
class Snapshot:
    """A database as loaded: enough to rebuild a BlockTree without replaying blocks."""

    net: str
    genesis: bytes
    tip: bytes
    minted: int
    blocks: list[tuple[Block, int]]  # (block, seq) in seq order
    undos: dict[bytes, tuple[Undo, int]]  # active block -> (undo, reward)
    kv: dict[Key, Any]
    invalid: dict[bytes, str]


# ---------------------------------------------------------------- the store


class ChainStore:
    """One sqlite database holding one node's chain."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # autocommit mode: transactions are the explicit BEGIN / COMMIT in `_transaction`
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {k: _unpack(v) for k, v in self._db.execute("SELECT k, v FROM meta")}

    def load(self) -> Snapshot | None:
        """The stored chain, or None for a new database."""
        meta = self._meta()
        if "tip" not in meta:
            return None
        if meta.get("version") != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {meta.get('version')}, "
                               f"expected {SCHEMA_VERSION}")
        db = self._db
        blocks = [
            (Block.from_wire(_unpack(wire), 2**62), seq)
            for wire, seq in db.execute("SELECT wire, seq FROM blocks ORDER BY seq")
        ]
        undos = {h: (unpack_undo(data), reward)
                 for h, reward, data in db.execute("SELECT hash, reward, data FROM undo")}
        kv = {unpack_key(k): unpack_value(v) for k, v in db.execute("SELECT key, value FROM state")}
        invalid = dict(db.execute("SELECT hash, reason FROM invalid"))
        return Snapshot(meta["net"], meta["genesis"], meta["tip"], meta["minted"],
                        blocks, undos, kv, invalid)

    # -- writes ------------------------------------------------------------------------

    def init(self, net: str, genesis: Block, kv: dict[Key, Any]) -> None:
        """Fill a new database: the genesis block and state, in one transaction."""
        with self._transaction():
            self._put_blocks([(genesis, 0)])
            self._put_state({k: v for k, v in kv.items()})
            self._put_meta(version=SCHEMA_VERSION, net=net, genesis=genesis.hash,
                           tip=genesis.hash, minted=0)

    def write(self, batch: StoreBatch) -> None:
        """Apply one add's changes atomically."""
        with self._transaction():
            db = self._db
            self._put_blocks(batch.new_blocks)
            if batch.invalid:
                db.executemany("DELETE FROM blocks WHERE hash = ?", [(h,) for h in batch.invalid])
                db.executemany("INSERT OR REPLACE INTO invalid (hash, reason) VALUES (?, ?)",
                               list(batch.invalid.items()))
            if batch.disconnected:
                db.executemany("DELETE FROM undo WHERE hash = ?",
                               [(h,) for h in batch.disconnected])
            if batch.undo_put:
                db.executemany("INSERT OR REPLACE INTO undo (hash, reward, data) VALUES (?, ?, ?)",
                               [(h, reward, pack_undo(u)) for h, u, reward in batch.undo_put])
            self._put_state(batch.state_put)
            meta = {}
            if batch.tip is not None:
                meta["tip"] = batch.tip
            if batch.minted is not None:
                meta["minted"] = batch.minted
            self._put_meta(**meta)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _put_blocks(self, blocks: list[tuple[Block, int]]) -> None:
        if blocks:
            self._db.executemany(
                "INSERT OR IGNORE INTO blocks (hash, height, prev, seq, wire) "
                "VALUES (?, ?, ?, ?, ?)",
                [(b.hash, b.height, b.header.prev, seq, _pack_plain(b.to_wire()))
                 for b, seq in blocks],
            )

    def _put_state(self, puts: dict[Key, Any]) -> None:
        dels, ups = [], []
        for k, v in puts.items():
            if v is MISSING:
                dels.append((pack_key(k),))
            else:
                ups.append((pack_key(k), _pack(v)))
        if dels:
            self._db.executemany("DELETE FROM state WHERE key = ?", dels)
        if ups:
            self._db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", ups)

    def _put_meta(self, **items: Any) -> None:
        if items:
            self._db.executemany("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)",
                                 [(k, _pack(v)) for k, v in items.items()])


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the body raises."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
