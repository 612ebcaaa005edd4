"""The scale benchmark's section: the headline configuration's timeliness and cost
against its two targets, process against thread isolation, the city and worker sweeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.report.format import (
    DASH,
    count,
    dig,
    mapping,
    markdown_table,
    num,
    number,
    number_range,
    numbers,
    pct,
    ratio,
    records,
    text,
    verdict,
)
from bench.report.parts import Check, Context, Section, machine_lines


def _worker_range(r: dict[str, Any], key: str, spec: str) -> str:
    values = mapping(r.get(key)).values()
    return number_range(values, spec)


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
                     number(r.get("lateness_p50_ms"), ",.0f"),
                     number(r.get("lateness_p99_ms"), ",.0f"),
                     number(r.get("lateness_max_ms"), ",.0f"),
                     number(dig(r, "baseline_jitter", "p99_ms"), ",.0f"),
                     ratio(r.get("p99_vs_baseline_p99"), 1),
                     verdict(_p99_met(r)),
                     number(r.get("cpu_per_worker_mean"), ".2f"),
                     number(r.get("cpu_total_workers"), ".2f"),
                     number(r.get("worker_cpu_ms_per_decision"), ".2f"),
                     number(r.get("rss_total_workers"), ",.0f"),
                     number(r.get("etcd_cpu_cores"), ".2f"),
                     number(r.get("etcd_requests_per_s"), ",.0f"),
                     " → ".join(f"{x:.1f}" for x in load) or DASH])
    return markdown_table(["cities", "workers", "isolation", "on time (of due)", "delivered",
                           "late p50 ms", "late p99 ms", "late max ms", "sleeper p99 ms",
                           "p99 ÷ sleeper", "p99 < 100 ms", "CPU/worker", "CPU total",
                           "CPU ms/decision", "RSS total MiB", "etcd CPU", "etcd req/s",
                           "load avg"], body)


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("scale", "Scale")
    s.lines += machine_lines(d)
    setup = []
    if num(d.get("period")) is not None:
        setup.append(f"period {number(d['period'], 'g')} s")
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
                pct(r.get("delivered_share")), number(r.get("lateness_p50_ms"), ",.0f"),
                number(r.get("lateness_p99_ms"), ",.0f"), number(r.get("lateness_max_ms"), ",.0f"),
                number(dig(r, "baseline_jitter", "p99_ms"), ",.0f"),
                ratio(r.get("p99_vs_baseline_p99"), 1),
                text(r.get("writer_changes_in_window")), text(r.get("silent_cities")),
                text(r.get("warmed_up")), " → ".join(f"{x:.1f}" for x in load) or DASH])
            methods = ", ".join(f"{k} {number(v, ',.0f')}" for k, v in
                                mapping(r.get("etcd_requests_by_method_per_s")).items())
            cost.append([
                str(i), label,
                number(r.get("cpu_per_worker_mean"), ".2f"),
                _worker_range(r, "worker_cpu_cores_with_solvers", ".2f"),
                number(r.get("cpu_total_workers"), ".2f"),
                number(r.get("worker_cpu_ms_per_decision"), ".2f"),
                number(r.get("rss_per_worker_mean"), ",.0f"),
                _worker_range(r, "worker_rss_mib_with_solvers", ",.0f"),
                number(r.get("rss_total_workers"), ",.0f"),
                number(r.get("etcd_cpu_cores"), ".2f"),
                number(r.get("etcd_requests_per_s"), ",.0f"),
                methods or DASH])
        s.lines += ["Timeliness:", ""]
        s.lines += markdown_table(["run", "configuration", "on time (of due)", "on time (of gaps)",
                                   "delivered", "late p50 ms", "late p99 ms", "late max ms",
                                   "sleeper p99 ms", "p99 ÷ sleeper", "owner changes",
                                   "silent cities", "warmed up", "load avg start → end"], timing)
        s.lines += ["Cost (CPU and RSS per worker include its solver processes):", ""]
        s.lines += markdown_table(["run", "configuration", "CPU/worker (mean)",
                                   "CPU/worker (range)", "CPU total", "worker CPU ms/decision",
                                   "RSS/worker MiB (mean)", "RSS/worker MiB (range)",
                                   "RSS total MiB", "etcd CPU", "etcd req/s",
                                   "etcd req/s by method"], cost)
        s.checks += _scale_checks(headline)
        s.lines += ["Targets (issue): with 1,000 cities at a 1 s period over 4 workers, "
                    "≥ 99.5 % of ticks on time and p99 lateness < 100 ms.", ""]
        s.lines += markdown_table(["run", "configuration", "≥ 99.5 % on time", "p99 < 100 ms"],
                                  [[str(i), text(r.get("label")),
                                    f"{pct(r.get('on_time_of_due'), 2)}: "
                                    f"{verdict(_on_time_met(r))}",
                                    f"{number(r.get('lateness_p99_ms'), ',.0f')} ms: "
                                    f"{verdict(_p99_met(r))}"]
                                   for i, r in enumerate(headline, start=1)])

    pvt = {k: v for k, v in mapping(d.get("process_vs_thread")).items() if num(v) is not None}
    if pvt:
        names = {"cpu_total_workers": "CPU of the workers (total)",
                 "rss_total_workers": "RSS of the workers (total)",
                 "lateness_p99_ms": "p99 lateness", "etcd_requests_per_s": "etcd requests/s"}
        s.lines += ["Process isolation against thread isolation, medians of the headline "
                    "runs:", ""]
        s.lines += markdown_table(["figure", "process ÷ thread"],
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
            found += (f" (in a {number(dig(cities, 0, 'window_s'), '.0f')} s sweep window; "
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
         lambda r: f"{number(r.get('lateness_p99_ms'), ',.0f')} ms "
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
