# Topology generators for `[topology] generate = { kind = ..., ... }`.  Each builds a
# networkx graph over node indexes from one `random.Random(seed)`, so a config always
# yields the same links; random kinds that can come out disconnected are redrawn from the
# same generator (derived seeds) until connected.  Parameters are checked with `Reader`
# and reported at `topology.generate.<key>`.
"""Seeded, connected gossip topologies over the nodes of a config."""

from __future__ import annotations

import random
from typing import Any, Callable



class _LazyNetworkx:
    """networkx is imported on first use: node processes load resolved configs (explicit
    links) and should not pay its import time and memory."""

    def __getattr__(self, name: str) -> Any:
        import networkx
        return getattr(networkx, name)


nx = _LazyNetworkx()
from p2p_l2.config.reader import Reader

PATH = "topology.generate"
ATTEMPTS = 100


def _line(r: Reader, names: list[str], rng: random.Random) -> nx.Graph:
    return nx.path_graph(len(names))


def _ring(r: Reader, names: list[str], rng: random.Random) -> nx.Graph:
    n = len(names)
    if n < 3:
        raise r.error("kind", "a kind that fits the nodes (a ring needs at least 3)", "ring")
    return nx.cycle_graph(n)


def _full(r: Reader, names: list[str], rng: random.Random) -> nx.Graph:
    return nx.complete_graph(len(names))


def _star(r: Reader, names: list[str], rng: random.Random) -> nx.Graph:
    n = len(names)
    center = names.index(r.str("center", names[0], choices=names))
    return nx.Graph((center, i) for i in range(n) if i != center)


def _random_regular(r: Reader, names: list[str], rng: random.Random) -> nx.Graph:
    n = len(names)
    lo = 1 if n == 2 else 2  # a 1-regular graph on more than 2 nodes is never connected
    degree = r.int("degree", 4, lo=lo, hi=n - 1)
    if n * degree % 2:
        raise r.error("degree", f"a degree d with {n} * d even", degree)
    return _connected(r, "degree", lambda: nx.random_regular_graph(degree, n, seed=rng))


def _small_world(r: Reader, names: list[str], rng: random.Random) -> nx.Graph:
    n = len(names)
    k = r.int("k", 4, lo=2, hi=n - 1)
    if k % 2:
        raise r.error("k", "an even number of ring neighbours", k)
    p = r.float("p", 0.1, lo=0, hi=1)
    return _connected(r, "p", lambda: nx.connected_watts_strogatz_graph(
        n, k, p, tries=ATTEMPTS, seed=rng))


def _scale_free(r: Reader, names: list[str], rng: random.Random) -> nx.Graph:
    n = len(names)
    m = r.int("m", 2, lo=1, hi=n - 1)
    return nx.barabasi_albert_graph(n, m, seed=rng)


def _connected(r: Reader, key: str, draw: Callable[[], nx.Graph]) -> nx.Graph:
    for _ in range(ATTEMPTS):
        try:
            g = draw()
        except nx.NetworkXError:
            continue
        if nx.is_connected(g):
            return g
    raise r.error(key, "parameters that yield a connected graph", r.data.get(key))


KINDS: dict[str, Callable[..., nx.Graph]] = {
    "line": _line, "ring": _ring, "star": _star, "full": _full,
    "random-regular": _random_regular, "small-world": _small_world, "scale-free": _scale_free,
}


def generate_links(kind: str, names: list[str], seed: int, *, source: str = "<generate>",
                   **params: Any) -> list[tuple[str, str]]:
    """Undirected links over `names`, each pair and the list sorted by position in `names`.

    Raises `ConfigError` (in `source`, at `topology.generate.<key>`) for bad parameters.
    """
    import networkx  # noqa: F401 - import it whole here, not half-way inside an except clause

    names = list(names)
    r = Reader(source, PATH, params)
    if kind not in KINDS:
        raise r.error("kind", "one of: " + ", ".join(KINDS), kind)
    r.has("kind")  # a key of the table this came from, listed among the known ones
    rng = random.Random(seed)
    graph = KINDS[kind](r, names, rng)
    r.done()
    edges = sorted((min(a, b), max(a, b)) for a, b in graph.edges)
    return [(names[a], names[b]) for a, b in edges]
