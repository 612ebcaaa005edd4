"""What ``bench.steady``'s samples say: the figures of merit against the targets (growth
from an early compaction cycle to the last, on time, history readable), where the dips
fell (the machine's speed, etcd's compactions, which worker), and the plot."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path
from typing import Any

from bench import output
from bench.stall import ON_TIME_TARGET, pooled

__all__ = ["COMPACTION_CADENCE_MIN", "GROWTH_TARGET", "SLOW", "compactions", "plot",
           "summarise"]

GROWTH_TARGET = 0.10
#: a sample where the speed probe's unit cost this many times its median: a slow machine
SLOW = 1.10
#: etcd's revision compactor runs this often (etcd 3.4, revision mode)
COMPACTION_CADENCE_MIN = 5.0


def _peaks(samples: list[dict[str, Any]], key: Any, start: float,
           width: float) -> float:
    values = [key(s) for s in samples if start <= s["minute"] < start + width]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return max(values) if values else math.nan


def summarise(data: dict[str, Any], baseline: float, width: float) -> dict[str, Any]:
    """Figures of merit: growth from the ``width``-minute window starting at ``baseline``
    to the last such window, each window's peak (in-use size peaks just before each of
    etcd's 5-minute compactions, so peaks compare like with like)."""
    samples = data["samples"]
    last = samples[-1]["minute"] if samples else 0.0
    tail = max(baseline, last - width)

    def growth(key: Any) -> float:
        a, b = _peaks(samples, key, baseline, width), _peaks(samples, key, tail, width + 1)
        return b / a - 1 if a else math.nan

    shares = [s["on_time_share"] for s in samples if not math.isnan(s["on_time_share"])]
    decisions = sum(s["decisions"] for s in samples)
    return {**_by_machine_speed(samples), **_dips(samples),
        "db_in_use_growth": growth(lambda s: s["db_size_in_use"]),
        "db_size_growth": growth(lambda s: s["db_size"]),
        "worker_rss_growth": growth(lambda s: sum(s["worker_rss_mib"].values())),
        "worker_threads_growth": growth(lambda s: sum(s["worker_threads"].values())),
        "on_time_min": min(shares) if shares else math.nan,
        "on_time_overall": pooled(samples),
        "delivered_overall": decisions / sum(s["due"] for s in samples) if samples
        else math.nan,
        "history_readable": bool(samples) and all(s["history_readable"] is not False
                                                  for s in samples),
        "bytes_per_decision": sum(s["value_bytes"] for s in samples) / max(decisions, 1),
        "bench_cpu_cores_mean": sum(s["bench_cpu_cores"] for s in samples)
        / max(len(samples), 1),
        "compared": f"peak of minutes {baseline:g}–{baseline + width:g} against peak of "
                    f"minutes {tail:.1f}–{last:.1f}",
    }


def _dips(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The samples under the on-time target: how many came within a minute after etcd
    compacted (one minute in five would by chance), and the worst one's late gaps by the
    worker that ended them (one worker's trouble, or the whole fleet's)."""
    after = compactions(samples)
    dips = [s for s in samples if s["on_time_share"] < ON_TIME_TARGET]
    worst = min(samples, key=lambda s: s["on_time_share"] if s["gaps"] else math.inf,
                default=None)
    return {"compaction_minutes": after, "dips": len(dips),
            "dips_after_compaction": sum(any(0 <= s["minute"] - c <= 1.0 for c in after)
                                         for s in dips),
            "worst_minute": worst["minute"] if worst else math.nan,
            "worst_late_by_worker": worst.get("late_by_worker") if worst else None}


def _by_machine_speed(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """On time in the samples where the machine itself ran slow (the speed probe's unit
    cost over ``SLOW`` × its median for the run) and in the others: whether the dips
    follow the machine or our code."""
    units = sorted(s["unit_cpu_ms"] for s in samples
                   if not math.isnan(s.get("unit_cpu_ms", math.nan)))
    if not units:
        return {}
    median = units[len(units) // 2]

    slow = [s for s in samples if s.get("unit_cpu_ms", 0.0) > SLOW * median]
    normal = [s for s in samples if not s.get("unit_cpu_ms", 0.0) > SLOW * median]
    steal = [s["steal_share"] for s in samples
             if not math.isnan(s.get("steal_share", math.nan))]
    return {"unit_cpu_ms_median": median, "slow_samples": len(slow),
            "steal_share_mean": statistics.fmean(steal) if steal else math.nan,
            "steal_share_max": max(steal, default=math.nan),
            "stall_max_ms": max(s.get("stall_max_ms", 0.0) for s in samples),
            "clock_step_max_ms": max(s.get("clock_step_ms", 0.0) for s in samples),
            "on_time_slow_machine": pooled(slow), "on_time_normal_machine": pooled(normal),
            "on_time_min_normal_machine": min((s["on_time_share"] for s in normal
                                               if s["gaps"]), default=math.nan)}


def compactions(samples: list[dict[str, Any]]) -> list[float]:
    """The minutes of the samples in which etcd's oldest readable revision moved on: its
    compactor ran (every ``COMPACTION_CADENCE_MIN``), which a dip may follow."""
    return [b["minute"] for a, b in itertools.pairwise(samples)
            if b["oldest_readable_revision"] != a["oldest_readable_revision"]]


def plot(results: dict[str, Any], path: Path) -> None:
    """On time, etcd's database size, worker RSS and threads, and (for runs with the
    speed probe) the machine's speed and the CPU used, against the minute."""
    plt = output.pyplot()
    samples = results["samples"]
    xs = [s["minute"] for s in samples]
    probed = bool(samples) and "unit_cpu_ms" in samples[0]
    fig, axes = plt.subplots(3 if probed else 2, 2, figsize=(12, 10 if probed else 7),
                             sharex=True)
    ax = axes[0][0]
    ax.plot(xs, [100 * s["on_time_share"] for s in samples], ".-", label="on time")
    ax.plot(xs, [100 * s["delivered_share"] for s in samples], "x:", label="delivered ÷ due")
    ax.axhline(100 * ON_TIME_TARGET, color="grey", ls=":", label="target 99.5 %")
    for minute in compactions(samples):
        ax.axvline(minute, color="grey", ls="--", lw=0.6)
    if "stall" in results:
        at = results["stall"]["minute"]
        ax.axvspan(at, at + results["stall"]["seconds"] / 60, color="red", alpha=0.3,
                   label=f"{results['stall'].get('stopped', 'etcd')} stopped")
    ax.set_ylabel("% of the interval")
    ax.set_title("decisions on time (dashed: etcd compacted)")
    ax = axes[0][1]
    ax.plot(xs, [s["db_size"] / 2**20 for s in samples], ".-", label="dbSize")
    ax.plot(xs, [(s["db_size_in_use"] or 0) / 2**20 for s in samples], ".-",
            label="dbSizeInUse (after a defrag)")
    for d in results["defrags"]:
        ax.axvline(d["minute"], color="grey", ls="--", lw=0.8)
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.set_title("etcd database (dashed: defrag)")
    for ax, key, title, unit in ((axes[1][0], "worker_rss_mib", "worker RSS",
                                  "MiB (with solver processes)"),
                                 (axes[1][1], "worker_threads", "worker threads", "threads")):
        for w in (samples[0][key] if samples else {}):
            ax.plot(xs, [s[key][w] for s in samples], ".-", label=w)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.set_title(title)
    if probed:
        _plot_machine(axes[2], xs, samples, results["summary"]["unit_cpu_ms_median"],
                      results["machine"].get("cores") or 1)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("minute")
    machine = results["machine"]
    fig.suptitle(f"steady work: {results['cities']} cities at {results['period']:g} s over "
                 f"{results['workers']} workers, retention {results['retention_revisions']} "
                 f"revisions — {machine['cpu_model']}, {machine['cores']} cores", fontsize=10)
    output.save_figure(fig, path)


def _plot_machine(axes: Any, xs: list[float], samples: list[dict[str, Any]],
                  median: float, cores: int) -> None:
    """The speed probe's unit cost against its ``median`` (the machine's own slowness),
    and the CPU the workers, etcd and the benchmark used, and the host stole (of ``cores``)."""
    ax = axes[0]
    ax.plot(xs, [s["unit_cpu_ms"] / median for s in samples], ".-",
            label="fixed work's CPU time ÷ run median")
    ax.plot(xs, [1e3 * sum(s["worker_cpu_cores"].values()) * s["seconds"]
                 / max(s["decisions"], 1) for s in samples], ".:",
            label="workers' CPU ms a decision")
    ax.axhline(SLOW, color="grey", ls=":", label=f"slow machine: > {SLOW:g}")
    ax.set_title("the machine's own speed (speed probe) and the workers' cost")
    ax = axes[1]
    ax.plot(xs, [sum(s["worker_cpu_cores"].values()) for s in samples], ".-", label="workers")
    ax.plot(xs, [s["etcd_cpu_cores"] for s in samples], ".-", label="etcd")
    ax.plot(xs, [s["bench_cpu_cores"] for s in samples], ".-", label="benchmark")
    if "steal_share" in samples[0]:
        ax.plot(xs, [cores * s["steal_share"] for s in samples], ".:",
                label="stolen by the host")
    ax.set_ylabel("cores")
    ax.set_ylim(bottom=0)
    ax.set_title("CPU used")
