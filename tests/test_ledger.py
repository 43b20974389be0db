"""Transactions, the ledger rule and the escrow contract, driven synchronously."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from p2p_l2.chain import tx as txmod
from p2p_l2.chain.contracts import CONTRACTS, Contract, register
from p2p_l2.chain.contracts.escrow import CLAIM_WINDOW
from p2p_l2.chain.ledger import (
    TxRejected,
    apply_reward,
    apply_tx,
    check_static,
    genesis_state,
    total_balances,
    total_locked,
)
from p2p_l2.chain.state import State
from p2p_l2.chain.tx import MAX_TX_SIZE, SigCache, Tx, call, transfer
from p2p_l2.errors import P2PL2Error, RemoteProtocolError
from p2p_l2.wire.identity import Identity

NET = "testnet"
A, B, C, M = (Identity.derive(1, n) for n in ("alice", "bob", "carol", "miner"))
GENESIS = {A.pubkey: 1000, B.pubkey: 500, C.pubkey: 0}


@pytest.fixture
def state() -> State:
    return genesis_state(GENESIS)


def apply(state: State, tx: Tx, height: int = 1, miner: bytes | None = M.pubkey, **kw) -> None:
    apply_tx(state, tx, height, miner, net=NET, **kw)


def rejected(state: State, tx: Tx, reason: str, height: int = 1, **kw) -> TxRejected:
    """Assert `tx` is rejected with `reason` and leaves `state` exactly as it was."""
    before, journaling = dict(state.kv), state.journaling
    with pytest.raises(TxRejected) as info:
        apply(state, tx, height, **kw)
    assert info.value.reason == reason, info.value
    assert state.kv == before
    assert state.journaling == journaling
    return info.value


def lock(sender: Identity, to: Identity, amount: int, unlock: int, nonce: int) -> Tx:
    args = {"to": to.pubkey, "unlock_height": unlock}
    return call(sender, NET, "escrow", "lock", args, nonce, amount=amount)


def escrow_call(sender: Identity, method: str, escrow_id: bytes, nonce: int, **kw) -> Tx:
    return call(sender, NET, "escrow", method, {"id": escrow_id}, nonce, **kw)


def conserved(state: State, minted: int = 0, burned: int = 0) -> bool:
    return total_balances(state) + total_locked(state) == sum(GENESIS.values()) + minted - burned


# ------------------------------------------------------------------ transactions


def test_txid_covers_every_field_but_the_signature():
    tx = transfer(A, NET, B.pubkey, 5, 0)
    unsigned = Tx(NET, "transfer", A.pubkey, 0, 1, to=B.pubkey, amount=5)
    assert tx.txid == unsigned.txid and len(tx.txid) == 32
    assert Tx(NET, "transfer", A.pubkey, 0, 2, to=B.pubkey, amount=5).txid != tx.txid
    assert Tx("other", "transfer", A.pubkey, 0, 1, to=B.pubkey, amount=5).txid != tx.txid
    assert tx.verify() and not unsigned.verify()


def test_signature_checks_and_cache(monkeypatch):
    tx = transfer(A, NET, B.pubkey, 5, 0)
    body = dict(net=NET, kind="transfer", sender=A.pubkey, nonce=0, fee=1, to=B.pubkey, amount=5)
    forged = Tx(**body, sig=B.sign(txmod.SIG_DOMAIN + tx.txid))
    assert not forged.verify()
    flipped = Tx(**body, sig=bytes([tx.sig[0] ^ 1]) + tx.sig[1:])
    assert not flipped.verify()
    with pytest.raises(ValueError):
        Tx(NET, "transfer", A.pubkey, 0, 1, to=B.pubkey, amount=5).signed(B)

    calls = []
    real = txmod._verify
    monkeypatch.setattr(txmod, "_verify", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(txmod, "SIG_CACHE", SigCache())
    fresh = transfer(A, NET, B.pubkey, 6, 0)
    assert fresh.verify() and fresh.verify()
    again = Tx.from_wire(msgpack.unpackb(fresh.encode()))  # a new object, same (txid, sig)
    assert again.verify()
    assert len(calls) == 1
    assert not flipped.verify() and not flipped.verify()  # failures are not cached
    assert len(calls) == 3


def test_sig_cache_is_bounded():
    cache = SigCache(10)
    for i in range(100):
        cache.add((bytes([i]), b""))
        assert len(cache) <= 10
    assert (bytes([99]), b"") in cache and (bytes([0]), b"") not in cache
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize(
    "tx",
    [
        transfer(A, NET, B.pubkey, 5, 3, fee=7),
        call(A, NET, "escrow", "lock", {"to": B.pubkey, "unlock_height": 9}, 0, amount=4),
        call(A, NET, "escrow", "release", None, 1),
        call(A, NET, "x", "y", {"deep": [1, -2, b"z", {"k": [None, True, "s"]}]}, 2),
    ],
)
def test_wire_round_trip(tx):
    data = tx.encode()
    assert tx.size == len(data) <= MAX_TX_SIZE
    back = Tx.from_wire(msgpack.unpackb(data))
    assert back == tx and back.txid == tx.txid and back.size == tx.size and hash(back) == hash(tx)
    assert back.verify()


def _wire(**changes):
    d = transfer(A, NET, B.pubkey, 5, 0).to_wire()
    d.update(changes)
    return d


def _call_wire(**changes):
    d = call(A, NET, "escrow", "release", {"id": b"i" * 32}, 0).to_wire()
    d.update(changes)
    return d


@pytest.mark.parametrize(
    "d",
    [
        [1, 2],
        _wire(n=True),
        _wire(n=-1),
        _wire(f=2**63),
        _wire(a=1.0),
        _wire(s=b"s" * 31),
        _wire(s="s" * 32),
        _wire(sig=b"x" * 63),
        _wire(to=None),
        _wire(to=b"t" * 33),
        _wire(k="mint"),
        _wire(k=None),
        _wire(net=""),
        _wire(net=5),
        _wire(c="escrow"),
        _wire(extra=1),
        {k: v for k, v in _wire().items() if k != "a"},
        _call_wire(c=None),
        _call_wire(m=""),
        _call_wire(to=B.pubkey),
        _call_wire(x=[1]),
        _call_wire(x={1: 2}),
        _call_wire(x={"f": 1.5}),
        _call_wire(x={"deep": [[[[[[[[[[1]]]]]]]]]]}),
        _call_wire(x={"blob": b"b" * MAX_TX_SIZE}),
    ],
)
def test_from_wire_rejects(d):
    with pytest.raises(RemoteProtocolError) as info:
        Tx.from_wire(d)
    assert info.value.reason == "bad_tx"


def test_tx_rejected_shape():
    exc = TxRejected("bad_nonce", "nonce 3, expected 1")
    assert isinstance(exc, P2PL2Error)
    assert str(exc) == "bad_nonce: nonce 3, expected 1"
    assert (exc.reason, exc.detail) == ("bad_nonce", "nonce 3, expected 1")


# ------------------------------------------------------------------ the ledger rule


def test_transfer_moves_amount_fee_and_nonce(state):
    apply(state, transfer(A, NET, B.pubkey, 100, 0, fee=3))
    assert state.balance(A.pubkey) == 897 and state.nonce(A.pubkey) == 1
    assert state.balance(B.pubkey) == 600 and state.balance(M.pubkey) == 3
    apply(state, transfer(A, NET, C.pubkey, 897 - 1, 1, fee=1))  # spend everything
    assert state.balance(A.pubkey) == 0 and ("bal", A.pubkey) not in state.kv
    assert conserved(state)


def test_fee_burned_without_miner_and_self_transfer(state):
    apply(state, transfer(A, NET, A.pubkey, 10, 0, fee=4), miner=None)
    assert state.balance(A.pubkey) == 996 and state.nonce(A.pubkey) == 1
    assert conserved(state, burned=4)


def test_rejection_reasons(state):
    rejected(state, transfer(A, "elsewhere", B.pubkey, 1, 0), "wrong_network")
    good = transfer(A, NET, B.pubkey, 1, 0)
    bad_sig = Tx(NET, "transfer", A.pubkey, 0, 1, to=B.pubkey, amount=1, sig=b"\0" * 64)
    rejected(state, bad_sig, "bad_signature")
    apply(state, bad_sig, check_sig=False)  # the caller vouched for it
    state = genesis_state(GENESIS)
    rejected(state, transfer(A, NET, B.pubkey, 1, 1), "bad_nonce")
    apply(state, good)
    rejected(state, good, "bad_nonce")  # replay
    rejected(state, transfer(A, NET, B.pubkey, 999, 1, fee=1), "insufficient_funds")
    apply(state, transfer(A, NET, B.pubkey, 997, 1, fee=1))  # exactly the balance
    rejected(state, transfer(C, NET, B.pubkey, 1, 0, fee=0), "insufficient_funds")
    rejected(state, transfer(B, NET, A.pubkey, 0, 0), "bad_amount")
    negative = Tx(NET, "transfer", B.pubkey, 0, 1, to=A.pubkey, amount=-5).signed(B)
    rejected(state, negative, "bad_amount")
    free = Tx(NET, "transfer", B.pubkey, 0, -1, to=A.pubkey, amount=5).signed(B)
    rejected(state, free, "bad_amount")
    rejected(state, Tx(NET, "transfer", B.pubkey, 0, 1, amount=5).signed(B), "malformed")
    rejected(state, Tx(NET, "mint", B.pubkey, 0, 1, amount=5).signed(B), "malformed")
    rejected(state, call(B, NET, "nope", "x", None, 0), "unknown_contract")
    rejected(state, call(B, NET, "escrow", "steal", None, 0), "unknown_method")
    rejected(state, escrow_call(B, "release", b"?" * 32, 0), "contract_error")
    assert conserved(state)


def test_check_static_needs_no_state():
    check_static(transfer(A, NET, B.pubkey, 1, 0), NET)
    with pytest.raises(TxRejected, match="wrong_network"):
        check_static(transfer(A, NET, B.pubkey, 1, 0), "other")


class Boom(Contract):
    """Writes, then fails: the ledger must undo the writes and the fee."""

    name = "boom"
    methods = frozenset({"rejects", "crashes"})

    def apply(self, state, tx, height):
        state.set(("c", "boom", "x"), 1)
        state.add_balance(tx.sender, 1_000_000)
        if tx.method == "rejects":
            raise TxRejected("contract_error", "boom")
        raise RuntimeError("contract bug")

    def locked(self, state):
        return 0


@pytest.mark.parametrize("in_journal", [False, True])
def test_failed_call_is_atomic(monkeypatch, state, in_journal):
    monkeypatch.setitem(CONTRACTS, "boom", Boom())
    if in_journal:
        state.begin()
        apply(state, transfer(A, NET, B.pubkey, 10, 0))
        before = dict(state.kv)
        nonce = 1
    else:
        before, nonce = dict(state.kv), 0
    rejected(state, call(A, NET, "boom", "rejects", None, nonce, amount=5), "contract_error")
    with pytest.raises(RuntimeError):
        apply(state, call(A, NET, "boom", "crashes", None, nonce))
    assert state.kv == before and state.journaling == in_journal
    apply(state, transfer(A, NET, C.pubkey, 1, nonce))  # the account still works
    if in_journal:
        undo = state.commit()
        touched = {("nonce", A.pubkey)} | {("bal", u.pubkey) for u in (A, B, C, M)}
        assert State.touched(undo) == touched
        state.undo(undo)
        assert state.kv == genesis_state(GENESIS).kv


def test_register_refuses_a_second_contract_with_the_same_name(monkeypatch):
    monkeypatch.setitem(CONTRACTS, "boom", Boom())
    with pytest.raises(ValueError):
        register(Boom())
    assert register(CONTRACTS["boom"]) is CONTRACTS["boom"]  # idempotent for the same object
    with pytest.raises(TypeError):
        register(object())  # type: ignore[arg-type]


def test_reward_genesis_and_totals(state):
    apply_reward(state, M.pubkey, 50)
    apply_reward(state, M.pubkey, 0)
    assert state.balance(M.pubkey) == 50 and conserved(state, minted=50)
    with pytest.raises(ValueError):
        apply_reward(state, M.pubkey, -1)
    for bad in ({b"short": 1}, {A.pubkey: -1}, {A.pubkey: True}):
        with pytest.raises(ValueError):
            genesis_state(bad)
    assert ("bal", C.pubkey) not in genesis_state(GENESIS).kv  # zero balances are absent


# ------------------------------------------------------------------ escrow


def test_escrow_release(state):
    t = lock(A, B, 100, unlock=10, nonce=0)
    apply(state, t, height=1)
    assert state.balance(A.pubkey) == 899 and total_locked(state) == 100 and conserved(state)
    rejected(state, escrow_call(B, "release", t.txid, 0), "contract_error")  # not the payer
    apply(state, escrow_call(A, "release", t.txid, 1), height=2)  # early, by the payer
    assert state.balance(B.pubkey) == 600 and total_locked(state) == 0 and conserved(state)
    rejected(state, escrow_call(A, "release", t.txid, 2), "contract_error")  # already paid


def test_escrow_claim_after_unlock(state):
    t = lock(A, B, 100, unlock=10, nonce=0)
    apply(state, t, height=1)
    rejected(state, escrow_call(B, "claim", t.txid, 0), "contract_error", height=9)
    rejected(state, escrow_call(A, "claim", t.txid, 1), "contract_error", height=10)  # not `to`
    apply(state, escrow_call(B, "claim", t.txid, 0), height=10)
    assert state.balance(B.pubkey) == 500 - 1 + 100 and total_locked(state) == 0
    rejected(state, escrow_call(B, "claim", t.txid, 1), "contract_error", height=11)
    assert conserved(state)


def test_escrow_refund_after_claim_window(state):
    t = lock(A, B, 100, unlock=10, nonce=0)
    apply(state, t, height=1)
    early = 10 + CLAIM_WINDOW - 1
    rejected(state, escrow_call(A, "refund", t.txid, 1), "contract_error", height=early)
    rejected(state, escrow_call(B, "refund", t.txid, 0), "contract_error", height=10 + CLAIM_WINDOW)
    apply(state, escrow_call(A, "refund", t.txid, 1), height=10 + CLAIM_WINDOW)
    assert state.balance(A.pubkey) == 1000 - 2 and total_locked(state) == 0 and conserved(state)


@pytest.mark.parametrize(
    "args, amount",
    [
        ({"to": B.pubkey, "unlock_height": 5}, 0),  # nothing to lock
        ({"to": B.pubkey}, 5),
        ({"to": B.pubkey, "unlock_height": 5, "x": 1}, 5),
        ({"to": B.pubkey[:31], "unlock_height": 5}, 5),
        ({"to": B.pubkey, "unlock_height": -1}, 5),
        ({"to": B.pubkey, "unlock_height": True}, 5),
        ({"to": B.pubkey, "unlock_height": 2**63}, 5),
        (None, 5),
    ],
)
def test_escrow_lock_misuse(state, args, amount):
    rejected(state, call(A, NET, "escrow", "lock", args, 0, amount=amount), "contract_error")


@pytest.mark.parametrize("method", ["release", "claim", "refund"])
def test_escrow_settle_misuse(state, method):
    t = lock(A, B, 100, unlock=0, nonce=0)
    apply(state, t)
    h = CLAIM_WINDOW
    for args in (None, {"id": t.txid, "x": 1}, {"id": t.txid[:8]}, {"ids": t.txid}):
        rejected(state, call(A, NET, "escrow", method, args, 1), "contract_error", height=h)
    rejected(state, escrow_call(A, method, t.txid, 1, amount=1), "contract_error", height=h)
    assert total_locked(state) == 100


# ------------------------------------------------------------------ hypothesis

PEOPLE = (A, B, C)
person = st.integers(0, 2)


class LedgerHistory(RuleBasedStateMachine):
    """Random transfers, escrow calls, rewards and blocks: every rejection leaves the
    state as it was, coins are conserved, and undoing every block restores genesis."""

    def __init__(self):
        super().__init__()
        self.state = genesis_state(GENESIS)
        self.genesis = dict(self.state.kv)
        self.minted = self.burned = 0
        self.height, self.miner = 1, M.pubkey
        self.undos: list = []
        self.state.begin()

    def run(self, tx: Tx, label: str) -> bool:
        before = dict(self.state.kv)
        nonce = self.state.nonce(tx.sender)
        try:
            apply_tx(self.state, tx, self.height, self.miner, net=NET)
        except TxRejected as exc:
            assert self.state.kv == before
            event(f"{label}: {exc.reason}")
            return False
        event(f"{label}: ok")
        assert self.state.nonce(tx.sender) == nonce + 1
        if self.miner is None:
            self.burned += tx.fee
        return True

    @rule(
        s=person,
        r=person,
        amount=st.integers(0, 600),
        fee=st.integers(0, 5),
        off=st.sampled_from([0, 0, 0, 1, -1]),
    )
    def transfer(self, s, r, amount, fee, off):
        nonce = max(0, self.state.nonce(PEOPLE[s].pubkey) + off)
        self.run(transfer(PEOPLE[s], NET, PEOPLE[r].pubkey, amount, nonce, fee=fee), "transfer")

    @rule(
        s=person,
        r=person,
        amount=st.integers(0, 300),
        unlock=st.integers(0, 8),
        fee=st.integers(0, 2),
    )
    def lock(self, s, r, amount, unlock, fee):
        sender = PEOPLE[s]
        args = {"to": PEOPLE[r].pubkey, "unlock_height": self.height + unlock}
        nonce = self.state.nonce(sender.pubkey)
        tx = call(sender, NET, "escrow", "lock", args, nonce, fee=fee, amount=amount)
        self.run(tx, "lock")

    @rule(
        method=st.sampled_from(["release", "claim", "refund"]),
        pick=st.integers(0, 7),
        role=st.sampled_from(["payer", "to", "anyone"]),
        who=person,
        fee=st.integers(0, 2),
    )
    def settle(self, method, pick, role, who, fee):
        open_ = sorted(self.state.items(("c", "escrow")))
        eid, sender = b"\0" * 32, PEOPLE[who]
        if open_:
            (_, _, eid), (payer, to, _, _) = open_[pick % len(open_)]
            if role != "anyone":
                key = payer if role == "payer" else to
                sender = next(p for p in PEOPLE if p.pubkey == key)
        nonce = self.state.nonce(sender.pubkey)
        self.run(call(sender, NET, "escrow", method, {"id": eid}, nonce, fee=fee), method)

    @rule(who=st.integers(0, 3), amount=st.integers(0, 50))
    def reward(self, who, amount):
        apply_reward(self.state, (A, B, C, M)[who].pubkey, amount)
        self.minted += amount

    @rule(burn=st.booleans(), jump=st.sampled_from([1, 1, 5, 50, 120]))
    def block(self, burn, jump):
        self.undos.append(self.state.commit())
        self.state.begin()
        self.height += jump
        self.miner = None if burn else M.pubkey  # None: fees are burned

    @invariant()
    def coins_are_conserved(self):
        assert conserved(self.state, self.minted, self.burned)
        assert all(v > 0 for k, v in self.state.kv.items() if k[0] == "bal")

    def teardown(self):
        self.undos.append(self.state.commit())
        for undo in reversed(self.undos):
            self.state.undo(undo)
        assert self.state.kv == self.genesis


LedgerHistory.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_ledger_history = LedgerHistory.TestCase
