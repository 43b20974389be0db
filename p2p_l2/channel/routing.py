"""The channel graph as known from gossip, and payment routes over it (DESIGN §5).

Design: a networkx MultiDiGraph with one edge per channel direction (u -> v, key = channel
id) that carries u's forwarding policy (base fee, fee in ppm, expiry delta) and the
capacity; a direction without a policy (not announced yet, or disabled) has no edge.
Routes are found by Dijkstra run BACKWARDS from the payee, because what a hop charges
depends on what it forwards: the label of a node is what it must receive, (amount, hops,
expiry), compared in that order.  Extending a label over an edge is strictly increasing in
each component (fee >= 0, expiry delta >= 1), so Dijkstra stays exact with these
amount-dependent fees.  If the cheapest path is longer than `max_hops`, the search is rerun
over (node, hops) states, which is exact for the hop bound too.  Fees are integers:
base_fee + amount * fee_ppm // 1_000_000.  The payer pays no fee on its own channel.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Hashable, NamedTuple

import networkx as nx

from ..errors import LocalProtocolError, P2PL2Error
from .onion import MAX_HOPS as MAX_ROUTE_HOPS  # a route must fit in an onion

__all__ = [
    "ChannelGraph",
    "Hop",
    "NoRoute",
    "Policy",
    "Route",
    "route_hops_for_onion",
]

_INT_MAX = 2**63


class NoRoute(P2PL2Error):
    """No path can carry the payment; `reason` says why (control error code `no_route`)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"no route: {reason}")


class Policy(NamedTuple):
    """How a node forwards out over one channel: it keeps `base_fee + amt*fee_ppm//1e6` of
    what it receives and wants `expiry_delta` (>= 1) more blocks on its incoming HTLC."""

    base_fee: int
    fee_ppm: int
    expiry_delta: int

    def fee(self, amount: int) -> int:
        """The fee for forwarding `amount` (what goes out over the channel)."""
        return self.base_fee + amount * self.fee_ppm // 1_000_000

    def to_dict(self) -> dict:
        return {"base_fee": self.base_fee, "fee_ppm": self.fee_ppm,
                "expiry_delta": self.expiry_delta}


def _policy(p) -> Policy | None:
    if p is None:
        return None
    try:
        p = Policy(*p)
    except TypeError:
        raise LocalProtocolError(
            f"policy: expected (base_fee, fee_ppm, expiry_delta), got {p!r}") from None
    if not (all(type(v) is int for v in p) and 0 <= p.base_fee < 2**32
            and 0 <= p.fee_ppm <= 10**6 and 1 <= p.expiry_delta < 2**16):
        raise LocalProtocolError(f"policy out of range: {p!r}")
    return p


class Hop(NamedTuple):
    """One HTLC of a route: `amount` over channel `cid` from `src` to `dst`, expiring at L1
    height `expiry`."""

    cid: Hashable
    src: bytes
    dst: bytes
    amount: int
    expiry: int


@dataclass(frozen=True)
class Route:
    hops: tuple[Hop, ...]

    @property
    def amount(self) -> int:
        """What the payer sends (the payee's amount plus every fee)."""
        return self.hops[0].amount

    @property
    def delivered(self) -> int:
        return self.hops[-1].amount

    @property
    def fee(self) -> int:
        return self.amount - self.delivered

    @property
    def nodes(self) -> list[bytes]:
        return [self.hops[0].src] + [h.dst for h in self.hops]

    def to_dict(self) -> dict:
        return {"amount": self.amount, "fee": self.fee,
                "hops": [{"channel_id": _cid_str(h.cid), "from": h.src.hex(), "to": h.dst.hex(),
                          "amount": h.amount, "expiry": h.expiry} for h in self.hops]}


def _cid_str(cid) -> str:
    return cid.hex() if isinstance(cid, bytes) else str(cid)


@dataclass
class _Channel:
    a: bytes
    b: bytes
    capacity: int
    policies: dict  # node -> Policy | None


class ChannelGraph:
    """Channels announced by gossip, plus local balance hints for our own channels."""

    def __init__(self):
        self._g = nx.MultiDiGraph()
        self._channels: dict[Hashable, _Channel] = {}
        self._hints: dict[tuple[Hashable, bytes], int] = {}  # (cid, sender) -> max sendable
        self._refs: dict[bytes, int] = {}  # node -> channels it is an endpoint of

    # ------------------------------------------------------------ updates

    def add_channel(self, cid: Hashable, a: bytes, b: bytes, capacity: int,
                    policy_a=None, policy_b=None) -> None:
        """Add (or re-announce) a channel; policy_x is x's policy for forwarding out over it,
        None when x does not forward over it (yet)."""
        if a == b:
            raise LocalProtocolError("a channel needs two distinct nodes")
        if type(capacity) is not int or not 0 < capacity < _INT_MAX:
            raise LocalProtocolError("capacity: expected a positive integer")
        if cid in self._channels:
            self.remove_channel(cid)
        self._channels[cid] = _Channel(a, b, capacity, {a: None, b: None})
        for n in (a, b):
            self._refs[n] = self._refs.get(n, 0) + 1
            self._g.add_node(n)
        self.update_policy(cid, a, policy_a)
        self.update_policy(cid, b, policy_b)

    def update_policy(self, cid: Hashable, node: bytes, policy) -> bool:
        """Set `node`'s policy on `cid` (None disables that direction); False if the channel
        is unknown (an update that outran its announcement)."""
        ch = self._channels.get(cid)
        if ch is None:
            return False
        other = self._other(ch, node)
        p = _policy(policy)
        ch.policies[node] = p
        if p is None:
            if self._g.has_edge(node, other, cid):
                self._g.remove_edge(node, other, cid)
        else:
            self._g.add_edge(node, other, cid, policy=p, capacity=ch.capacity)
        return True

    def remove_channel(self, cid: Hashable) -> bool:
        """Forget a channel (closed); nodes left without channels go too."""
        ch = self._channels.pop(cid, None)
        if ch is None:
            return False
        for u, v in ((ch.a, ch.b), (ch.b, ch.a)):
            if self._g.has_edge(u, v, cid):
                self._g.remove_edge(u, v, cid)
            self._hints.pop((cid, u), None)
        for n in (ch.a, ch.b):
            self._refs[n] -= 1
            if not self._refs[n]:
                del self._refs[n]
                self._g.remove_node(n)
        return True

    def set_balance_hint(self, cid: Hashable, node: bytes, max_sendable: int | None) -> bool:
        """What `node` can currently send over `cid` (local knowledge of our own channels);
        None clears the hint.  False if the channel is unknown."""
        ch = self._channels.get(cid)
        if ch is None:
            return False
        self._other(ch, node)
        if max_sendable is None:
            self._hints.pop((cid, node), None)
        elif type(max_sendable) is not int or max_sendable < 0:
            raise LocalProtocolError("max_sendable: expected an integer >= 0")
        else:
            self._hints[(cid, node)] = max_sendable
        return True

    @staticmethod
    def _other(ch: _Channel, node: bytes) -> bytes:
        if node == ch.a:
            return ch.b
        if node == ch.b:
            return ch.a
        raise LocalProtocolError("node is not an endpoint of the channel")

    # ------------------------------------------------------------ queries

    def __contains__(self, cid) -> bool:
        return cid in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    @property
    def graph(self) -> nx.MultiDiGraph:
        """The directed graph (read it, do not change it)."""
        return self._g

    def nodes(self) -> list[bytes]:
        return list(self._g.nodes)

    def channel(self, cid: Hashable) -> dict | None:
        ch = self._channels.get(cid)
        if ch is None:
            return None
        return {"a": ch.a, "b": ch.b, "capacity": ch.capacity,
                "policy_a": ch.policies[ch.a], "policy_b": ch.policies[ch.b]}

    def policy(self, cid: Hashable, node: bytes) -> Policy | None:
        ch = self._channels.get(cid)
        return None if ch is None else ch.policies.get(node)

    def to_dict(self) -> dict:
        """For the `graph` control method: {nodes: [hex], channels: [...]}, sorted."""
        chans = []
        for cid, ch in self._channels.items():
            pa, pb = ch.policies[ch.a], ch.policies[ch.b]
            chans.append({"channel_id": _cid_str(cid), "a": ch.a.hex(), "b": ch.b.hex(),
                          "capacity": ch.capacity,
                          "policy_a": pa.to_dict() if pa else None,
                          "policy_b": pb.to_dict() if pb else None})
        chans.sort(key=lambda c: c["channel_id"])
        return {"nodes": sorted(n.hex() for n in self._g.nodes), "channels": chans}

    # ------------------------------------------------------------ routing

    def find_route(self, source: bytes, target: bytes, amount: int, final_expiry_delta: int,
                   current_height: int, exclude=(), max_hops: int = MAX_ROUTE_HOPS,
                   exclude_nodes=()) -> Route:
        """The cheapest route (fee, then hops, then total expiry) delivering `amount` to
        `target` with its HTLC expiring at `current_height + final_expiry_delta`, avoiding the
        channels in `exclude` and the intermediate nodes in `exclude_nodes`; NoRoute if there
        is none."""
        if type(amount) is not int or not 0 < amount < _INT_MAX:
            raise LocalProtocolError("amount: expected a positive integer")
        if type(final_expiry_delta) is not int or final_expiry_delta < 0:
            raise LocalProtocolError("final_expiry_delta: expected an integer >= 0")
        if type(current_height) is not int or current_height < 0:
            raise LocalProtocolError("current_height: expected an integer >= 0")
        if type(max_hops) is not int or max_hops < 1:
            raise LocalProtocolError("max_hops: expected an integer >= 1")
        if source == target:
            raise NoRoute("the payer is the payee")
        for who, n in (("payer", source), ("payee", target)):
            if n not in self._g:
                raise NoRoute(f"the {who} has no announced channel")
        exclude = frozenset(exclude)
        avoid = frozenset(exclude_nodes) - {source, target}
        final = (amount, 0, current_height + final_expiry_delta)
        hops = self._search(source, target, final, exclude, avoid, max_hops, layered=False)
        if hops is not None and len(hops) > max_hops:
            hops = self._search(source, target, final, exclude, avoid, max_hops, layered=True)
        if hops is None:
            raise NoRoute(self._why(source, target, amount, exclude, avoid, max_hops))
        return Route(tuple(hops))

    def _search(self, source, target, final, exclude, avoid, max_hops, layered):
        """Backwards Dijkstra; a state is a node, or (node, hops) when `layered`.
        Returns the hops source -> target, or None."""
        # node -> {predecessor -> {cid -> edge attrs}}; the raw dicts, as networkx's own
        # shortest-path code reads them (the public views cost ~60% more here)
        pred = self._g._pred
        hints = self._hints
        start = (target, 0) if layered else target
        best = {start: final}
        via = {}  # state -> (cid, next state) towards the target
        heap = [(*final, 0, start)]
        tick = 1
        done = set()
        while heap:
            amt, nhops, exp, _, state = heapq.heappop(heap)
            if state in done:
                continue
            done.add(state)
            v = state[0] if layered else state
            if v == source:
                return self._unwind(state, via, best, layered)
            if nhops >= max_hops and layered:
                continue
            for u, edges in pred[v].items():
                if u == target or u in avoid:
                    continue
                for cid, e in edges.items():
                    if cid in exclude or amt > e["capacity"]:
                        continue
                    hint = hints.get((cid, u))
                    if hint is not None and amt > hint:
                        continue
                    if u == source:
                        label = (amt, nhops + 1, exp)
                    else:
                        p = e["policy"]
                        label = (amt + p.fee(amt), nhops + 1, exp + p.expiry_delta)
                    if label[0] >= _INT_MAX:
                        continue
                    su = (u, nhops + 1) if layered else u
                    if su in done:
                        continue
                    old = best.get(su)
                    if old is None or label < old:
                        best[su] = label
                        via[su] = (cid, state)
                        heapq.heappush(heap, (*label, tick, su))
                        tick += 1
        return None

    @staticmethod
    def _unwind(state, via, best, layered):
        hops = []
        while state in via:
            cid, nxt = via[state]
            amt, _, exp = best[nxt]
            u = state[0] if layered else state
            v = nxt[0] if layered else nxt
            hops.append(Hop(cid, u, v, amt, exp))
            state = nxt
        return hops

    def _why(self, source, target, amount, exclude, avoid, max_hops) -> str:
        """A short reason for NoRoute, found by relaxing the constraints one at a time."""
        if not nx.has_path(self._g, source, target):
            return "the payee cannot be reached from the payer in the channel graph"
        g = nx.MultiDiGraph()
        g.add_nodes_from(self._g)
        g.add_edges_from((u, v, k) for u, v, k in self._g.edges(keys=True)
                         if k not in exclude and u not in avoid and v not in avoid)
        if not nx.has_path(g, source, target):
            return "every path to the payee uses an excluded channel or node"
        g = nx.MultiDiGraph()
        g.add_nodes_from(self._g)
        g.add_edges_from((u, v, k) for u, v, k, e in self._g.edges(keys=True, data=True)
                         if k not in exclude and u not in avoid and v not in avoid
                         and amount <= min(e["capacity"], self._hints.get((k, u), amount)))
        if not nx.has_path(g, source, target):
            return f"no path has the capacity for {amount}"
        if nx.shortest_path_length(g, source, target) > max_hops:
            return f"every path with the capacity for {amount} is longer than {max_hops} hops"
        return f"no path has the capacity for {amount} plus fees within {max_hops} hops"


def route_hops_for_onion(route: Route, payment_hash: bytes | None = None,
                         secret: bytes | None = None) -> list[tuple[bytes, dict]]:
    """[(pubkey, payload)] for `onion.build`: hop i (the receiver of HTLC i) is told what to
    forward next (`next`, `amt`, `exp`, and `cid` when channel ids are bytes); the payee gets
    the final payload with the amount and expiry it must see, and the hash/secret if given."""
    out = []
    hops = route.hops
    for i, h in enumerate(hops):
        if i + 1 < len(hops):
            n = hops[i + 1]
            payload = {"next": n.dst, "amt": n.amount, "exp": n.expiry}
            if isinstance(n.cid, bytes) and 1 <= len(n.cid) <= 32:
                payload["cid"] = n.cid
        else:
            payload = {"final": True, "amt": h.amount, "exp": h.expiry}
            if payment_hash is not None:
                payload["ph"] = payment_hash
            if secret is not None:
                payload["secret"] = secret
        out.append((h.dst, payload))
    return out
