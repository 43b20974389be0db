# The resolved config as frozen dataclasses: what every other layer reads.  Defaults are
# filled in and the topology is explicit (`links`), so `Config.to_dict()` is a complete
# TOML-writable description and `parse_config(cfg.to_dict(), src) == cfg` (`source` is
# excluded from equality).
"""Frozen dataclasses for a validated topology config (SPEC §2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

ROLES = ("miner", "channels", "watchtower", "plasma-operator", "plasma-user")


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    seed: int = 0
    host: str = "127.0.0.1"
    base_port: int = 0


@dataclass(frozen=True)
class ChainParams:
    block_interval: float = 1.0
    max_block_txs: int = 1000
    block_reward: int = 0
    confirmations: int = 2


@dataclass(frozen=True)
class ChannelParams:
    dispute_blocks: int = 6
    htlc_delta: int = 4
    max_htlcs: int = 30


@dataclass(frozen=True)
class PlasmaParams:
    block_interval: float = 0.5
    exit_blocks: int = 6
    exit_bond: int = 10
    withholding_timeout: float = 2.0


@dataclass(frozen=True)
class NodeSpec:
    name: str
    roles: tuple[str, ...]
    hashrate: float = 1.0
    watchtower: str | None = None      # a node with the watchtower role
    plasma: str | None = None          # the operator a plasma-user banks with (resolved)
    plasma_deposit: int = 0
    host: str | None = None            # None: the cluster's host
    port: int = 0                      # 0: the launcher picks


@dataclass(frozen=True)
class LinkParams:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    bandwidth_kbps: int = 0            # 0: unlimited
    duplicate: float = 0.0
    reorder: float = 0.0


@dataclass(frozen=True)
class ChannelSpec:
    between: tuple[str, str]
    funding: tuple[int, int]
    push: int = 0                      # paid from between[0] to between[1] at open


@dataclass(frozen=True)
class WorkloadSpec:
    kind: str                          # payments | l1-transfers | plasma-transfers
    rate: float                        # arrivals per second (Poisson)
    amount: tuple[int, int]            # uniform, inclusive
    from_: tuple[str, ...]             # TOML key `from`; resolved default: every eligible node
    to: tuple[str, ...]
    start: float = 0.0
    duration: float | None = None      # None: until the run ends


@dataclass(frozen=True)
class FaultSpec:
    at: float
    action: str
    duration: float | None = None      # None: not lifted before the run ends
    params: dict[str, Any] = field(default_factory=dict)  # the action's keys, as given


@dataclass(frozen=True)
class Config:
    source: str = field(compare=False)
    cluster: ClusterSpec
    chain: ChainParams
    channels: ChannelParams
    plasma: PlasmaParams
    accounts: dict[str, int]
    nodes: tuple[NodeSpec, ...]
    links: tuple[tuple[str, str], ...]            # undirected, sorted by node order
    default_link: LinkParams
    link_overrides: dict[tuple[str, str], LinkParams]  # keyed by a pair from `links`
    channel_specs: tuple[ChannelSpec, ...]
    workloads: tuple[WorkloadSpec, ...]
    faults: tuple[FaultSpec, ...]

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def nodes_with_role(self, role: str) -> list[str]:
        return [n.name for n in self.nodes if role in n.roles]

    def neighbours(self, name: str) -> list[str]:
        """Nodes linked to `name`, in node order."""
        self.node(name)
        near = {b if a == name else a for a, b in self.links if name in (a, b)}
        return [n for n in self.node_names if n in near]

    def link_params(self, a: str, b: str) -> LinkParams:
        return self.link_overrides.get(
            (a, b), self.link_overrides.get((b, a), self.default_link))

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain TOML-writable data (no None values)."""
        nodes = []
        for n in self.nodes:
            d: dict[str, Any] = {"name": n.name, "roles": list(n.roles), "hashrate": n.hashrate}
            if n.watchtower is not None:
                d["watchtower"] = n.watchtower
            if n.plasma is not None:
                d["plasma"] = n.plasma
            if "plasma-user" in n.roles:
                d["plasma_deposit"] = n.plasma_deposit
            if n.host is not None:
                d["host"] = n.host
            d["port"] = n.port
            nodes.append(d)
        d = {
            "cluster": asdict(self.cluster),
            "chain": asdict(self.chain),
            "channels": asdict(self.channels),
            "plasma": asdict(self.plasma),
            "accounts": dict(self.accounts),
            "node": nodes,
            "topology": {"links": [list(p) for p in self.links],
                         "default_link": asdict(self.default_link)},
            "link": [{"between": list(p), **asdict(lp)} for p, lp in self.link_overrides.items()],
            "channel": [{"between": list(c.between), "funding": list(c.funding), "push": c.push}
                        for c in self.channel_specs],
            "workload": [_workload_dict(w) for w in self.workloads],
            "fault": [_fault_dict(f) for f in self.faults],
        }
        return {k: v for k, v in d.items() if v != []}  # no empty [[arrays]]


def _plain(v: Any) -> Any:
    """Tuples (at any depth) as lists, for TOML writers."""
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


def _workload_dict(w: WorkloadSpec) -> dict[str, Any]:
    d = {f.name.rstrip("_"): _plain(getattr(w, f.name)) for f in fields(w)}
    return {k: v for k, v in d.items() if v is not None}


def _fault_dict(f: FaultSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"at": f.at, "action": f.action}
    if f.duration is not None:
        d["duration"] = f.duration
    d.update({k: _plain(v) for k, v in f.params.items()})
    return d
