"""Invoices, onions and the channel graph: the sans-IO pieces of a multi-hop payment."""

import base64
import collections
import random

import msgpack
import networkx as nx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from p2p_l2.channel import onion
from p2p_l2.channel.commitment import payment_hash
from p2p_l2.channel.invoice import INVOICE_PREFIX, Invoice, new_invoice
from p2p_l2.channel.routing import ChannelGraph, NoRoute, Policy, route_hops_for_onion
from p2p_l2.errors import LocalProtocolError, RemoteProtocolError
from p2p_l2.wire import Identity

IDS = [Identity.derive(11, f"n{i}") for i in range(21)]
ALICE, BOB, CAROL, DAVE, ERIN = IDS[:5]
PRE = bytes(range(32))


def reason(excinfo) -> str:
    return excinfo.value.reason


# ---------------------------------------------------------------- invoices


def make_invoice(**kw):
    amount, created = kw.pop("amount", 1_000), kw.pop("created", 12.5)
    inv, _ = new_invoice(ERIN, amount, PRE, created=created, **kw)
    return inv, inv.encode(ERIN)


def test_invoice_round_trip():
    inv, s = make_invoice(memo="coffee ☕", expiry_delta=9)
    assert s.startswith(INVOICE_PREFIX) and s == s.strip() and s.isascii()
    got = Invoice.decode(s)
    assert got == inv
    assert (got.payee, got.amount, got.expiry_delta) == (ERIN.pubkey, 1_000, 9)
    assert got.memo == "coffee ☕"
    assert got.payment_hash == payment_hash(PRE)


@given(amount=st.integers(1, 2**63 - 1), created=st.floats(0, 1e12),
       memo=st.text(max_size=60), delta=st.integers(1, 2**32 - 1))
def test_invoice_round_trip_any_fields(amount, created, memo, delta):
    inv, pre = new_invoice(ERIN, amount, PRE, created=created, memo=memo, expiry_delta=delta)
    assert Invoice.decode(inv.encode(ERIN)) == inv


@settings(max_examples=300)
@given(data=st.data())
def test_invoice_any_tampering_is_refused(data):
    _, s = make_invoice(memo="m")
    i = data.draw(st.integers(len(INVOICE_PREFIX), len(s) - 1))
    chars = st.sampled_from("abcdefghijklmnopqrstuvwxyz234567A0=!")
    c = data.draw(chars.filter(lambda c: c != s[i]))
    with pytest.raises(RemoteProtocolError) as e:  # even the unused bits of the last character
        Invoice.decode(s[:i] + c + s[i + 1:])
    assert reason(e) == "bad_invoice"


def test_invoice_signed_by_someone_else_is_refused():
    inv, _ = make_invoice()
    forged = msgpack.packb([*inv._fields(), ALICE.sign(inv.signing_digest())], use_bin_type=True)
    s = INVOICE_PREFIX + base64.b32encode(forged).decode().rstrip("=").lower()
    with pytest.raises(RemoteProtocolError, match="bad signature"):
        Invoice.decode(s)
    with pytest.raises(LocalProtocolError):
        inv.encode(ALICE)  # and we never sign an invoice for someone else


def _encode_raw(fields) -> str:
    raw = msgpack.packb(fields, use_bin_type=True)
    return INVOICE_PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()


@pytest.mark.parametrize("s", [
    None, 42, b"p2pl2inv1aaaa", "", "p2pl2inv1", "lnbc1xyz", "p2pl2inv2aaaaaaaa",
    "p2pl2inv1AAAAAAAA", "p2pl2inv1a", "p2pl2inv1" + "a" * 2000,
])
def test_malformed_invoice_strings(s):
    with pytest.raises(RemoteProtocolError) as e:
        Invoice.decode(s)
    assert reason(e) == "bad_invoice"


def test_invoice_shape_and_canonical_form():
    inv, s = make_invoice()
    body = s[len(INVOICE_PREFIX):].upper()
    sig = msgpack.unpackb(base64.b32decode(body + "=" * (-len(body) % 8)))[-1]
    good = [*inv._fields(), sig]
    assert Invoice.decode(_encode_raw(good)) == inv
    bad = [
        good[:-1],                                   # no signature
        good + [0],                                  # an extra field
        [good[0][:31], *good[1:]],                   # short payee
        [good[0], 0, *good[2:]],                     # zero amount
        [good[0], -5, *good[2:]],                    # negative amount
        [good[0], good[1], good[2], 0, *good[4:]],   # zero final expiry delta
        [*good[:4], 12, *good[5:]],                  # created as an int: not canonical
        [*good[:4], float("nan"), *good[5:]],        # not finite
        [*good[:5], 7, good[6]],                     # memo not a string
        {"payee": good[0]},                          # a map
    ]
    for fields in bad:
        with pytest.raises(RemoteProtocolError) as e:
            Invoice.decode(_encode_raw(fields))
        assert reason(e) == "bad_invoice", fields
    # the same values in other bytes: amount 1000 as a uint32 (ce ...) instead of a uint16
    raw = msgpack.packb(good, use_bin_type=True)
    assert raw[35:38] == b"\xcd\x03\xe8"  # after the array header and the payee (c4 20 + 32)
    other = raw[:35] + b"\xce" + (1000).to_bytes(4, "big") + raw[38:]
    assert msgpack.unpackb(other) == good
    with pytest.raises(RemoteProtocolError, match="canonical"):
        Invoice.decode(INVOICE_PREFIX + base64.b32encode(other).decode().rstrip("=").lower())


def test_new_invoice_checks_its_inputs():
    inv, pre = new_invoice(ERIN, 5, PRE, created=1.0)
    assert pre == PRE and inv.payment_hash == payment_hash(PRE)
    for kw in ({"amount": 0}, {"amount": 2**63}, {"memo": "x" * 257}, {"expiry_delta": 0}):
        args = {"amount": 5, **kw}
        with pytest.raises(LocalProtocolError):
            new_invoice(ERIN, args.pop("amount"), PRE, created=1.0, **args)
    with pytest.raises(LocalProtocolError):
        new_invoice(ERIN, 5, PRE[:31], created=1.0)


# ---------------------------------------------------------------- onions


def line_hops(n, first=0):
    ids = IDS[first:first + n]
    hops = [(ids[i].pubkey, {"next": ids[i + 1].pubkey, "amt": 1_000 - i, "exp": 500 - 4 * i})
            for i in range(n - 1)]
    hops.append((ids[-1].pubkey, {"final": True, "amt": 1_000 - n, "exp": 400, "ph": PRE}))
    return ids, hops


@pytest.mark.parametrize("n", range(1, onion.MAX_HOPS + 1))
def test_onion_peels_hop_by_hop_to_the_final_payload(n):
    ids, hops = line_hops(n)
    o = onion.build(hops, b"hash")
    for i, (ident, (pk, payload)) in enumerate(zip(ids, hops)):
        assert type(o) is bytes and len(o) == onion.ONION_SIZE
        got, o = onion.peel(ident, o, b"hash")
        assert got == payload
        assert (o is None) == (i == n - 1)


def test_every_onion_has_the_same_size():
    sizes = {len(onion.build(line_hops(n)[1])) for n in range(1, onion.MAX_HOPS + 1)}
    small = onion.build([(BOB.pubkey, {"final": True, "amt": 1, "exp": 0})])
    assert sizes == {len(small)} == {onion.ONION_SIZE}


def test_onion_is_reproducible_from_a_session_key_and_random_otherwise():
    _, hops = line_hops(4)
    k = bytes(32)
    assert onion.build(hops, session_key=k) == onion.build(hops, session_key=k)
    assert onion.build(hops, session_key=k) != onion.build(hops, session_key=b"\1" * 32)
    assert onion.build(hops) != onion.build(hops)


def test_a_hop_cannot_peel_another_hops_layer():
    ids, hops = line_hops(4)
    o = onion.build(hops)
    for other in ids[1:] + [IDS[10]]:
        with pytest.raises(RemoteProtocolError) as e:
            onion.peel(other, o)
        assert reason(e) == "bad_onion"
    _, o2 = onion.peel(ids[0], o)
    for other in (ids[0], ids[2], ids[3]):
        with pytest.raises(RemoteProtocolError):
            onion.peel(other, o2)


def test_onion_is_bound_to_its_associated_data():
    ids, hops = line_hops(3)
    o = onion.build(hops, b"h1")
    with pytest.raises(RemoteProtocolError, match="MAC"):
        onion.peel(ids[0], o, b"h2")
    _, o = onion.peel(ids[0], o, b"h1")
    with pytest.raises(RemoteProtocolError):
        onion.peel(ids[1], o)


@settings(max_examples=150, deadline=None)
@given(layer=st.integers(0, 3), pos=st.integers(0, onion.ONION_SIZE - 1), flip=st.integers(1, 255))
def test_tampered_onion_is_refused_at_the_hop_that_reads_it(layer, pos, flip):
    ids, hops = line_hops(4)
    o = onion.build(hops)
    for i in range(layer):
        _, o = onion.peel(ids[i], o)
    o = o[:pos] + bytes([o[pos] ^ flip]) + o[pos + 1:]
    with pytest.raises(RemoteProtocolError) as e:
        onion.peel(ids[layer], o)
    assert reason(e) == "bad_onion"


@pytest.mark.parametrize("mangle", [
    lambda o: o[:-1], lambda o: o[:100], lambda o: o + b"\0", lambda o: b"",
    lambda o: bytearray(o), lambda o: o.hex(), lambda o: None,
    lambda o: o[:1] + bytes(32) + o[33:],           # an all-zero (low-order) ephemeral key
    lambda o: bytes([1]) + o[1:],                   # unknown version
    lambda o: bytes(len(o)),
])
def test_malformed_onion_is_refused(mangle):
    ids, hops = line_hops(2)
    with pytest.raises(RemoteProtocolError) as e:
        onion.peel(ids[0], mangle(onion.build(hops)))
    assert reason(e) == "bad_onion"


@pytest.mark.parametrize("payload,final", [
    ({"next": b"x" * 32, "amt": 1, "exp": 1}, True),        # a forward payload at the last hop
    ({"final": True, "amt": 1, "exp": 1}, False),           # final before the last hop
    ({"next": b"x" * 31, "amt": 1, "exp": 1}, False),
    ({"next": b"x" * 32, "amt": 0, "exp": 1}, False),
    ({"next": b"x" * 32, "amt": 1, "exp": -1}, False),
    ({"next": b"x" * 32, "amt": 1}, False),
    ({"next": b"x" * 32, "amt": 1, "exp": 1, "evil": 1}, False),
    ({"final": True, "amt": True, "exp": 1}, True),
    ({"final": 1, "amt": 1, "exp": 1}, True),
    ({"final": True, "amt": 1, "exp": 1, "ph": "hash"}, True),
    ([1, 2, 3], True),
])
def test_a_crafted_payload_is_refused_by_peel_and_build(payload, final, monkeypatch):
    """A sender that skips build()'s checks still cannot get a bad payload past peel()."""
    ident = BOB
    hops = [(ident.pubkey, payload)]
    if not final:
        hops.append((CAROL.pubkey, {"final": True, "amt": 1, "exp": 1}))
    with pytest.raises(LocalProtocolError):
        onion.build(hops)
    with monkeypatch.context() as m:
        m.setattr(onion, "_check_payload", lambda p, final, err: p)
        o = onion.build(hops)
    with pytest.raises(RemoteProtocolError) as e:
        onion.peel(ident, o)
    assert reason(e) == "bad_onion"


def test_build_refuses_what_does_not_fit():
    _, hops = line_hops(21)
    with pytest.raises(LocalProtocolError):
        onion.build(hops)
    with pytest.raises(LocalProtocolError):
        onion.build([])
    with pytest.raises(LocalProtocolError):
        onion.build([(BOB.pubkey, {"final": True, "amt": 1, "exp": 1, "ph": "x" * 200})])
    with pytest.raises(LocalProtocolError):
        onion.build([(b"\0" * 31, {"final": True, "amt": 1, "exp": 1})])
    with pytest.raises(LocalProtocolError):
        onion.build([(BOB.pubkey, {"final": True, "amt": 1, "exp": 1})], session_key=b"short")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, onion.MAX_HOPS),
       amts=st.lists(st.integers(1, 2**63 - 1), min_size=onion.MAX_HOPS, max_size=onion.MAX_HOPS),
       exps=st.lists(st.integers(0, 2**63 - 1), min_size=onion.MAX_HOPS, max_size=onion.MAX_HOPS),
       secret=st.binary(min_size=32, max_size=32))
def test_onion_carries_any_valid_payloads(n, amts, exps, secret):
    ids = IDS[:n]
    hops = [(ids[i].pubkey, {"next": ids[i + 1].pubkey, "amt": amts[i], "exp": exps[i],
                             "cid": secret}) for i in range(n - 1)]
    hops.append((ids[-1].pubkey, {"final": True, "amt": amts[-1], "exp": exps[-1], "ph": secret,
                                  "secret": secret}))
    o = onion.build(hops, secret)
    for ident, (_, payload) in zip(ids, hops):
        got, o = onion.peel(ident, o, secret)
        assert got == payload
    assert o is None


# ---------------------------------------------------------------- routing

POL = (1, 1_000, 4)  # base 1, 1000 ppm, delta 4


def pk(i) -> bytes:
    return IDS[i].pubkey


def line_graph(n=5, policy=POL, capacity=10**6):
    g = ChannelGraph()
    for i in range(n - 1):
        g.add_channel(f"c{i}", pk(i), pk(i + 1), capacity, policy, policy)
    return g


def test_fees_and_expiries_hop_by_hop_on_a_5_node_line():
    g = line_graph()
    r = g.find_route(pk(0), pk(4), 100_000, 9, current_height=100)
    assert [(h.cid, h.src, h.dst) for h in r.hops] == [(f"c{i}", pk(i), pk(i + 1))
                                                       for i in range(4)]
    # backwards from the payee: d->e carries 100_000 expiring at 100+9; every hop before it
    # adds 1 + amount*1000/1e6 and 4 blocks; alice pays no fee on her own channel
    assert [h.amount for h in r.hops] == [100_303, 100_202, 100_101, 100_000]
    assert [h.expiry for h in r.hops] == [121, 117, 113, 109]
    assert (r.fee, r.amount, r.delivered) == (303, 100_303, 100_000)
    assert r.nodes == [pk(i) for i in range(5)]
    d = r.to_dict()
    assert d["fee"] == 303 and d["hops"][0] == {"channel_id": "c0", "from": pk(0).hex(),
                                                "to": pk(1).hex(), "amount": 100_303, "expiry": 121}
    # the reverse direction costs the same here, and a 1-hop route costs nothing
    assert g.find_route(pk(4), pk(0), 100_000, 9, 100).fee == 303
    one = g.find_route(pk(1), pk(2), 7, 9, 100)
    assert one.fee == 0 and one.hops[0].expiry == 109


def test_line_route_drives_onion_and_each_hop_sees_its_fee():
    g = line_graph()
    r = g.find_route(pk(0), pk(4), 100_000, 9, 100)
    ph = payment_hash(PRE)
    hops = route_hops_for_onion(r, payment_hash=ph, secret=b"s" * 32)
    assert [h[0] for h in hops] == [pk(i) for i in range(1, 5)]
    o = onion.build(hops, ph)
    for i, htlc in enumerate(r.hops):  # hop i+1 receives htlc i and reads its payload
        payload, o = onion.peel(IDS[i + 1], o, ph)
        if i < 3:
            nxt = r.hops[i + 1]
            assert payload == {"next": nxt.dst, "amt": nxt.amount, "exp": nxt.expiry}
            assert htlc.amount - payload["amt"] == Policy(*POL).fee(payload["amt"])
            assert htlc.expiry - payload["exp"] == POL[2]
        else:
            assert payload == {"final": True, "amt": 100_000, "exp": 109, "ph": ph,
                               "secret": b"s" * 32}
            assert o is None


def test_bytes_channel_ids_ride_in_the_onion():
    g = ChannelGraph()
    g.add_channel(b"\1" * 32, pk(0), pk(1), 10**6, POL, POL)
    g.add_channel(b"\2" * 32, pk(1), pk(2), 10**6, POL, POL)
    hops = route_hops_for_onion(g.find_route(pk(0), pk(2), 10, 9, 0))
    assert hops[0][1]["cid"] == b"\2" * 32 and "ph" not in hops[1][1]
    assert g.to_dict()["channels"][0]["channel_id"] == "01" * 32


def diamond():
    """0 -> 1 -> 3 (pricey), 0 -> 2 -> 3 (cheap), 0 -> 4 -> 5 -> 3 (cheapest, one hop more)."""
    g = ChannelGraph()
    g.add_channel("a1", pk(0), pk(1), 10**6, POL, (50, 5_000, 10))
    g.add_channel("b1", pk(1), pk(3), 10**6, (50, 5_000, 10), POL)
    g.add_channel("a2", pk(0), pk(2), 10**6, POL, (5, 1_000, 6))
    g.add_channel("b2", pk(2), pk(3), 50_000, (5, 1_000, 6), POL)
    return g


def test_cheapest_path_is_chosen():
    g = diamond()
    r = g.find_route(pk(0), pk(3), 10_000, 9, 0)
    assert [h.cid for h in r.hops] == ["a2", "b2"] and r.fee == 5 + 10
    # a longer path that is cheaper still wins ...
    g.add_channel("c1", pk(0), pk(4), 10**6, POL, (0, 0, 2))
    g.add_channel("c2", pk(4), pk(5), 10**6, (0, 0, 2), (0, 0, 2))
    g.add_channel("c3", pk(5), pk(3), 10**6, (0, 0, 2), POL)
    r = g.find_route(pk(0), pk(3), 10_000, 9, 0)
    assert [h.cid for h in r.hops] == ["c1", "c2", "c3"] and r.fee == 0
    # ... but at equal fees the shorter path wins, and then the lower expiry
    g.update_policy("b2", pk(2), (0, 0, 6))
    assert [h.cid for h in g.find_route(pk(0), pk(3), 10_000, 9, 0).hops] == ["a2", "b2"]
    g.add_channel("b3", pk(2), pk(3), 10**6, (0, 0, 3), POL)
    r = g.find_route(pk(0), pk(3), 10_000, 9, 0)
    assert [h.cid for h in r.hops] == ["a2", "b3"] and r.hops[0].expiry == 12


def test_the_payer_does_not_pay_its_own_fee():
    g = line_graph(3)
    g.update_policy("c0", pk(0), (10**6, 10**6, 1000))
    r = g.find_route(pk(0), pk(2), 1_000, 9, 0)
    assert r.fee == 1 + 1 and r.hops[0].expiry == 13


def test_capacity_limits_and_direction():
    g = diamond()
    r = g.find_route(pk(0), pk(3), 60_000, 9, 0)  # b2 only holds 50_000
    assert [h.cid for h in r.hops] == ["a1", "b1"]
    assert [h.cid for h in g.find_route(pk(0), pk(3), 50_000, 9, 0).hops] == ["a2", "b2"]
    with pytest.raises(NoRoute, match="capacity"):
        g.find_route(pk(0), pk(3), 2 * 10**6, 9, 0)
    # the amount plus fees must fit on the first channel
    g2 = line_graph(3, capacity=1_000)
    assert g2.find_route(pk(0), pk(2), 999, 9, 0).amount == 1_000
    with pytest.raises(NoRoute, match="plus fees"):
        g2.find_route(pk(0), pk(2), 1_000, 9, 0)
    # a balance hint (our own channel) is a per-direction limit
    g.set_balance_hint("a2", pk(0), 20_000)
    assert [h.cid for h in g.find_route(pk(0), pk(3), 20_000, 9, 0).hops] == ["a1", "b1"]
    assert [h.cid for h in g.find_route(pk(3), pk(0), 20_000, 9, 0).hops] == ["b2", "a2"]
    g.set_balance_hint("a2", pk(0), None)
    assert [h.cid for h in g.find_route(pk(0), pk(3), 20_000, 9, 0).hops] == ["a2", "b2"]
    # a direction without a policy cannot be used
    g3 = ChannelGraph()
    g3.add_channel("x", pk(0), pk(1), 100, POL, None)
    g3.find_route(pk(0), pk(1), 10, 9, 0)
    with pytest.raises(NoRoute, match="cannot be reached"):
        g3.find_route(pk(1), pk(0), 10, 9, 0)


def test_excluding_failed_channels_gives_the_alternative_then_no_route():
    g = diamond()
    r = g.find_route(pk(0), pk(3), 1_000, 9, 0, exclude={"b2"})
    assert [h.cid for h in r.hops] == ["a1", "b1"]
    with pytest.raises(NoRoute, match="excluded") as e:
        g.find_route(pk(0), pk(3), 1_000, 9, 0, exclude={"b2", "a1"})
    assert "excluded" in e.value.reason
    r = g.find_route(pk(0), pk(3), 1_000, 9, 0, exclude_nodes={pk(2)})
    assert [h.cid for h in r.hops] == ["a1", "b1"]


def test_removed_channels_vanish():
    g = diamond()
    assert g.remove_channel("b2") and not g.remove_channel("b2") and "b2" not in g
    assert [h.cid for h in g.find_route(pk(0), pk(3), 1_000, 9, 0).hops] == ["a1", "b1"]
    g.remove_channel("a2")
    assert pk(2).hex() not in g.to_dict()["nodes"]
    assert {c["channel_id"] for c in g.to_dict()["channels"]} == {"a1", "b1"}
    g.remove_channel("b1")
    with pytest.raises(NoRoute, match="no announced channel"):
        g.find_route(pk(0), pk(3), 1_000, 9, 0)
    g.remove_channel("a1")
    assert g.to_dict() == {"nodes": [], "channels": []} and len(g) == 0
    assert g.graph.number_of_nodes() == 0


def test_re_announcing_and_updating_policies():
    g = line_graph(3)
    g.add_channel("c0", pk(0), pk(1), 5, POL, POL)  # re-announced with a smaller capacity
    with pytest.raises(NoRoute):
        g.find_route(pk(0), pk(2), 10, 9, 0)
    g.add_channel("c0", pk(0), pk(1), 100, POL, POL)
    assert g.update_policy("c1", pk(1), (7, 0, 5))
    assert g.find_route(pk(0), pk(2), 3, 9, 0).fee == 7
    assert g.policy("c1", pk(1)) == Policy(7, 0, 5)
    assert not g.update_policy("nope", pk(1), POL)
    assert not g.set_balance_hint("nope", pk(1), 5)
    with pytest.raises(LocalProtocolError):
        g.update_policy("c1", pk(4), POL)  # not an endpoint
    for bad in ((1, 2), (-1, 0, 4), (0, 0, 0), (0, 2 * 10**6, 4), ("1", 0, 4)):
        with pytest.raises(LocalProtocolError):
            g.update_policy("c1", pk(1), bad)
    with pytest.raises(LocalProtocolError):
        g.add_channel("self", pk(1), pk(1), 10, POL, POL)
    with pytest.raises(LocalProtocolError):
        g.add_channel("zero", pk(1), pk(2), 0, POL, POL)
    g.update_policy("c1", pk(1), None)  # disabled
    with pytest.raises(NoRoute):
        g.find_route(pk(0), pk(2), 3, 9, 0)


def test_max_hops_takes_the_cheapest_route_that_is_short_enough():
    g = line_graph(6, policy=(0, 0, 1))                 # 0 -> 5 free over 5 hops
    g.add_channel("short", pk(0), pk(6), 10**6, POL, POL)
    g.add_channel("short2", pk(6), pk(5), 10**6, POL, POL)  # 2 hops, fee 1
    assert len(g.find_route(pk(0), pk(5), 100, 9, 0).hops) == 5
    r = g.find_route(pk(0), pk(5), 100, 9, 0, max_hops=4)
    assert [h.cid for h in r.hops] == ["short", "short2"] and r.fee == 1
    with pytest.raises(NoRoute, match="longer than 1 hops"):
        g.find_route(pk(0), pk(5), 100, 9, 0, max_hops=1)


def test_no_route_reasons_and_bad_arguments():
    g = line_graph(3)
    with pytest.raises(NoRoute, match="payer is the payee"):
        g.find_route(pk(0), pk(0), 1, 9, 0)
    with pytest.raises(NoRoute, match="no announced channel"):
        g.find_route(pk(0), pk(9), 1, 9, 0)
    g.add_channel("island", pk(7), pk(8), 100, POL, POL)
    with pytest.raises(NoRoute, match="cannot be reached"):
        g.find_route(pk(0), pk(8), 1, 9, 0)
    for kw in ({"amount": 0}, {"amount": 1.5}, {"final_expiry_delta": -1}, {"max_hops": 0},
               {"current_height": -1}):
        args = {"amount": 1, "final_expiry_delta": 9, "current_height": 0, **kw}
        with pytest.raises(LocalProtocolError):
            g.find_route(pk(0), pk(2), **args)


def test_graph_to_dict():
    g = line_graph(3)
    g.update_policy("c1", pk(2), None)
    d = g.to_dict()
    assert d["nodes"] == sorted(pk(i).hex() for i in range(3))
    assert d["channels"][1] == {"channel_id": "c1", "a": pk(1).hex(), "b": pk(2).hex(),
                                "capacity": 10**6, "policy_a": {"base_fee": 1, "fee_ppm": 1_000,
                                                                "expiry_delta": 4},
                                "policy_b": None}
    assert msgpack.unpackb(msgpack.packb(d)) == d


# ---------------------------------------------------------------- random graphs vs brute force

_policy = st.tuples(st.integers(0, 20), st.integers(0, 300_000), st.integers(1, 10))
policies = st.one_of(_policy, _policy, _policy, st.none())  # a quarter of directions disabled


@st.composite
def random_graphs(draw):
    """(channels [(a, b, capacity, policy_a, policy_b)], payer, payee, excluded channels):
    a random tree over 2..7 nodes, so most pairs are joined, plus up to 8 extra channels."""
    n = draw(st.integers(2, 7))
    node = st.integers(0, n - 1)
    capacity = st.integers(1, 5_000) | st.integers(2_000, 5_000)
    pairs = [(i, draw(st.integers(0, i - 1))) for i in range(1, n)]
    pairs += [p for p in draw(st.lists(st.tuples(node, node), max_size=8)) if p[0] != p[1]]
    chans = [(a, b, draw(capacity), draw(policies), draw(policies)) for a, b in pairs]
    src = draw(node)
    dst = (src + draw(st.integers(1, n - 1))) % n
    exclude = draw(st.sets(st.sampled_from(range(len(chans))), max_size=2))
    return chans, src, dst, exclude


def brute_force_best(g: ChannelGraph, source, target, amount, final_exp, exclude, max_hops):
    """The lowest (amount sent, hops, first expiry) over every simple path, or None."""
    best = None
    for path in nx.all_simple_edge_paths(g.graph, source, target, cutoff=max_hops):
        if any(k in exclude for _, _, k in path):
            continue
        amt, exp, ok = amount, final_exp, True
        for j in range(len(path) - 1, -1, -1):
            u, v, k = path[j]
            if amt > g.graph.edges[u, v, k]["capacity"]:
                ok = False
                break
            if j > 0:
                p = g.policy(k, u)
                amt, exp = amt + p.fee(amt), exp + p.expiry_delta
        if ok and (best is None or (amt, len(path), exp) < best):
            best = (amt, len(path), exp)
    return best


def check_find_route(chans, src, dst, exclude, amount, final_delta, height, max_hops) -> str:
    """find_route on this graph agrees with brute force and its route is valid; says what
    happened (for hypothesis events and coverage counts)."""
    g = ChannelGraph()
    for i, (a, b, cap, pa, pb) in enumerate(chans):
        g.add_channel(i, pk(a), pk(b), cap, pa, pb)
    source, target = pk(src), pk(dst)
    if source not in g.graph or target not in g.graph:
        with pytest.raises(NoRoute):
            g.find_route(source, target, amount, final_delta, height, exclude, max_hops)
        return "no route: an end has no channel"
    best = brute_force_best(g, source, target, amount, height + final_delta, exclude, max_hops)
    try:
        r = g.find_route(source, target, amount, final_delta, height, exclude, max_hops)
    except NoRoute:
        assert best is None
        return "no route"
    hops = r.hops
    # a valid simple path from the payer to the payee over usable, non-excluded channels
    assert hops[0].src == source and hops[-1].dst == target and len(hops) <= max_hops
    assert all(a.dst == b.src for a, b in zip(hops, hops[1:]))
    assert len(set(r.nodes)) == len(r.nodes)
    for h in hops:
        assert h.cid not in exclude and g.policy(h.cid, h.src) is not None
        assert {h.src, h.dst} == {g.channel(h.cid)["a"], g.channel(h.cid)["b"]}
        assert 0 < h.amount <= g.channel(h.cid)["capacity"]
    # amounts shrink by exactly each forwarder's fee, expiries by exactly its delta
    assert hops[-1].amount == amount and hops[-1].expiry == height + final_delta
    for a, b in zip(hops, hops[1:]):
        p = g.policy(b.cid, b.src)
        assert a.amount - b.amount == p.fee(b.amount)
        assert a.expiry - b.expiry == p.expiry_delta > 0
    assert r.fee == sum(g.policy(b.cid, b.src).fee(b.amount) for b in hops[1:])
    # and nothing cheaper exists
    assert (r.amount, len(hops), hops[0].expiry) == best
    return f"route of {len(hops)} hops"


@settings(max_examples=500, deadline=None)
@given(graph=random_graphs(), amount=st.integers(1, 2_000), final_delta=st.integers(0, 20),
       height=st.integers(0, 1000), max_hops=st.integers(1, 6))
def test_random_graphs_route_is_valid_and_cheapest(graph, amount, final_delta, height, max_hops):
    chans, src, dst, exclude = graph
    event(check_find_route(chans, src, dst, exclude, amount, final_delta, height, max_hops))


def test_seeded_random_graphs_match_brute_force(monkeypatch):
    """The same check over 1500 plain pseudo-random graphs, which (unlike hypothesis, which
    favours small cases) often have routes of 2 to 5 hops; also counts the hop-bounded reruns."""
    rng = random.Random(20240601)
    layered = []
    search = ChannelGraph._search

    def spy(self, *args, **kw):
        layered.append(kw["layered"])
        return search(self, *args, **kw)

    monkeypatch.setattr(ChannelGraph, "_search", spy)
    outcomes = collections.Counter()
    for _ in range(1500):
        n = rng.randint(3, 8)
        pairs = [(i, rng.randrange(i)) for i in range(1, n)]
        pairs += [tuple(rng.sample(range(n), 2)) for _ in range(rng.randint(0, 8))]
        pol = lambda: None if rng.random() < 0.1 else (rng.randint(0, 20), rng.randint(0, 50_000),
                                                       rng.randint(1, 10))
        chans = [(a, b, rng.randint(500, 5_000), pol(), pol()) for a, b in pairs]
        src, dst = rng.sample(range(n), 2)
        exclude = set(rng.sample(range(len(chans)), rng.choice((0, 0, 1, 2))))
        amount, final_delta = rng.randint(1, 2_000), rng.randint(0, 20)
        outcomes[check_find_route(chans, src, dst, exclude, amount, final_delta,
                                  rng.randint(0, 1000), rng.randint(1, 7))] += 1
    multi = sum(v for k, v in outcomes.items() if k.startswith("route of") and "of 1 " not in k)
    assert multi > 300, outcomes
    assert outcomes["no route"] > 50, outcomes
    assert layered.count(True) > 20, layered.count(True)
