"""The sans-IO plasma cores: the ledger rule (plasma/ledger.py), the operator
(plasma/operator.py) and the watcher (plasma/watcher.py), driven synchronously."""

from __future__ import annotations

from hashlib import blake2b

import pytest

from p2p_l2.chain.merkle import verify_proof
from p2p_l2.errors import LocalProtocolError, RemoteProtocolError
from p2p_l2.plasma.ledger import PlasmaRejected, UtxoSet
from p2p_l2.plasma.operator import OperatorCore
from p2p_l2.plasma.tx import (
    CHILD_BLOCK_INTERVAL,
    PlasmaBlock,
    PlasmaTx,
    confirm_digest,
    deposit_block,
    position,
    split_pos,
)
from p2p_l2.plasma.watcher import (
    Alert,
    Challenge,
    Confirm,
    Fetch,
    ProcessExits,
    StartExit,
    Watcher,
)
from p2p_l2.wire.identity import Identity, verify

OP, A, B, C = (Identity.derive(11, n) for n in ("op", "alice", "bob", "carol"))
CHAIN = OP.pubkey
EXIT_BLOCKS = 4
TIMEOUT = 2.0


def dep(number: int) -> int:
    return position(number, 0, 0)


def pay(inputs, outputs, signers, chain=CHAIN) -> PlasmaTx:
    return PlasmaTx(chain, tuple(inputs), tuple(outputs)).signed(list(signers))


def alerts(actions) -> list[str]:
    return [a.kind for a in actions if isinstance(a, Alert)]


def of(actions, cls) -> list:
    return [a for a in actions if isinstance(a, cls)]


# ---------------------------------------------------------------- txs and blocks


def test_the_merkle_leaf_commits_the_signatures():
    unsigned = PlasmaTx(CHAIN, (dep(1),), ((B.pubkey, 10),))
    by_a, by_b = unsigned.signed([A]), unsigned.signed([B])
    assert unsigned.hash == by_a.hash == by_b.hash  # what is signed and confirmed
    assert len({unsigned.leaf, by_a.leaf, by_b.leaf}) == 3
    assert by_a.leaf == blake2b(by_a.encode(), digest_size=32).digest()
    for tx in (by_a, deposit_block(CHAIN, 1, A.pubkey, 5).txs[0]):
        for again in (PlasmaTx.decode(tx.encode()), PlasmaTx.from_wire(tx.to_wire())):
            assert again == tx and (again.hash, again.leaf) == (tx.hash, tx.leaf)
    block = PlasmaBlock(1000, (by_a, pay([dep(2)], [(A.pubkey, 5)], [B])))
    assert block.root != PlasmaBlock(1000, (by_b, block.txs[1])).root
    again = PlasmaBlock.from_wire(block.to_wire())
    assert again.root == block.root
    assert verify_proof(by_a.leaf, 0, block.proof(0), block.root)
    assert not verify_proof(by_a.hash, 0, block.proof(0), block.root)


# ---------------------------------------------------------------- the ledger rule


@pytest.fixture
def utxos() -> UtxoSet:
    u = UtxoSet(CHAIN)
    u.add_deposit(1, A.pubkey, 100)
    u.add_deposit(2, B.pubkey, 50)
    return u


def rejected(u: UtxoSet, tx: PlasmaTx, reason: str) -> None:
    before = (dict(u.utxos), dict(u.spent), set(u.exiting))
    with pytest.raises(PlasmaRejected) as info:
        u.check(tx)
    assert info.value.reason == reason, info.value
    assert (u.utxos, u.spent, u.exiting) == before


def test_check_accepts_and_returns_the_fee(utxos):
    tx = pay([dep(1), dep(2)], [(C.pubkey, 140)], [A, B])
    assert utxos.check(tx) == 10
    utxos.apply(tx, 1000, 0)
    assert utxos.get(position(1000, 0, 0)) == (C.pubkey, 140)
    assert dep(1) not in utxos and utxos.spent[dep(1)] == position(1000, 0, 0)


def test_each_rejection_reason(utxos):
    rejected(utxos, pay([dep(1)], [(B.pubkey, 1)], [A], chain=B.pubkey), "wrong_chain")
    rejected(utxos, PlasmaTx(CHAIN, (), ((A.pubkey, 5),)), "deposit_not_allowed")
    rejected(utxos, pay([dep(3)], [(B.pubkey, 1)], [A]), "unknown_input")
    rejected(utxos, pay([dep(1)], [(B.pubkey, 1)], [B]), "bad_signature")
    rejected(utxos, PlasmaTx(CHAIN, (dep(1),), ((B.pubkey, 1),)), "malformed")  # no sigs
    rejected(utxos, pay([dep(1)], [(B.pubkey, 101)], [A]), "outputs_exceed_inputs")
    utxos.apply(pay([dep(1)], [(B.pubkey, 100)], [A]), 1000, 0)
    rejected(utxos, pay([dep(1)], [(C.pubkey, 100)], [A]), "spent_input")
    utxos.exiting.add(dep(2))
    rejected(utxos, pay([dep(2)], [(C.pubkey, 50)], [B]), "exiting_input")


def test_apply_block_spends_within_a_block_and_skips_invalid_txs(utxos):
    t0 = pay([dep(1)], [(B.pubkey, 60), (A.pubkey, 40)], [A])
    t1 = pay([position(1000, 0, 0)], [(C.pubkey, 60)], [B])   # spends t0's output
    t2 = pay([dep(1)], [(C.pubkey, 100)], [A])                 # dep(1) again: spent by t0
    problems = utxos.apply_block(PlasmaBlock(1000, (t0, t1, t2)))
    assert [(i, e.reason) for i, e in problems] == [(2, "spent_input")]
    assert utxos.get(position(1000, 1, 0)) == (C.pubkey, 60)
    assert utxos.owned_by(A.pubkey) == {position(1000, 0, 1): 40}


def test_apply_block_atomic_changes_nothing_on_a_problem(utxos):
    before = (dict(utxos.utxos), dict(utxos.spent))
    good = pay([dep(1)], [(B.pubkey, 100)], [A])
    bad = pay([dep(2)], [(A.pubkey, 50)], [A])  # B's output signed by A
    problems = utxos.apply_block(PlasmaBlock(1000, (good, bad)), atomic=True)
    assert [e.reason for _, e in problems] == ["bad_signature"]
    assert (utxos.utxos, utxos.spent) == before


def test_add_deposit_validates():
    u = UtxoSet(CHAIN)
    for args in [(1000, A.pubkey, 5), (0, A.pubkey, 5), (1, b"x", 5), (1, A.pubkey, 0)]:
        with pytest.raises(ValueError):
            u.add_deposit(*args)


# ---------------------------------------------------------------- the operator


@pytest.fixture
def op() -> OperatorCore:
    core = OperatorCore(CHAIN, max_block_txs=2)
    core.add_deposit(1, A.pubkey, 100)
    core.add_deposit(2, B.pubkey, 50)
    core.add_deposit(3, C.pubkey, 30)
    return core


def test_operator_refuses_a_second_pending_spend(op):
    assert op.submit(pay([dep(1)], [(B.pubkey, 90)], [A])) == 10
    with pytest.raises(PlasmaRejected) as info:
        op.submit(pay([dep(1)], [(C.pubkey, 100)], [A]))
    assert info.value.reason == "spent_input"
    with pytest.raises(PlasmaRejected) as info:
        op.submit(pay([dep(2)], [(C.pubkey, 50)], [C]))
    assert info.value.reason == "bad_signature"
    assert op.submit(pay([dep(1)], [(B.pubkey, 90)], [A])) == 10  # the same again: no-op
    assert len(op.pending) == 1


def test_operator_numbers_child_blocks_and_caps_their_size(op):
    assert op.make_block() is None  # nothing pending: no empty block
    for src, who in [(dep(1), A), (dep(2), B), (dep(3), C)]:
        op.submit(pay([src], [(OP.pubkey, 1)], [who]))
    b1 = op.make_block()
    assert b1.number == CHILD_BLOCK_INTERVAL and len(b1.txs) == 2
    b2 = op.make_block()
    assert b2.number == 2 * CHILD_BLOCK_INTERVAL and len(b2.txs) == 1
    assert op.make_block() is None and op.next_number == 3 * CHILD_BLOCK_INTERVAL
    assert op.blocks[1] == deposit_block(CHAIN, 1, A.pubkey, 100)
    with pytest.raises(PlasmaRejected) as info:
        op.submit(pay([dep(1)], [(OP.pubkey, 1)], [A]))
    assert info.value.reason == "spent_input"


def test_operator_deposits_are_idempotent(op):
    assert not op.add_deposit(1, A.pubkey, 100)
    with pytest.raises(LocalProtocolError):
        op.add_deposit(1, B.pubkey, 100)


def test_mark_exiting_drops_pending_spends(op):
    tx = pay([dep(1)], [(B.pubkey, 100)], [A])
    op.submit(tx)
    assert op.mark_exiting(dep(1)) == [tx]
    assert op.mark_exiting(dep(1)) == [] and op.pending == []
    with pytest.raises(PlasmaRejected) as info:
        op.submit(tx)
    assert info.value.reason == "exiting_input"
    assert op.make_block() is None


def test_confirmations_are_checked_and_served(op):
    tx = pay([dep(1)], [(B.pubkey, 100)], [A])
    op.submit(tx)
    block = op.make_block()
    good = A.sign(confirm_digest(tx.hash, block.root))
    for args, reason in [((b"z" * 32, 0, good), "unknown_tx"),
                         ((tx.hash, 1, good), "bad_confirmation"),
                         ((tx.hash, 0, B.sign(confirm_digest(tx.hash, block.root))),
                          "bad_confirmation")]:
        with pytest.raises(PlasmaRejected) as info:
            op.add_confirmation(*args)
        assert info.value.reason == reason
    assert op.confirmations_for(block.number) == {}
    op.add_confirmation(tx.hash, 0, good)
    assert op.confirmations_for(block.number) == {tx.hash: [good]}


def test_an_output_is_spent_only_once_its_tx_is_confirmed(op):
    tx = pay([dep(1), dep(2)], [(C.pubkey, 140), (A.pubkey, 10)], [A, B])
    op.submit(tx)
    block = op.make_block()
    onward = pay([position(block.number, 0, 0)], [(A.pubkey, 140)], [C])
    digest = confirm_digest(tx.hash, block.root)
    for i, who in enumerate((None, A, B)):
        if who is not None:
            op.add_confirmation(tx.hash, i - 1, who.sign(digest))
        if i < 2:  # not every input owner confirmed yet
            with pytest.raises(PlasmaRejected) as info:
                op.submit(onward)
            assert info.value.reason == "unconfirmed_input"
            assert not op.confirmed_output(position(block.number, 0, 0))
    assert op.confirmed_output(dep(3)) and not op.confirmed_output(position(9000, 0, 0))
    assert op.submit(onward) == 0


def test_byzantine_txs_are_included_but_never_take_effect(op):
    for kind in ("create-coins", "steal"):
        bad = op.invalid_tx(kind, OP)
        block = op.make_block(extra=[bad])
        assert block.txs == (bad,)
        assert op.utxos.owned_by(OP.pubkey) == {}
    with pytest.raises(LocalProtocolError):
        op.invalid_tx("nonsense", OP)


def test_restore_rebuilds_the_same_state(op):
    op.submit(pay([dep(1)], [(B.pubkey, 60), (A.pubkey, 40)], [A]))
    b1 = op.make_block()
    op.add_confirmation(b1.txs[0].hash, 0, A.sign(confirm_digest(b1.txs[0].hash, b1.root)))
    op.mark_exiting(dep(2))
    # a byzantine block spends the exiting output: refused, at restore too
    b2 = op.make_block(extra=[pay([dep(2)], [(C.pubkey, 50)], [B]), op.invalid_tx("steal", OP)])
    op.add_deposit(2001, C.pubkey, 7)
    op.submit(pay([position(1000, 0, 0)], [(C.pubkey, 60)], [B]))
    op.make_block()
    op.mark_exiting(dep(2001))
    again = OperatorCore.restore(
        CHAIN, [op.blocks[n] for n in (1000, 2000, 3000)],
        [(n, *op.deposits[n]) for n in op.deposits], op.exiting,
        {n: op.confirmations_for(n) for n in op.blocks}, max_block_txs=2)
    assert again.utxos.utxos == op.utxos.utxos and again.utxos.spent == op.utxos.spent
    assert again.utxos.exiting == op.utxos.exiting and again.exiting == op.exiting
    assert again.last_child == 3000 and again.blocks == op.blocks
    assert again.confirmations_for(1000) == op.confirmations_for(1000)
    assert b2.number == 2000 and again.locate(b2.txs[1].hash) == (2000, 1)


# ---------------------------------------------------------------- the watcher


class Net:
    """An operator, its L1 records (numbered as the contract numbers them) and one watcher
    per user, joined synchronously.  `deliver=False` withholds a block from everyone."""

    def __init__(self, users=(A, B, C), **opts):
        self.op = OperatorCore(CHAIN)
        self.ids = {u.pubkey: u for u in users}
        self.w = {u.pubkey: Watcher(u.pubkey, CHAIN, EXIT_BLOCKS, TIMEOUT, exit_grace=1, **opts)
                  for u in users}
        self.out = {u.pubkey: [] for u in users}
        self.height, self.now, self.next_deposit = 1, 0.0, 1
        self.roots: dict[int, bytes] = {}

    def feed(self, pk: bytes, actions: list) -> list:
        more = []
        for a in actions:
            if isinstance(a, Confirm):  # the service signs, hands it to the operator and back
                sig = self.ids[pk].sign(a.digest)
                for i in a.inputs:
                    self.op.add_confirmation(a.tx_hash, i, sig)
                more += self.w[pk].own_confirmation(a.tx_hash, sig)
        self.out[pk] += actions
        return actions + (self.feed(pk, more) if more else [])

    def deposit(self, user: Identity, amount: int) -> int:
        number = self.next_deposit
        self.next_deposit += 1
        self.roots[number] = deposit_block(CHAIN, number, user.pubkey, amount).root
        self.op.add_deposit(number, user.pubkey, amount)
        for pk, w in self.w.items():
            self.feed(pk, w.on_commitment(number, self.roots[number], self.height, user.pubkey,
                                          amount, self.now))
        self.height += 1
        return dep(number)

    def commit(self, block: PlasmaBlock, deliver: bool = True) -> None:
        self.roots[block.number] = block.root
        self.next_deposit = block.number + 1
        for pk, w in self.w.items():
            self.feed(pk, w.on_commitment(block.number, block.root, self.height, None, 0,
                                          self.now))
        self.height += 1
        if deliver:
            self.sync(block.number)

    def sync(self, number: int) -> None:
        """Serve block `number` (and its confirmations) to every watcher, twice: the second
        round carries the confirmations the first one produced."""
        for _ in range(2):
            for pk, w in self.w.items():
                self.feed(pk, w.on_block(self.op.blocks[number],
                                         self.op.confirmations_for(number), self.now))

    def send(self, sender: Identity, to: Identity, amount: int) -> PlasmaTx:
        w = self.w[sender.pubkey]
        tx = w.make_transfer(to.pubkey, amount)
        tx = tx.signed([sender] * len(tx.inputs))
        w.on_own_spend(tx)
        self.op.submit(tx)
        return tx

    def block(self, extra=(), deliver: bool = True) -> PlasmaBlock:
        block = self.op.make_block(extra)
        self.commit(block, deliver)
        return block

    def tick(self, dt: float = 0.0, dh: int = 0) -> None:
        self.now += dt
        self.height += dh
        for pk, w in self.w.items():
            self.feed(pk, w.tick(self.now, self.height))

    def take(self, user: Identity) -> list:
        out, self.out[user.pubkey] = self.out[user.pubkey], []
        return out


def test_transfers_are_confirmed_and_settle_for_the_payee():
    net = Net()
    net.deposit(A, 100)
    tx = net.send(A, B, 30)
    assert net.w[A.pubkey].balance() == (0, [])  # spending, unconfirmed
    net.take(A)
    block = net.block()
    confirms = of(net.take(A), Confirm)
    assert confirms == [Confirm(block.number, tx.hash, block.root, (0,))]
    assert net.w[A.pubkey].balance() == (70, [(position(block.number, 0, 1), 70)])
    assert net.w[B.pubkey].balance() == (30, [(position(block.number, 0, 0), 30)])
    assert net.w[C.pubkey].utxos.utxos == net.op.utxos.utxos
    assert not of(net.take(B), Confirm)


def test_a_payment_counts_only_once_the_payer_confirmed():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    block = net.op.make_block()
    net.commit(block, deliver=False)
    wb = net.w[B.pubkey]
    net.feed(B.pubkey, wb.on_block(block, {}, net.now))  # B first, before A confirmed
    assert wb.balance() == (0, [])
    net.now += 1.0
    assert of(wb.tick(net.now, net.height), Fetch) == [Fetch(block.number)]  # asks again
    net.sync(block.number)
    assert wb.balance()[0] == 30


def test_blocks_out_of_order_and_before_their_commitment():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    b1 = net.op.make_block()
    wc = net.w[C.pubkey]
    assert wc.on_block(b1, {}, net.now) == []  # before its commitment: kept
    net.commit(b1, deliver=False)
    assert wc.frontier == b1.number
    assert not of(net.take(C), Fetch) and of(net.take(A), Fetch) == [Fetch(1000)]
    net.sync(b1.number)
    net.send(B, C, 10)
    b2 = net.op.make_block()
    net.send(A, C, 5)
    b3 = net.op.make_block()
    net.commit(b2, deliver=False)
    net.commit(b3, deliver=False)
    wa = net.w[A.pubkey]
    assert of(net.take(A), Fetch) == [Fetch(2000), Fetch(3000)]
    net.feed(A.pubkey, wa.on_block(b3, {}, net.now))
    assert wa.frontier == 1000  # 3000 waits for 2000
    net.sync(2000)
    net.sync(3000)
    assert all(w.frontier == 3000 for w in net.w.values())
    assert [net.w[u.pubkey].balance()[0] for u in (A, B, C)] == [65, 20, 15]


def test_a_block_with_a_foreign_root_is_refused():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    block = net.op.make_block()
    net.commit(block, deliver=False)
    forged = PlasmaBlock(block.number, (pay([dep(1)], [(C.pubkey, 100)], [A]),))
    with pytest.raises(RemoteProtocolError) as info:
        net.w[B.pubkey].on_block(forged, {}, net.now)
    assert info.value.reason == "bad_plasma_block"
    with pytest.raises(RemoteProtocolError):
        net.w[B.pubkey].on_block(block, [1, 2], net.now)


def test_withholding_is_raised_after_the_timeout_and_only_then():
    net = Net()
    net.deposit(A, 100)
    net.deposit(B, 50)
    net.send(A, B, 30)
    withheld = net.block(deliver=False)
    assert of(net.take(A), Fetch) == [Fetch(withheld.number)]
    net.take(B)
    net.tick(TIMEOUT - 0.5)
    assert not alerts(net.take(A)) and not net.w[A.pubkey].halted
    assert of(net.take(B), Fetch) == [Fetch(withheld.number)]  # asked again meanwhile
    late_deposit = net.deposit(B, 7)  # committed after the withheld block
    net.tick(0.5)
    # A's spend sat in the withheld block, unconfirmed: A exits its input
    for user, exits in [(A, {dep(1)}), (B, {dep(2), late_deposit}), (C, set())]:
        out = net.take(user)
        assert alerts(out) == ["block_withholding"], user
        assert net.w[user.pubkey].halted
        assert {a.pos for a in of(out, StartExit)} == exits
    net.tick(1.0)
    assert not any(net.take(u) for u in (A, B, C))  # one alert, one exit each


@pytest.mark.parametrize("kind", ["create-coins", "steal", "spend-exiting", "double-spend",
                                  "inflate", "deposit"])
def test_an_invalid_block_halts_and_exits_everything(kind):
    net = Net()
    net.deposit(A, 100)
    net.deposit(B, 50)
    net.send(A, B, 30)
    net.block()
    b_pay = position(1000, 0, 0)  # B's 30
    c_dep = net.deposit(C, 20)
    if kind == "spend-exiting":  # B exits its deposit, the operator spends it anyway
        for w in net.w.values():
            w.on_exit({"pos": dep(2), "owner": B.pubkey, "amount": 50, "status": "pending",
                       "started": net.height, "exitable_at": net.height + 2 * EXIT_BLOCKS})
        net.height += 2
    bad = {
        "create-coins": lambda: net.op.invalid_tx("create-coins", OP),
        "steal": lambda: net.op.invalid_tx("steal", OP),
        "spend-exiting": lambda: pay([dep(2)], [(C.pubkey, 50)], [B]),
        "double-spend": lambda: pay([dep(1)], [(C.pubkey, 100)], [A]),
        "inflate": lambda: pay([c_dep], [(C.pubkey, 21)], [C]),
        "deposit": lambda: PlasmaTx(CHAIN, (), ((OP.pubkey, 99),)),
    }[kind]()
    net.send(B, C, 10)  # B's tx lands in the invalid block: never confirmed
    for u in (A, B, C):
        net.take(u)
    block = net.block(extra=[bad])
    assert block.number == 2000
    exits = {}
    for user in (A, B, C):
        out = net.take(user)
        assert alerts(out) == ["invalid_block"], (user, out)
        assert not of(out, Confirm)
        w = net.w[user.pubkey]
        assert w.halted and w.frontier < 2000
        exits[user] = {a.pos for a in of(out, StartExit)}
    assert exits[A] == {position(1000, 0, 1)}
    assert exits[B] == {b_pay} | ({dep(2)} if kind != "spend-exiting" else set())
    assert exits[C] == {c_dep}
    with pytest.raises(PlasmaRejected):
        net.w[A.pubkey].make_transfer(B.pubkey, 1)


def test_exits_carry_proofs_the_contract_accepts():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    block = net.block()
    net.take(B)
    out = net.w[B.pubkey].exit_all()
    assert [a.pos for a in out] == [position(1000, 0, 0)]
    (start,) = out
    assert verify_proof(start.tx.leaf, 0, list(start.proof), block.root)
    assert start.tx.outputs[0] == (B.pubkey, 30)
    ((owner, sig),) = start.confirms  # A's confirmation of its input, as start_exit wants
    assert owner == A.pubkey and start.tx.sig_ok(0, owner)
    assert verify(owner, confirm_digest(start.tx.hash, block.root), sig)
    assert net.w[B.pubkey].exit_all() == []  # never twice
    # A's change: A's own confirmation, which the service handed back to A's watcher
    (change,) = net.w[A.pubkey].exit_all()
    assert change.pos == position(1000, 0, 1) and change.confirms == start.confirms


def test_an_exit_of_a_spent_output_is_challenged():
    net = Net()
    net.deposit(A, 100)
    net.deposit(B, 50)
    for _ in range(3):
        net.send(B, C, 1)
        net.block()
    spent = dep(1)
    net.send(A, C, 100)
    block = net.block()
    for u in (A, B, C):
        net.take(u)
    record = {"pos": spent, "owner": A.pubkey, "amount": 100, "status": "pending",
              "started": net.height, "exitable_at": net.height + 2 * EXIT_BLOCKS}
    out = net.w[C.pubkey].on_exit(record)
    assert alerts(out) == ["invalid_exit"]
    (ch,) = of(out, Challenge)
    number, tx_index, _ = split_pos(ch.spend_pos)
    assert number == block.number and spent in ch.spend.inputs
    assert verify_proof(ch.spend.leaf, tx_index, list(ch.proof), net.roots[number])
    assert verify(A.pubkey, confirm_digest(ch.spend.hash, net.roots[number]), ch.confirm)
    assert net.w[A.pubkey].on_exit(record) == []  # the owner's own watcher does not
    # the challenge did not land: retried, then alerted near the exitable height
    net.height += 3
    out = net.w[C.pubkey].tick(net.now, net.height)
    assert of(out, Challenge) and not alerts(out)
    net.height = record["exitable_at"] - 1
    out = net.w[C.pubkey].tick(net.now, net.height)
    assert alerts(out) == ["unchallenged_exit"]
    assert net.w[C.pubkey].on_exit(dict(record, status="challenged")) == []
    assert net.w[C.pubkey].tick(net.now, net.height + 1) == []


def test_an_exit_of_an_unconfirmed_spend_is_not_challenged():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 100)
    block = net.op.make_block()
    net.commit(block, deliver=False)
    wb = net.w[B.pubkey]
    wb.on_block(block, {}, net.now)  # A never confirms
    record = {"pos": dep(1), "owner": A.pubkey, "amount": 100, "status": "pending",
              "started": net.height, "exitable_at": net.height + 2 * EXIT_BLOCKS}
    assert wb.on_exit(record) == []
    assert wb.balance() == (0, []) and wb.exit_all() == []


def test_own_exits_are_processed_when_due():
    net = Net()
    net.deposit(A, 100)
    wa = net.w[A.pubkey]
    (start,) = wa.exit_all()
    assert start.pos == dep(1) and start.proof == ()
    wa.on_exit({"pos": dep(1), "owner": A.pubkey, "amount": 100, "status": "pending",
                "started": 5, "exitable_at": 12})
    assert wa.tick(net.now, 11) == []
    assert wa.tick(net.now, 12) == [ProcessExits()]
    assert wa.tick(net.now, 12) == []
    assert wa.tick(net.now, 13) == [ProcessExits()]
    wa.on_exit({"pos": dep(1), "owner": A.pubkey, "amount": 100, "status": "finalized",
                "started": 5, "exitable_at": 12})
    assert wa.tick(net.now, 14) == []


def test_a_lost_start_exit_is_sent_again():
    net = Net()
    net.deposit(A, 100)
    wa = net.w[A.pubkey]
    wa.tick(net.now, 10)
    assert len(wa.exit_all()) == 1
    assert wa.tick(net.now, 11) == []
    assert [a.pos for a in wa.tick(net.now, 13)] == [dep(1)]


def test_make_transfer_picks_inputs_and_change():
    net = Net()
    for amount in (5, 40, 30):
        net.deposit(A, amount)
    wa = net.w[A.pubkey]
    tx = wa.make_transfer(B.pubkey, 35)
    assert tx.inputs == (dep(2),) and tx.outputs == ((B.pubkey, 35), (A.pubkey, 5))
    tx = wa.make_transfer(B.pubkey, 60, fee=2)
    assert set(tx.inputs) == {dep(2), dep(3)} and tx.outputs[1] == (A.pubkey, 8)
    with pytest.raises(PlasmaRejected) as info:
        wa.make_transfer(B.pubkey, 71)
    assert info.value.reason == "insufficient_funds"
    with pytest.raises(PlasmaRejected):
        wa.on_own_spend(PlasmaTx(CHAIN, (position(9000, 0, 0),), ((B.pubkey, 1),)))


def test_a_deposit_after_halting_is_exited_at_once():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    net.block(extra=[net.op.invalid_tx("create-coins", OP)])
    assert net.w[A.pubkey].halted and net.w[A.pubkey].halt_reason == "invalid_block"
    net.take(A)
    late = net.deposit(A, 5)
    assert [a.pos for a in of(net.take(A), StartExit)] == [late]


def test_after_leaving_a_watcher_follows_challenges_and_exits_what_it_is_paid():
    net = Net()
    net.deposit(A, 100)
    net.deposit(B, 50)
    wa = net.w[A.pubkey]
    net.send(A, C, 10)  # pending when A leaves: its input exits, the tx is dropped
    assert [a.pos for a in wa.exit_all()] == [dep(1)]
    assert wa.halted and wa.following and wa.balance() == (0, [])
    assert net.op.mark_exiting(dep(1))[0].inputs == (dep(1),)
    net.send(B, A, 20)
    block = net.block()
    assert of(net.take(B), Confirm)
    out = net.take(A)
    assert not of(out, Confirm)
    assert [a.pos for a in of(out, StartExit)] == [position(block.number, 0, 0)]
    record = {"pos": dep(2), "owner": B.pubkey, "amount": 50, "status": "pending",
              "started": net.height, "exitable_at": net.height + 2 * EXIT_BLOCKS}
    assert of(wa.on_exit(record), Challenge)


def test_an_exit_of_an_input_and_an_output_of_one_tx_is_alerted():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    block = net.op.make_block()
    net.commit(block, deliver=False)
    wc = net.w[C.pubkey]
    wc.on_block(block, {}, net.now)  # A never confirms
    change = position(block.number, 0, 1)
    base = {"owner": A.pubkey, "status": "pending", "started": 3, "exitable_at": 11}
    assert wc.on_exit(dict(base, pos=change, amount=70)) == []
    (alert,) = wc.on_exit(dict(base, pos=dep(1), amount=100))
    assert alert.kind == "invalid_exit" and "double exit" in alert.detail


def test_the_mempool_is_bounded():
    op = OperatorCore(CHAIN, max_pending=1)
    op.add_deposit(1, A.pubkey, 100)
    op.add_deposit(2, B.pubkey, 100)
    op.submit(pay([dep(1)], [(B.pubkey, 100)], [A]))
    with pytest.raises(PlasmaRejected) as info:
        op.submit(pay([dep(2)], [(A.pubkey, 100)], [B]))
    assert info.value.reason == "mempool_full"


def test_confirmations_pushed_later_settle_a_payment():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    block = net.op.make_block()
    net.commit(block, deliver=False)
    wa, wb = net.w[A.pubkey], net.w[B.pubkey]
    net.feed(B.pubkey, wb.on_block(block, {}, net.now))
    net.feed(A.pubkey, wa.on_block(block, {}, net.now))  # A confirms: the operator has it
    assert wb.balance()[0] == 0
    assert wb.on_confirmations(block.number, {b"junk": [b"x"]}) == []  # dropped
    with pytest.raises(RemoteProtocolError):
        wb.on_confirmations(block.number, [b"not a map"])
    wb.on_confirmations(block.number, net.op.confirmations_for(block.number))
    assert wb.balance()[0] == 30


def test_spent_outputs_lists_what_a_byzantine_user_would_exit():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    block = net.block()
    net.send(A, C, 70)
    net.block()
    spent = net.w[A.pubkey].spent_outputs()
    assert [pos for pos, *_ in spent] == [dep(1), position(block.number, 0, 1)]
    assert spent[0][1:] == (net.op.blocks[1].txs[0], (), ())  # a deposit: no confirms
    pos, tx, proof, confirms = spent[1]
    assert tx == block.txs[0] and verify_proof(tx.leaf, 0, list(proof), block.root)
    assert confirms == ((A.pubkey, A.sign(confirm_digest(tx.hash, block.root))),)
    assert net.w[B.pubkey].spent_outputs() == []


def test_an_own_change_exits_once_our_confirmation_is_handed_back():
    """Halting in the same step that applies our tx: its Confirm is still to be signed, so the
    change exits when the service hands the signature back (the operator need not serve it)."""
    net = Net()
    net.deposit(A, 100)
    tx = net.send(A, B, 30)
    b1 = net.op.make_block()
    b2 = net.op.make_block(extra=[net.op.invalid_tx("create-coins", OP)])
    net.commit(b1, deliver=False)
    net.commit(b2, deliver=False)
    wa = net.w[A.pubkey]
    assert wa.on_block(b2, {}, net.now) == []  # waits for b1
    out = wa.on_block(b1, {}, net.now)
    (conf,) = of(out, Confirm)
    assert alerts(out) == ["invalid_block"] and not of(out, StartExit)
    assert wa.halted and wa.exit_all() == []
    sig = A.sign(conf.digest)
    (start,) = wa.own_confirmation(tx.hash, sig)
    assert start.pos == position(b1.number, 0, 1) and start.confirms == ((A.pubkey, sig),)
    assert wa.own_confirmation(tx.hash, sig) == [] and wa.exit_all() == []  # once
    assert wa.own_confirmation(b"z" * 32, sig) == []


def test_a_tx_with_two_owners_exits_with_both_confirmations():
    net = Net()
    net.deposit(A, 60)
    net.deposit(B, 40)
    tx = pay([dep(1), dep(2)], [(A.pubkey, 50), (B.pubkey, 50)], [A, B])
    net.op.submit(tx)
    block = net.op.make_block()
    net.commit(block, deliver=False)
    wa = net.w[A.pubkey]
    (conf,) = of(wa.on_block(block, {}, net.now), Confirm)
    assert conf.inputs == (0,)
    sig_a, sig_b = A.sign(conf.digest), B.sign(conf.digest)
    # our own signature handed back in the form of the operator's confirmations
    assert wa.on_confirmations(conf.number, {
        conf.tx_hash: [sig_a if i in conf.inputs else b"" for i in range(len(tx.inputs))]}) == []
    assert wa.balance() == (0, []) and wa.exit_all() == []  # B's confirmation is missing
    net.op.add_confirmation(tx.hash, 0, sig_a)
    net.op.add_confirmation(tx.hash, 1, sig_b)
    (start,) = of(wa.on_confirmations(block.number, net.op.confirmations_for(block.number)),
                  StartExit)
    assert start.pos == position(block.number, 0, 0)
    assert start.confirms == ((A.pubkey, sig_a), (B.pubkey, sig_b))


def test_a_payment_exits_only_with_the_payers_confirmation():
    net = Net()
    net.deposit(A, 100)
    net.send(A, B, 30)
    block = net.op.make_block()
    net.commit(block, deliver=False)
    wb = net.w[B.pubkey]
    wb.on_block(block, {}, net.now)
    assert wb.exit_all() == []  # A has not confirmed: waits
    net.sync(block.number)  # A confirms, the operator serves it
    (start,) = of(net.take(B), StartExit)
    assert start.pos == position(block.number, 0, 0) and start.confirms[0][0] == A.pubkey


def test_an_own_change_counts_once_our_confirmation_is_back():
    net = Net()
    net.deposit(A, 100)
    tx = net.send(A, B, 30)
    block = net.op.make_block()
    net.commit(block, deliver=False)
    wa = net.w[A.pubkey]
    (conf,) = of(wa.on_block(block, {}, net.now), Confirm)
    assert wa.balance() == (0, [])  # our confirmation is still to be signed
    with pytest.raises(PlasmaRejected):
        wa.make_transfer(B.pubkey, 1)
    assert wa.own_confirmation(tx.hash, A.sign(conf.digest)) == []
    assert wa.balance() == (70, [(position(block.number, 0, 1), 70)])
