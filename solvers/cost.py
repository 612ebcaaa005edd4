"""The shared cost model: how long a courier takes to collect an order.

Every built-in model, the benchmark and the coordinator price a decision with these
functions, so "better" means the same thing everywhere. The model is deliberately
simple and cheap, because it runs on every tick of every city:

* couriers travel in straight lines at their own constant ``speed`` (m/s);
* an order cannot be collected before it is ready, so a pickup happens at
  ``max(arrival, ready_in)``;
* a courier with several orders collects them one after the other, pickup to pickup,
  starting from where it is now at time 0 (``taken_at``);
* the objective is the sum of pickup times plus a fixed penalty for every order left
  unassigned. Without the penalty "assign nothing" would be the cheapest answer; with
  it, assigning an order is worth it exactly when its pickup time is below the penalty.

Everything is vectorised with numpy: an ETA matrix is a handful of in-place array
passes (figures in ``docs/solvers.md``). The per-leg arithmetic (``sqrt(dx² + dy²) / speed``,
then ``max(start + leg, ready)``) is written once, here, and reused by the solvers;
every step is a correctly rounded IEEE operation, so a solver that builds routes with
:func:`pickup_time_matrix` reports ETAs that are bit for bit those :func:`route_etas`
recomputes. (``np.hypot`` would guard against overflow that cannot happen at city
scale, and costs more: libm's ``hypot`` is not vectorised.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from solvers.contract import CityState, FloatArray, IntArray, Solution

__all__ = [
    "UNASSIGNED_PENALTY_SECONDS",
    "eta_matrix",
    "leg_seconds",
    "pickup_time_matrix",
    "route_etas",
    "solution_cost",
    "travel_seconds",
]

#: Cost of leaving one order unassigned for this tick, in seconds of pickup time. An
#: hour is far beyond any sensible pickup, so any feasible assignment beats it.
UNASSIGNED_PENALTY_SECONDS = 3600.0


def _points(a: npt.ArrayLike) -> FloatArray:
    """View ``a`` as a float64 (k×2) array, copying only when the dtype differs."""
    return np.asarray(a, dtype=np.float64).reshape(-1, 2)


def _vector(a: npt.ArrayLike) -> FloatArray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def _seconds_in_place(dx: FloatArray, dy: FloatArray, speed: FloatArray) -> FloatArray:
    """``sqrt(dx² + dy²) / speed``, computed in ``dx``'s buffer (which is returned).

    The one place the leg arithmetic lives. A zero speed gives ``inf``, not an error.
    """
    dx *= dx
    dy *= dy
    dx += dy
    np.sqrt(dx, out=dx)
    with np.errstate(divide="ignore", invalid="ignore"):
        dx /= speed
    return dx


def travel_seconds(origins: npt.ArrayLike, dests: npt.ArrayLike,
                   speed: npt.ArrayLike) -> FloatArray:
    """Straight-line travel time from each origin to each destination (k×l).

    ``origins`` is k×2 (metres), ``dests`` l×2, ``speed`` (k,) is the speed of whoever
    starts at each origin. A zero speed gives ``inf`` (never reachable), not an error.
    """
    o, d, s = _points(origins), _points(dests), _vector(speed)
    # o - d is the exact negation of d - o, and squares drop the sign: same bits as
    # leg_seconds and pickup_time_matrix.
    return _seconds_in_place(np.subtract.outer(o[:, 0], d[:, 0]),
                             np.subtract.outer(o[:, 1], d[:, 1]), s[:, None])


def leg_seconds(origins: npt.ArrayLike, dests: npt.ArrayLike,
                speed: npt.ArrayLike) -> FloatArray:
    """Element-wise travel time ``origins[i] -> dests[i]`` at ``speed[i]`` (k,).

    The same arithmetic as :func:`travel_seconds`, pairwise instead of all-to-all.
    """
    o, d, s = _points(origins), _points(dests), _vector(speed)
    return _seconds_in_place(d[:, 0] - o[:, 0], d[:, 1] - o[:, 1], s)


def pickup_time_matrix(pickup: npt.ArrayLike, ready_in: npt.ArrayLike,
                       origins: npt.ArrayLike, speed: npt.ArrayLike,
                       start: npt.ArrayLike | None = None) -> FloatArray:
    """Pickup time of every order by every courier (n_orders × k), C-contiguous.

    ``pickup_time[i, j] = max(start[j] + |origins[j] - pickup[i]| / speed[j],
    ready_in[i])``. With ``start`` omitted (all couriers free now, at ``origins``)
    this is the first-leg ETA; with the position and time of each courier's last
    pickup it prices "one more order on the end of its route".

    Built in place on one n×k buffer (plus one temporary): two n×k float64 arrays and
    a few passes over them.
    """
    p, o, s = _points(pickup), _points(origins), _vector(speed)
    ready = _vector(ready_in)
    out = _seconds_in_place(np.subtract.outer(p[:, 0], o[:, 0]),
                            np.subtract.outer(p[:, 1], o[:, 1]), s[None, :])
    if start is not None:
        out += _vector(start)[None, :]
    np.maximum(out, ready[:, None], out=out)
    return out


def eta_matrix(state: CityState) -> FloatArray:
    """Estimated pickup time (s) of order i by courier j if it went there first (n×m).

    ``max(distance(courier j, pickup i) / speed j, ready_in i)``. Capacity is not
    considered here: solvers mask infeasible pairs themselves.
    """
    return pickup_time_matrix(state.pickup, state.ready_in, state.position, state.speed)


def _visit_order(solution: Solution) -> IntArray:
    """Positions in ``solution`` sorted by courier, then ETA, then listing position."""
    listed = np.arange(solution.orders.shape[0])
    eta = np.asarray(solution.pickup_eta, dtype=np.float64)
    order: IntArray = np.lexsort((listed, eta, np.asarray(solution.couriers)))
    return order


def _distinct(values: IntArray) -> int:
    """How many distinct values (a Python set is several times quicker than
    ``np.unique`` for the few dozen pairs of a typical tick)."""
    if values.shape[0] <= 256:
        return len(set(values.tolist()))
    return int(np.unique(values).shape[0])


def route_etas(state: CityState, solution: Solution) -> FloatArray:
    """Recompute every pickup time of ``solution`` from the state alone.

    Each courier collects its orders in ascending order of the solution's own
    ``pickup_eta`` (ties: in the order listed), pickup to pickup, first leg from its
    position at time 0, each pickup at ``max(arrival, ready_in)``. Only the visiting
    order is taken from the solution; the times are recomputed, so a solver cannot make
    its answer look cheaper than it is.

    Returns the times aligned with ``solution.orders``. The loop runs over the stop
    rank (1st, 2nd, ... stop of every courier at once), i.e. as many iterations as the
    largest bundle, never over pairs. Assumes a solution that passed
    :func:`solvers.validate.check_solution`.
    """
    k = int(solution.orders.shape[0])
    times: FloatArray = np.zeros(k, dtype=np.float64)
    if k == 0:
        return times
    pickup = _points(state.pickup)
    ready = _vector(state.ready_in)
    speed = _vector(state.speed)
    all_couriers = np.asarray(solution.couriers, dtype=np.int64)
    if _distinct(all_couriers) == k:
        # One order per courier (greedy, hungarian): every stop is a first stop. The
        # same arithmetic as the loop below at rank 0, without sorting into routes.
        first_orders = np.asarray(solution.orders, dtype=np.int64)
        legs = leg_seconds(_points(state.position)[all_couriers], pickup[first_orders],
                           speed[all_couriers])
        result: FloatArray = np.maximum(legs, ready[first_orders])
        return result
    visit = _visit_order(solution)
    couriers = all_couriers[visit]
    orders = np.asarray(solution.orders, dtype=np.int64)[visit]
    # Rank of each stop within its courier's route: position minus the group's start.
    first = np.ones(k, dtype=bool)
    first[1:] = couriers[1:] != couriers[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(k), 0))
    rank = np.arange(k) - group_start

    here = _points(state.position)[couriers]  # where each stop's leg starts
    clock = np.zeros(k, dtype=np.float64)  # when each stop's leg starts
    sorted_times = np.zeros(k, dtype=np.float64)
    for r in range(int(rank.max()) + 1):
        at = np.flatnonzero(rank == r)
        if r > 0:
            prev = at - 1
            here[at] = pickup[orders[prev]]
            clock[at] = sorted_times[prev]
        legs = leg_seconds(here[at], pickup[orders[at]], speed[couriers[at]])
        sorted_times[at] = np.maximum(clock[at] + legs, ready[orders[at]])
    times[visit] = sorted_times
    return times


def solution_cost(state: CityState, solution: Solution,
                  unassigned_penalty: float = UNASSIGNED_PENALTY_SECONDS) -> float:
    """The objective: sum of recomputed pickup times + penalty × unassigned orders.

    Independent of the solver's own ``pickup_eta`` values except for the visiting order
    they imply (see :func:`route_etas`). Lower is better. Assumes a valid solution.
    """
    etas = route_etas(state, solution)
    unassigned = state.n_orders - int(solution.orders.shape[0])  # valid: each order once
    return float(etas.sum()) + float(unassigned_penalty) * unassigned
