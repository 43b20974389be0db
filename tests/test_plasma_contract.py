"""The `plasma` L1 contract, driven through `ledger.apply_tx` on a journaled State."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from p2p_l2.chain.contracts import CONTRACTS
from p2p_l2.chain.contracts import plasma as pl
from p2p_l2.chain.ledger import (
    TxRejected,
    apply_reward,
    apply_tx,
    genesis_state,
    total_balances,
    total_locked,
)
from p2p_l2.chain.state import State
from p2p_l2.chain.store import pack_value, unpack_value
from p2p_l2.chain.tx import Tx, call
from p2p_l2.plasma.tx import (
    CHILD_BLOCK_INTERVAL,
    PlasmaBlock,
    PlasmaTx,
    confirm_digest,
    deposit_tx,
    position,
    split_pos,
)
from p2p_l2.wire.identity import Identity

NET = "testnet"
O, A, B, C, W, M = (Identity.derive(7, n) for n in ("op", "alice", "bob", "carol", "tower",
                                                     "miner"))
OP = O.pubkey
GENESIS = {O.pubkey: 1000, A.pubkey: 1000, B.pubkey: 500, C.pubkey: 300, W.pubkey: 20}
EXIT = 10
BOND = 5


@pytest.fixture
def state() -> State:
    s = genesis_state(GENESIS)
    s.begin()  # as in a block: rejected calls roll back to their savepoint
    return s


def apply(state: State, tx: Tx, height: int = 1) -> None:
    apply_tx(state, tx, height, M.pubkey, net=NET)


def rejected(state: State, tx: Tx, reason: str = "contract_error", height: int = 1) -> str:
    """Assert `tx` is rejected with `reason` and leaves `state` exactly as it was (the
    sender's fee and nonce included)."""
    before = dict(state.kv)
    with pytest.raises(TxRejected) as info:
        apply(state, tx, height)
    assert info.value.reason == reason, info.value
    assert state.kv == before and state.journaling
    return info.value.detail


def nonce(state: State, who: Identity) -> int:
    return state.nonce(who.pubkey)


def bal(state: State, who: Identity) -> int:
    return state.balance(who.pubkey)


def conserved(state: State, minted: int = 0) -> bool:
    return total_balances(state) + total_locked(state) == sum(GENESIS.values()) + minted


def record(state: State, operator: bytes = OP) -> dict:
    rec = pl.chain_record(state, operator)
    assert rec is not None
    return rec


def exit_of(state: State, pos: int) -> dict:
    ex = pl.exit_record(state, OP, pos)
    assert ex is not None
    return ex


def registered(state: State, exit_blocks: int = EXIT, bond: int = BOND, height: int = 1) -> None:
    apply(state, pl.register_tx(O, NET, exit_blocks, bond, nonce(state, O)), height)


def deposit(state: State, who: Identity, amount: int, height: int = 1) -> tuple[int, PlasmaTx]:
    """Deposit; returns the output's position and the deposit tx."""
    number = record(state)["next_deposit"]
    apply(state, pl.deposit_call_tx(who, NET, OP, amount, nonce(state, who)), height)
    return position(number, 0, 0), deposit_tx(OP, who.pubkey, amount)


def send(inputs: list[tuple[int, Identity]], outputs: list[tuple[Identity, int]],
         chain: bytes = OP) -> PlasmaTx:
    """A plasma tx spending `inputs` (pos, owner) into `outputs`, signed by the owners."""
    t = PlasmaTx(chain, tuple(p for p, _ in inputs), tuple((o.pubkey, a) for o, a in outputs))
    return t.signed([owner for _, owner in inputs])


def committed(state: State, number: int, txs: list[PlasmaTx], height: int = 1) -> PlasmaBlock:
    block = PlasmaBlock(number, tuple(txs))
    apply(state, pl.commit_tx(O, NET, number, block.root, nonce(state, O)), height)
    return block


def confirm(who: Identity, t: PlasmaTx, block: PlasmaBlock) -> bytes:
    return who.sign(confirm_digest(t.hash, block.root))


def exit_tx(state: State, who: Identity, pos: int, t: PlasmaTx, proof: list[bytes],
            bond: int = BOND, confirms=()) -> Tx:
    return pl.start_exit_tx(who, NET, OP, pos, t, proof, bond, nonce(state, who),
                            confirms=confirms)


def confirms_of(t: PlasmaTx, block: PlasmaBlock, *owners: Identity) -> list:
    """What start_exit wants for an output of `t`: (owner, confirmation) per input."""
    return [(o.pubkey, confirm(o, t, block)) for o in owners]


def process(state: State, who: Identity = W) -> Tx:
    return pl.process_exits_tx(who, NET, OP, nonce(state, who))


# ------------------------------------------------------------------ register


def test_registered_with_its_methods():
    assert CONTRACTS["plasma"] is pl.PLASMA
    assert pl.PLASMA.methods == {"register", "deposit", "commit", "start_exit", "challenge",
                                 "process_exits"}


def test_register(state):
    registered(state, height=3)
    assert record(state) == {"exit_blocks": EXIT, "bond": BOND, "last_child": 0,
                             "next_deposit": 1, "deposits": 0, "paid": 0, "bonds": 0}
    assert bal(state, O) == 999 and total_locked(state) == 0 and conserved(state)
    assert "already" in rejected(state, pl.register_tx(O, NET, EXIT, BOND, nonce(state, O)))


def test_register_misuse(state):
    good = {"operator": OP, "exit_blocks": EXIT, "bond": BOND}

    def bad(args, who: Identity = O, **kw) -> str:
        return rejected(state, call(who, NET, "plasma", "register", args, nonce(state, who), **kw))

    assert "operator" in bad(good, A)  # registers someone else's chain
    bad(good, amount=1)
    for args in (
        None,
        [1],
        {**good, "x": 1},
        {k: v for k, v in good.items() if k != "bond"},
        {**good, "operator": OP[:31]},
        {**good, "exit_blocks": 0},
        {**good, "exit_blocks": pl.MAX_EXIT_BLOCKS + 1},
        {**good, "exit_blocks": True},
        {**good, "bond": -1},
        {**good, "bond": 1.0},
    ):
        bad(args)
    assert pl.chain_record(state, OP) is None


def test_register_at_the_bounds(state):
    apply(state, pl.register_tx(O, NET, 1, 0, 0))
    apply(state, pl.register_tx(A, NET, pl.MAX_EXIT_BLOCKS, 2**62, 0))
    assert record(state)["exit_blocks"] == 1 and record(state, A.pubkey)["bond"] == 2**62


# ------------------------------------------------------------------ deposit


def test_deposit_records_a_one_tx_block(state):
    registered(state)
    pos, t = deposit(state, A, 100, height=4)
    assert pos == position(1, 0, 0)
    root = PlasmaBlock(1, (t,)).root
    assert pl.committed_block(state, OP, 1) == (root, 4, A.pubkey, 100)
    pos2, _ = deposit(state, B, 30, height=5)
    assert pos2 == position(2, 0, 0)
    rec = record(state)
    assert rec["next_deposit"] == 3 and rec["deposits"] == 130 and rec["last_child"] == 0
    assert bal(state, A) == 1000 - 101 and total_locked(state) == 130 and conserved(state)


def test_deposit_misuse(state):
    rejected(state, pl.deposit_call_tx(A, NET, OP, 10, 0))  # no such chain
    registered(state)
    rejected(state, pl.deposit_call_tx(A, NET, OP, 0, 0))  # nothing deposited
    rejected(state, pl.deposit_call_tx(A, NET, OP, 1000, 0), "insufficient_funds")
    rejected(state, call(A, NET, "plasma", "deposit", {"operator": OP, "x": 1}, 0, amount=5))
    rejected(state, call(A, NET, "plasma", "deposit", {"operator": 5}, 0, amount=5))
    assert record(state)["deposits"] == 0 and pl.committed_block(state, OP, 1) is None


def test_deposits_fill_the_gap_before_the_next_child_block(state):
    registered(state)
    # as if 998 deposits had been made: the next one takes the last free number
    state.set(("c", "plasma", OP), {**record(state), "next_deposit": CHILD_BLOCK_INTERVAL - 1})
    apply(state, pl.deposit_call_tx(A, NET, OP, 5, 0))
    assert pl.committed_block(state, OP, CHILD_BLOCK_INTERVAL - 1) is not None
    assert "too many deposits" in rejected(state, pl.deposit_call_tx(A, NET, OP, 5, 1))
    committed(state, CHILD_BLOCK_INTERVAL, [])
    apply(state, pl.deposit_call_tx(A, NET, OP, 5, 1))
    assert pl.committed_block(state, OP, CHILD_BLOCK_INTERVAL + 1)[2:] == (A.pubkey, 5)


# ------------------------------------------------------------------ commit


def test_commit(state):
    registered(state)
    deposit(state, A, 100)
    deposit(state, A, 50)
    b = committed(state, 1000, [], height=7)
    assert pl.committed_block(state, OP, 1000) == (b.root, 7, None, 0)
    assert (record(state)["last_child"], record(state)["next_deposit"]) == (1000, 1001)
    committed(state, 3000, [], height=8)  # gaps are allowed
    pos, _ = deposit(state, B, 10)
    assert pos == position(3001, 0, 0)
    assert [n for n, *_ in pl.blocks_after(state, OP, 0)] == [1, 2, 1000, 3000, 3001]
    assert pl.blocks_after(state, OP, 1000)[0] == (3000, b.root, 8, None, 0)
    assert pl.blocks_after(state, OP, 3001) == [] and conserved(state)


def test_commit_misuse(state):
    root = b"r" * 32
    rejected(state, pl.commit_tx(O, NET, 1000, root, 0))  # not registered
    registered(state)
    assert "operator" in rejected(state, call(A, NET, "plasma", "commit",
                                              {"operator": OP, "number": 1000, "root": root}, 0))
    rejected(state, call(O, NET, "plasma", "commit",
                         {"operator": OP, "number": 1000, "root": root}, 1, amount=1))
    for number in (0, 1, 999, 1500, -1000, 2**63):
        rejected(state, pl.commit_tx(O, NET, number, root, 1))
    rejected(state, pl.commit_tx(O, NET, 1000, root[:31], 1))
    apply(state, pl.commit_tx(O, NET, 2000, root, 1))
    for number in (1000, 2000):  # not increasing
        assert "not above" in rejected(state, pl.commit_tx(O, NET, number, root, 2))
    assert record(state)["last_child"] == 2000


# ------------------------------------------------------------------ start_exit


def spend_block(state: State, height: int = 2) -> tuple[int, PlasmaTx, PlasmaBlock, PlasmaTx]:
    """A deposits 100 (block 1); block 1000 holds [C's mint of 7, A -> B 60 + A 40]."""
    dpos, _ = deposit(state, A, 100)
    filler = send([], [(C, 7)])
    t = send([(dpos, A)], [(B, 60), (A, 40)])
    committed(state, 1000, [filler, t], height)
    return dpos, t, PlasmaBlock(1000, (filler, t)), filler


def test_start_exit_of_a_child_block_output(state):
    registered(state)
    _, t, block, _ = spend_block(state, height=3)
    pos = position(1000, 1, 0)
    apply(state, exit_tx(state, B, pos, t, block.proof(1), confirms=confirms_of(t, block, A)),
          height=5)
    assert exit_of(state, pos) == {
        "owner": B.pubkey, "amount": 60, "bond": BOND, "started": 5,
        "exitable_at": max(5 + EXIT, 3 + 2 * EXIT), "status": "pending", "challenger": None}
    assert bal(state, B) == 500 - BOND - 1
    assert record(state)["bonds"] == BOND and total_locked(state) == 100 + BOND
    assert conserved(state)
    assert [e["pos"] for e in pl.exits(state, OP)] == [pos]


def test_start_exit_misuse(state):
    registered(state)
    dpos, t, block, filler = spend_block(state)
    pos, proof, cf = position(1000, 1, 0), block.proof(1), confirms_of(t, block, A)

    def ex(who: Identity, pos: int, t: PlasmaTx, proof: list[bytes], **kw) -> Tx:
        return exit_tx(state, who, pos, t, proof, confirms=kw.pop("confirms", cf), **kw)

    for bond in (0, BOND - 1, BOND + 1):
        assert "bond" in rejected(state, ex(B, pos, t, proof, bond=bond))
    assert "owner" in rejected(state, ex(A, pos, t, proof))  # B's output
    assert "owner" in rejected(state, ex(B, position(1000, 1, 1), t, proof))  # A's
    rejected(state, ex(B, position(1000, 1, 2), t, proof))  # no output 2
    assert "not at index" in rejected(state, ex(B, position(1000, 0, 0), t, proof))
    rejected(state, ex(B, pos, t, block.proof(0)))  # the filler's proof
    rejected(state, ex(B, pos, t, []))
    rejected(state, ex(B, pos, t, [b"\0" * 32] * 3))
    assert "not committed" in rejected(state, ex(B, position(2000, 1, 0), t, proof))
    assert "not committed" in rejected(state, ex(A, position(2, 0, 0),
                                                 deposit_tx(OP, A.pubkey, 100), [], confirms=[]))
    other = send([(dpos, A)], [(B, 60), (A, 40)], chain=A.pubkey)  # of another chain
    rejected(state, ex(B, pos, other, proof))
    t2 = send([(dpos, A)], [(B, 61), (A, 39)])  # not the tx in the block
    rejected(state, ex(B, pos, t2, proof))
    unsigned = PlasmaTx(OP, t.inputs, t.outputs, (b"\0" * 64,))  # the hash, not the leaf
    assert "not at index" in rejected(state, ex(B, pos, unsigned, proof))
    good = ex(B, pos, t, proof).args
    assert good is not None
    for args in (
        {**good, "tx": b"junk"},
        {**good, "tx": t.to_wire()},
        {**good, "proof": b"".join(proof)},
        {**good, "proof": [*proof, 5]},
        {**good, "pos": str(pos)},
        {**good, "pos": 0},
        {**good, "operator": A.pubkey},  # no such chain
        {k: v for k, v in good.items() if k != "proof"},
        {k: v for k, v in good.items() if k != "confirms"},
        {**good, "confirms": [tuple(c) for c in good["confirms"]]},
        {**good, "confirms": [[*c, b""] for c in good["confirms"]]},
        {**good, "confirms": [[c[0][:31], c[1]] for c in good["confirms"]]},
        {**good, "confirms": [[c[0], c[1][:63]] for c in good["confirms"]]},
        {**good, "confirms": good["confirms"] * 2},
    ):
        rejected(state, call(B, NET, "plasma", "start_exit", args, 0, amount=BOND))
    assert pl.exits(state, OP) == [] and record(state)["bonds"] == 0
    apply(state, ex(B, pos, t, proof))
    assert "already" in rejected(state, ex(B, pos, t, proof))  # double exit


def test_start_exit_needs_the_inputs_confirmations(state):
    registered(state)
    dpos, t, block, _ = spend_block(state)
    pos, proof = position(1000, 1, 0), block.proof(1)
    digest = confirm_digest(t.hash, block.root)
    other_root = committed(state, 2000, [send([], [(C, 1)])]).root

    def refused(confirms) -> str:
        return rejected(state, exit_tx(state, B, pos, t, proof, confirms=confirms))

    assert "confirms" in refused([])  # missing
    assert "not signed by that owner" in refused([(C.pubkey, C.sign(digest))])  # wrong owner
    assert "not signed by that owner" in refused([(B.pubkey, B.sign(digest))])  # B's own
    assert "confirmation" in refused([(A.pubkey, C.sign(digest))])  # by the wrong key
    assert "confirmation" in refused([(A.pubkey, b"\0" * 64)])
    assert "confirmation" in refused([(A.pubkey, A.sign(t.hash))])  # not a confirmation
    assert "confirmation" in refused(  # over another root
        [(A.pubkey, A.sign(confirm_digest(t.hash, other_root)))])
    assert pl.exits(state, OP) == []
    apply(state, exit_tx(state, B, pos, t, proof, confirms=[(A.pubkey, A.sign(digest))]))
    assert exit_of(state, pos)["status"] == "pending"


def test_two_inputs_two_confirmations_in_input_order(state):
    registered(state)
    apos, _ = deposit(state, A, 10)
    bpos, _ = deposit(state, B, 20)
    t = send([(apos, A), (bpos, B)], [(C, 30)])
    block = committed(state, 1000, [t])
    for owners in ((A,), (B, A), (A, C), (A, B, B)):
        rejected(state, exit_tx(state, C, position(1000, 0, 0), t, block.proof(0),
                                confirms=confirms_of(t, block, *owners)))
    apply(state, exit_tx(state, C, position(1000, 0, 0), t, block.proof(0),
                         confirms=confirms_of(t, block, A, B)))


def test_a_payer_cannot_exit_both_an_unconfirmed_input_and_its_change(state):
    """The confirmation an exit of the change shows makes the input's exit a cheat."""
    registered(state)
    dpos, t, block, _ = spend_block(state, height=2)  # A: 100 -> B 60 + A 40 (change)
    dtx, change, proof = deposit_tx(OP, A.pubkey, 100), position(1000, 1, 1), block.proof(1)
    # the input first: cancelled (a challenge) by the exit of the change, A's bond to A
    apply(state, exit_tx(state, A, dpos, dtx, []), height=3)
    a0 = bal(state, A)
    apply(state, exit_tx(state, A, change, t, proof, confirms=confirms_of(t, block, A)),
          height=4)
    assert exit_of(state, dpos)["status"] == "challenged"
    assert exit_of(state, dpos)["challenger"] == A.pubkey
    assert bal(state, A) == a0 - BOND - 1 + BOND and record(state)["bonds"] == BOND
    # B's exit of its payment shows the same confirmation again: nothing left to cancel
    apply(state, exit_tx(state, B, position(1000, 1, 0), t, proof,
                         confirms=confirms_of(t, block, A)), height=4)
    assert conserved(state)
    apply(state, process(state), height=100)
    assert record(state)["paid"] == 100 and conserved(state)


def test_an_input_exit_after_its_confirmed_spend_was_shown_is_refused(state):
    registered(state)
    dpos, t, block, _ = spend_block(state, height=2)
    dtx = deposit_tx(OP, A.pubkey, 100)
    apply(state, exit_tx(state, A, position(1000, 1, 1), t, block.proof(1),
                         confirms=confirms_of(t, block, A)), height=3)
    assert "confirmed spend" in rejected(state, exit_tx(state, A, dpos, dtx, []), height=4)


def test_a_change_exit_after_its_input_was_paid_is_refused(state):
    registered(state)
    dpos, t, block, _ = spend_block(state, height=2)
    apply(state, exit_tx(state, A, dpos, deposit_tx(OP, A.pubkey, 100), []), height=3)
    apply(state, process(state), height=100)
    assert exit_of(state, dpos)["status"] == "finalized"
    for who, pos in ((A, position(1000, 1, 1)), (B, position(1000, 1, 0))):
        assert "already exited" in rejected(state, exit_tx(
            state, who, pos, t, block.proof(1), confirms=confirms_of(t, block, A)), height=101)


def test_a_spend_forged_by_another_key_does_not_stop_the_owner(state):
    """The operator "spends" A's deposit in an invalid block, signing and confirming as
    itself: it may exit what it invented (priority decides), A still exits its deposit."""
    registered(state)
    dpos, dtx = deposit(state, A, 100)
    steal = send([(dpos, O)], [(O, 100)])
    block = committed(state, 1000, [steal], height=2)
    apply(state, exit_tx(state, A, dpos, dtx, []), height=3)
    apply(state, exit_tx(state, O, position(1000, 0, 0), steal, block.proof(0),
                         confirms=confirms_of(steal, block, O)), height=3)
    assert exit_of(state, dpos)["status"] == "pending"  # not A's confirmation: no challenge
    apply(state, process(state), height=100)
    assert exit_of(state, dpos)["status"] == "finalized"
    assert exit_of(state, position(1000, 0, 0))["status"] == "unfunded"


def test_exitable_at_for_an_old_and_a_recent_output(state):
    registered(state)
    old, old_tx = deposit(state, A, 100, height=1)
    recent, recent_tx = deposit(state, B, 50, height=50)
    apply(state, exit_tx(state, A, old, old_tx, []), height=100)
    apply(state, exit_tx(state, B, recent, recent_tx, []), height=51)
    assert exit_of(state, old)["exitable_at"] == 100 + EXIT  # waited long enough already
    assert exit_of(state, recent)["exitable_at"] == 50 + 2 * EXIT  # must age first


# ------------------------------------------------------------------ process_exits


def test_exit_of_a_deposit(state):
    registered(state)
    pos, t = deposit(state, A, 100, height=2)
    apply(state, exit_tx(state, A, pos, t, []), height=3)
    due = 2 + 2 * EXIT
    assert exit_of(state, pos)["exitable_at"] == due
    a0 = bal(state, A)
    apply(state, process(state), height=due - 1)  # nothing due yet: a no-op
    assert exit_of(state, pos)["status"] == "pending" and bal(state, A) == a0
    assert total_locked(state) == 100 + BOND
    apply(state, process(state), height=due)
    assert exit_of(state, pos)["status"] == "finalized" and bal(state, A) == a0 + 100 + BOND
    rec = record(state)
    assert (rec["deposits"], rec["paid"], rec["bonds"]) == (100, 100, 0)
    assert total_locked(state) == 0 and conserved(state)
    apply(state, process(state), height=due + 50)  # processed once only
    assert bal(state, A) == a0 + 100 + BOND
    assert "already" in rejected(state, exit_tx(state, A, pos, t, []), height=due + 50)


def test_process_exits_misuse(state):
    rejected(state, process(state))  # no such chain
    registered(state)
    rejected(state, call(W, NET, "plasma", "process_exits", {"operator": OP}, 0, amount=1))
    rejected(state, call(W, NET, "plasma", "process_exits", {}, 0))


def invalid_mint(state: State, number: int, amount: int, height: int) -> tuple[int, PlasmaTx]:
    """The operator commits a block with a tx creating `amount` for itself from nothing."""
    mint = send([], [(O, amount)])
    committed(state, number, [mint], height)
    return position(number, 0, 0), mint


def test_exits_finalise_in_priority_order_and_a_younger_output_cannot_jump_ahead(state):
    registered(state)
    dpos, dtx = deposit(state, A, 100, height=1)
    mpos, mint = invalid_mint(state, 1000, 100, height=5)
    apply(state, exit_tx(state, O, mpos, mint, []), height=6)  # the operator exits first...
    apply(state, exit_tx(state, A, dpos, dtx, []), height=12)  # ...A reacts six blocks later
    assert exit_of(state, mpos)["exitable_at"] == 5 + 2 * EXIT == 25
    assert exit_of(state, dpos)["exitable_at"] == 12 + EXIT == 22
    assert [e["pos"] for e in pl.exits(state, OP)] == [dpos, mpos]
    a0, o0 = bal(state, A), bal(state, O)
    apply(state, process(state), height=25)
    assert exit_of(state, dpos)["status"] == "finalized" and bal(state, A) == a0 + 100 + BOND
    assert exit_of(state, mpos)["status"] == "unfunded" and bal(state, O) == o0 + BOND
    rec = record(state)
    assert (rec["paid"], rec["bonds"]) == (100, 0) and total_locked(state) == 0
    assert conserved(state)


def test_equal_exitable_at_goes_by_position(state):
    registered(state)
    apos, atx = deposit(state, A, 100, height=1)
    bpos, btx = deposit(state, B, 50, height=1)
    mpos, mint = invalid_mint(state, 1000, 120, height=1)
    for who, pos, t in ((O, mpos, mint), (B, bpos, btx), (A, apos, atx)):  # any start order
        apply(state, exit_tx(state, who, pos, t, []), height=2)
    assert {e["exitable_at"] for e in pl.exits(state, OP)} == {1 + 2 * EXIT}
    assert [e["pos"] for e in pl.exits(state, OP)] == [apos, bpos, mpos]
    apply(state, process(state), height=1 + 2 * EXIT)
    assert [e["status"] for e in pl.exits(state, OP)] == ["finalized", "finalized", "unfunded"]
    assert record(state)["paid"] == 150 and total_locked(state) == 0 and conserved(state)


def test_an_unfunded_exit_stays_unfunded_and_keeps_the_position(state):
    registered(state)
    mpos, mint = invalid_mint(state, 1000, 30, height=1)
    apply(state, exit_tx(state, O, mpos, mint, []), height=2)
    apply(state, process(state), height=1 + 2 * EXIT)
    assert exit_of(state, mpos)["status"] == "unfunded"
    deposit(state, A, 100, height=30)  # funds arrive later: too late for that exit
    apply(state, process(state), height=40)
    assert exit_of(state, mpos)["status"] == "unfunded" and record(state)["paid"] == 0
    assert "already" in rejected(state, exit_tx(state, O, mpos, mint, []), height=41)
    assert total_locked(state) == 100 and conserved(state)


# ------------------------------------------------------------------ challenge


def challenge(state: State, who: Identity, pos: int, spend: PlasmaTx, spend_pos: int,
              proof: list[bytes], sig: bytes) -> Tx:
    return pl.challenge_tx(who, NET, OP, pos, spend, spend_pos, proof, sig, nonce(state, who))


def spent_deposit(state: State) -> tuple[int, PlasmaTx, PlasmaTx, PlasmaBlock, bytes]:
    """spend_block + A's confirmation; returns (deposit pos, deposit tx, spend, block, sig)."""
    dpos, t, block, _ = spend_block(state, height=2)
    return dpos, deposit_tx(OP, A.pubkey, 100), t, block, confirm(A, t, block)


def test_challenge_with_a_confirmed_spend(state):
    registered(state)
    dpos, dtx, t, block, sig = spent_deposit(state)
    spos = position(1000, 1, 0)
    apply(state, exit_tx(state, A, dpos, dtx, []), height=3)  # A exits what it spent
    w0 = bal(state, W)
    apply(state, challenge(state, W, dpos, t, spos, block.proof(1), sig), height=4)
    ex = exit_of(state, dpos)
    assert ex["status"] == "challenged" and ex["challenger"] == W.pubkey
    assert bal(state, W) == w0 - 1 + BOND and record(state)["bonds"] == 0
    assert total_locked(state) == 100 and conserved(state)
    a0 = bal(state, A)
    apply(state, process(state), height=100)
    assert bal(state, A) == a0 and record(state)["paid"] == 0
    assert "already" in rejected(state, exit_tx(state, A, dpos, dtx, []), height=101)
    rejected(state, challenge(state, W, dpos, t, spos, block.proof(1), sig), height=101)
    # the spend's outputs still exit
    b0 = bal(state, B)
    apply(state, exit_tx(state, B, spos, t, block.proof(1), confirms=[(A.pubkey, sig)]),
          height=101)
    apply(state, process(state), height=101 + EXIT)
    assert bal(state, B) == b0 - 1 + 60 and record(state)["paid"] == 60 and conserved(state)


def test_challenge_is_open_until_the_exit_is_processed(state):
    registered(state)
    dpos, dtx, t, block, sig = spent_deposit(state)
    apply(state, exit_tx(state, A, dpos, dtx, []), height=3)
    late = exit_of(state, dpos)["exitable_at"] + 5  # due, but nobody processed it yet
    apply(state, challenge(state, B, dpos, t, position(1000, 1, 0), block.proof(1), sig), late)
    assert exit_of(state, dpos)["status"] == "challenged"


def test_challenge_refused(state):
    registered(state)
    dpos, dtx, t, block, sig = spent_deposit(state)
    spos, proof = position(1000, 1, 0), block.proof(1)
    rejected(state, challenge(state, W, dpos, t, spos, proof, sig), height=3)  # no exit yet
    apply(state, exit_tx(state, A, dpos, dtx, []), height=3)

    def bad(spend=t, spend_pos=spos, proof=proof, sig=sig, pos=dpos, **kw) -> str:
        if kw:
            args = {"operator": OP, "pos": pos, "spend": spend.encode(), "spend_pos": spend_pos,
                    "proof": proof, "confirm": sig, **kw}
            args = {k: v for k, v in args.items() if v is not None}
            tx = call(W, NET, "plasma", "challenge", args, nonce(state, W))
            return rejected(state, tx, height=4)
        return rejected(state, challenge(state, W, pos, spend, spend_pos, proof, sig), height=4)

    # without a valid signature of the exit's owner on the spend
    forged = PlasmaTx(OP, t.inputs, t.outputs).signed([C])
    fblock = committed(state, 2000, [forged], height=3)
    assert "not signed" in bad(forged, position(2000, 0, 0), fblock.proof(0),
                               confirm(A, forged, fblock))
    # without the owner's confirmation of the spend in its block
    assert "confirm" in bad(sig=b"\0" * 64)
    assert "confirm" in bad(sig=confirm(C, t, block))  # not the owner's
    assert "confirm" in bad(sig=A.sign(confirm_digest(t.hash, fblock.root)))  # another block
    assert "confirm" in bad(sig=A.sign(t.hash))
    bad(sig=sig[:63])
    bad(confirm=None)  # missing
    # a spend not spending pos
    other = send([(position(1000, 0, 0), C)], [(C, 7)])
    oblock = committed(state, 3000, [other], height=3)
    assert "does not spend" in bad(other, position(3000, 0, 0), oblock.proof(0),
                                   confirm(A, other, oblock))
    # a spend not included where it claims to be
    assert "not committed" in bad(spend_pos=position(4000, 1, 0))
    assert "not at index" in bad(spend_pos=position(1000, 0, 0))
    assert "not at index" in bad(spend_pos=position(2000, 1, 0))
    bad(proof=block.proof(0))
    bad(proof=[])
    bad(spend_pos=position(1000, 1, 1))  # not a tx position
    # of another chain, malformed, carrying an amount
    bad(PlasmaTx(A.pubkey, t.inputs, t.outputs).signed([A]))
    bad(spend=t, x=b"")  # extra arg
    bad(spend=t, proof=[1])
    rejected(state, pl.challenge_tx(W, NET, OP, dpos + 1, t, spos, proof, sig, 0), height=4)
    args = {"operator": OP, "pos": dpos, "spend": b"junk", "spend_pos": spos, "proof": proof,
            "confirm": sig}
    rejected(state, call(W, NET, "plasma", "challenge", args, 0), height=4)
    rejected(state, call(W, NET, "plasma", "challenge",
                         dict(args, spend=t.encode()), 0, amount=1), height=4)
    assert exit_of(state, dpos)["status"] == "pending" and record(state)["bonds"] == BOND
    # and a finalised exit is beyond challenge
    apply(state, process(state), height=100)
    assert exit_of(state, dpos)["status"] == "finalized"
    assert "finalized" in rejected(state, challenge(state, W, dpos, t, spos, proof, sig),
                                   height=101)


def test_the_second_input_of_a_spend_challenges_too(state):
    registered(state)
    apos, atx = deposit(state, A, 10)
    bpos, btx = deposit(state, B, 20)
    t = send([(apos, A), (bpos, B)], [(C, 30)])
    block = committed(state, 1000, [t], height=2)
    apply(state, exit_tx(state, B, bpos, btx, []), height=3)
    rejected(state, challenge(state, W, bpos, t, position(1000, 0, 0), block.proof(0),
                              confirm(A, t, block)), height=4)  # A's confirmation, B's exit
    apply(state, challenge(state, W, bpos, t, position(1000, 0, 0), block.proof(0),
                           confirm(B, t, block)), height=4)
    assert exit_of(state, bpos)["status"] == "challenged" and conserved(state)


# ------------------------------------------------------------------ views, builders, misc


def test_views_are_plain_copies(state):
    registered(state)
    pos, t = deposit(state, A, 100)
    apply(state, exit_tx(state, A, pos, t, []), height=2)
    for v in (record(state), exit_of(state, pos), pl.exits(state, OP)[0],
              pl.committed_block(state, OP, 1), pl.blocks_after(state, OP, 0)[0]):
        assert unpack_value(pack_value(v)) == v  # msgpack-friendly, strict types
    rec, ex, listed = record(state), exit_of(state, pos), pl.exits(state, OP)[0]
    rec["paid"] = ex["status"] = listed["status"] = "mangled"
    assert record(state)["paid"] == 0 and exit_of(state, pos)["status"] == "pending"
    assert listed["pos"] == pos and "pos" not in exit_of(state, pos)
    assert pl.chain_record(state, A.pubkey) is None and pl.exit_record(state, OP, 5) is None
    assert pl.committed_block(state, OP, 1000) is None


def test_builders_sign_calls_to_the_contract(state):
    t = deposit_tx(OP, A.pubkey, 5)
    txs = [
        (pl.register_tx(O, NET, EXIT, BOND, 0, fee=3), "register", 0, 3),
        (pl.deposit_call_tx(A, NET, OP, 5, 0), "deposit", 5, 1),
        (pl.commit_tx(O, NET, 1000, b"r" * 32, 1), "commit", 0, 1),
        (pl.start_exit_tx(A, NET, OP, position(1, 0, 0), t, [], BOND, 1), "start_exit", BOND, 1),
        (pl.challenge_tx(W, NET, OP, 1, t, 2, [], b"s" * 64, 0), "challenge", 0, 1),
        (pl.process_exits_tx(W, NET, OP, 0), "process_exits", 0, 1),
    ]
    for tx, method, amount, fee in txs:
        assert tx.verify() and (tx.contract, tx.method, tx.amount, tx.fee) == (
            "plasma", method, amount, fee)
        assert tx.args is not None and tx.args["operator"] == OP
    assert txs[3][0].args["tx"] == t.encode()
    for tx, *_ in txs[:4]:
        apply(state, tx)
    assert exit_of(state, position(1, 0, 0))["amount"] == 5


def test_rejected_call_undoes_the_fee_and_nonce_without_a_block_journal():
    s = genesis_state(GENESIS)  # no journal open: apply_tx opens its own
    before = dict(s.kv)
    with pytest.raises(TxRejected):
        apply(s, pl.deposit_call_tx(A, NET, OP, 5, 0))
    assert s.kv == before and not s.journaling


def test_unknown_method_is_refused_before_running(state):
    rejected(state, call(A, NET, "plasma", "steal", {"operator": OP}, 0), "unknown_method")


# ------------------------------------------------------------------ hypothesis

USERS = (A, B, C)
REWARD = 5


@dataclass
class Output:
    pos: int
    owner: Identity
    amount: int
    tx: PlasmaTx
    block: PlasmaBlock
    utxo_height: int
    spent_by: tuple[PlasmaTx, int, PlasmaBlock] | None = None  # (spend, tx index, block)
    confirmed: bool = False  # the owner signed the spend's confirmation


@dataclass
class Exit:
    owner: Identity
    amount: int
    exitable_at: int
    status: str = "pending"


class PlasmaHistory(RuleBasedStateMachine):
    """Random deposits, committed blocks of valid transfers (and, now and then, a tx minting
    coins from nothing), honest and dishonest exits, challenges and processing at rising
    heights; a model predicts every outcome, coins are conserved, and undoing every block
    restores genesis (no stored record was changed in place)."""

    def __init__(self):
        super().__init__()
        self.state = genesis_state(GENESIS)
        self.genesis = dict(self.state.kv)
        self.balances = dict(GENESIS)
        self.outputs: list[Output] = []
        self.exits: dict[int, Exit] = {}
        self.stopped: set[int] = set()  # challenged with a confirmed spend before exitable_at
        self.shown: set[tuple[int, bytes]] = set()  # (input, owner): confirmation shown on L1
        self.deposits = self.paid = 0
        self.next_child = CHILD_BLOCK_INTERVAL
        self.height, self.minted, self.undos = 1, 0, []
        self.state.begin()

    def send(self, tx: Tx, label: str, ok: bool, payouts: dict[bytes, int]) -> bool:
        """Apply `tx`; check it passed iff the model says `ok`, and then the payouts."""
        before = dict(self.state.kv)
        can_pay = self.balances[tx.sender] >= tx.amount + tx.fee
        try:
            apply_tx(self.state, tx, self.height, M.pubkey, net=NET)
        except TxRejected as exc:
            assert self.state.kv == before
            assert not (ok and can_pay), f"{label} refused: {exc}"
            event(f"{label}: {exc.reason}")
            return False
        assert ok and can_pay, f"{label} accepted against the model"
        event(f"{label}: ok")
        self.balances[tx.sender] -= tx.amount + tx.fee
        self.balances[M.pubkey] = self.balances.get(M.pubkey, 0) + tx.fee
        for pk, amount in payouts.items():
            self.balances[pk] = self.balances.get(pk, 0) + amount
        return True

    @initialize(exit_blocks=st.integers(1, 6), bond=st.integers(0, 4),
                amounts=st.lists(st.integers(1, 120), max_size=3))
    def register(self, exit_blocks, bond, amounts):
        self.exit_blocks, self.bond = exit_blocks, bond
        assert self.send(pl.register_tx(O, NET, exit_blocks, bond, 0), "register", True, {})
        for who, amount in zip(USERS, amounts):
            self.deposit(who, amount)

    @rule(who=st.sampled_from(USERS), amount=st.integers(1, 120))
    def deposit(self, who, amount):
        number = pl.chain_record(self.state, OP)["next_deposit"]
        tx = pl.deposit_call_tx(who, NET, OP, amount, nonce(self.state, who))
        if self.send(tx, "deposit", True, {}):
            t = deposit_tx(OP, who.pubkey, amount)
            self.outputs.append(Output(position(number, 0, 0), who, amount, t,
                                       PlasmaBlock(number, (t,)), self.height))
            self.deposits += amount

    @rule(data=st.data(), ntxs=st.integers(0, 3))
    def commit_block(self, data, ntxs):
        """A block of valid transfers of unspent outputs (or a mint); owners confirm or not."""
        number, self.next_child = self.next_child, self.next_child + CHILD_BLOCK_INTERVAL
        txs: list[tuple[PlasmaTx, list[Output]]] = []
        used: set[int] = set()
        for _ in range(ntxs):
            unspent = [o for o in self.outputs if o.spent_by is None and o.pos not in used]
            if not unspent or data.draw(st.integers(0, 4)) == 0:
                mint = send([], [(O, data.draw(st.integers(1, 300)))])
                txs.append((mint, []))
                continue
            k = data.draw(st.integers(1, min(2, len(unspent))))
            ins = data.draw(st.lists(st.sampled_from(unspent), min_size=k, max_size=k,
                                     unique_by=lambda o: o.pos))
            used.update(o.pos for o in ins)
            total = max(1, sum(o.amount for o in ins) - data.draw(st.integers(0, 1)))  # fee
            first = data.draw(st.integers(1, total)) if total > 1 else total
            outs = [(data.draw(st.sampled_from(USERS)), first)]
            if total - first > 0:
                outs.append((data.draw(st.sampled_from(USERS)), total - first))
            txs.append((send([(o.pos, o.owner) for o in ins], outs), ins))
        block = PlasmaBlock(number, tuple(t for t, _ in txs))
        tx = pl.commit_tx(O, NET, number, block.root, nonce(self.state, O))
        assert self.send(tx, "commit", True, {})
        for i, (t, ins) in enumerate(txs):
            for o in ins:
                o.spent_by = (t, i, block)
                o.confirmed = data.draw(st.integers(0, 3)) > 0
            for j, (owner, amount) in enumerate(t.outputs):
                who = next(u for u in (O, *USERS) if u.pubkey == owner)
                self.outputs.append(Output(position(number, i, j), who, amount, t, block,
                                           self.height))

    @rule(pick=st.integers(0, 50), intruder=st.sampled_from([None, None, None, *USERS]),
          spent=st.booleans(),
          confirms=st.sampled_from(["good"] * 4 + ["none", "wrong key", "wrong owner",
                                                   "wrong root"]))
    def start_exit(self, pick, intruder, spent, confirms):
        """The owner exits one of its outputs (often a spent one: a cheat) with the inputs'
        confirmations (or bad ones); an intruder tries to steal one."""
        among = [o for o in self.outputs if o.spent_by and o.pos not in self.exits]
        if not spent or not among:
            among = self.outputs
        if not among:
            return
        o = among[-1 - pick % len(among)]
        self.exit(o, intruder or o.owner, confirms)

    @rule(pick=st.integers(0, 50), oindex=st.integers(0, 1))
    def exit_a_spend_of_an_exiting_output(self, pick, oindex):
        """The owner of an output of a tx whose input is exiting exits it: the confirmation
        it shows challenges the input's exit (or is refused, if that one was paid)."""
        among = [o for o in self.outputs if o.spent_by and o.pos in self.exits]
        if not among:
            return
        spend, index, block = among[pick % len(among)].spent_by
        pos = position(block.number, index, oindex % len(spend.outputs))
        o = next(o for o in self.outputs if o.pos == pos)
        self.exit(o, o.owner, "good")

    def exit(self, o: Output, who: Identity, confirms: str) -> None:
        proof = o.block.proof(split_pos(o.pos)[1])
        ins = [next(i for i in self.outputs if i.pos == p) for p in o.tx.inputs]
        digest = confirm_digest(o.tx.hash, o.block.root)
        signer = {"good": None, "wrong key": W, "wrong owner": W}
        cf = [] if confirms == "none" else [
            (W.pubkey if confirms == "wrong owner" else i.owner.pubkey,
             (signer.get(confirms) or i.owner).sign(
                 digest if confirms != "wrong root" else confirm_digest(o.tx.hash, b"r" * 32)))
            for i in ins]
        ok = (who is o.owner and o.pos not in self.exits and (confirms == "good" or not ins)
              and (o.pos, who.pubkey) not in self.shown
              and not any(i.pos in self.exits and self.exits[i.pos].owner is i.owner
                          and self.exits[i.pos].status == "finalized" for i in ins))
        cancel = [i.pos for i in ins if i.pos in self.exits
                  and self.exits[i.pos].owner is i.owner and self.exits[i.pos].status == "pending"]
        tx = pl.start_exit_tx(who, NET, OP, o.pos, o.tx, proof, self.bond, nonce(self.state, who),
                              confirms=cf)
        if self.send(tx, "start_exit", ok, {who.pubkey: self.bond * len(cancel)}):
            at = max(self.height + self.exit_blocks, o.utxo_height + 2 * self.exit_blocks)
            self.exits[o.pos] = Exit(o.owner, o.amount, at)
            assert pl.exit_record(self.state, OP, o.pos)["exitable_at"] == at
            for i in ins:
                self.shown.add((i.pos, i.owner.pubkey))
                i.confirmed = True
            for pos in cancel:  # the confirmation shown challenges the input's exit
                ex = self.exits[pos]
                ex.status = "challenged"
                if self.height < ex.exitable_at:
                    self.stopped.add(pos)
                event("start_exit: cancels an input's exit")

    @rule(pick=st.integers(0, 50), who=st.sampled_from([W, *USERS]), any_exit=st.booleans())
    def challenge(self, pick, who, any_exit):
        """A watcher challenges an exit (mostly a pending one) with the spend it knows,
        confirmed or not."""
        pending = [p for p, e in self.exits.items() if e.status == "pending"]
        among = sorted(self.exits) if any_exit or not pending else pending
        if not among:
            return
        pos = among[pick % len(among)]
        ex = self.exits[pos]
        o = next(o for o in self.outputs if o.pos == pos)
        if o.spent_by is None:  # nothing to show: try an unrelated tx of the last block
            last = self.outputs[-1]
            if last.pos == pos:
                return
            spend, index, block = last.tx, split_pos(last.pos)[1], last.block
        else:
            spend, index, block = o.spent_by
        sig = o.owner.sign(confirm_digest(spend.hash, block.root)) if o.confirmed else \
            W.sign(confirm_digest(spend.hash, block.root))
        ok = ex.status == "pending" and o.spent_by is not None and o.confirmed
        tx = pl.challenge_tx(who, NET, OP, pos, spend, position(block.number, index, 0),
                             block.proof(index), sig, nonce(self.state, who))
        if self.send(tx, "challenge", ok, {who.pubkey: self.bond} if ok else {}):
            ex.status = "challenged"
            if self.height < ex.exitable_at:
                self.stopped.add(pos)
                event("challenge: in time")

    @rule(who=st.sampled_from([W, *USERS]))
    def process_exits(self, who):
        payouts: dict[bytes, int] = {}
        due = sorted((e.exitable_at, pos) for pos, e in self.exits.items()
                     if e.status == "pending" and e.exitable_at <= self.height)
        paid = self.paid
        for _, pos in due:
            e = self.exits[pos]
            funded = self.deposits - paid >= e.amount
            paid += e.amount if funded else 0
            pk = e.owner.pubkey
            payouts[pk] = payouts.get(pk, 0) + self.bond + (e.amount if funded else 0)
        if self.send(pl.process_exits_tx(who, NET, OP, nonce(self.state, who)), "process", True,
                     payouts):
            for _, pos in due:
                e = self.exits[pos]
                e.status = "finalized" if self.deposits - self.paid >= e.amount else "unfunded"
                self.paid += e.amount if e.status == "finalized" else 0
                event(f"exit: {e.status}")
            assert self.paid == paid

    @rule(jump=st.sampled_from([1, 1, 2, 5, 12]), then_process=st.booleans())
    def block(self, jump, then_process):
        self.undos.append(self.state.commit())
        self.state.begin()
        self.height += jump
        apply_reward(self.state, M.pubkey, REWARD)
        self.balances[M.pubkey] = self.balances.get(M.pubkey, 0) + REWARD
        self.minted += REWARD
        if then_process:
            self.process_exits(W)

    # -- invariants --------------------------------------------------------------------
    @invariant()
    def coins_are_conserved(self):
        assert conserved(self.state, self.minted)
        pending = sum(e.status == "pending" for e in self.exits.values())
        assert total_locked(self.state) == self.deposits - self.paid + pending * self.bond

    @invariant()
    def paid_never_exceeds_deposits(self):
        rec = pl.chain_record(self.state, OP)
        if rec is not None:
            assert rec["paid"] <= rec["deposits"]
            assert (rec["paid"], rec["deposits"]) == (self.paid, self.deposits)

    @invariant()
    def state_matches_the_model(self):
        for pk, amount in self.balances.items():
            assert self.state.balance(pk) == amount
        listed = {e["pos"]: e["status"] for e in pl.exits(self.state, OP)}
        assert listed == {pos: e.status for pos, e in self.exits.items()}

    @invariant()
    def a_timely_challenged_spent_output_never_finalises(self):
        for pos in self.stopped:
            assert pl.exit_record(self.state, OP, pos)["status"] != "finalized"

    def teardown(self):
        self.undos.append(self.state.commit())
        for undo in reversed(self.undos):
            self.state.undo(undo)
        assert self.state.kv == self.genesis


PlasmaHistory.TestCase.settings = settings(max_examples=80, stateful_step_count=50,
                                           deadline=None)
test_plasma_history = PlasmaHistory.TestCase
