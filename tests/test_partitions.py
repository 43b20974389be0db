"""Partition shapes (sans-IO): who can still reach whom."""

import random

import pytest

from p2p_l2.faults.partitions import cut_pairs, groups_cut, shape_cut

NODES = [f"n{i}" for i in range(1, 8)]


def reach(cut, a):
    return {b for b in NODES if b != a and (a, b) not in cut}


def test_groups_cut_both_ways_and_oneway():
    cut = groups_cut([["n1", "n2"], ["n3"]], NODES)
    assert ("n1", "n3") in cut and ("n3", "n1") in cut and ("n1", "n2") not in cut
    assert ("n4", "n1") in cut  # the unnamed nodes form one more group
    one = groups_cut([["n1"], ["n2"]], ["n1", "n2"], oneway=True)
    assert one == {("n1", "n2")}


def test_isolate_cuts_one_node_off():
    cut = shape_cut("isolate", NODES, random.Random(1), node="n4")
    assert reach(cut, "n4") == set()
    assert reach(cut, "n1") == set(NODES) - {"n1", "n4"}


def test_halves_is_a_majority_and_a_minority():
    cut = shape_cut("halves", NODES, random.Random(2))
    sizes = sorted({frozenset(reach(cut, a) | {a}) for a in NODES}, key=len)
    assert [len(s) for s in sizes] == [3, 4]


def test_bridge_node_reaches_both_halves():
    cut = shape_cut("bridge", NODES, random.Random(3))
    bridge = [a for a in NODES if reach(cut, a) == set(NODES) - {a}]
    assert len(bridge) == 1
    others = [a for a in NODES if a not in bridge]
    assert all(bridge[0] in reach(cut, a) for a in others)
    assert all(len(reach(cut, a)) < len(NODES) - 1 for a in others)


def test_majorities_ring_every_node_sees_its_own_majority():
    cut = shape_cut("majorities-ring", NODES, random.Random(4))
    views = [frozenset(reach(cut, a) | {a}) for a in NODES]
    assert all(len(v) > len(NODES) // 2 for v in views)
    assert len(set(views)) == len(NODES)  # no two the same


def test_shapes_are_seeded_and_checked():
    assert shape_cut("halves", NODES, random.Random(9)) == shape_cut("halves", NODES, random.Random(9))
    with pytest.raises(ValueError, match="unknown partition shape"):
        shape_cut("pentagon", NODES, random.Random(1))
    assert cut_pairs({("a", "b"), ("a", "c")}, [("b", "a")]) == [("a", "b")]
