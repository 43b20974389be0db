# Analysis of a finished run (issue 7, SPEC §6, DESIGN §8): `load` reads a run dir into
# polars frames, `metrics` and `invariants` compute from them and from the final L1 state,
# `report` (plots, report.md/html) renders them.
"""`analyze(run_dir)`: metrics, invariant verdicts and the report of a run dir."""

from __future__ import annotations

import json
from pathlib import Path

from .invariants import Verdict, invariants
from .load import FaultWindow, Run, load
from .metrics import METRIC_DOCS, metrics

__all__ = ["analyze", "load", "metrics", "invariants", "Run", "FaultWindow", "Verdict",
           "METRIC_DOCS"]


def analyze(run_dir: str | Path, out_dir: str | Path | None = None) -> dict:
    """Load RUN, compute its metrics and verdicts, write `out_dir` (default RUN/report/):
    metrics.json, verdicts.json, report.md, report.html and the plots.  Returns {"metrics", "verdicts", "out_dir", "ok"}; `ok` is False when a verdict
    failed (`p2p-l2 analyze` exits 1)."""
    run = load(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    m = metrics(run)
    verdicts = invariants(run)
    (out / "metrics.json").write_text(json.dumps(m, indent=1, default=str))
    (out / "verdicts.json").write_text(json.dumps([v.to_dict() for v in verdicts], indent=1))
    from .report import write_report  # (matplotlib: imported only when a report is made)
    write_report(run, m, verdicts, out)
    return {"metrics": m, "verdicts": verdicts, "out_dir": out,
            "ok": not any(v.ok is False for v in verdicts)}
