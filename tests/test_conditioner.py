"""The link conditioner's sans-IO core, measured statistically on simulated sends
(the acceptance criteria of the link-fault issue, at the core level)."""

import random
import statistics

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_l2.faults.conditioner import (
    BURST_BYTES, JITTER_DISTS, RULE_ACTIONS, SHAPE_KEYS, Conditioner, Decision, LinkShape, Rule,
    kind_of,
)
from p2p_l2.wire import codec

N = 2000


def simulate(shape, n=N, *, period=0.01, size=500, kinds=("x",), seed=1, fifo=False):
    """Send `n` messages `period` s apart (kinds in turn); returns [(now, kind, Decision)].
    `fifo=False`: each message's own delay, as drawn (the link default keeps order)."""
    cond = Conditioner(shape, random.Random(seed), fifo=fifo)
    out = []
    for i in range(n):
        now = i * period
        kind = kinds[i % len(kinds)]
        out.append((now, kind, cond.decide(kind, size, now)))
    return cond, out


def delays_ms(out):
    return [(t - now) * 1000 for now, _, d in out for t in d.sends]


# ---------------------------------------------------------------- delay


def test_latency_is_a_fixed_delay_and_keeps_order():
    _, out = simulate(LinkShape(latency_ms=50))
    assert all(abs(d - 50) < 1 for d in delays_ms(out))
    firsts = [d.sends[0] for _, _, d in out]
    assert firsts == sorted(firsts)


def test_normal_jitter_mean_and_spread():
    _, out = simulate(LinkShape(latency_ms=50, jitter_ms=10))
    ds = delays_ms(out)
    assert statistics.mean(ds) == pytest.approx(50, abs=2)
    assert statistics.stdev(ds) == pytest.approx(10, abs=2)
    assert min(ds) >= 0


def test_normal_jitter_is_truncated_never_negative():
    _, out = simulate(LinkShape(latency_ms=0, jitter_ms=10))
    ds = delays_ms(out)
    assert min(ds) >= 0
    assert statistics.mean(ds) == pytest.approx(10 * (2 / 3.141592653589793) ** 0.5, abs=1)  # half-normal


def test_uniform_jitter_mean_and_range():
    _, out = simulate(LinkShape(latency_ms=50, jitter_ms=10, jitter_dist="uniform"))
    ds = delays_ms(out)
    assert statistics.mean(ds) == pytest.approx(50, abs=1)
    assert statistics.stdev(ds) == pytest.approx(10 / 3**0.5, abs=1)
    assert 40 - 1e-6 <= min(ds) and max(ds) <= 60 + 1e-6


def test_uniform_jitter_is_clipped_at_zero():
    _, out = simulate(LinkShape(latency_ms=2, jitter_ms=10, jitter_dist="uniform"))
    ds = delays_ms(out)
    assert min(ds) == 0 and max(ds) <= 12 + 1e-6


def test_exponential_jitter_mean_and_tail():
    _, out = simulate(LinkShape(latency_ms=50, jitter_ms=10, jitter_dist="exponential"))
    ds = delays_ms(out)
    assert min(ds) >= 50 - 1e-6
    assert statistics.mean(ds) == pytest.approx(60, abs=2)
    assert statistics.stdev(ds) == pytest.approx(10, abs=2)


def test_jitter_keeps_order_on_a_link_unless_told_otherwise():
    _, out = simulate(LinkShape(latency_ms=50, jitter_ms=10), period=0.001)
    firsts = [d.sends[0] for _, _, d in out]
    assert firsts != sorted(firsts)  # raw draws would overtake each other...
    _, out = simulate(LinkShape(latency_ms=50, jitter_ms=10), period=0.001, fifo=True)
    firsts = [d.sends[0] for _, _, d in out]
    assert firsts == sorted(firsts)  # ...but a stream link delivers in order (like TCP)


# ---------------------------------------------------------------- loss


def loss_runs(out):
    """Lengths of the runs of consecutive dropped messages."""
    runs, run = [], 0
    for _, _, d in out:
        if not d.sends:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    return runs + ([run] if run else [])


@pytest.mark.parametrize("correlation", [0.0, 0.5])
def test_loss_rate_is_kept_whatever_the_correlation(correlation):
    cond, out = simulate(LinkShape(loss=0.3, loss_correlation=correlation))
    dropped = sum(not d.sends for _, _, d in out)
    assert dropped / N == pytest.approx(0.3, abs=0.05)
    assert cond.stats["dropped"] == dropped and cond.stats["sent"] == N - dropped


def test_correlated_loss_comes_in_longer_bursts():
    _, independent = simulate(LinkShape(loss=0.3))
    _, bursty = simulate(LinkShape(loss=0.3, loss_correlation=0.5))
    mean_indep = statistics.mean(loss_runs(independent))
    mean_bursty = statistics.mean(loss_runs(bursty))
    # Gilbert–Elliott: mean burst = 1 / ((1 - p)(1 - c)): 1.43 independent, 2.86 at c = 0.5
    assert mean_indep == pytest.approx(1 / 0.7, rel=0.2)
    assert mean_bursty == pytest.approx(1 / 0.35, rel=0.2)
    assert mean_bursty > 1.5 * mean_indep


def test_full_loss_drops_everything():
    _, out = simulate(LinkShape(loss=1), n=200)
    assert all(d.sends == () for _, _, d in out)


# ---------------------------------------------------------------- duplicate, reorder


def test_duplicate_sends_about_a_fifth_twice():
    cond, out = simulate(LinkShape(duplicate=0.2))
    twice = [d for _, _, d in out if len(d.sends) == 2]
    assert len(twice) / N == pytest.approx(0.2, abs=0.03)
    assert cond.stats["duplicated"] == len(twice) and cond.stats["sent"] == N
    assert all(len(d.sends) in (1, 2) for _, _, d in out)


def test_reorder_lets_about_a_tenth_be_overtaken():
    cond, out = simulate(LinkShape(latency_ms=50, reorder=0.1))
    firsts = [d.sends[0] for _, _, d in out]
    later_min = float("inf")
    overtaken = 0
    for t in reversed(firsts):  # a message is overtaken when a later one leaves before it
        overtaken += later_min < t
        later_min = min(later_min, t)
    assert overtaken / N == pytest.approx(0.1, abs=0.03)
    assert cond.stats["reordered"] / N == pytest.approx(0.1, abs=0.03)
    held = {round((t - now) * 1000, 6) for now, _, d in out for t in d.sends}
    assert held == {50.0, 150.0}  # the default hold-back is 2 x latency


def test_reorder_hold_back_defaults_to_10ms_and_can_be_set():
    _, out = simulate(LinkShape(reorder=0.5), n=200)
    assert {round((t - now) * 1000, 6) for now, _, d in out for t in d.sends} == {0.0, 10.0}
    _, out = simulate(LinkShape(latency_ms=5, reorder=0.5, reorder_ms=30), n=200)
    assert {round((t - now) * 1000, 6) for now, _, d in out for t in d.sends} == {5.0, 35.0}


# ---------------------------------------------------------------- bandwidth


def test_bandwidth_paces_a_backlog_at_the_link_rate():
    # 2,000 x 500 B = 8 Mbit at 100 kbps: 80 s of link time (less the 16 KiB burst).
    cond, out = simulate(LinkShape(bandwidth_kbps=100), period=0)
    sends = [d.sends[0] for _, _, d in out]
    assert sends == sorted(sends)
    assert sends[-1] == pytest.approx(80, rel=0.1)
    assert sends[-1] == pytest.approx(80 - BURST_BYTES * 8 / 100_000, abs=0.01)
    assert sends[-1] - sends[-2] == pytest.approx(500 * 8 / 100_000)
    assert sends[0] == 0  # the burst allowance lets the first ones out at once
    assert sum(t == 0 for t in sends) == BURST_BYTES // 500  # whole messages within 16 KiB


def test_bandwidth_under_the_rate_adds_no_delay():
    _, out = simulate(LinkShape(bandwidth_kbps=100), period=0.1)  # 40 kbps offered
    assert all(d.sends == (now,) for now, _, d in out)


def test_bandwidth_then_latency():
    _, out = simulate(LinkShape(bandwidth_kbps=100, latency_ms=50), period=0)
    assert out[0][2].sends == (pytest.approx(0.05),)
    assert out[-1][2].sends[0] == pytest.approx(80 - BURST_BYTES * 8 / 100_000 + 0.05, abs=0.01)


def test_bandwidth_after_an_idle_spell_refills_the_burst():
    cond = Conditioner(LinkShape(bandwidth_kbps=100), random.Random(1))
    for _ in range(100):
        cond.decide("x", 500, 0.0)  # backlog until ~2.7 s
    assert cond.decide("x", 500, 100.0).sends == (100.0,)


# ---------------------------------------------------------------- dropping by kind, rules


def test_blackhole_drops_everything():
    cond, out = simulate(LinkShape(blackhole=True), n=100, kinds=("ping", "tx"))
    assert all(d == Decision(()) for _, _, d in out)
    assert cond.stats["dropped"] == 100 and cond.stats["sent"] == 0


def test_drop_types_drops_only_those_kinds():
    cond, out = simulate(LinkShape(drop_types=("tx",)), n=100, kinds=("ping", "tx", "block"))
    for now, kind, d in out:
        assert d.sends == (() if kind == "tx" else (now,))
    assert cond.stats["dropped"] == 33


def decide_kinds(shape, kinds):
    cond = Conditioner(shape, random.Random(1))
    return cond, [cond.decide(k, 100, float(i)) for i, k in enumerate(kinds)]


def test_close_before_the_third_ch_update():
    shape = LinkShape(rules=(Rule("ch_update", "close-before", after=2),))
    cond, ds = decide_kinds(shape, ["ch_update", "ping", "ch_update", "ch_ack", "ch_update", "ch_update"])
    assert ds[:5] == [Decision((0.0,)), Decision((1.0,)), Decision((2.0,)), Decision((3.0,)),
                      Decision((), "before")]
    assert ds[5] == Decision((), "before")  # times=0: every one from then on
    assert cond.counts == {"ch_update": 4}
    assert cond.stats["closed"] == 2


def test_rule_times_limits_how_often_it_acts():
    shape = LinkShape(rules=(Rule("ch_update", "close-before", after=2, times=1),))
    _, ds = decide_kinds(shape, ["ch_update"] * 5)
    assert [d.close for d in ds] == [None, None, "before", None, None]


def test_close_after_sends_then_closes():
    shape = LinkShape(latency_ms=20, rules=(Rule("ch_ack", "close-after"),))
    cond, ds = decide_kinds(shape, ["ping", "ch_ack"])
    assert ds[0] == Decision((pytest.approx(0.02),))
    assert ds[1].close == "after" and ds[1].sends == (pytest.approx(1.02),)
    assert cond.stats == {"sent": 2, "dropped": 0, "duplicated": 0, "reordered": 0, "closed": 1}


def test_close_after_still_closes_when_the_message_is_lost():
    shape = LinkShape(loss=1, rules=(Rule("ch_ack", "close-after"),))
    _, ds = decide_kinds(shape, ["ch_ack"])
    assert ds == [Decision((), "after")]


def test_drop_only_after_n():
    shape = LinkShape(rules=(Rule("block", "drop", after=3),))
    _, ds = decide_kinds(shape, ["block"] * 6)
    assert [len(d.sends) for d in ds] == [1, 1, 1, 0, 0, 0]
    assert all(d.close is None for d in ds)


def test_first_active_rule_wins_and_blackhole_wins_over_rules():
    shape = LinkShape(rules=(Rule("x", "drop", times=1), Rule("x", "close-before")))
    _, ds = decide_kinds(shape, ["x", "x"])
    assert ds == [Decision(()), Decision((), "before")]
    shape = LinkShape(blackhole=True, rules=(Rule("x", "close-before"),))
    _, ds = decide_kinds(shape, ["x"])
    assert ds == [Decision(())]


# ---------------------------------------------------------------- the shape


def test_from_params_accepts_a_full_map_and_round_trips():
    params = {"latency_ms": 50, "jitter_ms": 10, "jitter_dist": "uniform", "loss": 0.3,
              "loss_correlation": 0.5, "duplicate": 0.2, "reorder": 0.1, "reorder_ms": 40,
              "bandwidth_kbps": 100, "blackhole": False, "drop_types": ["tx"],
              "rules": [{"kind": "ch_update", "action": "close-before", "after": 2}]}
    shape = LinkShape.from_params(params)
    assert shape.latency_ms == 50.0 and type(shape.latency_ms) is float
    assert shape.drop_types == ("tx",)
    assert shape.rules == (Rule("ch_update", "close-before", after=2),)
    assert LinkShape.from_params(shape.to_dict()) == shape
    assert set(SHAPE_KEYS) >= set(params)
    assert LinkShape.from_params({}) == LinkShape() and LinkShape().to_dict() == {}


@pytest.mark.parametrize("params, key", [
    ({"latncy_ms": 5}, "latncy_ms"),
    ({"latency_ms": -1}, "latency_ms"),
    ({"latency_ms": "5"}, "latency_ms"),
    ({"latency_ms": True}, "latency_ms"),
    ({"jitter_ms": float("nan")}, "jitter_ms"),
    ({"jitter_dist": "pareto"}, "jitter_dist"),
    ({"loss": 1.5}, "loss"),
    ({"loss_correlation": 1}, "loss_correlation"),
    ({"duplicate": -0.1}, "duplicate"),
    ({"reorder": 2}, "reorder"),
    ({"bandwidth_kbps": float("inf")}, "bandwidth_kbps"),
    ({"blackhole": 1}, "blackhole"),
    ({"drop_types": "tx"}, "drop_types"),
    ({"drop_types": ["tx", 3]}, "drop_types[1]"),
    ({"rules": {"kind": "x"}}, "rules"),
    ({"rules": ["-x"]}, "rules[0]"),
    ({"rules": [{"kind": "x", "action": "explode"}]}, "rules[0].action"),
    ({"rules": [{"kind": "x", "action": "drop"}, {"action": "drop"}]}, "rules[1].kind"),
    ({"rules": [{"kind": "x", "action": "drop", "after": -1}]}, "rules[0].after"),
    ({"rules": [{"kind": "x", "action": "drop", "after": 1.0}]}, "rules[0].after"),
    ({"rules": [{"kind": "x", "action": "drop", "when": 1}]}, "rules[0].when"),
])
def test_from_params_rejects_bad_input_naming_the_key(params, key):
    with pytest.raises(ValueError) as err:
        LinkShape.from_params(params)
    assert str(err.value).startswith(key + ":")


def test_from_params_rejects_a_non_table():
    with pytest.raises(ValueError, match="link"):
        LinkShape.from_params([("loss", 0.1)])


def test_is_identity_and_needs_kind():
    assert LinkShape().is_identity
    assert LinkShape(jitter_dist="uniform", loss_correlation=0.5, reorder_ms=3).is_identity
    for key, value in [("latency_ms", 1), ("jitter_ms", 1), ("loss", 0.1), ("duplicate", 0.1),
                       ("reorder", 0.1), ("bandwidth_kbps", 10), ("blackhole", True),
                       ("drop_types", ("tx",)), ("rules", (Rule("x", "drop"),))]:
        assert not LinkShape(**{key: value}).is_identity, key
    rng = random.Random(0)
    assert not Conditioner(LinkShape(loss=0.1), rng).needs_kind
    assert Conditioner(LinkShape(drop_types=("tx",)), rng).needs_kind
    assert Conditioner(LinkShape(rules=(Rule("x", "drop"),)), rng).needs_kind


def test_same_seed_same_decisions():
    shape = LinkShape(latency_ms=20, jitter_ms=5, loss=0.2, loss_correlation=0.3, duplicate=0.1,
                      reorder=0.1, bandwidth_kbps=50)
    assert simulate(shape, n=500, seed=7)[1] == simulate(shape, n=500, seed=7)[1]
    assert simulate(shape, n=500, seed=7)[1] != simulate(shape, n=500, seed=8)[1]


# ---------------------------------------------------------------- kind_of


def test_kind_of_reads_real_bodies():
    assert kind_of(codec.encode("ping", {"n": 1})) == "ping"
    for kind in codec.registered():
        assert kind_of(codec.encode(kind, {})) == kind
    long_kind = "k" * 40  # str8
    assert kind_of(msgpack.packb([long_kind, {"a": 1}])) == long_kind
    assert kind_of(msgpack.packb(["", 1])) == ""


@pytest.mark.parametrize("body", [
    b"", b"\x92", b"\x93\xa4ping\x80", b"\x91\xa4ping", b"\x92\xa5ping", b"\x92\xd9",
    b"\x92\xd9\x05ping", b"\x92\xc4\x04ping\x80", b"\x92\x01\x80", b"\x92\xa2\xff\xfe\x80",
    b"\x92\xda\x00\x04ping\x80", b"garbage",
])
def test_kind_of_garbage_is_empty(body):
    assert kind_of(body) == ""


# ---------------------------------------------------------------- properties


KINDS = ("ping", "tx", "block", "ch_update")

shapes = st.builds(
    LinkShape,
    latency_ms=st.floats(0, 500), jitter_ms=st.floats(0, 200), jitter_dist=st.sampled_from(JITTER_DISTS),
    loss=st.floats(0, 1), loss_correlation=st.floats(0, 0.99), duplicate=st.floats(0, 1),
    reorder=st.floats(0, 1), reorder_ms=st.floats(0, 100), bandwidth_kbps=st.floats(0, 10_000),
    blackhole=st.booleans(), drop_types=st.lists(st.sampled_from(KINDS), max_size=2).map(tuple),
    rules=st.lists(st.builds(Rule, kind=st.sampled_from(KINDS), action=st.sampled_from(RULE_ACTIONS),
                             after=st.integers(0, 5), times=st.integers(0, 3)), max_size=3).map(tuple),
)
traffic = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, 100_000), st.floats(0, 2)),
                   max_size=60)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, msgs=traffic, seed=st.integers(0, 2**32))
def test_sends_never_precede_now(shape, msgs, seed):
    cond = Conditioner(shape, random.Random(seed))
    now = 0.0
    for kind, size, dt in msgs:
        now += dt
        d = cond.decide(kind, size, now)
        assert len(d.sends) <= 2 and all(t >= now for t in d.sends)
        assert list(d.sends) == sorted(d.sends)
        assert d.close in (None, "before", "after")
        if d.close == "before":
            assert d.sends == ()
    s = cond.stats
    assert s["sent"] + s["dropped"] == len(msgs)


@settings(max_examples=100, deadline=None)
@given(msgs=traffic, seed=st.integers(0, 2**32))
def test_identity_shape_sends_everything_at_once_exactly_once(msgs, seed):
    cond = Conditioner(LinkShape(), random.Random(seed))
    now = 0.0
    for kind, size, dt in msgs:
        now += dt
        assert cond.decide(kind, size, now) == Decision((now,), None)


@settings(max_examples=100, deadline=None)
@given(latency=st.floats(0, 500), kbps=st.floats(0, 1000), loss=st.floats(0, 1), dup=st.floats(0, 1),
       msgs=traffic, seed=st.integers(0, 2**32))
def test_without_jitter_or_reorder_order_is_kept(latency, kbps, loss, dup, msgs, seed):
    cond = Conditioner(LinkShape(latency_ms=latency, bandwidth_kbps=kbps, loss=loss, duplicate=dup),
                       random.Random(seed))
    now, last = 0.0, 0.0
    for kind, size, dt in msgs:
        now += dt
        for t in cond.decide(kind, size, now).sends:
            assert t >= last
            last = t
