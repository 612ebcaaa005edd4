"""``hungarian``: the optimal one-to-one assignment of orders to couriers.

What it optimises
    Exactly the dispatch objective (:mod:`solvers.cost`: sum of pickup times + a
    penalty per unassigned order) over decisions in which every courier takes at most
    one order. Pairs where the order does not fit the courier's free capacity, or whose
    ETA exceeds ``max_eta``, are never used; an order is left unassigned when no courier
    can collect it for less than the penalty. With the penalty formulation of
    :mod:`solvers.assignment` the answer is the true optimum, not a heuristic. It is
    the reference the benchmark measures every other model against.

Complexity
    Building the ETA matrix is O(n·m) vectorised numpy; busy
    couriers and orders that fit nobody are left out of it. The assignment itself
    (shortest augmenting paths, ``scipy.optimize.linear_sum_assignment``) is O(n²·m) in
    the worst case and, on geometric data, very shape-dependent: tens of milliseconds
    when couriers outnumber orders, seconds when orders slightly outnumber couriers.
    :mod:`solvers.assignment` orders rows and pads such matrices, which helps most near
    balance (measured in ``docs/solvers.md``). Memory: a few n×m float64 matrices.

When to pick it
    Couriers who carry one order at a time (or when bundling is not wanted), cities up
    to about a thousand orders per tick (more when couriers outnumber orders), and
    whenever you want the provably best one-to-one answer. Prefer ``bundle`` when
    couriers have room for several orders and orders outnumber couriers; prefer
    ``greedy`` for very large cities on a tight budget.

Parameters (all optional; unknown keys are ignored because a city's params are shared
with its state source and shadow solvers)
    ``max_eta`` (seconds): never assign a pickup later than this.
    ``unassigned_penalty`` (seconds, default 3600): cost of an unassigned order.
    ``backend``: ``scipy`` (default) or ``lap`` (``lap.lapjv``, if installed). scipy is
    the default because it was faster on every measured city beyond 100 × 100
    (``docs/solvers.md``) and releases the GIL during the solve, so the worker's lease
    keep-alive thread keeps running; ``lap`` holds the GIL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from solvers import params as p
from solvers.assignment import BACKENDS, allowed_pairs, assign, lap_available
from solvers.contract import CityState, FloatArray, IntArray, Solution, Solver
from solvers.cost import pickup_time_matrix

__all__ = ["HungarianSolver", "Routes", "assign_round", "backend_param"]


def backend_param(params: Mapping[str, Any]) -> str:
    """The ``backend`` parameter, refusing ``lap`` when it is not installed."""
    backend = p.choice(params, "backend", "scipy", BACKENDS)
    if backend == "lap" and not lap_available():
        raise ValueError("parameter backend='lap' needs the 'lap' package, not installed")
    return backend


@dataclass
class Routes:
    """Where each courier's route ends so far: last stop, its time, capacity left.

    A fresh ``Routes`` (couriers where they are, at time 0, all free capacity) makes
    :func:`assign_round` the plain one-to-one assignment; ``bundle`` keeps extending it.
    """

    here: FloatArray  # m×2
    clock: FloatArray  # m
    free: IntArray  # m

    @staticmethod
    def start(state: CityState) -> Routes:
        return Routes(here=np.array(state.position, dtype=np.float64).reshape(-1, 2),
                      clock=np.zeros(state.n_couriers, dtype=np.float64),
                      free=np.array(state.capacity, dtype=np.int64))


def assign_round(state: CityState, open_orders: IntArray, routes: Routes, *,
                 max_eta: float, penalty: float, backend: str
                 ) -> tuple[IntArray, IntArray, FloatArray]:
    """Optimally give each courier at most one more order, appended to its route.

    Only orders that fit some courier and couriers with room for the smallest open
    order enter the matrix (busy couriers cost nothing). Returns (orders, couriers,
    pickup times) sorted by order; ``routes`` is not modified.
    """
    empty = np.zeros(0, dtype=np.int64)
    size = np.asarray(state.size, dtype=np.int64)
    if open_orders.size == 0:
        return empty, empty.copy(), np.zeros(0, dtype=np.float64)
    couriers = np.flatnonzero(routes.free >= size[open_orders].min())
    if couriers.size == 0:
        return empty, empty.copy(), np.zeros(0, dtype=np.float64)
    orders = open_orders[size[open_orders] <= routes.free[couriers].max()]
    pickup = np.asarray(state.pickup, dtype=np.float64).reshape(-1, 2)[orders]
    ready = np.asarray(state.ready_in, dtype=np.float64)[orders]
    speed = np.asarray(state.speed, dtype=np.float64)[couriers]
    times = pickup_time_matrix(pickup, ready, routes.here[couriers], speed,
                               routes.clock[couriers])
    allowed = allowed_pairs(times, size[orders], routes.free[couriers], max_eta, penalty)
    rows, cols = assign(times, allowed, penalty, backend)
    return orders[rows], couriers[cols], times[rows, cols]


class HungarianSolver(Solver):
    """Optimal one-to-one assignment (linear sum assignment on the ETA matrix)."""

    description: ClassVar[str] = (
        "Optimal one-to-one assignment of orders to couriers (linear sum assignment on "
        "pickup ETAs); one order per courier"
    )

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        max_eta = p.max_eta(params)
        penalty = p.unassigned_penalty(params)
        backend = backend_param(params)
        if state.n_orders == 0 or state.n_couriers == 0:
            return Solution.empty()
        orders, couriers, times = assign_round(
            state, np.arange(state.n_orders, dtype=np.int64), Routes.start(state),
            max_eta=max_eta, penalty=penalty, backend=backend)
        unassigned = state.n_orders - orders.size
        return Solution(
            orders=orders,
            couriers=couriers,
            pickup_eta=times,
            stats={
                "assigned": float(orders.size),
                "unassigned": float(unassigned),
                "objective": float(times.sum()) + penalty * unassigned,
            },
        )
