"""Network partitions as sets of cut links, and Jepsen's partition shapes (sans-IO).

Design: a partition is the set of ordered pairs (a, b) such that nothing from a reaches b.
`groups` gives the classic split (every pair across groups, both ways; `oneway` keeps only
the pairs from an earlier group to a later one).  The shapes pick their nodes with an rng
seeded from the config seed, so a run is reproducible: `isolate` (one node alone),
`halves` (a majority and a minority), `bridge` (two halves that only one node, in both,
still joins) and `majorities-ring` (each node still sees a majority of the ring: its
neighbours within n // 2 places, so no two nodes see the same majority).  Only pairs
that are topology links matter: nodes talk over their links and nowhere else.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

__all__ = ["SHAPES", "cut_pairs", "groups_cut", "partition_pairs", "shape_cut"]

SHAPES = ("isolate", "halves", "bridge", "majorities-ring")


def groups_cut(groups: Sequence[Sequence[str]], nodes: Sequence[str],
               oneway: bool = False) -> set[tuple[str, str]]:
    """Pairs cut by splitting `nodes` into `groups` (the unnamed nodes form one more)."""
    where = {n: i for i, g in enumerate(groups) for n in g}
    rest = len(groups)
    side = {n: where.get(n, rest) for n in nodes}
    return {(a, b) for a in nodes for b in nodes
            if side[a] != side[b] and (not oneway or side[a] < side[b])}


def shape_cut(shape: str, nodes: Sequence[str], rng: random.Random,
              node: str | None = None) -> set[tuple[str, str]]:
    """The pairs a Jepsen-style partition `shape` cuts (both ways)."""
    nodes = list(nodes)
    if len(nodes) < 2:
        raise ValueError("a partition needs at least two nodes")
    if shape == "isolate":
        alone = node if node is not None else rng.choice(nodes)
        if alone not in nodes:
            raise ValueError(f"unknown node {alone!r}")
        return groups_cut([[alone]], nodes)
    shuffled = rng.sample(nodes, len(nodes))
    if shape == "halves":
        return groups_cut([shuffled[: len(nodes) // 2 + 1]], nodes)
    if shape == "bridge":
        if len(nodes) < 3:
            raise ValueError("a bridge needs at least three nodes")
        rest = shuffled[1:]  # shuffled[0] is the bridge: it keeps all its links
        return groups_cut([rest[: len(rest) // 2]], rest)
    if shape == "majorities-ring":
        n = len(shuffled)
        reach = (n // 2 + 1) // 2  # itself and `reach` on each side: a majority
        ring = {x: i for i, x in enumerate(shuffled)}

        def near(a: str, b: str) -> bool:
            d = abs(ring[a] - ring[b])
            return min(d, n - d) <= reach
        return {(a, b) for a in nodes for b in nodes if a != b and not near(a, b)}
    raise ValueError(f"unknown partition shape {shape!r}; expected one of {', '.join(SHAPES)}")


def partition_pairs(config, groups: Sequence[Sequence[str]] = (), oneway: bool = False,
                    shape: str | None = None, node: str | None = None,
                    seed: int | None = None) -> list[tuple[str, str]]:
    """The (from, to) link directions a partition of `config`'s cluster cuts; a shape's
    nodes are drawn from the config seed (or `seed`), so a run and its record agree."""
    names = config.node_names
    if shape is not None:
        rng = random.Random(f"{config.cluster.seed if seed is None else seed}/{shape}")
        cut = shape_cut(shape, names, rng, node=node)
    else:
        cut = groups_cut(groups, names, oneway=oneway)
    return cut_pairs(cut, config.links)


def cut_pairs(cut: Iterable[tuple[str, str]],
              links: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The cut pairs that are (one direction of) a topology link, sorted."""
    linked = {p for a, b in links for p in ((a, b), (b, a))}
    return sorted(p for p in cut if p in linked)
