"""The relay benchmark's section: draining decisions into PostgreSQL against raw psycopg
writes of the same rows in the same batches, etcd-commit-to-row latency at a paced
rate, and the relay's CPU per decision."""

from __future__ import annotations

from typing import Any

from bench.report.format import (
    DASH,
    count,
    flag,
    mapping,
    markdown_table,
    num,
    number,
    number_range,
    quotient,
    ratio,
    records,
    text,
    verdict,
)
from bench.report.parts import Check, Context, Section, machine_lines

#: the paced rate the latency target is set at, and how close a run must come to it
TARGET_RATE, RATE_SLACK = 1000.0, 0.95


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("relay", "Decisions out: the relay")
    s.lines += machine_lines(d)
    setup = []
    if d.get("relay"):
        setup.append(f"the relay: {text(d['relay'])}")
    if d.get("postgres"):
        setup.append(f"PostgreSQL: {text(d['postgres'])}")
    if num(d.get("cities")) is not None:
        setup.append(f"{count(d['cities'])} cities")
    if num(d.get("decision_bytes")) is not None:
        setup.append(f"{count(d['decision_bytes'])}-byte decisions")
    if num(d.get("assignments_per_decision")) is not None:
        setup.append(f"{number(d['assignments_per_decision'], '.1f')} audit rows each "
                     "on average")
    if num(d.get("batch_max")) is not None:
        setup.append(f"`--batch-max {count(d['batch_max'])}`")
    if setup:
        s.lines += ["Setup: " + ", ".join(setup) + "; one decision per etcd revision.", ""]
    _throughput(s, d)
    _latency(s, _latency_runs(d.get("latency")))
    _cpu(s, d)
    return s


def _throughput(s: Section, d: dict[str, Any]) -> None:
    t = mapping(d.get("throughput"))
    relay_runs, raw_runs = records(t.get("relay_runs")), records(t.get("raw_runs"))
    if not t:
        s.checks.append(Check("relay ≥ 0.8 × raw psycopg writes of the same rows",
                              "not measured", None))
        return
    rel = num(t.get("ratio_to_raw"))
    if rel is None:
        rel = quotient(t.get("relay_rate_median"), t.get("raw_rate_median"))
    target = num(t.get("target_ratio"))
    met = rel >= target if rel is not None and target is not None else flag(t.get("target_met"))
    what = f"{count(d['decisions'])} decisions" if num(d.get("decisions")) is not None \
        else "Decisions"
    runs = f", {count(d['repeats'])} times by each arm, alternating" \
        if num(d.get("repeats")) is not None else ""
    s.lines += [
        "### Draining into PostgreSQL against raw psycopg", "",
        f"{what} preloaded into etcd are drained into a fresh database{runs}. The baseline "
        "writes the same rows with the sink's own statements (the conditional upserts, "
        "each adding its audit rows, which the server expands from the decision's JSON, "
        "and the cursor, one transaction per batch) with psycopg directly, parameters "
        "built before its clock starts, "
        "in the very batches the relay made in the run before it (read back from the "
        "database by transaction id). Both rates count the decisions after the first batch, "
        "from its commit to the last one's. Target: relay ≥ 0.8 × raw.", ""]
    match = flag(t.get("rows_match"))
    body = [["`dispatch-relay`", count(len(relay_runs)) if relay_runs else DASH,
             number(t.get("relay_rate_median"), ",.0f"),
             number_range([t.get("relay_rate_min"), t.get("relay_rate_max")], ",.0f"),
             ratio(rel), number(t.get("relay_mean_batch"), ",.0f"),
             number(t.get("relay_cpu_us_per_decision"), ",.0f"),
             number(t.get("relay_postgres_cpu_us_per_decision"), ",.0f"),
             f"≥ {target:g}×" if target is not None else DASH, verdict(met)],
            ["raw psycopg (baseline)", count(len(raw_runs)) if raw_runs else DASH,
             number(t.get("raw_rate_median"), ",.0f"),
             number_range([t.get("raw_rate_min"), t.get("raw_rate_max")], ",.0f"),
             ratio(1.0 if num(t.get("raw_rate_median")) else None),
             number(t.get("relay_mean_batch"), ",.0f"),
             number(t.get("raw_client_cpu_us_per_decision"), ",.0f"),
             number(t.get("raw_postgres_cpu_us_per_decision"), ",.0f"), DASH, DASH]]
    s.lines += markdown_table(["arm", "runs", "decisions/s (median)", "min–max", "× raw",
                               "mean batch", "CPU µs/decision (relay; raw client)",
                               "PostgreSQL CPU µs/decision", "target", "result"], body)
    if match is not None:
        s.lines += ["Both arms left the same rows in their databases (decisions, audit rows, "
                    "revisions, cursor): " + ("yes." if match else "**no**."), ""]
    s.checks.append(Check(
        "relay ≥ 0.8 × raw psycopg writes of the same rows, same batches",
        f"{number(t.get('relay_rate_median'), ',.0f')}/s vs "
        f"{number(t.get('raw_rate_median'), ',.0f')}/s raw = {ratio(rel)}", met))


def _latency_runs(value: Any) -> list[dict[str, Any]]:
    """The latency runs: a list of them (one per rate), or a single one."""
    return records(value) if isinstance(value, list) else [mapping(value)] if mapping(value) \
        else []


def _latency(s: Section, runs: list[dict[str, Any]]) -> None:
    target_ms = next((t for t in (num(r.get("target_p99_ms")) for r in runs) if t), 50.0)
    name = f"etcd commit → row visible p99 ≤ {target_ms:g} ms at 1,000 decisions/s"
    if not runs:
        s.checks.append(Check(name, "not measured", None))
        return
    s.lines += [
        "### etcd commit to row visible", "",
        "Decisions put at a paced rate over the cities, from several threads; each put's "
        "answer is its commit. A trigger on the sink's cursor (committed with the rows) "
        "sends `NOTIFY` with it, and the benchmark listens on a connection of its own: a "
        "revision is visible by the time a cursor at or past it arrives. *Behind at end* is "
        "how long after the last put its row became visible: a relay that keeps up is "
        "behind by about one latency, one that does not by a growing backlog. Target: p99 ≤ "
        f"{target_ms:g} ms at 1,000 decisions/s.", ""]
    body, costs = [], []
    checked = False
    for r in runs:
        p99, rate = num(r.get("p99_ms")), num(r.get("rate_achieved"))
        asked = num(r.get("rate_asked"))
        is_target = asked == TARGET_RATE
        at_target = is_target and rate is not None and rate >= TARGET_RATE * RATE_SLACK
        met = (p99 <= target_ms if p99 is not None else None) if at_target else None
        body.append([number(asked, ",.0f"), number(rate, ",.0f"), count(r.get("cities")),
                     count(r.get("samples")), number(r.get("p50_ms"), ",.1f"),
                     number(r.get("p90_ms"), ",.1f"), number(p99, ",.1f"),
                     number(r.get("max_ms"), ",.1f"), number(r.get("behind_at_end_s"), ".2f"),
                     number(r.get("decisions_per_transaction"), ",.1f"),
                     number(r.get("put_rtt_p50_ms"), ".2f"),
                     f"p99 ≤ {target_ms:g} ms" if is_target else DASH,
                     DASH if not is_target else verdict(met) if met is not None
                     else "not at 1,000/s"])
        if is_target and not checked:
            checked = True
            s.checks.append(Check(name, f"p99 {number(p99, ',.1f')} ms at "
                                        f"{number(rate, ',.0f')}/s", met,
                                  "" if at_target else "not at 1,000/s"))
        w = mapping(r.get("watch"))
        if w:
            costs.append(f"{number(w.get('notifications_per_second'), ',.0f')} notifications/s "
                         f"at {number(asked, ',.0f')}/s, "
                         f"{number(w.get('client_cpu_us_per_notification'), ',.0f')} µs of CPU "
                         f"in the benchmark and "
                         f"{number(w.get('backend_cpu_us_per_notification'), ',.0f')} µs in "
                         f"its backend each, {number(w.get('cores'), '.3f')} cores")
    if not checked:
        s.checks.append(Check(name, "not measured", None))
    s.lines += markdown_table(
        ["asked /s", "achieved /s", "cities", "decisions", "p50 ms", "p90 ms", "p99 ms",
         "max ms", "behind at end s", "decisions per sink txn", "put round trip p50 ms",
         "target", "result"], body)
    if costs:
        s.lines += ["What the measurement costs: " + "; ".join(costs) + " (the backend's "
                    "share is taken out of the PostgreSQL CPU figures).", ""]


def _cpu(s: Section, d: dict[str, Any]) -> None:
    t, runs = mapping(d.get("throughput")), _latency_runs(d.get("latency"))
    rows: list[tuple[str, Any, str]] = [
        ("`dispatch-relay`, draining a backlog", t.get("relay_cpu_us_per_decision"), "")]
    rows += [(f"`dispatch-relay`, at {number(r.get('rate_achieved'), ',.0f')}/s",
              r.get("relay_cpu_us_per_decision"),
              f"{number(r.get('relay_cores'), '.2f')} cores"
              if num(r.get("relay_cores")) is not None else "") for r in runs]
    rows += [("raw psycopg client, draining (baseline)",
              t.get("raw_client_cpu_us_per_decision"), ""),
             ("PostgreSQL, relay draining", t.get("relay_postgres_cpu_us_per_decision"), ""),
             ("PostgreSQL, raw psycopg draining", t.get("raw_postgres_cpu_us_per_decision"),
              "")]
    rows += [(f"PostgreSQL, at {number(r.get('rate_achieved'), ',.0f')}/s",
              r.get("postgres_cpu_us_per_decision"), "") for r in runs]
    rows += [(f"etcd, at {number(r.get('rate_achieved'), ',.0f')}/s (put and watch)",
              r.get("etcd_cpu_us_per_decision"), "") for r in runs]
    rows += [(f"the load generator (the benchmark's writer threads), at "
              f"{number(r.get('rate_achieved'), ',.0f')}/s", r.get("load_cpu_us_per_decision"),
              f"the machine was {number(r.get('machine_busy_cores'), '.2f')} cores busy "
              "(everything on it)" if _usable_busy(r) else "")
             for r in runs]
    body = [[what, number(us, ",.0f"), note or DASH] for what, us, note in rows
            if num(us) is not None]
    if not body:
        return
    s.lines += ["### CPU per decision", "",
                "The relay process's CPU (all its threads, gRPC's included) ÷ decisions "
                "applied, beside the baseline's client and the servers'. No target.", ""]
    s.lines += markdown_table(["where", "µs CPU per decision", "note"], body)
    for r in runs:
        rate = num(r.get("rate_achieved"))
        parts = {what: num(r.get(f"{key}_cpu_us_per_decision")) for what, key in (
            ("the relay", "relay"), ("PostgreSQL", "postgres"), ("etcd", "etcd"),
            ("the load generator", "load"))}
        if rate is None or any(v is None for v in parts.values()):
            continue
        cores = {what: (us or 0.0) * rate / 1e6 for what, us in parts.items()}
        busy = number(r.get("machine_busy_cores"), ".2f")
        whole = f"which was {busy} cores busy in all." if _usable_busy(r) else \
            f"which /proc/stat said was {busy} cores busy: less than these parts, so " \
            "not a usable reading of the whole machine."
        s.lines += [f"At {rate:,.0f}/s: " + " + ".join(
            f"{what} {c:.2f}" for what, c in cores.items()) +
            f" = {sum(cores.values()):.2f} cores of the machine's "
            f"{count(mapping(d.get('machine')).get('cores'))}, {whole}", ""]
    relay_cpu = num(t.get("relay_cpu_us_per_decision"))
    paced = [f"{number(r.get('relay_cpu_us_per_decision'), ',.0f')} µs at "
             f"{number(r.get('rate_achieved'), ',.0f')}/s" for r in runs
             if num(r.get("relay_cpu_us_per_decision")) is not None]
    if relay_cpu is not None or paced:
        measured = ([f"{relay_cpu:,.0f} µs draining"] if relay_cpu is not None else []) + paced
        s.checks.append(Check("none set: the relay's CPU per decision", ", ".join(measured),
                              None, "no target"))


def _usable_busy(r: dict[str, Any]) -> bool:
    """Whether the whole machine's busy cores (from /proc/stat) are at least what the
    measured parts add up to: a reading below them is not one of the whole machine."""
    busy, rate = num(r.get("machine_busy_cores")), num(r.get("rate_achieved"))
    parts = [num(r.get(f"{key}_cpu_us_per_decision"))
             for key in ("relay", "postgres", "etcd", "load")]
    if busy is None or rate is None:
        return False
    return busy >= sum(p or 0.0 for p in parts) * rate / 1e6
