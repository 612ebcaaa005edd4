"""The messages a tick writes: a validated solution turned into its ``Decision``."""

from __future__ import annotations

import time

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.errors import SolverFailed
from coordinator.recipes.election import LeaderKey
from coordinator.worker.runner import SolveResult
from protos import dispatch_pb2 as pb
from solvers.contract import CityState, Solution
from solvers.cost import solution_cost
from solvers.validate import InvalidSolution, check_solution

__all__ = ["ETA_DECIMALS", "decision", "state_ref", "timestamp", "validated"]

#: decimal places of a decision's pickup ETAs (seconds): milliseconds
ETA_DECIMALS = 3


def timestamp(seconds: float) -> Timestamp:
    """A protobuf timestamp of ``seconds`` since the epoch."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def validated(solver: str, state: CityState, solution: Solution) -> Solution:
    """``solution``, once it proves valid for ``state``; ``SolverFailed`` otherwise."""
    try:
        check_solution(state, solution)
    except InvalidSolution as exc:
        raise SolverFailed(f"solver {solver!r} returned an invalid solution: {exc}") from exc
    return solution


def state_ref(source: str, ref: pb.StateRef | None, budget: float) -> pb.StateRef:
    """The tick's ``StateRef``: what its source said (``load_with_ref``; ``None``: the
    source keeps no history), with the source's name and the solve budget."""
    out = pb.StateRef() if ref is None else ref
    out.source = source
    out.budget_seconds = budget
    return out


def decision(city: str, leader: LeaderKey, worker_id: str, solver: str, state: CityState,
             result: SolveResult, tick: int, ref: pb.StateRef | None = None) -> pb.Decision:
    """The decision message of a tick whose solution is valid (:func:`validated`), with
    ``ref``, how to read its state back (:func:`state_ref`). Each pair is written once,
    in ``details``; the ``assignments`` map is left empty (:func:`codec.assigned` reads
    either)."""
    solution = result.solution
    # Python lists first: one numpy element at a time is ~10 times slower.
    orders: list[str] = state.order_ids[solution.orders].tolist()
    couriers: list[str] = state.courier_ids[solution.couriers].tolist()
    # An ETA to the millisecond: the last digits of a double are noise, and etcd keeps
    # every revision of them (docs/benchmarks.md, "What a decision costs").
    etas: list[float] = np.round(solution.pickup_eta, ETA_DECIMALS).tolist()
    left = np.ones(state.n_orders, dtype=bool)
    left[solution.orders] = False
    return pb.Decision(
        city=city, token=leader.token, worker_id=worker_id,
        solver=solver, lease_id=f"{leader.lease:x}",
        unassigned=state.order_ids[left].tolist(),
        state_read_at=timestamp(state.taken_at), solve_seconds=result.seconds,
        decided_at=timestamp(time.time()), tick=tick,
        details=[pb.Assignment(order_id=o, courier_id=c, pickup_eta_seconds=e)
                 for o, c, e in zip(orders, couriers, etas, strict=True)],
        cost=float(solution_cost(state, solution)), state_ref=ref,
    )
