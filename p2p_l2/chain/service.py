"""Layer 1 on a node: the trio edge around the sans-IO BlockTree, Mempool and miner schedule.

Transactions flood on gossip topic `tx`; blocks go by inventory on topic `block`.  Both are
judged by the topic validator before anything is relayed.  A block whose parent is unknown
is passed over (gossip `Ignore`) and triggers a catch-up from the peer that sent it:
`getblocks` with our block locator, answered by `blocks` batches; the new tip is then
announced on gossip.  Peers also sync on every (re)connection, so a node that was
partitioned or restarted catches up by itself.
"""

from __future__ import annotations


import sqlite3

import msgpack
import trio

from .. import events as ev
from ..errors import ControlError, RemoteProtocolError
from ..gossip import Ignore
from ..wire import codec
from ..wire.codec import Bytes, fields
from .block import Block, make_block
from .mempool import Mempool
from .store import ChainStore
from .tree import AddResult, BlockTree
from .ledger import apply_tx
from .tx import Tx, TxRejected, transfer

TOPIC_TX = "tx"
TOPIC_BLOCK = "block"
SYNC_BYTES = 4 << 20  # a `blocks` reply carries about this much
SYNC_EVERY = 10.0  # seconds between background catch-up polls of one random peer
MAX_LOCATOR = 64

codec.register("getblocks", fields(loc=[Bytes(32)]))
codec.register("blocks", fields(b=[object]))


def _unpack(data: bytes, what: str):
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # any malformed msgpack
        raise RemoteProtocolError(f"bad_{what}", f"not msgpack: {type(exc).__name__}") from None


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class ChainService:
    def __init__(self, node):
        self.node = node
        cfg = node.config
        self.params = cfg.chain
        self.net = cfg.cluster.name
        accounts = {node.pubkeys.get(name) or bytes.fromhex(name): amount
                    for name, amount in cfg.accounts.items()}
        self.miners = cfg.nodes_with_role("miner")
        store = None
        self.wallet = None  # our own unconfirmed txs survive a crash: never reuse a nonce
        if node.data_dir is not None:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            store = ChainStore(node.data_dir / "chain.sqlite")
            self.wallet = sqlite3.connect(str(node.data_dir / "wallet.sqlite"), isolation_level=None)
            self.wallet.execute("PRAGMA journal_mode=WAL")
            self.wallet.execute("CREATE TABLE IF NOT EXISTS own (txid BLOB PRIMARY KEY, tx BLOB)")
        self.tree = BlockTree(self.net, accounts, {node.pubkeys[m] for m in self.miners},
                              max_block_txs=self.params.max_block_txs,
                              block_reward=self.params.block_reward, store=store)
        self.mempool = Mempool(net=self.net, min_fee=1)  # no free rides: spam costs coins
        self.on_tip: list = []  # callbacks after the active chain changed (layer-2 watchers)
        node.gossip.add_validator(TOPIC_TX, self._on_tx)
        node.quiet_topics.add(TOPIC_TX)  # tx.accepted on every node tells the whole story
        node.gossip.add_validator(TOPIC_BLOCK, self._on_block, inventory=True)
        node.handlers["getblocks"] = self._on_getblocks
        node.handlers["blocks"] = self._on_blocks
        node.on_connect.append(self.request_sync)
        node.workloads.register("l1-transfers", lambda to, amount: self.send(to, amount))
        node.status_hooks.append(lambda: {"height": self.tree.height, "tip": self.tree.tip.hash.hex()})
        node.services.append(self.run)
        for method, fn in {"chain.balance": self.balance, "chain.send": self.send,
                           "chain.submit": self.submit, "chain.tx": self.tx_status,
                           "chain.tip": self.tip, "chain.block": self.block,
                           "chain.state": self.state_summary,
                           "mempool": self.mempool_info}.items():
            node.control.register(method, fn)

    # -- background --------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.node.log.info(ev.CHAIN_LOADED, height=self.tree.height, tip=self.tree.tip.hash.hex(),
                           blocks=self.tree.statistics().get("blocks"))
        self._resubmit_own()
        async with trio.open_nursery() as nursery:
            if self.node.name in self.miners:
                nursery.start_soon(self._mine_loop)
            nursery.start_soon(self._maintenance)
            task_status.started()

    async def _mine_loop(self) -> None:
        """Simulated proof of work: exponential waits with mean interval / hashrate share."""
        cfg = self.node.config
        total = sum(cfg.node(m).hashrate for m in self.miners)
        mean = self.params.block_interval * total / self.node.spec.hashrate
        while True:
            await trio.sleep(self.node.rng.expovariate(1.0 / mean))
            self.mine_block()

    def _resubmit_own(self) -> None:
        """Put our own txs that are not on chain yet back in the pool (after a restart),
        announce them again (a tx sent before any link was up reached nobody), and forget
        those the chain has passed."""
        if self.wallet is None:
            return
        state = self.tree.state
        for txid, blob in self.wallet.execute("SELECT txid, tx FROM own").fetchall():
            tx = Tx.from_wire(_unpack(blob, "tx"))
            if tx.nonce < state.nonce(tx.sender):
                self.wallet.execute("DELETE FROM own WHERE txid = ?", (txid,))
            else:
                if txid not in self.mempool:
                    try:
                        self._admit(tx)
                    except RemoteProtocolError:
                        continue
                self.node.publish(TOPIC_TX, tx.encode(), force=True)

    def _unstick_own(self) -> None:
        """Our next tx can never be mined (e.g. a contract call that fails on the current
        state), so nothing after it can be either: replace it, by fee, with a harmless
        1-coin transfer to ourselves at the same nonce (a "cancel", as wallets do)."""
        me = self.node.identity
        state, height = self.tree.state, self.tree.height
        nonce = state.nonce(me.pubkey)
        head = next((tx for t in self.mempool.txids()
                     if (tx := self.mempool.get(t)).sender == me.pubkey and tx.nonce == nonce),
                    None)
        if head is None or (head.kind == "transfer" and head.to == me.pubkey):
            return
        state.begin()
        try:
            apply_tx(state, head, height + 1, None, net=self.net)
            return
        except TxRejected as exc:
            reason = exc.reason
        finally:
            state.abort()
        cancel = transfer(me, self.net, me.pubkey, 1, nonce, fee=head.fee + 1)
        try:
            self._submit_one(cancel)
        except ControlError as exc:
            reason = f"{reason}; cancel refused: {exc.code}"
        if self.wallet is not None:
            self.wallet.execute("DELETE FROM own WHERE txid = ?", (head.txid,))
        self.node.log.warning(ev.TX_DROPPED, txid=head.txid.hex(), nonce=nonce, reason=reason,
                              replaced_by=cancel.txid.hex())

    async def _maintenance(self) -> None:
        while True:
            await trio.sleep(SYNC_EVERY)
            self._unstick_own()
            self._resubmit_own()
            self.mempool.expire(self.node.wall())
            if self.node.links:
                self.request_sync(self.node.rng.choice(sorted(self.node.links)))

    def mine_block(self) -> Block:
        tip = self.tree.tip
        txs = self.mempool.select(self.tree.state, self.params.max_block_txs, height=tip.height + 1)
        block = make_block(self.node.identity, tip, txs, time=max(self.node.wall(), tip.time))
        result = self.tree.add(block, self.node.wall())
        self.node.log.info(ev.BLOCK_MINED, block=block.hash.hex(), height=block.height,
                           txs=len(txs), prev=tip.hash.hex())
        self._after_add(result, None)
        self.node.publish(TOPIC_BLOCK, pack(block.to_wire()))
        return block

    # -- gossip validators ---------------------------------------------------------------
    def _on_tx(self, data: bytes, peer) -> None:
        if peer is None:
            return  # our own, admitted before it was published
        tx = Tx.from_wire(_unpack(data, "tx"))
        if tx.txid in self.mempool:
            raise Ignore  # known (its signature may differ: never relay an unchecked copy)
        self._admit(tx)

    def _admit(self, tx: Tx) -> None:
        try:
            self.mempool.add(tx, self.tree.state, self.node.wall())
        except TxRejected as exc:
            raise RemoteProtocolError(exc.reason, exc.detail) from None
        self.node.log.info(ev.TX_ACCEPTED, txid=tx.txid.hex(), sender=self._name(tx.sender),
                           nonce=tx.nonce, fee=tx.fee)

    def _on_block(self, data: bytes, peer) -> None:
        if peer is None:
            return  # our own, added to the tree before it was published
        block = Block.from_wire(_unpack(data, "block"), self.params.max_block_txs)
        result = self._add(block)
        if result.status == "orphan":
            if peer is not None:
                self.request_sync(peer)
            raise Ignore  # judged once its parent is here; relayed then
        if result.status == "invalid":
            if result.reason == "bad_time":
                raise Ignore  # our clock may be the one that is off: no blame, ask again later
            raise RemoteProtocolError(result.reason.split(":")[0], result.reason)
        if result.status == "duplicate" and not self.tree.get(block.hash):
            raise Ignore  # still in the orphan pool: not validated yet
        self._after_add(result, peer)

    def _add(self, block: Block) -> AddResult:
        """tree.add; a failed database write leaves memory ahead of disk, so the node stops
        (a restart resumes from the last committed block)."""
        try:
            return self.tree.add(block, self.node.wall())
        except sqlite3.Error as exc:
            self.node.log.error(ev.NODE_ERROR, error=f"chain database write failed: {exc}")
            self.node.stop()
            raise Ignore from None

    def _after_add(self, result: AddResult, peer) -> None:
        log = self.node.log
        if result.disconnected:
            log.info(ev.CHAIN_REORG, depth=result.reorg_depth,
                     old_tip=result.disconnected[0].hash.hex(),
                     new_tip=self.tree.tip.hash.hex(), height=self.tree.height)
        for block in result.connected:
            log.info(ev.BLOCK_ACCEPTED, block=block.hash.hex(), height=block.height,
                     miner=self._name(block.header.miner), txs=len(block.txs), peer=peer,
                     time=block.header.time)
        if result.connected or result.disconnected:
            state, now = self.tree.state, self.node.wall()
            for block in reversed(result.disconnected):  # oldest first: nonces stay in order
                self.mempool.readd(block.txs, state, now)
            for block in result.connected:
                self.mempool.remove_included(block.txs)
            self.mempool.revalidate(state)
            # orphaned txs back in the pool: announce them again (the winning side never saw them)
            for block in reversed(result.disconnected):
                for tx in block.txs:
                    if tx.txid in self.mempool:
                        self.node.publish(TOPIC_TX, tx.encode(), force=True)
            for callback in self.on_tip:
                callback()
            self._unstick_own()  # at once: a dead tx ahead of ours would hold them all back

    # -- catch-up ------------------------------------------------------------------------
    def request_sync(self, peer: str) -> None:
        self.node.send(peer, "getblocks", {"loc": self.tree.locator()[:MAX_LOCATOR]})

    def _on_getblocks(self, peer: str, payload: dict) -> None:
        if len(payload["loc"]) > MAX_LOCATOR:
            raise RemoteProtocolError("bad_payload", f"locator longer than {MAX_LOCATOR}")
        link = self.node.links.get(peer)
        if link is None or link.queued_bytes > SYNC_BYTES:
            return  # the last reply is still on its way: one at a time, no amplification
        out, size = [], 0
        for block in self.tree.blocks_after(payload["loc"], 500):
            wire = block.to_wire()
            out.append(wire)
            size += block.size
            if size >= SYNC_BYTES:
                break
        if out:
            self.node.send(peer, "blocks", {"b": out})

    def _on_blocks(self, peer: str, payload: dict) -> None:
        connected = False
        for wire in payload["b"]:
            block = Block.from_wire(wire, self.params.max_block_txs)
            result = self._add(block)
            if result.status == "invalid":
                raise RemoteProtocolError(result.reason.split(":")[0], result.reason)
            self._after_add(result, peer)
            connected = connected or bool(result.connected)
        if connected:  # more may follow; and tell our other peers about the new tip
            self.request_sync(peer)
            tip = self.tree.block_at(self.tree.height)
            self.node.publish(TOPIC_BLOCK, pack(tip.to_wire()))

    # -- control methods -----------------------------------------------------------------
    def _name(self, pubkey: bytes) -> str:
        return self.node.names.get(pubkey) or pubkey.hex()

    def _account(self, who) -> bytes:
        if who is None:
            return self.node.identity.pubkey
        if isinstance(who, str) and who in self.node.pubkeys:
            return self.node.pubkeys[who]
        try:
            key = bytes.fromhex(who) if isinstance(who, str) else who
        except ValueError:
            key = None
        if not isinstance(key, bytes) or len(key) != 32:
            raise ControlError("bad_params", f"{who!r} is neither a node name nor a hex public key")
        return key

    def balance(self, account=None) -> dict:
        key = self._account(account)
        state = self.tree.state
        return {"balance": state.balance(key), "nonce": state.nonce(key)}

    def send(self, to, amount: int, fee: int = 1) -> dict:
        if type(amount) is not int or amount <= 0 or type(fee) is not int or fee < 0:
            raise ControlError("bad_params", "amount must be a positive integer, fee >= 0")
        me = self.node.identity
        nonce = self.mempool.next_nonce(self.tree.state, me.pubkey)
        tx = transfer(me, self.net, self._account(to), amount, nonce, fee)
        return {"txid": self._submit_one(tx)}

    def next_nonce(self) -> int:
        return self.mempool.next_nonce(self.tree.state, self.node.identity.pubkey)

    def submit_own(self, build) -> str:
        """Build one of our own txs with `build(nonce)` and submit it; raises ControlError."""
        return self._submit_one(build(self.next_nonce()))

    def _submit_one(self, tx: Tx) -> str:
        try:
            self._admit(tx)
        except RemoteProtocolError as exc:
            raise ControlError(exc.reason, exc.detail) from None
        if self.wallet is not None and tx.sender == self.node.identity.pubkey:
            self.wallet.execute("INSERT OR REPLACE INTO own VALUES (?, ?)", (tx.txid, tx.encode()))
        self.node.publish(TOPIC_TX, tx.encode())
        return tx.txid.hex()

    def submit(self, txs: list) -> dict:
        """Admit signed txs (wire maps, as `Tx.to_wire`) built elsewhere; e.g. by a workload."""
        if not isinstance(txs, list):
            raise ControlError("bad_params", "txs must be a list of transactions")
        accepted, rejected = [], {}
        for wire in txs:
            try:
                accepted.append(self._submit_one(Tx.from_wire(wire)))
            except RemoteProtocolError as exc:
                rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
            except ControlError as exc:
                rejected[exc.code] = rejected.get(exc.code, 0) + 1
        return {"accepted": len(accepted), "rejected": rejected, "txids": accepted}

    def tx_status(self, txid: str) -> dict:
        try:
            key = bytes.fromhex(txid)
        except (ValueError, TypeError):
            raise ControlError("bad_params", "txid must be hex") from None
        height = self.tree.tx_height(key)
        if height is not None:
            return {"status": "confirmed", "height": height,
                    "confirmations": self.tree.height - height + 1}
        if key in self.mempool:
            return {"status": "pending"}
        return {"status": "unknown"}

    def tip(self) -> dict:
        return {"height": self.tree.height, "hash": self.tree.tip.hash.hex()}

    def state_summary(self) -> dict:
        """The tip state in full, for invariant checks (`chain.state`; `down` saves it as
        RUN/final_state.json): balances by account, coins locked by each contract, every
        channel record and every plasma chain with its exits."""
        from .contracts import CONTRACTS
        from .contracts import plasma as plasma_contract
        state, cfg = self.tree.state, self.node.config
        balances = {self._name(k[1]): v for k, v in state.kv.items() if k[0] == "bal"}
        channels = [dict(v, cid=k[2]) for k, v in state.items(("c", "channel")) if len(k) == 3]
        plasma = {}
        for k, rec in state.items(("c", "plasma")):
            if len(k) == 3:
                plasma[self._name(k[2])] = {"chain": dict(rec),
                                            "exits": plasma_contract.exits(state, k[2])}
        return {
            "height": self.tree.height, "tip": self.tree.tip.hash.hex(),
            "genesis": dict(cfg.accounts), "genesis_total": sum(cfg.accounts.values()),
            "rewards": cfg.chain.block_reward * self.tree.height,
            "balances": balances, "total_balances": sum(balances.values()),
            "locked": {name: c.locked(state) for name, c in CONTRACTS.items()},
            "channels": channels, "plasma": plasma,
        }

    def block(self, height: int) -> dict:
        if type(height) is not int:
            raise ControlError("bad_params", "height must be an integer")
        block = self.tree.block_at(height)
        if block is None:
            raise ControlError("unknown_block", f"no block at height {height} (tip {self.tree.height})")
        h = block.header
        return {"height": h.height, "hash": block.hash.hex(), "prev": h.prev.hex(),
                "miner": self._name(h.miner), "txids": [tx.txid.hex() for tx in block.txs],
                "time": h.time}

    def mempool_info(self) -> dict:
        return {"size": len(self.mempool), "txids": [t.hex() for t in self.mempool.txids()]}


def attach(node) -> ChainService:
    return ChainService(node)


__all__ = ["ChainService", "attach", "TOPIC_TX", "TOPIC_BLOCK"]
