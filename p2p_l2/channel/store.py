"""What a channel node must never forget, in SQLite (WAL): its channels, the latest
state both sides signed, preimages, invoices and payments (DESIGN §2.4).

Every write commits before the caller goes on, so "persist before you sign or send" is
just "call the store first".  Rows hold msgpack blobs of the commitment module's wire forms.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack

SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (cid BLOB PRIMARY KEY, info BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS states (cid BLOB PRIMARY KEY, seq INTEGER NOT NULL, signed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS old_states (cid BLOB, seq INTEGER, signed BLOB, PRIMARY KEY (cid, seq));
CREATE TABLE IF NOT EXISTS preimages (hash BLOB PRIMARY KEY, preimage BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS invoices (hash BLOB PRIMARY KEY, info BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS payments (hash BLOB PRIMARY KEY, info BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS forwards (out_cid BLOB, out_id INTEGER, in_cid BLOB, in_id INTEGER,
                                     PRIMARY KEY (out_cid, out_id));
CREATE TABLE IF NOT EXISTS graph (cid BLOB PRIMARY KEY, ann BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS policies (cid BLOB, node BLOB, pol BLOB, ts REAL, PRIMARY KEY (cid, node));
CREATE TABLE IF NOT EXISTS tower (cid BLOB PRIMARY KEY, client TEXT, seq INTEGER, signed BLOB, info BLOB);
"""


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(blob: bytes):
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


class ChannelStore:
    def __init__(self, path: Path | str | None):
        self.db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._payments: dict[bytes, bytes] = {}  # queued rows: written with the next state

    def close(self) -> None:
        self.db.close()

    def _put(self, sql: str, *args) -> None:
        self.db.execute(sql, args)  # autocommit: durable once this returns

    # channels and their states
    def put_channel(self, cid: bytes, info: dict) -> None:
        self._put("INSERT OR REPLACE INTO channels VALUES (?, ?)", cid, _pack(info))

    def channels(self) -> dict[bytes, dict]:
        return {cid: _unpack(info) for cid, info in self.db.execute("SELECT cid, info FROM channels")}

    def put_state(self, cid: bytes, seq: int, signed_wire: dict) -> None:
        """The latest state both signed (durable when this returns), in one transaction with
        the payment records queued since the last write."""
        if not self._payments:
            self._put("INSERT OR REPLACE INTO states VALUES (?, ?, ?)", cid, seq, _pack(signed_wire))
            return
        self.db.execute("BEGIN")
        try:
            self._write_payments()
            self.db.execute("INSERT OR REPLACE INTO states VALUES (?, ?, ?)",
                            (cid, seq, _pack(signed_wire)))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _write_payments(self) -> None:
        rows, self._payments = list(self._payments.items()), {}
        self.db.executemany("INSERT OR REPLACE INTO payments VALUES (?, ?)", rows)

    def states(self) -> dict[bytes, dict]:
        return {cid: _unpack(b) for cid, _, b in self.db.execute("SELECT cid, seq, signed FROM states")}

    def put_first_state(self, cid: bytes, signed_wire: dict) -> None:
        """The channel's first state (seq 0), kept for good (what `close-stale` posts)."""
        self._put("INSERT OR IGNORE INTO old_states VALUES (?, 0, ?)", cid, _pack(signed_wire))

    def first_state(self, cid: bytes) -> dict | None:
        row = self.db.execute("SELECT signed FROM old_states WHERE cid = ? AND seq = 0",
                              (cid,)).fetchone()
        return _unpack(row[0]) if row else None

    # preimages, invoices, payments
    def put_preimage(self, h: bytes, preimage: bytes) -> None:
        self._put("INSERT OR REPLACE INTO preimages VALUES (?, ?)", h, preimage)

    def preimage(self, h: bytes) -> bytes | None:
        row = self.db.execute("SELECT preimage FROM preimages WHERE hash = ?", (h,)).fetchone()
        return row[0] if row else None

    def put_invoice(self, h: bytes, info: dict) -> None:
        self._put("INSERT OR REPLACE INTO invoices VALUES (?, ?)", h, _pack(info))

    def invoice(self, h: bytes) -> dict | None:
        row = self.db.execute("SELECT info FROM invoices WHERE hash = ?", (h,)).fetchone()
        return _unpack(row[0]) if row else None

    def queue_payment(self, h: bytes, info: dict) -> None:
        """A payment record, written with the next channel state (so a pending payment is
        on disk before its HTLC can leave) or by `flush`, whichever comes first."""
        self._payments[h] = _pack(info)

    def flush(self) -> None:
        if self._payments:
            self.db.execute("BEGIN")
            self._write_payments()
            self.db.execute("COMMIT")

    def payment(self, h: bytes) -> dict | None:
        queued = self._payments.get(h)
        if queued is not None:
            return _unpack(queued)
        row = self.db.execute("SELECT info FROM payments WHERE hash = ?", (h,)).fetchone()
        return _unpack(row[0]) if row else None

    def payments(self) -> dict[bytes, dict]:
        self.flush()
        return {h: _unpack(i) for h, i in self.db.execute("SELECT hash, info FROM payments")}

    # forwarded HTLCs: which incoming HTLC each outgoing one settles
    def put_forward(self, out_cid: bytes, out_id: int, in_cid: bytes, in_id: int) -> None:
        self._put("INSERT OR REPLACE INTO forwards VALUES (?, ?, ?, ?)", out_cid, out_id, in_cid, in_id)

    def drop_forward(self, out_cid: bytes, out_id: int) -> None:
        self._put("DELETE FROM forwards WHERE out_cid = ? AND out_id = ?", out_cid, out_id)

    def forwards(self) -> dict[tuple[bytes, int], tuple[bytes, int]]:
        return {(oc, oi): (ic, ii) for oc, oi, ic, ii in self.db.execute("SELECT * FROM forwards")}

    # the channel graph learned from gossip (so a restarted node can route at once)
    def put_announcement(self, cid: bytes, ann: dict) -> None:
        self._put("INSERT OR REPLACE INTO graph VALUES (?, ?)", cid, _pack(ann))

    def drop_announcement(self, cid: bytes) -> None:
        self._put("DELETE FROM graph WHERE cid = ?", cid)
        self._put("DELETE FROM policies WHERE cid = ?", cid)

    def put_policy(self, cid: bytes, node: bytes, pol: list, ts: float) -> None:
        self._put("INSERT OR REPLACE INTO policies VALUES (?, ?, ?, ?)", cid, node, _pack(pol), ts)

    def graph(self) -> tuple[list[dict], list[tuple[bytes, bytes, list, float]]]:
        anns = [_unpack(a) for (a,) in self.db.execute("SELECT ann FROM graph")]
        pols = [(c, n, _unpack(p), ts) for c, n, p, ts in self.db.execute("SELECT * FROM policies")]
        return anns, pols

    # watchtower
    def put_tower_state(self, cid: bytes, client: str, seq: int, signed_wire: dict, info: dict) -> None:
        self._put("INSERT OR REPLACE INTO tower VALUES (?, ?, ?, ?, ?)",
                  cid, client, seq, _pack(signed_wire), _pack(info))

    def tower_states(self) -> dict[bytes, tuple[str, int, dict, dict]]:
        return {cid: (client, seq, _unpack(s), _unpack(i))
                for cid, client, seq, s, i in self.db.execute("SELECT * FROM tower")}
