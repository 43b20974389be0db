# The whole SPEC §2 schema, checked at load time, section by section through `Reader`.
# Nodes are read first (names and roles, then their references), so every later section
# can check node names and roles; cross-section rules (channel roles, link overrides on
# existing links, workload senders) are checked where the referring key is read.
"""Validate a parsed TOML document into a `Config`."""

from __future__ import annotations

import re

from pathlib import Path
from typing import Any

from p2p_l2.config.generators import generate_links
from p2p_l2.config.model import (
    ROLES, ChainParams, ChannelParams, ChannelSpec, ClusterSpec, Config, FaultSpec,
    LinkParams, NodeSpec, PlasmaParams, WorkloadSpec,
)
from p2p_l2.config.reader import NAME_RE, Reader, check_int, check_list, check_str, fail, join
from p2p_l2.faults.conditioner import SHAPE_KEYS, LinkShape
from p2p_l2.faults.partitions import SHAPES

WORKLOAD_ROLE = {"payments": "channels", "l1-transfers": None, "plasma-transfers": "plasma-user"}
BEHAVIOUR_ROLE = {  # misbehaviour → the role a node needs to be able to do it
    "close-stale": "channels", "withhold-preimage": "channels", "unresponsive": None,
    "operator-withhold": "plasma-operator", "operator-invalid-tx": "plasma-operator",
    "exit-spent": "plasma-user", "double-spend": None, "censor": None,
}
FAULT_ACTIONS = ("partition", "heal", "link", "kill", "pause", "restart", "clock-skew",
                 "misbehave")


def parse_config(data: dict, source: str) -> Config:
    """Validate `data` (as from `tomllib`) into a `Config`; raises `ConfigError`."""
    root = Reader(source, "", data)
    cluster = _cluster(root.table("cluster"), source)
    chain = _chain(root.table("chain"))
    channels = _channel_params(root.table("channels"))
    plasma = _plasma_params(root.table("plasma"))
    nodes = _nodes(root, cluster.host)
    root.nodes = {n.name: n.roles for n in nodes}
    accounts = _accounts(root.table("accounts"))
    channel_specs = tuple(_channel(r) for r in root.tables("channel"))
    # a channel, a node's watchtower and its plasma operator each imply a direct link
    implied = [c.between for c in channel_specs]
    implied += [(n.name, other) for n in nodes for other in (n.watchtower, n.plasma) if other]
    links, default_link = _topology(root.table("topology"), cluster.seed, implied)
    overrides = _link_overrides(root.tables("link"), default_link, links)
    workloads = tuple(_workload(r) for r in root.tables("workload"))
    faults = tuple(_fault(r) for r in root.tables("fault"))
    root.done()
    return Config(source=source, cluster=cluster, chain=chain, channels=channels,
                  plasma=plasma, accounts=accounts, nodes=nodes, links=links,
                  default_link=default_link, link_overrides=overrides,
                  channel_specs=channel_specs, workloads=workloads, faults=faults)


def _cluster(r: Reader, source: str) -> ClusterSpec:
    stem = Path(source).stem
    spec = ClusterSpec(
        name=r.str("name", stem if NAME_RE.fullmatch(stem) else "cluster", pattern=NAME_RE),
        seed=r.int("seed", 0, lo=0),
        host=r.str("host", "127.0.0.1"),
        base_port=r.int("base_port", 0, lo=0, hi=65535),
    )
    r.done()
    return spec


def _chain(r: Reader) -> ChainParams:
    p = ChainParams(block_interval=r.float("block_interval", 1.0, gt=0),
                    max_block_txs=r.int("max_block_txs", 1000, lo=1),
                    block_reward=r.int("block_reward", 0, lo=0),
                    confirmations=r.int("confirmations", 2, lo=0))
    r.done()
    return p


def _channel_params(r: Reader) -> ChannelParams:
    p = ChannelParams(dispute_blocks=r.int("dispute_blocks", 6, lo=1),
                      htlc_delta=r.int("htlc_delta", 4, lo=1),
                      max_htlcs=r.int("max_htlcs", 30, lo=1))
    r.done()
    return p


def _plasma_params(r: Reader) -> PlasmaParams:
    p = PlasmaParams(block_interval=r.float("block_interval", 0.5, gt=0),
                     exit_blocks=r.int("exit_blocks", 6, lo=1),
                     exit_bond=r.int("exit_bond", 10, lo=0),
                     withholding_timeout=r.float("withholding_timeout", 2.0, gt=0))
    r.done()
    return p


def _nodes(root: Reader, cluster_host: str) -> tuple[NodeSpec, ...]:
    readers = root.tables("node")
    if not readers:
        raise root.error("node", "at least one [[node]] table")
    roles_of: dict[str, tuple[str, ...]] = {}
    for r in readers:  # pass 1: names and roles, so references can be checked
        name = r.str("name", pattern=NAME_RE)
        if name in roles_of:
            raise r.error("name", "a node name not used by an earlier [[node]]", name)
        roles = tuple(r.get("roles", _roles, ()))  # no roles: a relaying, validating node
        roles_of[name] = roles
    operators = [n for n, roles in roles_of.items() if "plasma-operator" in roles]
    nodes, ports = [], {}
    for r in readers:  # pass 2: the rest
        r.nodes = roles_of
        name = r.data["name"]
        roles = roles_of[name]
        watchtower = r.name("watchtower", None, role="watchtower")
        if watchtower is not None and "channels" not in roles:
            raise r.error("watchtower", "`watchtower` only on a node with the channels role",
                          watchtower)
        if watchtower == name:
            raise r.error("watchtower", "a node other than this one", watchtower)
        user = "plasma-user" in roles
        for key in ("plasma", "plasma_deposit"):
            if r.has(key) and not user:
                raise r.error(key, f"`{key}` only on a node with the plasma-user role",
                              r.data[key])
        plasma = r.name("plasma", None, role="plasma-operator")
        if user and plasma is None:
            if len(operators) != 1:
                raise r.error("plasma", "the name of the plasma-operator node this plasma-user "
                              f"banks with (there are {len(operators)} operators)")
            plasma = operators[0]
        host = r.str("host", None)
        port = r.int("port", 0, lo=0, hi=65535)
        addr = (host or cluster_host, port)
        if port and addr in ports:
            raise r.error("port", f"a port not already taken by {ports[addr]}", port)
        ports[addr] = name
        nodes.append(NodeSpec(name=name, roles=roles, hashrate=r.float("hashrate", 1.0, lo=0),
                              watchtower=watchtower, plasma=plasma,
                              plasma_deposit=r.int("plasma_deposit", 0, lo=0),
                              host=host, port=port))
        r.done()
    return tuple(nodes)


def _roles(source: str, path: str, v: object) -> list[str]:
    roles = check_list(source, path, v, "a list of roles")
    for i, role in enumerate(roles):
        if role not in ROLES:
            raise fail(source, join(path, i), "one of: " + ", ".join(ROLES), role)
        if role in roles[:i]:
            raise fail(source, join(path, i), "a role not already listed", role)
    return roles


def _accounts(r: Reader) -> dict[str, int]:
    """Genesis balances by node name, or by 64-hex-digit public key (accounts no node
    holds, e.g. a benchmark's or a workload's senders)."""
    accounts = {}
    for name in list(r.data):
        if not _HEX_KEY.fullmatch(name):
            r.check_name(r.source, r.at(name), name)
        accounts[name] = r.int(name, lo=0)
    return accounts


_HEX_KEY = re.compile(r"[0-9a-f]{64}")


def _pair(r: Reader, key: str, role: str | None = None) -> tuple[str, str]:
    """Two different node names under `key` (a link, a channel)."""
    return r.get(key, _pair_check(r, role))


def _pair_check(r: Reader, role: str | None = None) -> Any:
    names = r.names_check(role, min_len=2, max_len=2)

    def check(source: str, path: str, v: object) -> tuple[str, str]:
        a, b = names(source, path, v)
        if a == b:
            raise fail(source, path, "two different node names", v)
        return a, b
    return check


def _channel(r: Reader) -> ChannelSpec:
    between = _pair(r, "between", role="channels")
    funding = r.get("funding", _funding)
    push = r.int("push", 0, lo=0, hi=funding[0])
    r.done()
    return ChannelSpec(between=between, funding=funding, push=push)


def _funding(source: str, path: str, v: object) -> tuple[int, int]:
    what = "two non-negative integers with a positive sum"
    a, b = check_list(source, path, v, what, min_len=2, max_len=2)
    check_int(source, join(path, 0), a, lo=0)
    check_int(source, join(path, 1), b, lo=0)
    if a + b <= 0:
        raise fail(source, path, what, v)
    return a, b


def _link_params(r: Reader, base: LinkParams) -> LinkParams:
    return LinkParams(
        latency_ms=r.float("latency_ms", base.latency_ms, lo=0),
        jitter_ms=r.float("jitter_ms", base.jitter_ms, lo=0),
        loss=r.float("loss", base.loss, lo=0, hi=1),
        bandwidth_kbps=r.int("bandwidth_kbps", base.bandwidth_kbps, lo=0),
        duplicate=r.float("duplicate", base.duplicate, lo=0, hi=1),
        reorder=r.float("reorder", base.reorder, lo=0, hi=1),
    )


def _topology(r: Reader, seed: int, implied: list[tuple[str, str]]
              ) -> tuple[tuple[tuple[str, str], ...], LinkParams]:
    order = {name: i for i, name in enumerate(r.nodes)}
    if r.has("links") and r.has("generate"):
        raise fail(r.source, r.path, "either `links` or `generate`, not both")
    pairs: list[tuple[str, str]] = []
    if r.has("links"):
        path, pair = r.at("links"), _pair_check(r)
        items = check_list(r.source, path, r.data["links"], "a list of [name, name] pairs")
        pairs = [pair(r.source, join(path, i), v) for i, v in enumerate(items)]
    elif r.has("generate"):
        gen = r.table("generate")
        kind = gen.str("kind")
        params = {k: v for k, v in gen.data.items() if k != "kind"}
        pairs = generate_links(kind, list(r.nodes), seed, source=r.source, **params)
    pairs += implied
    default_reader = r.table("default_link")
    default = _link_params(default_reader, LinkParams())
    default_reader.done()
    r.done()
    resolved = {tuple(sorted(p, key=order.__getitem__)) for p in pairs}
    links = tuple(sorted(resolved, key=lambda p: (order[p[0]], order[p[1]])))
    return links, default


def _link_overrides(readers: list[Reader], default: LinkParams,
                    links: tuple[tuple[str, str], ...]) -> dict[tuple[str, str], LinkParams]:
    overrides: dict[tuple[str, str], LinkParams] = {}
    for r in readers:
        a, b = _pair(r, "between")
        pair = (a, b) if (a, b) in links else (b, a)
        if pair not in links:
            raise r.error("between", "two nodes linked in [topology] or by a [[channel]]", [a, b])
        if pair in overrides:
            raise r.error("between", "a link not overridden by an earlier [[link]]", [a, b])
        overrides[pair] = _link_params(r, default)
        r.done()
    return overrides


def _amount(source: str, path: str, v: object) -> tuple[int, int]:
    lo, hi = check_list(source, path, v, "[lo, hi] with 1 <= lo <= hi", min_len=2, max_len=2)
    check_int(source, join(path, 0), lo, lo=1)
    check_int(source, join(path, 1), hi, lo=lo)
    return lo, hi


def _workload(r: Reader) -> WorkloadSpec:
    kind = r.str("kind", choices=WORKLOAD_ROLE)
    role = WORKLOAD_ROLE[kind]
    eligible = tuple(n for n, roles in r.nodes.items() if role is None or role in roles)
    senders = r.names("from", eligible, role=role, min_len=1)
    receivers = r.names("to", eligible, role=role, min_len=1)
    if not any(a != b for a in senders for b in receivers):
        if r.has("to") or r.has("from"):
            raise r.error("to", "a receiver other than the sender", list(receivers))
        raise fail(r.source, r.path, f"at least two nodes with the {role} role "
                   f"for a {kind} workload")
    w = WorkloadSpec(kind=kind, rate=r.float("rate", gt=0), amount=r.get("amount", _amount),
                     from_=senders, to=receivers, start=r.float("start", 0.0, lo=0),
                     duration=r.float("duration", None, gt=0))
    r.done()
    return w


def _fault(r: Reader) -> FaultSpec:
    at = r.float("at", lo=0)
    action = r.str("action", choices=FAULT_ACTIONS)
    duration = r.float("duration", None, gt=0)
    params: dict[str, Any] = {}

    def put(key: str, getter: Any, *args: Any, **kw: Any) -> None:
        if r.has(key):
            params[key] = getter(key, *args, **kw)

    if action == "partition":
        if r.has("shape"):  # a Jepsen shape instead of explicit groups
            if r.has("groups"):
                raise r.error("shape", "`groups` or `shape`, not both")
            params["shape"] = r.str("shape", choices=SHAPES)
            if params["shape"] == "isolate":
                put("node", r.name)
        else:
            params["groups"] = r.get("groups", _groups(r))
        put("oneway", r.bool)
    elif action == "link":
        if r.has("between") == (r.has("from") or r.has("to")):
            raise fail(r.source, r.path, "either `between` (two names) or `from` and `to`")
        if r.has("between"):
            params["between"] = _pair(r, "between")
        else:
            params["from"], params["to"] = r.name("from"), r.name("to")
            if params["from"] == params["to"]:
                raise r.error("to", "a node other than `from`", params["to"])
        shape = {k: r.data[k] for k in SHAPE_KEYS if r.has(k)}
        if not shape:
            raise fail(r.source, r.path, "at least one of: " + ", ".join(SHAPE_KEYS))
        try:  # the conditioner's own check, so the config and `fault.link` agree
            LinkShape.from_params(shape)
        except ValueError as exc:
            key = re.split(r"[\[.:\s]", str(exc), maxsplit=1)[0]
            detail = str(exc).removeprefix(key + ":").strip().removeprefix("expected ")
            raise r.error(key if key in shape else next(iter(shape)), detail) from None
        params.update(shape)
    elif action != "heal":
        params["node"] = r.name("node")
    if action == "partition" and params.get("oneway") and "groups" not in params:
        raise r.error("oneway", "`groups` with it (the earlier groups cannot reach the later)")
    if action == "kill":
        put("restart_after", r.float, lo=0)
    elif action == "pause" and duration is None:
        raise r.error("duration", "a number > 0 (required: how long the node stays paused)")
    elif action == "clock-skew":
        params["offset_s"] = r.float("offset_s")
    elif action == "misbehave":
        params["behaviour"] = r.str("behaviour", choices=BEHAVIOUR_ROLE)
        role = BEHAVIOUR_ROLE[params["behaviour"]]
        if role is not None:
            r.check_name(r.source, r.at("node"), params["node"], role)
    r.done()
    return FaultSpec(at=at, action=action, duration=duration, params=params)


def parse_fault(table: dict, config: Config, source: str = "fault") -> FaultSpec:
    """One fault given outside a config file (`p2p-l2 fault`), checked against `config`'s
    nodes and roles exactly like a `[[fault]]` entry; `at` defaults to 0."""
    r = Reader(source, "", {"at": 0.0, **table}, nodes={n.name: n.roles for n in config.nodes})
    return _fault(r)


def _groups(r: Reader) -> Any:
    def check(source: str, path: str, v: object) -> tuple[tuple[str, ...], ...]:
        groups = check_list(source, path, v, "a list of at least 2 lists of node names",
                            min_len=2)
        seen: set[str] = set()
        out = []
        for i, g in enumerate(groups):
            names = check_list(source, join(path, i), g, "a non-empty list of node names",
                               min_len=1)
            for j, name in enumerate(names):
                r.check_name(source, join(join(path, i), j), name)
                if name in seen:
                    raise fail(source, join(join(path, i), j),
                               "a node not already in another group", name)
                seen.add(name)
            out.append(tuple(names))
        return tuple(out)
    return check


def _drop_types(source: str, path: str, v: object) -> tuple[str, ...]:
    items = check_list(source, path, v, "a list of message kinds")
    return tuple(check_str(source, join(path, i), x) for i, x in enumerate(items))
