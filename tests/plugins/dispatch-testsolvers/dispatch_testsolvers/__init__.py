"""Solvers that break the contract on purpose, to prove the coordinator contains them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from solvers.contract import CityState, Solution, Solver


def _first_pairs(state: CityState, n: int) -> Solution:
    """Up to ``n`` valid pairs: each order to the next unused courier it fits."""
    orders: list[int] = []
    couriers: list[int] = []
    free = [j for j in range(state.n_couriers)]
    for i in range(state.n_orders):
        fit = next((j for j in free if state.capacity[j] >= state.size[i]), None)
        if fit is None or len(orders) == n:
            break
        free.remove(fit)
        orders.append(i)
        couriers.append(fit)
    return Solution(np.array(orders, dtype=np.int64), np.array(couriers, dtype=np.int64),
                    np.zeros(len(orders), dtype=np.float64))


class RaisingSolver(Solver):
    description = "Raises on every solve."

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        raise RuntimeError("boom: the model exploded")


class DoubleAssignSolver(Solver):
    description = "Assigns the first order to two couriers."

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        return Solution(np.array([0, 0], dtype=np.int64), np.array([0, 1], dtype=np.int64),
                        np.zeros(2, dtype=np.float64))


class UnknownCourierSolver(Solver):
    description = "Sends an order to a courier that does not exist."

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        return Solution(np.array([0], dtype=np.int64),
                        np.array([state.n_couriers + 5], dtype=np.int64),
                        np.zeros(1, dtype=np.float64))


class HangingSolver(Solver):
    description = "Never returns (sleeps for an hour)."

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        time.sleep(3600)
        return Solution.empty()


class SlowSolver(Solver):
    description = "Sleeps `sleep` seconds (param), then pairs orders and couriers in order."

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        time.sleep(float(params.get("sleep", 0.5)))
        return _first_pairs(state, 10)


class NoopSolver(Solver):
    description = ("Does next to nothing on the calling thread (the first 10 pairs): the "
                   "no-op solver of the coordination benchmark.")

    #: it cannot hang or take long, whatever the city's size
    inline_max_pairs: ClassVar[int] = 10**12

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        # order i to courier i for the first ten, where it fits: valid, and no Python loop
        first = np.arange(min(state.n_orders, state.n_couriers, 10), dtype=np.int64)
        pairs = first[state.capacity[first] >= state.size[first]]
        return Solution(pairs, pairs.copy(), np.zeros(pairs.shape[0], dtype=np.float64))


class NotASolver:
    description = "Does not subclass solvers.contract.Solver."


class StickySolver(Solver):
    """Keeps each order with the courier it had in this instance's previous solve, then
    pairs the rest in order: the same input twice in a row gives the same answer, but
    the answer depends on what the instance solved before, so a replay (a fresh
    instance) cannot reproduce it. The conformance kit's replay check catches it."""

    description = "Remembers its previous answer (history-dependent: replay differs)."

    def __init__(self) -> None:
        self._previous: dict[str, str] = {}

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        courier_at = {c: j for j, c in enumerate(state.courier_ids.tolist())}
        taken: set[int] = set()
        pairs: list[tuple[int, int]] = []
        orders = state.order_ids.tolist()
        for i, order in enumerate(orders):
            j = courier_at.get(self._previous.get(order, ""))
            if j is not None and j not in taken and state.capacity[j] >= state.size[i]:
                taken.add(j)
                pairs.append((i, j))
        kept = {i for i, _ in pairs}
        for i in range(len(orders)):
            if i in kept:
                continue
            j = next((j for j in range(state.n_couriers - 1, -1, -1) if j not in taken
                      and state.capacity[j] >= state.size[i]), None)
            if j is not None:
                taken.add(j)
                pairs.append((i, j))
        pairs.sort()
        self._previous = {orders[i]: str(state.courier_ids[j]) for i, j in pairs}
        return Solution(np.array([i for i, _ in pairs], dtype=np.int64),
                        np.array([j for _, j in pairs], dtype=np.int64),
                        np.zeros(len(pairs), dtype=np.float64))


class RandomSolver(Solver):
    """Pairs orders with couriers in an order drawn from the operating system's entropy:
    never the same answer twice."""

    description = "Random assignment, unseeded (nondeterministic)."

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        rng = np.random.default_rng()
        couriers = rng.permutation(state.n_couriers)
        fits = [(i, int(j)) for i, j in zip(range(state.n_orders), couriers, strict=False)
                if state.capacity[j] >= state.size[i]]
        return Solution(np.array([i for i, _ in fits], dtype=np.int64),
                        np.array([j for _, j in fits], dtype=np.int64),
                        np.zeros(len(fits), dtype=np.float64))
