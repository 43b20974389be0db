"""The block tree: every valid block seen, the active chain, its state, fork choice (sans-IO).

Design: cheap header checks, then signature and Merkle root, then the parent; orphans wait
in a bounded pool.  Most blocks wins, first-seen on ties; a reorg undoes active blocks
(each keeps its Undo) to the fork point and applies the new branch tx by tx; a block that
fails is forgotten with its descendants, remembered as invalid, and the longest valid
chain stays.  With a store, each `add` is one sqlite transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2p_l2.chain import ledger
from p2p_l2.chain.block import Block, Header, genesis
from p2p_l2.chain.state import MISSING, State, Undo
from p2p_l2.chain.store import ChainStore, StoreBatch
from p2p_l2.errors import ConfigError

__all__ = ["AddResult", "BlockTree"]

_MAX_INVALID = 100_000  # remembered invalid hashes (oldest forgotten first)
_LOCATOR_DENSE = 10  # the locator lists this many consecutive blocks before doubling


@dataclass
class AddResult:
    """What one `BlockTree.add` did.

    status: "connected" (the block is on the active chain), "side" (valid so far, on a
    shorter or equal branch), "duplicate", "orphan" (parent unknown: request `missing`),
    "invalid" (`reason` says why).  `connected` / `disconnected` are the net change of the
    active chain (connected in height order, disconnected tip-first); one add may connect
    several blocks (orphans whose parent arrived)."""

    status: str
    reason: str | None = None
    connected: list[Block] = field(default_factory=list)
    disconnected: list[Block] = field(default_factory=list)
    reorg_depth: int = 0
    missing: bytes | None = None


class BlockTree:
    def __init__(
        self,
        net: str,
        accounts: dict[bytes, int],
        miners: set[bytes],
        *,
        max_block_txs: int = 1000,
        block_reward: int = 0,
        future_tolerance: float = 120.0,
        store: ChainStore | None = None,
        max_orphans: int = 1000,
    ):
        self.net = net
        self.miners = miners
        self.max_block_txs = max_block_txs
        self.block_reward = block_reward
        self.future_tolerance = future_tolerance
        self.max_orphans = max_orphans
        self.store = store
        self.genesis = genesis(net)
        self._genesis_supply = sum(accounts.values())
        g = self.genesis.hash
        self._blocks: dict[bytes, Block] = {g: self.genesis}
        self._seq: dict[bytes, int] = {g: 0}  # arrival order, for first-seen ties
        self._next_seq = 1
        self._children: dict[bytes, list[bytes]] = {}
        self._active: list[bytes] = [g]
        self._undo: dict[bytes, tuple[Undo, int]] = {}  # active block -> (undo, reward)
        self._tx_index: dict[bytes, int] = {}
        self._invalid: dict[bytes, str] = {}
        self._orphans: dict[bytes, Block] = {}  # insertion order = eviction order
        self._orphans_by_prev: dict[bytes, list[bytes]] = {}
        self._minted = 0
        self._batch: StoreBatch | None = None
        if store is None:
            self.state = ledger.genesis_state(accounts)
        else:
            self._open_store(store, accounts)

    # ------------------------------------------------------------------ queries

    @property
    def tip(self) -> Header:
        return self._blocks[self._active[-1]].header

    @property
    def height(self) -> int:
        return len(self._active) - 1

    def get(self, block_hash: bytes) -> Block | None:
        """A block of the tree (active or side branch); None for orphans and unknowns."""
        return self._blocks.get(block_hash)

    def block_at(self, height: int) -> Block | None:
        """The active chain's block at `height`."""
        if 0 <= height < len(self._active):
            return self._blocks[self._active[height]]
        return None

    def contains(self, block_hash: bytes) -> bool:
        """True if the block is in the tree or waiting in the orphan pool (no need to fetch)."""
        return block_hash in self._blocks or block_hash in self._orphans

    def is_invalid(self, block_hash: bytes) -> str | None:
        """The remembered reason if this block is known to be invalid."""
        return self._invalid.get(block_hash)

    def tx_height(self, txid: bytes) -> int | None:
        """Height of the active-chain block holding `txid`."""
        return self._tx_index.get(txid)

    def locator(self) -> list[bytes]:
        """Active-chain hashes: the tip, the next blocks back one by one, then at doubling
        distances, and always genesis last (Bitcoin's block locator)."""
        out = []
        h, step = self.height, 1
        while h > 0:
            out.append(self._active[h])
            if len(out) >= _LOCATOR_DENSE:
                step *= 2
            h -= step
        out.append(self._active[0])
        return out

    def blocks_after(self, locator: list[bytes], limit: int) -> list[Block]:
        """Up to `limit` active-chain blocks after the first locator hash on our active
        chain (after genesis if none is)."""
        start = 0
        for bh in locator:
            b = self._blocks.get(bh)
            if b is not None and self._on_active(bh):
                start = b.height
                break
        return [self._blocks[bh] for bh in self._active[start + 1 : start + 1 + max(0, limit)]]

    def supply(self) -> dict[str, int]:
        """Coin accounting at the tip: genesis + rewards must equal balances + locked."""
        return {
            "genesis": self._genesis_supply,
            "rewards": self._minted,
            "balances": ledger.total_balances(self.state),
            "locked": ledger.total_locked(self.state),
        }

    def statistics(self) -> dict[str, int]:
        return {
            "height": self.height,
            "blocks": len(self._blocks),
            "orphans": len(self._orphans),
            "invalid": len(self._invalid),
            "txs": len(self._tx_index),
        }

    # ------------------------------------------------------------------ add

    def add(self, block: Block, now: float) -> AddResult:
        """Offer a block: validate it, attach it (and any orphans waiting for it) and move
        the active chain to the longest valid branch."""
        h = block.hash
        known = self._invalid.get(h)
        if known is not None:
            return AddResult("invalid", known)
        if h in self._blocks:
            return AddResult("duplicate")
        if h in self._orphans:
            return AddResult("duplicate", missing=self._missing_root(self._orphans[h]))
        reason = self._check_alone(block, now)
        if reason is not None:
            return AddResult("invalid", reason)  # not remembered: may be a forgery
        prev = block.header.prev
        self._batch = StoreBatch()
        try:
            if prev in self._invalid:
                self._mark_invalid(h, "invalid_parent")
                self._persist()
                return AddResult("invalid", "invalid_parent")
            if prev not in self._blocks:
                self._add_orphan(block)
                return AddResult("orphan", missing=self._missing_root(block))
            reason = self._attach(block)
            if reason is not None:
                self._mark_invalid(h, reason)
                self._persist()
                return AddResult("invalid", reason)
            attached = [h]
            queue = [h]
            while queue:  # orphans waiting for this block (and for them, ...)
                for oh in self._orphans_by_prev.pop(queue.pop(), ()):
                    ob = self._orphans.pop(oh)
                    r = self._attach(ob)
                    if r is None:
                        attached.append(oh)
                        queue.append(oh)
                    else:
                        self._mark_invalid(oh, r)
            old_tip = self._active[-1]
            self._choose_best(attached)
            connected, disconnected = self._diff_from(old_tip)
            self._batch.connected = connected
            self._batch.disconnected = disconnected
            self._persist()
        finally:
            self._batch = None
        known = self._invalid.get(h)
        if known is not None:
            status = "invalid"
        elif self._on_active(h):
            status = "connected"
        else:
            status = "side"
        return AddResult(
            status, known,
            [self._blocks[x] for x in connected],
            [self._blocks[x] for x in disconnected],
            len(disconnected),
        )

    # ------------------------------------------------------------------ checks

    def _check_alone(self, block: Block, now: float) -> str | None:
        """Checks that need no parent, cheapest first.  Failures here are not remembered:
        the signature and the txs are not covered by the block hash, so a forged copy must
        not blacklist the genuine block (and a future time becomes valid later).  What fails
        after these checks passed is the miner's own doing and is remembered by hash."""
        hd = block.header
        if hd.miner not in self.miners:
            return "unknown_miner"
        if hd.height == 0:
            return "bad_height"  # there is one genesis, and it is built, not received
        if len(block.txs) > self.max_block_txs:
            return "too_many_txs"
        if hd.time > now + self.future_tolerance:
            return "bad_time"
        if not block.verify_sig():
            return "bad_signature"
        if not block.merkle_ok():
            return "bad_merkle"
        # txids do not cover signatures: a copy with one tx signature swapped must fail here,
        # unremembered, or it would blacklist the genuine block.  (Cached: each tx is
        # verified once, at mempool admission or here.)
        if not all(tx.verify() for tx in block.txs):
            return "invalid_tx:bad_signature"
        return None

    def _attach(self, block: Block) -> str | None:
        """Check a block against its (known, valid) parent and add it to the tree."""
        hd = block.header
        parent = self._blocks[hd.prev].header
        if hd.height != parent.height + 1:
            return "bad_height"
        if hd.time < parent.time - self.future_tolerance:
            return "bad_time"
        h = block.hash
        self._blocks[h] = block
        if h not in self._seq:
            self._seq[h] = self._next_seq
            self._next_seq += 1
        self._children.setdefault(hd.prev, []).append(h)
        if self._batch is not None:
            self._batch.new_blocks.append((block, self._seq[h]))
        return None

    # ------------------------------------------------------------------ orphans

    def _add_orphan(self, block: Block) -> None:
        if self.max_orphans <= 0:
            return
        while len(self._orphans) >= self.max_orphans:
            old = next(iter(self._orphans))
            ob = self._orphans.pop(old)
            self._seq.pop(old, None)
            sibs = self._orphans_by_prev.get(ob.header.prev)
            if sibs is not None:
                sibs.remove(old)
                if not sibs:
                    del self._orphans_by_prev[ob.header.prev]
        h = block.hash
        self._orphans[h] = block
        self._seq[h] = self._next_seq
        self._next_seq += 1
        self._orphans_by_prev.setdefault(block.header.prev, []).append(h)

    def _missing_root(self, b: Block) -> bytes:
        """The unknown ancestor of an orphan (follow parents through the pool)."""
        while b.header.prev in self._orphans:
            b = self._orphans[b.header.prev]
        return b.header.prev

    # ------------------------------------------------------------------ invalid

    def _mark_invalid(self, h: bytes, reason: str) -> None:
        """Forget `h` and all its descendants (tree and orphan pool); remember them invalid."""
        b = self._blocks.get(h)
        if b is not None:
            sibs = self._children.get(b.header.prev)
            if sibs is not None and h in sibs:
                sibs.remove(h)
        todo = [(h, reason)]
        while todo:
            x, why = todo.pop()
            assert not self._on_active(x), "an active block cannot become invalid"
            self._blocks.pop(x, None)
            self._orphans.pop(x, None)
            self._seq.pop(x, None)
            self._remember_invalid(x, why)
            for c in self._children.pop(x, ()):
                todo.append((c, "invalid_parent"))
            for c in self._orphans_by_prev.pop(x, ()):
                todo.append((c, "invalid_parent"))

    def _remember_invalid(self, h: bytes, reason: str) -> None:
        if len(self._invalid) >= _MAX_INVALID:
            del self._invalid[next(iter(self._invalid))]
        self._invalid[h] = reason
        if self._batch is not None:
            self._batch.invalid[h] = reason

    # ------------------------------------------------------------------ fork choice

    def _on_active(self, h: bytes) -> bool:
        b = self._blocks.get(h)
        return b is not None and b.height < len(self._active) and self._active[b.height] == h

    def _choose_best(self, candidates: list[bytes]) -> None:
        """Move to the highest valid candidate above the tip (earliest seen on ties).
        Before this add, no valid block was above the tip, so the candidates are the
        blocks attached by this add."""
        while True:
            best, best_key = None, None
            for c in candidates:
                b = self._blocks.get(c)
                if b is None or b.height <= self.height:
                    continue
                key = (-b.height, self._seq[c])
                if best_key is None or key < best_key:
                    best, best_key = c, key
            if best is None:
                return
            self._switch_to(best)

    def _switch_to(self, target: bytes) -> None:
        """Reorg to `target`; on an invalid block, mark it and end on the longest valid
        chain (the old one unless the new branch's valid part is longer)."""
        path = []
        x = target
        while not self._on_active(x):
            path.append(x)
            x = self._blocks[x].header.prev
        path.reverse()
        fork_height = self._blocks[x].height
        old_height = self.height
        saved = []
        try:
            while self.height > fork_height:
                saved.append(self._disconnect_tip())
            for bh in path:
                reason = self._connect(self._blocks[bh])
                if reason is not None:
                    if self.height <= old_height:
                        self._restore(fork_height, saved)
                    self._mark_invalid(bh, reason)
                    return
        except BaseException:
            self._restore(fork_height, saved)  # a bug must not leave a half-switched chain
            raise

    def _restore(self, fork_height: int, saved: list) -> None:
        while self.height > fork_height:
            self._disconnect_tip()
        for entry in reversed(saved):
            self._reconnect(entry)

    def _diff_from(self, old_tip: bytes) -> tuple[list[bytes], list[bytes]]:
        """(connected, disconnected) hashes between the chain that ended at `old_tip` and
        the active chain now."""
        disconnected = []
        x = old_tip
        while not self._on_active(x):
            disconnected.append(x)
            x = self._blocks[x].header.prev
        fork = self._blocks[x].height
        return self._active[fork + 1 :], disconnected

    # ------------------------------------------------------------------ connect / disconnect

    def _connect(self, block: Block) -> str | None:
        """Apply a block on the tip; returns the invalid_tx reason (state unchanged) or None."""
        state = self.state
        hd = block.header
        height, miner, net = hd.height, hd.miner, self.net
        apply_tx = ledger.apply_tx
        state.begin()
        try:
            for tx in block.txs:
                apply_tx(state, tx, height, miner, net=net)
            if self.block_reward:
                ledger.apply_reward(state, miner, self.block_reward)
        except ledger.TxRejected as exc:
            state.abort()
            return f"invalid_tx:{exc.reason}"
        except BaseException:
            state.abort()
            raise
        # keep each key's first old value only: reverting the block needs nothing else,
        # and it shrinks a 5,000-transfer block's undo from 20,000 entries to ~2 per account
        undo = list(dict(reversed(state.commit())).items())
        self._push(block, undo, self.block_reward)
        return None

    def _push(self, block: Block, undo: Undo, reward: int) -> None:
        h = block.hash
        self._active.append(h)
        self._undo[h] = (undo, reward)
        self._minted += reward
        height = block.height
        idx = self._tx_index
        for tx in block.txs:
            idx[tx.txid] = height
        if self._batch is not None:
            self._batch.touched.update(State.touched(undo))

    def _disconnect_tip(self) -> tuple[Block, Undo, int, dict]:
        """Undo the tip block; returns what `_reconnect` needs to put it back exactly."""
        h = self._active.pop()
        block = self._blocks[h]
        undo, reward = self._undo.pop(h)
        kv = self.state.kv
        touched = State.touched(undo)
        redo = {k: kv.get(k, MISSING) for k in touched}
        self.state.undo(undo)
        self._minted -= reward
        idx = self._tx_index
        for tx in block.txs:
            idx.pop(tx.txid, None)
        if self._batch is not None:
            self._batch.touched.update(touched)
        return block, undo, reward, redo

    def _reconnect(self, entry: tuple[Block, Undo, int, dict]) -> None:
        block, undo, reward, redo = entry
        kv = self.state.kv
        for k, v in redo.items():
            if v is MISSING:
                kv.pop(k, None)
            else:
                kv[k] = v
        self._push(block, undo, reward)

    # ------------------------------------------------------------------ persistence

    def _open_store(self, store: ChainStore, accounts: dict[bytes, int]) -> None:
        snap = store.load()
        if snap is None:  # a new database: genesis block, genesis state, meta
            self.state = ledger.genesis_state(accounts)
            store.init(self.net, self.genesis, self.state.kv)
            return
        if snap.net != self.net or snap.genesis != self.genesis.hash:
            raise ConfigError(str(store.path), "net", f"network {snap.net!r}", self.net)
        for block, seq in snap.blocks:  # in seq order, so parents come first
            h = block.hash
            if h == self.genesis.hash:
                continue
            self._blocks[h] = block
            self._seq[h] = seq
            self._children.setdefault(block.header.prev, []).append(h)
        self._next_seq = max(self._seq.values()) + 1
        chain = []
        x = snap.tip
        while x != self.genesis.hash:
            chain.append(x)
            x = self._blocks[x].header.prev
        chain.reverse()
        self._active = [self.genesis.hash, *chain]
        for h in chain:
            self._undo[h] = snap.undos[h]
            for tx in self._blocks[h].txs:
                self._tx_index[tx.txid] = self._blocks[h].height
        self._minted = snap.minted
        self._invalid = dict(snap.invalid)
        self.state = State(snap.kv)

    def _persist(self) -> None:
        store, batch = self.store, self._batch
        if store is None or batch is None:
            return
        # blocks attached and then found invalid in this same add are not written
        batch.new_blocks = [(b, s) for b, s in batch.new_blocks if b.hash in self._blocks]
        batch.undo_put = [(h, *self._undo[h]) for h in batch.connected]
        kv = self.state.kv
        batch.state_put = {k: kv.get(k, MISSING) for k in batch.touched}
        batch.tip = self._active[-1]
        batch.minted = self._minted
        store.write(batch)

    def __repr__(self) -> str:
        return f"BlockTree(net={self.net!r}, height={self.height}, tip={self.tip.hash.hex()[:16]})"
