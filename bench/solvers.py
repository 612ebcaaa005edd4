"""Benchmark of the built-in solvers: speed against raw assignment, cost against optimum.

    python -m bench.solvers            # full: 100, 500, 1,000, 2,000 (a few minutes)
    python -m bench.solvers --quick    # 100 and 500 only, fewer repeats

For each city size (``random_city``, n orders × n couriers, 10 % busy couriers, plus a
bundling scenario with more orders than couriers and sizes 1–2) it reports:

* the raw assignment time of ``scipy.optimize.linear_sum_assignment`` on the city's ETA
  matrix, measured in the same run (and ``lap.lapjv`` when importable): the yardstick;
* for each model: best-of-``repeats`` solve time in ms (wall and CPU) and, in CPU time,
  as a ratio to that yardstick (a model's time includes building its own matrices).
  Repeats are interleaved across jobs, so load from other processes on a shared machine
  skews all of them alike;
* its objective (``solution_cost``), the gap to the optimal one-to-one answer
  (``hungarian``), the orders it assigns and their mean pickup ETA;
* whether a solve lets other Python threads run (it matters: the coordinator solves on
  a thread while another keeps the worker's etcd lease alive).

The table is printed and written, with the machine's description, to
``bench/results/solvers.json``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scipy.optimize import linear_sum_assignment

from bench import RESULTS
from solvers.assignment import lap_available
from solvers.bundle import BundleSolver
from solvers.contract import CityState, Solution, Solver
from solvers.cost import eta_matrix, solution_cost
from solvers.generate import random_city
from solvers.greedy import GreedySolver
from solvers.hungarian import HungarianSolver

OUT = RESULTS / "solvers.json"


def best_times(repeats: int, jobs: dict[str, Callable[[], Any]]
               ) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Best wall and best CPU time (s) of each job over ``repeats`` rounds, and results.

    Rounds are interleaved (every job once per round) rather than job after job, so a
    burst of load from other processes on a shared machine hits all jobs alike. CPU
    time (the whole process's) is what that load does not inflate.
    """
    wall = dict.fromkeys(jobs, float("inf"))
    cpu = dict.fromkeys(jobs, float("inf"))
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, job in jobs.items():
            w, c = time.perf_counter(), time.process_time()
            results[name] = job()
            cpu[name] = min(cpu[name], time.process_time() - c)
            wall[name] = min(wall[name], time.perf_counter() - w)
    return wall, cpu, results


def other_thread_share(fn: Callable[[], Any]) -> float:
    """How fast a pure-Python thread counts while ``fn`` runs, relative to running alone.

    ~1.0: ``fn`` releases the GIL (the other thread runs freely on another core);
    ~0.0: ``fn`` holds it for the whole solve. Only meaningful for solves that last
    well over the interpreter's 5 ms switch interval.
    """
    counter = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counter[0] += 1

    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    time.sleep(0.05)
    before, started = counter[0], time.perf_counter()
    time.sleep(0.2)  # the main thread is idle: the counter runs alone
    alone = (counter[0] - before) / (time.perf_counter() - started)
    before, started = counter[0], time.perf_counter()
    fn()
    during = (counter[0] - before) / (time.perf_counter() - started)
    stop.set()
    thread.join()
    return min(1.0, during / alone) if alone else float("nan")


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in ("numpy", "scipy", "lap"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_1m": os.getloadavg()[0],
    }


def models() -> list[tuple[str, Solver, dict[str, Any]]]:
    out: list[tuple[str, Solver, dict[str, Any]]] = [
        ("greedy", GreedySolver(), {}),
        ("hungarian", HungarianSolver(), {}),
    ]
    if lap_available():
        out.append(("hungarian[lap]", HungarianSolver(), {"backend": "lap"}))
    out.append(("bundle", BundleSolver(), {}))
    return out


def scenario(label: str, state: CityState, repeats: int, gil: bool) -> dict[str, Any]:
    eta = eta_matrix(state)
    jobs: dict[str, Callable[[], Any]] = {"raw_scipy": lambda: linear_sum_assignment(eta)}
    if lap_available():
        import lap

        jobs["raw_lap"] = lambda: lap.lapjv(eta, extend_cost=True)
    for name, solver, params in models():
        jobs[name] = functools.partial(solver.solve, state, params, 60.0)
    best, cpu, results = best_times(repeats, jobs)
    row: dict[str, Any] = {"scenario": label, "orders": state.n_orders,
                           "couriers": state.n_couriers,
                           "raw_scipy_ms": best["raw_scipy"] * 1e3,
                           "raw_scipy_cpu_ms": cpu["raw_scipy"] * 1e3}
    if "raw_lap" in best:
        row["raw_lap_ms"] = best["raw_lap"] * 1e3
        row["raw_lap_cpu_ms"] = cpu["raw_lap"] * 1e3
    if gil:
        row["gil_free_share"] = {name: other_thread_share(jobs[name]) for name in jobs
                                 if name.startswith(("raw", "hungarian"))}
    models_out: dict[str, dict[str, Any]] = {}
    for name, _, _ in models():
        sol = results[name]
        assert isinstance(sol, Solution)
        etas = sol.pickup_eta
        models_out[name] = {
            "ms": best[name] * 1e3,
            "cpu_ms": cpu[name] * 1e3,
            "ratio_to_raw_scipy": cpu[name] / cpu["raw_scipy"],
            "cost": solution_cost(state, sol),
            "assigned": int(sol.orders.size),
            "mean_eta_s": float(etas.mean()) if etas.size else 0.0,
        }
    optimum = models_out["hungarian"]["cost"]
    optimum_eta = models_out["hungarian"]["mean_eta_s"]
    for r in models_out.values():
        r["gap_pct"] = 100.0 * (r["cost"] - optimum) / optimum if optimum else 0.0
        r["mean_eta_gap_pct"] = (100.0 * (r["mean_eta_s"] - optimum_eta) / optimum_eta
                                 if optimum_eta else 0.0)
    row["models"] = models_out
    return row


def shape_sweep(n: int, ratios: list[float], repeats: int) -> list[dict[str, Any]]:
    """Raw scipy vs ``hungarian`` for n orders and ratio × n couriers (none busy).

    Linear sum assignment on geometric ETAs is very sensitive to the shape; this shows
    how much, and what ``hungarian``'s row ordering and padding recover.
    """
    out = []
    for ratio in ratios:
        m = round(n * ratio)
        state = random_city(f"bench-shape-{m}", n, m, 1, busy_share=0.0).freeze()
        eta = eta_matrix(state)
        best, cpu, _ = best_times(repeats, {
            "raw_scipy": functools.partial(linear_sum_assignment, eta),
            "hungarian": functools.partial(HungarianSolver().solve, state, {}, 60.0),
        })
        out.append({"orders": n, "couriers": m, "raw_scipy_ms": best["raw_scipy"] * 1e3,
                    "hungarian_ms": best["hungarian"] * 1e3,
                    "raw_scipy_cpu_ms": cpu["raw_scipy"] * 1e3,
                    "hungarian_cpu_ms": cpu["hungarian"] * 1e3})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'scenario':<22} {'model':<15} {'wall ms':>9} {'cpu ms':>9} {'x scipy':>8} "
            f"{'gap %':>7} {'assigned':>9} {'mean eta s':>10} {'eta gap %':>9}")
    lines = [head, "-" * len(head)]
    for row in rows:
        base = f"raw scipy {row['raw_scipy_ms']:.1f} / {row['raw_scipy_cpu_ms']:.1f} ms"
        if "raw_lap_ms" in row:
            base += f", raw lap {row['raw_lap_ms']:.1f} / {row['raw_lap_cpu_ms']:.1f} ms"
        lines.append(f"{row['scenario']:<22} ({base})")
        for name, r in row["models"].items():
            lines.append(f"{'':<22} {name:<15} {r['ms']:>9.1f} {r['cpu_ms']:>9.1f} "
                         f"{r['ratio_to_raw_scipy']:>8.2f} "
                         f"{r['gap_pct']:>+7.2f} {r['assigned']:>9} {r['mean_eta_s']:>10.1f} "
                         f"{r['mean_eta_gap_pct']:>+9.2f}")
    gil = [(row["scenario"], row["gil_free_share"]) for row in rows if "gil_free_share" in row]
    for label, shares in gil:
        lines.append(f"other-thread progress during the solve ({label}): " + ", ".join(
            f"{k} {v:.0%}" for k, v in shares.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.solvers",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="sizes 100 and 500 only")
    parser.add_argument("--repeats", type=int, default=None, help="best of N (5; quick 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sizes = [100, 500] if args.quick else [100, 500, 1_000, 2_000]
    repeats = args.repeats or (3 if args.quick else 5)
    scenarios: list[tuple[str, CityState]] = [
        (f"{n} x {n}", random_city(f"bench-{n}", n, n, args.seed).freeze()) for n in sizes]
    bundle_n = 500 if args.quick else 1_000
    scenarios.append((f"{bundle_n} x {bundle_n * 2 // 5}, size 1-2",
                      random_city("bench-bundle", bundle_n, bundle_n * 2 // 5, args.seed,
                                  max_size=2).freeze()))
    rows = []
    for i, (label, state) in enumerate(scenarios):
        print(f"... {label}", file=sys.stderr, flush=True)
        rows.append(scenario(label, state, repeats, gil=i == len(sizes) - 1))
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores "
          f"(load average {info['load_average_1m']:.1f}), {info['platform']}, "
          f"python {info['python']}, " + ", ".join(f"{k} {v}" for k, v in
                                                 info["versions"].items()))
    print(f"mode: {'quick' if args.quick else 'full'}, best of {repeats}, seed {args.seed}")
    print(table(rows))
    sweep = [] if args.quick else shape_sweep(2_000, [0.5, 0.75, 0.9, 0.995, 1.0, 1.05], 2)
    if sweep:
        print("shape sensitivity (best of 2, CPU ms): orders x couriers: raw scipy -> "
              "hungarian")
        for r in sweep:
            print(f"  {r['orders']} x {r['couriers']}: {r['raw_scipy_cpu_ms']:.0f} -> "
                  f"{r['hungarian_cpu_ms']:.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "mode": "quick" if args.quick else "full",
                                    "repeats": repeats, "seed": args.seed, "rows": rows,
                                    "shape_sweep": sweep},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
