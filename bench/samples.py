"""A decision as the worker writes it, built outside a worker: the payload of the raw etcd
baselines (coordination, tickcost) and of a hand-made tick's steps."""

from __future__ import annotations

import time
from typing import Any


def decision_value(n_orders: int = 30, n_couriers: int = 20) -> bytes:
    """A decision as the worker writes it for a simulated city of this size (greedy)."""
    from coordinator.codec import encode
    from protos import dispatch_pb2 as pb
    from solvers.cost import solution_cost
    from solvers.generate import simulated_state
    from solvers.greedy import GreedySolver

    now = time.time()
    state = simulated_state("c00000", 1, n_orders=n_orders, n_couriers=n_couriers, seed=0,
                            taken_at=now).freeze()
    solution = GreedySolver().solve(state, {}, 1.0)
    return encode(decision_message(state, solution, token=123456, worker="bench",
                                   cost=float(solution_cost(state, solution)), pb=pb))


def decision_message(state: Any, solution: Any, *, token: int, worker: str, cost: float,
                     pb: Any) -> Any:
    """The same message ``TickPipeline.prepare`` builds (field for field)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    def stamp(seconds: float) -> Timestamp:
        t = Timestamp()
        t.FromNanoseconds(int(seconds * 1e9))
        return t

    orders = state.order_ids[solution.orders]
    couriers = state.courier_ids[solution.couriers]
    assigned = set(solution.orders.tolist())
    return pb.Decision(
        city=state.city, token=token, worker_id=worker, solver="greedy", lease_id="abc123",
        assignments={str(o): str(c) for o, c in zip(orders, couriers, strict=True)},
        unassigned=[str(state.order_ids[i]) for i in range(state.n_orders) if i not in assigned],
        state_read_at=stamp(state.taken_at), solve_seconds=0.001, decided_at=stamp(time.time()),
        tick=1,
        details=[pb.Assignment(order_id=str(o), courier_id=str(c), pickup_eta_seconds=e)
                 for o, c, e in zip(orders, couriers, solution.pickup_eta.tolist(), strict=True)],
        cost=cost,
    )
