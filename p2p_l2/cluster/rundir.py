"""The run directory (SPEC §3): everything a running cluster needs, and what it left behind.

    RUN/topology.toml     the resolved config           RUN/cluster.json   ports, pids, public keys
    RUN/control.token     the control token (0600)      RUN/launcher.jsonl launcher events
    RUN/nodes/NAME/       events.jsonl, stderr.log and the node's database
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from contextlib import ExitStack
from pathlib import Path

import tomli_w

from ..config import Config, load_config
from ..errors import P2PL2Error
from ..wire import Identity

RUNS = Path("runs")


def new_run_dir(config: Config, base: Path = RUNS) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"{config.cluster.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{config.cluster.name}-{stamp}-{n}"
    return path


def newest_run_dir(base: Path = RUNS) -> Path:
    runs = [p for p in base.glob("*") if (p / "cluster.json").exists()] if base.is_dir() else []
    if not runs:
        raise P2PL2Error(f"no run directory under {base}/ (start one with `p2p-l2 up CONFIG`)")
    return max(runs, key=lambda p: read_info(p).get("created", 0))


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports the OS says are free now (all held open until chosen)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def create(config: Config, run_dir: Path | None = None) -> Path:
    """Lay out a new run dir for `config`: resolved topology, token, ports and keys."""
    run_dir = Path(run_dir or new_run_dir(config)).absolute()
    if (run_dir / "cluster.json").exists():
        raise P2PL2Error(f"{run_dir} already holds a run; pick another --run-dir")
    (run_dir / "nodes").mkdir(parents=True, exist_ok=True)
    (run_dir / "topology.toml").write_text(tomli_w.dumps(config.to_dict()))
    token_path = run_dir / "control.token"
    token_path.touch(mode=0o600)
    os.chmod(token_path, 0o600)
    token_path.write_text(secrets.token_hex(16))
    hosts = [n.host or config.cluster.host for n in config.nodes]
    if config.cluster.base_port:
        ports = [config.cluster.base_port + i for i in range(2 * len(config.nodes))]
    else:
        ports = free_ports("127.0.0.1", 2 * len(config.nodes))
    nodes = {}
    for i, spec in enumerate(config.nodes):
        nodes[spec.name] = {
            "host": hosts[i], "port": spec.port or ports[2 * i], "control_port": ports[2 * i + 1],
            "pubkey": Identity.derive(config.cluster.seed, spec.name).pubkey_hex,
            "pid": None, "data_dir": str(run_dir / "nodes" / spec.name)}
        (run_dir / "nodes" / spec.name).mkdir(exist_ok=True)
    write_info(run_dir, {"name": config.cluster.name, "seed": config.cluster.seed,
                         "created": time.time(), "nodes": nodes})
    return run_dir


def read_info(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "cluster.json").read_text())
    except FileNotFoundError:
        raise P2PL2Error(f"{run_dir} is not a run directory (no cluster.json)") from None


def write_info(run_dir: Path, info: dict) -> None:
    tmp = Path(run_dir) / "cluster.json.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, Path(run_dir) / "cluster.json")


def read_token(run_dir: Path) -> str:
    return (Path(run_dir) / "control.token").read_text().strip()


def read_config(run_dir: Path) -> Config:
    return load_config(Path(run_dir) / "topology.toml")
