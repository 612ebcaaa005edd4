"""A realistic fleet: a heavy-tailed mix of cities over 4 workers, placed by measured cost
against placed by count, side by side in the same run.

    python -m bench.fleet            # full: 3 capitals of 1,500 × 1,000 (hungarian, bundle),
                                     # 30 towns of 200 × 150, 300 villages of 30 × 20
    python -m bench.fleet --quick    # 2 capitals of 600 × 400, 8 towns of 150 × 100,
                                     # 60 villages of 30 × 20; 30 s windows

Each placement gets a fresh etcd member and 4 fresh ``dispatch-worker`` processes
started together (``--placement cost`` or ``count``, nothing else different). After a
warm-up it measures, over a window:

* **balance**: each worker's CPU (with its solver processes), the busiest over the mean
  (target ≤ 1.10 placing by cost) — the count placement is the baseline;
* **on time per size class**: per city, the gap between consecutive decisions against
  the period; a gap ≤ period + 100 ms is on time (target ≥ 99.5 %);
* **moves per hour once converged**: cities that changed writer in the window (target 0);
* **etcd writes**: bytes put under the namespace per second and per decision (key +
  value, from a watch on the whole namespace), by key class (decisions, status, load, …).

Then (``--join-leave``, by default the cost placement's run) a fifth worker joins, and
once the placement has converged again it leaves (SIGTERM, its cities handed over):
for each, the moves, when the last came, the largest gap at a move and on time per class
until converged.

The warm-up ends once the placement has converged: every city has decided and no city
changed writer for ``--settle`` seconds (full: 90, three rebalance delays: a city's cost
takes about twenty ticks to measure and an imbalance must last one delay before anything
moves, so a shorter quiet spell can come before the first rebalance). The moves it took
are reported too (``moves_to_converge``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import ROOT, decisionlog, etcd, host, output, processes, stats
from bench.output import log
from coordinator.etcd import EtcdClient, WatchBatch
from coordinator.keys import Keys
from coordinator.ops.placement import read_loads
from coordinator.recipes.watch import PrefixWatch

NAMESPACE = "/fleet"
ON_TIME_SLACK = 0.1
BALANCE_TARGET = 1.10
ON_TIME_TARGET = 0.995
#: (class, cities, orders, couriers, solvers cycled over the class)
FULL_MIX = [("capital", 3, 1500, 1000, ("hungarian", "bundle")),
            ("town", 30, 200, 150, ("hungarian",)),
            ("village", 300, 30, 20, ("greedy",))]
QUICK_MIX = [("capital", 2, 600, 400, ("hungarian", "bundle")),
             ("town", 8, 150, 100, ("hungarian",)),
             ("village", 60, 30, 20, ("greedy",))]


def put_mix(client: EtcdClient, keys: Keys, mix: list[Any], period: float,
            paced: frozenset[str] = frozenset()) -> dict[str, str]:
    """Create the cities (those of the classes in ``paced`` with ``steadyPace``); city
    -> its size class."""
    classes = {}
    for name, n, orders, couriers, solvers in mix:
        for i, solver in zip(range(n), itertools.cycle(solvers), strict=False):
            city = f"{name}-{i:03d}"
            etcd.put_cities(client, keys, [city], solver=solver, period=period,
                            params={"orders": orders, "couriers": couriers},
                            steady_pace=name in paced)
            classes[city] = name
    return classes


class WriteMeter:
    """Bytes put under a prefix (key + value), by key class, from one watch stream."""

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        self.root = keys.namespace + "/"
        self._lock = threading.Lock()
        self.bytes: Counter[str] = Counter()
        self.puts: Counter[str] = Counter()
        # resumed after a stream error, so a lost stream never reads as a quiet etcd
        self._watch = PrefixWatch(client, self.root, name="write meter",
                                  on_snapshot=lambda kvs, revision: None,
                                  on_events=self._events).start()

    def _events(self, batch: WatchBatch) -> None:
        with self._lock:
            for event in batch.events:
                if event.kind == "put":
                    kind = event.kv.key[len(self.root):].partition("/")[0]
                    self.bytes[kind] += len(event.kv.key) + len(event.kv.value)
                    self.puts[kind] += 1

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        with self._lock:
            return Counter(self.bytes), Counter(self.puts)

    def stop(self) -> None:
        self._watch.stop()


def run_placement(placement: str, mix: list[Any], *, workers: int, period: float,
                  seconds: float, settle: float, isolation: str, logs: Path,
                  log_level: str = "warning", paced: frozenset[str] = frozenset(),
                  join_leave: bool = False) -> dict[str, Any]:
    log(f"run: placement by {placement}, window {seconds:.0f}s")
    with etcd.cluster(1) as cluster:
        client = etcd.client_for(cluster.endpoints)
        keys = Keys(NAMESPACE)
        classes = put_mix(client, keys, mix, period, paced)
        decisions = decisionlog.DecisionLog(client, keys).start()
        writes = WriteMeter(client, keys)
        procs = processes.Workers(cluster.endpoints, NAMESPACE, logs / placement, extra=[
            "--placement", placement, "--solve-isolation", isolation, "--lease-ttl", "5",
            "--log-level", log_level])
        try:
            started = time.time()
            ids = [f"w{i + 1}" for i in range(workers)]
            for worker_id in ids:
                procs.start(worker_id)
            warm = decisionlog.wait_settled(decisions, len(classes), settle,
                                            timeout=max(120.0, 8 * settle))
            converged_after = time.time() - started
            log(f"  warm-up {'done' if warm else 'TIMED OUT'} after {converged_after:.0f}s")
            pids = {w: procs.procs[w].pid for w in ids}
            usage0 = {w: processes.process_tree_usage(pid) for w, pid in pids.items()}
            bytes0, puts0 = writes.snapshot()
            probe = processes.JitterProbe(seconds)
            t0 = time.time()
            time.sleep(seconds)
            t1 = time.time()
            published = {w: load.total for w, load in read_loads(client, keys).items()}
            jitter = probe.result()
            usage1 = {w: processes.process_tree_usage(pid) for w, pid in pids.items()}
            bytes1, puts1 = writes.snapshot()
            time.sleep(min(2.0, 2 * period))
            seen = decisions.snapshot()
            placed = decisions.latest_writer()
            phases = join_and_leave(procs, decisions, classes, f"w{workers + 1}",
                                    period=period, settle=settle) if join_leave else {}
        finally:
            writes.stop()
            decisions.stop()
            procs.close()
            client.close()
    window = t1 - t0
    cpu = {w: (usage1[w][1] - usage0[w][1]) / window for w in usage0}
    mean = sum(cpu.values()) / len(cpu)
    row: dict[str, Any] = {
        "join_leave": phases,
        "placement": placement, "workers": workers, "window_s": window, "warmed_up": warm,
        "settle_s": settle, "converged_after_s": converged_after,
        "worker_cpu_cores": cpu, "cpu_mean": mean,
        # what each worker measured itself (its cities' costs), at the window's end
        "published_load": published,
        "busiest_over_mean": max(cpu.values()) / mean if mean else float("nan"),
        "baseline_jitter": jitter,
        "cities_per_worker": dict(Counter(placed.values())),
    }
    per_class: dict[str, dict[str, Any]] = {}
    moves = converging = 0
    decided = 0
    for name in dict.fromkeys(classes.values()):
        gaps: list[float] = []
        for city in (c for c, k in classes.items() if k == name):
            items = seen.get(city, [])
            gaps += decisionlog.gaps(items, t0, t1, clock="decided")
            in_window = [s for s in items if t0 <= s.decided < t1]
            decided += len(in_window)
            moves += sum(1 for a, b in itertools.pairwise(in_window) if a.worker != b.worker)
            converging += sum(1 for a, b in itertools.pairwise(items)
                              if b.decided < t0 and a.worker != b.worker)
        per_class[name] = {"cities": sum(1 for k in classes.values() if k == name),
                           "gaps": len(gaps), "on_time_share": on_time_share(gaps, period),
                           "lateness_p99_ms": (stats.percentile(gaps, 99) - period) * 1e3
                           if gaps else float("nan")}
    written = {k: bytes1[k] - bytes0[k] for k in set(bytes1) | set(bytes0)}
    puts = {k: puts1[k] - puts0[k] for k in set(puts1) | set(puts0)}
    row.update({
        "on_time_by_class": per_class, "moves_in_window": moves, "moves_to_converge": converging,
        "moves_per_hour": moves * 3600 / window, "decisions": decided,
        "etcd_bytes_per_s": sum(written.values()) / window,
        "etcd_bytes_per_decision": sum(written.values()) / max(decided, 1),
        "etcd_bytes_per_s_by_key": {k: v / window for k, v in sorted(written.items())},
        "etcd_puts_per_s_by_key": {k: v / window for k, v in sorted(puts.items())},
    })
    log(f"  busiest/mean CPU {row['busiest_over_mean']:.2f}, moves/h "
        f"{row['moves_per_hour']:.0f}, etcd {row['etcd_bytes_per_s']:.0f} B/s "
        f"({row['etcd_bytes_per_decision']:.0f} B/decision), on time " + ", ".join(
            f"{k} {v['on_time_share']:.1%}" for k, v in per_class.items()))
    return row


def on_time_share(gaps: list[float], period: float) -> float:
    """The share of ``gaps`` within ``ON_TIME_SLACK`` of the period (NaN for none)."""
    if not gaps:
        return float("nan")
    return sum(1 for g in gaps if g - period <= ON_TIME_SLACK) / len(gaps)


def join_and_leave(procs: processes.Workers, decisions: decisionlog.DecisionLog,
                   classes: dict[str, str], newcomer: str, *, period: float,
                   settle: float) -> dict[str, Any]:
    """A worker joins the converged fleet, then leaves it (SIGTERM: its cities handed
    over): each until the placement has converged again; the moves and gaps of each."""
    phases = {}
    for phase in ("join", "leave"):
        since = time.time()
        if phase == "join":
            procs.start(newcomer)
        else:
            procs.terminate(newcomer)
        settled = decisionlog.wait_settled(decisions, len(classes), settle,
                                           timeout=max(120.0, 8 * settle))
        until = time.time()
        time.sleep(min(2.0, 2 * period))
        phases[phase] = phase_figures(decisions.snapshot(), classes, since, until, period)
        phases[phase]["converged"] = settled
        log(f"  {phase}: {phases[phase]['moves']} moves, the last after "
            f"{phases[phase]['last_move_after_s']:.0f}s; worst gap at a move "
            f"{phases[phase]['worst_handover_gap_s']:.2f}s; on time " + ", ".join(
                f"{k} {v['on_time_share']:.1%}"
                for k, v in phases[phase]["on_time_by_class"].items()))
    return phases


def phase_figures(seen: dict[str, list[decisionlog.Seen]], classes: dict[str, str],
                  since: float, until: float, period: float) -> dict[str, Any]:
    """Moves (writer changes), the gap at each move and on time per class, for the
    decisions in [since, until)."""
    moves, handover_gaps, last_move = 0, [], since
    per_class: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(classes.values()):
        gaps: list[float] = []
        for city in (c for c, k in classes.items() if k == name):
            items = seen.get(city, [])
            gaps += decisionlog.gaps(items, since, until, clock="decided")
            for a, b in itertools.pairwise(items):
                if since <= b.decided < until and a.worker != b.worker:
                    moves += 1
                    handover_gaps.append(b.decided - a.decided)
                    last_move = max(last_move, b.decided)
        per_class[name] = {
            "gaps": len(gaps),
            "on_time_share": on_time_share(gaps, period),
            "worst_lateness_ms": (max(gaps) - period) * 1e3 if gaps else float("nan")}
    return {"seconds": until - since, "moves": moves, "last_move_after_s": last_move - since,
            "worst_handover_gap_s": max(handover_gaps, default=float("nan")),
            "on_time_by_class": per_class}


HEADERS = ["placement", "busiest/mean CPU", "CPU mean", "capital on time", "town on time",
           "village on time", "moves/h", "etcd B/s", "etcd B/decision", "cities per worker"]


def row_cells(r: dict[str, Any]) -> list[Any]:
    on = r["on_time_by_class"]

    def share(name: str) -> str:
        return f"{on[name]['on_time_share']:.1%}" if name in on else "-"

    return [r["placement"], r["busiest_over_mean"], r["cpu_mean"], share("capital"),
            share("town"), share("village"), r["moves_per_hour"], r["etcd_bytes_per_s"],
            r["etcd_bytes_per_decision"],
            " ".join(f"{w}:{n}" for w, n in sorted(r["cities_per_worker"].items()))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="the small mix, 30 s windows (a few minutes in all)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--period", type=float, default=2.0, help="every city's period (s)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="measuring window per placement (default 30 quick, 300 full)")
    parser.add_argument("--settle", type=float, default=None,
                        help="converged: no city changes writer for this long (default 20 "
                             "quick, 90 full: three of the workers' rebalance delays, as an "
                             "imbalance must last one before anything moves)")
    parser.add_argument("--isolation", default=None, choices=["thread", "process"],
                        help="the workers' --solve-isolation (default thread quick, process "
                             "full)")
    parser.add_argument("--placements", default="cost,count",
                        help="comma-separated, run in this order (default cost,count)")
    parser.add_argument("--steady-pace", default="capital", metavar="CLASSES",
                        help="comma-separated size classes whose cities have steadyPace "
                             "(decisions released at a steady offset after their tick's "
                             "start; '' for none; default capital)")
    parser.add_argument("--join-leave", default="cost", metavar="PLACEMENTS",
                        help="comma-separated placements whose run ends with a fifth worker "
                             "joining and then leaving (SIGTERM), each until converged "
                             "again: moves and gaps ('' for none; default cost)")
    parser.add_argument("--worker-log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="the workers' --log-level (their logs: see worker_logs in the "
                             "results; info shows every handover and every move held back)")
    parser.add_argument("--results", default="fleet",
                        help="results file name in bench/results/ (default fleet)")
    args = parser.parse_args(argv)
    processes.require_psutil()
    mix = QUICK_MIX if args.quick else FULL_MIX
    seconds = args.seconds or (30.0 if args.quick else 300.0)
    settle = args.settle or (20.0 if args.quick else 90.0)
    isolation = args.isolation or ("thread" if args.quick else "process")
    paced = frozenset(c for c in args.steady_pace.split(",") if c)
    churned = frozenset(c for c in args.join_leave.split(",") if c)
    logs = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    results: dict[str, Any] = {
        "machine": host.describe(), "mode": "quick" if args.quick else "full",
        "mix": [{"class": c, "cities": n, "orders": o, "couriers": k, "solvers": list(s)}
                for c, n, o, k, s in mix],
        "period": args.period, "workers": args.workers, "isolation": isolation,
        "steady_pace": sorted(paced),
        "on_time": f"gap <= period + {ON_TIME_SLACK * 1e3:.0f} ms",
        "targets": {"busiest_over_mean": BALANCE_TARGET, "on_time_share": ON_TIME_TARGET,
                    "moves_per_hour": 0},
        "runs": [],
    }
    for placement in args.placements.split(","):
        results["runs"].append(run_placement(placement, mix, workers=args.workers,
                                             period=args.period, seconds=seconds,
                                             settle=settle, isolation=isolation, logs=logs,
                                             log_level=args.worker_log_level,
                                             paced=paced,
                                             join_leave=placement in churned))
    by = {r["placement"]: r for r in results["runs"]}
    if "cost" in by and "count" in by:
        results["cost_vs_count"] = {
            key: by["cost"][key] / by["count"][key] if by["count"][key] else float("nan")
            for key in ("busiest_over_mean", "etcd_bytes_per_s", "etcd_bytes_per_decision")}
    results["worker_logs"] = str(logs)
    sizes = ", ".join(f"{n} {c} {o}×{k}" for c, n, o, k, _ in mix)
    print(f"\n{sum(m[1] for m in mix)} cities ({sizes}), "
          f"period {args.period:g} s, {args.workers} workers ({isolation} solves), one etcd "
          f"member; window {seconds:.0f} s; on time = gap ≤ period + 100 ms; steady pace: "
          f"{', '.join(sorted(paced)) or 'none'}\n")
    print(output.console_table(HEADERS, [row_cells(r) for r in results["runs"]]))
    if "cost_vs_count" in results:
        print("\ncost ÷ count placement: " + ", ".join(
            f"{k} {v:.2f}×" for k, v in results["cost_vs_count"].items()))
    path = output.write_results(args.results, results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
