"""The mempool, driven synchronously against a ledger State."""

from __future__ import annotations

import time

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from p2p_l2.chain.ledger import TxRejected, apply_tx, genesis_state
from p2p_l2.chain.mempool import MAX_PENDING_PER_SENDER, Mempool
from p2p_l2.chain.state import State
from p2p_l2.chain import tx as txmod
from p2p_l2.chain.tx import SigCache, Tx, call, transfer
from p2p_l2.wire.identity import Identity

NET = "testnet"
USERS = [Identity.derive(2, f"user{i}") for i in range(5)]
A, B, C, D, E = USERS
M = Identity.derive(2, "miner")
SINK = Identity.derive(2, "sink").pubkey


@pytest.fixture
def state() -> State:
    return genesis_state({u.pubkey: 1000 for u in USERS})


def pay(who: Identity, nonce: int, fee: int = 1, amount: int = 1) -> Tx:
    return transfer(who, NET, SINK, amount, nonce, fee=fee)


def rejects(pool: Mempool, tx: Tx, state: State, reason: str, now: float = 0.0) -> None:
    before = pool.txids()
    with pytest.raises(TxRejected) as info:
        pool.add(tx, state, now)
    assert info.value.reason == reason, info.value
    assert pool.txids() == before


def check_pool(pool: Mempool, state: State | None = None, height: int = 1) -> None:
    """Internal consistency of the indexes, and (given a state) that `select` applies."""
    live = list(pool._by_id.values())
    assert len(pool) == len(live) == sum(len(p) for p in pool._senders.values())
    for sender, pending in pool._senders.items():
        assert pending
        assert all(e.tx.sender == sender and e.tx.nonce == n for n, e in pending.items())
        assert pool._cost[sender] == sum(e.tx.amount + e.tx.fee for e in pending.values())
    assert set(pool._cost) == set(pool._senders)
    assert all(e.live for e in live)
    assert {id(e) for _, e in pool._best if e.live} == {id(e) for e in live}
    tails = {id(p[max(p)]) for p in pool._senders.values()}
    assert tails <= {id(e) for _, e in pool._tails if e.live}
    if state is not None:
        before = dict(state.kv)
        chosen = pool.select(state, len(pool) + 1, height)
        assert state.kv == before  # the dry run left no trace
        scratch = State(dict(state.kv))
        for tx in chosen:
            apply_tx(scratch, tx, height, M.pubkey, net=NET)


# ------------------------------------------------------------------ admission


def test_rejection_reasons(state):
    pool = Mempool(net=NET, min_fee=1)
    t0 = pay(A, 0)
    assert pool.add(t0, state, 0.0) == []
    rejects(pool, t0, state, "duplicate")
    rejects(pool, transfer(A, "other", SINK, 1, 1), state, "wrong_network")
    unsigned = Tx(NET, "transfer", A.pubkey, 1, 1, to=SINK, amount=1, sig=b"\0" * 64)
    rejects(pool, unsigned, state, "bad_signature")
    rejects(pool, pay(A, 1, fee=0), state, "fee_too_low")
    rejects(pool, transfer(A, NET, SINK, 0, 1), state, "bad_amount")
    rejects(pool, call(A, NET, "nope", "m", None, 1), state, "unknown_contract")
    rejects(pool, call(A, NET, "escrow", "m", None, 1), state, "unknown_method")
    rejects(pool, pay(A, MAX_PENDING_PER_SENDER), state, "nonce_gap_too_large")
    pool.add(pay(A, MAX_PENDING_PER_SENDER - 1), state, 0.0)  # a gap is fine within the window
    rejects(pool, pay(A, 0, fee=1, amount=2), state, "replacement_fee_too_low")
    rejects(pool, pay(A, 1, fee=1, amount=997), state, "insufficient_funds")  # 2 + 2 + 998 > 1000
    pool.add(pay(A, 1, fee=1, amount=995), state, 0.0)  # 2 + 2 + 996 == 1000
    check_pool(pool)

    scratch = State(dict(state.kv))
    apply_tx(scratch, t0, 1, None, net=NET)
    rejects(pool, pay(A, 0, fee=5), scratch, "bad_nonce")


def test_replace_by_fee(state):
    pool = Mempool(net=NET)
    old = pay(A, 0, fee=2)
    pool.add(old, state, 0.0)
    pool.add(pay(A, 1, fee=2), state, 0.0)
    rejects(pool, pay(A, 0, fee=2, amount=5), state, "replacement_fee_too_low")
    rejects(pool, pay(A, 0, fee=3, amount=996), state, "insufficient_funds")  # 999 + 3 > 1000
    new = pay(A, 0, fee=3, amount=5)
    assert pool.add(new, state, 1.0) == [old]
    assert old.txid not in pool and pool.get(new.txid) is new and len(pool) == 2
    assert pool.select(state, 10)[0] is new
    check_pool(pool, state)


def test_select_orders_by_fee_with_nonce_order_per_sender(state):
    pool = Mempool(net=NET)
    a0, a1, b0 = pay(A, 0, fee=1), pay(A, 1, fee=10), pay(B, 0, fee=5)
    c0, c1 = pay(C, 0, fee=5), pay(C, 1, fee=5)
    for tx in (a1, a0, b0, c0, c1):
        pool.add(tx, state, 0.0)
    # a1 pays most but needs a0 first; b0 and c0 tie on fee: first seen first.
    assert pool.select(state, 10) == [b0, c0, c1, a0, a1]
    assert pool.select(state, 2) == [b0, c0]
    assert pool.select(state, 0) == []
    check_pool(pool, state)


def test_select_only_takes_executable_txs(state):
    pool = Mempool(net=NET)
    a0, a2 = pay(A, 0), pay(A, 2, fee=9)
    b0, b1 = pay(B, 0, amount=600), pay(B, 1, fee=9, amount=300)
    for tx in (a0, a2, b0, b1):
        pool.add(tx, state, 0.0)
    assert pool.select(state, 10) == [a0, b0, b1]  # a2 waits for nonce 1, b1 for b0
    a1 = pay(A, 1)
    pool.add(a1, state, 0.0)
    assert pool.select(state, 10) == [a0, b0, b1, a1, a2]
    poorer = State(dict(state.kv))
    poorer.set(("bal", B.pubkey), 700)  # e.g. after a reorg: b0 fits, b1 no longer does
    assert pool.select(poorer, 10) == [a0, b0, a1, a2]
    poorer.set(("bal", B.pubkey), 100)
    assert pool.select(poorer, 10) == [a0, a1, a2]
    check_pool(pool, state)


def test_queries_next_nonce_and_discard(state):
    pool = Mempool(net=NET)
    txs = [pay(A, n) for n in (0, 1, 2, 4)]
    for tx in txs:
        pool.add(tx, state, 0.0)
    assert len(pool) == 4 and txs[1].txid in pool and pool.get(txs[1].txid) is txs[1]
    assert pool.txids() == [t.txid for t in txs] and pool.get(b"x" * 32) is None
    assert pool.next_nonce(state, A.pubkey) == 3 and pool.next_nonce(state, B.pubkey) == 0
    assert pool.discard(txs[1].txid) == txs[1:]  # and everything that depended on it
    assert pool.discard(txs[1].txid) == [] and pool.txids() == [txs[0].txid]
    assert pool.statistics()["size"] == 1
    check_pool(pool, state)


def test_select_dry_runs_contract_calls_at_the_given_height(state):
    pool = Mempool(net=NET)
    args = {"to": B.pubkey, "unlock_height": 10}
    lock = call(A, NET, "escrow", "lock", args, 0, fee=5, amount=50)
    claim = call(B, NET, "escrow", "claim", {"id": lock.txid}, 0, fee=2)
    b1 = pay(B, 1, fee=9)
    for tx in (lock, claim, b1):
        pool.add(tx, state, 0.0)
    assert pool.select(state, 10) == [lock, claim, b1]  # without a height: not checked
    before = dict(state.kv)
    assert pool.select(state, 10, height=5) == [lock]  # too early: b1 depends on the claim
    assert pool.select(state, 10, height=10) == [lock, claim, b1]
    state.begin()  # inside an open journal too
    assert pool.select(state, 10, height=5) == [lock]
    assert state.kv == before and state.journaling and state.commit() == []
    check_pool(pool, state, height=10)


# ------------------------------------------------------------------ bounds


def test_full_pool_evicts_the_cheapest_tx_without_dependents(state):
    pool = Mempool(max_size=3, net=NET)
    a0, a1, b0 = pay(A, 0, fee=1), pay(A, 1, fee=9), pay(B, 0, fee=2)
    for tx in (a0, a1, b0):
        pool.add(tx, state, 0.0)
    rejects(pool, pay(C, 0, fee=2), state, "mempool_full")  # not above the cheapest tail (b0)
    c0 = pay(C, 0, fee=3)
    assert pool.add(c0, state, 0.0) == [b0]  # a0 is cheaper but a1 depends on it
    assert pool.add(pay(A, 1, fee=10), state, 0.0) == [a1]  # RBF needs no room
    d0 = pay(D, 0, fee=4)
    assert pool.add(d0, state, 0.0) == [c0]
    assert len(pool) == 3
    check_pool(pool, state)


def test_full_pool_keeps_a_senders_own_parent(state):
    pool = Mempool(max_size=2, net=NET)
    pool.add(pay(A, 0, fee=1), state, 0.0)
    pool.add(pay(B, 0, fee=5), state, 0.0)
    rejects(pool, pay(A, 1, fee=10), state, "mempool_full")  # would evict its own nonce 0
    b1 = pay(B, 1, fee=1)
    rejects(pool, b1, state, "mempool_full")


def test_expire_drops_old_txs_and_their_dependents(state):
    pool = Mempool(expiry=600.0, net=NET)
    a0, b0, a1, c0 = pay(A, 0), pay(B, 0), pay(A, 1), pay(C, 0)
    pool.add(a0, state, 0.0)
    pool.add(b0, state, 5.0)
    pool.add(a1, state, 10.0)
    pool.add(c0, state, 700.0)
    assert pool.expire(599.0) == []
    assert pool.expire(600.0) == [a0, a1]  # a1 cannot run without a0
    assert pool.expire(605.0) == [b0]
    assert pool.txids() == [c0.txid]
    check_pool(pool, state)


def test_replacement_restarts_the_expiry_clock(state):
    pool = Mempool(expiry=100.0, net=NET)
    pool.add(pay(A, 0, fee=1), state, 0.0)
    new = pay(A, 0, fee=2)
    pool.add(new, state, 50.0)
    assert pool.expire(120.0) == [] and pool.expire(150.0) == [new]


# ------------------------------------------------------------------ blocks and reorgs


def mine(pool: Mempool, state: State, max_txs: int, height: int = 1):
    """Select, apply as a block, tell the pool; returns (txs, undo)."""
    txs = pool.select(state, max_txs, height)
    state.begin()
    for tx in txs:
        apply_tx(state, tx, height, M.pubkey, net=NET)
    undo = state.commit()
    pool.remove_included(txs)
    pool.revalidate(state)
    return txs, undo


def test_blocks_remove_included_and_conflicting_txs(state):
    pool = Mempool(net=NET)
    a0, a1, b0 = pay(A, 0, fee=3), pay(A, 1, fee=3), pay(B, 0, fee=1)
    for tx in (a0, a1, b0):
        pool.add(tx, state, 0.0)
    txs, _ = mine(pool, state, 2)
    assert txs == [a0, a1] and pool.txids() == [b0.txid]
    # another node's block spent B's nonce 0 with a different tx
    other = pay(B, 0, fee=1, amount=2)
    state.begin()
    apply_tx(state, other, 2, M.pubkey, net=NET)
    state.commit()
    pool.remove_included([other])
    assert len(pool) == 0
    # revalidate alone also drops what the chain made stale
    b1 = pay(B, 1)
    pool.add(b1, state, 0.0)
    state.set(("nonce", B.pubkey), 2)
    assert pool.revalidate(state) == [b1] and len(pool) == 0
    check_pool(pool, state)


def test_readd_after_reorg(state):
    pool = Mempool(net=NET)
    txs = [pay(A, 0, fee=2), pay(A, 1, fee=2), pay(B, 0, fee=1)]
    for tx in txs:
        pool.add(tx, state, 0.0)
    mined, undo = mine(pool, state, 10)
    assert len(pool) == 0 and len(mined) == 3
    late = pay(A, 2)
    pool.add(late, state, 1.0)
    # the block is orphaned: roll back, the winning branch spent B's nonce 0 differently
    state.undo(undo)
    winner = pay(B, 0, fee=1, amount=7)
    state.begin()
    apply_tx(state, winner, 1, M.pubkey, net=NET)
    state.commit()
    pool.revalidate(state)
    assert pool.readd(mined, state, 2.0) == []
    assert set(pool.txids()) == {txs[0].txid, txs[1].txid, late.txid}  # b0 conflicts: skipped
    assert pool.select(state, 10) == [txs[0], txs[1], late]
    check_pool(pool, state)


def test_select_is_fast_with_a_full_pool(monkeypatch):
    cache = SigCache()
    monkeypatch.setattr(txmod, "SIG_CACHE", cache)
    users = [i.to_bytes(32, "big") for i in range(25_000)]  # never signs: any 32 bytes
    state = genesis_state({u: 10**6 for u in users})
    pool = Mempool(max_size=50_000, net=NET)
    for i in range(50_000):
        u = users[i % len(users)]
        tx = Tx(NET, "transfer", u, i // len(users), 1 + i % 97, to=SINK, amount=1, sig=b"s" * 64)
        cache.add((tx.txid, tx.sig))  # skip 50k signatures: admission is not what we time
        pool.add(tx, state, 0.0)
    assert len(pool) == 50_000
    t0 = time.perf_counter()
    chosen = pool.select(state, 10_000)
    elapsed = time.perf_counter() - t0
    assert len(chosen) == 10_000
    assert sum(tx.fee for tx in chosen) / len(chosen) > 75  # the pool's mean fee is 49
    seen = set()
    for tx in chosen:  # each sender's nonce 1 comes after its nonce 0
        assert tx.nonce == 0 or tx.sender in seen
        seen.add(tx.sender)
    assert elapsed < 1.0, f"select took {elapsed:.3f}s"


# ------------------------------------------------------------------ hypothesis


class PoolHistory(RuleBasedStateMachine):
    """Random admissions, blocks, reorgs and expiries: the pool stays consistent and
    whatever `select` proposes applies cleanly, in order, on the current state."""

    def __init__(self):
        super().__init__()
        balances = [50, 200, 1000, 1000]
        self.state = genesis_state({u.pubkey: b for u, b in zip(USERS, balances)})
        self.pool = Mempool(max_size=6, expiry=100.0, net=NET)
        self.blocks: list = []  # [(txs, undo)]; the next block's height is len + 1
        self.locks: list[bytes] = []  # txids of escrow locks admitted
        self.now = 0.0

    @rule(
        who=st.integers(0, 3),
        off=st.sampled_from([0, 0, 1, 1, 2, 3, -1, 70]),
        fee=st.integers(0, 20),
        amount=st.integers(1, 60),
        to_user=st.booleans(),
    )
    def add(self, who, off, fee, amount, to_user):
        sender = USERS[who]
        nonce = max(0, self.state.nonce(sender.pubkey) + off)
        to = USERS[(who + 1) % 4].pubkey if to_user else SINK
        tx = transfer(sender, NET, to, amount, nonce, fee=fee)
        try:
            out = self.pool.add(tx, self.state, self.now)
        except TxRejected as exc:
            event(f"add: {exc.reason}")
        else:
            event(f"add: ok, {len(out)} out")
            assert tx.txid in self.pool and all(t.txid not in self.pool for t in out)

    @rule(
        who=st.integers(0, 3),
        method=st.sampled_from(["lock", "lock", "release", "claim"]),
        pick=st.integers(0, 3),
        fee=st.integers(0, 20),
        amount=st.integers(1, 60),
        unlock=st.integers(0, 3),
    )
    def add_call(self, who, method, pick, fee, amount, unlock):
        sender = USERS[who]
        nonce = self.pool.next_nonce(self.state, sender.pubkey)
        if method == "lock":
            args = {"to": USERS[(who + 1) % 4].pubkey, "unlock_height": len(self.blocks) + unlock}
            tx = call(sender, NET, "escrow", "lock", args, nonce, fee=fee, amount=amount)
        else:
            eid = self.locks[-1 - pick % len(self.locks)] if self.locks else b"\0" * 32
            tx = call(sender, NET, "escrow", method, {"id": eid}, nonce, fee=fee)
        try:
            self.pool.add(tx, self.state, self.now)
        except TxRejected as exc:
            event(f"add {method}: {exc.reason}")
        else:
            event(f"add {method}: ok")
            if method == "lock":
                self.locks.append(tx.txid)

    @rule(max_txs=st.integers(0, 6))
    def mine(self, max_txs):
        txs, undo = mine(self.pool, self.state, max_txs, len(self.blocks) + 1)
        for tx in txs:
            event(f"mined {tx.method or 'transfer'}")
        assert len(txs) <= max_txs
        event(f"mine: {min(len(txs), 3)}+ txs")
        self.blocks.append((txs, undo))

    @rule(who=st.integers(0, 3), share=st.sampled_from([0.5, 0.9, 1.0]))
    def foreign_block(self, who, share):
        """Another miner's block spends `share` of a sender's balance with a tx we never saw."""
        sender = USERS[who]
        balance = self.state.balance(sender.pubkey)
        if balance < 4:
            return
        nonce = self.state.nonce(sender.pubkey)
        tx = transfer(sender, NET, SINK, int(balance * share) - 1, nonce, fee=1)
        self.state.begin()
        apply_tx(self.state, tx, len(self.blocks) + 1, M.pubkey, net=NET)
        self.blocks.append(([tx], self.state.commit()))
        self.pool.remove_included([tx])
        self.pool.revalidate(self.state)

    @rule()
    def reorg(self):
        if not self.blocks:
            return
        txs, undo = self.blocks.pop()
        self.state.undo(undo)
        self.pool.revalidate(self.state)
        self.pool.readd(txs, self.state, self.now)
        event(f"reorg: {sum(t.txid in self.pool for t in txs)} of {len(txs)} back")

    @rule(dt=st.sampled_from([1.0, 30.0, 100.0]))
    def tick(self, dt):
        self.now += dt
        gone = self.pool.expire(self.now)
        event(f"expire: {min(len(gone), 2)}+")
        assert all(t.txid not in self.pool for t in gone)

    @invariant()
    def consistent_and_applicable(self):
        check_pool(self.pool, self.state, len(self.blocks) + 1)
        assert len(self.pool) <= self.pool.max_size


PoolHistory.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
test_pool_history = PoolHistory.TestCase
