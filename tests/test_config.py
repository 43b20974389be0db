"""The topology config: every schema error names file, key path and expectation;
shipped configs load; generators are seeded and connected; `to_dict` round-trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import networkx as nx
import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_l2.config import (
    Config, LinkParams, builtin_config, generate_links, load_config, loads_config, parse_config,
)
from p2p_l2.errors import ConfigError

SRC = "exp/t.toml"
CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.toml"))

# nodes: miner=0, alice=1, bob=2, op=3, tower=4; a case's extra [[node]] is node[5]
BASE = """
[[node]]
name = "miner"
roles = ["miner"]
[[node]]
name = "alice"
roles = ["channels", "plasma-user"]
[[node]]
name = "bob"
roles = ["channels"]
[[node]]
name = "op"
roles = ["plasma-operator"]
[[node]]
name = "tower"
roles = ["watchtower"]
"""


def cfg(extra: str = "", top: str = "") -> str:
    return f"{top}\n{BASE}\n{extra}"


def node(body: str) -> str:
    return f'[[node]]\nname = "x"\n{body}\n'


def fault(body: str) -> str:
    return f"[[fault]]\nat = 1.0\n{body}\n"


def workload(body: str) -> str:
    return f"[[workload]]\n{body}\n"


PAYMENTS = 'kind = "payments"\nrate = 1.0\namount = [1, 10]\n'
LINKED = '[topology]\nlinks = [["alice", "bob"]]\n'
MISSING = "(required key is missing)"

# (top, extra, key path, a fragment of the expectation)
ERRORS = [
    # unknown keys and section types
    ("bogus = 1", "", "bogus", "a known key (one of: accounts, chain, channel,"),
    ("", "[cluster]\nsede = 1", "cluster.sede",
     "a known key (one of: base_port, host, name, seed)"),
    ("cluster = 5", "", "cluster", "a table"),
    ("workload = 5", "", "workload", "an array of tables ([[workload]])"),
    # [cluster], [chain], [channels], [plasma]
    ("", "[cluster]\nseed = true", "cluster.seed", "an integer >= 0"),
    ("", "[cluster]\nseed = 1.5", "cluster.seed", "an integer >= 0"),
    ("", "[cluster]\nseed = -1", "cluster.seed", "an integer >= 0"),
    ("", '[cluster]\nname = "a b"', "cluster.name", "a string matching [A-Za-z0-9_-]+"),
    ("", "[cluster]\nhost = 1", "cluster.host", "a non-empty string"),
    ("", "[cluster]\nbase_port = 70000", "cluster.base_port", "an integer in [0, 65535]"),
    ("", "[chain]\nblock_interval = 0", "chain.block_interval", "a number > 0"),
    ("", '[chain]\nblock_interval = "1"', "chain.block_interval", "a number > 0"),
    ("", "[chain]\nmax_block_txs = 0", "chain.max_block_txs", "an integer >= 1"),
    ("", "[chain]\nconfirmations = 2.0", "chain.confirmations", "an integer >= 0"),
    ("", '[channels]\ndispute_blocks = "6"', "channels.dispute_blocks", "an integer >= 1"),
    ("", "[channels]\nmax_htlcs = false", "channels.max_htlcs", "an integer >= 1"),
    ("", "[plasma]\nwithholding_timeout = -1.0", "plasma.withholding_timeout", "a number > 0"),
    ("", "[plasma]\nexit_bond = -1", "plasma.exit_bond", "an integer >= 0"),
    ("", "[plasma]\nexit_delay = 1", "plasma.exit_delay", "a known key"),
    # [[node]]
    ("", node('roles = ["miner", "wizard"]'), "node[5].roles[1]", "one of: miner, channels,"),
    ("", node('roles = ["miner", "miner"]'), "node[5].roles[1]", "a role not already listed"),
    ("", node('roles = "miner"'), "node[5].roles", "a list of roles"),
    ("", '[[node]]\nname = "alice"', "node[5].name", "a node name not used by an earlier"),
    ("", '[[node]]\nname = "a.b"', "node[5].name", "a string matching [A-Za-z0-9_-]+"),
    ("", "[[node]]\nroles = []", "node[5].name", MISSING),
    ("", node('colour = "red"'), "node[5].colour", "a known key (one of: hashrate, host,"),
    ("", node("hashrate = -1"), "node[5].hashrate", "a number >= 0"),
    ("", node("hashrate = true"), "node[5].hashrate", "a number >= 0"),
    ("", node('roles = ["channels"]\nwatchtower = "bob"'), "node[5].watchtower",
     "the name of a node with the watchtower role (one of: tower)"),
    ("", node('roles = ["channels"]\nwatchtower = "nobody"'), "node[5].watchtower",
     "a node with the watchtower role"),
    ("", node('roles = ["miner"]\nwatchtower = "tower"'), "node[5].watchtower",
     "`watchtower` only on a node with the channels role"),
    ("", node('roles = ["plasma-user"]\nplasma = "bob"'), "node[5].plasma",
     "a node with the plasma-operator role (one of: op)"),
    ("", node('roles = ["channels"]\nplasma = "op"'), "node[5].plasma",
     "`plasma` only on a node with the plasma-user role"),
    ("", node('roles = ["channels"]\nplasma_deposit = 5'), "node[5].plasma_deposit",
     "`plasma_deposit` only on a node with the plasma-user role"),
    ("", node('roles = ["plasma-user"]\nplasma_deposit = -5'), "node[5].plasma_deposit",
     "an integer >= 0"),
    ("", '[[node]]\nname = "op2"\nroles = ["plasma-operator"]', "node[1].plasma",
     "there are 2 operators"),
    ("", node("port = 70000"), "node[5].port", "an integer in [0, 65535]"),
    ("", node("port = 9000") + '[[node]]\nname = "y"\nport = 9000', "node[6].port",
     "a port not already taken by x"),
    ("", node("host = 5"), "node[5].host", "a non-empty string"),
    # [accounts]
    ("", "[accounts]\nnobody = 1", "accounts.nobody", "a node declared in [[node]]"),
    ("", "[accounts]\nalice = -1", "accounts.alice", "an integer >= 0"),
    ("", '[accounts]\nalice = "1"', "accounts.alice", "an integer >= 0"),
    # [topology] and [[link]]
    ("", '[topology]\nlinks = []\ngenerate = { kind = "line" }', "topology",
     "either `links` or `generate`, not both"),
    ("", '[topology]\nlinks = [["alice", "alice"]]', "topology.links[0]", "two different"),
    ("", '[topology]\nlinks = [["alice", "zed"]]', "topology.links[0][1]",
     "a node declared in [[node]]"),
    ("", '[topology]\nlinks = [["alice"]]', "topology.links[0]", "a list of 2 node names"),
    ("", '[topology]\nlinks = "alice"', "topology.links", "a list of [name, name] pairs"),
    ("", '[topology]\nmesh = true', "topology.mesh", "a known key"),
    ("", '[topology]\ngenerate = { kind = "mesh" }', "topology.generate.kind", "one of: line,"),
    ("", "[topology]\ngenerate = { degree = 2 }", "topology.generate.kind", MISSING),
    ("", '[topology]\ngenerate = { kind = "random-regular", degree = 5 }',
     "topology.generate.degree", "an integer in [2, 4]"),
    ("", '[topology]\ngenerate = { kind = "random-regular", degree = 3 }',
     "topology.generate.degree", "a degree d with 5 * d even"),
    ("", '[topology]\ngenerate = { kind = "random-regular", degree = 2.0 }',
     "topology.generate.degree", "an integer"),
    ("", '[topology]\ngenerate = { kind = "line", degree = 2 }', "topology.generate.degree",
     "a known key (one of: kind)"),
    ("", '[topology]\ngenerate = { kind = "small-world", k = 3 }', "topology.generate.k",
     "an even number"),
    ("", '[topology]\ngenerate = { kind = "small-world", k = 2, p = 2 }',
     "topology.generate.p", "a number in [0, 1]"),
    ("", '[topology]\ngenerate = { kind = "star", center = "zed" }',
     "topology.generate.center", "one of: miner, alice, bob, op, tower"),
    ("", '[topology]\ngenerate = { kind = "scale-free", m = 5 }', "topology.generate.m",
     "an integer in [1, 4]"),
    ("", "[topology]\ndefault_link = { loss = 1.5 }", "topology.default_link.loss",
     "a number in [0, 1]"),
    ("", "[topology]\ndefault_link = { blackhole = true }", "topology.default_link.blackhole",
     "a known key"),
    ("", '[[link]]\nbetween = ["miner", "op"]', "link[0].between",
     "two nodes linked in [topology] or by a [[channel]]"),
    ("", LINKED + '[[link]]\nbetween = ["alice", "bob"]\nlatency_ms = -1', "link[0].latency_ms",
     "a number >= 0"),
    ("", LINKED + '[[link]]\nbetween = ["alice", "bob"]\n[[link]]\nbetween = ["bob", "alice"]',
     "link[1].between", "a link not overridden by an earlier [[link]]"),
    # [[channel]]
    ("", '[[channel]]\nbetween = ["alice", "op"]\nfunding = [1, 1]', "channel[0].between[1]",
     "a node with the channels role (one of: alice, bob)"),
    ("", '[[channel]]\nbetween = ["alice", "alice"]\nfunding = [1, 1]', "channel[0].between",
     "two different node names"),
    ("", '[[channel]]\nbetween = ["alice", "bob"]\nfunding = [-1, 5]', "channel[0].funding[0]",
     "an integer >= 0"),
    ("", '[[channel]]\nbetween = ["alice", "bob"]\nfunding = [0, 0]', "channel[0].funding",
     "two non-negative integers with a positive sum"),
    ("", '[[channel]]\nbetween = ["alice", "bob"]\nfunding = [1, 2, 3]', "channel[0].funding",
     "two non-negative integers with a positive sum"),
    ("", '[[channel]]\nbetween = ["alice", "bob"]\nfunding = [1.0, 2]', "channel[0].funding[0]",
     "an integer >= 0"),
    ("", '[[channel]]\nbetween = ["alice", "bob"]\nfunding = [10, 0]\npush = 11', "channel[0].push",
     "an integer in [0, 10]"),
    ("", '[[channel]]\nbetween = ["alice", "bob"]', "channel[0].funding", MISSING),
    # [[workload]]
    ("", workload('kind = "swaps"\nrate = 1.0\namount = [1, 2]'), "workload[0].kind",
     "one of: payments, l1-transfers, plasma-transfers"),
    ("", workload(PAYMENTS.replace("1.0", "0")), "workload[0].rate", "a number > 0"),
    ("", workload('kind = "payments"\namount = [1, 2]'), "workload[0].rate", MISSING),
    ("", workload(PAYMENTS.replace("[1, 10]", "[0, 5]")), "workload[0].amount[0]",
     "an integer >= 1"),
    ("", workload(PAYMENTS.replace("[1, 10]", "[5, 2]")), "workload[0].amount[1]",
     "an integer >= 5"),
    ("", workload(PAYMENTS.replace("[1, 10]", "5")), "workload[0].amount",
     "[lo, hi] with 1 <= lo <= hi"),
    ("", workload(PAYMENTS + 'from = ["op"]'), "workload[0].from[0]",
     "a node with the channels role"),
    ("", workload(PAYMENTS + "from = []"), "workload[0].from", "a non-empty list of node names"),
    ("", workload('kind = "plasma-transfers"\nrate = 1.0\namount = [1, 2]\nto = ["bob"]'),
     "workload[0].to[0]", "a node with the plasma-user role"),
    ("", workload(PAYMENTS + 'from = ["alice"]\nto = ["alice"]'), "workload[0].to",
     "a receiver other than the sender"),
    ("", workload('kind = "plasma-transfers"\nrate = 1.0\namount = [1, 2]'), "workload[0]",
     "at least two nodes with the plasma-user role"),
    ("", workload(PAYMENTS + "start = -1"), "workload[0].start", "a number >= 0"),
    ("", workload(PAYMENTS + "duration = 0"), "workload[0].duration", "a number > 0"),
    ("", workload(PAYMENTS + "fee = 1"), "workload[0].fee", "a known key"),
    # [[fault]]: common keys
    ("", fault('action = "explode"'), "fault[0].action", "one of: partition, heal, link,"),
    ("", '[[fault]]\nat = -1\naction = "heal"', "fault[0].at", "a number >= 0"),
    ("", '[[fault]]\naction = "heal"', "fault[0].at", MISSING),
    ("", fault('action = "heal"\nduration = 0'), "fault[0].duration", "a number > 0"),
    ("", fault('action = "heal"') + fault('action = "restart"\nnode = "bob"\nhard = true'),
     "fault[1].hard", "a known key (one of: action, at, duration, node)"),
    ("", fault('action = "heal"\nnode = "bob"'), "fault[0].node", "a known key"),
    # partition
    ("", fault('action = "partition"\ngroups = [["alice", "bob"]]'), "fault[0].groups",
     "a list of at least 2 lists of node names"),
    ("", fault('action = "partition"\ngroups = [["alice"], []]'), "fault[0].groups[1]",
     "a non-empty list of node names"),
    ("", fault('action = "partition"\ngroups = [["alice", "bob"], ["op", "bob"]]'),
     "fault[0].groups[1][1]", "a node not already in another group"),
    ("", fault('action = "partition"\ngroups = [["alice"], ["bob", "op", "zed"]]'),
     "fault[0].groups[1][2]", "a node declared in [[node]]"),
    ("", fault('action = "partition"\ngroups = [["alice"], ["bob"]]\noneway = 1'),
     "fault[0].oneway", "true or false"),
    ("", fault('action = "partition"'), "fault[0].groups", MISSING),
    # link
    ("", fault('action = "link"\nlatency_ms = 5'), "fault[0]", "either `between`"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\nfrom = "alice"\nto = "bob"'),
     "fault[0]", "either `between`"),
    ("", fault('action = "link"\nfrom = "alice"\nloss = 0.5'), "fault[0].to", MISSING),
    ("", fault('action = "link"\nfrom = "alice"\nto = "alice"\nloss = 0.5'), "fault[0].to",
     "a node other than `from`"),
    ("", fault('action = "link"\nbetween = ["alice", "zed"]\nloss = 0.5'),
     "fault[0].between[1]", "a node declared in [[node]]"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\nloss = 2'), "fault[0].loss",
     "a number in [0, 1]"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\nreorder = -0.1'),
     "fault[0].reorder", "a number in [0, 1]"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\nlatency_ms = -5'),
     "fault[0].latency_ms", "a number in [0, inf)"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\njitter_ms = -5'),
     "fault[0].jitter_ms", "a number in [0, inf)"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\nbandwidth_kbps = -1'),
     "fault[0].bandwidth_kbps", "a number in [0, inf)"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\nblackhole = "yes"'),
     "fault[0].blackhole", "true or false"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\ndrop_types = ["block", 3]'),
     "fault[0].drop_types", "a non-empty message kind"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]'), "fault[0]",
     "at least one of: latency_ms,"),
    ("", fault('action = "link"\nbetween = ["alice", "bob"]\nnode = "bob"\nloss = 0.1'),
     "fault[0].node", "a known key"),
    # kill, pause, restart, clock-skew, misbehave
    ("", fault('action = "kill"'), "fault[0].node", MISSING),
    ("", fault('action = "kill"\nnode = "zed"'), "fault[0].node", "a node declared in [[node]]"),
    ("", fault('action = "kill"\nnode = "bob"\nrestart_after = -1'), "fault[0].restart_after",
     "a number >= 0"),
    ("", fault('action = "pause"\nnode = "bob"'), "fault[0].duration",
     "a number > 0 (required: how long the node stays paused)"),
    ("", fault('action = "restart"\nnode = ["bob"]'), "fault[0].node",
     "a node declared in [[node]]"),
    ("", fault('action = "clock-skew"\nnode = "bob"\noffset_s = "1s"'), "fault[0].offset_s",
     "a number"),
    ("", fault('action = "clock-skew"\nnode = "bob"'), "fault[0].offset_s", MISSING),
    ("", fault('action = "misbehave"\nnode = "bob"\nbehaviour = "lie"'), "fault[0].behaviour",
     "one of: close-stale, withhold-preimage,"),
    ("", fault('action = "misbehave"\nnode = "op"\nbehaviour = "close-stale"'), "fault[0].node",
     "a node with the channels role"),
    ("", fault('action = "misbehave"\nnode = "bob"\nbehaviour = "operator-withhold"'),
     "fault[0].node", "a node with the plasma-operator role"),
]


@pytest.mark.parametrize("top,extra,path,expected", ERRORS,
                         ids=[f"{i}:{c[2]}" for i, c in enumerate(ERRORS)])
def test_error_names_file_path_and_expectation(top, extra, path, expected):
    with pytest.raises(ConfigError) as info:
        loads_config(cfg(extra, top), SRC)
    err = info.value
    assert (err.source, err.path) == (SRC, path), str(err)
    assert expected in err.expected, str(err)
    assert str(err).startswith(f"{SRC}: {path}: expected "), str(err)


def test_base_snippet_is_valid():
    c = loads_config(cfg(), SRC)
    assert c.node("alice").plasma == "op"  # the one operator is the default
    assert c.links == (("alice", "op"),)  # a plasma user is linked to its operator


def test_no_nodes():
    with pytest.raises(ConfigError) as info:
        loads_config("[cluster]\nseed = 1\n", SRC)
    assert info.value.path == "node" and "at least one [[node]]" in str(info.value)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[cluster]\nname = "x"\nseed = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert info.value.path == "line 3"
    assert str(info.value).startswith(f"{path}: line 3: expected valid TOML")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value)


# ---- a complete config: defaults, resolution, accessors --------------------------------

FULL = """
[cluster]
seed = 3

[accounts]
alice = 100
bob = 5

[[node]]
name = "miner"
roles = ["miner"]
hashrate = 2
[[node]]
name = "alice"
roles = ["channels"]
watchtower = "tower"
host = "10.0.0.2"
port = 9001
[[node]]
name = "bob"
roles = ["channels", "plasma-user"]
plasma_deposit = 7
[[node]]
name = "carol"
roles = ["channels"]
[[node]]
name = "tower"
roles = ["watchtower"]
[[node]]
name = "op"
roles = ["plasma-operator"]
[[node]]
name = "dave"
roles = ["plasma-user"]
plasma = "op"

[topology]
links = [["alice", "miner"], ["miner", "alice"], ["tower", "alice"], ["op", "bob"],
         ["op", "dave"]]
default_link = { latency_ms = 5, loss = 0.01 }

[[link]]
between = ["carol", "bob"]
latency_ms = 40
bandwidth_kbps = 1000

[[channel]]
between = ["carol", "bob"]
funding = [10, 0]
[[channel]]
between = ["alice", "bob"]
funding = [100, 50]
push = 3

[[workload]]
kind = "payments"
rate = 2
amount = [1, 5]
[[workload]]
kind = "plasma-transfers"
rate = 1.5
amount = [3, 3]
from = ["dave"]
start = 1
duration = 4

[[fault]]
at = 0
action = "partition"
groups = [["alice", "miner"], ["bob", "carol"]]
oneway = true
duration = 2
[[fault]]
at = 1
action = "link"
from = "alice"
to = "bob"
latency_ms = 10
blackhole = false
drop_types = ["block"]
[[fault]]
at = 2
action = "kill"
node = "carol"
restart_after = 1
[[fault]]
at = 3
action = "pause"
node = "bob"
duration = 0.5
[[fault]]
at = 4
action = "clock-skew"
node = "bob"
offset_s = -2
[[fault]]
at = 5
action = "misbehave"
node = "op"
behaviour = "operator-withhold"
[[fault]]
at = 6
action = "heal"
"""


@pytest.fixture
def full() -> Config:
    return loads_config(FULL, "exp/full.toml")


def test_defaults(full):
    assert full.cluster.name == "full"  # the file stem
    assert (full.cluster.seed, full.cluster.host, full.cluster.base_port) == (3, "127.0.0.1", 0)
    assert (full.chain.block_interval, full.chain.max_block_txs, full.chain.block_reward,
            full.chain.confirmations) == (1.0, 1000, 0, 2)
    assert (full.channels.dispute_blocks, full.channels.htlc_delta,
            full.channels.max_htlcs) == (6, 4, 30)
    assert (full.plasma.block_interval, full.plasma.exit_blocks, full.plasma.exit_bond,
            full.plasma.withholding_timeout) == (0.5, 6, 10, 2.0)
    assert full.node("carol").hashrate == 1.0 and full.node("miner").hashrate == 2.0
    assert isinstance(full.node("miner").hashrate, float)
    assert full.node("carol").port == 0 and full.node("carol").host is None
    assert (full.node("alice").host, full.node("alice").port) == ("10.0.0.2", 9001)


def test_nodes_and_roles(full):
    assert full.node_names == ["miner", "alice", "bob", "carol", "tower", "op", "dave"]
    assert full.nodes_with_role("channels") == ["alice", "bob", "carol"]
    assert full.node("alice").roles == ("channels",)
    assert full.node("alice").watchtower == "tower"
    assert full.node("bob").plasma == "op" and full.node("bob").plasma_deposit == 7
    with pytest.raises(KeyError):
        full.node("zed")


def test_links_are_resolved_sorted_and_deduplicated(full):
    assert full.links == (("miner", "alice"), ("alice", "bob"), ("alice", "tower"),
                          ("bob", "carol"), ("bob", "op"), ("op", "dave"))
    assert full.neighbours("bob") == ["alice", "carol", "op"]
    assert full.neighbours("miner") == ["alice"]


def test_link_params(full):
    assert full.default_link == LinkParams(latency_ms=5.0, loss=0.01)
    over = LinkParams(latency_ms=40.0, loss=0.01, bandwidth_kbps=1000)
    assert full.link_params("bob", "carol") == over
    assert full.link_params("carol", "bob") == over
    assert full.link_params("alice", "bob") == full.default_link


def test_channels_workloads_faults(full):
    a, b = full.channel_specs
    assert (a.between, a.funding, a.push) == (("carol", "bob"), (10, 0), 0)
    assert (b.between, b.funding, b.push) == (("alice", "bob"), (100, 50), 3)
    pay, plasma = full.workloads
    assert pay.from_ == pay.to == ("alice", "bob", "carol")  # default: every channel node
    assert (pay.rate, pay.amount, pay.start, pay.duration) == (2.0, (1, 5), 0.0, None)
    assert plasma.from_ == ("dave",) and plasma.to == ("bob", "dave")
    f = {f.action: f for f in full.faults}
    assert f["partition"].params == {"groups": (("alice", "miner"), ("bob", "carol")),
                                     "oneway": True}
    assert f["partition"].duration == 2.0
    assert f["link"].params == {"from": "alice", "to": "bob", "latency_ms": 10.0,
                                "blackhole": False, "drop_types": ["block"]}
    assert f["kill"].params == {"node": "carol", "restart_after": 1.0}
    assert f["pause"].duration == 0.5
    assert f["clock-skew"].params == {"node": "bob", "offset_s": -2.0}
    assert f["misbehave"].params == {"node": "op", "behaviour": "operator-withhold"}
    assert f["heal"].params == {} and f["heal"].duration is None


def test_round_trip(full):
    again = parse_config(full.to_dict(), "x")
    assert again == full and again.source == "x"
    assert loads_config(tomli_w.dumps(full.to_dict()), "y") == full


def test_config_is_frozen(full):
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.cluster = None  # type: ignore[misc]


# ---- shipped configs ----------------------------------------------------------------------

@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads_connected_and_round_trips(path):
    c = load_config(path)
    assert c.cluster.name == path.stem
    g = nx.Graph(c.links)
    g.add_nodes_from(c.node_names)
    assert nx.is_connected(g)
    assert c.nodes_with_role("miner")
    assert parse_config(c.to_dict(), "x") == c
    assert loads_config(tomli_w.dumps(c.to_dict())) == c


def test_shipped_configs_exist():
    assert {"demo", "line5", "ring12", "random50"} <= {p.stem for p in CONFIGS}


def test_builtin_demo():
    path = builtin_config()
    assert path == builtin_config("demo") and path.is_file()
    demo = load_config(path)
    assert demo.nodes_with_role("plasma-user") == ["alice", "dave", "erin"]
    assert {c.between for c in demo.channel_specs} == {("alice", "bob"), ("bob", "carol")}
    assert {w.kind for w in demo.workloads} == {"payments", "plasma-transfers", "l1-transfers"}
    assert {f.action for f in demo.faults} == {"link", "kill", "misbehave"}
    assert set(demo.accounts) == set(demo.node_names)
    with pytest.raises(ConfigError):
        builtin_config("no-such-config")


def test_ring12_and_random50_shapes():
    ring = load_config(builtin_config("ring12"))
    assert len(ring.links) == 12 and all(len(ring.neighbours(n)) == 2 for n in ring.node_names)
    rnd = load_config(builtin_config("random50"))
    assert len(rnd.nodes) == 50 and len(rnd.links) == 100
    assert all(len(rnd.neighbours(n)) == 4 for n in rnd.node_names)
    line = load_config(builtin_config("line5"))
    assert line.neighbours("carol") == ["bob", "dave"]


# ---- generators ----------------------------------------------------------------------------

NAMES = [f"n{i:02d}" for i in range(30)]


def graph(links, names=NAMES) -> nx.Graph:
    g = nx.Graph(links)
    g.add_nodes_from(names)
    return g


@pytest.mark.parametrize("kind,params,edges,degrees", [
    ("line", {}, 29, None),
    ("ring", {}, 30, {2}),
    ("star", {}, 29, None),
    ("full", {}, 435, {29}),
    ("random-regular", {}, 60, {4}),
    ("random-regular", {"degree": 3}, 45, {3}),
    ("random-regular", {"degree": 2}, 30, {2}),
    ("small-world", {}, 60, None),
    ("small-world", {"k": 6, "p": 0.5}, 90, None),
    ("scale-free", {}, 56, None),
    ("scale-free", {"m": 3}, 81, None),
])
def test_generator_shape(kind, params, edges, degrees):
    links = generate_links(kind, NAMES, 42, **params)
    g = graph(links)
    assert nx.is_connected(g)
    assert len(links) == edges == g.number_of_edges()
    if degrees is not None:
        assert {d for _, d in g.degree} == degrees
    order = {n: i for i, n in enumerate(NAMES)}
    assert all(order[a] < order[b] for a, b in links)
    assert links == sorted(links, key=lambda p: (order[p[0]], order[p[1]]))
    assert generate_links(kind, NAMES, 42, **params) == links  # deterministic


def test_star_center():
    links = generate_links("star", NAMES, 0, center="n07")
    assert all("n07" in p for p in links) and len(links) == 29


@pytest.mark.parametrize("kind", ["random-regular", "small-world", "scale-free"])
def test_random_kinds_depend_on_seed(kind):
    assert generate_links(kind, NAMES, 1) != generate_links(kind, NAMES, 2)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 40), degree=st.integers(2, 6), seed=st.integers(0, 2**32))
def test_random_regular_always_connected_and_regular(n, degree, seed):
    names = [f"v{i}" for i in range(n)]
    if degree >= n or n * degree % 2:
        with pytest.raises(ConfigError) as info:
            generate_links("random-regular", names, seed, degree=degree)
        assert info.value.path == "topology.generate.degree"
        return
    g = graph(generate_links("random-regular", names, seed, degree=degree), names)
    assert nx.is_connected(g) and {d for _, d in g.degree} == {degree}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(5, 40), seed=st.integers(0, 2**32), p=st.floats(0, 1))
def test_small_world_always_connected(n, seed, p):
    names = [f"v{i}" for i in range(n)]
    assert nx.is_connected(graph(generate_links("small-world", names, seed, p=p), names))


def test_generated_topology_in_config_follows_seed():
    text = cfg('[topology]\ngenerate = { kind = "random-regular", degree = 2 }',
               top="[cluster]\nseed = 1")
    a = loads_config(text, SRC)
    assert a == loads_config(text, "elsewhere/t.toml")
    assert len(a.links) == 5 and all(len(a.neighbours(n)) == 2 for n in a.node_names)
    again = parse_config(a.to_dict(), "x")
    assert again == a and "generate" not in again.to_dict()["topology"]


def test_generator_error_carries_source():
    with pytest.raises(ConfigError) as info:
        generate_links("ring", ["a", "b"], 0, source="f.toml")
    assert str(info.value).startswith("f.toml: topology.generate.kind: expected")
