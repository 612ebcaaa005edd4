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
