"""BlockTree: validation reasons, orphans, fork choice, reorgs, locators, and convergence of
random block trees delivered in any order (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_l2.chain import block as block_mod
from p2p_l2.chain import ledger
from p2p_l2.chain.block import Block, Header, genesis, make_block
from p2p_l2.chain.merkle import merkle_root
from p2p_l2.chain.state import State
from p2p_l2.chain.tree import BlockTree
from p2p_l2.chain.tx import transfer
from p2p_l2.wire.identity import Identity

NET = "tree-test"
ALICE, BOB, CAROL = (Identity.derive(11, n) for n in ("alice", "bob", "carol"))
M1, M2, M3 = (Identity.derive(11, n) for n in ("m1", "m2", "m3"))
STRANGER = Identity.derive(11, "stranger")
USERS = (ALICE, BOB, CAROL)
MINERS = {M1.pubkey, M2.pubkey, M3.pubkey}
ACCOUNTS = {ALICE.pubkey: 1000, BOB.pubkey: 500, CAROL.pubkey: 0}
REWARD = 50
G = genesis(NET)


def new_tree(**kw) -> BlockTree:
    kw.setdefault("block_reward", REWARD)
    return BlockTree(NET, dict(ACCOUNTS), MINERS, **kw)


def child(parent: Block | Header, miner=M1, txs=(), dt=1.0) -> Block:
    hd = parent.header if isinstance(parent, Block) else parent
    return make_block(miner, hd, txs, hd.time + dt)


def chain(parent, n, miner=M1, txs_at=None) -> list[Block]:
    """n blocks on `parent`; txs_at(i) gives the txs of the i-th (0-based)."""
    out = []
    for i in range(n):
        b = child(out[-1] if out else parent, miner, txs_at(i) if txs_at else ())
        out.append(b)
    return out


def pay(who, to, amount, nonce, fee=1):
    return transfer(who, NET, to.pubkey, amount, nonce, fee)


def snapshot(tree: BlockTree):
    return (tree.tip, dict(tree.state.kv), dict(tree._tx_index), tree.supply(),
            [tree.block_at(h).hash for h in range(tree.height + 1)])


def conserved(tree: BlockTree) -> bool:
    s = tree.supply()
    return s["genesis"] + s["rewards"] == s["balances"] + s["locked"]


def replay_state(blocks: list[Block]) -> dict:
    """Reference: the kv after applying `blocks` (a chain from genesis) one by one."""
    t = new_tree()
    for b in blocks:
        assert t.add(b, 1e9).status == "connected"
    return dict(t.state.kv)


# ---------------------------------------------------------------- happy path


def test_genesis_tree():
    t = new_tree()
    assert t.height == 0 and t.tip == G.header and t.block_at(0) == G
    assert t.get(G.hash) == G and t.contains(G.hash)
    assert t.state.balance(ALICE.pubkey) == 1000
    assert t.supply() == {"genesis": 1500, "rewards": 0, "balances": 1500, "locked": 0}
    assert t.locator() == [G.hash]


def test_connect_chain_with_txs():
    t = new_tree()
    tx1, tx2 = pay(ALICE, BOB, 100, 0, fee=3), pay(BOB, CAROL, 50, 0)
    b1 = child(G, M1, [tx1])
    b2 = child(b1, M2, [tx2])
    r1 = t.add(b1, 10)
    assert (r1.status, r1.reason, r1.connected, r1.disconnected, r1.reorg_depth) == \
        ("connected", None, [b1], [], 0)
    assert t.add(b2, 10).connected == [b2]
    assert t.height == 2 and t.tip == b2.header and t.block_at(1) == b1 and t.block_at(3) is None
    assert t.tx_height(tx1.txid) == 1 and t.tx_height(tx2.txid) == 2
    assert t.tx_height(b"\x00" * 32) is None
    assert t.state.balance(ALICE.pubkey) == 897
    assert t.state.balance(M1.pubkey) == REWARD + 3 and t.state.balance(M2.pubkey) == REWARD + 1
    assert t.supply()["rewards"] == 2 * REWARD and conserved(t)


def test_duplicate():
    t = new_tree()
    b1 = child(G)
    assert t.add(b1, 10).status == "connected"
    r = t.add(b1, 10)
    assert r.status == "duplicate" and r.connected == [] and t.height == 1
    assert t.add(G, 10).status == "duplicate"


# ---------------------------------------------------------------- rejections


def signed(miner, hd: Header, txs=()) -> Block:
    return Block(hd, miner.sign(block_mod.SIG_DOMAIN + hd.hash), tuple(txs))


def forged_sig(b: Block) -> Block:
    return replace(b, sig=STRANGER.sign(block_mod.SIG_DOMAIN + b.hash))


def assert_refused(tree, block, reason, now=10.0):
    before = snapshot(tree)
    r = tree.add(block, now)
    assert (r.status, r.reason) == ("invalid", reason)
    assert r.connected == [] and r.disconnected == [] and r.reorg_depth == 0
    assert snapshot(tree) == before, "a refused block changed the tree"
    assert tree.get(block.hash) is None
    return r


@pytest.fixture
def t1():
    """A tree at height 1 (one block paying Alice -> Bob)."""
    t = new_tree()
    assert t.add(child(G, M1, [pay(ALICE, BOB, 10, 0)]), 10).status == "connected"
    return t


def test_reject_unknown_miner(t1):
    assert_refused(t1, child(t1.tip, STRANGER), "unknown_miner")


def test_reject_forged_signature(t1):
    assert_refused(t1, forged_sig(child(t1.tip, M2)), "bad_signature")


def test_reject_signature_of_other_miner(t1):
    b = child(t1.tip, M2)
    assert_refused(t1, replace(b, sig=M1.sign(block_mod.SIG_DOMAIN + b.hash)), "bad_signature")


def test_reject_bad_merkle(t1):
    b = child(t1.tip, M2, [pay(ALICE, BOB, 1, 1)])
    assert_refused(t1, replace(b, txs=(pay(ALICE, BOB, 2, 1),)), "bad_merkle")
    assert_refused(t1, replace(b, txs=()), "bad_merkle")


def test_reject_bad_height(t1):
    tip = t1.tip
    for height in (tip.height, tip.height + 2, 0):
        hd = Header(height, tip.hash, tip.time + 1, M2.pubkey, merkle_root([]))
        assert_refused(t1, signed(M2, hd), "bad_height")


def test_reject_bad_time(t1):
    assert_refused(t1, child(t1.tip, M2, dt=500.0), "bad_time", now=t1.tip.time + 1)
    # ...but the same block is fine later (a future time is not remembered as invalid)
    late = child(t1.tip, M2, dt=500.0)
    assert t1.add(late, now=t1.tip.time + 400).status == "connected"
    # too far before its parent
    hd = Header(t1.height + 1, t1.tip.hash, t1.tip.time - 121.0, M2.pubkey, merkle_root([]))
    assert_refused(t1, signed(M2, hd), "bad_time", now=1e6)


def test_reject_too_many_txs():
    t = new_tree(max_block_txs=2)
    b = child(G, M1, [pay(ALICE, BOB, 1, n) for n in range(3)])
    assert_refused(t, b, "too_many_txs")


@pytest.mark.parametrize("txs, reason", [
    ([pay(BOB, ALICE, 501, 0)], "invalid_tx:insufficient_funds"),  # overspend, fee included
    ([pay(ALICE, BOB, 1, 0), pay(BOB, ALICE, 501, 0)], "invalid_tx:insufficient_funds"),
    ([pay(ALICE, BOB, 1, 1)], "invalid_tx:bad_nonce"),
    ([pay(ALICE, BOB, 1, 0), pay(ALICE, BOB, 1, 0)], "invalid_tx:bad_nonce"),
    ([transfer(ALICE, "other-net", BOB.pubkey, 1, 0)], "invalid_tx:wrong_network"),
])
def test_reject_invalid_tx_changes_nothing(txs, reason):
    t = new_tree()
    b = child(G, M1, txs)
    assert_refused(t, b, reason)
    assert t.is_invalid(b.hash) == reason
    for tx in txs:
        assert t.tx_height(tx.txid) is None


def test_invalid_block_refused_at_once_and_descendants(monkeypatch):
    t = new_tree()
    bad = child(G, M1, [pay(BOB, ALICE, 10_000, 0)])
    assert t.add(bad, 10).reason == "invalid_tx:insufficient_funds"
    calls = []
    real = ledger.apply_tx
    monkeypatch.setattr(ledger, "apply_tx", lambda *a, **k: (calls.append(a), real(*a, **k)))
    r = t.add(bad, 10)
    assert (r.status, r.reason) == ("invalid", "invalid_tx:insufficient_funds") and calls == []
    kid = child(bad, M2)
    assert (t.add(kid, 10).status, t.is_invalid(kid.hash)) == ("invalid", "invalid_parent")
    assert t.add(kid, 10).reason == "invalid_parent" and calls == []
    assert t.height == 0


def test_forgeries_do_not_poison_the_genuine_block(t1):
    """Neither signature nor txs are covered by the block hash: a forged or mutated copy
    is refused but not remembered, so the genuine block still connects."""
    good = child(t1.tip, M2, [pay(ALICE, BOB, 1, 1)])
    assert t1.add(forged_sig(good), 10).reason == "bad_signature"
    assert t1.add(replace(good, txs=()), 10).reason == "bad_merkle"
    assert t1.is_invalid(good.hash) is None
    assert t1.add(good, 10).status == "connected"


# ---------------------------------------------------------------- orphans


def test_orphans_connect_when_parent_arrives():
    t = new_tree()
    b1, b2, b3 = chain(G, 3, txs_at=lambda i: [pay(ALICE, BOB, 1, i)])
    r3 = t.add(b3, 10)
    assert (r3.status, r3.missing) == ("orphan", b2.hash)
    r2 = t.add(b2, 10)
    assert (r2.status, r2.missing) == ("orphan", b1.hash)  # the root of the orphan chain
    assert t.contains(b3.hash) and t.get(b3.hash) is None and t.height == 0
    d = t.add(b3, 10)
    assert (d.status, d.missing) == ("duplicate", b1.hash)
    r1 = t.add(b1, 10)
    assert r1.status == "connected" and r1.connected == [b1, b2, b3] and t.height == 3
    assert t.statistics()["orphans"] == 0
    assert t.state.kv == replay_state([b1, b2, b3])


def test_orphan_pool_is_bounded():
    t = new_tree(max_orphans=2)
    b1, b2, b3, b4 = chain(G, 4)
    for b in (b2, b3, b4):
        assert t.add(b, 10).status == "orphan"
    assert not t.contains(b2.hash) and t.contains(b3.hash) and t.contains(b4.hash)
    assert t.add(b1, 10).connected == [b1]  # b2 was evicted: b3, b4 still wait
    r = t.add(b2, 10)
    assert r.connected == [b2, b3, b4] and t.height == 4


def test_orphan_pool_disabled():
    t = new_tree(max_orphans=0)
    b1, b2 = chain(G, 2)
    r = t.add(b2, 10)
    assert (r.status, r.missing) == ("orphan", b1.hash) and not t.contains(b2.hash)


def test_orphan_checked_before_pooling():
    t = new_tree()
    b1, b2 = chain(G, 2)
    assert t.add(forged_sig(b2), 10).reason == "bad_signature"
    assert not t.contains(b2.hash)


def test_orphans_of_an_invalid_block_become_invalid():
    t = new_tree()
    bad = child(G, M1, [pay(CAROL, ALICE, 5, 0)])  # Carol has nothing
    kid, grandkid = chain(bad, 2, M2)
    assert t.add(grandkid, 10).status == "orphan"
    assert t.add(kid, 10).status == "orphan"
    r = t.add(bad, 10)
    assert (r.status, r.reason) == ("invalid", "invalid_tx:insufficient_funds")
    assert t.is_invalid(kid.hash) == t.is_invalid(grandkid.hash) == "invalid_parent"
    assert not t.contains(kid.hash) and t.height == 0


def test_orphan_with_bad_height_is_invalid_when_attached():
    t = new_tree()
    b1 = child(G)
    hd = Header(5, b1.hash, b1.header.time + 1, M2.pubkey, merkle_root([]))
    bad = signed(M2, hd)
    assert t.add(bad, 10).status == "orphan"
    r = t.add(b1, 10)
    assert r.status == "connected" and t.is_invalid(bad.hash) == "bad_height"


# ---------------------------------------------------------------- fork choice and reorgs


def test_first_seen_wins_ties():
    t = new_tree()
    a1, b1 = child(G, M1), child(G, M2)
    assert t.add(a1, 10).status == "connected"
    r = t.add(b1, 10)
    assert r.status == "side" and r.connected == [] and t.tip == a1.header
    b2 = child(b1, M2)
    r = t.add(b2, 10)
    assert (r.status, r.connected, r.disconnected, r.reorg_depth) == \
        ("connected", [b1, b2], [a1], 1)
    a2 = child(a1, M1)
    assert t.add(a2, 10).status == "side" and t.tip == b2.header  # tie again: stay


def test_first_seen_among_new_candidates():
    """Two equal branches arriving in one add (via orphans): the earlier seen wins."""
    t = new_tree()
    p = child(G, M3)
    a2, b2 = child(p, M1), child(p, M2)
    t.add(b2, 10)
    t.add(a2, 10)
    assert t.add(p, 10).connected == [p, b2]


def test_reorg_restores_state_and_index():
    t = new_tree()
    a = chain(G, 3, M1, lambda i: [pay(ALICE, BOB, 10 + i, i)])
    b = chain(G, 4, M2, lambda i: [pay(BOB, CAROL, 5 + i, i), pay(ALICE, CAROL, 1, i)])
    for blk in a:
        t.add(blk, 10)
    for blk in b[:3]:
        assert t.add(blk, 10).status == "side"
    assert t.tip == a[-1].header
    r = t.add(b[3], 10)
    assert (r.status, r.reorg_depth) == ("connected", 3)
    assert r.disconnected == a[::-1] and r.connected == b
    assert t.state.kv == replay_state(b) and conserved(t)
    for blk in a:
        assert all(t.tx_height(tx.txid) is None for tx in blk.txs)
    for blk in b:
        assert all(t.tx_height(tx.txid) == blk.height for tx in blk.txs)
    # and back: extend a to height 5
    a += chain(a[-1], 2, M1, lambda i: [pay(ALICE, BOB, 1, 3 + i)])
    assert t.add(a[3], 10).status == "side"
    r = t.add(a[4], 10)
    assert r.reorg_depth == 4 and r.disconnected == b[::-1] and r.connected == a
    assert t.state.kv == replay_state(a) and conserved(t)
    assert t.supply()["rewards"] == 5 * REWARD


def test_reorg_into_invalid_branch_restores_old_chain(monkeypatch):
    t = new_tree()
    a = chain(G, 3, M1, lambda i: [pay(ALICE, BOB, 10, i)])
    for blk in a:
        t.add(blk, 10)
    before = snapshot(t)
    b1, b2 = chain(G, 2, M2, lambda i: [pay(BOB, CAROL, 100, i)])
    b3 = child(b2, M2, [pay(CAROL, ALICE, 300, 0)])  # Carol has 200: overspend
    b4 = child(b3, M2)
    for blk in (b1, b2, b3):
        assert t.add(blk, 10).status == "side"  # b3 is a tie: not tried yet
    r = t.add(b4, 10)
    assert (r.status, r.reason) == ("invalid", "invalid_parent")
    assert r.connected == [] and r.disconnected == [] and r.reorg_depth == 0
    assert t.is_invalid(b3.hash) == "invalid_tx:insufficient_funds"
    assert snapshot(t) == before  # exactly the old chain, state and index
    assert t.get(b2.hash) == b2 and t.get(b3.hash) is None
    assert t.add(child(b4, M2), 10).reason == "invalid_parent"


def test_invalid_branch_keeps_its_longer_valid_part():
    """If the valid part of the new branch is longer than the old chain, it wins."""
    t = new_tree()
    a = chain(G, 2, M1)
    for blk in a:
        t.add(blk, 10)
    b = chain(G, 3, M2, lambda i: [pay(ALICE, BOB, 1, i)])
    b4 = child(b[-1], M2, [pay(CAROL, BOB, 1, 0)])  # Carol is broke
    b5 = child(b4, M2)
    for blk in (b[1], b[2], b4, b5):
        assert t.add(blk, 10).status == "orphan"
    r = t.add(b[0], 10)
    assert r.status == "connected" and r.connected == b and r.disconnected == a[::-1]
    assert t.is_invalid(b4.hash) and t.is_invalid(b5.hash) == "invalid_parent"
    assert t.state.kv == replay_state(b)


def test_connect_error_restores_chain(monkeypatch):
    """A bug (not a TxRejected) while switching must not leave a half-switched chain."""
    t = new_tree()
    a = chain(G, 2, M1, lambda i: [pay(ALICE, BOB, 1, i)])
    for blk in a:
        t.add(blk, 10)
    before = snapshot(t)
    b = chain(G, 3, M2, lambda i: [pay(BOB, ALICE, 1, i)])
    t.add(b[0], 10)
    t.add(b[1], 10)
    real = ledger.apply_tx

    def boom(state, tx, *a, **k):
        if tx.sender == BOB.pubkey and tx.nonce == 2:
            raise RuntimeError("bug")
        return real(state, tx, *a, **k)

    monkeypatch.setattr(ledger, "apply_tx", boom)
    with pytest.raises(RuntimeError):
        t.add(b[2], 10)
    assert snapshot(t) == before


# ---------------------------------------------------------------- locator / blocks_after


def test_locator_shape():
    t = new_tree()
    blocks = chain(G, 40)
    for blk in blocks:
        t.add(blk, 1e9)
    loc = t.locator()
    heights = [t.get(h).height for h in loc]
    assert heights[:10] == list(range(40, 30, -1))
    assert heights[10:] == [29, 25, 17, 1, 0]  # steps 2, 4, 8, 16, then genesis
    assert all(t.block_at(ht).hash == h for ht, h in zip(heights, loc))


def test_blocks_after():
    ours = new_tree()
    main = chain(G, 30)
    for blk in main:
        ours.add(blk, 1e9)
    theirs = new_tree()
    for blk in main[:20]:
        theirs.add(blk, 1e9)
    assert ours.blocks_after(theirs.locator(), 5) == main[20:25]
    assert ours.blocks_after(theirs.locator(), 100) == main[20:]
    assert ours.blocks_after(ours.locator(), 10) == []
    # a peer on a fork from height 15: we send from 16 on (its locator meets us at 15)
    forked = new_tree()
    for blk in main[:15] + chain(main[14], 8, M2):
        forked.add(blk, 1e9)
    assert forked.height == 23
    got = ours.blocks_after(forked.locator(), 100)
    assert got == main[15:]
    # nothing in common (other network): from genesis
    assert ours.blocks_after([b"\x09" * 32], 3) == main[:3]
    assert ours.blocks_after([], 0) == []


# ---------------------------------------------------------------- random block trees


class World:
    """Generates a random block tree with reference states (for valid blocks)."""

    def __init__(self):
        self.blocks: list[Block] = []
        self.state = {G.hash: State(ledger.genesis_state(ACCOUNTS).kv)}  # valid blocks only
        self.parents = [G]

    def ref_apply(self, parent: Block, blk: Block) -> None:
        ps = self.state.get(parent.hash)
        if ps is None:
            return  # descendant of an invalid block
        s = State(dict(ps.kv))
        s.begin()
        try:
            for tx in blk.txs:
                ledger.apply_tx(s, tx, blk.height, blk.header.miner, net=NET)
            ledger.apply_reward(s, blk.header.miner, REWARD)
        except ledger.TxRejected:
            s.abort()
            return
        s.commit()
        self.state[blk.hash] = s


@st.composite
def worlds(draw):
    w = World()
    miners = [M1, M2, M3][: draw(st.integers(2, 3))]
    n = draw(st.integers(1, 14))
    for _ in range(n):
        parent = w.parents[draw(st.integers(0, len(w.parents) - 1))]
        miner = miners[draw(st.integers(0, len(miners) - 1))]
        ps = w.state.get(parent.hash) or w.state[G.hash]
        txs = []
        nonces = {}
        for _ in range(draw(st.integers(0, 3))):
            u = USERS[draw(st.integers(0, 2))]
            to = USERS[draw(st.integers(0, 2))]
            nonce = nonces.get(u.pubkey, ps.nonce(u.pubkey))
            kind = draw(st.sampled_from(["ok", "ok", "ok", "ok", "overspend", "bad_nonce"]))
            if kind == "bad_nonce":
                nonce += 1
            amount = draw(st.integers(1, 300)) if kind != "overspend" else 10**6
            txs.append(transfer(u, NET, to.pubkey, amount, nonce, draw(st.integers(0, 3))))
            nonces[u.pubkey] = nonce + 1
        seen = set()
        txs = [tx for tx in txs if not (tx.txid in seen or seen.add(tx.txid))]
        blk = make_block(miner, parent.header, txs, parent.header.time + draw(st.integers(1, 3)))
        if blk.hash in w.state or blk in w.blocks:
            continue
        w.ref_apply(parent, blk)
        w.blocks.append(blk)
        w.parents.append(blk)
    return w


@given(worlds(), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_trees_converge(world, data):
    valid = [b for b in world.blocks if b.hash in world.state]
    top = max([0] + [b.height for b in valid])
    best = {b.hash for b in valid if b.height == top} or {G.hash}
    trees = []
    for _ in range(3):
        order = data.draw(st.permutations(world.blocks))
        small_pool = data.draw(st.booleans())
        t = new_tree(max_orphans=3 if small_pool else 1000)
        for blk in order:
            r = t.add(blk, 1e9)
            assert r.status in ("connected", "side", "orphan", "invalid", "duplicate")
            assert conserved(t)
            assert t.state.kv == world.state[t.tip.hash].kv
            assert r.reorg_depth == len(r.disconnected)
        if small_pool:  # evicted orphans: the network would re-send them; so do we
            for blk in world.blocks:
                t.add(blk, 1e9)
        trees.append(t)
        assert t.tip.hash in best and t.height == top
        assert t.state.kv == world.state[t.tip.hash].kv
        n_txs = 0
        for h in range(1, t.height + 1):
            for tx in t.block_at(h).txs:
                assert t.tx_height(tx.txid) == h
                n_txs += 1
        assert len(t._tx_index) == n_txs
    if len(best) == 1:
        assert len({t.tip.hash for t in trees}) == 1
        assert all(t.state.kv == trees[0].state.kv for t in trees)
