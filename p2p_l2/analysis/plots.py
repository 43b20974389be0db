# Every plot is two steps: polars reduces the run's events to a few thousand numbers
# (binned rates, sampled CDFs, per-node marks), then matplotlib draws those.  Nothing
# hands matplotlib one artist per raw event, so a 1,000,000-event run plots in seconds.
# matplotlib is imported inside functions only (Agg backend): node processes import the
# analysis package's siblings, never a GUI toolkit.  Every plot with a time axis shades
# the run's fault windows, numbered F1, F2, ... as in the report's fault table.
"""PNG plots of a run: throughput, payment latency, block propagation, a node timeline."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from p2p_l2 import events as ev

FAULT_GID = "fault-window"  # set on every fault span, so tests (and users) can find them
FAULT_COLORS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22")
CDF_POINTS = 2000  # a CDF is drawn through at most this many sampled points
NICE_BINS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
MAX_BINS = 240

# timeline marks: event -> (legend label, marker, colour); later ones are drawn on top
TIMELINE_MARKS: dict[str, tuple[str, str, str]] = {
    ev.BLOCK_MINED: ("block mined", "|", "#9a9a9a"),
    ev.CHAIN_REORG: ("reorg", "x", "#000000"),
    ev.CHANNEL_OPENED: ("channel opened", "^", "#2ca02c"),
    ev.CHANNEL_CLOSING: ("channel closing", "v", "#ff7f0e"),
    ev.CHANNEL_SETTLED: ("channel settled", "s", "#1f77b4"),
    ev.CHANNEL_PENALIZED: ("channel penalized", "X", "#d62728"),
    ev.PLASMA_EXIT_STARTED: ("exit started", "<", "#17becf"),
    ev.PLASMA_EXIT_CHALLENGED: ("exit challenged", "X", "#9467bd"),
    ev.PLASMA_EXIT_FINALIZED: ("exit finalized", ">", "#1f77b4"),
    ev.WATCHER_ALERT: ("watcher alert", "*", "#d62728"),
    ev.PEER_BANNED: ("peer banned", "D", "#8c564b"),
    ev.NODE_ERROR: ("node error", "P", "#d62728"),
    ev.FAULT_APPLIED: ("fault applied", "o", "#d62728"),
    ev.FAULT_CLEARED: ("fault cleared", "o", "#2ca02c"),
    ev.PROCESS_KILLED: ("killed", "$\u2620$", "#000000"),
    ev.PROCESS_PAUSED: ("paused", "$\u23f8$", "#000000"),
    ev.PROCESS_RESUMED: ("resumed", "$\u25b6$", "#000000"),
}
_DOWN_START = {ev.PROCESS_KILLED: "down", ev.PROCESS_PAUSED: "paused"}
_DOWN_END = (ev.PROCESS_STARTED, ev.PROCESS_RESUMED)


def make_plots(run: Any, out_dir: str | Path) -> list[Path]:
    """Write every plot the run has data for as `out_dir/NAME.png`; returns their paths."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in PLOTS.items():
        fig = draw(run)
        if fig is None:
            continue
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


# --- data: polars only --------------------------------------------------------------------

def run_start(run: Any) -> float:
    """The first moment to plot: 0 (the cluster up), or earlier if nodes logged before it."""
    starts = [_min_t(run.events), _min_t(getattr(run, "launcher", None)), 0.0]
    return min(s for s in starts if s is not None)


def run_end(run: Any) -> float:
    """The last moment of the run, in `t` seconds (at least the timeline's duration)."""
    ends = [_max_t(run.events), _max_t(getattr(run, "launcher", None))]
    ends += [w.end if w.end is not None else w.start for w in run.fault_windows]
    timeline = getattr(run, "timeline", None) or {}
    if isinstance(timeline.get("duration"), (int, float)):
        ends.append(float(timeline["duration"]))
    return max([e for e in ends if e is not None], default=1.0) or 1.0


def time_bins(run: Any) -> tuple[float, float, float]:
    """(start, end, bin width) of the run's time axis."""
    start, end = run_start(run), run_end(run)
    return start, end, bin_width(end - start)


def bin_width(duration: float) -> float:
    """1 s bins, widened to a round number of seconds so a plot has at most `MAX_BINS`."""
    for width in NICE_BINS:
        if duration / width <= MAX_BINS:
            return float(width)
    return float(np.ceil(duration / MAX_BINS))


def rate_series(run: Any, event: str, weight: str | None = None,
                width: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(bin starts, per-second rate) of `event`, each counted once or as its `weight` field.

    None when the run has no such event.  Empty bins are zeros, not gaps.
    """
    df = _of(run.events, event)
    if df.is_empty():
        return None
    start, end, auto = time_bins(run)
    amount = pl.col(weight) if weight and weight in df.columns else pl.lit(1)
    frame = df.select("t", amount.cast(pl.Float64, strict=False).fill_null(0).alias("n"))
    return _rate_of_frame(frame, "n", start, end, width or auto)


def l1_blocks(run: Any) -> pl.DataFrame:
    """One row per L1 block: `block`, `t` (mined, or first accepted), `txs`, `miner`."""
    mined = _of(run.events, ev.BLOCK_MINED)
    if not mined.is_empty() and "block" in mined.columns:
        cols = [pl.col("block"), pl.col("t"), _num(mined, "txs"), pl.col("node").alias("miner")]
        return mined.select(cols).unique("block", keep="first")
    acc = _of(run.events, ev.BLOCK_ACCEPTED)
    if acc.is_empty() or "block" not in acc.columns:
        return pl.DataFrame(schema={"block": pl.String, "t": pl.Float64, "txs": pl.Float64,
                                    "miner": pl.String})
    miner = pl.col("miner") if "miner" in acc.columns else pl.lit(None, pl.String).alias("miner")
    return (acc.sort("t").select(pl.col("block"), pl.col("t"), _num(acc, "txs"), miner)
            .unique("block", keep="first"))


def propagation_delays(run: Any) -> pl.DataFrame:
    """Block propagation: one row per (block, receiving node) with `delay` seconds from
    the block's mining to its acceptance there; the miner's own acceptance is left out."""
    blocks = l1_blocks(run).select("block", pl.col("t").alias("t0"), "miner")
    acc = _of(run.events, ev.BLOCK_ACCEPTED)
    if blocks.is_empty() or acc.is_empty() or "block" not in acc.columns:
        return pl.DataFrame(schema={"block": pl.String, "node": pl.String, "t0": pl.Float64,
                                    "delay": pl.Float64})
    return (acc.select("block", "node", "t").join(blocks, on="block", how="inner")
            .filter(pl.col("node") != pl.col("miner").fill_null(""))
            .select("block", "node", "t0", (pl.col("t") - pl.col("t0")).alias("delay")))


def cdf(values: pl.Series | np.ndarray, points: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, fraction ≤ x) through at most `points` order statistics of `values`."""
    x = np.sort(np.asarray(values, dtype=float))
    x = x[np.isfinite(x)]
    if len(x) > points:
        x = x[np.linspace(0, len(x) - 1, points).round().astype(int)]
        y = np.linspace(0, 1, len(x))
    else:
        y = np.arange(1, len(x) + 1) / max(len(x), 1)
    return x, y


def quantiles_over_time(df: pl.DataFrame, value: str, start: float, width: float,
                        qs: Iterable[float] = (0.5, 0.9, 0.99)) -> pl.DataFrame:
    """Per-bin quantiles of `value` (columns `bin_t`, `q50`, `q90`, `q99`, `n`); bins of
    `width` seconds from `start`."""
    qs = tuple(qs)
    return (df.select(((pl.col("t") - start) // width * width + start).alias("bin_t"),
                      pl.col(value))
            .group_by("bin_t")
            .agg([pl.col(value).quantile(q, "linear").alias(f"q{round(q * 100)}") for q in qs]
                 + [pl.len().alias("n")])
            .sort("bin_t"))


def timeline_marks(run: Any) -> pl.DataFrame:
    """Notable events for the timeline: `node`, `t`, `event` from the nodes and the launcher."""
    frames = [run.events]
    launcher = getattr(run, "launcher", None)
    if launcher is not None and not launcher.is_empty() and "t" in launcher.columns:
        frames.append(launcher)
    wanted = list(TIMELINE_MARKS)
    parts = [f.filter(pl.col("event").is_in(wanted)).select("node", "t", "event")
             for f in frames if {"node", "t", "event"} <= set(f.columns)]
    return pl.concat(parts) if parts else pl.DataFrame(
        schema={"node": pl.String, "t": pl.Float64, "event": pl.String})


def down_spans(run: Any, end: float) -> list[tuple[str, float, float, str]]:
    """(node, start, stop, 'down' | 'paused') from the launcher's kill/pause/start/resume."""
    launcher = getattr(run, "launcher", None)
    if launcher is None or launcher.is_empty() or "t" not in launcher.columns:
        return []
    rows = (launcher.filter(pl.col("event").is_in([*_DOWN_START, *_DOWN_END]))
            .sort("t").select("node", "t", "event").iter_rows())
    open_at: dict[str, tuple[float, str]] = {}
    spans = []
    for node, t, event in rows:
        if event in _DOWN_START and node not in open_at:
            open_at[node] = (t, _DOWN_START[event])
        elif event in _DOWN_END and node in open_at:
            start, kind = open_at.pop(node)
            spans.append((node, start, t, kind))
    spans += [(node, start, end, kind) for node, (start, kind) in open_at.items()]
    return spans


def node_order(run: Any) -> list[str]:
    """Nodes in config order when the config lists them, else by name."""
    seen = set(run.events["node"].unique().to_list()) if "node" in run.events.columns else set()
    launcher = getattr(run, "launcher", None)
    if launcher is not None and "node" in launcher.columns:
        seen |= set(launcher["node"].unique().to_list())
    seen.discard("launcher")
    seen.discard(None)
    nodes = getattr(getattr(run, "config", None), "nodes", None) or ()
    ordered = [n.name for n in nodes if getattr(n, "name", None) in seen]
    return ordered + sorted(seen - set(ordered))


# --- figures --------------------------------------------------------------------------------

def throughput_figure(run: Any) -> Any | None:
    """L1 tx/s, L2 payments/s (and failures/s) and plasma tx/s over time, one panel each."""
    start, end, width = time_bins(run)
    blocks = l1_blocks(run)
    panels = []
    if not blocks.is_empty():
        bins = _rate_of_frame(blocks, "txs", start, end, width)
        panels.append(("L1 tx/s", [("txs in blocks", bins, "-")]))
    ok = rate_series(run, ev.PAYMENT_SUCCEEDED, width=width)
    failed = rate_series(run, ev.PAYMENT_FAILED, width=width)
    if ok or failed:
        lines = [("succeeded", ok, "-")] if ok else []
        lines += [("failed", failed, "--")] if failed else []
        panels.append(("L2 payments/s", lines))
    plasma = rate_series(run, ev.PLASMA_BLOCK_MADE, "txs", width=width)
    if plasma:
        panels.append(("plasma tx/s", [("txs in child blocks", plasma, "-")]))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                             figsize=(10, 1.2 + 2.0 * len(panels)))
    for i, (ax, (ylabel, lines)) in enumerate(zip(axes[:, 0], panels)):
        for label, (x, y), style in lines:
            ax.plot(x, y, style, drawstyle="steps-post", lw=1.2, label=label)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(loc="upper right", fontsize=8)
        shade_faults(ax, run.fault_windows, end, labels=i == 0)
    axes[-1, 0].set_xlim(start, end)
    axes[-1, 0].set_xlabel(f"time since the cluster was up (s), {width:g}-s bins")
    fig.suptitle("Throughput per layer")
    fig.tight_layout()
    return fig


def latency_figure(run: Any) -> Any | None:
    """Payment latency: CDF with p50/p90/p99 marked, and the quantiles over time."""
    ok = _of(run.events, ev.PAYMENT_SUCCEEDED)
    if ok.is_empty() or "latency" not in ok.columns:
        return None
    df = ok.select("t", (pl.col("latency").cast(pl.Float64) * 1000).alias("ms")).drop_nulls()
    if df.is_empty():
        return None
    start, end, width = time_bins(run)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(1, 1.6))
    x, y = cdf(df["ms"])
    left.plot(x, y, lw=1.5)
    for q, style in ((0.5, ":"), (0.9, "--"), (0.99, "-.")):
        v = df["ms"].quantile(q, "linear")
        left.axvline(v, color="grey", ls=style, lw=1)
        left.text(v, 0.02 + 0.1 * (q > 0.5) + 0.1 * (q > 0.9), f" p{round(q * 100)}={v:.3g}",
                  fontsize=8)
    left.set_xscale("log" if x[-1] > 20 * max(x[0], 1e-3) else "linear")
    left.set(xlabel="payment latency (ms)", ylabel="fraction of payments",
             title=f"Latency CDF ({len(df)} succeeded)", ylim=(0, 1.01))
    left.grid(alpha=0.3)
    q = quantiles_over_time(df, "ms", start, width)
    for col, style in (("q50", "-"), ("q90", "--"), ("q99", ":")):
        right.plot(*_break_gaps(q["bin_t"].to_numpy(), q[col].to_numpy(), width), style,
                   marker=".", ms=3, lw=1.2, label=f"p{col[1:]}")
    right.set(xlabel=f"time since the cluster was up (s), {width:g}-s bins",
              ylabel="latency (ms)", title="Latency quantiles over time", xlim=(start, end))
    right.set_yscale("log" if q["q99"].max() > 20 * max(q["q50"].min() or 1e-3, 1e-3) else "linear")
    right.grid(alpha=0.3)
    right.legend(loc="upper right", fontsize=8)
    shade_faults(right, run.fault_windows, end)
    fig.tight_layout()
    return fig


def propagation_figure(run: Any) -> Any | None:
    """Block propagation (SimBlock-style): CDF of delay per receiving node and per block to
    50%/90%/all of the nodes that got it, and each block's delay to 90% over time."""
    d = propagation_delays(run)
    if d.is_empty():
        return None
    per_block = (d.group_by("block")
                 .agg(pl.col("t0").first(),
                      (pl.col("delay").quantile(0.5, "higher") * 1000).alias("p50"),
                      (pl.col("delay").quantile(0.9, "higher") * 1000).alias("p90"),
                      (pl.col("delay").max() * 1000).alias("all"))
                 .sort("t0"))
    start, end = run_start(run), run_end(run)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(1, 1.6))
    ms = d["delay"] * 1000
    for label, values, style in (("each (block, node)", ms, "-"),
                                 ("block to 50% of nodes", per_block["p50"], "--"),
                                 ("block to 90% of nodes", per_block["p90"], "-."),
                                 ("block to all nodes", per_block["all"], ":")):
        x, y = cdf(values)
        left.plot(np.maximum(x, 1e-3), y, style, lw=1.4, label=label)
    left.set_xscale("log")
    left.set(xlabel="delay after mining (ms)", ylabel="fraction",
             title=f"Propagation CDF ({per_block.height} blocks)", ylim=(0, 1.01))
    left.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    right.scatter(per_block["t0"].to_numpy(), np.maximum(per_block["p90"].to_numpy(), 1e-3),
                  s=6, label="to 90% of nodes")
    right.scatter(per_block["t0"].to_numpy(), np.maximum(per_block["all"].to_numpy(), 1e-3),
                  s=6, marker="x", alpha=0.6, label="to all nodes")
    right.set_yscale("log")
    right.set(xlabel="block mined at (s since the cluster was up)", ylabel="delay (ms)",
              title="Propagation delay per block", xlim=(start, end))
    right.grid(alpha=0.3)
    right.legend(loc="upper right", fontsize=8)
    shade_faults(right, run.fault_windows, end)
    fig.tight_layout()
    return fig


def timeline_figure(run: Any) -> Any | None:
    """Jepsen-style timeline: a row per node with its notable events and down spans, fault
    windows across all rows, and below it the gossip and rejected-message rates."""
    nodes = node_order(run)
    if not nodes:
        return None
    start, end, width = time_bins(run)
    marks = timeline_marks(run)
    spans = down_spans(run, end)
    row = {n: i for i, n in enumerate(nodes)}
    gossip = rate_series(run, ev.GOSSIP_DELIVERED, width=width)
    rejected = rate_series(run, ev.MSG_REJECTED, width=width)
    plt = _pyplot()
    has_msgs = bool(gossip or rejected)
    fig, axes = plt.subplots(2 if has_msgs else 1, 1, sharex=True, squeeze=False,
                             figsize=(12, min(1.8 + (0.38 if len(nodes) <= 16 else 0.2)
                                              * len(nodes), 30) + 2.0 * has_msgs),
                             height_ratios=(max(len(nodes), 3), 3)[:1 + has_msgs])
    ax = axes[0, 0]
    for kind, colour in (("down", "#444444"), ("paused", "#aaaaaa")):
        chosen = [(row[n], a, b) for n, a, b, k in spans if k == kind and n in row]
        if chosen:
            for y, a, b in chosen:
                ax.broken_barh([(a, b - a)], (y - 0.3, 0.6), color=colour, alpha=0.35)
            ax.plot([], [], lw=6, color=colour, alpha=0.35, label=f"node {kind}")
    present = marks.group_by("event").len().sort("len", descending=True)["event"].to_list()
    for event in [e for e in TIMELINE_MARKS if e in present]:
        label, marker, colour = TIMELINE_MARKS[event]
        m = marks.filter((pl.col("event") == event) & pl.col("node").is_in(nodes))
        ys = np.array([row[n] for n in m["node"].to_list()], dtype=float)
        if event == ev.BLOCK_MINED:
            ys = ys + 0.25  # blocks as a tick strip above the row, out of the other marks' way
        ax.scatter(m["t"].to_numpy(), ys, marker=marker, color=colour, s=40, lw=1,
                   label=label, zorder=3, rasterized=len(m) > 5000)
    ax.set_yticks(range(len(nodes)), nodes)
    ax.set_ylim(len(nodes) - 0.5, -0.9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False)
    ax.set_title("Timeline: notable events per node, fault windows shaded")
    shade_faults(ax, run.fault_windows, end)
    if has_msgs:
        low = axes[1, 0]
        for label, series, style in (("gossip delivered/s", gossip, "-"),
                                     ("messages rejected/s", rejected, "--")):
            if series:
                low.plot(*series, style, drawstyle="steps-post", lw=1.1, label=label)
        low.set_ylabel("msgs/s")
        low.set_ylim(bottom=0)
        low.grid(alpha=0.3)
        low.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False)
        shade_faults(low, run.fault_windows, end, labels=False)
    axes[-1, 0].set_xlim(start, end)
    axes[-1, 0].set_xlabel("time since the cluster was up (s)")
    fig.tight_layout()
    return fig


PLOTS: dict[str, Callable[[Any], Any]] = {
    "throughput": throughput_figure,
    "latency": latency_figure,
    "propagation": propagation_figure,
    "timeline": timeline_figure,
}


def fault_label(i: int, window: Any, limit: int = 34) -> str:
    """`F<i+1> <label>`, cut to `limit` characters: the name plots and the report share."""
    text = f"F{i + 1} {window.label}"
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def shade_faults(ax: Any, windows: Iterable[Any], end: float, labels: bool = True) -> None:
    """Shade each fault window on `ax` (an open window runs to `end`) and label it."""
    for i, w in enumerate(windows):
        stop = w.end if w.end is not None else end
        colour = FAULT_COLORS[i % len(FAULT_COLORS)]
        span = ax.axvspan(w.start, max(stop, w.start + end / 500), color=colour, alpha=0.15, lw=0)
        span.set_gid(FAULT_GID)
        if labels:
            ax.text(w.start, 0.98 - 0.09 * (i % 4), " " + fault_label(i, w),
                    transform=ax.get_xaxis_transform(), fontsize=7, va="top", color=colour,
                    clip_on=True, zorder=5,
                    bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 0.5})


# --- helpers --------------------------------------------------------------------------------

def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _of(df: pl.DataFrame | None, event: str) -> pl.DataFrame:
    if df is None or df.is_empty() or "event" not in df.columns:
        return pl.DataFrame(schema={"t": pl.Float64, "node": pl.String, "event": pl.String})
    return df.filter(pl.col("event") == event)


def _num(df: pl.DataFrame, col: str) -> pl.Expr:
    if col in df.columns:
        return pl.col(col).cast(pl.Float64, strict=False).fill_null(0).alias(col)
    return pl.lit(0.0).alias(col)


def _max_t(df: pl.DataFrame | None) -> float | None:
    if df is None or df.is_empty() or "t" not in df.columns:
        return None
    return df["t"].max()


def _min_t(df: pl.DataFrame | None) -> float | None:
    if df is None or df.is_empty() or "t" not in df.columns:
        return None
    return df["t"].min()


def _break_gaps(t: np.ndarray, y: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """A NaN between bins more than one bin apart, so a line is not drawn across a gap."""
    gaps = np.flatnonzero(np.diff(t) > 1.5 * width) + 1
    return np.insert(t.astype(float), gaps, np.nan), np.insert(y.astype(float), gaps, np.nan)


def _rate_of_frame(df: pl.DataFrame, weight: str, start: float, end: float,
                   width: float) -> tuple[np.ndarray, np.ndarray]:
    """(bin starts, `weight` summed per bin / width): bins of `width` s from `start`."""
    agg = (df.select(((pl.col("t") - start) // width).cast(pl.Int64).clip(0).alias("bin"),
                     pl.col(weight).cast(pl.Float64))
           .group_by("bin").agg(pl.col(weight).sum()))
    rate = np.zeros(max(int(np.ceil((end - start) / width)) + 1, int(agg["bin"].max()) + 1))
    rate[agg["bin"].to_numpy()] = agg[weight].to_numpy() / width
    return start + np.arange(len(rate)) * width, rate
