"""The coordination benchmark's section: fenced commits against raw etcd
transactions, the worker's own rate, round trips per tick, where a tick's CPU goes."""

from __future__ import annotations

from typing import Any

from bench.report.format import (
    DASH,
    count,
    dig,
    flag,
    mapping,
    markdown_table,
    median,
    num,
    number,
    number_range,
    numbers,
    ratio,
    records,
    text,
    verdict,
)
from bench.report.parts import Check, Context, Section, machine_lines

WORKER_RUNS = {"inprocess_thread": "Worker in-process, thread isolation",
               "inprocess_solve_thread": "Worker in-process, solves on a solve thread",
               "subprocess_process": "dispatch-worker, process isolation",
               "subprocess_thread": "dispatch-worker, thread isolation"}


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("coordination", "Coordination overhead")
    s.lines += machine_lines(d)
    setup = []
    if num(d.get("threads")) is not None:
        setup.append(f"{count(d['threads'])} threads")
    if num(d.get("cities")) is not None:
        setup.append(f"{count(d['cities'])} cities for the worker runs")
    if num(d.get("seconds_per_measurement")) is not None:
        setup.append(f"{number(d['seconds_per_measurement'], '.0f')} s per measurement")
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
            body.append([text(r.get("what")), text(r.get("threads")), number(rate, ",.0f"),
                         number_range([r.get("rate_min"), r.get("rate_max")], ",.0f"),
                         number(base, ",.0f"), ratio(rel),
                         number(r.get("latency_p50_ms"), ".1f"),
                         number(r.get("latency_p99_ms"), ".1f"),
                         number(r.get("client_cpu_us_per_commit"), ",.0f"),
                         number(r.get("etcd_cpu_us_per_commit"), ",.0f"),
                         f"≥ {target:g}×" if target is not None else DASH, verdict(met)])
            if target is not None:
                s.checks.append(Check(
                    f"fenced commits ≥ {target:g} × raw txn rate: {text(r.get('what'))}",
                    f"{number(rate, ',.0f')}/s vs {number(base, ',.0f')}/s raw = {ratio(rel)}",
                    met))
        s.lines += markdown_table(["what", "threads", "commits/s (median)", "min–max",
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
                     number(median(r.get("rate") for r in rs), ",.0f"),
                     number(median(r.get("txn_rate") for r in rs), ",.0f"),
                     number(median(r.get("commits_per_txn") for r in rs), ".2f"),
                     count(sum(fenced)) if fenced else DASH])
    if body:
        s.lines += ["Inside the worker rows (medians over the runs): quick cities due "
                    "together are ticked as a group and commit in one transaction, each "
                    "under its own compare (tick groups), and the commit batcher merges "
                    "what arrives while a transaction is in flight.", ""]
        s.lines += markdown_table(["worker run", "runs", "decisions/s", "etcd txn/s",
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
                setup.append(f"period {number(rt['period'], 'g')} s")
            body.append([text(rt.get("source")), ", ".join(setup) or DASH, count(rt.get("ticks")),
                         number(per_tick, ".3f"), number(rt.get("etcd_unary_per_tick"), ".3f"),
                         calls or DASH, number(rt.get("commits_per_txn"), ".2f"),
                         number(rt.get("background_calls_per_second"), ".2f"),
                         f"≤ {target:g}" if target is not None else DASH, verdict(met)])
            if target is not None:
                s.checks.append(Check(
                    f"≤ {target:g} etcd round trips per tick (`{text(rt.get('source'))}` "
                    "state source)", f"{number(per_tick, '.2f')} per tick", met))
        s.lines += markdown_table(["state source", "cities, period", "ticks",
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
        body = [[step, *(number(breakdown[n].get(step), ",.0f") for n in names)]
                for step in steps]
        totals = [sum(numbers(breakdown[n].values())) for n in names]
        body.append(["**total**", *(f"**{t:,.0f}**" for t in totals)])
        s.lines += markdown_table(["step", *names], body)
    return s
