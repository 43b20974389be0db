# Metrics of a run (issue 7): one flat dict of stable, documented keys (METRIC_DOCS, listed
# in the README), every key present whatever layers the run had (0, {} or None when a layer
# is absent), computed with polars expressions over the loaded frames.
#
# Conventions: rates are over the run, t in [0, duration_s] (t=0: the cluster was up), so
# the channel openings and deposits made while the cluster started do not count; quantile
# dicts are {"p50", "p90", "p99"} (linear interpolation) in seconds, None with no sample;
# dicts keyed by numbers (route hops) have string keys, as in JSON.
"""`metrics(run)`: throughput, latency, forks, disputes, exits and traffic of a loaded run."""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from .. import events as ev
from .load import Run

METRIC_DOCS: dict[str, str] = {
    "duration_s": "run length: t=0 (cluster up) to the last node event (s)",
    "l1.tx_per_s": "txs in best-chain blocks mined during the run / duration_s (tx/s)",
    "l1.blocks": "blocks on the best chain, genesis excluded (count)",
    "l1.block_interval_s": "time between consecutive best-chain blocks: {mean, p50} (s)",
    "l1.forks": "branches off the best chain: orphaned blocks whose parent is not orphaned (count)",
    "l1.reorg_depth_max": "deepest chain.reorg any node logged (blocks)",
    "l1.reorg_depths": "each reorg's depth, one per distinct new tip (the deepest node's), "
                       "descending (blocks)",
    "l1.orphan_rate": "mined blocks not on the best chain / mined blocks (fraction; None: no "
                      "block)",
    "l1.propagation_s": "per block, block.mined to its first block.accepted at the last node, over "
                        "blocks every block-accepting node got: {p50, p90, p99} (s)",
    "l2.payments": "payments sent (payment.sent, count)",
    "l2.payments_per_s": "payments succeeded during the run / duration_s (payments/s)",
    "l2.success_rate": "payments succeeded / payments sent (fraction; None: none sent)",
    "l2.failure_reasons": "payment.failed by reason, the blamed channel (`@cid`) stripped: "
                          "{reason: count}",
    "l2.latency_s": "payment.succeeded latency, payer-measured: {p50, p90, p99} (s)",
    "l2.route_hops": "succeeded payments by route length: {hops: count}",
    "l2.fees_total": "routing fees paid by succeeded payments (coins)",
    "l2.disputes": "channel closes: {closes: {kind: channels}, penalties: channels penalized, "
                   "settled: channels paid out on L1}",
    "plasma.tx_per_s": "txs in plasma blocks made during the run / duration_s (tx/s)",
    "plasma.blocks": "plasma child blocks made (count)",
    "plasma.commit_delay_s": "plasma.block.made to plasma.block.committed per block: "
                             "{p50, p90} (s)",
    "plasma.exits": "plasma exits: {started, challenged, finalized, byzantine: started with spent "
                    "or invalid} (count, distinct positions)",
    "plasma.mass_exit": "{alerts: nodes that raised a watcher alert, exits_started/exits_finalized "
                        "and amount_started/amount_finalized of honest exits, "
                        "first_alert_to_first_exit_s, drain_s: first alert to last finalization, "
                        "first_exit_to_last_paid_s, l1_blocks: mined from first exit to last "
                        "finalization} (s, coins)",
    "plasma.alerts": "watcher.alert events by kind: {kind: count}",
    "net.messages_by_node": "{node: {published, delivered, rejected}}: gossip messages originated "
                            "and received first-hand, and messages refused (count)",
    "net.bytes_by_node": "{node: {published, delivered}}: gossip payload bytes originated and "
                         "received (sizes from gossip.published) (bytes)",
    "net.gossip_delivered_by_topic": "gossip.delivered by topic: {topic: count}",
    "net.rejected_by_reason": "msg.rejected by reason: {reason: count}",
    "l2_l1_ratio": "(l2.payments_per_s + plasma.tx_per_s) / l1.tx_per_s (None: no L1 tx)",
}

QUANTILES = (0.5, 0.9, 0.99)
BLAME = re.compile(r"@[0-9a-fA-F]+")


# -- helpers -----------------------------------------------------------------------------------
def select_events(run: Run, name: str, cols: dict[str, Any]) -> pl.DataFrame:
    """The events called `name` with `cols` (name -> dtype), missing columns as nulls."""
    df = run.events.filter(pl.col("event") == name)
    missing = [pl.lit(None, t).alias(c) for c, t in cols.items() if c not in df.columns]
    return df.with_columns(missing).select([pl.col(c).cast(t, strict=False)
                                            for c, t in cols.items()])


def quantiles(values: pl.Series, qs=QUANTILES) -> dict[str, float | None]:
    values = values.drop_nulls().cast(pl.Float64)
    return {f"p{round(q * 100)}": (float(values.quantile(q, "linear")) if values.len() else None)
            for q in qs}


def _counts(df: pl.DataFrame, key: str, value: str | None = None) -> dict:
    """{key value (as str): count of rows, or of distinct `value`}, largest first."""
    df = df.filter(pl.col(key).is_not_null())
    if df.is_empty():
        return {}
    agg = pl.col(value).n_unique() if value else pl.len()
    rows = df.group_by(key).agg(agg.alias("n")).sort(["n", key], descending=[True, False])
    return {str(k): int(n) for k, n in rows.iter_rows()}


def _rate(n: float, duration: float) -> float:
    return n / duration if duration > 0 else 0.0


def _in_run(df: pl.DataFrame, duration: float) -> pl.DataFrame:
    return df.filter((pl.col("t") >= 0) & (pl.col("t") <= duration))


def flag(name: str) -> pl.Expr:
    """A flag that may have been read as a bool, a number or a string."""
    return pl.col(name).cast(pl.String).str.to_lowercase().is_in(["true", "1"]).fill_null(False)


# -- layer 1 ---------------------------------------------------------------------------------
def best_chain(run: Run) -> set[str]:
    """Hashes of the mined blocks on the best chain: walked back through `block.mined`'s
    `prev` from the final state's tip (else the highest block the nodes accepted)."""
    mined = select_events(run, ev.BLOCK_MINED, {"block": pl.String, "prev": pl.String,
                                                "height": pl.Int64})
    parent = dict(zip(mined["block"].to_list(), mined["prev"].to_list()))
    tip = (run.final or {}).get("tip")
    if tip not in parent:
        acc = select_events(run, ev.BLOCK_ACCEPTED, {"block": pl.String, "height": pl.Int64,
                                                     "t": pl.Float64})
        top = (acc.group_by("block").agg(pl.col("height").first(), pl.len().alias("n"),
                                         pl.col("t").max())
               .sort(["height", "n", "t"], descending=True).head(1))
        tip = top["block"][0] if top.height else None
    chain: set[str] = set()
    while tip in parent and tip not in chain:
        chain.add(tip)
        tip = parent[tip]
    return chain


def _l1(run: Run, duration: float) -> dict:
    mined = select_events(run, ev.BLOCK_MINED, {"t": pl.Float64, "block": pl.String,
                                                "prev": pl.String, "height": pl.Int64,
                                                "txs": pl.Int64})
    mined = mined.unique("block", keep="first", maintain_order=True)
    chain = best_chain(run)
    on = mined.filter(pl.col("block").is_in(list(chain))).sort("height")
    orphans = mined.filter(~pl.col("block").is_in(list(chain)))
    intervals = on["t"].diff().drop_nulls()
    reorgs = select_events(run, ev.CHAIN_REORG, {"depth": pl.Int64, "new_tip": pl.String})
    depths = (reorgs.group_by("new_tip").agg(pl.col("depth").max())["depth"]
              .sort(descending=True).to_list()) if reorgs.height else []
    if chain:
        forks = orphans.filter(~pl.col("prev").is_in(orphans["block"].to_list())).height
    else:
        forks = reorgs["new_tip"].n_unique() if reorgs.height else 0
    acc = select_events(run, ev.BLOCK_ACCEPTED, {"t": pl.Float64, "node": pl.String,
                                                 "block": pl.String})
    n_nodes = acc["node"].n_unique() if acc.height else 0
    reach = (acc.group_by(["block", "node"]).agg(pl.col("t").min())
             .group_by("block").agg(pl.col("t").max().alias("last"), pl.len().alias("n"))
             .filter(pl.col("n") == n_nodes)
             .join(mined.select("block", pl.col("t").alias("mined")), on="block"))
    return {
        "l1.tx_per_s": _rate(_in_run(on, duration)["txs"].sum() or 0, duration),
        "l1.blocks": on.height,
        "l1.block_interval_s": {
            "mean": float(intervals.mean()) if intervals.len() else None,
            "p50": float(intervals.median()) if intervals.len() else None},
        "l1.forks": int(forks),
        "l1.reorg_depth_max": int(reorgs["depth"].max()) if reorgs.height else 0,
        "l1.reorg_depths": [int(d) for d in depths],
        "l1.orphan_rate": orphans.height / mined.height if mined.height else None,
        "l1.propagation_s": quantiles(reach["last"] - reach["mined"]),
    }


# -- channels ----------------------------------------------------------------------------------
def _l2(run: Run, duration: float) -> dict:
    sent = select_events(run, ev.PAYMENT_SENT, {"t": pl.Float64})
    ok = select_events(run, ev.PAYMENT_SUCCEEDED, {"t": pl.Float64, "latency": pl.Float64,
                                                   "fee": pl.Int64, "hops": pl.Int64})
    failed = select_events(run, ev.PAYMENT_FAILED, {"reason": pl.String}).with_columns(
        pl.col("reason").fill_null("unknown").str.replace_all(BLAME.pattern, ""))
    closing = select_events(run, ev.CHANNEL_CLOSING, {"channel_id": pl.String, "kind": pl.String})
    penalized = select_events(run, ev.CHANNEL_PENALIZED, {"channel_id": pl.String})
    settled = select_events(run, ev.CHANNEL_SETTLED, {"channel_id": pl.String})
    return {
        "l2.payments": sent.height,
        "l2.payments_per_s": _rate(_in_run(ok, duration).height, duration),
        "l2.success_rate": ok.height / sent.height if sent.height else None,
        "l2.failure_reasons": _counts(failed, "reason"),
        "l2.latency_s": quantiles(ok["latency"]),
        "l2.route_hops": dict(sorted(_counts(ok, "hops").items(), key=lambda kv: int(kv[0]))),
        "l2.fees_total": int(ok["fee"].sum() or 0),
        "l2.disputes": {"closes": _counts(closing, "kind", "channel_id"),
                        "penalties": penalized["channel_id"].n_unique(),
                        "settled": settled["channel_id"].n_unique()},
    }


# -- plasma ------------------------------------------------------------------------------------
def mass_exit(run: Run) -> dict:
    """A mass exit: when watchers alerted, the honest exits started and paid, and how long
    the drain took on L1 (what p2p_l2/plasma/report.py printed)."""
    alerts = select_events(run, ev.WATCHER_ALERT, {"t": pl.Float64, "node": pl.String})
    started = run.events.filter(pl.col("event") == ev.PLASMA_EXIT_STARTED)
    for name in ("spent", "invalid"):
        if name in started.columns:
            started = started.filter(~flag(name))
    started = started.select([pl.col("t"), (pl.col("amount") if "amount" in started.columns
                                            else pl.lit(0)).cast(pl.Int64).alias("amount")])
    final = select_events(run, ev.PLASMA_EXIT_FINALIZED, {"t": pl.Float64, "amount": pl.Int64})
    first_alert = alerts["t"].min() if alerts.height else None
    first_exit = started["t"].min() if started.height else None
    last_paid = final["t"].max() if final.height else None
    mined = select_events(run, ev.BLOCK_MINED, {"t": pl.Float64})
    blocks = (mined.filter(pl.col("t").is_between(first_exit, last_paid)).height
              if first_exit is not None and last_paid is not None else 0)
    return {
        "alerts": alerts["node"].n_unique() if alerts.height else 0,
        "exits_started": started.height,
        "exits_finalized": final.height,
        "amount_started": int(started["amount"].sum() or 0),
        "amount_finalized": int(final["amount"].sum() or 0),
        "first_alert_to_first_exit_s": (first_exit - first_alert
                                        if first_alert is not None and first_exit is not None
                                        else None),
        "drain_s": (last_paid - first_alert
                    if first_alert is not None and last_paid is not None else None),
        "first_exit_to_last_paid_s": (last_paid - first_exit
                                      if first_exit is not None and last_paid is not None
                                      else None),
        "l1_blocks": blocks,
    }


def _plasma(run: Run, duration: float) -> dict:
    made = select_events(run, ev.PLASMA_BLOCK_MADE, {"t": pl.Float64, "node": pl.String,
                                                     "number": pl.Int64, "txs": pl.Int64})
    made = made.unique(["node", "number"], keep="first", maintain_order=True)
    committed = (select_events(run, ev.PLASMA_BLOCK_COMMITTED, {"t": pl.Float64, "node": pl.String,
                                                                "number": pl.Int64})
                 .group_by(["node", "number"]).agg(pl.col("t").min().alias("committed")))
    delay = made.join(committed, on=["node", "number"])
    started = select_events(run, ev.PLASMA_EXIT_STARTED, {"node": pl.String, "pos": pl.Int64,
                                                          "spent": pl.String, "invalid": pl.String})
    byzantine = started.filter(flag("spent") | flag("invalid"))
    challenged = select_events(run, ev.PLASMA_EXIT_CHALLENGED, {"pos": pl.Int64})
    finalized = select_events(run, ev.PLASMA_EXIT_FINALIZED, {"node": pl.String, "pos": pl.Int64})
    alerts = select_events(run, ev.WATCHER_ALERT, {"kind": pl.String})
    return {
        "plasma.tx_per_s": _rate(_in_run(made, duration)["txs"].sum() or 0, duration),
        "plasma.blocks": made.height,
        "plasma.commit_delay_s": quantiles(delay["committed"] - delay["t"], (0.5, 0.9)),
        "plasma.exits": {"started": started.unique(["node", "pos"]).height,
                         "challenged": challenged["pos"].n_unique(),
                         "finalized": finalized.unique(["node", "pos"]).height,
                         "byzantine": byzantine.unique(["node", "pos"]).height},
        "plasma.mass_exit": mass_exit(run),
        "plasma.alerts": _counts(alerts, "kind"),
    }


# -- network -----------------------------------------------------------------------------------
def _net(run: Run) -> dict:
    pub = select_events(run, ev.GOSSIP_PUBLISHED, {"node": pl.String, "msg_id": pl.String,
                                                   "size": pl.Int64})
    got = select_events(run, ev.GOSSIP_DELIVERED, {"node": pl.String, "msg_id": pl.String,
                                                   "topic": pl.String})
    rejected = select_events(run, ev.MSG_REJECTED, {"node": pl.String, "reason": pl.String})
    sizes = pub.group_by("msg_id").agg(pl.col("size").first())
    counts = (pl.concat([pub.group_by("node").agg(pl.len().alias("published"),
                                                  pl.col("size").sum().alias("published_bytes")),
                         got.join(sizes, on="msg_id", how="left").group_by("node").agg(
                             pl.len().alias("delivered"),
                             pl.col("size").sum().alias("delivered_bytes")),
                         rejected.group_by("node").agg(pl.len().alias("rejected"))],
                        how="diagonal_relaxed")
              .group_by("node").agg(pl.all().sum()).sort("node"))
    messages, volume = {}, {}
    for r in counts.iter_rows(named=True):
        messages[r["node"]] = {k: int(r.get(k) or 0)
                               for k in ("published", "delivered", "rejected")}
        volume[r["node"]] = {k: int(r.get(f"{k}_bytes") or 0) for k in ("published", "delivered")}
    return {
        "net.messages_by_node": messages,
        "net.bytes_by_node": volume,
        "net.gossip_delivered_by_topic": _counts(got, "topic"),
        "net.rejected_by_reason": _counts(rejected, "reason"),
    }


def markdown_table() -> str:
    """The metric keys as a markdown table, for the README."""
    rows = ["| metric | meaning (unit) |", "| --- | --- |"]
    return "\n".join(rows + [f"| `{k}` | {doc} |" for k, doc in METRIC_DOCS.items()])


def metrics(run: Run) -> dict:
    """Every metric of METRIC_DOCS, in that order."""
    last = run.events["t"].max() if run.events.height else None
    duration = max(float(last), 0.0) if last is not None else 0.0
    out: dict[str, Any] = {"duration_s": duration}
    out |= _l1(run, duration) | _l2(run, duration) | _plasma(run, duration) | _net(run)
    l1 = out["l1.tx_per_s"]
    out["l2_l1_ratio"] = ((out["l2.payments_per_s"] + out["plasma.tx_per_s"]) / l1) if l1 else None
    return {key: out[key] for key in METRIC_DOCS}
