# Invariant checks (issue 7, DESIGN §8): each a named verdict with its evidence, computed
# from the logs *and* from the final L1 state queried at shutdown (RUN/final_state.json).
# ok is True (held), False (violated: `analyze` exits 1) or None (not applicable: no final
# state, no channel, no exit of the kind checked).
#
# What the logs can tell: nodes log a sample of `channel.updated` (at most one every 0.5 s a
# channel), the seq of their force closes and the `our_seq` of their (or their tower's)
# challenges: the latest state a party held is at least the highest of these.  In this protocol a close one
# state behind the peer's is a lost ack (the newer state replaces it, nobody is punished);
# a close two or more behind is a revoked state, and the victim takes everything.
"""`invariants(run)`: the checks that must hold after any run, faults or not."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from .. import events as ev
from .load import Run
from .metrics import flag, select_events

SETTLED = ("settled", "closed")


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool | None
    evidence: str

    def to_dict(self) -> dict:
        return asdict(self)


# -- facts shared by the checks ----------------------------------------------------------------
def parties(run: Run) -> dict[str, dict[str, str]]:
    """channel_id -> {"a": node, "b": node}, from channel.opened and the final state."""
    out: dict[str, dict[str, str]] = {}
    opened = select_events(run, ev.CHANNEL_OPENED, {"node": pl.String, "peer": pl.String,
                                                    "channel_id": pl.String, "party": pl.String})
    for node, peer, cid, party in opened.unique(["channel_id", "node"]).iter_rows():
        if party in ("a", "b"):
            out.setdefault(cid, {})[party] = node
            out[cid].setdefault("ba"[party == "b"], peer)
    names = run.names
    for rec in (run.final or {}).get("channels", []):
        ends = out.setdefault(rec["cid"], {})
        for p in ("a", "b"):
            if p not in ends and rec.get(p) in names:
                ends[p] = names[rec[p]]
    return out


def offline(run: Run) -> dict[str, list[tuple[float, float | None]]]:
    """node -> the windows it was down (killed, paused or exited until started/resumed)."""
    down: dict[str, float] = {}
    out: dict[str, list] = {}
    lau = run.launcher
    if lau.is_empty():
        return out
    rows = lau.filter(pl.col("event").is_in([ev.PROCESS_KILLED, ev.PROCESS_PAUSED,
                                             ev.PROCESS_EXITED, ev.PROCESS_STARTED,
                                             ev.PROCESS_RESUMED])).select("t", "node", "event")
    for t, node, event in rows.iter_rows():
        if event in (ev.PROCESS_STARTED, ev.PROCESS_RESUMED):
            if node in down:
                out.setdefault(node, []).append((down.pop(node), t))
        else:
            down.setdefault(node, t)
    for node, t in down.items():
        out.setdefault(node, []).append((t, None))
    return out


def _online(windows: list, start: float, end: float) -> bool:
    """Up for all of [start, end]."""
    return not any(s <= end and (e is None or e >= start) for s, e in windows)


def misbehaving(run: Run) -> set[str]:
    """Nodes that had a byzantine behaviour switched on at some point."""
    f = select_events(run, ev.FAULT_APPLIED, {"node": pl.String, "action": pl.String})
    return set(f.filter(pl.col("action") == "misbehave")["node"].to_list())


def _closings(run: Run) -> pl.DataFrame:
    return select_events(run, ev.CHANNEL_CLOSING, {
        "t": pl.Float64, "node": pl.String, "channel_id": pl.String, "kind": pl.String,
        "by": pl.String, "seq": pl.Int64, "posted_seq": pl.Int64, "our_seq": pl.Int64})


def _penalized(run: Run) -> set[str]:
    pen = select_events(run, ev.CHANNEL_PENALIZED, {"channel_id": pl.String})
    cids = set(pen["channel_id"].to_list())
    return cids | {r["cid"] for r in (run.final or {}).get("channels", []) if r.get("penalized")}


def _updates(run: Run) -> pl.DataFrame:
    return select_events(run, ev.CHANNEL_UPDATED, {
        "node": pl.String, "channel_id": pl.String, "seq": pl.Int64, "bal_a": pl.Int64,
        "bal_b": pl.Int64})


def _no_final(name: str) -> Verdict:
    return Verdict(name, None, "no final_state.json (the run was not stopped with `down`)")


# -- the checks --------------------------------------------------------------------------------
def coins_conserved(run: Run) -> Verdict:
    """Balances + coins locked in contracts == genesis + block rewards, and each contract's
    lock matches its records."""
    name, f = "coins_conserved", run.final
    if f is None:
        return _no_final(name)
    balances = sum(f["balances"].values())
    locked = f.get("locked", {})
    held = balances + sum(locked.values())
    minted = f["genesis_total"] + f["rewards"]
    problems = []
    if held != minted:
        problems.append(f"{held - minted:+d} coins")
    if f.get("total_balances", balances) != balances:
        problems.append(f"total_balances {f['total_balances']} != sum of balances {balances}")
    if sum(f.get("genesis", {}).values()) != f["genesis_total"] and f.get("genesis"):
        problems.append(f"genesis_total {f['genesis_total']} != sum of genesis accounts")
    chan = sum(r["total"] - r["paid"] for r in f.get("channels", []))
    if "channel" in locked and locked["channel"] != chan:
        problems.append(f"channel lock {locked['channel']} != unpaid channel funds {chan}")
    pl_ = sum(c["chain"]["deposits"] - c["chain"]["paid"] + c["chain"].get("bonds", 0)
              for c in f.get("plasma", {}).values())
    if "plasma" in locked and locked["plasma"] != pl_:
        problems.append(f"plasma lock {locked['plasma']} != deposits - paid + bonds {pl_}")
    parts = " + ".join(f"{k} {v}" for k, v in locked.items())
    evidence = (f"balances {balances} + locked ({parts}) = {held}; "
                f"genesis {f['genesis_total']} + rewards {f['rewards']} = {minted}")
    return Verdict(name, not problems, evidence + ("; " + "; ".join(problems) if problems else ""))


def channel_settlements_match(run: Run) -> Verdict:
    """Every channel paid out on L1 paid the newest state either party logged (or was
    penalized, paying its whole total to the victim), as both parties' channel.settled say."""
    name, f = "channel_settlements_match", run.final
    if f is None:
        return _no_final(name)
    done = [r for r in f.get("channels", []) if r.get("status") in SETTLED]
    if not done:
        return Verdict(name, None, "no channel was closed on chain")
    closing, updates = _closings(run), _updates(run)
    seqs = pl.concat([closing.select("channel_id", "seq"),
                      closing.select("channel_id", pl.col("our_seq").alias("seq")),
                      updates.select("channel_id", "seq")])
    latest = dict(seqs.drop_nulls().group_by("channel_id").agg(pl.col("seq").max()).iter_rows())
    settled = select_events(run, ev.CHANNEL_SETTLED, {"node": pl.String, "channel_id": pl.String,
                                                      "bal_a": pl.Int64, "bal_b": pl.Int64})
    problems, notes = [], []
    for r in done:
        cid, short = r["cid"], r["cid"][:8]
        if r.get("penalized"):
            if r["paid"] != r["total"]:
                problems.append(f"{short}: penalized but paid {r['paid']} of {r['total']}")
            else:
                notes.append(f"{short}: penalized, {r['total']} to the victim")
            continue
        seen = latest.get(cid)
        if seen is not None and (r.get("seq") is None or r["seq"] < seen):
            problems.append(f"{short}: paid out seq {r.get('seq')} but a party logged seq {seen}")
        for node, _, a, b in settled.filter(pl.col("channel_id") == cid).iter_rows():
            if (a, b) != (r.get("bal_a"), r.get("bal_b")):
                problems.append(f"{short}: {node} logged settlement {a}/{b}, L1 paid "
                                f"{r.get('bal_a')}/{r.get('bal_b')}")
        paid_seq = r.get("seq") if r.get("seq") is not None else -1
        same = updates.filter((pl.col("channel_id") == cid) & (pl.col("seq") == paid_seq)
                              & pl.col("bal_a").is_not_null())
        for node, _, seq, a, b in same.iter_rows():
            if (a, b) != (r.get("bal_a"), r.get("bal_b")):
                problems.append(f"{short}: {node} committed {a}/{b} at seq {seq}, L1 paid "
                                f"{r.get('bal_a')}/{r.get('bal_b')}")
        if r["status"] == "closed" and r["paid"] != r["total"]:
            problems.append(f"{short}: closed having paid {r['paid']} of {r['total']}")
        elif (r.get("bal_a") or 0) + (r.get("bal_b") or 0) > r["paid"]:
            problems.append(f"{short}: paid {r['paid']} < balances "
                            f"{r.get('bal_a')}+{r.get('bal_b')}")
        if not any(p.startswith(short) for p in problems):
            notes.append(f"{short}: seq {r.get('seq')} ({r.get('bal_a')}/{r.get('bal_b')})"
                         f" >= logged seq {seen}")
    return Verdict(name, not problems, f"channels paid out: {len(done)}; "
                   + "; ".join(problems or notes))


def no_unpunished_revoked_state(run: Run) -> Verdict:
    """A force close of a state two or more behind what the victim (or its watchtower)
    showed ends penalized, unless neither was up through the whole dispute window."""
    name = "no_unpunished_revoked_state"
    closing = _closings(run)
    force = closing.filter((pl.col("kind") == "force") | pl.col("posted_seq").is_not_null())
    if force.is_empty():
        return Verdict(name, None, "no force close")
    ends, down, penalized = parties(run), offline(run), _penalized(run)
    excused: list[str] = []
    cfg = run.config
    dispute_s = ((cfg.channels.dispute_blocks * cfg.chain.block_interval) if cfg is not None
                 else 6.0)
    final_channels = {r["cid"]: r for r in (run.final or {}).get("channels", [])}
    final_height = (run.final or {}).get("height")
    closers = {cid: "ab"[r["closer"]] for cid, r in final_channels.items()
               if r.get("closer") in (0, 1)}
    unsettled: list[str] = []
    updates = _updates(run)
    problems, revoked, unknown = [], 0, []
    for cid in force["channel_id"].unique(maintain_order=True).to_list():
        rows = force.filter(pl.col("channel_id") == cid)
        own = rows.filter((pl.col("kind") == "force") & pl.col("by").is_null())
        first = (own if own.height else rows).row(0, named=True)
        posted = (own["seq"].min() if own.height else
                  rows["seq"].min() if rows["seq"].drop_nulls().len() else rows["posted_seq"].min())
        closer = own["node"][0] if own.height else ends.get(cid, {}).get(closers.get(cid, ""))
        victim = next((n for n in ends.get(cid, {}).values() if n != closer), None)
        tower = (cfg.node(victim).watchtower if cfg is not None and victim is not None
                 and victim in {n.name for n in cfg.nodes} else None)
        others = rows if closer is None else rows.filter(pl.col("node") != closer)
        shown = others["our_seq"].drop_nulls().to_list()
        if victim is not None:
            shown += updates.filter((pl.col("channel_id") == cid) & (pl.col("node") == victim)
                                    )["seq"].drop_nulls().to_list()
        short = cid[:8]
        if posted is None:
            continue
        if not shown:
            if any(w.label.startswith(f"misbehave {closer} ") and w.start <= first["t"]
                   and (w.end is None or w.end >= first["t"]) for w in run.fault_windows):
                unknown.append(f"{short} by {closer}")
            continue
        if max(shown) < posted + 2:
            continue
        rec = final_channels.get(cid)
        if rec is not None and (rec["status"] == "open" or (
                rec["status"] == "closing" and final_height is not None
                and final_height < rec["dispute_until"])):
            # the close never reached L1 before the run ended, or its window is still open
            unsettled.append(f"{short}: {rec['status']} at the end")
            continue
        revoked += 1
        if cid in penalized:
            continue
        t = first["t"]
        up = [n for n in (victim, tower)
              if n is not None and _online(down.get(n, []), t, t + dispute_s)]
        if up:
            problems.append(f"{short}: {closer} posted seq {posted}, {victim} showed seq "
                            f"{max(shown)}, no penalty while {'/'.join(up)} up")
        else:
            excused.append(f"{short}: {victim} and its tower down")
    closes = force["channel_id"].n_unique()
    evidence = f"{closes} force-closed channels, {revoked} with a revoked state"
    for label, items in (("VIOLATED", problems), ("excused", excused),
                         ("not decided when the run ended", unsettled),
                         ("unverifiable (victim showed no seq)", unknown)):
        if items:
            evidence += f"; {label}: " + ", ".join(items)
    return Verdict(name, not problems, evidence)


def plasma_exits_within_deposits(run: Run) -> Verdict:
    """Per plasma chain: paid out <= deposited, and paid == the finalized exits' amounts."""
    name, f = "plasma_exits_within_deposits", run.final
    if f is None:
        return _no_final(name)
    chains = f.get("plasma", {})
    if not chains:
        return Verdict(name, None, "no plasma chain")
    problems, notes = [], []
    fin = select_events(run, ev.PLASMA_EXIT_FINALIZED, {"node": pl.String, "amount": pl.Int64})
    for op, c in chains.items():
        rec = c["chain"]
        exits = sum(x["amount"] for x in c.get("exits", []) if x.get("status") == "finalized")
        users = ({n.name for n in run.config.nodes if n.plasma == op} if run.config is not None
                 else None)
        logged = (fin.filter(pl.col("node").is_in(list(users)))["amount"].sum() or 0
                  if users is not None else None)
        line = f"{op}: paid {rec['paid']} <= deposits {rec['deposits']}"
        if rec["paid"] > rec["deposits"]:
            problems.append(f"{op}: paid {rec['paid']} > deposits {rec['deposits']}")
        if exits > rec["deposits"]:
            problems.append(f"{op}: finalized exits {exits} > deposits {rec['deposits']}")
        if exits != rec["paid"]:
            problems.append(f"{op}: finalized exits {exits} != paid {rec['paid']}")
        if logged is not None and logged > rec["deposits"]:
            problems.append(f"{op}: users logged {logged} paid out > deposits {rec['deposits']}")
        notes.append(line + f" (finalized exits {exits})")
    return Verdict(name, not problems, "; ".join(problems or notes))


def _operator(run: Run, node: str) -> str:
    cfg = run.config
    if cfg is not None and node in {n.name for n in cfg.nodes}:
        spec = cfg.node(node)
        if "plasma-operator" in spec.roles:
            return node
        if spec.plasma:
            return spec.plasma
    ops = list((run.final or {}).get("plasma", {}))
    return ops[0] if len(ops) == 1 else node


def no_spent_output_finalized(run: Run) -> Verdict:
    """Every byzantine exit (plasma.exit.started spent=true: an output its owner already
    spent; invalid=true: the operator's output of an invalid tx) never pays out: it must
    not be finalized on L1, nor logged finalized."""
    name = "no_spent_output_finalized"
    started = select_events(run, ev.PLASMA_EXIT_STARTED, {"node": pl.String, "pos": pl.Int64,
                                                          "spent": pl.String, "invalid": pl.String})
    byz = started.filter(flag("spent") | flag("invalid")).unique(["node", "pos"],
                                                                   maintain_order=True)
    if byz.is_empty():
        return Verdict(name, None, "no exit of a spent or invalid output was attempted")
    fin = select_events(run, ev.PLASMA_EXIT_FINALIZED, {"node": pl.String, "pos": pl.Int64})
    paid_logged = set(fin.iter_rows())
    chains = (run.final or {}).get("plasma", {})
    problems, notes = [], []
    for node, pos, *_ in byz.iter_rows():
        op = _operator(run, node)
        status = next((x.get("status") for x in chains.get(op, {}).get("exits", [])
                       if x.get("pos") == pos), None)
        if status == "finalized" or (node, pos) in paid_logged:
            problems.append(f"{node}'s exit of {pos} on {op} FINALIZED")
        else:
            notes.append(f"{node}'s exit of {pos}: "
                         + (status or ("not on L1" if run.final else "not logged paid")))
    return Verdict(name, not problems, "; ".join(problems + notes))


def honest_nodes_got_their_funds(run: Run) -> Verdict:
    """A sound, weaker stand-in for per-node accounting: no node that never misbehaved was
    penalized in a channel, nor had a plasma exit challenged or left unfunded.  (Its channel
    payouts are checked by channel_settlements_match; exact balance accounting would need
    every channel state and plasma transfer logged.)"""
    name = "honest_nodes_got_their_funds"
    bad = misbehaving(run)
    ends, names = parties(run), run.names
    problems, checked = [], 0
    pen = select_events(run, ev.CHANNEL_PENALIZED, {"channel_id": pl.String, "victim": pl.String})
    victims = {cid: v for cid, v in pen.iter_rows() if v in ("a", "b")}
    for r in (run.final or {}).get("channels", []):
        if r.get("penalized") and r.get("closer") in (0, 1):
            victims.setdefault(r["cid"], "ba"[r["closer"]])
    for cid, victim in victims.items():
        checked += 1
        closer = ends.get(cid, {}).get("ab"[victim == "a"])
        if closer is not None and closer not in bad:
            problems.append(f"honest {closer} penalized in channel {cid[:8]}")
    chal = select_events(run, ev.PLASMA_EXIT_CHALLENGED, {"owner": pl.String, "pos": pl.Int64})
    lost = {(o, p, "challenged") for o, p in chal.drop_nulls("owner").iter_rows()}
    for op, c in (run.final or {}).get("plasma", {}).items():
        for x in c.get("exits", []):
            checked += 1
            if x.get("status") in ("challenged", "unfunded"):
                lost.add((names.get(x.get("owner"), x.get("owner")), x.get("pos"), x["status"]))
    checked += chal.height
    for owner, pos, status in sorted(lost, key=str):
        if owner not in bad:
            problems.append(f"honest {owner}'s exit of {pos} {status}")
    if not checked and not ends:
        return Verdict(name, None, "no channel and no plasma exit")
    honest = sorted(set(run.nodes) - bad)
    evidence = (f"honest: {', '.join(honest) or '-'}; "
                f"misbehaving: {', '.join(sorted(bad)) or '-'}; "
                f"penalties: {len(victims)}, exits challenged or unfunded: {len(lost)}")
    return Verdict(name, not problems, evidence + ("; " + "; ".join(problems) if problems else ""))


CHECKS = (coins_conserved, channel_settlements_match, no_unpunished_revoked_state,
          plasma_exits_within_deposits, no_spent_output_finalized, honest_nodes_got_their_funds)


def invariants(run: Run) -> list[Verdict]:
    """Every check of CHECKS, in order."""
    return [check(run) for check in CHECKS]
