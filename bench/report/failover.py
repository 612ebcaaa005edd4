"""The failover benchmark's section: kill -9 failover per lease TTL, graceful
handover gaps, a joining worker."""

from __future__ import annotations

import math
from typing import Any

from bench.report.format import (
    DASH,
    count,
    dig,
    flag,
    mapping,
    markdown_table,
    num,
    number,
    quotient,
    ratio,
    verdict,
)
from bench.report.parts import Check, Context, Section, machine_lines

GRACEFUL = {"sigterm": "SIGTERM of an owner", "drain": "`dispatchctl drain`",
            "undrain": "undrain", "join": "a worker joins"}


def _ttl(key: str, summary: dict[str, Any]) -> float | None:
    """A kill summary's lease TTL: its ``ttl``, else its key ("2", "5")."""
    ttl = num(summary.get("ttl"))
    if ttl is None:
        try:
            ttl = num(float(key))
        except ValueError:
            return None
    return ttl


def _by_ttl(value: Any) -> list[tuple[float | None, dict[str, Any]]]:
    items = [(_ttl(str(k), mapping(v)), mapping(v)) for k, v in mapping(value).items()
             if mapping(v)]
    return sorted(items, key=lambda kv: math.inf if kv[0] is None else kv[0])


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("failover", "Failover and handover")
    s.lines += machine_lines(d)
    setup = []
    for key, what in (("workers", "workers"), ("kill_cities", "cities in the kill trials"),
                      ("graceful_cities", "cities in the graceful trials")):
        if num(d.get(key)) is not None:
            setup.append(f"{count(d[key])} {what}")
    if num(d.get("period")) is not None:
        setup.append(f"period {number(d['period'], 'g')} s")
    if d.get("isolation"):
        setup.append(f"{d['isolation']} isolation")
    if setup:
        s.lines += ["Setup: real `dispatch-worker` processes on one etcd member; "
                    + ", ".join(setup) + ".", ""]
    period = num(d.get("period"))

    kills = _by_ttl(d.get("kill_summary"))
    s.lines += ["### kill -9 of an owner", "",
                "From the SIGKILL to the first decision by another worker, for the worst city "
                "of each kill (all cities in *all cities* columns). *Lease expiry* is etcd "
                "expiring the dead worker's lease (detection); *takeover* is the rest. The "
                "baseline is the lease TTL. Target (issue): p99 ≤ TTL + 0.5 s, for TTL 2 s "
                "and 5 s.", ""] if kills else []
    body = []
    seen = set()
    for ttl, k in kills:
        worst = mapping(k.get("per_trial_worst"))
        p99 = num(worst.get("p99"))
        target = num(k.get("target_p99_s"))
        if target is None and ttl is not None:
            target = ttl + 0.5
        met = p99 <= target if p99 is not None and target is not None \
            else flag(k.get("target_met"))
        city = mapping(k.get("per_city"))
        body.append([number(ttl, "g"), count(k.get("trials")), count(k.get("incomplete_trials")),
                     number(worst.get("p50"), ".2f"), number(p99, ".2f"),
                     number(worst.get("max"), ".2f"),
                     count(city.get("n")), number(city.get("p50"), ".2f"),
                     number(city.get("p99"), ".2f"),
                     number(dig(k, "lease_expired_after_kill", "p50"), ".2f"),
                     number(dig(k, "takeover_after_lease_expiry", "p50"), ".3f"),
                     number(dig(k, "takeover_after_lease_expiry", "p99"), ".3f"),
                     ratio(quotient(p99, ttl)),
                     f"≤ {target:g} s" if target is not None else DASH, verdict(met)])
        if ttl is not None:
            seen.add(ttl)
            s.checks.append(Check(f"kill -9 failover p99 ≤ TTL + 0.5 s (TTL {ttl:g} s)",
                                  f"p99 {number(p99, '.2f')} s over {count(worst.get('n'))} kills "
                                  f"({ratio(quotient(p99, ttl))} TTL)", met))
    s.lines += markdown_table(["TTL s", "kills", "incomplete", "worst city p50 s",
                               "worst city p99 s", "worst city max s", "all cities n",
                               "all cities p50 s", "all cities p99 s", "lease expiry p50 s",
                               "takeover p50 s", "takeover p99 s", "p99 ÷ TTL", "target",
                               "result"], body)
    for ttl in (2.0, 5.0):
        if ttl not in seen:
            s.checks.append(Check(f"kill -9 failover p99 ≤ TTL + 0.5 s (TTL {ttl:g} s)",
                                  "not measured", None))

    graceful = mapping(d.get("graceful_summary"))
    body = []
    for kind, name in GRACEFUL.items():
        g = mapping(graceful.get(kind))
        if not g:
            s.checks.append(Check(f"graceful handover p99 gap ≤ period + 100 ms ({name})",
                                  "not measured", None))
            continue
        gap = mapping(g.get("max_gap_s"))
        p99 = num(gap.get("p99"))
        target = num(g.get("target_s"))
        if target is None and period is not None:
            target = period + 0.1
        met = p99 <= target if p99 is not None and target is not None \
            else flag(g.get("target_met"))
        rel = num(g.get("max_gap_ratio_p99"))
        if rel is None:
            rel = quotient(p99, period)
        body.append([name, count(g.get("trials")), number(gap.get("p50"), ".3f"),
                     number(p99, ".3f"),
                     number(gap.get("max"), ".3f"), ratio(rel), number(g.get("moved_mean"), ".1f"),
                     number(g.get("ideal_moved_mean"), ".1f"),
                     ratio(quotient(g.get("moved_mean"), g.get("ideal_moved_mean"))),
                     count(g.get("trials_with_a_late_city")),
                     f"≤ {target:g} s" if target is not None else DASH, verdict(met)])
        s.checks.append(Check(f"graceful handover p99 gap ≤ period + 100 ms ({name})",
                              f"p99 {number(p99, '.3f')} s ({ratio(rel)} period) over "
                              f"{count(g.get('trials'))} trials", met))
    if body:
        s.lines += ["### Graceful handover", "",
                    "For the cities that changed writer, the largest gap between consecutive "
                    "decisions around the event, per trial. The baseline is the period. Target "
                    "(issue): p99 gap ≤ period + 100 ms.", ""]
        s.lines += markdown_table(["event", "trials", "gap p50 s", "gap p99 s", "gap max s",
                                   "p99 ÷ period", "cities moved (mean)", "ideal", "moved ÷ ideal",
                                   "trials with a late city", "target", "result"], body)

    joining = mapping(graceful.get("joining"))
    if joining:
        rows = []
        for key, what in (("first_decision_s", "process start → first decision, s"),
                          ("fair_share_s", "process start → fair share ⌊N/W⌋, s"),
                          ("moved", "cities moved"), ("ideal_moved", "ideal cities moved (N/W)")):
            q = mapping(joining.get(key))
            if q:
                spec = ".2f" if key.endswith("_s") else ".1f"
                rows.append([what, count(q.get("n")), number(q.get("p50"), spec),
                             number(q.get("p99"), spec), number(q.get("max"), spec),
                             number(q.get("mean"), spec)])
        s.lines += ["### A worker joining", ""]
        s.lines += markdown_table(["", "n", "p50", "p99", "max", "mean"], rows)
        moved = quotient(dig(joining, "moved", "mean"), dig(joining, "ideal_moved", "mean"))
        facts = []
        if moved is not None:
            facts.append(f"cities moved: {moved:.2f}× the ideal (mean)")
        if num(joining.get("never_reached_fair_share")) is not None:
            facts.append(f"joiners that never reached their fair share: "
                         f"{count(joining['never_reached_fair_share'])}")
        if facts:
            s.lines += ["; ".join(facts).capitalize() + ".", ""]
    s.lines += ctx.image("failover", "failover: kill -9 distributions, graceful handover "
                         "gaps, a joining worker")
    return s
