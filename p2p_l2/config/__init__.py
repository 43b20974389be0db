# The topology config (SPEC §2): TOML in, a frozen, fully validated `Config` out.
# `reader.py` is the one validation layer, `schema.py` walks the schema with it,
# `model.py` holds the dataclasses, `generators.py` the seeded topology generators.
"""Load and validate topology configs; every problem is a `ConfigError`."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from p2p_l2.config.generators import generate_links
from p2p_l2.config.model import (
    ROLES, ChainParams, ChannelParams, ChannelSpec, ClusterSpec, Config, FaultSpec,
    LinkParams, NodeSpec, PlasmaParams, WorkloadSpec,
)
from p2p_l2.config.schema import parse_config
from p2p_l2.errors import ConfigError

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "configs"

__all__ = [
    "load_config", "loads_config", "make_config", "parse_config", "builtin_config", "generate_links",
    "Config", "NodeSpec", "LinkParams", "ClusterSpec", "ChainParams", "ChannelParams",
    "PlasmaParams", "ChannelSpec", "WorkloadSpec", "FaultSpec", "ROLES",
]


def loads_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML text; `source` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = re.search(r"at line (\d+)", str(e))
        raise ConfigError(source, f"line {line.group(1)}" if line else "", "valid TOML",
                          str(e)) from None
    return parse_config(data, source)


def load_config(path: str | os.PathLike) -> Config:
    """Read, parse and validate a TOML config file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, "", "a readable UTF-8 TOML file", str(e)) from None
    return loads_config(text, source)


def builtin_config(name: str = "demo") -> Path:
    """The path of `configs/NAME.toml` shipped in the package."""
    path = BUILTIN_DIR / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))
        raise ConfigError(str(path), "", "a built-in config (one of: " + ", ".join(known) + ")",
                          name)
    return path


def make_config(n: int = 3, topology: str = "line", *, name: str = "test", seed: int = 1,
                roles: dict[str, list[str]] | None = None, extra: str = "", **generate) -> Config:
    """A config of nodes n0..n{n-1} joined by a generated topology; `extra` is more TOML.

    `generate` holds the generator's parameters, e.g. `make_config(50, "random-regular", degree=4)`.
    """
    roles = roles or {}
    params = "".join(f", {k.replace('_', '-')} = {v!r}" for k, v in generate.items())
    lines = [f'[cluster]\nname = "{name}"\nseed = {seed}\n',
             f'[topology]\ngenerate = {{ kind = "{topology}"{params} }}\n']
    for i in range(n):
        node = f"n{i}"
        node_roles = ", ".join(f'"{r}"' for r in roles.get(node, []))
        lines.append(f'[[node]]\nname = "{node}"\nroles = [{node_roles}]\n')
    return loads_config("\n".join(lines) + extra, source=f"<make_config {name}>")
