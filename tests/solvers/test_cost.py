"""The shared cost model: ETA matrix, sequential route times, objective."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solvers.contract import CityState, Solution
from solvers.cost import (
    UNASSIGNED_PENALTY_SECONDS,
    eta_matrix,
    leg_seconds,
    pickup_time_matrix,
    route_etas,
    solution_cost,
    travel_seconds,
)
from solvers.generate import random_city


def tiny_city(pickups: list[tuple[float, float]], ready: list[float],
              positions: list[tuple[float, float]], speeds: list[float],
              capacity: int = 5) -> CityState:
    n, m = len(pickups), len(positions)
    return CityState(
        city="tiny", taken_at=0.0,
        order_ids=np.array([f"o-{i}" for i in range(n)], dtype=np.str_),
        pickup=np.array(pickups, dtype=np.float64).reshape(-1, 2),
        dropoff=np.zeros((n, 2)),
        ready_in=np.array(ready, dtype=np.float64),
        size=np.ones(n, dtype=np.int64),
        courier_ids=np.array([f"c-{j}" for j in range(m)], dtype=np.str_),
        position=np.array(positions, dtype=np.float64).reshape(-1, 2),
        speed=np.array(speeds, dtype=np.float64),
        capacity=np.full(m, capacity, dtype=np.int64),
        vehicle=np.array(["car"] * m, dtype=np.str_),
    ).freeze()


def solution(orders: list[int], couriers: list[int], etas: list[float]) -> Solution:
    return Solution(np.array(orders, dtype=np.int64), np.array(couriers, dtype=np.int64),
                    np.array(etas, dtype=np.float64))


def test_travel_seconds_matches_pairwise_loop() -> None:
    origins = np.array([[0.0, 0.0], [10.0, 0.0]])
    dests = np.array([[3.0, 4.0], [10.0, 10.0], [0.0, 0.0]])
    speed = np.array([1.0, 2.0])
    got = travel_seconds(origins, dests, speed)
    assert got.shape == (2, 3)
    for k in range(2):
        for j in range(3):
            expected = math.dist(origins[k], dests[j]) / speed[k]
            assert got[k, j] == pytest.approx(expected, rel=1e-15)


def test_empty_shapes() -> None:
    assert travel_seconds(np.zeros((0, 2)), np.zeros((3, 2)), np.zeros(0)).shape == (0, 3)
    assert eta_matrix(random_city("e", 0, 4, 1)).shape == (0, 4)
    assert eta_matrix(random_city("e", 4, 0, 1)).shape == (4, 0)
    empty = random_city("e", 3, 0, 1)
    assert route_etas(empty, Solution.empty()).shape == (0,)
    assert solution_cost(empty, Solution.empty()) == 3 * UNASSIGNED_PENALTY_SECONDS


def test_eta_is_travel_time_or_readiness_whichever_is_later() -> None:
    state = tiny_city([(3.0, 4.0), (30.0, 40.0)], [0.0, 20.0], [(0.0, 0.0)], [1.0])
    eta = eta_matrix(state)
    assert eta.dtype == np.float64 and eta.shape == (2, 1)
    assert eta[0, 0] == 5.0  # travel dominates
    assert eta[1, 0] == 50.0  # travel 50 > ready 20
    later = dataclasses.replace(state, ready_in=np.array([7.0, 80.0])).freeze()
    assert eta_matrix(later)[:, 0].tolist() == [7.0, 80.0]  # readiness dominates


def test_eta_matrix_matches_brute_force_on_a_random_city() -> None:
    state = random_city("brute", 30, 20, 3).freeze()  # frozen: reads only
    eta = eta_matrix(state)
    for i in range(state.n_orders):
        for j in range(state.n_couriers):
            travel = math.dist(state.pickup[i], state.position[j]) / state.speed[j]
            assert eta[i, j] == pytest.approx(max(travel, state.ready_in[i]), rel=1e-12)


def test_pickup_time_matrix_with_start_times_and_legs_agree_bitwise() -> None:
    state = random_city("bits", 50, 40, 5)
    start = np.linspace(0.0, 900.0, state.n_couriers)
    grid = pickup_time_matrix(state.pickup, state.ready_in, state.position, state.speed, start)
    i = np.arange(state.n_orders) % state.n_couriers
    legs = leg_seconds(state.position[i], state.pickup, state.speed[i])
    assert np.array_equal(grid[np.arange(state.n_orders), i],
                          np.maximum(start[i] + legs, state.ready_in))


def test_eta_matrix_2000_squared_is_fast() -> None:
    state = random_city("big", 2_000, 2_000, 1).freeze()
    eta_matrix(state)  # warm the allocator
    started = time.process_time()  # CPU time: immune to other processes' load
    eta_matrix(state)
    assert time.process_time() - started < 0.5


def test_route_etas_are_sequential_from_the_courier() -> None:
    # Courier at the origin at 1 m/s; pickups 5 m away, then 4 m further but ready at 20.
    state = tiny_city([(3.0, 8.0), (3.0, 4.0)], [20.0, 0.0], [(0.0, 0.0)], [1.0])
    # Listed in reverse visiting order, with bogus ETAs that only imply the order.
    sol = solution([0, 1], [0, 0], [2.0, 1.0])
    assert route_etas(state, sol).tolist() == [20.0, 5.0]
    assert solution_cost(state, sol) == 25.0


def test_route_visiting_order_comes_from_the_eta_ranking() -> None:
    state = tiny_city([(3.0, 8.0), (3.0, 4.0)], [0.0, 0.0], [(0.0, 0.0)], [1.0])
    far_first = solution([0, 1], [0, 0], [1.0, 2.0])
    assert route_etas(state, far_first).tolist() == pytest.approx(
        [math.hypot(3, 8), math.hypot(3, 8) + 4.0])
    # Equal ETAs: visited in the order listed.
    tie = solution([1, 0], [0, 0], [9.0, 9.0])
    assert route_etas(state, tie).tolist() == [5.0, 9.0]


def test_route_etas_for_several_couriers_at_once() -> None:
    state = tiny_city([(0.0, 10.0), (0.0, 20.0), (100.0, 10.0)], [0.0, 0.0, 0.0],
                      [(0.0, 0.0), (100.0, 0.0)], [1.0, 2.0])
    sol = solution([2, 1, 0], [1, 0, 0], [0.0, 2.0, 1.0])
    assert route_etas(state, sol).tolist() == [5.0, 20.0, 10.0]


def test_solution_cost_penalises_unassigned_orders() -> None:
    state = tiny_city([(3.0, 4.0), (0.0, 1.0), (0.0, 2.0)], [0.0] * 3, [(0.0, 0.0)], [1.0])
    sol = solution([0], [0], [5.0])
    assert solution_cost(state, sol) == 5.0 + 2 * UNASSIGNED_PENALTY_SECONDS
    assert solution_cost(state, sol, unassigned_penalty=10.0) == 25.0
    assert solution_cost(state, Solution.empty()) == 3 * UNASSIGNED_PENALTY_SECONDS


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), m=st.integers(1, 12))
def test_single_stop_routes_equal_the_eta_matrix(seed: int, n: int, m: int) -> None:
    state = random_city("prop", n, m, seed)
    k = min(n, m)
    rng = np.random.default_rng(seed)
    orders = rng.permutation(n)[:k].astype(np.int64)
    couriers = rng.permutation(m)[:k].astype(np.int64)
    sol = Solution(orders, couriers, np.zeros(k))
    assert np.array_equal(route_etas(state, sol), eta_matrix(state)[orders, couriers])
