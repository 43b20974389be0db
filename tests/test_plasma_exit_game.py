"""The plasma exit game end to end, synchronously: an L1 State with the `plasma` contract, an
OperatorCore and one Watcher per user, wired the way the node services wire them (DESIGN §6, §9).

Honest users A, B and C carry out everything their watchers ask; Z is byzantine: it exits
outputs it already spent, may stop confirming its txs, and then tries to exit both the inputs
and the change of such a tx (showing a confirmation only then).  The operator may withhold a
block or include an invalid tx, then exit the coins it invented.  Checked: finalised exits
never exceed deposits; no output spent with its owner's confirmation (sent to the operator or
shown on L1) is ever finalised; after everyone exits, every honest user got at least what it
deposited, minus what it paid away, plus what it was paid (payments count once the payer
confirmed and the payee saw the block).
"""

from __future__ import annotations

from collections import Counter, deque

import pytest

from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from p2p_l2.chain.contracts import plasma as pl
from p2p_l2.chain.ledger import TxRejected, apply_tx, genesis_state
from p2p_l2.chain.tx import Tx
from p2p_l2.plasma.ledger import PlasmaRejected
from p2p_l2.plasma.operator import OperatorCore
from p2p_l2.plasma.tx import (
    CHILD_BLOCK_INTERVAL,
    PlasmaBlock,
    PlasmaTx,
    confirm_digest,
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
from p2p_l2.wire.identity import Identity

NET = "testnet"
OP, A, B, C, Z, M = (Identity.derive(13, n) for n in ("op", "alice", "bob", "carol", "zed",
                                                        "miner"))
HONEST = (A, B, C)
USERS = (A, B, C, Z)
CHAIN = OP.pubkey
EXIT_BLOCKS, BOND = 4, 5
TIMEOUT, BLOCK_TIME = 2.0, 1.0  # watchers notice withholding within 2 L1 blocks


def event(name: str) -> None:
    """hypothesis.event, also usable when a test drives ExitGame by hand."""
    try:
        hypothesis_event(name)
    except InvalidArgument:
        pass


class ExitGame(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.state = genesis_state({u.pubkey: 1_000_000 for u in (OP, *USERS)})
        self.height, self.now = 1, 0.0
        self.ids = {u.pubkey: u for u in (OP, *USERS)}
        self.op = OperatorCore(CHAIN)
        self.w = {u.pubkey: Watcher(u.pubkey, CHAIN, EXIT_BLOCKS, TIMEOUT, exit_grace=1)
                  for u in USERS}
        self.todo: deque = deque()
        self.seen_number = 0                 # the last committed block fed from L1
        self.seen_exits: dict[int, str] = {}
        self.withheld: set[int] = set()
        self.dirty: set[int] = set()         # blocks with confirmations to serve again
        self.fault: str | None = None
        self.blocks_made = 0
        self.z_confirms = True
        self.deposited: Counter = Counter()
        self.confirmed: dict[bytes, bytes] = {}   # tx hash -> the payer who confirmed it
        self.confirmed_spent: set[int] = set()    # inputs of confirmed txs (or shown on L1)
        self.z_spent: list[int] = []
        self.alerts: Counter = Counter()
        self.l1(pl.register_tx(OP, NET, EXIT_BLOCKS, BOND, 0))

    # -- L1 ----------------------------------------------------------------------------
    def l1(self, tx: Tx, must: bool = True) -> bool:
        try:
            apply_tx(self.state, tx, self.height, M.pubkey, net=NET)
        except TxRejected as exc:
            assert not must, f"{tx.method} refused: {exc}"
            event(f"L1 {tx.method} refused")
            return False
        self.sync_l1()
        return True

    def nonce(self, who: Identity) -> int:
        return self.state.nonce(who.pubkey)

    def sync_l1(self) -> None:
        """Feed the operator and every watcher what the L1 state shows (called after each L1
        tx, so commitments and exits arrive in L1 order)."""
        for number, root, h, owner, amount in pl.blocks_after(self.state, CHAIN,
                                                              self.seen_number):
            self.seen_number = number
            if owner is not None:
                self.op.add_deposit(number, owner, amount)
            for pk, w in self.w.items():
                self.push(pk, w.on_commitment(number, root, h, owner, amount, self.now))
        for rec in pl.exits(self.state, CHAIN):
            pos, status = rec["pos"], rec["status"]
            if self.seen_exits.get(pos) == status:
                continue
            if pos not in self.seen_exits:
                for tx in self.op.mark_exiting(pos):
                    for w in self.w.values():
                        w.forget_spend(tx.hash)
            self.seen_exits[pos] = status
            for pk, w in self.w.items():
                self.push(pk, w.on_exit(rec))

    def commit(self, block: PlasmaBlock, serve: bool = True) -> None:
        self.l1(pl.commit_tx(OP, NET, block.number, block.root, self.nonce(OP)))
        if serve:
            self.serve(block.number)
        else:
            self.withheld.add(block.number)

    # -- carrying out the watchers' actions ---------------------------------------------
    def push(self, pk: bytes, actions: list) -> None:
        self.todo.extend((pk, a) for a in actions)

    def serve(self, number: int) -> None:
        if number in self.withheld:
            return
        for pk, w in self.w.items():
            self.push(pk, w.on_block(self.op.blocks[number], self.op.confirmations_for(number),
                                     self.now))

    def settle(self) -> None:
        while self.todo or self.dirty:
            while self.todo:
                self.carry_out(*self.todo.popleft())
            dirty, self.dirty = self.dirty, set()
            for number in sorted(dirty):
                self.serve(number)

    def carry_out(self, pk: bytes, a) -> None:
        who = self.ids[pk]
        if isinstance(a, Fetch):
            if a.number in self.op.blocks and a.number % CHILD_BLOCK_INTERVAL == 0 \
                    and a.number not in self.withheld:
                self.push(pk, self.w[pk].on_block(self.op.blocks[a.number],
                                                  self.op.confirmations_for(a.number), self.now))
        elif isinstance(a, Alert):
            self.alerts[a.kind] += 1
            event(f"alert {a.kind}")
        elif isinstance(a, Confirm):
            number, index = self.op.locate(a.tx_hash)
            tx = self.op.blocks[number].txs[index]
            if pk == Z.pubkey:
                self.z_spent += [tx.inputs[i] for i in a.inputs]
                if not self.z_confirms:
                    event("Z does not confirm")
                    return
            sig = who.sign(a.digest)
            for i in a.inputs:
                self.op.add_confirmation(a.tx_hash, i, sig)
                self.confirmed_spent.add(tx.inputs[i])
            self.confirmed[a.tx_hash] = pk
            self.dirty.add(number)
            # as the service does: our own signature back to our watcher, for our exits
            self.push(pk, self.w[pk].on_confirmations(a.number, {
                a.tx_hash: [sig if i in a.inputs else b"" for i in range(len(tx.inputs))]}))
        elif isinstance(a, Challenge):
            if pk != Z.pubkey:
                ok = self.l1(pl.challenge_tx(who, NET, CHAIN, a.pos, a.spend, a.spend_pos,
                                             list(a.proof), a.confirm, self.nonce(who)),
                             must=False)
                event(f"challenge {'landed' if ok else 'refused'}")
        elif isinstance(a, StartExit):
            # Z's own watcher may be refused: Z showed confirmations behind its back
            ok = self.start_exit(who, a.pos, a.tx, list(a.proof), a.confirms,
                                 must=pk != Z.pubkey)
            event(f"exit {'started' if ok else 'refused'}")
        elif isinstance(a, ProcessExits):
            self.l1(pl.process_exits_tx(who, NET, CHAIN, self.nonce(who)))
        else:
            raise AssertionError(f"unknown action {a!r}")

    def advance(self, blocks: int) -> None:
        for _ in range(blocks):
            self.height += 1
            self.now += BLOCK_TIME
            for pk, w in self.w.items():
                self.push(pk, w.tick(self.now, self.height))
            self.settle()

    def start_exit(self, who: Identity, pos: int, tx: PlasmaTx, proof: list[bytes],
                   confirms, must: bool = True) -> bool:
        """A start_exit call; the confirmations it shows are public once it lands."""
        if not self.l1(pl.start_exit_tx(who, NET, CHAIN, pos, tx, proof, BOND, self.nonce(who),
                                        confirms=confirms), must=must):
            return False
        for p, (owner, _) in zip(tx.inputs, confirms):
            if self.op.output(p) is not None and self.op.output(p)[0] == owner:
                self.confirmed_spent.add(p)  # (an invented tx names the operator instead)
        return True

    def confirms(self, pos: int, signer: Identity | None = None) -> list | None:
        """The confirmations start_exit wants for output `pos`, as the operator serves them;
        `signer` signs its own (a fresh confirmation) where one is missing.  None if one
        is still missing."""
        number, index, _ = split_pos(pos)
        block = self.op.blocks[number]
        tx = block.txs[index]
        served = self.op.confirmations_for(number).get(tx.hash, [b""] * len(tx.inputs))
        out = []
        for p, sig in zip(tx.inputs, served):
            owner = self.op.output(p)[0]
            if not sig and signer is not None and owner == signer.pubkey:
                sig = signer.sign(confirm_digest(tx.hash, block.root))
            if not sig:
                return None
            out.append((owner, sig))
        return out

    def exit_invented(self, block: PlasmaBlock) -> None:
        """The byzantine operator exits the outputs its invalid tx (the last one) made,
        signing the confirmations as the inputs' owner."""
        i = len(block.txs) - 1
        tx = block.txs[i]
        sig = OP.sign(confirm_digest(tx.hash, block.root))
        for oi, (owner, _) in enumerate(tx.outputs):
            if owner == OP.pubkey:
                self.start_exit(OP, position(block.number, i, oi), tx, block.proof(i),
                                [(OP.pubkey, sig)] * len(tx.inputs), must=False)

    # -- rules -------------------------------------------------------------------------
    @initialize(amounts=st.lists(st.integers(1, 100), min_size=4, max_size=4))
    def everyone_deposits(self, amounts):
        for user, amount in zip(USERS, amounts):
            self.deposit(user, amount)

    @precondition(lambda self: self.fault is None)
    @rule(user=st.sampled_from(USERS), amount=st.integers(1, 100))
    def deposit(self, user, amount):
        self.l1(pl.deposit_call_tx(user, NET, CHAIN, amount, self.nonce(user)))
        self.deposited[user.pubkey] += amount
        self.settle()

    @rule(sender=st.sampled_from(USERS), to=st.sampled_from(USERS), amount=st.integers(1, 80))
    def transfer(self, sender, to, amount):
        w = self.w[sender.pubkey]
        try:
            tx = w.make_transfer(to.pubkey, amount)
        except PlasmaRejected as exc:
            event(f"transfer: {exc.reason}")
            return
        tx = tx.signed([sender] * len(tx.inputs))
        w.on_own_spend(tx)
        try:
            self.op.submit(tx)
        except PlasmaRejected as exc:
            event(f"submit refused: {exc.reason}")
            w.forget_spend(tx.hash)
        else:
            event("transfer submitted")

    @rule(payments=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(USERS),
                                      st.integers(1, 60)), min_size=1, max_size=4))
    def traffic(self, payments):
        """A few payments, then a block."""
        for sender, to, amount in payments:
            self.transfer(sender, to, amount)
        self.block()

    @rule()
    def block(self):
        block = self.op.make_block()
        if block is not None:
            self.blocks_made += 1
            self.commit(block)
            self.settle()

    @precondition(lambda self: self.fault is None and self.blocks_made >= 2)
    @rule(invalid=st.sampled_from([None, "create-coins", "steal"]))
    def withhold_block(self, invalid):
        extra = [self.op.invalid_tx(invalid, OP)] if invalid else []
        block = self.op.make_block(extra)
        if block is None:
            return
        self.fault = "withhold"
        self.commit(block, serve=False)
        if extra:
            self.exit_invented(block)
        self.settle()

    @precondition(lambda self: self.fault is None and self.blocks_made >= 2)
    @rule(kind=st.sampled_from(["create-coins", "steal"]))
    def invalid_block(self, kind):
        block = self.op.make_block([self.op.invalid_tx(kind, OP)])
        self.fault = "invalid"
        self.commit(block)
        self.exit_invented(block)
        self.settle()

    @rule(blocks=st.integers(1, 3))
    def time_passes(self, blocks):
        self.advance(blocks)

    @precondition(lambda self: self.z_spent)
    @rule(pick=st.integers(0, 100))
    def z_exits_a_spent_output(self, pick):
        """Z exits an output it spent and confirmed.  (Exiting the input of a tx it did not
        confirm is its right; exiting its change *as well* is z_double_exits.)"""
        pos = self.z_spent[pick % len(self.z_spent)]
        if pos in self.seen_exits or pos not in self.confirmed_spent:
            return
        number, tx_index, _ = split_pos(pos)
        block = self.op.blocks[number]
        confirms = self.confirms(pos, Z)
        if confirms is None:
            event("Z exits a spent output: confirmations missing")
            return
        ok = self.start_exit(Z, pos, block.txs[tx_index], block.proof(tx_index), confirms,
                             must=False)
        event(f"Z exits a spent output: {'started' if ok else 'refused'}")
        self.settle()

    @rule(pick=st.integers(0, 100), change_first=st.booleans())
    def z_double_exits(self, pick, change_first):
        """Z takes a tx of its own it never confirmed and exits its inputs and its change,
        signing the confirmation the change's exit needs only now."""
        mine = [(number, i, tx) for number, block in sorted(self.op.blocks.items())
                if number % CHILD_BLOCK_INTERVAL == 0 for i, tx in enumerate(block.txs)
                if tx.hash not in self.confirmed and tx.inputs
                and all((self.op.output(p) or (None,))[0] == Z.pubkey for p in tx.inputs)
                and any(o == Z.pubkey for o, _ in tx.outputs)]
        if not mine:
            return
        number, i, tx = mine[pick % len(mine)]
        change = position(number, i, next(oi for oi, (o, _) in enumerate(tx.outputs)
                                          if o == Z.pubkey))
        steps = [("input", p) for p in tx.inputs]
        steps.insert(len(steps) if not change_first else 0, ("change", change))
        for what, pos in steps:
            confirms = self.confirms(pos, Z)
            b, index, _ = split_pos(pos)
            if confirms is None or pos in self.seen_exits:
                continue
            ok = self.start_exit(Z, pos, self.op.blocks[b].txs[index],
                                 self.op.blocks[b].proof(index), confirms, must=False)
            event(f"Z double exit, {what}: {'started' if ok else 'refused'}")
            self.settle()

    @rule(pick=st.integers(0, 100))
    def z_spends_an_unconfirmed_output(self, pick):
        """Z spends (behind its watcher's back) an output of a tx it never confirmed: the
        operator refuses, or Z could exit that tx's input and the spend's change as well."""
        outs = sorted(p for p, (o, _) in self.op.utxos.utxos.items()
                      if o == Z.pubkey and not self.op.confirmed_output(p))
        if not outs:
            return
        pos = outs[pick % len(outs)]
        tx = PlasmaTx(CHAIN, (pos,), ((Z.pubkey, self.op.utxos.get(pos)[1]),)).signed([Z])
        with pytest.raises(PlasmaRejected) as info:
            self.op.submit(tx)
        assert info.value.reason in ("unconfirmed_input", "spent_input", "exiting_input")
        event(f"Z spends an unconfirmed output: {info.value.reason}")

    @rule()
    def z_stops_confirming(self):
        self.z_confirms = False

    @rule(user=st.sampled_from(HONEST))
    def user_leaves(self, user):
        self.push(user.pubkey, self.w[user.pubkey].exit_all())
        self.settle()

    # -- invariants --------------------------------------------------------------------
    @invariant()
    def paid_within_deposits(self):
        rec = pl.chain_record(self.state, CHAIN)
        assert rec["paid"] <= rec["deposits"] == sum(self.deposited.values())

    @invariant()
    def no_confirmed_spend_finalised(self):
        for rec in pl.exits(self.state, CHAIN):
            if rec["status"] == "finalized":
                assert rec["pos"] not in self.confirmed_spent, rec

    def teardown(self):
        for u in USERS:
            self.push(u.pubkey, self.w[u.pubkey].exit_all())
        self.settle()
        self.advance(3 * EXIT_BLOCKS + 4)
        self.l1(pl.process_exits_tx(OP, NET, CHAIN, self.nonce(OP)), must=False)
        self.no_confirmed_spend_finalised()
        paid = Counter()
        for rec in pl.exits(self.state, CHAIN):
            assert rec["status"] != "pending", rec
            if rec["status"] == "finalized":
                paid[rec["owner"]] += rec["amount"]
            event(f"exit {rec['status']}")
        for u in HONEST:
            w = self.w[u.pubkey]
            sent = received = 0
            for number, block in self.op.blocks.items():
                for tx in block.txs:
                    payer = self.confirmed.get(tx.hash)
                    if payer is None:
                        continue
                    for owner, amount in tx.outputs:
                        if payer == u.pubkey and owner != u.pubkey:
                            sent += amount
                        elif owner == u.pubkey and payer != u.pubkey and number <= w.frontier:
                            received += amount
            want = self.deposited[u.pubkey] - sent + received
            assert paid[u.pubkey] >= want, (u.name, paid[u.pubkey], want, self.fault)


ExitGame.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestExitGame = ExitGame.TestCase


@pytest.mark.parametrize("order", ["input first", "change first", "input paid first"])
def test_double_exit_of_an_unconfirmed_tx(order):
    """Z never confirms its tx: it may exit the input, but exiting the change needs Z's
    confirmation, which then makes the input's exit a cheat the contract stops."""
    game = ExitGame()
    game.deposit(A, 10)
    game.deposit(Z, 20)
    game.z_confirms = False
    game.transfer(Z, A, 15)  # Z's change: 5
    game.block()
    game.deposit(A, 10)  # exits after Z's change (a later position, same heights)
    block = game.op.blocks[game.op.last_child]
    (tx,) = block.txs
    change, z_dep = position(block.number, 0, 1), position(2, 0, 0)
    game.push(Z.pubkey, game.w[Z.pubkey].exit_all())  # Z's watcher: not the change
    game.settle()
    assert game.seen_exits == {}

    def exit_input() -> bool:
        return game.start_exit(Z, z_dep, game.op.blocks[2].txs[0], [], [], must=False)

    def exit_change(confirms) -> bool:
        return game.start_exit(Z, change, tx, block.proof(0), confirms, must=False)

    digest = confirm_digest(tx.hash, block.root)
    assert not exit_change([])  # no confirmation
    assert not exit_change([(Z.pubkey, A.sign(digest))])  # not Z's
    own = [(Z.pubkey, Z.sign(digest))]
    if order == "input first":
        assert exit_input()
        game.settle()
        assert exit_change(own)  # lands, and the confirmation it shows cancels the input's exit
        assert pl.exit_record(game.state, CHAIN, z_dep)["status"] == "challenged"
        game.settle()
        assert game.alerts["invalid_exit"] == len(HONEST)  # every honest watcher saw it
    elif order == "change first":
        assert exit_change(own)
        assert not exit_input()  # the confirmed spend of it is on L1
    else:
        assert exit_input()
        game.advance(3 * EXIT_BLOCKS)
        assert pl.exit_record(game.state, CHAIN, z_dep)["status"] == "finalized"
        assert not exit_change(own)  # the input was paid already
    game.settle()
    game.teardown()  # A: deposited 20, paid 0, received 0 (unconfirmed); gets 20
    assert pl.chain_record(game.state, CHAIN)["paid"] == 20 + (20 if order.endswith("paid first")
                                                                  else 5)
