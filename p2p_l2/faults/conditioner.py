"""The link conditioner's sans-IO core: what happens to each outbound message on one
direction of one link (DESIGN §3, §7; SPEC §5 `link`).

`Conditioner.decide(kind, size, now)` returns the absolute times at which copies of the
message leave (none = dropped, two = duplicated) and whether the link must close before or
after it.  No trio, no clock, no sockets: `now` and a seeded `random.Random` come in, so a
run is reproducible from the config seed.  The caller (PeerLink) only consults it while a
fault is set, so an unfaulted link pays nothing.

Pipeline per message, in this order (each stage draws from the rng only when enabled):

1. rules (Core Lightning's dev-disconnect): every message of a kind named by a rule is
   counted; occurrence k (1-based) is acted on when `k > after` (and `k <= after + times`
   if `times` is set).  `drop` (CLN `@`), `close-before` (CLN `-`: close instead of
   sending), `close-after` (CLN `+`: the message goes through the rest of the pipeline,
   then the link closes once its last copy has left, or at once if it was lost).
   Counters live as long as the Conditioner, so keep one per fault across reconnects.
2. blackhole, then `drop_types`: drop (a blackhole wins over every rule).
3. loss: a two-state Gilbert–Elliott chain (see `_loss`): the mean loss rate is `loss`
   for any `loss_correlation`, which only lengthens the loss bursts.
4. per copy (duplicate = a second, independently shaped copy): bandwidth, then delay.
   - bandwidth: a token bucket of `BURST_BYTES` filled at `bandwidth_kbps` (1 kbps = 1000
     bit/s).  Kept as a virtual finish time `tat`: a message of n bytes moves `tat` to
     `max(tat, now) + n / rate` and leaves at `max(now, tat - BURST_BYTES / rate)`, so an
     idle link lets a 16 KiB burst out at once and then paces messages n*8/(kbps*1000) s
     apart.  Nothing is tail-dropped (our links are TCP, which backs up rather than
     drops); PeerLink's queue limits bound the backlog.
   - delay: `latency_ms` plus a jitter sample (`jitter_dist`):
       normal      = N(0, jitter) truncated (resampled) so the delay is never < 0;
       uniform     = U(-jitter, +jitter), the delay clipped at 0;
       exponential = Exp(mean jitter), always >= 0 (a long tail; the mean is latency+jitter).
   - reorder: with probability `reorder` the copy is held back a further `reorder_ms`
     (0 = max(2 x latency, 10 ms)) so later messages overtake it.

Ordering: with latency and bandwidth only, send times are non-decreasing in `now`, so
order is preserved (FIFO).  Jitter draws each message's delay independently, so messages
closer together than the jitter may swap, as on a real jittery path (netem behaves the
same); `reorder` swaps on purpose.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import NamedTuple

__all__ = ["BURST_BYTES", "SHAPE_KEYS", "Conditioner", "Decision", "LinkShape", "Rule", "kind_of"]

BURST_BYTES = 16 * 1024           # token bucket depth: one MTU-ish burst
DEFAULT_REORDER_MS = 10.0         # hold-back floor when `reorder_ms` is 0
JITTER_DISTS = ("normal", "uniform", "exponential")
RULE_ACTIONS = ("drop", "close-before", "close-after")


# ---------------------------------------------------------------- validation helpers


def _number(key: str, v, lo: float, hi: float = math.inf, *, hi_open: bool = False) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or v < lo or v > hi or (hi_open and v == hi):
        upper = "inf)" if hi == math.inf else (f"{hi:g})" if hi_open else f"{hi:g}]")
        raise ValueError(f"{key}: expected a number in [{lo:g}, {upper}, got {v!r}")
    return float(v)


def _count(key: str, v) -> int:
    if type(v) is not int or v < 0:
        raise ValueError(f"{key}: expected an int >= 0, got {v!r}")
    return v


def _kind(key: str, v) -> str:
    if type(v) is not str or not v:
        raise ValueError(f"{key}: expected a non-empty message kind, got {v!r}")
    return v


def _items(key: str, v) -> tuple:
    if type(v) not in (list, tuple):
        raise ValueError(f"{key}: expected a list, got {v!r}")
    return tuple(v)


def _check_rule(at: str, kind, action, after, times) -> None:
    _kind(f"{at}.kind", kind)
    if action not in RULE_ACTIONS:
        raise ValueError(f"{at}.action: expected one of {', '.join(RULE_ACTIONS)}, got {action!r}")
    _count(f"{at}.after", after)
    _count(f"{at}.times", times)


# ---------------------------------------------------------------- the shape


@dataclass(frozen=True, slots=True)
class Rule:
    """A dev-disconnect rule: act on `kind` from its (after+1)th occurrence on, for
    `times` occurrences (0 = every one from then on)."""

    kind: str
    action: str  # "drop" | "close-before" | "close-after"
    after: int = 0
    times: int = 0

    def __post_init__(self) -> None:
        _check_rule("rule", self.kind, self.action, self.after, self.times)

    @classmethod
    def from_params(cls, params, at: str = "rule") -> "Rule":
        """A rule from a table `{kind, action, after?, times?}`; errors name `at.key`."""
        if not isinstance(params, Mapping):
            raise ValueError(f"{at}: expected a table {{kind, action, after?, times?}}, got {params!r}")
        for key in params:
            if key not in _RULE_KEYS:
                raise ValueError(f"{at}.{key}: unknown key (expected one of: {', '.join(_RULE_KEYS)})")
        for key in ("kind", "action"):
            if key not in params:
                raise ValueError(f"{at}.{key}: missing")
        _check_rule(at, params["kind"], params["action"], params.get("after", 0), params.get("times", 0))
        return cls(**params)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "action": self.action}
        if self.after:
            d["after"] = self.after
        if self.times:
            d["times"] = self.times
        return d


@dataclass(frozen=True, slots=True)
class LinkShape:
    """What a `link` fault does to one direction of a link (SPEC §5).  The defaults do
    nothing; `is_identity` says so.  Constructing one validates and normalises it."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_dist: str = "normal"      # "normal" | "uniform" | "exponential" (module doc)
    loss: float = 0.0                # mean fraction of messages dropped, 0..1
    loss_correlation: float = 0.0    # 0..<1: lag-1 correlation of losses (burstiness)
    duplicate: float = 0.0           # probability a message is sent twice
    reorder: float = 0.0             # probability a message is held back `reorder_ms`
    reorder_ms: float = 0.0          # 0 = max(2 x latency_ms, 10)
    bandwidth_kbps: float = 0.0      # 0 = unlimited
    blackhole: bool = False
    drop_types: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        put = object.__setattr__
        for key in ("latency_ms", "jitter_ms", "reorder_ms", "bandwidth_kbps"):
            put(self, key, _number(key, getattr(self, key), 0.0))
        for key in ("loss", "duplicate", "reorder"):
            put(self, key, _number(key, getattr(self, key), 0.0, 1.0))
        put(self, "loss_correlation", _number("loss_correlation", self.loss_correlation, 0.0, 1.0, hi_open=True))
        if self.jitter_dist not in JITTER_DISTS:
            raise ValueError(f"jitter_dist: expected one of {', '.join(JITTER_DISTS)}, got {self.jitter_dist!r}")
        if type(self.blackhole) is not bool:
            raise ValueError(f"blackhole: expected true or false, got {self.blackhole!r}")
        put(self, "drop_types", tuple(_kind(f"drop_types[{i}]", k)
                                      for i, k in enumerate(_items("drop_types", self.drop_types))))
        rules = []
        for i, r in enumerate(_items("rules", self.rules)):
            if not isinstance(r, Rule):
                r = Rule.from_params(r, f"rules[{i}]")
            rules.append(r)
        put(self, "rules", tuple(rules))

    @classmethod
    def from_params(cls, params) -> "LinkShape":
        """Validate a `link` fault's shaping parameters strictly: an unknown key, a wrong
        type or an out-of-range value raises ValueError naming the key.  Ints are accepted
        for floats; lists for tuples; rules as tables `{kind, action, after?, times?}`."""
        if not isinstance(params, Mapping):
            raise ValueError(f"link: expected a table of link parameters, got {params!r}")
        for key in params:
            if key not in SHAPE_KEYS:
                raise ValueError(f"{key}: unknown link parameter (expected one of: {', '.join(SHAPE_KEYS)})")
        return cls(**params)

    def to_dict(self) -> dict:
        """The parameters that differ from the defaults (for `fault.applied` logs);
        `from_params(shape.to_dict()) == shape`."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                if f.name == "rules":
                    v = [r.to_dict() for r in v]
                elif f.name == "drop_types":
                    v = list(v)
                out[f.name] = v
        return out

    @property
    def is_identity(self) -> bool:
        """True when the shape changes nothing (every message leaves at once, once)."""
        return not (self.latency_ms or self.jitter_ms or self.loss or self.duplicate or self.reorder
                    or self.bandwidth_kbps or self.blackhole or self.drop_types or self.rules)


SHAPE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(LinkShape))
_RULE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Rule))


# ---------------------------------------------------------------- the conditioner


class Decision(NamedTuple):
    """`sends`: absolute times (>= now, ascending) at which copies leave; () = not sent.
    `close`: None, "before" (close instead of sending; sends is empty) or "after"
    (close once the last copy has left, or at once if there is none)."""

    sends: tuple[float, ...]
    close: str | None = None


_DROP = Decision(())
_CLOSE_BEFORE = Decision((), "before")


class Conditioner:
    """Decides the fate of each outbound message on one direction of one link (sans-IO).

    `stats`: sent (messages that left at least once), dropped (messages that did not
    leave, for any reason, close-before included), duplicated, reordered (copies held
    back), closed (close decisions)."""

    def __init__(self, shape: LinkShape, rng: random.Random, fifo: bool = True):
        """`fifo`: jitter delays a message but never lets it overtake an earlier one (our
        links are streams, like TCP: head-of-line blocking); only `reorder` does."""
        self.shape, self.rng, self.fifo = shape, rng, fifo
        self._last = -math.inf  # when the last in-order message leaves
        self.stats = {"sent": 0, "dropped": 0, "duplicated": 0, "reordered": 0, "closed": 0}
        self._identity = shape.is_identity
        self._drop_types = frozenset(shape.drop_types)
        self._rules: dict[str, tuple[Rule, ...]] = {}
        for r in shape.rules:
            self._rules[r.kind] = self._rules.get(r.kind, ()) + (r,)
        self.counts = dict.fromkeys(self._rules, 0)  # occurrences of each rule kind so far
        self._latency = shape.latency_ms / 1000
        self._jitter = shape.jitter_ms / 1000
        self._reorder_s = (shape.reorder_ms or max(2 * shape.latency_ms, DEFAULT_REORDER_MS)) / 1000
        self._rate = shape.bandwidth_kbps * 125.0  # bytes per second
        self._burst_s = BURST_BYTES / self._rate if self._rate else 0.0
        self._tat = -math.inf  # token bucket: when the link would finish what it was given
        # Loss: Gilbert–Elliott with loss 1 in Bad and 0 in Good.  P(G->B) = p(1-c) and
        # P(B->G) = (1-p)(1-c) keep the stationary P(Bad) = p for every correlation c, and
        # give lag-1 correlation c and mean burst length 1 / ((1-p)(1-c)).  At c = 0 it is
        # independent Bernoulli(p).  (netem's "correlation" mixes uniforms and lowers the
        # mean loss instead, so we do not copy it.)  The chain starts stationary.
        p, c = shape.loss, shape.loss_correlation
        self._p_gb, self._p_bg = p * (1 - c), (1 - p) * (1 - c)
        self._bad = p > 0 and rng.random() < p

    @property
    def needs_kind(self) -> bool:
        """Whether `decide` looks at the kind (the caller may pass "" and skip `kind_of`)."""
        return bool(self._rules or self._drop_types)

    def decide(self, kind: str, size: int, now: float) -> Decision:
        stats = self.stats
        if self._identity:
            stats["sent"] += 1
            return Decision((now,))
        shape = self.shape
        action = None
        rules = self._rules.get(kind)
        if rules is not None:
            n = self.counts[kind] = self.counts[kind] + 1
            for r in rules:
                if n > r.after and (not r.times or n <= r.after + r.times):
                    action = r.action
                    break
        if shape.blackhole or kind in self._drop_types or action == "drop":
            stats["dropped"] += 1
            return _DROP
        if action == "close-before":
            stats["dropped"] += 1
            stats["closed"] += 1
            return _CLOSE_BEFORE
        close = None
        if action == "close-after":
            close = "after"
            stats["closed"] += 1
        if shape.loss and self._lose():
            stats["dropped"] += 1
            return Decision((), close)
        stats["sent"] += 1
        t = self._leave(size, now)
        if shape.duplicate and self.rng.random() < shape.duplicate:
            stats["duplicated"] += 1
            t2 = self._leave(size, now)
            return Decision((t, t2) if t <= t2 else (t2, t), close)
        return Decision((t,), close)

    def _lose(self) -> bool:
        if self._bad:
            self._bad = self.rng.random() >= self._p_bg
        else:
            self._bad = self.rng.random() < self._p_gb
        return self._bad

    def _leave(self, size: int, now: float) -> float:
        t = now
        if self._rate:
            self._tat = tat = max(self._tat, now) + size / self._rate
            t = max(now, tat - self._burst_s)
        delay = self._latency
        if self._jitter:
            delay = self._jittered()
        if self.shape.reorder and self.rng.random() < self.shape.reorder:
            delay += self._reorder_s
            self.stats["reordered"] += 1
            return t + delay
        if self.fifo:
            self._last = max(t + delay, self._last)
            return self._last
        return t + delay

    def _jittered(self) -> float:
        rng, lat, j = self.rng, self._latency, self._jitter
        dist = self.shape.jitter_dist
        if dist == "normal":
            while True:  # accepts with probability >= 1/2 since lat >= 0
                d = rng.gauss(lat, j)
                if d >= 0:
                    return d
        if dist == "uniform":
            return max(0.0, lat + rng.uniform(-j, j))
        return lat + rng.expovariate(1 / j)


# ---------------------------------------------------------------- peeking at a body


def kind_of(body: bytes) -> str:
    """The kind of an encoded body `[kind, payload]` (msgpack fixarray(2), then a fixstr or
    str8), read without unpacking the payload; "" if it cannot tell."""
    if len(body) < 2 or body[0] != 0x92:
        return ""
    b = body[1]
    if 0xA0 <= b <= 0xBF:
        start, end = 2, 2 + (b & 0x1F)
    elif b == 0xD9 and len(body) > 2:
        start, end = 3, 3 + body[2]
    else:
        return ""
    if end > len(body):
        return ""
    try:
        return body[start:end].decode()
    except UnicodeDecodeError:
        return ""
