"""Plasma on a node: the trio edge around `OperatorCore` (role `plasma-operator`) and
`Watcher` (role `plasma-user`).

Operator: registers its chain on L1 at start, takes users' txs (`pl_tx`, refused with
`pl_reject` and a reason), adds deposits once `confirmations` deep, treats exiting outputs as
spent, and every `block_interval` makes a block, persists it, commits its root to L1 and
pushes it to its users (`pl_block`); users fetch what they missed (`pl_get`) and send the
confirmations of their txs (`pl_confirm`), which the operator passes on (`pl_confs`).
User: feeds its watcher the L1 commitments and exits and the operator's data, carries out
what the watcher decides (fetch, alert, confirm, challenge, exit, process exits), deposits
its configured `plasma_deposit` once, and serves `plasma.*` control calls.
"""

from __future__ import annotations

import msgpack
import trio

from .. import events as ev
from ..chain.contracts import plasma as contract
from ..errors import ControlError, LocalProtocolError, RemoteProtocolError
from ..wire import codec
from ..wire.codec import Bytes, fields
from .ledger import PlasmaRejected
from .operator import OperatorCore
from .store import PlasmaStore
from .tx import CHILD_BLOCK_INTERVAL, PlasmaBlock, PlasmaTx, confirm_digest, position, split_pos
from .watcher import Alert, Challenge, Confirm, Fetch, ProcessExits, StartExit, Watcher

codec.register("pl_tx", fields(tx=list))
codec.register("pl_reject", fields(hash=Bytes(32), reason=str))
codec.register("pl_get", fields(number=int))
codec.register("pl_block", fields(block=list, confs=dict))
codec.register("pl_confirm", fields(hash=Bytes(32), index=int, sig=Bytes(64)))
codec.register("pl_confs", fields(number=int, confs=dict))

TICK = 0.25  # seconds between the user's watcher ticks
WALLET_WAIT = 5.0  # seconds a workload transfer waits for change in flight
RECENT_CONFIRMATIONS = 10_000  # our own, re-sent when the operator reconnects
GOSSIPED_CONFIRMATIONS = 2_000  # our latest, gossiped to every user when we leave the chain
TOPIC_CONFS = "plconf"
RECOMMIT_BLOCKS = 4  # L1 blocks after which an uncommitted plasma block is committed again


def _hex(b: bytes) -> str:
    return b.hex()


class OperatorService:
    def __init__(self, node):
        self.node = node
        self.chain = node.chain
        self.params = node.config.plasma
        self.net = node.config.cluster.name
        self.confirmations = node.config.chain.confirmations
        self.me = node.identity.pubkey
        self.users = [n.name for n in node.config.nodes if n.plasma == node.name]
        self.store = PlasmaStore(node.data_dir / "plasma.sqlite" if node.data_dir else None)
        blocks = [PlasmaBlock.from_wire(w) for w in self.store.blocks().values()]
        self.core = OperatorCore.restore(self.me, blocks, self.store.deposits(),
                                         self.store.exiting(), self.store.confirmations())
        self._seen = max([0, *(n for n, _, _ in self.store.deposits())])  # L1 blocks read
        self._committed: dict[int, int] = {}  # child block -> L1 height of our commit tx
        self._new_confs: dict[int, set[bytes]] = {}  # block -> txs confirmed since the last tick
        self._invalid_sent = False
        self._theft: tuple[int, int] | None = None  # (block, tx index) of our invalid tx
        for kind in ("pl_tx", "pl_get", "pl_confirm"):
            node.handlers[kind] = getattr(self, "_on_" + kind)
        self.chain.on_tip.append(self._on_tip)
        node.services.append(self.run)
        node.status_hooks.append(lambda: {"plasma_blocks": self.core.last_child // CHILD_BLOCK_INTERVAL,
                                          "plasma_pending": len(self.core.pending)})
        node.behaviours.update({"operator-withhold": None, "operator-invalid-tx": None,
                                "censor": None})

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self.node.links:  # a tx sent to nobody waits for the next re-announcement
            await trio.sleep(0.1)
        txid = None
        while contract.chain_record(self.chain.tree.state, self.me) is None:
            if txid is None or self.chain.tx_status(txid)["status"] == "unknown":
                try:  # (again, if it was dropped: the chain re-announces it otherwise)
                    txid = self.chain.submit_own(lambda n: contract.register_tx(
                        self.node.identity, self.net, self.params.exit_blocks,
                        self.params.exit_bond, n))
                except ControlError as exc:
                    self.node.log.warning(ev.NODE_ERROR, error=f"plasma register: {exc}")
            await trio.sleep(0.5)
        while True:
            await trio.sleep(self.params.block_interval)
            self._make_block()

    def _make_block(self) -> None:
        extra = []
        if self.node.misbehaving("operator-invalid-tx") and not self._invalid_sent:
            for kind in ("steal", "create-coins"):
                try:
                    extra = [self.core.invalid_tx(kind, self.node.identity)]
                    break
                except LocalProtocolError:
                    continue
            self._invalid_sent = True
        block = self.core.make_block(extra)
        if block is not None and extra:
            self._theft = (block.number, len(block.txs) - 1)  # exit it once committed
        if block is not None:
            self.store.put_block(block.number, block.to_wire())  # before anyone can see it
            self._commit(block)
            self.node.log.info(ev.PLASMA_BLOCK_MADE, number=block.number, txs=len(block.txs),
                               invalid=len(extra))
            if not self.node.misbehaving("operator-withhold"):
                wire = block.to_wire()
                for user in self.users:
                    self.node.send(user, "pl_block", {"block": wire, "confs": {}})
        if self._new_confs:  # (each stored on arrival) passed on to the users
            new = {n: {h: self.core.confirmations_of(h) for h in hashes}
                   for n, hashes in self._new_confs.items()}
            self._new_confs = {}
            if not self.node.misbehaving("operator-withhold"):
                for number, confs in sorted(new.items()):
                    for user in self.users:
                        self.node.send(user, "pl_confs", {"number": number, "confs": confs})

    def _commit(self, block: PlasmaBlock) -> None:
        self._committed[block.number] = self.chain.tree.height
        try:
            self.chain.submit_own(lambda n: contract.commit_tx(
                self.node.identity, self.net, block.number, block.root, n))
        except ControlError as exc:
            self.node.log.warning(ev.NODE_ERROR, error=f"plasma commit {block.number}: {exc}")

    def _on_tip(self) -> None:
        state, height = self.chain.tree.state, self.chain.tree.height
        if contract.chain_record(state, self.me) is None:
            return
        for number, _, l1_height, owner, amount in contract.blocks_after(state, self.me, self._seen):
            if owner is not None:  # a deposit: usable once deep enough
                if height - l1_height + 1 < self.confirmations:
                    break
                self.store.put_deposit(number, owner, amount)
                self.core.add_deposit(number, owner, amount)
            elif self._committed.pop(number, None) is not None or number <= self.core.last_child:
                self.node.log.info(ev.PLASMA_BLOCK_COMMITTED, number=number, height=l1_height)
                if self._theft is not None and self._theft[0] == number:
                    self._exit_theft(*self._theft)
            self._seen = number
        for x in contract.exits(state, self.me):
            if x["status"] == "pending" and x["pos"] not in self.core.exiting:
                self.store.put_exiting(x["pos"], self.core.last_child)
                self.core.mark_exiting(x["pos"])
        for number, at in list(self._committed.items()):  # a commit tx that got lost
            if height >= at + RECOMMIT_BLOCKS and number > self._seen:
                self._commit(self.core.blocks[number])

    def _exit_theft(self, number: int, index: int) -> None:
        """operator-invalid-tx, second half: try to take the coins out through L1."""
        self._theft = None
        block = self.core.blocks[number]
        pos = position(number, index, 0)
        tx = block.txs[index]
        bond = contract.chain_record(self.chain.tree.state, self.me)["bond"]
        sig = self.node.identity.sign(confirm_digest(tx.hash, block.root))  # "we" confirm it
        txid = self.chain.submit_own(lambda n: contract.start_exit_tx(
            self.node.identity, self.net, self.me, pos, tx, block.proof(index), bond, n,
            confirms=[[self.me, sig]] * len(tx.inputs)))
        self.node.log.warning(ev.PLASMA_EXIT_STARTED, pos=pos, txid=txid, invalid=True,
                              amount=block.txs[index].outputs[0][1])

    # -- messages from users ----------------------------------------------------------------
    def _on_pl_tx(self, peer: str, p: dict) -> None:
        tx = PlasmaTx.from_wire(p["tx"])
        if self.node.misbehaving("censor"):
            return  # silently: the user sees its tx never included
        try:
            self.core.submit(tx)
        except PlasmaRejected as exc:
            self.node.log.info(ev.PLASMA_TX_REJECTED, tx_hash=_hex(tx.hash), reason=exc.reason,
                               detail=exc.detail, peer=peer)
            self.node.send(peer, "pl_reject", {"hash": tx.hash, "reason": exc.reason})

    def _on_pl_get(self, peer: str, p: dict) -> None:
        if self.node.misbehaving("operator-withhold"):
            return
        block = self.core.blocks.get(p["number"])
        if block is not None:
            self.node.send(peer, "pl_block", {"block": block.to_wire(),
                                              "confs": self.core.confirmations_for(block.number)})

    def _on_pl_confirm(self, peer: str, p: dict) -> None:
        try:
            self.core.add_confirmation(p["hash"], p["index"], p["sig"])
        except PlasmaRejected as exc:
            raise RemoteProtocolError(exc.reason, exc.detail) from None
        number, _ = self.core.locate(p["hash"])
        self.store.put_confirmations_many([(number, p["hash"], self.core.confirmations_of(p["hash"]))])
        self._new_confs.setdefault(number, set()).add(p["hash"])  # passed on at the next tick


class UserService:
    def __init__(self, node):
        self.node = node
        self.chain = node.chain
        cfg = node.config
        self.params = cfg.plasma
        self.net = cfg.cluster.name
        self.operator = node.spec.plasma
        self.op = node.pubkeys[self.operator]
        self.me = node.identity.pubkey
        self.watcher = Watcher(self.me, self.op, self.params.exit_blocks,
                               self.params.withholding_timeout)
        self.store = PlasmaStore(node.data_dir / "plasma-user.sqlite" if node.data_dir else None)
        self._stored = self.store.blocks()  # fetched before a restart: fed once committed
        self._stored_confs = self.store.confirmations()
        self._confirmed: dict[bytes, tuple[tuple[int, ...], bytes]] = {}  # ours, recent
        self._sent: dict[tuple, str] = {}  # (action type, pos) -> txid of our last L1 tx
        node.on_connect.append(self._peer_up)
        self._last_block = 0  # the last plasma block number fed from L1
        self._exits: dict[int, str] = {}  # pos -> last status fed to the watcher
        self._logged: dict[int, str] = {}
        for kind in ("pl_block", "pl_reject", "pl_confs"):
            node.handlers[kind] = getattr(self, "_on_" + kind)
        node.gossip.add_validator(TOPIC_CONFS, self._on_gossiped_confirmations)
        self._gossiped = False  # our confirmations, published once when we leave the chain
        self.chain.on_tip.append(self._on_tip)
        node.services.append(self.run)
        node.status_hooks.append(self._status)
        node.workloads.register("plasma-transfers", self._workload_transfer)
        node.behaviours.update({"exit-spent": self._exit_spent, "double-spend": None})
        for method, fn in {"plasma.deposit": self.deposit, "plasma.transfer": self.transfer,
                           "plasma.transfer_many": self.transfer_many,
                           "plasma.balance": self.balance, "plasma.exit": self.exit,
                           "plasma.exits": self.exits}.items():
            node.control.register(method, fn)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        for wire in self.store.own():  # our txs sent before a restart
            tx = PlasmaTx.from_wire(wire)
            try:
                self.watcher.on_own_spend(tx)
            except PlasmaRejected:
                self.store.drop_own(tx.hash)
        deposit = self.node.spec.plasma_deposit
        while not self.node.links:
            await trio.sleep(0.1)
        while deposit and not self.store.meta("deposited"):
            if contract.chain_record(self.chain.tree.state, self.op) is not None:
                try:
                    self.deposit(deposit)
                except ControlError as exc:
                    self.node.log.warning(ev.NODE_ERROR, error=f"plasma deposit: {exc}")
            await trio.sleep(0.5)
        while True:
            self._do(self.watcher.tick(trio.current_time(), self.chain.tree.height))
            if self.watcher.halted and not self._gossiped:
                self._publish_confirmations()
            await trio.sleep(TICK)

    # -- L1 -------------------------------------------------------------------------------
    def _on_tip(self) -> None:
        state, now = self.chain.tree.state, trio.current_time()
        if contract.chain_record(state, self.op) is None:
            return
        events = []  # L1 order: by height, an exit before a commitment of the same height
        for x in contract.exits(state, self.op):
            if self._exits.get(x["pos"]) != x["status"]:
                events.append((x["started"], 0, x))
        for b in contract.blocks_after(state, self.op, self._last_block):
            events.append((b[2], 1, b))
        for _, kind, item in sorted(events, key=lambda e: e[:2]):
            try:
                if kind == 0:
                    self._exits[item["pos"]] = item["status"]
                    self._do(self.watcher.on_exit(item))
                    self._log_exit(item)
                else:
                    number, root, height, owner, amount = item
                    self._last_block = number
                    self._do(self.watcher.on_commitment(number, root, height, owner, amount, now))
                    stored = self._stored.pop(number, None)
                    if stored is not None:
                        confs = {**stored[1], **self._stored_confs.pop(number, {})}
                        self._do(self.watcher.on_block(PlasmaBlock.from_wire(stored[0]),
                                                       confs, now))
            except (LocalProtocolError, RemoteProtocolError, ValueError) as exc:
                self.node.log.warning(ev.NODE_ERROR, error=f"plasma watcher: {exc}")
        self._do(self.watcher.tick(now, self.chain.tree.height))

    def _log_exit(self, x: dict) -> None:
        if self._logged.get(x["pos"]) == x["status"]:
            return
        self._logged[x["pos"]] = x["status"]
        fields_ = {"pos": x["pos"], "amount": x["amount"],
                   "owner": self.node.names.get(x["owner"], _hex(x["owner"]))}
        if x["status"] == "finalized" and x["owner"] == self.me:
            self.node.log.info(ev.PLASMA_EXIT_FINALIZED, **fields_)
        elif x["status"] == "challenged" and x["challenger"] == self.me:
            self.node.log.warning(ev.PLASMA_EXIT_CHALLENGED, **fields_, confirmed=True)

    # -- the watcher's decisions ---------------------------------------------------------
    def _do(self, actions: list) -> None:
        for a in actions:
            try:
                self._do_one(a)
            except ControlError as exc:  # e.g. no L1 funds for the fee: retried by the watcher
                self.node.log.warning(ev.NODE_ERROR, error=f"plasma {type(a).__name__}: {exc}")

    def _do_one(self, a) -> None:
        me, net = self.node.identity, self.net
        if isinstance(a, Fetch):
            self.node.send(self.operator, "pl_get", {"number": a.number})
        elif isinstance(a, Alert):
            self.node.log.warning(ev.WATCHER_ALERT, kind=a.kind, detail=a.detail,
                                  operator=self.operator)
        elif isinstance(a, Confirm):
            sig = me.sign(a.digest)
            self._send_confirmation(a.tx_hash, a.inputs, sig)
            self._confirmed[a.tx_hash] = (a.inputs, sig)
            if len(self._confirmed) > RECENT_CONFIRMATIONS:
                del self._confirmed[next(iter(self._confirmed))]
            self.store.drop_own(a.tx_hash)
            self._do(self.watcher.own_confirmation(a.tx_hash, sig))  # may free waiting exits
        elif isinstance(a, (Challenge, StartExit)) and self._still_pending(a):
            return  # the watcher retries; our tx for it is still waiting for a block
        elif isinstance(a, Challenge):
            txid = self.chain.submit_own(lambda n: contract.challenge_tx(
                me, net, self.op, a.pos, a.spend, a.spend_pos, list(a.proof), a.confirm, n))
            self._sent[(type(a), a.pos)] = txid
            self.node.log.warning(ev.PLASMA_EXIT_CHALLENGED, pos=a.pos, txid=txid)
        elif isinstance(a, StartExit):
            bond = contract.chain_record(self.chain.tree.state, self.op)["bond"]
            txid = self.chain.submit_own(lambda n: contract.start_exit_tx(
                me, net, self.op, a.pos, a.tx, list(a.proof), bond, n,
                confirms=[list(c) for c in a.confirms]))
            self._sent[(type(a), a.pos)] = txid
            amount = a.tx.outputs[split_pos(a.pos)[2]][1]
            self.node.log.info(ev.PLASMA_EXIT_STARTED, pos=a.pos, amount=amount, txid=txid)
        elif isinstance(a, ProcessExits):
            self.chain.submit_own(lambda n: contract.process_exits_tx(me, net, self.op, n))

    def _publish_confirmations(self) -> None:
        """We left the chain (withholding, an invalid block): an operator that hides data
        may hide confirmations too, and our payees need ours to exit what we paid them.
        So they go to every plasma user by gossip, not through the operator."""
        self._gossiped = True
        confs = [[n, h, list(sigs)] for h in list(self._confirmed)[-GOSSIPED_CONFIRMATIONS:]
                 if (found := self.watcher.confirmations_of(h)) is not None
                 for n, sigs in [found]]
        if confs:
            self.node.publish(TOPIC_CONFS, msgpack.packb({"op": self.op, "c": confs},
                                                         use_bin_type=True))

    def _on_gossiped_confirmations(self, data: bytes, peer) -> None:
        if peer is None:
            return
        try:
            msg = msgpack.unpackb(data, raw=False)
            op, confs = msg["op"], msg["c"]
            if type(op) is not bytes or type(confs) is not list:
                raise TypeError
        except Exception:
            raise RemoteProtocolError("bad_plasma_confirmations", "malformed") from None
        if op != self.op:
            return  # another chain's: relay it, nothing for us
        for item in confs:
            if type(item) is not list or len(item) != 3 or type(item[0]) is not int:
                raise RemoteProtocolError("bad_plasma_confirmations", "malformed entry")
            self._do(self.watcher.on_confirmations(item[0], {item[1]: item[2]}))

    def _still_pending(self, a) -> bool:
        txid = self._sent.get((type(a), a.pos))
        return txid is not None and self.chain.tx_status(txid)["status"] == "pending"

    def _send_confirmation(self, tx_hash: bytes, inputs: tuple[int, ...], sig: bytes) -> None:
        for i in inputs:
            self.node.send(self.operator, "pl_confirm", {"hash": tx_hash, "index": i, "sig": sig})

    def _peer_up(self, peer: str) -> None:
        """The operator is back (maybe restarted): confirmations it may have missed, again."""
        if peer == self.operator:
            for tx_hash, (inputs, sig) in self._confirmed.items():
                self._send_confirmation(tx_hash, inputs, sig)

    # -- messages from the operator ------------------------------------------------------
    def _on_pl_block(self, peer: str, p: dict) -> None:
        if peer != self.operator:
            raise RemoteProtocolError("not_our_operator", peer)
        block = PlasmaBlock.from_wire(p["block"])
        self.store.put_block(block.number, [p["block"], p["confs"]])
        self._do(self.watcher.on_block(block, p["confs"], trio.current_time()))

    def _on_pl_confs(self, peer: str, p: dict) -> None:
        if peer != self.operator:
            raise RemoteProtocolError("not_our_operator", peer)
        self.store.put_confirmations_many((p["number"], h, list(sigs))
                                          for h, sigs in p["confs"].items()
                                          if type(h) is bytes and type(sigs) is list)
        self._do(self.watcher.on_confirmations(p["number"], p["confs"]))

    def _on_pl_reject(self, peer: str, p: dict) -> None:
        if peer != self.operator:
            raise RemoteProtocolError("not_our_operator", peer)
        if self.watcher.forget_spend(p["hash"]):
            self.store.drop_own(p["hash"])
            self.node.log.info(ev.PLASMA_TX_REJECTED, tx_hash=_hex(p["hash"]), reason=p["reason"])

    # -- control ---------------------------------------------------------------------------
    def deposit(self, amount: int) -> dict:
        if type(amount) is not int or amount <= 0:
            raise ControlError("bad_params", "amount must be a positive integer")
        txid = self.chain.submit_own(lambda n: contract.deposit_call_tx(
            self.node.identity, self.net, self.op, amount, n))
        self.store.put_meta("deposited", True)
        return {"txid": txid}

    def transfer(self, to: str, amount: int, fee: int = 0) -> dict:
        return {"tx_hash": _hex(self._transfer(to, amount, fee).hash)}

    def _transfer(self, to: str, amount: int, fee: int = 0, candidates=None) -> PlasmaTx:
        if to not in self.node.pubkeys:
            raise ControlError("bad_params", f"unknown node {to!r}")
        try:
            tx = self.watcher.make_transfer(self.node.pubkeys[to], amount, fee, candidates)
        except PlasmaRejected as exc:
            raise ControlError(exc.reason, exc.detail) from None
        except ValueError as exc:
            raise ControlError("bad_params", str(exc)) from None
        tx = tx.signed([self.node.identity] * len(tx.inputs))
        self.watcher.on_own_spend(tx)
        self.store.put_own(tx.hash, tx.to_wire())  # before it leaves: exits need to know
        self.node.send(self.operator, "pl_tx", {"tx": tx.to_wire()})
        if self.node.misbehaving("double-spend"):  # the same inputs, to ourselves this time
            twin = PlasmaTx(tx.chain, tx.inputs, ((self.me, amount),) + tx.outputs[1:])
            twin = twin.signed([self.node.identity] * len(tx.inputs))
            self.node.send(self.operator, "pl_tx", {"tx": twin.to_wire()})
        return tx

    def transfer_many(self, to: str, amount: int, count: int) -> dict:
        """Up to `count` transfers of `amount` to `to`, as many as our spendable outputs
        allow (for load generation: each output pays one; `to` may be ourselves, which
        splits each output in two)."""
        if type(count) is not int or not 0 < count <= 100_000:
            raise ControlError("bad_params", "count must be an int in 1..100000")
        candidates = sorted(self.watcher.balance()[1], key=lambda u: (u[1], u[0]))
        hashes = []
        for _ in range(count):
            try:
                hashes.append(_hex(self._transfer(to, amount, 0, candidates).hash))
            except ControlError as exc:
                if exc.code != "insufficient_funds" or not hashes:
                    raise
                break
        return {"sent": len(hashes), "tx_hashes": hashes}

    def balance(self) -> dict:
        total, utxos = self.watcher.balance()
        return {"total": total, "utxos": [{"pos": p, "amount": a} for p, a in utxos],
                "halted": self.watcher.halt_reason, "block": self.watcher.frontier}

    def exit(self, all: bool = False, pos: int | None = None) -> dict:
        if all == (pos is not None):
            raise ControlError("bad_params", "give either all=true or pos")
        try:
            actions = self.watcher.exit_all() if all else self.watcher.exit(pos)
        except PlasmaRejected as exc:
            raise ControlError(exc.reason, exc.detail) from None
        self._do(actions)
        return {"exits": [a.pos for a in actions if isinstance(a, StartExit)]}

    def exits(self) -> list[dict]:
        names = self.node.names
        return [{"pos": x["pos"], "owner": names.get(x["owner"], _hex(x["owner"])),
                 "amount": x["amount"], "state": x["status"], "exitable_at": x["exitable_at"],
                 "started": x["started"]}
                for x in contract.exits(self.chain.tree.state, self.op)]

    def _status(self) -> dict:
        total, _ = self.watcher.balance()
        return {"plasma_balance": total, "plasma_halted": self.watcher.halt_reason}

    async def _workload_transfer(self, to: str, amount: int) -> None:
        """One `plasma-transfers` arrival.  Coins in flight (our change, not yet in a
        committed block) come back within a few seconds: wait for them, as a wallet would."""
        with trio.move_on_after(WALLET_WAIT):
            while True:
                try:
                    self.transfer(to, amount)
                    return
                except ControlError as exc:
                    if exc.code != "insufficient_funds":
                        raise
                await trio.sleep(TICK)
        raise ControlError("insufficient_funds", f"no free output after {WALLET_WAIT} s")

    # -- byzantine behaviours ------------------------------------------------------------
    def _exit_spent(self) -> None:
        """Exit the latest output of ours that we already spent (watchers must challenge)."""
        spent = self.watcher.spent_outputs()
        if not spent:
            self.node.log.warning(ev.NODE_ERROR, error="exit-spent: no spent output of ours")
            return
        pos, tx, proof, confirms = spent[-1]
        bond = contract.chain_record(self.chain.tree.state, self.op)["bond"]
        txid = self.chain.submit_own(lambda n: contract.start_exit_tx(
            self.node.identity, self.net, self.op, pos, tx, list(proof), bond, n,
            confirms=[list(c) for c in confirms]))
        self.node.log.warning(ev.PLASMA_EXIT_STARTED, pos=pos, txid=txid, spent=True)


__all__ = ["OperatorService", "UserService"]
