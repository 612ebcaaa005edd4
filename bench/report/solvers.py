"""The solver benchmark's section: speed against a bare scipy assignment in the
same run, cost and ETA gaps to the optimum, shape sensitivity."""

from __future__ import annotations

from typing import Any

from bench.report.format import (
    DASH,
    count,
    mapping,
    markdown_table,
    num,
    number,
    number_range,
    numbers,
    pct,
    quotient,
    ratio,
    records,
    text,
)
from bench.report.parts import Check, Context, Section, machine_lines


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("solvers", "Solvers")
    s.lines += machine_lines(d)
    setup = []
    if num(d.get("repeats")) is not None:
        setup.append(f"best of {count(d['repeats'])} interleaved rounds")
    if num(d.get("seed")) is not None:
        setup.append(f"seed {count(d['seed'])}")
    s.lines += [("Setup: " + ", ".join(setup) + ". " if setup else "")
                + "No etcd: pure computation. The baseline is a bare "
                "`scipy.optimize.linear_sum_assignment` on the same city's ETA matrix in the "
                "same run; *× raw scipy* is CPU time over its CPU time (a model's time "
                "includes building its own matrices). *Cost gap* is the objective's gap to "
                "`hungarian` (the optimum one-to-one answer); *ETA gap* compares the mean "
                "pickup ETA of the assigned orders. No pass/fail target: see "
                "[solvers.md](solvers.md#benchmark) for the discussion.", ""]
    rows = records(d.get("rows"))
    body = []
    greedy, hung = [], []
    for r in rows:
        label = text(r.get("scenario"))
        scipy_cpu = num(r.get("raw_scipy_cpu_ms"))
        body.append([label, "raw `linear_sum_assignment` (baseline)",
                     number(r.get("raw_scipy_ms"), ",.1f"), number(scipy_cpu, ",.1f"),
                     ratio(1.0 if scipy_cpu else None), DASH, DASH, DASH, DASH])
        if num(r.get("raw_lap_cpu_ms")) is not None:
            body.append(["", "raw `lap.lapjv`", number(r.get("raw_lap_ms"), ",.1f"),
                         number(r.get("raw_lap_cpu_ms"), ",.1f"),
                         ratio(quotient(r.get("raw_lap_cpu_ms"), scipy_cpu)),
                         DASH, DASH, DASH, DASH])
        for name, m in mapping(r.get("models")).items():
            m = mapping(m)
            rel = num(m.get("ratio_to_raw_scipy"))
            if rel is None:
                rel = quotient(m.get("cpu_ms"), scipy_cpu)
            gap = num(m.get("gap_pct"))
            if name == "greedy":
                greedy.append((rel, gap, num(m.get("mean_eta_gap_pct"))))
            if name == "hungarian":
                hung.append(rel)
            body.append(["", f"`{name}`", number(m.get("ms"), ",.1f"),
                         number(m.get("cpu_ms"), ",.1f"),
                         ratio(rel), number(gap, "+.2f", " %"), count(m.get("assigned")),
                         number(m.get("mean_eta_s"), ".1f"),
                         number(m.get("mean_eta_gap_pct"), "+.2f", " %")])
    if body:
        s.lines += ["### Speed and cost", ""]
        s.lines += markdown_table(["scenario", "solver", "wall ms", "CPU ms", "× raw scipy",
                                   "cost gap", "assigned", "mean ETA s", "ETA gap"], body)
    for r in rows:
        shares = {k: v for k, v in mapping(r.get("gil_free_share")).items()
                  if num(v) is not None}
        if shares:
            s.lines += [f"Progress another Python thread makes during a solve "
                        f"({text(r.get('scenario'))}): "
                        + ", ".join(f"`{k}` {pct(v, 0)}" for k, v in shares.items())
                        + " (it matters: a worker solves on a thread while another keeps its "
                        "etcd lease alive).", ""]
    sweep = records(d.get("shape_sweep"))
    if sweep:
        s.lines += ["### Shape sensitivity", "",
                    "Raw `linear_sum_assignment` against `hungarian` (which reorders and pads "
                    "the matrix) as the number of couriers approaches the number of orders; CPU "
                    "ms.", ""]
        s.lines += markdown_table(["orders × couriers", "raw scipy CPU ms", "hungarian CPU ms",
                                   "hungarian ÷ raw"],
                                  [[f"{count(r.get('orders'))} × {count(r.get('couriers'))}",
                                    number(r.get("raw_scipy_cpu_ms"), ",.0f"),
                                    number(r.get("hungarian_cpu_ms"), ",.0f"),
                                    ratio(quotient(r.get("hungarian_cpu_ms"),
                                                   r.get("raw_scipy_cpu_ms")))]
                                   for r in sweep])
    if ctx.images.is_dir():
        for path in sorted(ctx.images.glob("solver*.png")):
            s.lines += ctx.image(path.stem, f"solvers: {path.stem}")
    measured = []
    if numbers(hung):
        measured.append(f"`hungarian` {number_range(hung)}× raw scipy")
    if greedy:
        measured.append(f"`greedy` {number_range(g[0] for g in greedy)}× raw scipy, ETA gap "
                        f"{number_range((g[2] for g in greedy), '+.1f')} %")
    if measured:
        s.checks.append(Check("none set: speed as a ratio to scipy in the same run, cost gaps",
                              "; ".join(measured), None, "no target"))
    return s
