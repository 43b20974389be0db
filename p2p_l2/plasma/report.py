"""A mass exit, read from per-node event lists (an in-memory cluster's `logs`): when users
noticed, how many exits started and paid out, and how long the layer-1 drain took.  For a
run dir, `p2p-l2 analyze` has the same as its `plasma.mass_exit` metric.
"""

from __future__ import annotations


from .. import events as ev


def mass_exit_report(logs: dict[str, list[dict]]) -> dict:
    alerts = {n: min(e["ts"] for e in evs if e["event"] == ev.WATCHER_ALERT)
              for n, evs in logs.items() if any(e["event"] == ev.WATCHER_ALERT for e in evs)}
    started = [e for evs in logs.values() for e in evs
               if e["event"] == ev.PLASMA_EXIT_STARTED and not e.get("spent") and not e.get("invalid")]
    finalized = [e for evs in logs.values() for e in evs if e["event"] == ev.PLASMA_EXIT_FINALIZED]
    t0 = min(alerts.values(), default=None)
    t_end = max((e["ts"] for e in finalized), default=None)
    first_exit = min((e["ts"] for e in started), default=None)
    mined = [e["ts"] for evs in logs.values() for e in evs if e["event"] == ev.BLOCK_MINED]
    return {
        "alerts": len(alerts),
        "exits_started": len(started),
        "exits_finalized": len(finalized),
        "amount_started": sum(e.get("amount", 0) for e in started),
        "amount_finalized": sum(e.get("amount", 0) for e in finalized),
        "first_alert_to_first_exit_s": (first_exit - t0) if t0 and first_exit else None,
        "drain_seconds": (t_end - first_exit) if t_end and first_exit else None,
        "l1_blocks": sum(1 for t in mined if first_exit and t_end and first_exit <= t <= t_end),
    }
