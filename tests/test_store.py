"""ChainStore: a BlockTree restarts from sqlite without replaying blocks, a failed
transaction leaves the last committed state, and kill -9 never corrupts the database."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_l2.chain import ledger
from p2p_l2.chain import store as store_mod
from p2p_l2.chain.block import Block, genesis, make_block
from p2p_l2.chain.state import MISSING
from p2p_l2.chain.store import ChainStore
from p2p_l2.chain.tree import BlockTree
from p2p_l2.chain.tx import call, transfer
from p2p_l2.errors import ConfigError
from p2p_l2.wire.identity import Identity
from test_tree import new_tree as tt_new_tree  # tests/ is on sys.path (rootdir conftest)
from test_tree import worlds

NET = "store-test"
ALICE, BOB, CAROL = (Identity.derive(13, n) for n in ("alice", "bob", "carol"))
M1, M2 = Identity.derive(13, "m1"), Identity.derive(13, "m2")
MINERS = {M1.pubkey, M2.pubkey}
ACCOUNTS = {ALICE.pubkey: 10_000, BOB.pubkey: 5_000}
G = genesis(NET)


def open_tree(path, **kw) -> BlockTree:
    kw.setdefault("block_reward", 25)
    return BlockTree(NET, dict(ACCOUNTS), MINERS, store=ChainStore(path), **kw)


def mem_tree() -> BlockTree:
    return BlockTree(NET, dict(ACCOUNTS), MINERS, block_reward=25)


def child(parent: Block, miner, txs=()) -> Block:
    return make_block(miner, parent.header, txs, parent.header.time + 1)


def view(t: BlockTree):
    """Everything a restart must preserve."""
    return (
        t.tip, t.height, dict(t.state.kv), dict(t._tx_index), t.supply(),
        [t.block_at(h).hash for h in range(t.height + 1)],
        {h: (list(u), r) for h, (u, r) in t._undo.items()},
        sorted(t._blocks), dict(t._invalid),
    )


def build_history():
    """Main chain a1..a4 with transfers and an escrow call, a side branch b1..b2, and an
    invalid block on the tip; then b overtakes a (reorg depth 5)."""
    a, b = [G], [G]
    for i in range(4):
        txs = [transfer(ALICE, NET, BOB.pubkey, 100 + i, i), transfer(BOB, NET, CAROL.pubkey, 7, i)]
        a.append(child(a[-1], M1, txs))
    for i in range(6):
        b.append(child(b[-1], M2, [transfer(BOB, NET, ALICE.pubkey, 3, i)]))
    lock = call(ALICE, NET, "escrow", "lock", {"to": CAROL.pubkey, "unlock_height": 1}, 4,
                amount=500)
    a.append(child(a[-1], M1, [lock]))
    bad = child(a[-1], M2, [transfer(CAROL, NET, ALICE.pubkey, 10**9, 0)])
    return a[1:], b[1:], bad


# ---------------------------------------------------------------- restart without replay


def test_restart_loads_without_replay(tmp_path, monkeypatch):
    db = tmp_path / "chain.sqlite"
    a, b, bad = build_history()
    t = open_tree(db)
    for blk in a:
        assert t.add(blk, 1e9).status == "connected"
    for blk in b[:3]:
        assert t.add(blk, 1e9).status == "side"
    assert t.add(bad, 1e9).status == "invalid"
    assert t.supply()["locked"] == 500
    before = view(t)
    t.store.close()

    def no_replay(*_a, **_k):
        raise AssertionError("apply_tx called while loading")

    monkeypatch.setattr(ledger, "apply_tx", no_replay)
    monkeypatch.setattr(ledger, "apply_reward", no_replay)
    t2 = open_tree(db)
    assert view(t2) == before
    for blk in a:
        assert all(t2.tx_height(tx.txid) == blk.height for tx in blk.txs)
    assert t2.get(b[2].hash) == b[2] and t2.add(bad, 1e9).reason == t.is_invalid(bad.hash)
    monkeypatch.undo()

    # the reloaded undos work: b overtakes a (reorg through the restart point)
    for blk in b[3:]:
        t2.add(blk, 1e9)
    ref = mem_tree()
    for blk in a + b:
        ref.add(blk, 1e9)
    assert t2.tip == ref.tip == b[-1].header
    assert t2.state.kv == ref.state.kv and t2.supply() == ref.supply()
    # ...and that reorg was persisted too
    after = view(t2)
    t2.store.close()
    assert view(open_tree(db)) == after


def test_restart_keeps_first_seen_order(tmp_path):
    db = tmp_path / "chain.sqlite"
    a1, b1 = child(G, M1), child(G, M2)
    t = open_tree(db)
    t.add(a1, 1e9)
    t.add(b1, 1e9)
    t.store.close()
    t = open_tree(db)
    assert t.tip == a1.header
    r = t.add(child(b1, M2), 1e9)
    assert r.reorg_depth == 1 and r.disconnected == [a1]


def test_wal_and_network_guard(tmp_path):
    db = tmp_path / "chain.sqlite"
    t = open_tree(db)
    mode = t.store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    t.store.close()
    with pytest.raises(ConfigError, match="net"):
        BlockTree("another-net", dict(ACCOUNTS), MINERS, store=ChainStore(db))


def test_codec_roundtrips_exactly():
    values = [0, 2**63, -5, b"\x00", "s", None, True, [1, (2, b"x")], (1, (2, 3)),
              {"a": (1,), "b": [None, {"c": b""}]}, 1.5]
    for v in values:
        got = store_mod.unpack_value(store_mod.pack_value(v))
        assert got == v and type(got) is type(v)
    key = ("c", "escrow", b"\x01" * 32, (1, 2))
    assert store_mod.unpack_key(store_mod.pack_key(key)) == key
    undo = [(("bal", b"a"), MISSING), (("nonce", b"a"), 3), (key, [1, (2,)])]
    got = store_mod.unpack_undo(store_mod.pack_undo(undo))
    assert got == undo and got[0][1] is MISSING and type(got[2][1][1]) is tuple


# ---------------------------------------------------------------- failed transactions


def test_failure_inside_the_transaction_keeps_last_commit(tmp_path, monkeypatch):
    db = tmp_path / "chain.sqlite"
    a, b, _ = build_history()
    t = open_tree(db)
    for blk in a[:3]:
        t.add(blk, 1e9)
    for blk in b[:3]:
        t.add(blk, 1e9)
    committed = view(t)

    def crash(self, puts):  # blocks and undos are already written when the state is
        raise OSError("disk on fire")

    monkeypatch.setattr(ChainStore, "_put_state", crash)
    with pytest.raises(OSError):
        t.add(b[3], 1e9)  # a reorg: touches blocks, undos, state and tip
    monkeypatch.undo()
    t.store.close()
    t2 = open_tree(db)
    assert view(t2) == committed
    # and the node carries on from there
    assert t2.add(b[3], 1e9).reorg_depth == 3
    assert t2.state.kv == view_of_chain(b[:4])


def view_of_chain(blocks):
    ref = mem_tree()
    for blk in blocks:
        ref.add(blk, 1e9)
    return dict(ref.state.kv)


def test_invalid_side_branch_is_dropped_on_disk(tmp_path):
    db = tmp_path / "chain.sqlite"
    a, b, _ = build_history()
    t = open_tree(db)
    for blk in a[:3]:
        t.add(blk, 1e9)
    bad = child(b[1], M2, [transfer(CAROL, NET, ALICE.pubkey, 1, 0)])  # Carol has nothing
    kid = child(bad, M2)
    for blk in (b[0], b[1], bad):
        assert t.add(blk, 1e9).status == "side"
    assert t.add(kid, 1e9).reason == "invalid_parent"
    before = view(t)
    t.store.close()
    t2 = open_tree(db)
    assert view(t2) == before
    assert t2.get(bad.hash) is None and t2.is_invalid(bad.hash).startswith("invalid_tx:")
    rows = t2.store._db.execute("SELECT count(*) FROM blocks WHERE hash IN (?, ?)",
                                (bad.hash, kid.hash)).fetchone()[0]
    assert rows == 0


@given(st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_trees_survive_restarts(data):
    """Random block trees (test_tree's generator) delivered in a random order to a tree
    that is restarted from its database at random points: nothing is lost or changed."""
    world = data.draw(worlds())
    order = data.draw(st.permutations(world.blocks))
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "chain.sqlite")
        t = tt_new_tree(store=ChainStore(db))
        for blk in order:
            t.add(blk, 1e9)
            if data.draw(st.integers(0, 3)) == 0:
                before = view(t)
                t.store.close()
                t = tt_new_tree(store=ChainStore(db))
                assert view(t) == before
        for blk in world.blocks:  # orphans are not persisted: the network re-sends them
            t.add(blk, 1e9)
        assert t.state.kv == world.state[t.tip.hash].kv
        valid = [b for b in world.blocks if b.hash in world.state]
        assert t.height == max([0] + [b.height for b in valid])
        before = view(t)
        t.store.close()
        t = tt_new_tree(store=ChainStore(db))
        assert view(t) == before
        t.store.close()


_KILL_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_store import ALICE, BOB, G, M1, M2, NET, child, open_tree
    from p2p_l2.chain.tx import transfer
    t = open_tree(sys.argv[1])
    # two branches from genesis that overtake each other in turn: deeper and deeper reorgs
    # (a restarted child re-sends the same blocks first: duplicates, then new ones)
    branches = [[G, 0], [G, 0]]
    n = 0
    while True:
        for me, (miner, sender) in enumerate(((M1, ALICE), (M2, BOB))):
            tip, nonce = branches[me]
            while tip.height <= branches[1 - me][0].height:
                txs = [transfer(sender, NET, M1.pubkey, 1, nonce + i) for i in range(20)]
                nonce += 20
                tip = child(tip, miner, txs)
                t.add(tip, 1e12)
                n += 1
                print(n, flush=True)
            branches[me] = [tip, nonce]
    """
)


def test_kill_9_leaves_a_consistent_database(tmp_path):
    db = tmp_path / "chain.sqlite"
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD.format(tests=os.path.dirname(__file__)))
    for round_, wait_lines in enumerate((5, 23, 40)):
        proc = subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(wait_lines):
                if not proc.stdout.readline():
                    pytest.fail(f"child died: {proc.stderr.read()}")
            time.sleep(0.01 * round_)  # land somewhere inside a later add
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        t = open_tree(db)
        assert t.height > 0
        chain_blocks = [t.block_at(h) for h in range(1, t.height + 1)]
        assert t.state.kv == view_of_chain(chain_blocks), "state != replay of the active chain"
        s = t.supply()
        assert s["genesis"] + s["rewards"] == s["balances"] + s["locked"]
        assert set(t._undo) == {b.hash for b in chain_blocks}
        t.store.close()
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
