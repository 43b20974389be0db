# Loading a run dir into one timeline (issue 7, SPEC §6).
#
# Speed: each node's events.jsonl goes through polars' multi-threaded NDJSON reader in one
# call, with the schema inferred over the whole file (a field may first appear late); nested
# values (`params`, `counts`, `roles`) become compact JSON text, so every node's frame
# concatenates with the others.  Slower paths run only for a file polars refuses: read the
# fields whose JSON type varies (`attempt`: an int in peer.dial_failed, a bool in
# channel.closing) as strings; drop torn lines (a SIGKILLed node that was restarted appends
# to its half-written last line); at last, walk the lines with orjson to keep the ones that
# parse and find every mixed field.  A truncated last line is always dropped.
#
# Time: `t` is seconds since the first `launcher.up` (the moment the cluster was ready, the
# zero of timeline.json), in true time: a node's events logged while a `clock-skew` fault
# was set carry its offset (the node logs `fault.applied` action=clock-skew offset_s after
# setting it and `fault.cleared` after resetting it; a restart resets it), so it is
# subtracted in file order.
"""`load(run_dir)`: every node's events and the launcher's in polars frames, with the
config, timeline, final L1 state and fault windows of the run."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from .. import events as ev

# Fields whose JSON type differs between events (read as strings when a file has both) and
# nested ones (kept as JSON text).
MIXED_FIELDS = ("attempt", "invalid", "params", "counts", "roles", "detail")
CORE = ("ts", "t", "node", "event", "level")


@dataclass(frozen=True)
class FaultWindow:
    """A fault in effect from `start` to `end` (seconds of `t`; None: to the end of the run)."""
    start: float
    end: float | None
    label: str


@dataclass(frozen=True)
class Run:
    """A loaded run dir.  `events` holds every node's events sorted by `t`; `launcher` the
    launcher's; `final` RUN/final_state.json; `timeline` RUN/timeline.json."""
    run_dir: Path
    events: pl.DataFrame
    launcher: pl.DataFrame
    config: Any  # p2p_l2.config.Config | None
    timeline: dict | None
    final: dict | None
    t0: float
    fault_windows: list[FaultWindow] = field(default_factory=list)
    info: dict | None = None  # RUN/cluster.json

    def of(self, *names: str) -> pl.DataFrame:
        """The events named `names` (e.g. `run.of(ev.BLOCK_MINED)`)."""
        return self.events.filter(pl.col("event").is_in(list(names)))

    @property
    def nodes(self) -> list[str]:
        if self.config is not None:
            return [n.name for n in self.config.nodes]
        return sorted(self.events["node"].unique().to_list()) if self.events.height else []

    @property
    def names(self) -> dict[str, str]:
        """Public key (hex) -> node name, from cluster.json (the final state names contract
        parties by key)."""
        nodes = (self.info or {}).get("nodes", {})
        return {v["pubkey"]: k for k, v in nodes.items() if v.get("pubkey")}


# -- reading one JSON-lines file ---------------------------------------------------------
def _complete(data: bytes) -> bytes:
    """Up to the last newline: a truncated last line (a killed node) is dropped."""
    return data[:data.rfind(b"\n") + 1]


def _as_json(df: pl.DataFrame) -> pl.DataFrame:
    """Nested columns (structs, lists) as compact JSON text, so every node's frame has the
    same flat types."""
    nested = [name for name, dtype in df.schema.items() if dtype.is_nested()]
    return df.with_columns(
        pl.when(pl.col(c).is_null()).then(pl.lit(None, pl.String))
        .otherwise(pl.struct(pl.col(c).alias("v")).struct.json_encode()
                   .str.slice(5).str.strip_suffix("}")).alias(c)  # {"v":...} -> ...
        for c in nested)


def _read(data: bytes, strings=()) -> pl.DataFrame:
    # the schema is inferred over the whole file (a field may first appear late); polars
    # refuses an override for a field the file lacks
    overrides = {name: pl.String for name in strings if b'"%s":' % name.encode() in data}
    return _as_json(pl.read_ndjson(io.BytesIO(data), infer_schema_length=None,
                                   schema_overrides=overrides or None))


def _whole_lines(data: bytes) -> bytes:
    """Without the lines a torn write left (a line with two starts, or no end)."""
    lines = pl.Series("line", data.decode("utf-8", "replace").split("\n"))
    ok = lines.filter((lines.str.count_matches('{"ts":', literal=True) <= 1)
                      & lines.str.starts_with("{") & lines.str.ends_with("}"))
    return ("\n".join(ok.to_list()) + "\n").encode() if ok.len() else b""


def _clean(data: bytes) -> tuple[bytes, set[str]]:
    """The lines that parse as JSON objects, and the fields whose JSON type varies."""
    good, kinds = [], {}
    for line in data.splitlines():
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        good.append(line)
        for k, v in obj.items():
            if v is not None:
                kind = "num" if type(v) in (int, float) else type(v).__name__
                kinds.setdefault(k, set()).add(kind)
    mixed = {k for k, s in kinds.items() if len(s) > 1}
    return b"\n".join(good) + b"\n" if good else b"", mixed


def read_jsonl(path: Path) -> pl.DataFrame:
    """One JSON-lines log as a frame: fields as columns, nested values as JSON text, lines
    that do not parse dropped.  The fast path is one polars read; the slower ones run only
    when it fails (mixed field types, torn lines)."""
    try:
        data = _complete(Path(path).read_bytes())
    except FileNotFoundError:
        return pl.DataFrame()
    if not data.strip():
        return pl.DataFrame()
    try:
        return _read(data)
    except pl.exceptions.PolarsError:
        pass
    try:
        return _read(data, MIXED_FIELDS)
    except pl.exceptions.PolarsError:
        pass
    try:
        return _read(_whole_lines(data), MIXED_FIELDS)
    except pl.exceptions.PolarsError:
        pass
    data, mixed = _clean(data)
    return _read(data, set(MIXED_FIELDS) | mixed) if data else pl.DataFrame()


# -- fault windows -----------------------------------------------------------------------
GROUP_S = 1.0  # link faults applied within this many seconds of each other are one fault


def _rows(df: pl.DataFrame, names: list[str], cols: list[str]) -> list[dict]:
    if df.is_empty():
        return []
    sub = df.filter(pl.col("event").is_in(names))
    return sub.select([_col(sub, c, sub.schema.get(c, pl.String)).alias(c)
                       for c in cols]).to_dicts()


def _is_partition(start: float, params: list[str], timeline: dict | None) -> bool:
    if any('"blackhole":true' in (p or "").replace(" ", "") for p in params):
        return True
    steps = (timeline or {}).get("steps", [])
    return any(s.get("what") == "fault" and str(s.get("step", "")).startswith("fault partition")
               and abs(float(s.get("at", -1e9)) - start) <= 2.0 for s in steps)


def _link_label(members: list[dict]) -> str:
    pairs = {(m["node"], m["peer"]) for m in members}
    ends = {frozenset(p) for p in pairs}
    if len(ends) == 1:
        a, b = sorted(next(iter(ends)))
        if (a, b) in pairs and (b, a) in pairs:
            return f"link {a}↔{b}"
        src, dst = next(iter(pairs))
        return f"link {src}→{dst}"
    return f"link faults ({len(ends)} links)"


def fault_windows(events: pl.DataFrame, launcher: pl.DataFrame,
                  timeline: dict | None = None) -> list[FaultWindow]:
    """The faults of a run as windows of `t`: kills and pauses from the launcher's log;
    link faults, clock skews and byzantine behaviours from the nodes' `fault.applied` /
    `fault.cleared` (a node restart ends its own).  The link faults of one application
    (both ends of a link, every cut link of a partition) make one window."""
    out: list[FaultWindow] = []
    opened: dict[tuple, float] = {}
    verbs = {ev.PROCESS_KILLED: ("kill", ev.PROCESS_STARTED),
             ev.PROCESS_PAUSED: ("pause", ev.PROCESS_RESUMED)}
    rows = _rows(launcher, [ev.PROCESS_KILLED, ev.PROCESS_STARTED, ev.PROCESS_PAUSED,
                            ev.PROCESS_RESUMED], ["t", "node", "event"])
    for r in rows:
        if r["event"] in verbs:
            opened.setdefault((verbs[r["event"]][0], r["node"]), r["t"])
        for verb, end in verbs.values():
            if r["event"] == end and (verb, r["node"]) in opened:
                start = opened.pop((verb, r["node"]))
                out.append(FaultWindow(start, r["t"], f"{verb} {r['node']}"))
    out += [FaultWindow(t, None, f"{verb} {node}") for (verb, node), t in opened.items()]

    links: list[dict] = []  # closed or open link-fault windows, one per (node, peer)
    open_links: dict[tuple, dict] = {}
    open_other: dict[tuple, tuple[float, str]] = {}
    cols = ["t", "node", "event", "action", "peer", "params", "behaviour", "offset_s"]
    for r in _rows(events, [ev.FAULT_APPLIED, ev.FAULT_CLEARED, ev.NODE_STARTED], cols):
        node, t, action = r["node"], r["t"], r["action"]
        if r["event"] == ev.NODE_STARTED:  # a restart forgets every fault set on the node
            for key in [k for k in open_links if k[0] == node]:
                open_links.pop(key)["end"] = t
            for key in [k for k in open_other if k[1] == node]:
                start, label = open_other.pop(key)
                out.append(FaultWindow(start, t, label))
            continue
        if action == "link":
            key = (node, r["peer"])
            if key in open_links:
                open_links.pop(key)["end"] = t
            if r["event"] == ev.FAULT_APPLIED:
                w = {"start": t, "end": None, "node": node, "peer": r["peer"],
                     "params": r["params"]}
                open_links[key] = w
                links.append(w)
            continue
        if action == "clock-skew":
            key = ("skew", node)
            label = f"clock-skew {node} {float(r['offset_s'] or 0):+g}s"
        elif action == "misbehave":
            key = ("misbehave", node, r["behaviour"])
            label = f"misbehave {node} {r['behaviour']}"
        else:
            continue
        if r["event"] == ev.FAULT_APPLIED and key in open_other and action == "misbehave":
            continue  # switched on twice: one window
        if key in open_other:
            start, old = open_other.pop(key)
            out.append(FaultWindow(start, t, old))
        if r["event"] == ev.FAULT_APPLIED:
            open_other[key] = (t, label)
    out += [FaultWindow(start, None, label) for start, label in open_other.values()]

    group: list[dict] = []
    for w in sorted(links, key=lambda w: w["start"]) + [None]:
        if group and (w is None or w["start"] - group[0]["start"] > GROUP_S):
            ends = [m["end"] for m in group]
            start = group[0]["start"]
            label = ("partition" if _is_partition(start, [m["params"] for m in group], timeline)
                     else _link_label(group))
            out.append(FaultWindow(start, None if None in ends else max(ends), label))
            group = []
        if w is not None:
            group.append(w)
    return sorted(out, key=lambda w: (w.start, w.label))


# -- the run -----------------------------------------------------------------------------------
def _col(df: pl.DataFrame, name: str, dtype=pl.String) -> pl.Expr:
    return pl.col(name).cast(dtype) if name in df.columns else pl.lit(None, dtype)


def _skew(df: pl.DataFrame) -> pl.Expr:
    """The clock offset in effect at each of one node's events (file order)."""
    if "offset_s" not in df.columns:
        return pl.lit(0.0)
    event, action = pl.col("event"), _col(df, "action")
    return (pl.when((event == ev.FAULT_APPLIED) & (action == "clock-skew"))
            .then(_col(df, "offset_s", pl.Float64))
            .when(((event == ev.FAULT_CLEARED) & (action == "clock-skew"))
                  | (event == ev.NODE_STARTED))
            .then(pl.lit(0.0))
            .otherwise(pl.lit(None, pl.Float64))
            .forward_fill().fill_null(0.0))


def _node_frame(path: Path) -> pl.DataFrame:
    df = read_jsonl(path)
    if df.is_empty() or "event" not in df.columns or "ts" not in df.columns:
        return pl.DataFrame()
    name = path.parent.name
    return df.with_columns(
        pl.col("ts").cast(pl.Float64),
        _col(df, "node").fill_null(name).alias("node"),
        _col(df, "level").fill_null("info").alias("level"),
        _skew(df).alias("_skew"),
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _order(df: pl.DataFrame) -> pl.DataFrame:
    front = [c for c in CORE if c in df.columns]
    return df.select(front + [c for c in df.columns if c not in front])


def load(run_dir: str | Path) -> Run:
    """Read RUN: every `nodes/*/events.jsonl` into one frame sorted by `t` (seconds since
    the cluster was up, skew-corrected), `launcher.jsonl`, the resolved config,
    timeline.json, final_state.json, cluster.json and the fault windows."""
    run_dir = Path(run_dir)
    frames = [f for f in (_node_frame(p) for p in sorted(run_dir.glob("nodes/*/events.jsonl")))
              if not f.is_empty()]
    events = (pl.concat(frames, how="diagonal_relaxed") if frames
              else pl.DataFrame(schema={"ts": pl.Float64, "node": pl.String, "event": pl.String,
                                        "level": pl.String, "_skew": pl.Float64}))
    launcher = read_jsonl(run_dir / "launcher.jsonl")
    if launcher.is_empty():
        launcher = pl.DataFrame(schema={"ts": pl.Float64, "node": pl.String,
                                        "event": pl.String, "level": pl.String})
    launcher = launcher.with_columns(pl.col("ts").cast(pl.Float64))
    ups = launcher.filter(pl.col("event") == ev.LAUNCHER_UP)["ts"]
    if ups.len():
        t0 = float(ups.min())
    else:
        firsts = [s.min() for s in (events["ts"], launcher["ts"]) if s.len()]
        t0 = float(min(firsts)) if firsts else 0.0
    events = _order(events.with_columns((pl.col("ts") - pl.col("_skew") - t0).alias("t"))
                    .drop("_skew").sort("t", maintain_order=True))
    launcher = _order(launcher.with_columns((pl.col("ts") - t0).alias("t"))
                      .sort("t", maintain_order=True))
    config = None
    if (run_dir / "topology.toml").exists():
        from ..config import load_config
        from ..errors import ConfigError
        try:
            config = load_config(run_dir / "topology.toml")
        except ConfigError:
            config = None
    timeline = _read_json(run_dir / "timeline.json")
    return Run(run_dir=run_dir, events=events, launcher=launcher, config=config,
               timeline=timeline, final=_read_json(run_dir / "final_state.json"), t0=t0,
               fault_windows=fault_windows(events, launcher, timeline),
               info=_read_json(run_dir / "cluster.json"))
