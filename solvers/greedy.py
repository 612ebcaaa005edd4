"""``greedy``: repeatedly give the globally fastest remaining pickup to its courier.

What it optimises
    Nothing globally: it is the classic "nearest available courier" dispatcher, made
    order-independent. Among all (order, courier) pairs still open it takes the one with
    the smallest pickup ETA (ties: lowest order index, then lowest courier index),
    assigns it, removes that order and that courier, and repeats. Each courier takes at
    most one order, which must fit its free capacity; pairs slower than ``max_eta`` or
    than the unassigned penalty are never taken. The result is valid and usually close
    to the optimal one-to-one assignment (``hungarian``), but it is myopic: taking the
    best pair now may force a much worse pair later.

Complexity
    O(n·m) to build the ETA matrix (vectorised) plus a lazy priority queue: each order
    keeps its best open courier; when that courier is taken the order recomputes its
    best over one matrix row (O(m) numpy). Typically O(n·m + n·log n) overall, a steady
    fraction of ``hungarian``'s time with no shape where it degrades badly; how much
    later its pickups are than optimal is measured in ``docs/solvers.md``.

When to pick it
    Very large cities or tight tick budgets, as a fallback or shadow solver, or when a
    decision must be explainable in one sentence ("the nearest free courier"). Prefer
    ``hungarian`` (optimal) when it fits the budget, ``bundle`` when couriers carry
    several orders.

Parameters (all optional; unknown keys are ignored)
    ``max_eta`` (seconds) and ``unassigned_penalty`` (seconds, default 3600), with the
    same meaning as for ``hungarian``.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from solvers import params as p
from solvers.assignment import allowed_pairs
from solvers.contract import CityState, Solution, Solver
from solvers.cost import eta_matrix

__all__ = ["GreedySolver"]


class GreedySolver(Solver):
    """Globally-smallest-ETA-first greedy matching, one order per courier."""

    description: ClassVar[str] = (
        "Greedy nearest available courier: repeatedly assigns the fastest remaining "
        "pickup; one order per courier"
    )
    #: up to 50 × 50 a solve is well under a millisecond (``docs/solvers.md``)
    inline_max_pairs: ClassVar[int] = 2_500

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        max_eta = p.max_eta(params)
        penalty = p.unassigned_penalty(params)
        if state.n_orders == 0 or state.n_couriers == 0:
            return Solution.empty()
        eta = eta_matrix(state)
        # `cost` is our own matrix: forbidden pairs and taken couriers become +inf.
        cost = eta.copy()
        cost[~allowed_pairs(eta, state.size, state.capacity, max_eta, penalty)] = np.inf
        if cost.size <= _SMALL:
            orders, couriers = _take_sorted(cost)
        else:
            orders, couriers = _take_lazily(cost)
        rows = np.asarray(orders, dtype=np.int64)
        cols = np.asarray(couriers, dtype=np.int64)
        sort = np.argsort(rows, kind="stable")
        rows, cols = rows[sort], cols[sort]
        times = eta[rows, cols]
        unassigned = state.n_orders - rows.size
        return Solution(
            orders=rows,
            couriers=cols,
            pickup_eta=times,
            stats={
                "assigned": float(rows.size),
                "unassigned": float(unassigned),
                "objective": float(times.sum()) + penalty * unassigned,
            },
        )


#: Up to this many (order, courier) pairs, sort them all at once: a 30 × 20 city is
#: decided by one ``argsort`` and a short Python loop instead of one small numpy call per
#: assignment, whose fixed cost dominates at that size. Both take pairs in the same
#: (ETA, order, courier) order, so they give the same answer.
_SMALL = 10_000


def _take_sorted(cost: np.ndarray) -> tuple[list[int], list[int]]:
    n, m = cost.shape
    flat = cost.ravel()
    finite = int(np.count_nonzero(np.isfinite(flat)))
    order_taken = bytearray(n)
    courier_taken = bytearray(m)
    orders: list[int] = []
    couriers: list[int] = []
    most = min(n, m)
    ranked = np.argsort(flat, kind="stable")[:finite]
    rows, cols = np.divmod(ranked, m)
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if order_taken[i] or courier_taken[j]:
            continue
        order_taken[i] = courier_taken[j] = 1
        orders.append(i)
        couriers.append(j)
        if len(orders) == most:
            break
    return orders, couriers


def _take_lazily(cost: np.ndarray) -> tuple[list[int], list[int]]:
    """Each order keeps its best open courier in a heap; taken couriers' columns of
    ``cost`` become +inf."""
    n_orders, n_couriers = cost.shape
    best = np.argmin(cost, axis=1)
    best_time = cost[np.arange(n_orders), best]
    heap = [(t, i) for i, t in enumerate(best_time.tolist()) if t != np.inf]
    heapq.heapify(heap)
    taken = np.zeros(n_couriers, dtype=bool)
    orders: list[int] = []
    couriers: list[int] = []
    left = int(np.count_nonzero(np.isfinite(cost).any(axis=0)))  # couriers usable
    while heap and left:
        _, i = heapq.heappop(heap)
        j = int(best[i])
        if taken[j]:
            # Stale entry: this order's best courier went to a faster pair. Its new
            # best is no faster, so pushing it back keeps the heap order exact.
            j = int(np.argmin(cost[i]))
            if cost[i, j] != np.inf:
                best[i] = j
                heapq.heappush(heap, (float(cost[i, j]), i))
            continue
        orders.append(i)
        couriers.append(j)
        taken[j] = True
        cost[:, j] = np.inf
        left -= 1
    return orders, couriers
