"""Scale: many cities with a 1 s period over several worker processes on one etcd member.

    python -m bench.scale            # full (~25 minutes): 1,000 cities × 4 workers,
                                     # thread vs process isolation, then sweeps
    python -m bench.scale --quick    # 200 cities × 4 workers, 20 s each isolation

Each configuration gets a fresh etcd member and fresh ``dispatch-worker`` processes
(``python -m coordinator.cli.worker``), cities with the ``simulated`` state source
(``orders=30 couriers=20``) and the ``greedy`` solver. After a warm-up (every city has
decided and no city changed writer for 5 s) it measures, over a window:

* **on time**: per city, the gap between consecutive decisions (their ``decidedAt``,
  read from a watch on ``<ns>/decisions/``) against the period; a gap ≤ period + 100 ms
  is on time. *Lateness* = gap − period (p50, p99, max). A skipped tick shows up as a
  gap of two periods. Also: decisions delivered ÷ decisions due (cities × window ÷
  period);
* **cost**: CPU (in cores) and RSS of each worker, alone and with its solver processes;
  etcd's CPU and the requests it received per second (from its /metrics);
* the benchmark's own CPU (the decision watch) for transparency.

Then (full mode) it looks for the most cities the machine carries with p99 lateness under
100 ms (250, 500, 1,000, 1,500, 2,000 … with 4 workers) and measures how the cost grows
with workers (1, 2, 4, 8 at a fixed number of cities), and plots both to
``docs/img/scale.png``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import IMAGES, RESULTS, ROOT, decisionlog, etcd, host, output, processes, stats
from bench.output import log
from coordinator.keys import Keys

NAMESPACE = "/scale"
PARAMS = {"orders": 30, "couriers": 20}
ON_TIME_SLACK = 0.1
P99_TARGET = 0.1


def run_config(cities: int, workers: int, isolation: str, *, period: float, seconds: float,
               logs: Path, warmup_timeout: float = 200.0,
               tick_threads: int = 8) -> dict[str, Any]:
    label = f"{cities} cities × {workers} workers, {isolation}"
    log(f"run: {label}, window {seconds:.0f}s")
    with etcd.cluster(1) as cluster:
        client = etcd.client_for(cluster.endpoints)
        keys = Keys(NAMESPACE)
        names = etcd.city_names(cities)
        etcd.put_cities(client, keys, names, solver="greedy", period=period, params=PARAMS)
        decisions = decisionlog.DecisionLog(client, keys).start()
        procs = processes.Workers(cluster.endpoints, NAMESPACE, logs / f"{cities}-{workers}-"
                                  f"{isolation}-{int(time.time())}",
                                  extra=["--solve-isolation", isolation, "--lease-ttl", "5",
                                         "--tick-threads", str(tick_threads)])
        try:
            started = time.time()
            ids = [f"w{i + 1}" for i in range(workers)]
            for worker_id in ids:
                procs.start(worker_id)
            warm = _warm_up(decisions, names, warmup_timeout)
            log(f"  warm-up {'done' if warm else 'TIMED OUT'} after {time.time() - started:.0f}s")
            pids = {w: procs.procs[w].pid for w in ids}
            etcd_pid = etcd.pid(cluster)
            meter = etcd.EtcdMeter(cluster.members[0].client_url)
            usage0 = {w: processes.process_tree_usage(pid) for w, pid in pids.items()}
            etcd0 = processes.process_tree_usage(etcd_pid)[0]
            self0 = time.process_time()
            load0 = os.getloadavg()[0]
            probe = processes.JitterProbe(seconds)
            t0 = time.time()
            time.sleep(seconds)
            t1 = time.time()
            jitter = probe.result()
            load1 = os.getloadavg()[0]
            usage1 = {w: processes.process_tree_usage(pid) for w, pid in pids.items()}
            etcd1 = processes.process_tree_usage(etcd_pid)[0]
            self_cpu = time.process_time() - self0
            delta = meter.delta()
            time.sleep(min(2.0, period * 2))  # let the window's last decisions arrive
            seen = decisions.snapshot()
        finally:
            decisions.stop()
            procs.close()
            client.close()
    row = _analyse(label, cities, workers, isolation, period, t0, t1, seen, warm,
                   usage0, usage1, etcd1 - etcd0, self_cpu, delta)
    row["baseline_jitter"] = jitter
    row["load_average"] = [round(load0, 2), round(load1, 2)]
    row["p99_vs_baseline_p99"] = row["lateness_p99_ms"] / jitter["p99_ms"] \
        if jitter["p99_ms"] else math.nan
    log(f"  baseline: a sleeping process wakes late by p50 {jitter['p50_ms']:.1f} ms, "
        f"p99 {jitter['p99_ms']:.1f} ms; load average {load0:.1f} → {load1:.1f}")
    return row


def _warm_up(decisions: decisionlog.DecisionLog, names: list[str], timeout: float) -> bool:
    """Every city has decided, and no city changed writer for 5 s."""
    return decisionlog.wait_settled(decisions, len(names), 5.0, timeout)


def _analyse(label: str, cities: int, workers: int, isolation: str, period: float,
             t0: float, t1: float, seen: dict[str, list[decisionlog.Seen]], warm: bool,
             usage0: dict[str, Any], usage1: dict[str, Any], etcd_cpu: float,
             self_cpu: float, delta: etcd.MetricsDelta) -> dict[str, Any]:
    window = t1 - t0
    lateness, lateness_rx = [], []
    delivered = 0
    silent = 0
    writer_changes = 0
    for name in etcd.city_names(cities):
        items = seen.get(name, [])
        in_window = [s for s in items if t0 <= s.decided < t1]
        delivered += len(in_window)
        if not in_window:
            silent += 1
        lateness += [g - period for g in decisionlog.gaps(items, t0, t1, clock="decided")]
        lateness_rx += [g - period for g in decisionlog.gaps(items, t0, t1, clock="received")]
        writer_changes += sum(1 for a, b in itertools.pairwise(in_window)
                              if a.worker != b.worker)
    due = cities * window / period
    on_time = sum(1 for x in lateness if x <= ON_TIME_SLACK)
    # fairness: decisions per city in the window, and the worst cities' timelines
    per_city = sorted(sum(1 for s in seen.get(n, []) if t0 <= s.decided < t1)
                      for n in etcd.city_names(cities))
    worst_gap = {}
    for name in etcd.city_names(cities):
        g = decisionlog.gaps(seen.get(name, []), t0, t1, clock="decided")
        if g:
            worst_gap[name] = max(g)
    worst = sorted(worst_gap, key=worst_gap.__getitem__, reverse=True)[:5]
    timelines = {name: [[round(s.decided - t0, 3), s.worker, s.token]
                        for s in seen.get(name, []) if t0 - 5 <= s.decided < t1]
                 for name in worst}
    cpu = {w: (usage1[w][0] - usage0[w][0]) / window for w in usage0}
    cpu_tree = {w: (usage1[w][1] - usage0[w][1]) / window for w in usage0}
    rss = {w: usage1[w][2] for w in usage1}
    rss_tree = {w: usage1[w][3] for w in usage1}
    row = {
        "label": label, "cities": cities, "workers": workers, "isolation": isolation,
        "period": period, "window_s": window, "warmed_up": warm,
        "decisions": delivered, "decisions_due": due, "delivered_share": delivered / due,
        "gaps": len(lateness), "on_time_share": on_time / len(lateness) if lateness else 0.0,
        "on_time_of_due": on_time / due,
        "lateness_p50_ms": stats.percentile(lateness, 50) * 1e3,
        "lateness_p99_ms": stats.percentile(lateness, 99) * 1e3,
        "lateness_max_ms": (max(lateness) if lateness else math.nan) * 1e3,
        "lateness_received_p99_ms": stats.percentile(lateness_rx, 99) * 1e3,
        "silent_cities": silent, "writer_changes_in_window": writer_changes,
        "decisions_per_city": {"min": per_city[0], "p10": stats.percentile(per_city, 10),
                               "p50": stats.percentile(per_city, 50),
                               "max": per_city[-1]} if per_city else {},
        "worst_cities": timelines,
        "worker_cpu_cores": cpu, "worker_cpu_cores_with_solvers": cpu_tree,
        "worker_rss_mib": rss, "worker_rss_mib_with_solvers": rss_tree,
        "cpu_per_worker_mean": sum(cpu_tree.values()) / len(cpu_tree),
        "cpu_total_workers": sum(cpu_tree.values()),
        "rss_per_worker_mean": sum(rss_tree.values()) / len(rss_tree),
        "rss_total_workers": sum(rss_tree.values()),
        "worker_cpu_ms_per_decision": sum(cpu_tree.values()) * window / max(delivered, 1)
        * 1e3,
        "etcd_cpu_cores": etcd_cpu / window,
        "etcd_requests_per_s": delta.rate(),
        "etcd_requests_by_method_per_s": {k: v / delta.seconds
                                          for k, v in sorted(delta.requests.items())},
        "bench_watch_cpu_cores": self_cpu / window,
    }
    row["p99_target_met"] = row["lateness_p99_ms"] <= P99_TARGET * 1e3 \
        and row["delivered_share"] >= 0.99
    log(f"  on time {row['on_time_share']:.1%}, lateness p50 {row['lateness_p50_ms']:.0f} ms "
        f"p99 {row['lateness_p99_ms']:.0f} ms, delivered {row['delivered_share']:.1%}, "
        f"CPU/worker {row['cpu_per_worker_mean']:.2f} cores, etcd {row['etcd_cpu_cores']:.2f} "
        f"cores {row['etcd_requests_per_s']:.0f} req/s")
    return row


HEADERS = ["cities", "workers", "isolation", "on time", "delivered", "late p50 ms",
           "late p99 ms", "late max ms", "baseline p99 ms", "CPU/worker", "CPU total",
           "RSS/worker MiB", "etcd CPU", "etcd req/s", "load avg", "p99<100ms"]


def row_cells(r: dict[str, Any]) -> list[Any]:
    return [r["cities"], r["workers"], r["isolation"], f"{r['on_time_share']:.1%}",
            f"{r['delivered_share']:.1%}", r["lateness_p50_ms"], r["lateness_p99_ms"],
            r["lateness_max_ms"], r["baseline_jitter"]["p99_ms"], r["cpu_per_worker_mean"],
            r["cpu_total_workers"], r["rss_per_worker_mean"], r["etcd_cpu_cores"],
            r["etcd_requests_per_s"], f"{r['load_average'][0]:.1f}",
            "yes" if r["p99_target_met"] else "no"]


def plot(results: dict[str, Any], path: Path) -> None:
    """Cost per decision (CPU of the workers and of etcd) and memory against cities and
    against workers, and lateness against cities. Per decision, because on a machine
    that cannot give the workers all the CPU they ask for, totals flatten out at what
    the machine gives, not at what the work costs."""
    plt = output.pyplot()

    def per_decision(r: dict[str, Any], cores: float) -> float:
        return float(cores * r["window_s"] / max(r["decisions"], 1) * 1e3)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sweeps = [("cities", results.get("city_sweep") or [], "cities (4 workers, 1 s period)"),
              ("workers", results.get("worker_sweep") or [], "workers (same cities)")]
    for ax, (key, rows, xlabel) in zip(axes[:2], sweeps, strict=True):
        if not rows:
            ax.set_visible(False)
            continue
        rows = sorted(rows, key=lambda r: r[key])
        xs = [r[key] for r in rows]
        ax.plot(xs, [r["worker_cpu_ms_per_decision"] for r in rows], "o-",
                label="workers: CPU ms per decision")
        ax.plot(xs, [per_decision(r, r["etcd_cpu_cores"]) for r in rows], "s-",
                label="etcd: CPU ms per decision")
        ax.plot(xs, [r["etcd_requests_per_s"] * r["window_s"] / max(r["decisions"], 1)
                     for r in rows], "d-", label="etcd requests per decision")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms CPU / requests, per decision")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.plot(xs, [r["rss_total_workers"] for r in rows], "^--", color="tab:green",
                  label="workers: total RSS (MiB)")
        twin.set_ylabel("RSS (MiB)")
        twin.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        lines2 = twin.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="lower right")
        ax.set_title(f"cost vs {key}")
    ax = axes[2]
    rows = sorted(results.get("city_sweep") or [], key=lambda r: r["cities"])
    if rows:
        xs = [r["cities"] for r in rows]
        ax.plot(xs, [max(r["lateness_p50_ms"], 0.1) for r in rows], "o-", label="lateness p50")
        ax.plot(xs, [max(r["lateness_p99_ms"], 0.1) for r in rows], "s-", label="lateness p99")
        ax.plot(xs, [r["baseline_jitter"]["p99_ms"] for r in rows], "x:",
                label="a sleeping process, p99 (machine baseline)")
        ax.axhline(100, color="grey", ls=":", label="target p99: 100 ms")
        ax.set_yscale("log")
        ax.set_xlabel("cities (4 workers, 1 s period)")
        ax.set_ylabel("ms")
        ax.set_title("tick lateness vs cities")
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.plot(xs, [100 * r["delivered_share"] for r in rows], "^--", color="tab:green",
                  label="decisions delivered (% of due)")
        twin.set_ylim(0, 105)
        twin.set_ylabel("% of due decisions delivered")
        lines = ax.get_legend_handles_labels()
        lines2 = twin.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    else:
        ax.set_visible(False)
    machine = results["machine"]
    load = machine.get("load_average_at_start", ["?"])[0]
    fig.suptitle(f"dispatch coordinator scale — {machine['cpu_model']}, {machine['cores']} "
                 f"cores (load {load} at start), etcd {machine['etcd']} (one member)",
                 fontsize=10)
    output.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cities", type=int, default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=None, help="measurement window")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of each headline configuration")
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--sweep-cities", default="250,500,750,1000,1500,2000")
    parser.add_argument("--sweep-workers", default="1,2,4,8")
    parser.add_argument("--sweep-workers-cities", type=int, default=500)
    parser.add_argument("--sweep-isolation", default="thread")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--tick-threads", type=int, default=8,
                        help="each worker's --tick-threads (default: the worker's own, 8)")
    parser.add_argument("--isolations", default="thread,process",
                        help="solve isolations of the headline runs")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw docs/img/scale.png from bench/results/scale.json")
    args = parser.parse_args(argv)
    processes.require_psutil()
    if args.plot_only:
        import json

        plot(json.loads((RESULTS / "scale.json").read_text()),
             IMAGES / "scale.png")
        return 0
    cities = args.cities or (200 if args.quick else 1000)
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    repeats = args.repeats or (1 if args.quick else 2)
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results: dict[str, Any] = {
        "machine": host.describe(), "mode": "quick" if args.quick else "full",
        "period": args.period, "params": PARAMS, "solver": "greedy",
        "tick_threads": args.tick_threads,
        "on_time": f"gap <= period + {ON_TIME_SLACK * 1e3:.0f} ms",
        "headline": [], "city_sweep": [], "worker_sweep": [],
    }
    for _ in range(repeats):
        for isolation in args.isolations.split(","):
            results["headline"].append(run_config(cities, args.workers, isolation,
                                                  period=args.period, seconds=seconds,
                                                  logs=logs, tick_threads=args.tick_threads))
    sweep_seconds = 30.0
    if not args.quick and not args.no_sweep:
        saturated = 0
        for n in [int(x) for x in args.sweep_cities.split(",")]:
            row = run_config(n, args.workers, args.sweep_isolation, period=args.period,
                             seconds=sweep_seconds, logs=logs,
                             tick_threads=args.tick_threads)
            results["city_sweep"].append(row)
            # go on past the p99 target (the cost curve is wanted too), but stop once the
            # workers cannot even deliver 90 % of the decisions due, twice in a row
            saturated = saturated + 1 if row["delivered_share"] < 0.9 else 0
            if saturated >= 2:
                break
        for w in [int(x) for x in args.sweep_workers.split(",")]:
            results["worker_sweep"].append(run_config(
                args.sweep_workers_cities, w, args.sweep_isolation, period=args.period,
                seconds=sweep_seconds, logs=logs, tick_threads=args.tick_threads))
    carried = [r["cities"] for r in results["city_sweep"] if r["p99_target_met"]]
    results["most_cities_with_p99_under_100ms"] = max(carried) if carried else None
    results["worker_logs"] = str(logs)

    print(f"\n{cities} cities, period {args.period:.0f} s, greedy on simulated "
          f"{PARAMS['orders']}×{PARAMS['couriers']}, {args.workers} workers, one etcd member; "
          f"window {seconds:.0f} s; on time = gap ≤ period + 100 ms; CPU in cores\n")
    print(output.console_table(HEADERS, [row_cells(r) for r in results["headline"]]))
    by_iso: dict[str, list[dict[str, Any]]] = {}
    for r in results["headline"]:
        by_iso.setdefault(r["isolation"], []).append(r)
    if "thread" in by_iso and "process" in by_iso:
        def med(iso: str, key: str) -> float:
            return stats.percentile([r[key] for r in by_iso[iso]], 50)
        results["process_vs_thread"] = {
            key: med("process", key) / med("thread", key) if med("thread", key) else math.nan
            for key in ("cpu_total_workers", "rss_total_workers", "lateness_p99_ms",
                        "etcd_requests_per_s")}
        print("\nprocess ÷ thread isolation (medians): " + ", ".join(
            f"{k} {v:.2f}×" for k, v in results["process_vs_thread"].items()))
    if results["city_sweep"]:
        print(f"\nCity sweep ({args.workers} workers, {args.sweep_isolation} isolation, "
              f"{sweep_seconds:.0f} s windows)\n")
        print(output.console_table(HEADERS, [row_cells(r) for r in results["city_sweep"]]))
        print(f"\nmost cities with p99 lateness under 100 ms: "
              f"{results['most_cities_with_p99_under_100ms']}")
    if results["worker_sweep"]:
        print(f"\nWorker sweep ({args.sweep_workers_cities} cities, {args.sweep_isolation} "
              f"isolation)\n")
        print(output.console_table(HEADERS, [row_cells(r) for r in results["worker_sweep"]]))
    path = output.write_results("scale", results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    if results["city_sweep"] or results["worker_sweep"] or not args.quick:
        plot(results, IMAGES / "scale.png")
        print(f"plot: {(IMAGES / 'scale.png').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
