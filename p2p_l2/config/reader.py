# The one validation layer of the config package.  A `Reader` wraps one TOML table and
# knows its key path (`node[3]`, `topology.generate`); every getter checks type and range
# and raises `ConfigError(source, path, expected, got)`, and `done()` rejects the keys no
# getter asked for.  The `check_*` functions do the same for values found inside lists.
"""Typed, path-tracking access to a parsed TOML table."""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable

from p2p_l2.errors import ConfigError

REQUIRED: Any = object()  # default meaning "the key must be present"
_MISSING: Any = object()  # the value of an absent key, as checks see it
_NO_GOT: Any = object()

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")


def join(path: str, key: str | int) -> str:
    """`join("node", 3)` → `node[3]`; `join("topology", "links")` → `topology.links`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def fail(source: str, path: str, expected: str, got: object = _NO_GOT) -> ConfigError:
    """The error for a bad value `got`, for an absent required key, or (no `got`) a rule."""
    if got is _MISSING:
        return ConfigError(source, path, f"{expected} (required key is missing)")
    if got is _NO_GOT:
        return ConfigError(source, path, expected)
    return ConfigError(source, path, expected, got)


def _bounds(lo: float | None, hi: float | None, gt: float | None) -> str:
    if gt is not None:
        return f" > {gt:g}"
    if lo is not None and hi is not None:
        return f" in [{lo:g}, {hi:g}]"
    if lo is not None:
        return f" >= {lo:g}"
    if hi is not None:
        return f" <= {hi:g}"
    return ""


def _in_bounds(v: float, lo: float | None, hi: float | None, gt: float | None) -> bool:
    return (lo is None or v >= lo) and (hi is None or v <= hi) and (gt is None or v > gt)


def check_int(source: str, path: str, v: object, lo: int | None = None,
              hi: int | None = None, gt: int | None = None) -> int:
    """A TOML integer (a bool is not one) within the bounds."""
    if type(v) is not int or not _in_bounds(v, lo, hi, gt):
        raise fail(source, path, "an integer" + _bounds(lo, hi, gt), v)
    return v


def check_float(source: str, path: str, v: object, lo: float | None = None,
                hi: float | None = None, gt: float | None = None) -> float:
    """A finite TOML float or integer within the bounds, returned as float."""
    ok = type(v) in (int, float) and math.isfinite(v) and _in_bounds(v, lo, hi, gt)
    if not ok:
        raise fail(source, path, "a number" + _bounds(lo, hi, gt), v)
    return float(v)


def check_str(source: str, path: str, v: object, choices: Iterable[str] | None = None,
              pattern: re.Pattern | None = None) -> str:
    """A string, optionally one of `choices` or fully matching `pattern`."""
    if choices is not None:
        choices = tuple(choices)
        if v not in choices:
            raise fail(source, path, "one of: " + ", ".join(choices), v)
    elif not isinstance(v, str) or not v:
        raise fail(source, path, "a non-empty string", v)
    elif pattern is not None and not pattern.fullmatch(v):
        raise fail(source, path, f"a string matching {pattern.pattern}", v)
    return v


def check_bool(source: str, path: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise fail(source, path, "true or false", v)
    return v


def check_list(source: str, path: str, v: object, what: str = "a list",
               min_len: int = 0, max_len: int | None = None) -> list:
    """A list whose length is within bounds; `what` describes it in the error."""
    if not isinstance(v, list) or len(v) < min_len or (max_len is not None and len(v) > max_len):
        raise fail(source, path, what, v)
    return v


class Reader:
    """One TOML table at `path` in `source`; `nodes` maps node names to roles once known."""

    def __init__(self, source: str, path: str, data: object,
                 nodes: dict[str, tuple[str, ...]] | None = None):
        if not isinstance(data, dict):
            raise fail(source, path, "a table", data)
        self.source, self.path, self.data, self.nodes = source, path, data, nodes
        self._known: list[str] = []

    def at(self, key: str | int) -> str:
        return join(self.path, key)

    def error(self, key: str | int, expected: str, got: object = _NO_GOT) -> ConfigError:
        return fail(self.source, self.at(key), expected, got)

    def has(self, key: str) -> bool:
        self._known.append(key)
        return key in self.data

    def get(self, key: str, check: Callable[..., Any], default: Any = REQUIRED, **kw: Any) -> Any:
        """`check(source, path, value, **kw)` on the key's value, or `default` if absent."""
        self._known.append(key)
        v = self.data.get(key, _MISSING)
        if v is _MISSING and default is not REQUIRED:
            return default
        return check(self.source, self.at(key), v, **kw)

    def int(self, key: str, default: Any = REQUIRED, **kw: Any) -> int:
        return self.get(key, check_int, default, **kw)

    def float(self, key: str, default: Any = REQUIRED, **kw: Any) -> float:
        return self.get(key, check_float, default, **kw)

    def str(self, key: str, default: Any = REQUIRED, **kw: Any) -> str:
        return self.get(key, check_str, default, **kw)

    def bool(self, key: str, default: Any = REQUIRED) -> bool:
        return self.get(key, check_bool, default)

    def name(self, key: str, default: Any = REQUIRED, role: str | None = None) -> str:
        return self.get(key, self.check_name, default, role=role)

    def names(self, key: str, default: Any = REQUIRED, role: str | None = None,
              min_len: int = 0, max_len: int | None = None) -> tuple[str, ...]:
        """A list of node names (each with `role`, if given)."""
        return self.get(key, self.names_check(role, min_len, max_len), default)

    def names_check(self, role: str | None = None, min_len: int = 0,
                    max_len: int | None = None) -> Callable[[str, str, object], tuple[str, ...]]:
        """A check for a list of node names, for values that are not directly under a key."""
        if min_len == max_len:
            what = f"a list of {min_len} node names"
        else:
            what = {0: "a list of node names", 1: "a non-empty list of node names"}.get(
                min_len, f"a list of at least {min_len} node names")

        def check(source: str, path: str, v: object) -> tuple[str, ...]:
            items = check_list(source, path, v, what, min_len, max_len)
            return tuple(self.check_name(source, join(path, i), x, role)
                         for i, x in enumerate(items))
        return check

    def check_name(self, source: str, path: str, v: object, role: str | None = None) -> str:
        """A node declared in [[node]] (with `role`, if given)."""
        assert self.nodes is not None, "node names are not known yet"
        known = isinstance(v, str) and v in self.nodes
        if role is not None and not (known and role in self.nodes[v]):
            with_role = [n for n, roles in self.nodes.items() if role in roles]
            raise fail(source, path, f"the name of a node with the {role} role"
                       + _one_of(with_role), v)
        if not known:
            raise fail(source, path, "the name of a node declared in [[node]]"
                       + _one_of(self.nodes), v)
        return v

    def table(self, key: str) -> Reader:
        """The sub-table at `key`; an absent one reads as empty."""
        self._known.append(key)
        return Reader(self.source, self.at(key), self.data.get(key, {}), self.nodes)

    def tables(self, key: str) -> list[Reader]:
        """The array of tables at `key` (`[[key]]`); an absent one reads as empty."""
        self._known.append(key)
        items = self.data.get(key, [])
        if not isinstance(items, list):
            raise self.error(key, f"an array of tables ([[{key}]])", items)
        return [Reader(self.source, join(self.at(key), i), t, self.nodes)
                for i, t in enumerate(items)]

    def done(self) -> None:
        """Reject every key no getter asked for."""
        for key in self.data:
            if key not in self._known:
                known = sorted(set(self._known))
                raise fail(self.source, self.at(key),
                           "a known key (one of: " + ", ".join(known) + ")")


def _one_of(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    if not names:
        return " (there is none)"
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f" (one of: {shown})"
