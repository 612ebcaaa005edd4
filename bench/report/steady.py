"""The steady benchmark's section: an hour of 1,000 cities at 1 s, sampled against time —
etcd's database size, worker memory and threads, on time, history readable."""

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
    numbers,
    pct,
    records,
)
from bench.report.parts import Check, Context, Section, machine_lines

GROWTH_TARGET = 0.10
ON_TIME_TARGET = 0.995


def _growth_check(s: Section, target: str, value: Any, compared: str) -> None:
    x = num(value)
    if x is not None:
        s.checks.append(Check(target, f"{x:+.1%} ({compared})", x <= GROWTH_TARGET))


def _defrag_minutes(d: dict[str, Any]) -> str:
    """When the run defragmented: "minute 10 and minute 60.0", "the end" (the minute-10
    one is skipped with ``--no-baseline-defrag``)."""
    minutes = [num(x.get("minute")) for x in records(d.get("defrags"))]
    found = [f"minute {m:.1f}" for m in minutes if m is not None]
    return " and ".join(found) if found else "no point (none recorded)"


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("steady", "An hour of steady work")
    s.lines += machine_lines(d)
    s.lines += [f"{count(d.get('cities'))} cities at {number(d.get('period'), 'g')} s "
                f"({d.get('solver', DASH)}, simulated state) over {count(d.get('workers'))} "
                f"workers ({d.get('isolation', DASH)} solves) for "
                f"{number(d.get('minutes'), 'g')} minutes after the warm-up "
                f"({_warm_up(d)}), one etcd member "
                "with `--auto-compaction-mode=revision --auto-compaction-retention="
                f"{count(d.get('retention_revisions'))}`{_snapshots(d)}; a sample every "
                f"{number(d.get('sample_seconds'), 'g')} s. The in-use size (`dbSizeInUse`) "
                "is what a defragmentation would leave; a real defrag ran at "
                f"{_defrag_minutes(d)}, and gaps ending during it (+ 2 periods) are left "
                "out of on time.", ""]
    s.lines += ctx.image("steady", "steady work: on time, etcd database size, worker RSS "
                         "and threads against the minute")
    samples = records(d.get("samples"))
    width = num(d.get("window_minutes")) or 5.0
    median = num(mapping(d.get("summary")).get("unit_cpu_ms_median"))
    body = []
    start = 0.0
    while samples and start < max(num(x.get("minute")) or 0 for x in samples):
        rows = [x for x in samples if start < (num(x.get("minute")) or 0) <= start + width]
        if rows:
            gaps = sum(num(x.get("gaps")) or 0 for x in rows)
            on = sum(num(x.get("on_time")) or 0 for x in rows)
            last = rows[-1]
            body.append([f"{start:g}–{start + width:g}",
                         pct(on / gaps if gaps else None, 2),
                         pct(min(num(x.get("on_time_share")) or 0 for x in rows), 2),
                         number(max(num(x.get("db_size_in_use")) or 0 for x in rows) / 2**20,
                                ".1f"),
                         number((num(last.get("db_size")) or 0) / 2**20, ".1f"),
                         number(sum(numbers(mapping(last.get("worker_rss_mib")).values())), ".0f"),
                         count(sum(numbers(mapping(last.get("worker_threads")).values()))),
                         "yes" if all(flag(x.get("history_readable")) for x in rows)
                         else "no", *_machine_cells(rows, median)])
        start += width
    if body:
        s.lines += markdown_table(["minutes", "on time", "worst sample", "peak in use MiB",
                                   "dbSize MiB", "workers RSS MiB", "threads",
                                   "history readable",
                                   *(MACHINE_COLUMNS if median is not None else [])], body)
        s.lines += [""]
        if median is not None:
            s.lines += _machine_lines(mapping(d.get("summary")), median,
                                      d.get("speed_probe_realtime") is not False)
        s.lines += _dip_lines(mapping(d.get("summary")))
    for d_ in records(d.get("defrags")):
        s.lines += [f"- defrag at minute {number(d_.get('minute'), '.1f')}: "
                    f"{number(d_.get('seconds'), '.1f')} s, dbSize "
                    f"{number((num(d_.get('db_size_before')) or 0) / 2**20, '.1f')} → "
                    f"{number((num(d_.get('db_size_after')) or 0) / 2**20, '.1f')} MiB"]
    summary = mapping(d.get("summary"))
    compared = str(summary.get("compared", ""))
    if summary:
        s.lines += ["", "Growth compares peaks: the in-use size climbs between etcd's "
                    "5-minute compactions and drops after each, so the peak of a "
                    "compaction cycle early on is set against the peak of the last one. "
                    f"Bytes per decision value: {number(summary.get('bytes_per_decision'), '.0f')}"
                    f"; the benchmark's own CPU: "
                    f"{number(summary.get('bench_cpu_cores_mean'), '.2f')} cores.", ""]
    _growth_check(s, "etcd database in use after defragmentation: growth ≤ 10 %",
                  summary.get("db_in_use_growth"), compared)
    _growth_check(s, "worker RSS: growth ≤ 10 %", summary.get("worker_rss_growth"), compared)
    _growth_check(s, "worker threads: growth ≤ 10 %", summary.get("worker_threads_growth"),
                  compared)
    worst = num(summary.get("on_time_min"))
    if worst is not None:
        s.checks.append(Check("on time ≥ 99.5 % in every sample interval",
                              f"worst {worst:.2%}, overall "
                              f"{pct(summary.get('on_time_overall'), 2)}",
                              worst >= ON_TIME_TARGET))
    history = flag(summary.get("history_readable"))
    if history is not None:
        s.checks.append(Check("history readable for the whole retention window",
                              "yes" if history else "no", history))
    if not samples:
        s.lines += ["No samples in this file.", ""]
    return s


MACHINE_COLUMNS = ["machine slowest (probe ÷ median)", "workers CPU", "etcd CPU",
                   "etcd RSS MiB"]


def _machine_cells(rows: list[dict[str, Any]], median: float | None) -> list[str]:
    """The speed probe's slowest sample of the window, the cores the workers and etcd
    used on average, and etcd's peak RSS (runs before the probe: no cells)."""
    if median is None:
        return []
    slowest = max((num(x.get("unit_cpu_ms")) or 0.0) for x in rows) / median
    workers = sum(sum(numbers(mapping(x.get("worker_cpu_cores")).values())) for x in rows)
    etcd = sum(num(x.get("etcd_cpu_cores")) or 0.0 for x in rows)
    rss = max((num(x.get("etcd_rss_mib")) or 0.0) for x in rows)
    return [number(slowest, ".2f"), number(workers / len(rows), ".2f"),
            number(etcd / len(rows), ".2f"), number(rss, ".0f")]


def _machine_lines(summary: dict[str, Any], median: float, realtime: bool) -> list[str]:
    """On time while the machine itself ran slow and while it did not (``realtime``:
    the probe ran at real-time priority, so its stalls are the machine's, not ours)."""
    slow = num(summary.get("slow_samples"))
    return [f"The speed probe (`bench/machinespeed.py`, a fixed unit of Python work timed "
            f"on its own CPU clock ten times a second, {median:.2f} ms at the median) saw the "
            f"machine run slow (the unit over 1.1 × its median) in {count(slow)} samples. "
            f"On time in those: {pct(summary.get('on_time_slow_machine'), 2)}; in the "
            f"others: {pct(summary.get('on_time_normal_machine'), 2)} (worst sample "
            f"{pct(summary.get('on_time_min_normal_machine'), 2)}). "
            + ("The probe ran at real-time priority, and its 10 ms sleeps were never held "
               "up more than " if realtime else "The probe was refused real-time priority "
               "(its stalls include our own load); its 10 ms sleeps were never held up "
               "more than ")
            + f"{number(summary.get('stall_max_ms'), '.1f')} ms; the wall clock never "
            f"stepped by more than "
            f"{number(summary.get('clock_step_max_ms'), '.2f')} ms."
            + ("" if num(summary.get("steal_share_max")) is None else
               f" The host took (steal) {pct(summary.get('steal_share_mean'), 1)} of the "
               f"machine's CPU time on average, at most "
               f"{pct(summary.get('steal_share_max'), 1)} in a sample."), ""]


def _dip_lines(summary: dict[str, Any]) -> list[str]:
    """Where the samples under the target fell: after etcd's compactions or not, and
    whose cities the worst one's late ticks were (runs before these were recorded: none)."""
    dips, after = num(summary.get("dips")), num(summary.get("dips_after_compaction"))
    if dips is None or after is None:
        return []
    if not dips:
        return [f"No sample under {ON_TIME_TARGET:.1%} on time.", ""]
    late = {str(k): v for k, v in mapping(summary.get("worst_late_by_worker")).items()
            if num(v) is not None}
    by_worker = "" if not late else (
        "; its late gaps by the worker that ended them: "
        + ", ".join(f"{w} {count(late[w])}" for w in sorted(late)))
    return [f"Samples under {ON_TIME_TARGET:.1%} on time: {count(dips)}, of which "
            f"{count(after)} within a minute after one of etcd's compactions (every 5 "
            "minutes, so one in five by chance). The worst was at minute "
            f"{number(summary.get('worst_minute'), '.1f')}{by_worker}.", ""]


def _warm_up(d: dict[str, Any]) -> str:
    """How the warm-up ended: older results waited only 5 s without a change of worker."""
    settle = d.get("settle_s", 5.0)
    return f"{number(d.get('warm_up_s'), '.0f')} s: every city decided and none changed " \
        f"worker for {number(settle, 'g')} s"


def _snapshots(d: dict[str, Any]) -> str:
    """The run's ``--snapshot-count``, when it set one (runs before it kept etcd's)."""
    snapshot_count = d.get("snapshot_count")
    return "" if snapshot_count is None else f" `--snapshot-count={count(snapshot_count)}`"


#: the stall sections' titles, by what was stopped
TITLES = {"etcd": "Recovery from an etcd stall",
          "workers": "Recovery from a lease loss of most of the fleet"}


def render_survivor(d: dict[str, Any], ctx: Context) -> Section:
    """``bench.steady --stall-workers``: :func:`render_stall` under its own name."""
    return render_stall(d, ctx, "steady-survivor")


def render_stall(d: dict[str, Any], ctx: Context, name: str = "steady-stall") -> Section:
    """``bench.steady --stall-etcd`` or ``--stall-workers``: the same work with etcd, or
    every worker but one, stopped past the lease TTL, and how long on time took to come
    back over the target once they went on."""
    stall = mapping(d.get("stall"))
    workers = stall.get("stopped") == "workers"
    s = Section(name, TITLES["workers" if workers else "etcd"])
    at, seconds = num(stall.get("minute")), num(stall.get("seconds"))
    what = ("every worker but w1 stopped (SIGSTOP) at minute {at} for {seconds} s, past "
            "their 5 s lease TTL, so that w1 takes all their cities over and must give "
            "them back once they return with new sessions (the state an etcd stall left "
            "an earlier hour-long run in)") if workers else (
            "etcd stopped (SIGSTOP) at minute {at} for {seconds} s, past the workers' 5 s "
            "lease TTL, so that some or all of them lose their sessions and the others "
            "take their cities over")
    s.lines += machine_lines(d)
    s.lines += [f"`python -m bench.steady --stall-{'workers' if workers else 'etcd'} "
                f"MINUTE:SECONDS`: {count(d.get('cities'))} cities at "
                f"{number(d.get('period'), 'g')} s over {count(d.get('workers'))} workers, "
                f"as above, for {number(d.get('minutes'), 'g')} minutes; "
                + what.format(at=number(at, "g"), seconds=number(seconds, "g"))
                + f". A sample every {number(d.get('sample_seconds'), 'g')} s.", ""]
    s.lines += ctx.image(name, "on time against the minute around the stall")
    samples = records(d.get("samples"))
    if at is not None and seconds is not None:
        near = [x for x in samples if at - 1 <= (num(x.get("minute")) or 0) <= at + 4]
        s.lines += markdown_table(
            ["minute", "on time", "delivered ÷ due", "worst gap s", "etcd CPU"],
            [[number(x.get("minute"), ".2f"), pct(x.get("on_time_share"), 2),
              pct(x.get("delivered_share"), 1), number(x.get("worst_gap_s"), ".1f"),
              number(x.get("etcd_cpu_cores"), ".2f")] for x in near])
        after = num(stall.get("recovered_after_s"))
        target, worst = num(stall.get("target")), num(stall.get("worst_minute_before"))
        mark = "99.5 %" if target is None or worst is None or target >= 0.995 else \
            f"{pct(target, 2)}, the worst minute before the stall (the machine did no better)"
        s.checks.append(Check(
            f"on time back within a minute of {'the workers' if workers else 'etcd'} going "
            "on after a stall past the lease TTL (99.5 %, or the machine's worst minute "
            "before the stall)",
            "not by the end of the run" if after is None
            else f"{after:.0f} s, to the first minute pooled at {mark}",
            after is not None and after <= 60))
        s.lines += [f"On time before the stall: {pct(stall.get('on_time_before'), 2)}; "
                    f"from the recovery to the end: "
                    f"{pct(stall.get('on_time_after_recovery'), 2)} (worst sample "
                    f"{pct(stall.get('worst_sample_after_recovery'), 2)}).", ""]
    return s
