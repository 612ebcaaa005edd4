"""Solve runners: what runs in a solver process and what does not."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from coordinator.worker.runner import ProcessSolveRunner, ThreadSolveRunner
from solvers.contract import CityState, Solution, Solver
from solvers.generate import random_city
from solvers.greedy import GreedySolver
from tests.conftest import wait_until


class _WherePid(Solver):
    """Assigns nothing; reports the pid it ran in."""

    inline_max_pairs: ClassVar[int] = 100

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        return Solution(orders=np.zeros(0, np.int64), couriers=np.zeros(0, np.int64),
                        pickup_eta=np.zeros(0), stats={"pid": float(os.getpid())})


def test_small_cities_of_a_light_solver_skip_the_solver_process() -> None:
    """Sending a city to a solver process and back costs the worker more CPU than a
    small greedy solve: a solver's ``inline_max_pairs`` lets small cities run on a
    thread of the worker, and bigger ones still go to a process."""
    runner = ProcessSolveRunner(1)
    try:
        wait_until(runner.ready, timeout=120, message="a warm solver process")
        small = random_city("small", 10, 10, 1).freeze()  # 100 pairs
        result = runner.solve("where", _WherePid(), small, {}, budget=1.0, deadline=5.0)
        assert result.solution.stats["pid"] == os.getpid() and runner.inline == 1
        big = random_city("big", 200, 100, 1).freeze()  # 20,000 pairs: a process
        result = runner.solve("greedy", GreedySolver(), big, {}, budget=1.0, deadline=5.0)
        assert runner.inline == 1 and len(result.solution.orders) > 0
        assert GreedySolver.inline_max_pairs >= 30 * 20  # the scale benchmark's cities
    finally:
        runner.close()


def test_thread_isolation_solves_small_cities_on_the_calling_thread() -> None:
    """A hand-off to a solve thread costs more than a small greedy solve, too."""
    runner = ThreadSolveRunner()
    where: list[str] = []

    class _WhereThread(_WherePid):
        def solve(self, state: CityState, params: Mapping[str, Any],
                  budget: float) -> Solution:
            where.append(threading.current_thread().name)
            return super().solve(state, params, budget)

    small = random_city("small", 10, 10, 1).freeze()
    big = random_city("big", 20, 10, 1).freeze()  # 200 pairs: over the solver's 100
    runner.solve("where", _WhereThread(), small, {}, budget=1.0, deadline=5.0)
    runner.solve("where", _WhereThread(), big, {}, budget=1.0, deadline=5.0)
    assert where == [threading.current_thread().name, "solve"] and runner.inline == 1
