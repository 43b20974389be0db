# The report is one Markdown file and one HTML file that needs nothing else: plots inline as
# base64 PNGs, CSS inline, no script, so it can be mailed, attached to a CI run or opened
# from a laptop's disk.  Both are rendered from the same sections (verdicts first, as in
# Jepsen's checker output, then headline numbers, plots, faults, every metric with its
# meaning, and the config), so they never disagree.  Metric keys are flattened with dots
# (`l2.latency_s.p50`), the same keys `compare` lines up across runs.
"""`report.md`, `report.html`, the CLI summary, and side-by-side comparison of runs."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from p2p_l2.analysis import plots as plots_mod

VERDICT_WORD = {True: "PASS", False: "FAIL", None: "n/a"}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1280px;
 margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
 margin-top:1.8em} .meta{color:#666}
table{border-collapse:collapse;margin:.5em 0;font-size:13px} th,td{border:1px solid #ddd;
 padding:3px 8px;text-align:left;vertical-align:top} th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.pass td.v{background:#e3f5e1;color:#1b5e20;font-weight:600}
tr.fail td.v{background:#fde2e1;color:#b71c1c;font-weight:600}
tr.na td.v{background:#f1f1f1;color:#666}
tr.fail{outline:2px solid #e57373}
code{font-size:12px} pre{background:#f7f7f7;border:1px solid #e4e4e4;padding:.8em;
 overflow:auto;font-size:12px}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:13px} .banner{padding:.6em 1em;border-radius:4px;
 font-weight:600;display:inline-block} .banner.ok{background:#e3f5e1;color:#1b5e20}
.banner.bad{background:#fde2e1;color:#b71c1c} .banner.na{background:#f1f1f1;color:#555}
"""


# --- metrics as rows --------------------------------------------------------------------

def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (`{"l2.latency_s": {"p50": x}}` → `l2.latency_s.p50`)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def metric_doc(key: str, docs: Mapping[str, str]) -> str:
    """The meaning of a flattened key: its own doc, or its nearest documented parent's."""
    if key in docs:
        return docs[key]
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:cut])
        if parent in docs:
            return f"{docs[parent]} ({'.'.join(parts[cut:])})"
    return ""


def format_value(value: Any) -> str:
    """A metric value for a table: 4 significant digits, `n/a` for no data."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str, separators=(",", ":"))
        return text if len(text) <= 80 else text[:79] + "\u2026"
    return str(value)


# --- the CLI summary --------------------------------------------------------------------

def summary_lines(metrics: Mapping[str, Any], verdicts: Iterable[Any]) -> list[str]:
    """A few headline numbers per layer, then one line per invariant verdict."""
    m = flatten(metrics)
    lines = []
    reorgs = m.get("l1.reorg_depths")
    l1 = _join(_num(m, "l1.tx_per_s", "{} tx/s"),
               _num(m, "l1.block_interval_s.mean", "a block every {} s"),
               _triple(m, "l1.propagation_s", "propagation p50/p90/p99 {} ms", scale=1000),
               _num(m, "l1.forks", "{} forks"),
               f"{len(reorgs)} reorgs (deepest {m.get('l1.reorg_depth_max')})"
               if isinstance(reorgs, list) and reorgs else None)
    l2 = _join(_num(m, "l2.payments_per_s", "{} payments/s"),
               _pct(m, "l2.success_rate", "{} succeeded"),
               _triple(m, "l2.latency_s", "latency p50/p90/p99 {} ms", scale=1000),
               _top_reason(m),
               _num(m, "l2.disputes.penalties", "{} penalties") if m.get("l2.disputes.penalties")
               else None)
    exits = [m.get(f"plasma.exits.{k}") for k in ("started", "challenged", "finalized")]
    plasma = _join(_num(m, "plasma.tx_per_s", "{} tx/s"),
                   "exits started/challenged/finalized " + "/".join(format_value(x) for x in exits)
                   if any(x for x in exits) else None,
                   _num(m, "plasma.mass_exit.drain_s", "mass exit drained in {} s"))
    for label, text in (("L1", l1), ("L2", l2), ("plasma", plasma)):
        if text:
            lines.append(f"{label:<7} {text}")
    ratio = m.get("l2_l1_ratio")
    if isinstance(ratio, (int, float)):
        lines.append(f"{'L2/L1':<7} throughput ratio {format_value(ratio)}")
    for v in verdicts:
        lines.append(f"{VERDICT_WORD[v.ok]:<7} {v.name}: {v.evidence}")
    return lines


# --- the report ---------------------------------------------------------------------------

def write_report(run: Any, metrics: Mapping[str, Any], verdicts: list[Any], out_dir: str | Path,
                 plots: list[Path] | None = None,
                 docs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write `report.md` and a self-contained `report.html` into `out_dir`.

    `plots`: PNGs already made by `make_plots` (made here when None).  `docs`: metric
    meanings (the metrics module's `METRIC_DOCS` when None).  Returns
    `{"md": path, "html": path, "plots": [paths]}`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plots is None:
        plots = plots_mod.make_plots(run, out)
    if docs is None:
        from p2p_l2.analysis.metrics import METRIC_DOCS
        docs = METRIC_DOCS
    sections = _sections(run, metrics, list(verdicts), plots, docs)
    md, page = out / "report.md", out / "report.html"
    md.write_text(_markdown(sections, out), encoding="utf-8")
    page.write_text(_html(sections), encoding="utf-8")
    return {"md": md, "html": page, "plots": list(plots)}


def _sections(run: Any, metrics: Mapping[str, Any], verdicts: list[Any], plots: list[Path],
              docs: Mapping[str, str]) -> dict[str, Any]:
    end = plots_mod.run_end(run)
    timeline = getattr(run, "timeline", None) or {}
    config = getattr(run, "config", None)
    cluster = getattr(config, "cluster", None)
    name = getattr(cluster, "name", None) or Path(run.run_dir).name
    seed = timeline.get("seed", getattr(cluster, "seed", None))
    nodes = plots_mod.node_order(run)
    captions = {n: " ".join((f.__doc__ or "").split("\n\n")[0].split())
                for n, f in plots_mod.PLOTS.items()}
    faults = [(f"F{i + 1}", w.start, w.end, (w.end if w.end is not None else end) - w.start,
               w.label) for i, w in enumerate(run.fault_windows)]
    return {
        "title": f"p2p-l2 run {name}",
        "meta": [("run dir", str(run.run_dir)), ("seed", seed),
                 ("duration", f"{end:.1f} s"), ("nodes", f"{len(nodes)}: {', '.join(nodes)}"),
                 ("events", run.events.height)],
        "verdicts": [(v.name, v.ok, v.evidence) for v in verdicts],
        "summary": summary_lines(metrics, []),
        "plots": [(Path(p), captions.get(Path(p).stem, "")) for p in plots],
        "faults": faults,
        "schedule": [(s.get("at"), s.get("what"), s.get("step"))
                     for s in timeline.get("steps", ())],
        "metrics": [(k, v, metric_doc(k, docs)) for k, v in flatten(metrics).items()],
        "config": _config_text(run),
    }


def _config_text(run: Any) -> str:
    path = Path(run.run_dir) / "topology.toml"
    if path.exists():
        return path.read_text(encoding="utf-8")
    config = getattr(run, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        import tomli_w
        return tomli_w.dumps(config.to_dict())
    return "(no topology.toml in the run dir)"


def _banner(verdicts: list[tuple[str, bool | None, str]]) -> tuple[str, str]:
    """(CSS class, text) of the one-line verdict at the top of the report."""
    oks = [ok for _, ok, _ in verdicts]
    tally = f"({oks.count(True)} pass, {oks.count(False)} fail, {oks.count(None)} n/a)"
    if False in oks:
        return "bad", f"{oks.count(False)} invariant(s) FAILED {tally}"
    if True in oks:
        return "ok", f"every checked invariant holds {tally}"
    return "na", f"no invariant could be checked {tally}"


def _markdown(s: dict[str, Any], out: Path) -> str:
    lines = [f"# {s['title']}", ""]
    lines += [f"- **{k}**: {v if v is not None else 'n/a'}" for k, v in s["meta"]]
    lines += ["", f"**{_banner(s['verdicts'])[1]}**", "", "## Invariants", ""]
    lines += _md_table(["invariant", "verdict", "evidence"],
                       [(f"`{n}`", f"**{VERDICT_WORD[ok]}**", e) for n, ok, e in s["verdicts"]])
    lines += ["", "## Headline", "", "```", *s["summary"], "```", "", "## Plots", ""]
    for path, caption in s["plots"]:
        rel = path.name if path.parent.resolve() == out.resolve() else str(path)
        lines += [f"![{path.stem}]({rel})", "", f"*{caption}*", ""]
    lines += ["## Faults", ""]
    lines += _md_table(["window", "start (s)", "end (s)", "length (s)", "fault"],
                       [(f, _secs(a), _secs(b) if b is not None else "end of run", _secs(d), lab)
                        for f, a, b, d, lab in s["faults"]]) if s["faults"] else ["(none)"]
    if s["schedule"]:
        lines += ["", "Schedule (timeline.json, seconds after the cluster was up):", ""]
        lines += _md_table(["at (s)", "what", "step"],
                           [(_secs(a), w, f"`{st}`") for a, w, st in s["schedule"]])
    lines += ["", "## Metrics", ""]
    lines += _md_table(["metric", "value", "meaning"],
                       [(f"`{k}`", format_value(v), d) for k, v, d in s["metrics"]])
    lines += ["", "## Config", "", "```toml", s["config"].rstrip(), "```", ""]
    return "\n".join(lines)


def _html(s: dict[str, Any]) -> str:
    e = html.escape
    kind, text = _banner(s["verdicts"])
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>{e(s['title'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(s['title'])}</h1><p class=meta>"
             + " · ".join(f"<b>{e(k)}</b> {e(str(v if v is not None else 'n/a'))}"
                          for k, v in s["meta"]) + "</p>",
             f"<p class='banner {kind}'>{e(text)}</p>", "<h2>Invariants</h2>"]
    rows = [(f"<code>{e(n)}</code>", VERDICT_WORD[ok], e(ev), _row_class(ok))
            for n, ok, ev in s["verdicts"]]
    parts.append(_html_table(["invariant", "verdict", "evidence"], rows, verdict_col=1)
                 if rows else "<p>(no invariants checked)</p>")
    parts.append("<h2>Headline</h2><pre>" + e("\n".join(s["summary"]) or "(no data)") + "</pre>")
    parts.append("<h2>Plots</h2>")
    for path, caption in s["plots"]:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{e(path.stem)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("<h2>Faults</h2>")
    parts.append(_html_table(
        ["window", "start (s)", "end (s)", "length (s)", "fault"],
        [(e(f), _secs(a), _secs(b) if b is not None else "end of run", _secs(d),
          f"<code>{e(lab)}</code>", "") for f, a, b, d, lab in s["faults"]], num_cols=(1, 2, 3))
        if s["faults"] else "<p>(none)</p>")
    if s["schedule"]:
        parts.append("<p>Schedule (timeline.json, seconds after the cluster was up):</p>")
        parts.append(_html_table(["at (s)", "what", "step"],
                                 [(_secs(a), e(str(w)), f"<code>{e(str(st))}</code>", "")
                                  for a, w, st in s["schedule"]], num_cols=(0,)))
    parts.append("<h2>Metrics</h2>")
    parts.append(_html_table(["metric", "value", "meaning"],
                             [(f"<code>{e(k)}</code>", e(format_value(v)), e(d), "")
                              for k, v, d in s["metrics"]], num_cols=(1,)))
    parts.append(f"<h2>Config</h2><pre>{e(s['config'])}</pre></body></html>\n")
    return "\n".join(parts)


# --- compare ------------------------------------------------------------------------------

def compare(runs: list[tuple[str, Mapping[str, Any]]]) -> str:
    """A markdown table of runs' flattened metrics side by side; with two runs, a Δ column
    (second minus first, and the relative change) for numeric metrics."""
    flats = [(name, flatten(m)) for name, m in runs]
    keys: dict[str, None] = {}
    for _, f in flats:
        keys.update(dict.fromkeys(f))
    header = ["metric", *(name for name, _ in flats)]
    two = len(flats) == 2
    if two:
        header.append(f"\u0394 ({flats[1][0]} \u2212 {flats[0][0]})")
    rows = []
    for k in keys:
        values = [f.get(k) for _, f in flats]
        row = [f"`{k}`", *(format_value(v) for v in values)]
        if two:
            row.append(_delta(*values))
        rows.append(row)
    return "\n".join(_md_table(header, rows)) + "\n"


def write_compare(runs: list[tuple[str, Mapping[str, Any]]], out_dir: str | Path) -> Path:
    """Write `compare(runs)` to `out_dir/compare.md`; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "compare.md"
    names = ", ".join(name for name, _ in runs)
    path.write_text(f"# p2p-l2 compare: {names}\n\n{compare(runs)}", encoding="utf-8")
    return path


def _delta(a: Any, b: Any) -> str:
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return ""
    d = b - a
    if d == 0:
        return "0"
    rel = f" ({d / a:+.0%})" if a else ""
    return (f"{d:+d}" if isinstance(d, int) else f"{d:+.4g}") + rel


# --- helpers ------------------------------------------------------------------------------

def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _html_table(header: list[str], rows: list[tuple[str, ...]], verdict_col: int = -1,
                num_cols: tuple[int, ...] = ()) -> str:
    """`rows`: pre-escaped cells, the last item of each row its CSS class."""
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for *cells, cls in rows:
        tds = []
        for i, c in enumerate(cells):
            klass = " class=v" if i == verdict_col else (" class=num" if i in num_cols else "")
            tds.append(f"<td{klass}>{c}</td>")
        out.append(f"<tr class='{cls}'>" + "".join(tds) + "</tr>" if cls
                   else "<tr>" + "".join(tds) + "</tr>")
    return "\n".join(out + ["</table>"])


def _row_class(ok: bool | None) -> str:
    return {True: "pass", False: "fail", None: "na"}[ok]


def _secs(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, (int, float)) else "n/a"


def _join(*parts: str | None) -> str:
    return " · ".join(p for p in parts if p)


def _num(m: Mapping[str, Any], key: str, fmt: str) -> str | None:
    v = m.get(key)
    return fmt.format(format_value(v)) if isinstance(v, (int, float)) else None


def _pct(m: Mapping[str, Any], key: str, fmt: str) -> str | None:
    v = m.get(key)
    return fmt.format(f"{v:.1%}") if isinstance(v, (int, float)) else None


def _triple(m: Mapping[str, Any], key: str, fmt: str, scale: float = 1.0) -> str | None:
    vs = [m.get(f"{key}.{q}") for q in ("p50", "p90", "p99")]
    if not all(isinstance(v, (int, float)) for v in vs):
        return None
    return fmt.format("/".join(_short(v * scale) for v in vs))


def _short(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _top_reason(m: Mapping[str, Any]) -> str | None:
    prefix = "l2.failure_reasons."
    reasons = {k.removeprefix(prefix): v for k, v in m.items()
               if k.startswith(prefix) and isinstance(v, (int, float))}
    if not reasons:
        return None
    top = max(reasons, key=reasons.__getitem__)
    return f"top failure {top} ({format_value(reasons[top])})"
