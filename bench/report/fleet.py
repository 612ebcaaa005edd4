"""The fleet benchmark's section: placement by cost against placement by count over a
heavy-tailed mix of cities, side by side in one run."""

from __future__ import annotations

from typing import Any

from bench.report.format import (
    DASH,
    count,
    mapping,
    markdown_table,
    num,
    number,
    pct,
    ratio,
    records,
)
from bench.report.parts import Check, Context, Section, machine_lines

BALANCE_TARGET = 1.10
ON_TIME_TARGET = 0.995


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("fleet", "Placement by cost: a realistic fleet")
    s.lines += machine_lines(d)
    mix = records(d.get("mix"))
    if mix:
        s.lines += ["Mix: " + ", ".join(
            f"{count(m.get('cities'))} {m.get('class', '?')} of {count(m.get('orders'))} × "
            f"{count(m.get('couriers'))} ({'/'.join(str(x) for x in m.get('solvers') or [])})"
            for m in mix) + f"; period {number(d.get('period'), 'g')} s over "
            f"{count(d.get('workers'))} workers ({d.get('isolation', DASH)} solves), each "
            "placement on a fresh etcd with workers started together. The baseline is "
            "placement by count in the same run.", ""]
    paced = d.get("steady_pace")
    if isinstance(paced, list):
        s.lines += [("Steady pace (`--steady-pace`: each decision released at a steady "
                     "offset after its tick's start): " + ", ".join(map(str, paced)) + ".")
                    if paced else "No city has steady pace.", ""]
    runs = records(d.get("runs"))
    classes = list(dict.fromkeys(k for r in runs for k in mapping(r.get("on_time_by_class"))))
    body = []
    for r in runs:
        on = mapping(r.get("on_time_by_class"))
        body.append([str(r.get("placement", DASH)), ratio(r.get("busiest_over_mean")),
                     number(r.get("cpu_mean"), ".2f"),
                     *[pct(mapping(on.get(k)).get("on_time_share")) for k in classes],
                     number(r.get("moves_per_hour"), ".0f"),
                     number(r.get("converged_after_s"), ".0f"),
                     number(r.get("moves_to_converge"), ".0f"),
                     number(r.get("etcd_bytes_per_s"), ".0f"),
                     number(r.get("etcd_bytes_per_decision"), ".0f")])
    if body:
        s.lines += markdown_table(["placement", "busiest ÷ mean CPU", "mean CPU (cores)",
                                   *[f"{k} on time" for k in classes], "moves/h",
                                   "converged after (s)", "moves to converge",
                                   "etcd B/s", "etcd B/decision"], body)
        s.lines += ["", "On time: the gap between a city's decisions ≤ period + 100 ms. "
                    "Moves: cities that changed writer in the window. The window starts "
                    "once converged: no city changed writer for "
                    f"{number(runs[0].get('settle_s'), '.0f')} s.", ""]
    churn = []
    for r in runs:
        for name, ph in mapping(r.get("join_leave")).items():
            p = mapping(ph)
            on = mapping(p.get("on_time_by_class"))
            what = "joins" if name == "join" else "leaves"
            churn.append([f"{r.get('placement', DASH)}: a worker {what}",
                          number(p.get("moves"), ".0f"),
                          number(p.get("last_move_after_s"), ".0f"),
                          number(p.get("worst_handover_gap_s"), ".2f"),
                          *[pct(mapping(on.get(k)).get("on_time_share")) for k in classes]])
    if churn:
        s.lines += markdown_table(["once converged", "moves", "last move after (s)",
                                   "worst gap at a move (s)",
                                   *[f"{k} on time" for k in classes]], churn)
        s.lines += ["", "A fifth worker joins the converged fleet; once converged again it "
                    "leaves (SIGTERM: it hands its cities over). Each row runs until no city "
                    "changed writer for the settle time; on time over that whole span.", ""]
    cost = next((r for r in runs if r.get("placement") == "cost"), {})
    balance = num(cost.get("busiest_over_mean"))
    if balance is not None:
        baseline = next((r for r in runs if r.get("placement") == "count"), {})
        s.checks.append(Check(f"placement by cost: busiest worker's CPU ÷ mean ≤ "
                              f"{BALANCE_TARGET:.2f}",
                              f"{balance:.3f} (by count: "
                              f"{ratio(baseline.get('busiest_over_mean'))})",
                              balance <= BALANCE_TARGET))
    shares = [num(mapping(v).get("on_time_share"))
              for v in mapping(cost.get("on_time_by_class")).values()]
    found = [x for x in shares if x is not None]
    if found:
        s.checks.append(Check("placement by cost: on-time ticks in every size class ≥ 99.5 %",
                              f"worst class {min(found):.1%}",
                              min(found) >= ON_TIME_TARGET))
    moves = num(cost.get("moves_per_hour"))
    if moves is not None:
        s.checks.append(Check("placement by cost: moves per hour once converged = 0",
                              f"{moves:.0f}", moves == 0))
    if not runs:
        s.lines += ["No placement run in this file.", ""]
    return s
