"""``bundle``: capacity-aware dispatch that gives couriers several orders in sequence.

What it optimises
    The dispatch objective of :mod:`solvers.cost` (sum of sequential pickup times + a
    penalty per unassigned order) when a courier may collect several orders, one after
    the other, as long as their sizes fit its free capacity. It builds routes in
    rounds. Round 1 is exactly ``hungarian``: the optimal one-to-one assignment from
    where the couriers are now. Each later round solves another optimal one-to-one
    assignment between the orders still open and the couriers with capacity left, where
    a courier starts from its last pickup, at that pickup's time: appending order i to
    courier j's route costs exactly its pickup time
    ``max(t_j + |last_j − pickup_i| / speed_j, ready_i)`` and leaves earlier pickups
    unchanged, so each round is the optimal *extension* of the routes so far and every
    round can only lower the objective. Rounds stop when nothing more is worth assigning
    (fits, within ``max_eta``, cheaper than the penalty) or after ``max_rounds``.

    It is myopic across rounds (round 1 does not know a courier could take a second
    order later), so it is not the global optimum of the bundling problem, but it is
    never worse than ``hungarian`` and strictly better whenever orders are left over
    that a courier with spare capacity can still collect in time.

    The ETAs it reports are exactly the sequential times
    :func:`solvers.cost.route_etas` recomputes (same arithmetic), listed courier by
    courier in visiting order.

Complexity
    Per round: an O(n_left · m_left) vectorised pickup-time matrix plus one
    linear-sum-assignment (worst case cubic, see ``hungarian``). At most ``max_rounds``
    rounds; later rounds are much smaller than the first (measured against
    ``hungarian`` in ``docs/solvers.md``).

When to pick it
    Couriers with room for several orders (scooters, cars), and peaks where orders
    outnumber couriers: it serves orders ``hungarian`` must leave unassigned. With unit
    capacities everywhere it returns the same answer as ``hungarian``.

Parameters (all optional; unknown keys are ignored)
    ``max_rounds`` (int ≥ 1, default 3): bound on the rounds, i.e. on orders per courier.
    ``max_eta`` (seconds), ``unassigned_penalty`` (seconds, default 3600) and
    ``backend`` (``scipy`` | ``lap``), as for ``hungarian``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from solvers import params as p
from solvers.contract import CityState, FloatArray, IntArray, Solution, Solver
from solvers.hungarian import Routes, assign_round, backend_param

__all__ = ["BundleSolver"]


class BundleSolver(Solver):
    """Rounds of optimal one-to-one assignments that extend each courier's route."""

    description: ClassVar[str] = (
        "Capacity-aware bundling: rounds of optimal assignments, each adding one more "
        "pickup to couriers with room left"
    )

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        max_eta = p.max_eta(params)
        penalty = p.unassigned_penalty(params)
        backend = backend_param(params)
        max_rounds = p.positive_int(params, "max_rounds", 3)
        n = state.n_orders
        if n == 0 or state.n_couriers == 0:
            return Solution.empty()

        pickup = np.asarray(state.pickup, dtype=np.float64).reshape(-1, 2)
        size = np.asarray(state.size, dtype=np.int64)
        routes = Routes.start(state)  # our own copies, extended round by round
        still_open = np.ones(n, dtype=bool)
        got_orders: list[IntArray] = []
        got_couriers: list[IntArray] = []
        got_times: list[FloatArray] = []
        rounds = 0
        while rounds < max_rounds:
            orders, couriers, times = assign_round(
                state, np.flatnonzero(still_open), routes,
                max_eta=max_eta, penalty=penalty, backend=backend)
            if orders.size == 0:
                break
            rounds += 1
            got_orders.append(orders)
            got_couriers.append(couriers)
            got_times.append(times)
            routes.here[couriers] = pickup[orders]
            routes.clock[couriers] = times
            routes.free[couriers] -= size[orders]
            still_open[orders] = False

        if not got_orders:
            return Solution(orders=np.zeros(0, dtype=np.int64),
                            couriers=np.zeros(0, dtype=np.int64),
                            pickup_eta=np.zeros(0, dtype=np.float64),
                            stats={"assigned": 0.0, "unassigned": float(n),
                                   "rounds": 0.0, "bundled": 0.0,
                                   "objective": penalty * n})
        all_orders = np.concatenate(got_orders)
        all_couriers = np.concatenate(got_couriers)
        all_times = np.concatenate(got_times)
        # Courier by courier, in visiting (= round) order: a stable sort keeps rounds.
        visit = np.argsort(all_couriers, kind="stable")
        unassigned = n - all_orders.size
        return Solution(
            orders=all_orders[visit],
            couriers=all_couriers[visit],
            pickup_eta=all_times[visit],
            stats={
                "assigned": float(all_orders.size),
                "unassigned": float(unassigned),
                "rounds": float(rounds),
                "bundled": float(all_orders.size - np.unique(all_couriers).size),
                "objective": float(all_times.sum()) + penalty * unassigned,
            },
        )
