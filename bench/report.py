"""Render docs/benchmarks.md from the benchmarks' results.

    python bench/report.py                          # bench/results/*.json → docs/benchmarks.md
    python bench/report.py --results DIR --out FILE

Reads every ``<name>.json`` in the results directory (``coordination``, ``scale``,
``failover``, ``leaselock``, ``solvers``; any other name gets a short section of its own)
and writes one Markdown page: how to reproduce the figures, the targets from the issues
and whether each is met, then a section per benchmark with the machine it ran on, its
tables (absolute figures beside the baseline measured in the same run, and the ratio to
it) and its plots (``docs/img/<name>.png``, linked only if the file exists).

Every figure on the page comes from the results files; a key a file lacks drops that
cell, row or table instead of failing, so results from older or ``--quick`` runs render
too. Standard library only: it runs without the benchmarks' dependencies and never
starts etcd. ``make bench`` runs it last; ``make bench-report`` runs only it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img"

DASH = "—"
#: seconds between attempts at reading a results file a benchmark may be rewriting
RETRY_DELAY = 0.5
#: the order of the sections; a results file with another name gets a generic section
ORDER = ("coordination", "tickcost", "scale", "failover", "leaselock", "solvers")
COMMANDS = {
    "coordination": ("fenced commits/s (`DecisionStore.commit`, a whole worker), CPU per "
                     "commit, round trips per tick",
                     "raw etcd transactions of the same shape, same client"),
    "solvers": ("solver speed and cost", "`scipy.optimize.linear_sum_assignment`"),
    "tickcost": ("a busy worker's CPU per tick, thread by thread, in situ",
                 "one raw etcd call; the same ticks run in a row on one thread"),
    "failover": ("kill -9 failover (TTL 2 s, 5 s), graceful handover gaps (SIGTERM, drain, "
                 "undrain, join), a joiner's fair share", "the lease TTL and the period"),
    "leaselock": ("client-go's LeaseLock (15/10/2 s) against our election: kill -9 "
                  "failover, stale writes after a pause", "our election, same run"),
    "scale": ("1,000 cities × 4 workers at 1 s: ticks on time, lateness, CPU, RSS, etcd "
              "load; city and worker sweeps", "a process that only sleeps (scheduling delay)"),
}


# -- reading JSON without trusting its shape ----------------------------------------------

def dig(obj: Any, *path: str | int) -> Any:
    """``obj[path[0]][path[1]]…``, or None as soon as a step is missing or of the wrong
    kind."""
    for key in path:
        if isinstance(obj, dict) and isinstance(key, str):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def num(value: Any) -> float | None:
    """A finite number, or None (for None, NaN, infinities, booleans, strings …)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def records(value: Any) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def numbers(values: Iterable[Any]) -> list[float]:
    return [v for v in (num(x) for x in values) if v is not None]


def median(values: Iterable[Any]) -> float | None:
    found = numbers(values)
    return statistics.median(found) if found else None


def quotient(a: Any, b: Any) -> float | None:
    x, y = num(a), num(b)
    return x / y if x is not None and y else None


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# -- formatting ---------------------------------------------------------------------------

def fmt(value: Any, spec: str = ".2f", unit: str = "") -> str:
    """A number formatted, or a dash when there is none."""
    v = num(value)
    return DASH if v is None else f"{v:{spec}}{unit}"


def count(value: Any) -> str:
    return fmt(value, ",.0f")


def ratio(value: Any, digits: int = 2) -> str:
    return fmt(value, f".{digits}f", "×")


def pct(value: Any, digits: int = 1) -> str:
    """A share (0–1) as a percentage."""
    v = num(value)
    return DASH if v is None else f"{100 * v:.{digits}f} %"


def spread(values: Iterable[Any], spec: str = ".2f") -> str:
    found = numbers(values)
    if not found:
        return DASH
    low, high = min(found), max(found)
    return f"{low:{spec}}" if f"{low:{spec}}" == f"{high:{spec}}" \
        else f"{low:{spec}}–{high:{spec}}"


def text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return DASH if value is None else ("yes" if value else "no")
    if isinstance(value, int | float):
        return count(value) if float(value).is_integer() else fmt(value, ".3g")
    return str(value)


def verdict(met: bool | None) -> str:
    return DASH if met is None else ("met" if met else "**missed**")


def code(value: Any) -> str:
    return f"`{value}`" if value not in (None, "") else DASH


def cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table; columns with no value in any row are left out, and no rows make
    no table."""
    body = [list(r) for r in rows]
    if not body:
        return []
    keep = [i for i in range(len(headers))
            if i == 0 or any(i < len(r) and r[i] not in (DASH, "") for r in body)]
    out = ["| " + " | ".join(cell(headers[i]) for i in keep) + " |",
           "|" + "---|" * len(keep)]
    out += ["| " + " | ".join(cell(r[i]) if i < len(r) else DASH for i in keep) + " |"
            for r in body]
    return [*out, ""]


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


# -- the page's parts ---------------------------------------------------------------------

@dataclass
class Check:
    """A target from the issues and how a run did against it."""

    target: str
    measured: str
    met: bool | None
    note: str = ""


@dataclass
class Section:
    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)


@dataclass
class Context:
    out: Path
    images: Path

    def image(self, name: str, alt: str) -> list[str]:
        """The plot, linked relative to the page, if it exists."""
        path = self.images / f"{name}.png"
        if not path.is_file():
            return []
        link = Path(os.path.relpath(path, self.out.parent)).as_posix()
        return [f"![{alt}]({link})", ""]


def machine_lines(data: dict[str, Any]) -> list[str]:
    """Where and when a result was measured, as a bullet list."""
    m = mapping(data.get("machine"))
    items: list[str] = []
    run = []
    if m.get("date"):
        run.append(str(m["date"]))
    mode = data.get("mode")
    if mode == "quick":
        run.append("`--quick` mode (fewer trials, shorter windows than the full run)")
    elif mode:
        run.append(f"{mode} mode")
    if run:
        items.append("**Run:** " + ", ".join(run))
    cpu = m.get("cpu_model") or m.get("cpu")
    cores = num(m.get("cores"))
    hardware = [str(cpu)] if cpu else []
    if cores is not None:
        hardware.append(f"{cores:.0f} cores")
    if m.get("platform"):
        hardware.append(str(m["platform"]))
    if hardware:
        items.append("**Machine:** " + ", ".join(hardware))
    software = []
    if m.get("python"):
        software.append(f"Python {m['python']}")
    if m.get("etcd"):
        software.append(f"etcd {m['etcd']} (one member, loopback)")
    software += [f"{k} {v}" for k, v in mapping(m.get("versions")).items()]
    if software:
        items.append("**Software:** " + ", ".join(software))
    loads = numbers(m["load_average_at_start"]) \
        if isinstance(m.get("load_average_at_start"), list) else []
    one_minute = num(m.get("load_average_1m"))
    load = None
    if loads:
        load = " / ".join(f"{x:.2f}" for x in loads) \
            + (" (1, 5, 15 min)" if len(loads) == 3 else "")
        one_minute = loads[0]
    elif one_minute is not None:
        load = f"{one_minute:.2f} (1 min)"
    if load is not None:
        busy = one_minute is not None and cores is not None and one_minute > cores
        items.append("**Load average at start:** " + load + (
            f" — above the {cores:.0f} cores: other work competed for the CPU during this "
            "run" if busy else ""))
    c = mapping(m.get("code"))
    if c.get("commit"):
        line = f"**Code:** commit `{c['commit']}`"
        if c.get("subject"):
            line += f" ({c['subject']})"
        modified = [str(x) for x in c.get("modified") or [] if x]
        if modified:
            line += "; uncommitted changes to " + ", ".join(f"`{x}`" for x in modified)
        if c.get("note"):
            line += f"; note: {c['note']}"
        items.append(line)
    else:
        items.append("**Code:** commit not recorded")
    return [f"- {item}" for item in items] + [""]


# -- coordination -------------------------------------------------------------------------

WORKER_RUNS = {"inprocess_thread": "Worker in-process, thread isolation",
               "inprocess_solve_thread": "Worker in-process, solves on a solve thread",
               "subprocess_process": "dispatch-worker, process isolation",
               "subprocess_thread": "dispatch-worker, thread isolation"}


def render_coordination(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("coordination", "Coordination overhead")
    s.lines += machine_lines(d)
    setup = []
    if num(d.get("threads")) is not None:
        setup.append(f"{count(d['threads'])} threads")
    if num(d.get("cities")) is not None:
        setup.append(f"{count(d['cities'])} cities for the worker runs")
    if num(d.get("seconds_per_measurement")) is not None:
        setup.append(f"{fmt(d['seconds_per_measurement'], '.0f')} s per measurement")
    if num(d.get("repeats")) is not None:
        setup.append(f"{count(d['repeats'])} repeats, raw and fenced alternating")
    if num(d.get("decision_bytes")) is not None:
        setup.append(f"a {count(d['decision_bytes'])}-byte decision")
    if setup:
        s.lines += ["Setup: " + ", ".join(setup) + ".", ""]

    rows = records(d.get("throughput"))
    if rows:
        s.lines += [
            "### Fenced commits against raw etcd transactions", "",
            "The baseline is raw etcd transactions of the fenced commit's shape, sent by the "
            "same client with the same number of threads in the same run (the 1-thread rows "
            "against the 1-thread baseline). Target: fenced commits ≥ 0.8 × the raw rate.", ""]
        body = []
        for r in rows:
            rate, rel = num(r.get("rate_median")), num(r.get("ratio_to_raw"))
            base = rate / rel if rate is not None and rel else None
            target = num(r.get("target_ratio"))
            met = rel >= target if rel is not None and target is not None \
                else flag(r.get("target_met"))
            body.append([text(r.get("what")), text(r.get("threads")), fmt(rate, ",.0f"),
                         spread([r.get("rate_min"), r.get("rate_max")], ",.0f"),
                         fmt(base, ",.0f"), ratio(rel),
                         fmt(r.get("latency_p50_ms"), ".1f"), fmt(r.get("latency_p99_ms"), ".1f"),
                         fmt(r.get("client_cpu_us_per_commit"), ",.0f"),
                         fmt(r.get("etcd_cpu_us_per_commit"), ",.0f"),
                         f"≥ {target:g}×" if target is not None else DASH, verdict(met)])
            if target is not None:
                s.checks.append(Check(
                    f"fenced commits ≥ {target:g} × raw txn rate: {text(r.get('what'))}",
                    f"{fmt(rate, ',.0f')}/s vs {fmt(base, ',.0f')}/s raw = {ratio(rel)}", met))
        s.lines += table(["what", "threads", "commits/s (median)", "min–max",
                          "raw baseline commits/s", "× raw", "latency p50 ms",
                          "latency p99 ms", "client CPU µs/commit", "etcd CPU µs/commit",
                          "target", "result"], body)

    workers = mapping(d.get("worker_runs"))
    body = []
    for key, runs in workers.items():
        rs = records(runs)
        if not rs:
            continue
        fenced = numbers(r.get("fenced_out") for r in rs)
        body.append([WORKER_RUNS.get(key, key), count(len(rs)),
                     fmt(median(r.get("rate") for r in rs), ",.0f"),
                     fmt(median(r.get("txn_rate") for r in rs), ",.0f"),
                     fmt(median(r.get("commits_per_txn") for r in rs), ".2f"),
                     count(sum(fenced)) if fenced else DASH])
    if body:
        s.lines += ["Inside the worker rows (medians over the runs): quick cities due "
                    "together are ticked as a group and commit in one transaction, each "
                    "under its own compare (tick groups), and the commit batcher merges "
                    "what arrives while a transaction is in flight.", ""]
        s.lines += table(["worker run", "runs", "decisions/s", "etcd txn/s",
                          "decisions per txn", "fenced out"], body)

    trips = records(d.get("round_trips"))
    if trips:
        s.lines += [
            "### etcd round trips per tick", "",
            "A worker owning cities, every `EtcdClient.call` counted by request type and "
            "cross-checked against etcd's /metrics. Target from the issue: ≤ 2 round trips "
            "per tick; the benchmark holds the `simulated` state source to 1 (the fenced "
            "commit) and the `etcd` source to 2 (read the state, commit).", ""]
        body = []
        for rt in trips:
            per_tick = num(rt.get("round_trips_per_tick"))
            target = num(rt.get("target"))
            met = round(per_tick, 2) <= target if per_tick is not None and target is not None \
                else flag(rt.get("target_met"))
            calls = " ".join(f"{str(k).removesuffix('Request')}={text(v)}" for k, v in
                             sorted(mapping(rt.get("client_calls")).items()))
            setup = []
            if num(rt.get("cities")) is not None:
                setup.append(f"{count(rt['cities'])} cities")
            if num(rt.get("period")) is not None:
                setup.append(f"period {fmt(rt['period'], 'g')} s")
            body.append([text(rt.get("source")), ", ".join(setup) or DASH, count(rt.get("ticks")),
                         fmt(per_tick, ".3f"), fmt(rt.get("etcd_unary_per_tick"), ".3f"),
                         calls or DASH, fmt(rt.get("commits_per_txn"), ".2f"),
                         fmt(rt.get("background_calls_per_second"), ".2f"),
                         f"≤ {target:g}" if target is not None else DASH, verdict(met)])
            if target is not None:
                s.checks.append(Check(
                    f"≤ {target:g} etcd round trips per tick (`{text(rt.get('source'))}` "
                    "state source)", f"{fmt(per_tick, '.2f')} per tick", met))
        s.lines += table(["state source", "cities, period", "ticks",
                          "calls/tick (client)", "unary requests/tick (etcd)",
                          "calls by type", "decisions per txn", "background calls/s",
                          "target", "result"], body)

    breakdown = {k: mapping(v) for k, v in mapping(d.get("tick_cpu_breakdown_us")).items()
                 if mapping(v)}
    if breakdown:
        names = list(breakdown)
        steps = list(dict.fromkeys(step for n in names for step in breakdown[n]))
        raw_cpu = num(dig(rows, 0, "client_cpu_us_per_commit")) if rows else None
        s.lines += ["### Where a tick's CPU goes", "",
                    "Each step of a tick besides the commit, measured alone on one thread, "
                    "µs of CPU" + (f" (for scale: the raw transaction's client CPU is "
                                   f"{raw_cpu:,.0f} µs per commit above)."
                                   if raw_cpu is not None else "."), ""]
        body = [[step, *(fmt(breakdown[n].get(step), ",.0f") for n in names)]
                for step in steps]
        totals = [sum(numbers(breakdown[n].values())) for n in names]
        body.append(["**total**", *(f"**{t:,.0f}**" for t in totals)])
        s.lines += table(["step", *names], body)
    return s


# -- scale --------------------------------------------------------------------------------

def _worker_spread(r: dict[str, Any], key: str, spec: str) -> str:
    values = mapping(r.get(key)).values()
    return spread(values, spec)


def _p99_met(r: dict[str, Any]) -> bool | None:
    p99 = num(r.get("lateness_p99_ms"))
    return p99 < 100 if p99 is not None else None


def _sweep_table(rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in rows:
        load = numbers(r.get("load_average") or []) if isinstance(r.get("load_average"),
                                                                  list) else []
        body.append([count(r.get("cities")), count(r.get("workers")), text(r.get("isolation")),
                     pct(r.get("on_time_of_due")), pct(r.get("delivered_share")),
                     fmt(r.get("lateness_p50_ms"), ",.0f"),
                     fmt(r.get("lateness_p99_ms"), ",.0f"),
                     fmt(r.get("lateness_max_ms"), ",.0f"),
                     fmt(dig(r, "baseline_jitter", "p99_ms"), ",.0f"),
                     ratio(r.get("p99_vs_baseline_p99"), 1),
                     verdict(_p99_met(r)),
                     fmt(r.get("cpu_per_worker_mean"), ".2f"),
                     fmt(r.get("cpu_total_workers"), ".2f"),
                     fmt(r.get("worker_cpu_ms_per_decision"), ".2f"),
                     fmt(r.get("rss_total_workers"), ",.0f"),
                     fmt(r.get("etcd_cpu_cores"), ".2f"),
                     fmt(r.get("etcd_requests_per_s"), ",.0f"),
                     " → ".join(f"{x:.1f}" for x in load) or DASH])
    return table(["cities", "workers", "isolation", "on time (of due)", "delivered",
                  "late p50 ms", "late p99 ms", "late max ms", "sleeper p99 ms",
                  "p99 ÷ sleeper", "p99 < 100 ms", "CPU/worker", "CPU total",
                  "CPU ms/decision", "RSS total MiB", "etcd CPU", "etcd req/s",
                  "load avg"], body)


def render_scale(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("scale", "Scale")
    s.lines += machine_lines(d)
    setup = []
    if num(d.get("period")) is not None:
        setup.append(f"period {fmt(d['period'], 'g')} s")
    if d.get("solver"):
        setup.append(f"`{d['solver']}` solver")
    params = mapping(d.get("params"))
    if params:
        setup.append("simulated cities " + ", ".join(f"{k}={text(v)}" for k, v in
                                                     params.items()))
    if d.get("on_time"):
        setup.append(f"on time = {d['on_time']}")
    if setup:
        s.lines += ["Setup: " + "; ".join(setup) + ". Each configuration gets a fresh etcd "
                    "member and fresh `dispatch-worker` processes; CPU is in cores, "
                    "averaged over the measurement window.", ""]
    s.lines += [
        "*On time (of due)* counts the gaps between a city's consecutive decisions that were "
        "at most period + 100 ms, over the decisions due (cities × window ÷ period), so a "
        "tick never made counts as late; *on time (of gaps)* divides by the gaps observed "
        "instead. *Lateness* is gap − period. The baseline, measured in the same run, is a "
        "process that only sleeps for the period: how late the machine itself wakes it "
        "(*sleeper p99*).", ""]

    headline = records(d.get("headline"))
    if headline:
        s.lines += ["### Headline configuration", ""]
        timing, cost = [], []
        for i, r in enumerate(headline, start=1):
            label = text(r.get("label"))
            load = numbers(r["load_average"]) if isinstance(r.get("load_average"), list) else []
            timing.append([
                str(i), label, pct(r.get("on_time_of_due"), 2), pct(r.get("on_time_share"), 2),
                pct(r.get("delivered_share")), fmt(r.get("lateness_p50_ms"), ",.0f"),
                fmt(r.get("lateness_p99_ms"), ",.0f"), fmt(r.get("lateness_max_ms"), ",.0f"),
                fmt(dig(r, "baseline_jitter", "p99_ms"), ",.0f"),
                ratio(r.get("p99_vs_baseline_p99"), 1),
                text(r.get("writer_changes_in_window")), text(r.get("silent_cities")),
                text(r.get("warmed_up")), " → ".join(f"{x:.1f}" for x in load) or DASH])
            methods = ", ".join(f"{k} {fmt(v, ',.0f')}" for k, v in
                                mapping(r.get("etcd_requests_by_method_per_s")).items())
            cost.append([
                str(i), label,
                fmt(r.get("cpu_per_worker_mean"), ".2f"),
                _worker_spread(r, "worker_cpu_cores_with_solvers", ".2f"),
                fmt(r.get("cpu_total_workers"), ".2f"),
                fmt(r.get("worker_cpu_ms_per_decision"), ".2f"),
                fmt(r.get("rss_per_worker_mean"), ",.0f"),
                _worker_spread(r, "worker_rss_mib_with_solvers", ",.0f"),
                fmt(r.get("rss_total_workers"), ",.0f"),
                fmt(r.get("etcd_cpu_cores"), ".2f"), fmt(r.get("etcd_requests_per_s"), ",.0f"),
                methods or DASH])
        s.lines += ["Timeliness:", ""]
        s.lines += table(["run", "configuration", "on time (of due)", "on time (of gaps)",
                          "delivered", "late p50 ms", "late p99 ms", "late max ms",
                          "sleeper p99 ms", "p99 ÷ sleeper", "owner changes", "silent cities",
                          "warmed up", "load avg start → end"], timing)
        s.lines += ["Cost (CPU and RSS per worker include its solver processes):", ""]
        s.lines += table(["run", "configuration", "CPU/worker (mean)", "CPU/worker (range)",
                          "CPU total", "worker CPU ms/decision", "RSS/worker MiB (mean)",
                          "RSS/worker MiB (range)", "RSS total MiB", "etcd CPU",
                          "etcd req/s", "etcd req/s by method"], cost)
        s.checks += _scale_checks(headline)
        s.lines += ["Targets (issue): with 1,000 cities at a 1 s period over 4 workers, "
                    "≥ 99.5 % of ticks on time and p99 lateness < 100 ms.", ""]
        s.lines += table(["run", "configuration", "≥ 99.5 % on time", "p99 < 100 ms"],
                         [[str(i), text(r.get("label")),
                           f"{pct(r.get('on_time_of_due'), 2)}: "
                           f"{verdict(_on_time_met(r))}",
                           f"{fmt(r.get('lateness_p99_ms'), ',.0f')} ms: "
                           f"{verdict(_p99_met(r))}"]
                          for i, r in enumerate(headline, start=1)])

    pvt = {k: v for k, v in mapping(d.get("process_vs_thread")).items() if num(v) is not None}
    if pvt:
        names = {"cpu_total_workers": "CPU of the workers (total)",
                 "rss_total_workers": "RSS of the workers (total)",
                 "lateness_p99_ms": "p99 lateness", "etcd_requests_per_s": "etcd requests/s"}
        s.lines += ["Process isolation against thread isolation, medians of the headline "
                    "runs:", ""]
        s.lines += table(["figure", "process ÷ thread"],
                         [[names.get(k, k), ratio(v)] for k, v in pvt.items()])

    cities = records(d.get("city_sweep"))
    if cities:
        s.lines += ["### City sweep", "",
                    "How many cities the machine carries, and what each costs. *p99 < 100 ms* "
                    "is judged on lateness alone.", ""]
        s.lines += _sweep_table(cities)
    if "most_cities_with_p99_under_100ms" in d:
        most = num(d.get("most_cities_with_p99_under_100ms"))
        swept = ", ".join(count(r.get("cities")) for r in cities)
        workers_swept = ", ".join(dict.fromkeys(count(r.get("workers")) for r in cities))
        what = "most cities with p99 lateness < 100 ms and ≥ 99 % of decisions delivered" \
            + (f" ({workers_swept} workers)" if workers_swept else "")
        found = f"{most:,.0f}" if most is not None else \
            "none of the sizes swept" + (f" ({swept})" if swept else "")
        # A sweep window is shorter than the headline's: say so when the headline runs of
        # the same size missed what the sweep found carried.
        longer = [r for r in headline if num(r.get("cities")) == most and _p99_met(r) is False]
        if most is not None and longer:
            found += (f" (in a {fmt(dig(cities, 0, 'window_s'), '.0f')} s sweep window; "
                      f"{len(longer)} of {len(headline)} longer headline runs of "
                      f"{most:,.0f} cities missed p99 < 100 ms)")
        s.lines += [f"{what.capitalize()}: **{found}**.", ""]
        s.checks.append(Check(what, found, None, "no target"))
    workers = records(d.get("worker_sweep"))
    if workers:
        s.lines += ["### Worker sweep", "",
                    "The same cities over more or fewer workers.", ""]
        s.lines += _sweep_table(workers)
    s.lines += ctx.image("scale", "scale: cost per decision against cities and workers, "
                         "lateness against cities")
    return s


def _on_time_met(r: dict[str, Any]) -> bool | None:
    share = num(r.get("on_time_of_due"))
    return share >= 0.995 if share is not None else None


def _comparable(r: dict[str, Any]) -> bool:
    """The configuration the scale targets are set for."""
    return (num(r.get("cities")) == 1000 and num(r.get("workers")) == 4
            and num(r.get("period")) == 1.0)


def _scale_checks(headline: list[dict[str, Any]]) -> list[Check]:
    """The two headline targets, each over every run of the target's configuration."""
    runs = [(i, r) for i, r in enumerate(headline, start=1) if _comparable(r)]
    targets: list[tuple[str, Callable[[dict[str, Any]], bool | None],
                        Callable[[dict[str, Any]], str]]] = [
        ("≥ 99.5 % of ticks on time (1,000 cities × 4 workers, 1 s)", _on_time_met,
         lambda r: f"{pct(r.get('on_time_of_due'), 2)} of due"),
        ("p99 lateness < 100 ms (1,000 cities × 4 workers, 1 s)", _p99_met,
         lambda r: f"{fmt(r.get('lateness_p99_ms'), ',.0f')} ms "
                   f"({ratio(r.get('p99_vs_baseline_p99'), 0)} a sleeping process)"),
    ]
    checks = []
    for target, met_of, show in targets:
        if not runs:
            shown = ", ".join(text(r.get("label")) for r in headline)
            checks.append(Check(target, f"not measured (this run: {shown})", None,
                                "not measured"))
            continue
        verdicts = [m for m in (met_of(r) for _, r in runs) if m is not None]
        missed = sum(1 for m in verdicts if not m)
        measured = "; ".join(f"run {i} ({text(r.get('isolation'))}): {show(r)}"
                             for i, r in runs)
        checks.append(Check(target, measured, all(verdicts) if verdicts else None,
                            f"{missed} of {len(verdicts)} runs" if missed else ""))
    return checks


# -- failover -----------------------------------------------------------------------------

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


def render_failover(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("failover", "Failover and handover")
    s.lines += machine_lines(d)
    setup = []
    for key, what in (("workers", "workers"), ("kill_cities", "cities in the kill trials"),
                      ("graceful_cities", "cities in the graceful trials")):
        if num(d.get(key)) is not None:
            setup.append(f"{count(d[key])} {what}")
    if num(d.get("period")) is not None:
        setup.append(f"period {fmt(d['period'], 'g')} s")
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
        body.append([fmt(ttl, "g"), count(k.get("trials")), count(k.get("incomplete_trials")),
                     fmt(worst.get("p50"), ".2f"), fmt(p99, ".2f"), fmt(worst.get("max"), ".2f"),
                     count(city.get("n")), fmt(city.get("p50"), ".2f"),
                     fmt(city.get("p99"), ".2f"),
                     fmt(dig(k, "lease_expired_after_kill", "p50"), ".2f"),
                     fmt(dig(k, "takeover_after_lease_expiry", "p50"), ".3f"),
                     fmt(dig(k, "takeover_after_lease_expiry", "p99"), ".3f"),
                     ratio(quotient(p99, ttl)),
                     f"≤ {target:g} s" if target is not None else DASH, verdict(met)])
        if ttl is not None:
            seen.add(ttl)
            s.checks.append(Check(f"kill -9 failover p99 ≤ TTL + 0.5 s (TTL {ttl:g} s)",
                                  f"p99 {fmt(p99, '.2f')} s over {count(worst.get('n'))} kills "
                                  f"({ratio(quotient(p99, ttl))} TTL)", met))
    s.lines += table(["TTL s", "kills", "incomplete", "worst city p50 s", "worst city p99 s",
                      "worst city max s", "all cities n", "all cities p50 s",
                      "all cities p99 s", "lease expiry p50 s", "takeover p50 s",
                      "takeover p99 s", "p99 ÷ TTL", "target", "result"], body)
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
        body.append([name, count(g.get("trials")), fmt(gap.get("p50"), ".3f"), fmt(p99, ".3f"),
                     fmt(gap.get("max"), ".3f"), ratio(rel), fmt(g.get("moved_mean"), ".1f"),
                     fmt(g.get("ideal_moved_mean"), ".1f"),
                     ratio(quotient(g.get("moved_mean"), g.get("ideal_moved_mean"))),
                     count(g.get("trials_with_a_late_city")),
                     f"≤ {target:g} s" if target is not None else DASH, verdict(met)])
        s.checks.append(Check(f"graceful handover p99 gap ≤ period + 100 ms ({name})",
                              f"p99 {fmt(p99, '.3f')} s ({ratio(rel)} period) over "
                              f"{count(g.get('trials'))} trials", met))
    if body:
        s.lines += ["### Graceful handover", "",
                    "For the cities that changed writer, the largest gap between consecutive "
                    "decisions around the event, per trial. The baseline is the period. Target "
                    "(issue): p99 gap ≤ period + 100 ms.", ""]
        s.lines += table(["event", "trials", "gap p50 s", "gap p99 s", "gap max s",
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
                rows.append([what, count(q.get("n")), fmt(q.get("p50"), spec),
                             fmt(q.get("p99"), spec), fmt(q.get("max"), spec),
                             fmt(q.get("mean"), spec)])
        s.lines += ["### A worker joining", ""]
        s.lines += table(["", "n", "p50", "p99", "max", "mean"], rows)
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


# -- leaselock ----------------------------------------------------------------------------

def render_leaselock(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("leaselock", "Comparison with client-go's LeaseLock")
    s.lines += machine_lines(d)
    ll, el = mapping(d.get("leaselock")), mapping(d.get("election"))
    setup = []
    if ll:
        setup.append("LeaseLock: LeaseDuration " + fmt(ll.get("lease_duration_s"), "g")
                     + " s, RenewDeadline " + fmt(ll.get("renew_deadline_s"), "g")
                     + " s, RetryPeriod " + fmt(ll.get("retry_period_s"), "g")
                     + " s, jitter " + fmt(ll.get("jitter_factor"), "g"))
    if el:
        setup.append("our election: lease TTL " + fmt(el.get("lease_ttl_s"), "g") + " s, "
                     + count(el.get("workers")) + " workers, " + count(el.get("cities"))
                     + " cities")
    if num(d.get("period")) is not None:
        setup.append(f"a decision every {fmt(d['period'], 'g')} s")
    if setup:
        s.lines += ["Setup: " + "; ".join(setup) + ". The LeaseLock is client-go's "
                    "algorithm reimplemented on etcd; both run in the same invocation against "
                    "the same decision watch.", ""]

    summary = mapping(d.get("summary"))
    ours, theirs = mapping(summary.get("election")), mapping(summary.get("leaselock"))
    ttl = num(el.get("lease_ttl_s"))
    if ttl is None:
        ttl = num(dig(records(d.get("election_kill")), 0, "ttl"))

    def incomplete(key: str) -> str:
        rs = records(d.get(key))
        return count(sum(1 for r in rs if r.get("complete") is False)) if rs else DASH

    body = []
    for name, q, key, over50, over99 in (
            ("etcd election + fencing" + (f" (TTL {ttl:g} s)" if ttl is not None else ""),
             ours, "election_kill", 1.0, 1.0),
            ("client-go LeaseLock", theirs, "leaselock_kill",
             summary.get("leaselock_over_election_p50"),
             summary.get("leaselock_over_election_p99"))):
        if q:
            body.append([name, count(q.get("n")), incomplete(key), fmt(q.get("p50"), ".2f"),
                         fmt(q.get("p90"), ".2f"), fmt(q.get("p99"), ".2f"),
                         fmt(q.get("max"), ".2f"), fmt(q.get("mean"), ".2f"),
                         ratio(over50), ratio(over99)])
    if body:
        s.lines += ["### kill -9 of the leader", "",
                    "From the SIGKILL to the first decision by the next leader, seconds; the "
                    "baseline is our election in the same run.", ""]
        s.lines += table(["mechanism", "kills", "incomplete", "p50 s", "p90 s", "p99 s",
                          "max s", "mean s", "p50 × ours", "p99 × ours"], body)
    p99 = num(ours.get("p99"))
    if p99 is not None and ttl is not None:
        s.checks.append(Check(f"our election's kill -9 failover p99 ≤ TTL + 0.5 s (TTL {ttl:g} "
                              "s, this run)",
                              f"p99 {p99:.2f} s; LeaseLock p99 {fmt(theirs.get('p99'), '.2f')} s "
                              f"({ratio(summary.get('leaselock_over_election_p99'))} ours)",
                              p99 <= ttl + 0.5))

    body = []
    totals: dict[str, float] = {}
    for name, key in (("etcd election + fencing", "election_pause"),
                      ("client-go LeaseLock", "leaselock_pause")):
        rs = records(d.get(key))
        if not rs:
            continue
        stale = numbers(r.get("stale_accepted") for r in rs)
        fenced = numbers(r.get("fenced_out_logged") for r in rs)
        down = numbers(r.get("stepped_down_on_lease_loss") for r in rs)
        totals[key] = sum(stale)
        body.append([name, count(len(rs)), spread((r.get("paused_s") for r in rs), ".1f"),
                     count(sum(stale)) if stale else DASH,
                     count(sum(fenced)) if fenced else DASH,
                     count(sum(down)) if down else DASH])
    if not body:  # older results: only the summary
        for name, q in mapping(d.get("pause_summary")).items():
            body.append([str(name), count(dig(q, "trials")), DASH,
                         count(dig(q, "stale_accepted")), DASH, DASH])
            if "fenc" in str(name) and num(dig(q, "stale_accepted")) is not None:
                totals["election_pause"] = num(dig(q, "stale_accepted")) or 0.0
    if body:
        s.lines += ["### A leader paused past its lease", "",
                    "The leader is stopped (SIGSTOP) for longer than its lease, another takes "
                    "over and decides, the old one is continued (SIGCONT). Counted: the old "
                    "leader's decisions accepted after the new leader's first. The fence "
                    "should reject every one of them.", ""]
        s.lines += table(["mechanism", "trials", "paused s", "stale decisions accepted",
                          "rejected by the fence (logged)", "stepped down on lease loss"],
                         body)
    if "election_pause" in totals:
        ours_stale = totals["election_pause"]
        theirs_stale = totals.get("leaselock_pause")
        s.checks.append(Check("no stale decision accepted after a pause past the lease "
                              "(fenced election; expected 0)",
                              f"{ours_stale:,.0f}" + (f" (LeaseLock: {theirs_stale:,.0f})"
                                                      if theirs_stale is not None else ""),
                              ours_stale == 0))
    s.lines += ctx.image("leaselock", "failover distributions: etcd election against "
                         "LeaseLock")
    return s


# -- solvers ------------------------------------------------------------------------------

def render_solvers(d: dict[str, Any], ctx: Context) -> Section:
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
                     fmt(r.get("raw_scipy_ms"), ",.1f"), fmt(scipy_cpu, ",.1f"),
                     ratio(1.0 if scipy_cpu else None), DASH, DASH, DASH, DASH])
        if num(r.get("raw_lap_cpu_ms")) is not None:
            body.append(["", "raw `lap.lapjv`", fmt(r.get("raw_lap_ms"), ",.1f"),
                         fmt(r.get("raw_lap_cpu_ms"), ",.1f"),
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
            body.append(["", f"`{name}`", fmt(m.get("ms"), ",.1f"), fmt(m.get("cpu_ms"), ",.1f"),
                         ratio(rel), fmt(gap, "+.2f", " %"), count(m.get("assigned")),
                         fmt(m.get("mean_eta_s"), ".1f"),
                         fmt(m.get("mean_eta_gap_pct"), "+.2f", " %")])
    if body:
        s.lines += ["### Speed and cost", ""]
        s.lines += table(["scenario", "solver", "wall ms", "CPU ms", "× raw scipy",
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
        s.lines += table(["orders × couriers", "raw scipy CPU ms", "hungarian CPU ms",
                          "hungarian ÷ raw"],
                         [[f"{count(r.get('orders'))} × {count(r.get('couriers'))}",
                           fmt(r.get("raw_scipy_cpu_ms"), ",.0f"),
                           fmt(r.get("hungarian_cpu_ms"), ",.0f"),
                           ratio(quotient(r.get("hungarian_cpu_ms"), r.get("raw_scipy_cpu_ms")))]
                          for r in sweep])
    if ctx.images.is_dir():
        for path in sorted(ctx.images.glob("solver*.png")):
            s.lines += ctx.image(path.stem, f"solvers: {path.stem}")
    measured = []
    if numbers(hung):
        measured.append(f"`hungarian` {spread(hung)}× raw scipy")
    if greedy:
        measured.append(f"`greedy` {spread(g[0] for g in greedy)}× raw scipy, ETA gap "
                        f"{spread((g[2] for g in greedy), '+.1f')} %")
    if measured:
        s.checks.append(Check("none set: speed as a ratio to scipy in the same run, cost gaps",
                              "; ".join(measured), None, "no target"))
    return s


# -- anything else ------------------------------------------------------------------------

def render_tickcost(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("tickcost", "CPU per tick, in situ")
    s.lines += machine_lines(d)
    setup = [f"{count(d.get('cities'))} cities" if num(d.get("cities")) is not None else "",
             f"period {fmt(d.get('period'), 'g')} s" if num(d.get("period")) is not None else "",
             f"`{text(d.get('solver'))}`" if d.get("solver") else "",
             f"{count(d.get('tick_threads'))} tick threads"
             if num(d.get("tick_threads")) is not None else ""]
    s.lines += ["Setup: one `Worker` in the benchmark's process (`thread` isolation) "
                "ticking " + ", ".join(x for x in setup if x) + " on one etcd member; each "
                "thread's CPU from `/proc`, grouped by the Python thread's name, divided by "
                "the ticks committed. Baselines from the same process in the same run: one "
                "raw unary etcd call, and the same cities ticked one after another on one "
                "thread with each pass's commits sent together (no ticker, no pools, no "
                "round trip per tick). No target: this explains the whole-worker and scale "
                "figures.", ""]
    body = [[text(name), fmt(us, ",.0f")]
            for name, us in mapping(d.get("cpu_us_per_tick_by_thread")).items()
            if num(us) is not None]
    body += [["**worker, all threads**", f"**{fmt(d.get('worker_cpu_us_per_tick'), ',.0f')}**"],
             ["one-thread pass (baseline)", fmt(d.get("one_thread_pass_cpu_us_per_tick"), ",.0f")],
             ["one raw etcd call, client CPU (baseline)",
              fmt(d.get("raw_call_client_cpu_us"), ",.0f")]]
    s.lines += table(["where", "µs CPU per tick"], body)
    s.lines += [f"Worker ÷ one-thread pass: {ratio(d.get('worker_vs_one_thread_pass'))}; "
                f"{fmt(d.get('commits_per_batch'), '.2f')} commits per etcd transaction; "
                f"{fmt(d.get('cores'), '.2f')} cores at "
                f"{fmt(d.get('ticks_per_second'), ',.0f')} ticks/s.", ""]
    return s


def render_other(name: str, d: dict[str, Any], ctx: Context) -> Section:
    s = Section(name, f"Other results: {name}")
    s.lines += machine_lines(d)
    s.lines += [f"`bench/report.py` has no renderer for `{name}.json`; top-level keys: "
                + ", ".join(f"`{k}`" for k in d if k != "machine") + ".", ""]
    s.lines += ctx.image(name, name)
    return s


RENDERERS: dict[str, Callable[[dict[str, Any], Context], Section]] = {
    "coordination": render_coordination, "tickcost": render_tickcost, "scale": render_scale,
    "failover": render_failover, "leaselock": render_leaselock, "solvers": render_solvers,
}
TITLES = {"coordination": "Coordination overhead", "tickcost": "CPU per tick, in situ",
          "scale": "Scale",
          "failover": "Failover and handover",
          "leaselock": "Comparison with client-go's LeaseLock", "solvers": "Solvers"}


# -- the page -----------------------------------------------------------------------------

def load_results(directory: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every ``*.json`` in ``directory`` that reads as an object, and what went wrong with
    the others. A benchmark may be rewriting a file while we read it: retry briefly."""
    found: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        error = ""
        for attempt in range(3):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt < 2:
                    time.sleep(RETRY_DELAY)
                continue
            if isinstance(data, dict):
                found[path.stem] = data
                error = ""
            else:
                error = f"not a JSON object but {type(data).__name__}"
            break
        if error:
            problems[path.stem] = error
    return found, problems


def intro(results_dir: str) -> list[str]:
    lines = [
        "# Benchmarks", "",
        "<!-- Generated by bench/report.py from bench/results/*.json: do not edit by hand; "
        "run `make bench-report` after a benchmark. -->", "",
        f"Every figure on this page comes from the results files in `{results_dir}`, "
        "written by the benchmarks in `bench/` together with the machine they ran on. Each "
        "benchmark measures its baseline in the same run, on the same machine, so the "
        "ratios to it travel better than the absolute figures, the more so on a busy "
        "machine: see each section's load average against its cores.", "",
        "## Reproducing", "",
        "- `make bench` runs every benchmark (about an hour on 2 cores), then regenerates "
        "this page; `make bench BENCH_ARGS=--quick` runs the short versions (a minute or "
        "two each).",
        "- `make bench-report` (or `python bench/report.py`) only regenerates this page "
        "from the results present; `python bench/report.py --help` for its options.",
        "- One benchmark at a time: each starts its own etcd on loopback (`etcd` from "
        "Debian's `etcd-server`) and its own workers, prints its tables and writes "
        "`bench/results/<name>.json`; `--quick` runs the short version, `--help` explains "
        "the options. The plots need the `bench` extra (`pip install -e '.[bench]'`).", "",
    ]
    lines += table(["command", "measures", "baseline, same run"],
                   [[f"`python bench/{name}.py`", what, base]
                    for name, (what, base) in COMMANDS.items()])
    return lines


def render(results: dict[str, dict[str, Any]], problems: dict[str, str], ctx: Context,
           results_dir: str = "bench/results") -> str:
    names = list(ORDER) + sorted(n for n in results if n not in ORDER)
    sections: list[Section] = []
    for name in names:
        title = TITLES.get(name, f"Other results: {name}")
        if name in results:
            try:
                renderer = RENDERERS.get(name)
                section = renderer(results[name], ctx) if renderer \
                    else render_other(name, results[name], ctx)
            except Exception as exc:  # a surprise in one file must not lose the others
                print(f"report: {name}.json: {type(exc).__name__}: {exc}", file=sys.stderr)
                section = Section(name, title, [
                    f"The results in `{name}.json` could not be rendered "
                    f"({type(exc).__name__}: {exc}).", ""])
        elif name in problems:
            section = Section(name, title, [f"`{name}.json` could not be read: "
                                            f"{problems[name]}.", ""])
        else:
            section = Section(name, title, [f"No results yet: run `python bench/{name}.py`.",
                                            ""])
        sections.append(section)

    lines = intro(results_dir)
    lines += ["## Targets at a glance", "",
              "The targets set in the issues, against the latest results; details and the "
              "baselines in each section. *missed* means the run did not reach the target.", ""]
    glance = []
    for sec in sections:
        mode = results.get(sec.name, {}).get("mode")
        where = f"[{sec.name}](#{slug(sec.title)})" + (" (quick run)" if mode == "quick" else "")
        for c in sec.checks:
            result = verdict(c.met) if c.met is not None else (c.note or DASH)
            if c.met is not None and c.note:
                result += f" ({c.note})"
            glance.append([where, c.target, c.measured, result])
    lines += table(["benchmark", "target", "measured", "result"], glance) or [
        "No results with targets yet.", ""]
    lines += ["## Contents", ""]
    lines += [f"- [{sec.title}](#{slug(sec.title)})" for sec in sections] + [""]
    for sec in sections:
        lines += [f"## {sec.title}", "", *sec.lines]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/report.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="DIR",
                        help="directory of <name>.json results (default: bench/results)")
    parser.add_argument("--out", type=Path, default=OUT, metavar="FILE",
                        help="Markdown file to write (default: docs/benchmarks.md)")
    parser.add_argument("--images", type=Path, default=IMAGES, metavar="DIR",
                        help="where the plots are; linked relative to --out, and only if "
                             "present (default: docs/img)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"no results directory: {args.results}")
    results, problems = load_results(args.results)
    for name, problem in problems.items():
        print(f"report: skipped {name}.json: {problem}", file=sys.stderr)
    try:
        shown = args.results.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        shown = str(args.results)
    page = render(results, problems, Context(out=args.out.resolve(),
                                             images=args.images.resolve()), shown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out} from {len(results)} results file(s) in {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
