"""check_solution: every violation is caught, with a precise one-line message."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from solvers.contract import CityState, Solution
from solvers.generate import random_city
from solvers.hungarian import HungarianSolver
from solvers.validate import InvalidSolution, check_solution


@pytest.fixture(scope="module")
def city() -> CityState:
    state = random_city("validate", 20, 10, 1, busy_share=0.0)
    # Make courier 3 a one-unit bike so "over capacity" is easy to provoke.
    capacity = state.capacity.copy()
    capacity[3] = 1
    state = CityState(**{**state.__dict__, "capacity": capacity})
    return state.freeze()


def sol(orders: Any, couriers: Any, etas: Any, **stats: Any) -> Solution:
    return Solution(orders=orders, couriers=couriers, pickup_eta=etas, stats=stats)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def floats(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_a_valid_solution_passes(city: CityState) -> None:
    check_solution(city, sol(ints(0, 5, 7), ints(1, 3, 2), floats(10.0, 0.0, 99.5), gap=0.5))
    check_solution(city, Solution.empty())
    check_solution(city, HungarianSolver().solve(city, {}, 1.0))
    # Other integer and real dtypes are fine.
    check_solution(city, sol(np.array([1], np.uint16), np.array([0], np.int32),
                             np.array([3], np.int64)))


BAD: list[tuple[str, Any, str]] = [
    ("not a solution", "nope", "expected a Solution, got str"),
    ("list", sol([0], ints(0), floats(1.0)), "orders must be a numpy array, got list"),
    ("2-D", sol(ints(0).reshape(1, 1), ints(0), floats(1.0)),
     r"orders must be a 1-D array, got shape \(1, 1\)"),
    ("float index", sol(ints(0), floats(0.0), floats(1.0)),
     "couriers must hold integers, got dtype float64"),
    ("bool index", sol(np.array([True]), ints(0), floats(1.0)),
     "orders must hold integers, got dtype bool"),
    ("string eta", sol(ints(0), ints(0), np.array(["1"])),
     "pickup_eta must hold numbers, got dtype <U1"),
    ("lengths", sol(ints(0, 1), ints(0), floats(1.0, 2.0)),
     "arrays of different lengths: orders 2, couriers 1, pickup_eta 2"),
    ("order too big", sol(ints(20), ints(0), floats(1.0)),
     r"unknown order index 20 \(city has 20 orders\)"),
    ("order negative", sol(ints(-1), ints(0), floats(1.0)),
     r"unknown order index -1 \(city has 20 orders\)"),
    ("courier too big", sol(ints(0), ints(10), floats(1.0)),
     r"unknown courier index 10 \(city has 10 couriers\)"),
    ("twice", sol(ints(4, 17, 17), ints(0, 1, 2), floats(1.0, 2.0, 3.0)),
     r"order index 17 \(o-000017\) assigned twice"),
    ("thrice", sol(ints(2, 2, 2), ints(0, 1, 2), floats(1.0, 2.0, 3.0)),
     r"order index 2 \(o-000002\) assigned 3 times"),
    ("nan", sol(ints(0, 9), ints(0, 1), floats(1.0, np.nan)),
     r"pickup_eta not finite for order o-000009 \(nan\)"),
    ("inf", sol(ints(9), ints(1), floats(np.inf)),
     r"pickup_eta not finite for order o-000009 \(inf\)"),
    ("negative eta", sol(ints(0, 6), ints(0, 1), floats(1.0, -1.5)),
     "pickup_eta negative for order o-000006: -1.5"),
    ("capacity", sol(ints(0, 1), ints(3, 3), floats(1.0, 2.0)),
     "courier c-0003 over capacity: 2 > 1"),
    ("stats nan", sol(ints(0), ints(0), floats(1.0), gap=float("nan")),
     r"stats\['gap'\] is not a finite number \(nan\)"),
    ("stats text", sol(ints(0), ints(0), floats(1.0), note="hi"),
     r"stats\['note'\] must be a number, got str"),
    ("stats bool", sol(ints(0), ints(0), floats(1.0), flag=True),
     r"stats\['flag'\] must be a number, got bool"),
]


@pytest.mark.parametrize(("case", "bad", "message"), BAD, ids=[b[0] for b in BAD])
def test_each_violation_is_named(city: CityState, case: str, bad: Any, message: str) -> None:
    with pytest.raises(InvalidSolution, match=f"^{message}$") as caught:
        check_solution(city, bad)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_capacity_counts_sizes_not_orders() -> None:
    state = random_city("sizes", 4, 1, 2, busy_share=0.0)
    state = CityState(**{**state.__dict__, "size": np.array([2, 2, 1, 1]),
                         "capacity": np.array([4])}).freeze()
    check_solution(state, sol(ints(0, 1), ints(0, 0), floats(1.0, 2.0)))
    with pytest.raises(InvalidSolution, match="courier c-0000 over capacity: 5 > 4"):
        check_solution(state, sol(ints(0, 1, 2), ints(0, 0, 0), floats(1.0, 2.0, 3.0)))


def test_zero_capacity_courier_takes_nothing(city: CityState) -> None:
    state = CityState(**{**city.__dict__, "capacity": np.zeros(10, dtype=np.int64)})
    with pytest.raises(InvalidSolution, match="courier c-0005 over capacity: 1 > 0"):
        check_solution(state, sol(ints(0), ints(5), floats(1.0)))


def test_fast_on_a_large_city() -> None:
    state = random_city("validate-big", 2_000, 2_000, 1, busy_share=0.0).freeze()
    k = 2_000
    good = sol(np.arange(k, dtype=np.int64), np.arange(k, dtype=np.int64), np.ones(k))
    started = time.process_time()  # CPU time: immune to other processes' load
    for _ in range(10):
        check_solution(state, good)
    assert (time.process_time() - started) / 10 < 0.01
