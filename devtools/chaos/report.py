"""A run's results in words and as JSON: the report printed at the end, the evidence
printed for a violation, and ``run.json`` in the run's directory when its logs are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from coordinator.codec import decode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.ops.verify import Report, replay
from devtools.chaos.analysis import ChaosResult, SinkOutcome, floor_per_fault, grew
from devtools.chaos.config import RECOVERY_MARGIN, replay_command
from devtools.chaos.faults import KINDS, SINK_KINDS
from devtools.chaos.fleet import Resources
from protos import dispatch_pb2 as pb

__all__ = ["dump", "explain", "print_report"]


def print_report(result: ChaosResult, out: TextIO) -> None:
    """The end-of-run report: faults, the history check, the sink's check, availability,
    the gap table per fault kind, what the workers hold, recovery, problems and the
    verdict."""
    cfg = result.config
    report = result.report
    w = out.write
    span = result.ended - result.started
    w("\n==== chaos report\n")
    w(f"seed {result.seed}: {span:.0f}s of faults (+ settling), {cfg.workers} workers, "
      f"{cfg.cities} cities, {cfg.relays} relays, lease TTL {cfg.ttl}s"
      + (", faults overlapping" if cfg.overlap else ", one worker/etcd fault at a time")
      + "\n")
    w(f"replay: {replay_command(cfg, result.seed)}\n")
    kinds = result.by_kind()
    w(f"faults injected: {sum(kinds.values())} — "
      + ", ".join(f"{k} {kinds[k]}" for k in KINDS if kinds[k]) + "\n")
    if result.no_quorum:
        total = sum(b - a for a, b in result.no_quorum)
        w(f"no-quorum windows: {len(result.no_quorum)}, {total:.1f}s in all\n")
    if report is None:
        w("history check did not run\n")
        return
    w(f"decisions checked: {report.decisions} (revisions {report.start_revision}.."
      f"{report.end_revision}, {len(report.cities)} cities)\n")
    w(f"violations: {len(report.violations)}\n")
    w("etcd replicas agree on that history (hashkv): "
      + ("no" if any("disagree" in p for p in result.problems) else "yes") + "\n")
    for v in report.violations[:20]:
        w(f"  VIOLATION {v}\n")
    if result.sink is not None:
        _print_sink(result, result.sink, out)
    av = report.availability
    if av is not None:
        w(f"{av.summary()}\n")
        steady = [c for c in av.cities.values() if c.city not in result.slow_cities]
        if steady and len(steady) != len(av.cities):
            exp = sum(c.expected for c in steady)
            missed = sum(c.missed for c in steady)
            low = min(steady, key=lambda c: c.fraction)
            w(f"  cities whose solver never stalls: {100 * (1 - missed / exp):.2f}% overall, "
              f"lowest {low.city} {100 * low.fraction:.2f}%\n")
        strict = result.strict_availability
        if strict is not None:
            w(f"  counting every millisecond of lateness (no on-time tolerance): "
              f"{100 * strict.overall:.2f}%\n")
    wav = result.writable_availability
    if wav is not None and result.unwritable:
        total = sum(b - a for a, b in result.unwritable)
        lowest = wav.lowest()
        w(f"  with etcd's leaderless windows also left out ({len(result.unwritable)} "
          f"windows, {total:.1f}s in all, probed every 0.1s): {100 * wav.overall:.2f}% "
          f"of periods" + (f", lowest {lowest.city} {100 * lowest.fraction:.2f}%"
                           if lowest else "")
          + ": what the coordinator made of the time etcd could take a write\n")
    w(f"longest decision gap by the fault in effect when it began (from injection to "
      f"healing + TTL + {RECOVERY_MARGIN:g}s; outside etcd's faults, without the time "
      f"etcd could take no write):\n")
    total_missed = sum(stat.missed for stat in result.gaps.values()) or 1.0
    w(f"  {'kind':<16}{'faults':>7}{'longest':>10}  {'city (period)':<18}{'median':>9}"
      f"{'alone':>7}{'longest alone':>15}{'missed':>9}{'per fault':>11}{'floor':>8}"
      f"{'x floor':>9}\n")
    for kind in [*KINDS, "(none)"]:
        stat = result.gaps.get(kind)
        if stat is None:
            continue
        where = f"{stat.city} ({stat.period:g}s)" if stat.city else "-"
        count = str(stat.faults) if kind != "(none)" else "-"
        median = f"{stat.typical:.2f}s" if stat.worst_per_fault else "-"
        alone = f"{max(stat.isolated):.2f}s" if stat.isolated else "-"
        share = f"{100 * stat.missed / total_missed:.0f}%"
        per_fault = f"{stat.missed / stat.faults:.1f}" if stat.faults else "-"
        floor = floor_per_fault(kind, result.config, result.periods)
        over = (f"{stat.missed / stat.faults / floor:.1f}" if stat.faults and floor > 0
                else "-")
        w(f"  {kind:<16}{count:>7}{stat.longest:>9.2f}s  {where:<18}{median:>9}"
          f"{len(stat.isolated) if kind != '(none)' else '-':>7}{alone:>15}{share:>9}"
          f"{per_fault:>11}{floor if kind != '(none)' else 0:>8.1f}{over:>9}\n")
    w("  (median: of each fault's longest gap; alone: faults that overlapped no other "
      "fault affecting every city;\n   missed: share of all missed periods, no-quorum "
      "time left out; per fault: city-periods missed per fault of the kind;\n   floor: "
      "what one such fault must cost, in city-periods: the lease TTL over a worker's "
      "share of the cities,\n   etcd's election timeout over all of them, or 0 for a "
      "graceful handover (faults.FLOORS); x floor: per fault / floor)\n")
    if av is not None and av.expected > 0:
        none = result.gaps.get("(none)")
        lost = none.missed if none is not None else 0.0
        w(f"periods missed with no fault in effect: {lost:.1f} of {av.expected:.0f} "
          f"({100 * lost / av.expected:.2f}%): the rest is the faults' own cost, which "
          "grows with how often they strike (--pace)\n")
    if result.resources:
        w("held by each worker once warm -> settled after the faults (threads, open "
          "fds, solver processes):\n")
        for worker, (before, after) in result.resources.items():
            w(f"  {worker}: {_holdings(before)} -> {_holdings(after)}"
              + ("  GREW" if grew(before, after) else "") + "\n")
    w(f"stale writes refused by the fence (workers' 'fenced out' log lines): "
      f"{result.fenced_out}\n")
    owners = " ".join(f"{k}:{v}" for k, v in result.owners.items())
    if result.recovered:
        w(f"recovered without a human: every worker owns cities again ({owners}); every "
          "city decided within its last two periods\n")
    else:
        w(f"NOT RECOVERED: owners {owners}; cities without a recent decision: "
          f"{', '.join(result.stale_decisions) or 'none'}\n")
    w(f"problems: {len(result.problems)}\n")
    for p in result.problems[:20]:
        w(f"  {p}\n")
    if result.tracebacks:
        w(f"tracebacks in worker and relay logs: {sum(result.tracebacks.values())}\n")
        for line, times in result.tracebacks.most_common(10):
            w(f"  {times} x {line}\n")
    w(f"result: {'PASS' if result.exit_code == 0 else 'FAIL'} (exit {result.exit_code})\n")
    out.flush()


def _print_sink(result: ChaosResult, sink: SinkOutcome, out: TextIO) -> None:
    """The relays and PostgreSQL: their faults, the catch-up, the check's verdict."""
    w = out.write
    kinds = result.by_kind()
    faults = ", ".join(f"{k} {kinds[k]}" for k in SINK_KINDS if kinds[k]) or "none"
    w(f"sink: postgres, {sink.relays} relays ({sink.starts} starts); its faults: {faults}\n")
    if sink.caught_up_in is not None:
        w(f"  the relays carried etcd's newest decision (revision {sink.latest}) into "
          f"postgres {sink.caught_up_in:.1f}s after the workers stopped\n")
    else:
        w(f"  NOT CAUGHT UP: the sink's cursor is {sink.cursor}, etcd's newest decision "
          f"revision {sink.latest}\n")
    check = sink.check
    if check is None:
        w(f"  POSTGRES CHECK DID NOT RUN: {sink.error}\n")
        return
    w(f"  {check.summary()}\n")
    for finding in check.findings[:20]:
        w(f"  FINDING {finding}\n")
    if len(check.findings) > 20:
        w(f"  ... and {len(check.findings) - 20} more findings\n")


def _holdings(r: Resources | None) -> str:
    return "-" if r is None else f"{r.threads}, {r.fds}, {r.solvers}"


def explain(client: EtcdClient, keys: Keys, report: Report, out: TextIO,
            before: int = 40) -> None:
    """Print etcd's history of the first violation's city around it: every candidate
    key created or deleted, every decision written — the evidence, straight from etcd."""
    first = report.violations[0]
    city = first.city
    start = max(1, first.revision - before * 20)
    out.write(f"\n==== first violation: {first}\n")
    out.write(f"history of {keys.election(city)}/ and {keys.decision(city)} from revision "
              f"{start}:\n")
    lines = []
    for event in replay(client, keys.namespace + "/", start,
                        min(first.revision + 5, report.end_revision)):
        key = event.kv.key
        parsed = keys.candidate(key)
        if parsed is not None and parsed[0] == city:
            who = event.kv.value.decode(errors="replace")
            if event.kind == "delete":
                what = f"candidate {parsed[1]} deleted"
            elif event.kv.version == 1:
                what = (f"candidate {parsed[1]} created (token {event.kv.create_revision}) "
                        f"by {who!r}")
            else:
                what = f"candidate {parsed[1]} rewritten (version {event.kv.version}) by {who!r}"
        elif key == keys.decision(city) and event.kind == "put":
            try:
                d = decode(pb.Decision, event.kv.value)
                what = f"decision token {d.token} by {d.worker_id!r} (lease {d.lease_id})"
            except ValueError:
                what = "decision (undecodable)"
        else:
            continue
        lines.append(f"  {event.kv.mod_revision:>8}  {what}")
    for line in lines[-before:]:
        out.write(line + "\n")


def dump(result: ChaosResult, path: Path) -> None:
    """Decision times, faults and windows as JSON in ``path``, for a look after the run."""
    report = result.report
    data = {
        "seed": result.seed, "started": result.started, "ended": result.ended,
        "periods": result.periods, "noQuorum": result.no_quorum,
        "unwritable": result.unwritable,
        "faults": [vars(f) for f in result.faults],
        "sink": None if result.sink is None else {
            "latest": result.sink.latest, "cursor": result.sink.cursor,
            "caughtUpIn": result.sink.caught_up_in, "error": result.sink.error,
            "findings": [str(f) for f in result.sink.check.findings]
            if result.sink.check is not None else None},
        "decisions": {
            city: [[r, d.decided_at.ToNanoseconds() / 1e9, d.worker_id, d.token]
                   for r, d in history]
            for city, history in (report.decisions_by_city.items() if report else [])
        },
    }
    path.write_text(json.dumps(data))
