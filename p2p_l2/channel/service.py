"""Payment channels on a node (role `channels`): the trio edge around the sans-IO pieces.

Opening: A sends `ch_open`; B countersigns the open terms and the first state
(`ch_accept`); A posts the `channel.open` call on L1 and sends its signature on the first
state (`ch_funded`).  Both persist that state before anything depends on it, and treat the
channel as open once the L1 record is `confirmations` deep; A then announces it on gossip
(topic `chan`) so every node can route over it.  Updates run through `machine.Channel`;
its `Persist` actions are written to SQLite before the `Send`s that follow them.
Payments: `invoice.create` at the payee, `pay` at the payer: a route over the gossiped
graph, an onion sealed hop by hop, HTLCs with decreasing expiries, the preimage back along
the path (persisted before it is passed upstream), failures back with a reason, retries
that exclude the failing channel.  Closing: cooperative (`ch_close` / `ch_close_sig`) or
forced; after a forced close both sides settle once the dispute window passed, and either
side challenges a close that posted a state older than its own.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from hashlib import blake2b

import msgpack
import trio

from .. import events as ev
from ..chain.contracts import channel as contract
from ..errors import ControlError, LocalProtocolError, P2PL2Error, RemoteProtocolError
from ..gossip import Ignore
from ..wire import codec, verify
from ..wire.codec import Bytes, fields
from . import machine as m
from .commitment import A, B, ChannelState, SignedState, open_digest, payment_hash, sign_state
from .invoice import Invoice, new_invoice
from .liveness import FORCE_CLOSE, RESYNC, Liveness
from .onion import build as build_onion
from .onion import peel
from .routing import ChannelGraph, NoRoute, Policy, route_hops_for_onion
from .store import ChannelStore

TOPIC_CHAN = "chan"
TOPIC_UPDATE = "chanupd"  # a node's fee policy for its side of a channel, signed by it
DEFAULT_POLICY = (1, 1000, None)  # base fee, fee ppm, expiry delta (None: [channels].htlc_delta)
FINAL_DELTA = 9  # blocks the payee wants before its HTLC expires
MIN_DELTA = 3  # an HTLC offered to us must not expire sooner than this
EXPIRY_MARGIN = 2  # blocks before its expiry an unresolved HTLC of ours forces a close
UPDATE_LOG_EVERY = 0.5  # seconds between `channel.updated` events of one channel (a sample)
PAY_ATTEMPTS = 4
DIRECT = b"\xd1"  # not an onion version: an HTLC "onion" for the peer only (a tiny map)

codec.register("ch_open", fields(cid=Bytes(32), fa=int, fb=int, push=int, dispute=int))
codec.register("ch_accept", fields(cid=Bytes(32), sig_open=Bytes(64), sig_state=Bytes(64)))
codec.register("ch_funded", fields(cid=Bytes(32), sig_state=Bytes(64)))
codec.register("ch_refuse", fields(cid=Bytes(32), reason=str))
codec.register("ch_close", fields(cid=Bytes(32), seq=int, sig=Bytes(64)))
codec.register("ch_close_sig", fields(cid=Bytes(32), seq=int, sig=Bytes(64)))


def _hex(b: bytes) -> str:
    return b.hex()


def _blame(reason: str, cid: bytes | None) -> str:
    """A failure reason that names the channel at fault: `reason@cid-hex`."""
    return f"{reason}@{cid.hex()}" if cid else reason


def _blamed(reason: str | None) -> bytes | None:
    """The channel a failure reason blames, if it names a well-formed one."""
    _, at, tail = (reason or "").rpartition("@")
    try:
        cid = bytes.fromhex(tail) if at else b""
    except ValueError:
        return None
    return cid if len(cid) == 32 else None


@dataclass
class Chan:
    """What the service knows of one of its channels besides the machine's state."""

    cid: bytes
    peer: str
    party: int
    fund_a: int
    fund_b: int
    status: str  # opening | open | closing | closed
    signed: SignedState | None = None
    machine: m.Channel | None = None
    closing: dict = field(default_factory=dict)  # kind, txid, posted...
    slots: trio.Semaphore | None = None  # our own payments' share of max_htlcs
    liveness: Liveness = field(default_factory=Liveness)  # when to stop waiting on the peer

    def info(self) -> dict:
        return {"peer": self.peer, "party": self.party, "fund_a": self.fund_a,
                "fund_b": self.fund_b, "status": self.status, "closing": self.closing}


@dataclass
class Payment:
    payment_hash: bytes
    amount: int
    done: trio.Event = field(default_factory=trio.Event)
    preimage: bytes | None = None
    error: str | None = None
    failed_cid: bytes | None = None


class ChannelService:
    def __init__(self, node):
        self.node = node
        self.chain = node.chain
        cfg = node.config
        self.params = cfg.channels
        self.net = cfg.cluster.name
        self.confirmations = cfg.chain.confirmations
        base, ppm, delta = DEFAULT_POLICY
        self.policy = Policy(base, ppm, delta or self.params.htlc_delta)
        self.store = ChannelStore(node.data_dir / "channels.sqlite" if node.data_dir else None)
        self.graph = ChannelGraph()
        self.channels: dict[bytes, Chan] = {}
        self.payments: dict[bytes, Payment] = {}  # by payment hash, our own
        self.outgoing: dict[tuple[bytes, int], tuple[bytes, int] | bytes] = {}
        self._tower_dirty: set[bytes] = set()
        self._load()
        self.outgoing.update(self.store.forwards())  # a restarted hop still passes preimages up
        self._reattach_payments()
        self._policy_seen: dict[tuple[bytes, bytes], float] = {}
        self._early_anns: dict = {}
        self._update_logged: dict[bytes, float] = {}  # announcements of channels our chain does not show yet
        self._load_graph()
        for kind in ("ch_update", "ch_ack", "ch_nack", "ch_sync"):
            node.handlers[kind] = self._on_machine_msg(kind)
        for kind in ("ch_open", "ch_accept", "ch_funded", "ch_refuse", "ch_close", "ch_close_sig"):
            node.handlers[kind] = getattr(self, "_on_" + kind)
        node.gossip.add_validator(TOPIC_CHAN, self._on_announcement)
        node.gossip.add_validator(TOPIC_UPDATE, self._on_policy_update)
        node.on_connect.append(self._peer_up)
        node.on_disconnect.append(self._peer_down)
        self.chain.on_tip.append(self._on_tip)
        node.status_hooks.append(self._status)
        node.services.append(self.run)
        node.workloads.register("payments", self._workload_payment)
        node.behaviours.update({"close-stale": self._close_stale, "withhold-preimage": None,
                                "unresponsive": None})
        for method, fn in {"channel.open": self.open, "channel.list": self.list,
                           "channel.close": self.close, "invoice.create": self.invoice,
                           "pay": self.pay, "keysend": self.keysend,
                           "graph": self.graph_info, "channel.policy": self.set_policy}.items():
            node.control.register(method, fn)

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> None:
        states = self.store.states()
        for cid, info in self.store.channels().items():
            ch = Chan(cid, info["peer"], info["party"], info["fund_a"], info["fund_b"],
                      info["status"], closing=info.get("closing", {}))
            if cid in states:
                ch.signed = SignedState.from_wire(states[cid])
            self.channels[cid] = ch
            if ch.status in ("opening", "open") and ch.signed is not None:
                self._make_machine(ch)

    def _reattach_payments(self) -> None:
        """Our payments that were pending when we stopped: an HTLC still in a channel is
        followed to its end; without one the outcome is whether we learned the preimage."""
        for h, info in self.store.payments().items():
            if info["status"] != "pending":
                continue
            offered = [(ch.cid, x.id) for ch in self.channels.values() if ch.signed
                       for x in ch.signed.state.htlcs
                       if x.offerer == ch.party and x.payment_hash == h]
            for key in offered:
                self.outgoing[key] = h
            if not offered:
                self._conclude(h, info, self.store.preimage(h), "interrupted")

    def _load_graph(self) -> None:
        anns, policies = self.store.graph()
        for ann in anns:
            self._add_to_graph(ann)  # _on_tip drops those closed meanwhile
        for cid, node, pol, ts in policies:
            if cid in self.graph and self.graph.update_policy(cid, node, tuple(pol)):
                self._policy_seen[(cid, node)] = ts

    def _save(self, ch: Chan) -> None:
        self.store.put_channel(ch.cid, ch.info())

    def _pks(self, ch: Chan) -> tuple[bytes, bytes]:
        me, peer = self.node.identity.pubkey, self.node.pubkeys[ch.peer]
        return (me, peer) if ch.party == A else (peer, me)

    # -- background ----------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self._on_tip()
        ticks = 0
        while True:
            await trio.sleep(0.25)
            ticks += 1
            self.store.flush()  # payment results not yet carried by a state write
            self._push_to_tower()
            if ticks % 4:
                continue
            self._settle_known_preimages()
            now = trio.current_time()
            for ch in list(self.channels.values()):
                if ch.status != "open" or ch.machine is None:
                    continue
                seq = ch.signed.state.seq
                mach = ch.machine  # waiting on the peer: for an ack, its sync, or to propose
                waiting = mach.in_flight is not None or mach.queued or (
                    mach.state == m.SYNCING and ch.peer in self.node.links)
                verdict = ch.liveness.check(seq, bool(waiting), now)
                if verdict == FORCE_CLOSE:
                    self.node.log.warning(ev.CHANNEL_CLOSING, channel_id=_hex(ch.cid),
                                          kind="unresponsive_peer", peer=ch.peer)
                    self._force_close(ch)
                elif verdict == RESYNC:  # an update or its ack was lost on a lossy link
                    self._resync(ch, "no_ack")
                if ticks % 120 == 0 and ch.party == A:
                    self._announce(ch, force=True)

    def _peer_up(self, peer: str) -> None:
        for ch in self.channels.values():
            if ch.peer == peer and ch.machine is not None:
                self._run_actions(ch, ch.machine.on_reconnect())

    def _peer_down(self, peer: str) -> None:
        for ch in self.channels.values():
            if ch.peer == peer and ch.machine is not None:
                ch.machine.on_disconnect()

    # -- opening -------------------------------------------------------------------------
    def open(self, peer: str, funding, push: int = 0) -> dict:
        if peer not in self.node.pubkeys or peer == self.node.name:
            raise ControlError("bad_params", f"{peer!r} is not another node of the cluster")
        if "channels" not in self.node.config.node(peer).roles:
            raise ControlError("bad_params", f"{peer} does not have the channels role")
        fa, fb = (funding, 0) if type(funding) is int else tuple(funding) if isinstance(
            funding, list) and len(funding) == 2 else (None, None)
        if (not all(type(x) is int and x >= 0 for x in (fa, fb, push)) or not 0 < fa + fb < 2**62
                or push > fa):
            raise ControlError("bad_params", "funding: an amount or [ours, theirs] (>= 0, sum > 0); "
                               "0 <= push <= ours")
        if self.chain.balance()["balance"] < fa + 1:
            raise ControlError("insufficient_funds", f"need {fa} + fee on layer 1")
        if peer not in self.node.links:
            raise ControlError("unavailable", f"not connected to {peer}")
        cid = blake2b(self.node.identity.pubkey + self.node.pubkeys[peer] + secrets.token_bytes(16),
                      digest_size=32).digest()
        ch = Chan(cid, peer, A, fa, fb, "opening")
        ch.closing = {"push": push}
        self.channels[cid] = ch
        self._save(ch)
        self.node.send(peer, "ch_open", {"cid": cid, "fa": fa, "fb": fb, "push": push,
                                         "dispute": self.params.dispute_blocks})
        return {"channel_id": _hex(cid)}

    def _state0(self, cid: bytes, fa: int, fb: int, push: int) -> ChannelState:
        return ChannelState(cid, 0, fa - push, fb + push, ())

    def _on_ch_open(self, peer: str, p: dict) -> None:
        cid, fa, fb, push = p["cid"], p["fa"], p["fb"], p["push"]
        reason = None
        if "channels" not in self.node.spec.roles:
            reason = "no channels role"
        elif cid in self.channels:
            reason = "channel id in use"
        elif (min(fa, fb, push) < 0 or fa + fb <= 0 or fa + fb >= 2**62 or push > fa
              or p["dispute"] != self.params.dispute_blocks):
            reason = "bad terms"
        elif self.chain.balance()["balance"] < fb:
            reason = "insufficient_funds"
        if reason:
            self.node.send(peer, "ch_refuse", {"cid": cid, "reason": reason})
            return
        me, them = self.node.identity, self.node.pubkeys[peer]
        state = self._state0(cid, fa, fb, push)
        ch = Chan(cid, peer, B, fa, fb, "opening")
        ch.closing = {"sig_b": sign_state(me, state, self.net), "push": push}
        self.channels[cid] = ch
        self._save(ch)
        sig_open = me.sign(open_digest(self.net, cid, them, me.pubkey, fa, fb, p["dispute"]))
        self.node.send(peer, "ch_accept", {"cid": cid, "sig_open": sig_open,
                                           "sig_state": ch.closing["sig_b"]})

    def _on_ch_accept(self, peer: str, p: dict) -> None:
        ch = self._mine(peer, p["cid"], "opening", A)
        state = self._state0(ch.cid, ch.fund_a, ch.fund_b, ch.closing.get("push", 0))
        pk_a, pk_b = self._pks(ch)
        if not verify(pk_b, state.digest(self.net), p["sig_state"]):
            raise RemoteProtocolError("bad_signature", "first state")
        terms = open_digest(self.net, ch.cid, pk_a, pk_b, ch.fund_a, ch.fund_b,
                            self.params.dispute_blocks)
        if not verify(pk_b, terms, p["sig_open"]):  # a bad one would only fail on chain
            raise RemoteProtocolError("bad_signature", "open terms")
        if ch.signed is not None:
            raise RemoteProtocolError("unexpected_message", "channel already accepted")
        me = self.node.identity
        ch.signed = SignedState(state, sign_state(me, state, self.net), p["sig_state"])
        self.store.put_state(ch.cid, 0, ch.signed.to_wire())  # before the funds are locked
        self.store.put_first_state(ch.cid, ch.signed.to_wire())
        ch.closing = {}
        self._save(ch)
        try:
            txid = self.chain.submit_own(lambda n: contract.open_tx(
                me, self.net, ch.cid, pk_b, ch.fund_a, ch.fund_b, self.params.dispute_blocks,
                p["sig_open"], n))
        except ControlError as exc:
            ch.status = "closed"
            self._save(ch)
            self.node.log.warning(ev.CHANNEL_CLOSING, channel_id=_hex(ch.cid), kind="open_failed",
                                  reason=exc.code)
            return
        self.node.send(peer, "ch_funded", {"cid": ch.cid, "sig_state": ch.signed.sig_a})
        self._start_machine(ch)
        self.node.log.info(ev.CHANNEL_OPENING, channel_id=_hex(ch.cid), peer=peer, txid=txid,
                           capacity=ch.fund_a + ch.fund_b)

    def _on_ch_funded(self, peer: str, p: dict) -> None:
        ch = self._mine(peer, p["cid"], "opening", B)
        if ch.signed is not None or "sig_b" not in ch.closing:
            raise RemoteProtocolError("unexpected_message", "channel already funded")
        state = self._state0(ch.cid, ch.fund_a, ch.fund_b, ch.closing.get("push", 0))
        pk_a, pk_b = self._pks(ch)
        if not verify(pk_a, state.digest(self.net), p["sig_state"]):
            raise RemoteProtocolError("bad_signature", "first state")
        ch.signed = SignedState(state, p["sig_state"], ch.closing["sig_b"])
        self.store.put_state(ch.cid, 0, ch.signed.to_wire())
        self.store.put_first_state(ch.cid, ch.signed.to_wire())
        ch.closing = {}
        self._save(ch)
        self._start_machine(ch)

    def _on_ch_refuse(self, peer: str, p: dict) -> None:
        ch = self.channels.get(p["cid"])
        if ch is not None and ch.peer == peer and ch.status == "opening":
            ch.status = "closed"
            self._save(ch)
            self.node.log.warning(ev.CHANNEL_CLOSING, channel_id=_hex(ch.cid), kind="refused",
                                  reason=p["reason"][:200])

    def _mine(self, peer: str, cid: bytes, status: str, party: int | None = None) -> Chan:
        ch = self.channels.get(cid)
        if ch is None or ch.peer != peer or ch.status != status or (
                party is not None and ch.party != party):
            raise RemoteProtocolError("unknown_channel", f"{cid.hex()[:16]} ({status})")
        return ch

    # -- layer 1 watching -----------------------------------------------------------------
    def _on_tip(self) -> None:
        """After each change of the best chain: confirm opens, follow closes, settle,
        challenge stale closes, and feed the height to the machines."""
        tree = self.chain.tree
        height = tree.height
        for cid in [c for c in list(self.graph._channels) if c not in self.channels]:
            rec = contract.channel_record(tree.state, cid)
            if rec is None or rec["status"] != "open":  # closed (or reorged away): unroutable
                self.graph.remove_channel(cid)
                self.store.drop_announcement(cid)
        for cid, (ann, data) in list(self._early_anns.items()):
            rec = contract.channel_record(tree.state, cid)
            if rec is not None:
                del self._early_anns[cid]
                if (rec["status"] == "open" and (rec["a"], rec["b"], rec["total"]) ==
                        (ann["a"], ann["b"], ann["cap"])) and cid not in self.graph:
                    try:
                        self._add_to_graph(ann)
                    except LocalProtocolError:
                        continue
                    self.store.put_announcement(cid, ann)
                    self.node.publish(TOPIC_CHAN, data, force=True)  # relay it now
        for ch in list(self.channels.values()):
            try:
                self._watch(ch, height, tree.state)
            except P2PL2Error as exc:  # one channel's trouble must not stop the others
                self.node.log.warning(ev.NODE_ERROR, channel_id=_hex(ch.cid), error=str(exc))

    def _watch(self, ch: Chan, height: int, state) -> None:
        if ch.machine is not None:
            ch.machine.set_height(height)
        rec = contract.channel_record(state, ch.cid)
        if rec is None:
            return
        if ch.status == "opening" and ch.signed is not None:
            if rec["status"] == "open" and height - rec["opened_at"] + 1 >= self.confirmations:
                ch.status = "open"
                self._save(ch)
                self.node.log.info(ev.CHANNEL_OPENED, channel_id=_hex(ch.cid), peer=ch.peer,
                                   capacity=ch.fund_a + ch.fund_b, party="ab"[ch.party])
                if ch.party == A:
                    self._announce(ch)
            return
        if rec["status"] in ("closing", "settled", "closed") and ch.status in ("open", "closing"):
            if ch.status == "open":
                self._closed_by_chain(ch, rec)
            self._follow_close(ch, rec, height)
        elif ch.status == "open" and ch.signed is not None:
            ours = [h for h in ch.signed.state.htlcs
                    if h.offerer == ch.party and h.expiry - height <= EXPIRY_MARGIN]
            # an HTLC we can claim (we know its preimage) that the peer does not let us settle
            theirs = [] if self.node.misbehaving("withhold-preimage") else [
                h for h in ch.signed.state.htlcs
                if h.offerer != ch.party and h.expiry - height <= EXPIRY_MARGIN + 2
                and self.store.preimage(h.payment_hash) is not None]
            if ours or theirs:  # resolve it on chain before it expires
                self.node.log.warning(ev.CHANNEL_CLOSING, channel_id=_hex(ch.cid),
                                      kind="htlc_expiring", htlcs=len(ours) + len(theirs))
                self._force_close(ch)

    def _closed_by_chain(self, ch: Chan, rec: dict) -> None:
        ch.status = "closing"
        ch.closing.setdefault("kind", "coop" if rec["status"] == "closed" else "force")
        self._save(ch)
        self.graph.remove_channel(ch.cid)
        self.node.log.info(ev.CHANNEL_CLOSING, channel_id=_hex(ch.cid), kind=ch.closing["kind"],
                           by="chain", seq=rec.get("seq"))

    def _follow_close(self, ch: Chan, rec: dict, height: int) -> None:
        mine = ch.signed.state.seq if ch.signed else 0
        if rec["status"] == "closing":
            stale = rec.get("closer") != ch.party and rec.get("seq", 0) < mine
            last = ch.closing.get("challenged")  # [txid, height] of our last challenge
            if stale and height < rec["dispute_until"] and (
                    last is None or height >= last[1] + TowerService.RETRY_BLOCKS):
                txid = self.chain.submit_own(lambda n: contract.challenge_tx(
                    self.node.identity, self.net, ch.cid, ch.signed, n))
                ch.closing["challenged"] = [txid, height]
                self._save(ch)
                self.node.log.warning(ev.CHANNEL_CLOSING, channel_id=_hex(ch.cid), kind="challenge",
                                      posted_seq=rec.get("seq"), our_seq=mine,
                                      attempt=last is not None)
            elif (height >= rec["dispute_until"] + (0 if rec.get("closer") == ch.party else 3)
                  and not ch.closing.get("settle")):  # one settle tx, not two racing
                ch.closing["settle"] = self.chain.submit_own(lambda n: contract.settle_tx(
                    self.node.identity, self.net, ch.cid, n))
                self._save(ch)
        self._resolve_htlcs_on_chain(ch, rec, height)
        if rec["status"] in ("settled", "closed"):
            self._fail_lost_htlcs(ch, rec)
        if rec["status"] in ("settled", "closed") and not ch.closing.get("settled"):
            ch.closing["settled"] = True
            self._save(ch)
            if rec.get("penalized"):
                self.node.log.warning(ev.CHANNEL_PENALIZED, channel_id=_hex(ch.cid),
                                      victim="ab"[1 - rec["closer"]], total=rec["total"])
            self.node.log.info(ev.CHANNEL_SETTLED, channel_id=_hex(ch.cid),
                               penalized=rec.get("penalized"), bal_a=rec.get("bal_a"),
                               bal_b=rec.get("bal_b"))
        if rec["status"] == "closed":
            ch.status = "closed"
            self._save(ch)

    def _fail_lost_htlcs(self, ch: Chan, rec: dict) -> None:
        """Our HTLCs that the close refunded, that it did not carry, or that a penalty
        swept: they failed (our payment ends, a forwarded one fails upstream)."""
        ours = {h["id"]: h["status"] for h in rec.get("htlcs", []) if h["offerer"] == ch.party}
        for cid, hid in [k for k in self.outgoing if k[0] == ch.cid]:
            status = ours.get(hid)
            if rec.get("penalized") or status in (None, "refunded"):
                self._on_htlc_settled(ch, hid, reason="channel_closed_on_chain")

    def _resolve_htlcs_on_chain(self, ch: Chan, rec: dict, height: int) -> None:
        """After a forced close: claim what we can prove (preimage) before expiry, refund
        ours after it, and learn preimages the peer revealed to claim ours (so a forwarding
        hop can always claim upstream)."""
        if rec.get("penalized") or rec["status"] not in ("closing", "settled"):
            return
        done = ch.closing.setdefault("htlc_txs", {})
        for h in rec.get("htlcs", []):
            key = str(h["id"])
            if h["status"] == "claimed" and h["offerer"] == ch.party and key not in done:
                done[key] = "learned"
                self._on_htlc_settled(ch, h["id"], preimage=h["preimage"])
            if h["status"] != "pending" or key in done:
                continue
            if h["offerer"] == ch.party and rec["status"] == "settled" and height >= h["expiry"]:
                done[key] = self.chain.submit_own(lambda n, i=h["id"]: contract.refund_htlc_tx(
                    self.node.identity, self.net, ch.cid, i, n))
            elif h["offerer"] != ch.party and height < h["expiry"]:
                preimage = self.store.preimage(h["payment_hash"])
                if preimage is not None:
                    done[key] = self.chain.submit_own(lambda n, i=h["id"], p=preimage:
                                                      contract.claim_htlc_tx(
                                                          self.node.identity, self.net, ch.cid, i,
                                                          p, n))
            self._save(ch)

    # -- the graph -----------------------------------------------------------------------
    def _announce(self, ch: Chan, force: bool = False) -> None:
        a, b = self._pks(ch)
        ann = {"cid": ch.cid, "a": a, "b": b, "cap": ch.fund_a + ch.fund_b,
               "pol": list(self.policy)}
        self.node.publish(TOPIC_CHAN, msgpack.packb(ann, use_bin_type=True), force=force)
        self._add_to_graph(ann)
        self.store.put_announcement(ch.cid, ann)

    def _add_to_graph(self, ann: dict) -> None:
        pol = tuple(ann["pol"])
        self.graph.add_channel(ann["cid"], ann["a"], ann["b"], ann["cap"], pol, pol)

    def _on_announcement(self, data: bytes, peer) -> None:
        if peer is None:
            return
        try:
            ann = msgpack.unpackb(data, raw=False)
            cid, a, b, cap, pol = ann["cid"], ann["a"], ann["b"], ann["cap"], ann["pol"]
        except Exception:
            raise RemoteProtocolError("bad_announcement", "malformed") from None
        rec = contract.channel_record(self.chain.tree.state, cid) if type(cid) is bytes else None
        if rec is None:  # not on our chain yet (or never): no judgement, no relay; but our
            if (len(self._early_anns) < 1000 and type(cid) is bytes and type(pol) is list
                    and len(pol) == 3):  # chain may lag a hop: look again at each tip
                self._early_anns[cid] = (ann, data)
            raise Ignore
        if (rec["status"] != "open" or rec["a"] != a or rec["b"] != b or rec["total"] != cap
                or type(pol) is not list or len(pol) != 3):
            raise RemoteProtocolError("bad_announcement", "does not match the L1 record")
        try:
            self._add_to_graph(ann)
        except LocalProtocolError as exc:
            raise RemoteProtocolError("bad_announcement", str(exc)) from None
        self.store.put_announcement(cid, ann)

    def set_policy(self, base_fee: int | None = None, fee_ppm: int | None = None,
                   expiry_delta: int | None = None) -> dict:
        """Change our forwarding fees / expiry delta and gossip them for every open channel."""
        new = self.policy._replace(**{k: v for k, v in (("base_fee", base_fee), ("fee_ppm", fee_ppm),
                                                        ("expiry_delta", expiry_delta)) if v is not None})
        if not (all(type(v) is int for v in new) and new.base_fee >= 0 and 0 <= new.fee_ppm <= 10**6
                and 1 <= new.expiry_delta < 1000):
            raise ControlError("bad_params", "base_fee >= 0, 0 <= fee_ppm <= 1e6, 1 <= expiry_delta")
        self.policy = new
        me = self.node.identity
        for ch in self.channels.values():
            if ch.status != "open":
                continue
            body = [ch.cid, me.pubkey, list(new), self.node.wall()]
            upd = {"b": body, "s": me.sign(msgpack.packb(body, use_bin_type=True))}
            self.graph.update_policy(ch.cid, me.pubkey, tuple(new))
            self.node.publish(TOPIC_UPDATE, msgpack.packb(upd, use_bin_type=True))
        return new.to_dict()

    def _on_policy_update(self, data: bytes, peer) -> None:
        if peer is None:
            return
        try:
            upd = msgpack.unpackb(data, raw=False)
            cid, node, pol, ts = upd["b"]
            if not (type(cid) is bytes and type(node) is bytes and type(pol) is list
                    and len(pol) == 3 and type(ts) in (int, float) and type(upd["s"]) is bytes):
                raise TypeError
            ok = verify(node, msgpack.packb(upd["b"], use_bin_type=True), upd["s"])
        except Exception:
            raise RemoteProtocolError("bad_announcement", "malformed policy update") from None
        if not ok:
            raise RemoteProtocolError("bad_signature", "policy update")
        if cid not in self.graph or ts <= self._policy_seen.get((cid, node), -math.inf):
            raise Ignore  # unknown channel yet, or an older update
        try:
            if not self.graph.update_policy(cid, node, tuple(pol)):
                raise Ignore
        except LocalProtocolError as exc:
            raise RemoteProtocolError("bad_announcement", str(exc)) from None
        self._policy_seen[(cid, node)] = ts
        self.store.put_policy(cid, node, pol, ts)

    def graph_info(self) -> dict:
        g = self.graph.to_dict()
        names = self.node.names
        for c in g["channels"]:
            for k in ("a", "b"):
                c[k] = names.get(bytes.fromhex(c[k]), c[k])
        g["nodes"] = [names.get(bytes.fromhex(n), n) for n in g["nodes"]]
        return g

    # -- the machines ----------------------------------------------------------------------
    def _start_machine(self, ch: Chan) -> None:
        """Both sides build the machine once the first state is signed, and sync at once
        (ch_sync crosses ch_funded in order on the link), so updates can flow as soon as
        either side sees the open confirmed."""
        self._make_machine(ch)
        if ch.peer in self.node.links:
            self._run_actions(ch, ch.machine.on_reconnect())

    def _make_machine(self, ch: Chan) -> None:
        ch.slots = trio.Semaphore(self.params.max_htlcs)
        ch.machine = m.Channel(self.net, ch.cid, self.node.identity, ch.party,
                               self.node.pubkeys[ch.peer], ch.signed,
                               max_htlcs=self.params.max_htlcs, min_expiry_delta=MIN_DELTA,
                               height=self.chain.tree.height)
        if ch.status == "open" and ch.party == A and ch.cid not in self.graph:
            self._add_to_graph({"cid": ch.cid, "a": self._pks(ch)[0], "b": self._pks(ch)[1],
                                "cap": ch.fund_a + ch.fund_b, "pol": list(self.policy)})

    def _on_machine_msg(self, kind: str):
        def handle(peer: str, payload: dict) -> None:
            if self.node.misbehaving("unresponsive"):
                return  # byzantine: ignore the peer, never ack
            ch = self.channels.get(payload.get("cid"))
            if ch is None or ch.peer != peer or ch.machine is None:
                raise RemoteProtocolError("unknown_channel", kind)
            if ch.status not in ("opening", "open"):
                return  # a close is under way: no new state may be signed beside the final one
            self._run_actions(ch, ch.machine.receive(kind, payload))
        return handle

    def _run_actions(self, ch: Chan, actions: list) -> None:
        """Carry out a machine's actions in order: a Persist is on disk before what follows."""
        for act in actions:
            t = type(act)
            if t is m.Send:
                if act.kind == "ch_update":
                    self.store.flush()  # our payments' records before their HTLCs leave
                self.node.send(ch.peer, act.kind, act.payload)
            elif t is m.Persist:
                ch.signed = act.signed
                self.store.put_state(ch.cid, act.signed.state.seq, act.signed.to_wire())
                self._tower_dirty.add(ch.cid)
                now = trio.current_time()  # logged at most every UPDATE_LOG_EVERY a channel
                if now - self._update_logged.get(ch.cid, -math.inf) >= UPDATE_LOG_EVERY:
                    self._update_logged[ch.cid] = now
                    st = act.signed.state
                    self.node.log.info(ev.CHANNEL_UPDATED, channel_id=_hex(ch.cid), seq=st.seq,
                                       bal_a=st.bal_a, bal_b=st.bal_b, htlcs=len(st.htlcs))
            elif t is m.Committed:
                pass
            elif t is m.HtlcAdded:
                self._on_htlc_added(ch, act.htlc, act.onion)
            elif t is m.HtlcFulfilled:
                self._on_htlc_settled(ch, act.id, preimage=act.preimage)
            elif t in (m.HtlcFailed, m.OpRejected):
                hid = act.id if t is m.HtlcFailed else getattr(act.op, "id", None)
                if t is m.OpRejected and not isinstance(act.op, m.AddHtlc):
                    continue
                self._on_htlc_settled(ch, hid, reason=act.reason)
            elif t is m.Rejected:
                self.node.log.warning(ev.MSG_REJECTED, peer=ch.peer, reason=act.error.reason,
                                      detail=act.error.detail, kind=act.kind,
                                      channel_id=_hex(ch.cid))
            elif t is m.Resync:
                self._resync(ch, act.reason)
        more = ch.machine.flush()
        if more:
            self._run_actions(ch, more)

    def _resync(self, ch: Chan, reason: str) -> None:
        """Out of step with the peer (a message was lost): drop the link; both sides
        re-synchronise when it comes back (as Lightning does with channel_reestablish)."""
        link = self.node.links.get(ch.peer)
        if link is not None:
            link.close(f"channel_resync:{reason}")

    def _settle_known_preimages(self) -> None:
        """Fulfil HTLCs offered to us whose preimage we already know, e.g. after a restart
        between learning it downstream and passing it upstream (duplicates are refused by
        the machine, so this is idempotent)."""
        if self.node.misbehaving("withhold-preimage"):
            return
        for ch in self.channels.values():
            if ch.status != "open" or ch.machine is None or ch.machine.state not in (m.IDLE, m.PROPOSED):
                continue
            queued = False
            for h in ch.signed.state.htlcs:
                if h.offerer == ch.party:
                    continue
                preimage = self.store.preimage(h.payment_hash)
                if preimage is not None:
                    try:
                        ch.machine.fulfill_htlc(h.id, preimage)
                        queued = True
                    except (m.InvalidOp, LocalProtocolError):
                        pass  # already being settled
            if queued:
                self._run_actions(ch, [])

    def _push_to_tower(self) -> None:
        """Hand our watchtower the latest state of each channel that changed (coalesced)."""
        tower = self.node.spec.watchtower
        if not tower or not self._tower_dirty or tower not in self.node.links:
            return
        for cid in list(self._tower_dirty):
            ch = self.channels.get(cid)
            if ch is None or ch.signed is None:
                self._tower_dirty.discard(cid)
                continue
            a, b = self._pks(ch)
            if self.node.send(tower, "tw_state", {"cid": cid, "a": a, "b": b,
                                                  "signed": ch.signed.to_wire()}):
                self._tower_dirty.discard(cid)

    # -- payments ------------------------------------------------------------------------
    def invoice(self, amount: int, memo: str = "") -> dict:
        if type(amount) is not int or amount <= 0:
            raise ControlError("bad_params", "amount must be a positive integer")
        inv, preimage = new_invoice(self.node.identity, amount, secrets.token_bytes(32),
                                    created=self.node.wall(), expiry_delta=FINAL_DELTA,
                                    memo=str(memo)[:100])
        self.store.put_preimage(inv.payment_hash, preimage)
        self.store.put_invoice(inv.payment_hash, {"amount": amount, "paid": False})
        return {"invoice": inv.encode(self.node.identity), "payment_hash": _hex(inv.payment_hash)}

    async def pay(self, invoice: str, timeout: float = 30.0) -> dict:
        try:
            inv = Invoice.decode(invoice)
        except RemoteProtocolError as exc:
            raise ControlError("bad_invoice", exc.detail) from None
        return await self.send_payment(inv.payee, inv.amount, inv.payment_hash, inv.expiry_delta,
                                       timeout=timeout)

    async def keysend(self, to: str, amount: int, timeout: float = 30.0) -> dict:
        """Pay `to` without an invoice: the preimage rides to the payee in the onion."""
        if to not in self.node.pubkeys:
            raise ControlError("bad_params", f"unknown node {to!r}")
        preimage = secrets.token_bytes(32)
        return await self.send_payment(self.node.pubkeys[to], amount, payment_hash(preimage),
                                       FINAL_DELTA, secret=preimage, timeout=timeout)

    async def send_payment(self, payee: bytes, amount: int, h: bytes, final_delta: int,
                           secret: bytes | None = None, timeout: float = 30.0) -> dict:
        me = self.node.identity.pubkey
        if payee == me:
            raise ControlError("bad_params", "that payment is to ourselves")
        prior = self.store.payment(h) if secret is None else None  # a keysend hash is new
        if prior is not None and prior["status"] == "succeeded":
            return prior["result"]  # paying twice is asking again, not paying again
        if h in self.payments or (prior is not None and prior["status"] == "pending"):
            raise ControlError("duplicate_payment", "this payment is in progress")
        t0 = trio.current_time()
        self.store.queue_payment(h, {"status": "pending", "amount": amount})
        info = {"amount": amount, "t0": t0}  # and the route, once there is one
        self.node.log.info(ev.PAYMENT_SENT, payment_hash=_hex(h), amount=amount,
                           payee=self.node.names.get(payee, _hex(payee)))
        exclude: set = set()
        error, route = "no_route", None
        with trio.move_on_after(timeout) as scope:
            for _ in range(PAY_ATTEMPTS):
                try:
                    route = self.graph.find_route(me, payee, amount, final_delta,
                                                  self.chain.tree.height, exclude=exclude)
                except NoRoute as exc:
                    error = f"no_route: {exc.reason}" if route is None else f"{error} (no other route)"
                    break
                info["route"] = route
                info["attempts"] = info.get("attempts", 0) + 1
                pay = await self._attempt(h, amount, route, secret)
                if pay.preimage is not None:
                    return self._conclude(h, info, pay.preimage)
                error = pay.error or "failed"
                if pay.failed_cid is None or pay.failed_cid in exclude:
                    break
                exclude.add(pay.failed_cid)
        pay = self.payments.get(h)
        if scope.cancelled_caught and pay is not None and not pay.done.is_set():
            # our HTLC is out there and may still settle: say so, and log the end when it comes
            self.node.spawn(self._conclude_later, h, info, pay)
            return {"status": "pending", "payment_hash": _hex(h), "route": self._names(route),
                    "fee": route.fee if route else 0, "error": "timeout: the HTLC is pending"}
        return self._conclude(h, info, None, "timeout" if scope.cancelled_caught else error)

    async def _conclude_later(self, h: bytes, info: dict, pay: Payment) -> None:
        await pay.done.wait()
        self._conclude(h, info, pay.preimage, pay.error or "failed")

    def _names(self, route) -> list[str]:
        if route is None:
            return []
        return [self.node.names.get(n, _hex(n)) for n in route.nodes]

    def _conclude(self, h: bytes, info: dict, preimage: bytes | None, error: str = "") -> dict:
        """The end of one of our payments: logged, persisted, and the `pay` result."""
        self.payments.pop(h, None)
        route = info.get("route")
        t0 = info.get("t0")  # None for a payment begun before a restart
        latency = trio.current_time() - t0 if t0 is not None else None
        res = {"payment_hash": _hex(h), "route": self._names(route),
               "fee": route.fee if route else 0, "attempts": info.get("attempts", 0)}
        if preimage is not None:
            res["status"] = "succeeded"
            self.node.log.info(ev.PAYMENT_SUCCEEDED, payment_hash=_hex(h), latency=latency,
                               fee=res["fee"], hops=len(route.hops) if route else None,
                               amount=info["amount"])
        else:
            res.update(status="failed", error=error)
            self.node.log.warning(ev.PAYMENT_FAILED, payment_hash=_hex(h), reason=error,
                                  latency=latency)
        self.store.queue_payment(h, {"status": res["status"], "amount": info["amount"],
                                     "result": res, "preimage": preimage})
        return res

    async def _attempt(self, h: bytes, amount: int, route, secret: bytes | None) -> Payment:
        first = route.hops[0]
        ch = self.channels.get(first.cid)
        pay = Payment(h, amount)
        if ch is None or ch.machine is None or ch.status != "open":
            pay.error, pay.failed_cid = "channel_unavailable", first.cid
            return pay
        if len(route.hops) == 1:  # a direct peer: nothing to hide, no onion to build or peel
            onion = DIRECT + msgpack.packb({"secret": secret} if secret else {}, use_bin_type=True)
        else:
            onion = build_onion(route_hops_for_onion(route, payment_hash=h, secret=secret), assoc=h)
        await ch.slots.acquire()  # a full channel (max_htlcs pending): wait in line for a slot
        try:
            hid = ch.machine.add_htlc(first.amount, h, first.expiry, onion)
        except (m.InvalidOp, LocalProtocolError) as exc:
            ch.slots.release()
            pay.error, pay.failed_cid = f"local: {getattr(exc, 'reason', exc)}", first.cid
            return pay
        self.payments[h] = pay
        self.outgoing[(ch.cid, hid)] = h
        self._run_actions(ch, [])
        await pay.done.wait()
        return pay

    def _on_htlc_added(self, ch: Chan, htlc, onion: bytes) -> None:
        """The peer offered us an HTLC: we are the payee, or we forward it."""
        try:
            if onion[:1] == DIRECT:  # from the payer itself: we are the payee
                extra = msgpack.unpackb(onion[1:], raw=False)
                payload = {"final": True, "amt": htlc.amount, "exp": htlc.expiry}
                if isinstance(extra, dict) and type(extra.get("secret")) is bytes:
                    payload["secret"] = extra["secret"]
            else:
                payload, next_onion = peel(self.node.identity, onion, assoc=htlc.payment_hash)
        except (RemoteProtocolError, ValueError, msgpack.UnpackException):
            ch.machine.fail_htlc(htlc.id, "bad_onion")
            return
        if payload.get("final"):
            self._settle_final(ch, htlc, payload)
            return
        out = self._channel_to(payload["next"], payload.get("cid"))
        fee = htlc.amount - payload["amt"]
        # a failure names the channel the payer should route around (see _blamed)
        if out is None:
            ch.machine.fail_htlc(htlc.id, _blame("unknown_next_peer", payload.get("cid")))
        elif fee < self.policy.fee(payload["amt"]):
            ch.machine.fail_htlc(htlc.id, _blame("fee_insufficient", out.cid))
        elif htlc.expiry - payload["exp"] < self.policy.expiry_delta:
            ch.machine.fail_htlc(htlc.id, _blame("expiry_too_soon", out.cid))
        else:
            try:
                out_id = out.machine.add_htlc(payload["amt"], htlc.payment_hash, payload["exp"],
                                              next_onion or b"")
            except (m.InvalidOp, LocalProtocolError) as exc:
                reason = f"temporary_channel_failure:{getattr(exc, 'reason', '')}"
                ch.machine.fail_htlc(htlc.id, _blame(reason, out.cid))
                return
            self.outgoing[(out.cid, out_id)] = (ch.cid, htlc.id)
            self.store.put_forward(out.cid, out_id, ch.cid, htlc.id)  # before it is proposed
            self._run_actions(out, [])

    def _settle_final(self, ch: Chan, htlc, payload: dict) -> None:
        """We are the payee: fulfil with the invoice's preimage, or a keysend's secret."""
        if payload["amt"] > htlc.amount:
            ch.machine.fail_htlc(htlc.id, "amount_too_low")
            return
        secret = payload.get("secret")
        if secret is not None:  # keysend: the payer chose the preimage
            if payment_hash(secret) != htlc.payment_hash:
                ch.machine.fail_htlc(htlc.id, "bad_preimage")
                return
            preimage = secret
            self.store.put_preimage(htlc.payment_hash, preimage)  # to claim on chain if need be
        else:
            inv = self.store.invoice(htlc.payment_hash)
            preimage = self.store.preimage(htlc.payment_hash)
            if inv is None or preimage is None:
                ch.machine.fail_htlc(htlc.id, "unknown_payment_hash")
                return
            if htlc.amount < inv["amount"]:
                ch.machine.fail_htlc(htlc.id, "amount_too_low")
                return
            if inv.get("paid"):
                ch.machine.fail_htlc(htlc.id, "invoice_already_paid")
                return
            self.store.put_invoice(htlc.payment_hash, dict(inv, paid=True))
        if self.node.misbehaving("withhold-preimage"):
            return  # hold it: the payer's HTLC hangs until it resolves it on chain
        ch.machine.fulfill_htlc(htlc.id, preimage)

    def _channel_to(self, pubkey: bytes, cid: bytes | None) -> Chan | None:
        peer = self.node.names.get(pubkey)
        if cid is not None and cid in self.channels:
            ch = self.channels[cid]
            return ch if ch.peer == peer and ch.status == "open" and ch.machine else None
        for ch in self.channels.values():
            if ch.peer == peer and ch.status == "open" and ch.machine is not None:
                return ch
        return None

    def _on_htlc_settled(self, ch: Chan, hid: int, preimage: bytes | None = None,
                         reason: str | None = None) -> None:
        """An HTLC we offered was fulfilled or failed: finish our payment or pass it upstream."""
        src = self.outgoing.pop((ch.cid, hid), None)
        if preimage is not None and not isinstance(src, bytes):
            # first of all: never forget a preimage we learned (a hop claims upstream with
            # it); our own payment's goes in its record (a proof of payment, not money)
            self.store.put_preimage(payment_hash(preimage), preimage)
        if src is None:
            return
        if isinstance(src, bytes):  # our own payment
            ch.slots.release()
            pay = self.payments.get(src)
            if pay is not None:
                pay.preimage = preimage
                if preimage is None:
                    pay.error, pay.failed_cid = reason, _blamed(reason) or pay.failed_cid
                pay.done.set()
            else:  # a payment begun before a restart
                info = self.store.payment(src)
                if info is not None and info["status"] == "pending":
                    self._conclude(src, info, preimage, reason or "failed")
            return
        in_cid, in_id = src
        self.store.drop_forward(ch.cid, hid)
        upstream = self.channels.get(in_cid)
        if upstream is None or upstream.machine is None:
            return
        if preimage is not None:
            upstream.machine.fulfill_htlc(in_id, preimage)
        else:
            upstream.machine.fail_htlc(in_id, reason or "failed")
        self._run_actions(upstream, [])

    # -- closing -------------------------------------------------------------------------
    def close(self, channel_id: str, force: bool = False) -> dict:
        ch = self._by_hex(channel_id)
        stuck = ch.status == "closing" and ch.closing.get("kind") == "coop" and "txid" not in ch.closing
        if force and stuck:
            return self._force_close(ch)  # the peer never countersigned our final state
        if ch.status != "open":
            raise ControlError("bad_state", f"channel is {ch.status}")
        if force or ch.peer not in self.node.links:
            return self._force_close(ch)
        if ch.signed.state.htlcs or (ch.machine and ch.machine.in_flight):
            raise ControlError("pending_htlcs", "settle or fail pending HTLCs first (or force)")
        final = ChannelState(ch.cid, ch.signed.state.seq + 1, ch.signed.state.bal_a,
                             ch.signed.state.bal_b, ())
        ch.closing = {"kind": "coop", "final": final.to_wire()}
        ch.status = "closing"
        self._save(ch)
        self.node.send(ch.peer, "ch_close", {"cid": ch.cid, "seq": final.seq,
                                             "sig": sign_state(self.node.identity, final, self.net)})
        return {"txid": None, "status": "closing"}

    def _force_close(self, ch: Chan, signed: SignedState | None = None) -> dict:
        signed = signed or ch.signed
        txid = self.chain.submit_own(lambda n: contract.force_close_tx(
            self.node.identity, self.net, ch.cid, signed, n))
        ch.status = "closing"
        ch.closing = {"kind": "force", "txid": txid, "seq": signed.state.seq}
        self._save(ch)
        self.graph.remove_channel(ch.cid)
        self.node.log.info(ev.CHANNEL_CLOSING, channel_id=_hex(ch.cid), kind="force", txid=txid,
                           seq=signed.state.seq)
        return {"txid": txid}

    def _final_state(self, ch: Chan, seq: int) -> ChannelState:
        s = ch.signed.state
        if s.htlcs or seq != s.seq + 1:
            raise RemoteProtocolError("bad_close", "pending HTLCs or a wrong seq")
        return ChannelState(ch.cid, seq, s.bal_a, s.bal_b, ())

    def _on_ch_close(self, peer: str, p: dict) -> None:
        ch = self.channels.get(p["cid"])
        if (ch is not None and ch.peer == peer and ch.status == "closing"
                and ch.closing.get("final") is not None and ch.closing["final"]["seq"] == p["seq"]):
            # both asked at once for the same final state: the crossing request is the
            # signature we were waiting for
            self._on_ch_close_sig(peer, p, crossing=True)
            return
        ch = self._mine(peer, p["cid"], "open")
        final = self._final_state(ch, p["seq"])
        if not verify(self.node.pubkeys[peer], final.digest(self.net), p["sig"]):
            raise RemoteProtocolError("bad_signature", "close")
        mine = sign_state(self.node.identity, final, self.net)
        ch.status = "closing"
        ch.closing = {"kind": "coop"}
        self._save(ch)
        self.graph.remove_channel(ch.cid)
        self.node.send(peer, "ch_close_sig", {"cid": ch.cid, "seq": final.seq, "sig": mine})

    def _on_ch_close_sig(self, peer: str, p: dict, crossing: bool = False) -> None:
        ch = self._mine(peer, p["cid"], "closing")
        if "final" not in ch.closing or "txid" in ch.closing:
            raise RemoteProtocolError("unexpected_message", "we proposed no close")
        final = ChannelState.from_wire(ch.closing["final"])
        if p["seq"] != final.seq or not verify(self.node.pubkeys[peer], final.digest(self.net), p["sig"]):
            raise RemoteProtocolError("bad_signature", "close")
        mine = sign_state(self.node.identity, final, self.net)
        sa, sb = (mine, p["sig"]) if ch.party == A else (p["sig"], mine)
        signed = SignedState(final, sa, sb)
        if crossing and ch.party == B:
            return  # crossing requests: A posts the close (one tx, not two racing)
        txid = self.chain.submit_own(lambda n: contract.close_tx(
            self.node.identity, self.net, ch.cid, signed, n))
        ch.closing["txid"] = txid
        self._save(ch)
        self.graph.remove_channel(ch.cid)
        self.node.log.info(ev.CHANNEL_CLOSING, channel_id=_hex(ch.cid), kind="coop", txid=txid)

    # -- queries -------------------------------------------------------------------------
    def _by_hex(self, channel_id: str) -> Chan:
        try:
            ch = self.channels.get(bytes.fromhex(channel_id))
        except (ValueError, TypeError):
            ch = None
        if ch is None:
            raise ControlError("unknown_channel", f"no channel {channel_id!r}")
        return ch

    def list(self) -> list[dict]:
        out = []
        for ch in self.channels.values():
            s = ch.signed.state if ch.signed else None
            mine, theirs = (s.bal_a, s.bal_b) if s and ch.party == A else (
                (s.bal_b, s.bal_a) if s else (0, 0))
            out.append({"channel_id": _hex(ch.cid), "peer": ch.peer, "state": ch.status,
                        "seq": s.seq if s else None, "local": mine, "remote": theirs,
                        "htlcs": len(s.htlcs) if s else 0})
        return out

    def _status(self) -> dict:
        chans = [c for c in self.list() if c["state"] == "open"]
        return {"channels": len(chans), "channel_balance": sum(c["local"] for c in chans)}

    async def _workload_payment(self, to: str, amount: int) -> None:
        """One `payments` workload arrival: a keysend payment (no invoice round trip)."""
        res = await self.keysend(to, amount)
        if res["status"] != "succeeded":
            raise ControlError(res["error"].split(":")[0], res["error"])

    # -- byzantine behaviours (fault.misbehave) ------------------------------------------
    def _close_stale(self) -> None:
        """Force-close every open channel with the oldest state we hold (the first one)."""
        for ch in list(self.channels.values()):
            if ch.status != "open" or ch.signed is None or ch.signed.state.seq == 0:
                continue
            old = self.store.first_state(ch.cid)
            if old is not None:
                self._force_close(ch, SignedState.from_wire(old))


class TowerService:
    """A watchtower (role `watchtower`): keeps its clients' latest states and challenges a
    close that posts an older one, even while the client is offline.  A state is checked
    against the parties the client names (one of them the client), so the tower takes it
    even before its own chain has the channel; the channel's L1 record must name the same
    parties before the tower acts.  A challenge that is not mined within RETRY_BLOCKS is sent
    again while the dispute window lasts."""

    RETRY_BLOCKS = 3

    def __init__(self, node):
        self.node = node
        self.chain = node.chain
        self.net = node.config.cluster.name
        self.clients = {n.name for n in node.config.nodes if n.watchtower == node.name}
        self.store = ChannelStore(node.data_dir / "tower.sqlite" if node.data_dir else None)
        self.states: dict[bytes, tuple[bytes, bytes, SignedState]] = {
            cid: (info["a"], info["b"], SignedState.from_wire(w))
            for cid, (_, _, w, info) in self.store.tower_states().items()}
        self.challenged: dict[bytes, int] = {}  # cid -> height of our last challenge
        node.handlers["tw_state"] = self._on_state
        self.chain.on_tip.append(self._on_tip)

    def _on_state(self, peer: str, p: dict) -> None:
        if peer not in self.clients:
            raise RemoteProtocolError("not_a_client", peer)
        signed = SignedState.from_wire(p["signed"])
        a, b, cid = p["a"], p["b"], p["cid"]
        if self.node.pubkeys[peer] not in (a, b) or signed.state.cid != cid:
            raise RemoteProtocolError("bad_state", "not the client's channel")
        if not signed.verify(self.net, a, b):
            raise RemoteProtocolError("bad_state", "not signed by both parties")
        old = self.states.get(cid)
        if old is None or signed.state.seq > old[2].state.seq:
            self.states[cid] = (a, b, signed)
            self.store.put_tower_state(cid, peer, signed.state.seq, signed.to_wire(),
                                       {"a": a, "b": b})

    def _on_tip(self) -> None:
        state, height = self.chain.tree.state, self.chain.tree.height
        for cid, (a, b, signed) in self.states.items():
            rec = contract.channel_record(state, cid)
            if (rec is None or rec["status"] != "closing" or (rec["a"], rec["b"]) != (a, b)
                    or rec["seq"] >= signed.state.seq or height >= rec["dispute_until"]):
                continue
            last = self.challenged.get(cid)
            if last is not None and height < last + self.RETRY_BLOCKS:
                continue
            self.challenged[cid] = height
            try:
                txid = self.chain.submit_own(lambda n: contract.challenge_tx(
                    self.node.identity, self.net, cid, signed, n))
            except ControlError as exc:
                self.node.log.warning(ev.NODE_ERROR, error=f"tower challenge failed: {exc}")
                continue
            self.node.log.warning(ev.CHANNEL_CLOSING, channel_id=_hex(cid), kind="challenge",
                                  by="tower", txid=txid, posted_seq=rec["seq"],
                                  our_seq=signed.state.seq, attempt=last is not None)


codec.register("tw_state", fields(cid=Bytes(32), a=Bytes(32), b=Bytes(32), signed=dict))
