"""What a decision costs in etcd, against the city's size: bytes of the stored value as
the worker writes it, beside the form written before each pair was kept once.

    python -m bench.decisionsize           # the fleet benchmark's sizes and a few more
    python -m bench.decisionsize --quick   # three sizes

Every tick writes one decision and etcd keeps every revision until compaction, so a
decision's bytes are what a city costs the etcd database (and the relay, and a sink's
JSON column). Each size is a real tick of the worker's own path: the ``simulated``
state, a real solve, ``messages.decision`` and the codec's encoding. The baseline, same
run, is the same decision in the earlier form: the pairs repeated in the
``assignments`` map and the ETAs at full double precision.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench import ROOT, host, output
from bench.output import log
from coordinator.codec import encode
from coordinator.recipes.election import LeaderKey
from coordinator.worker.messages import decision, state_ref
from coordinator.worker.runner import SolveResult
from protos import dispatch_pb2 as pb
from solvers.contract import CityState, Solution
from solvers.generate import simulated_state
from solvers.greedy import GreedySolver
from solvers.hungarian import HungarianSolver

#: (orders, couriers, solver): the fleet benchmark's classes and the sizes between
FULL_SIZES = [(10, 5, "greedy"), (30, 20, "greedy"), (100, 60, "greedy"),
              (200, 150, "hungarian"), (500, 300, "hungarian"), (1500, 1000, "hungarian")]
QUICK_SIZES = [(30, 20, "greedy"), (200, 150, "hungarian"), (1500, 1000, "hungarian")]
#: a worker id and a city name as long as the fleet benchmark's
CITY, WORKER = "village-001", "w1"
LEADER = LeaderKey(prefix="/fleet/election/village-001",
                   key="/fleet/election/village-001/694d9b2a3c1f0e07", token=123_456,
                   lease=0x694D9B2A3C1F0E07)


def solve(orders: int, couriers: int, solver: str) -> tuple[CityState, Solution]:
    state = simulated_state(CITY, 1_000, n_orders=orders, n_couriers=couriers, seed=0,
                            taken_at=time.time()).freeze()
    engine = GreedySolver() if solver == "greedy" else HungarianSolver()
    return state, engine.solve(state, {}, 1.0)


def legacy(current: pb.Decision, solution: Solution) -> pb.Decision:
    """``current`` as it was written before: each pair also in ``assignments``, and the
    ETAs as the solver returned them."""
    old = pb.Decision()
    old.CopyFrom(current)
    old.assignments.update({a.order_id: a.courier_id for a in current.details})
    for a, eta in zip(old.details, solution.pickup_eta.tolist(), strict=True):
        a.pickup_eta_seconds = eta
    return old


def measure(orders: int, couriers: int, solver: str) -> dict[str, Any]:
    state, solution = solve(orders, couriers, solver)
    ref = state_ref("simulated", pb.StateRef(orders=orders, couriers=couriers, tick=1_000),
                    1.0)
    now = decision(CITY, LEADER, WORKER, solver, state, SolveResult(solution, 0.0123), 1_000,
                   ref)
    before = legacy(now, solution)
    size, size_before = len(encode(now)), len(encode(before))
    assigned = len(now.details)
    fixed = pb.Decision()
    fixed.CopyFrom(now)
    del fixed.details[:]
    del fixed.unassigned[:]
    return {"orders": orders, "couriers": couriers, "solver": solver, "assigned": assigned,
            "unassigned": len(now.unassigned), "bytes": size, "bytes_before": size_before,
            "saved_share": 1 - size / size_before, "fixed_bytes": len(encode(fixed)),
            "bytes_per_assigned": (size - len(encode(fixed))) / max(assigned, 1),
            "bytes_per_order": size / orders}


HEADERS = ["orders × couriers", "solver", "assigned", "bytes", "bytes before", "saved",
           "fixed part", "per assigned order", "per order"]


def row_cells(r: dict[str, Any]) -> list[Any]:
    return [f"{r['orders']} × {r['couriers']}", r["solver"], r["assigned"], r["bytes"],
            r["bytes_before"], f"{r['saved_share']:.0%}", r["fixed_bytes"],
            float(r["bytes_per_assigned"]), float(r["bytes_per_order"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decisionsize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three sizes only")
    parser.add_argument("--results", default="decisionsize",
                        help="results file name in bench/results/ (default decisionsize)")
    args = parser.parse_args(argv)
    rows = []
    for orders, couriers, solver in QUICK_SIZES if args.quick else FULL_SIZES:
        log(f"size {orders} × {couriers} ({solver})")
        rows.append(measure(orders, couriers, solver))
    results = {"machine": host.describe(), "mode": "quick" if args.quick else "full",
               "city": CITY, "worker": WORKER, "sizes": rows}
    print("\nBytes of one decision as etcd stores it (protobuf's canonical JSON), "
          "against the earlier form:\n")
    print(output.console_table(HEADERS, [row_cells(r) for r in rows]))
    path = output.write_results(args.results, results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
