"""The mempool: bounded, per-sender nonce order, replace-by-fee, expiry (sans-IO).

Design: txs indexed by txid (admission = expiry order) and by sender -> nonce, plus two
lazy heaps: all txs by fee (`select` pops a copy, parking a tx until its predecessor is
taken) and senders' last txs by fee (the eviction victims); dead entries are skipped.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from .ledger import apply_tx, check_static
from .state import State
from .tx import Tx, TxRejected

__all__ = ["MAX_PENDING_PER_SENDER", "Mempool", "REASONS"]

MAX_PENDING_PER_SENDER = 64  # a tx's nonce must be < state nonce + this
_NEVER = 2**64  # a "next nonce" no tx has: the sender is blocked for this selection

# Stable rejection codes of `add`, on top of the ledger's static ones.
REASONS = (
    "duplicate",
    "wrong_network",
    "malformed",
    "bad_amount",
    "unknown_contract",
    "unknown_method",
    "fee_too_low",
    "bad_nonce",
    "nonce_gap_too_large",
    "replacement_fee_too_low",
    "insufficient_funds",
    "mempool_full",
    "bad_signature",
)


_SEQ_BITS = 48  # heap keys pack (fee, seq) into one int: ints compare faster than tuples


class _Entry:
    __slots__ = ("tx", "seq", "time", "live")

    def __init__(self, tx: Tx, seq: int, time: float):
        self.tx, self.seq, self.time, self.live = tx, seq, time, True


class Mempool:
    """Pending txs awaiting a block.  `add` admits or raises TxRejected(reason); `select`
    proposes a block's txs; the chain reports blocks with `remove_included`/`revalidate`
    and reorgs with `readd`."""

    def __init__(
        self, max_size: int = 50_000, expiry: float = 600.0, min_fee: int = 0, net: str = ""
    ):
        self.max_size, self.expiry, self.min_fee, self.net = max_size, expiry, min_fee, net
        self._by_id: dict[bytes, _Entry] = {}  # admission order
        self._senders: dict[bytes, dict[int, _Entry]] = {}  # sender -> nonce -> entry
        self._cost: dict[bytes, int] = {}  # sender -> sum of amount + fee pending
        # (key, entry) min-heaps; entries that are no longer live are skipped when popped
        self._best: list[tuple[int, _Entry]] = []  # all txs, highest fee then oldest first
        self._tails: list[tuple[int, _Entry]] = []  # senders' last txs, lowest fee then newest
        self._seq = 0

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self._by_id

    def get(self, txid: bytes) -> Tx | None:
        e = self._by_id.get(txid)
        return e.tx if e is not None else None

    def txids(self) -> list[bytes]:
        return list(self._by_id)

    def next_nonce(self, state: State, sender: bytes) -> int:
        """The nonce a new tx from `sender` should use: the first one after its state nonce
        with nothing pending."""
        n = state.nonce(sender)
        pending = self._senders.get(sender, {})
        while n in pending:
            n += 1
        return n

    def statistics(self) -> dict:
        return {"size": len(self._by_id), "senders": len(self._senders), "max_size": self.max_size}

    # -- admission -------------------------------------------------------------------------
    def add(self, tx: Tx, state: State, now: float) -> list[Tx]:
        """Admit `tx` against `state`; returns the txs it replaced or evicted."""
        txid = tx.txid
        if txid in self._by_id:
            raise TxRejected("duplicate", txid.hex())
        check_static(tx, self.net)
        if tx.fee < self.min_fee:
            raise TxRejected("fee_too_low", f"fee {tx.fee} < {self.min_fee}")
        sender, nonce = tx.sender, tx.nonce
        base = state.nonce(sender)
        if nonce < base:
            raise TxRejected("bad_nonce", f"nonce {nonce} < account nonce {base}")
        if nonce - base >= MAX_PENDING_PER_SENDER:
            raise TxRejected("nonce_gap_too_large", f"nonce {nonce}, account nonce {base}")
        pending = self._senders.get(sender)
        old = pending.get(nonce) if pending else None
        if old is not None and tx.fee <= old.tx.fee:
            raise TxRejected("replacement_fee_too_low", f"fee {tx.fee} <= pending {old.tx.fee}")
        total = self._cost.get(sender, 0) + tx.amount + tx.fee
        if old is not None:
            total -= old.tx.amount + old.tx.fee
        balance = state.balance(sender)
        if total > balance:
            raise TxRejected("insufficient_funds", f"balance {balance} < pending cost {total}")
        victim = None
        if old is None and len(self._by_id) >= self.max_size:
            victim = self._cheapest_tail()
            if (
                victim is None
                or tx.fee <= victim.tx.fee
                or (victim.tx.sender == sender and victim.tx.nonce < nonce)
            ):
                raise TxRejected("mempool_full", f"{len(self._by_id)} txs, fee {tx.fee} too low")
        if not tx.verify():
            raise TxRejected("bad_signature", txid.hex())

        out = []
        for e in (old, victim):
            if e is not None:
                self._remove(e)
                out.append(e.tx)
        self._insert(tx, now)
        return out

    def readd(self, txs: Iterable[Tx], state: State, now: float) -> list[Tx]:
        """Return a reorg's orphaned txs (in block order); those no longer valid are
        skipped.  Returns the txs evicted to make room."""
        out: list[Tx] = []
        for tx in txs:
            try:
                out += self.add(tx, state, now)
            except TxRejected:
                pass
        return out

    # -- selection -------------------------------------------------------------------------
    def select(self, state: State, max_txs: int, height: int | None = None) -> list[Tx]:
        """Up to `max_txs` txs executable in order from `state`: highest fee first, each
        sender's in nonce order from its state nonce, and each sender able to pay for all
        of its selected txs from its balance in `state`.

        That makes transfers certain to apply; a contract call may still fail on contract
        state.  Given the `height` of the block being built, a selection with calls is
        dry-run on `state` (then rolled back) and a failing tx is left out together with its
        sender's later ones, so the result applies cleanly."""
        out = self._select(state, max_txs)
        if height is None or all(tx.kind == "transfer" for tx in out):
            return out
        return self._dry_run(state, out, height)

    def _select(self, state: State, max_txs: int) -> list[Tx]:
        heap = self._best.copy()  # a copy of a heap is a heap
        expect: dict[bytes, int] = {}  # sender -> the nonce it needs next
        left: dict[bytes, int] = {}  # sender -> balance not yet spent by this selection
        parked: dict[bytes, dict[int, tuple]] = {}  # sender -> nonce -> heap item
        out: list[Tx] = []
        pop, push = heapq.heappop, heapq.heappush
        while heap and len(out) < max_txs:
            item = pop(heap)
            e = item[1]
            if not e.live:
                continue  # removed or replaced since it was pushed
            tx = e.tx
            sender, nonce = tx.sender, tx.nonce
            want = expect.get(sender)
            if want is None:
                want = expect[sender] = state.nonce(sender)
                left[sender] = state.balance(sender)
            if nonce != want:
                if nonce > want and want != _NEVER:
                    parked.setdefault(sender, {})[nonce] = item
                continue
            cost = tx.amount + tx.fee
            if cost > left[sender]:
                expect[sender] = _NEVER
                continue
            left[sender] -= cost
            expect[sender] = nonce + 1
            out.append(tx)
            waiting = parked.get(sender)
            if waiting:
                item = waiting.pop(nonce + 1, None)
                if item is not None:
                    push(heap, item)
        return out

    def _dry_run(self, state: State, txs: list[Tx], height: int) -> list[Tx]:
        own_journal = not state.journaling
        if own_journal:
            state.begin()
        mark = state.savepoint()
        kept: list[Tx] = []
        failed: set[bytes] = set()
        try:
            for tx in txs:
                if tx.sender in failed:
                    continue
                try:
                    apply_tx(state, tx, height, None, net=self.net, check_sig=False)
                except TxRejected:
                    failed.add(tx.sender)
                else:
                    kept.append(tx)
        finally:
            state.rollback_to(mark)
            if own_journal:
                state.abort()
        return kept

    # -- removal ---------------------------------------------------------------------------
    def remove_included(self, txs: Iterable[Tx]) -> None:
        """Forget the txs of a connected block, and any pending tx at the same sender and
        nonce (a conflicting version lost)."""
        senders = self._senders
        for tx in txs:
            pending = senders.get(tx.sender)
            if pending:
                e = pending.get(tx.nonce)
                if e is not None:
                    self._remove(e)

    def revalidate(self, state: State) -> list[Tx]:
        """Drop txs whose nonce is now below their sender's nonce in `state` (after a block
        or a reorg); returns them."""
        out = []
        for sender, pending in list(self._senders.items()):
            base = state.nonce(sender)
            for nonce in [n for n in pending if n < base]:
                e = pending[nonce]
                self._remove(e)
                out.append(e.tx)
        return out

    def discard(self, txid: bytes) -> list[Tx]:
        """Drop a tx and the same sender's later ones (e.g. it failed when building a
        block); returns what was dropped."""
        e = self._by_id.get(txid)
        if e is None:
            return []
        return self._remove_from(e.tx.sender, e.tx.nonce)

    def expire(self, now: float) -> list[Tx]:
        """Drop txs admitted `expiry` seconds ago or earlier, with their senders' later
        txs (which cannot run without them); returns everything dropped."""
        deadline = now - self.expiry
        old = []
        for e in self._by_id.values():  # admission order
            if e.time > deadline:
                break
            old.append(e)
        out: list[Tx] = []
        for e in old:
            if e.live:
                out += self._remove_from(e.tx.sender, e.tx.nonce)
        return out

    # -- internals -------------------------------------------------------------------------
    def _insert(self, tx: Tx, now: float) -> None:
        self._seq += 1
        e = _Entry(tx, self._seq, now)
        sender = tx.sender
        self._by_id[tx.txid] = e
        pending = self._senders.get(sender)
        if pending is None:
            pending = self._senders[sender] = {}
        is_tail = not pending or tx.nonce > max(pending)
        pending[tx.nonce] = e
        self._cost[sender] = self._cost.get(sender, 0) + tx.amount + tx.fee
        heapq.heappush(self._best, (e.seq - (tx.fee << _SEQ_BITS), e))
        if len(self._best) > 2 * len(self._by_id) + 1024:  # sweep out dead entries
            self._best = [(x.seq - (x.tx.fee << _SEQ_BITS), x) for x in self._by_id.values()]
            heapq.heapify(self._best)
        if is_tail:
            self._push_tail(e)

    def _push_tail(self, e: _Entry) -> None:
        heapq.heappush(self._tails, ((e.tx.fee << _SEQ_BITS) - e.seq, e))
        if len(self._tails) > 2 * len(self._senders) + 1024:
            self._tails = [
                ((t.tx.fee << _SEQ_BITS) - t.seq, t)
                for t in (p[max(p)] for p in self._senders.values())
            ]
            heapq.heapify(self._tails)

    def _remove(self, e: _Entry) -> None:
        tx = e.tx
        sender, nonce = tx.sender, tx.nonce
        e.live = False
        del self._by_id[tx.txid]
        pending = self._senders[sender]
        del pending[nonce]
        if pending:
            self._cost[sender] -= tx.amount + tx.fee
            if nonce + 1 not in pending and nonce > max(pending):
                self._push_tail(pending[max(pending)])  # it is the sender's last tx now
        else:
            del self._senders[sender]
            del self._cost[sender]

    def _remove_from(self, sender: bytes, nonce: int) -> list[Tx]:
        pending = self._senders.get(sender, {})
        out = []
        for n in sorted(n for n in pending if n >= nonce):  # lowest first: one tail push
            e = pending[n]
            self._remove(e)
            out.append(e.tx)
        return out

    def _cheapest_tail(self) -> _Entry | None:
        """The lowest-fee tx that no other pending tx depends on (newest first on ties)."""
        tails = self._tails
        while tails:
            e = tails[0][1]
            if e.live and e.tx.nonce == max(self._senders[e.tx.sender]):
                return e
            heapq.heappop(tails)
        return None
