"""Tests of the ``ortools-flow`` solver plugin.

Run after ``pip install -e plugins/dispatch-ortools`` (the entry-point test needs the
installed distribution's metadata): ``pytest plugins/dispatch-ortools``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from solvers.conformance import assert_conformant
from solvers.contract import NAMESPACE, CityState, Solution
from solvers.cost import route_etas, solution_cost
from solvers.generate import random_city
from solvers.greedy import GreedySolver
from solvers.validate import check_solution
from stevedore import driver

from dispatch_ortools.flow import MinCostFlowSolver, parse_params

ENTRY_POINT = "ortools-flow"


def solve(state: CityState, **params: object) -> Solution:
    state = state.freeze()
    solution = MinCostFlowSolver().solve(state, params, 1.0)
    check_solution(state, solution)
    return solution


def tiny_city(orders: list[tuple[float, float]], couriers: list[tuple[float, float]], *,
              capacity: list[int], speed: list[float], size: list[int] | None = None,
              ready_in: list[float] | None = None) -> CityState:
    n, m = len(orders), len(couriers)
    return CityState(
        city="tiny", taken_at=0.0,
        order_ids=np.array([f"o{i}" for i in range(n)], dtype=np.str_),
        pickup=np.array(orders, dtype=np.float64).reshape(-1, 2),
        dropoff=np.zeros((n, 2)),
        ready_in=np.array(ready_in or [0.0] * n, dtype=np.float64),
        size=np.array(size or [1] * n, dtype=np.int64),
        courier_ids=np.array([f"c{j}" for j in range(m)], dtype=np.str_),
        position=np.array(couriers, dtype=np.float64).reshape(-1, 2),
        speed=np.array(speed, dtype=np.float64),
        capacity=np.array(capacity, dtype=np.int64),
        vehicle=np.array(["car"] * m, dtype=np.str_),
    )


# ----------------------------------------------------------------- (1) entry point


def test_entry_point_is_discoverable_with_stevedore() -> None:
    manager: driver.DriverManager[MinCostFlowSolver] = driver.DriverManager(
        namespace=NAMESPACE, name=ENTRY_POINT, invoke_on_load=True)
    assert NAMESPACE == "dispatch.solvers"
    assert isinstance(manager.driver, MinCostFlowSolver)
    description = type(manager.driver).description
    assert description and "\n" not in description


# ----------------------------------------------------------------- (2) conformance


def test_passes_the_conformance_kit_including_the_large_city() -> None:
    # 1.6 s is the coordinator's default budget (2 s period x 0.8 budget fraction); the
    # kit fails a case only past 3x the budget, which leaves room for a busy CI host.
    report = assert_conformant(MinCostFlowSolver(), budget=1.6, large=True, repeats=2)
    print(report.format())  # shown with -s: per-case timings


# ------------------------------------------------------- (3) quality and bundling

SHAPES = [  # (orders, couriers, max order size)
    (30, 20, 1), (30, 120, 1), (100, 100, 1), (120, 30, 1), (150, 30, 3), (300, 100, 2),
]


@pytest.mark.parametrize(("n", "m", "max_size"), SHAPES, ids=lambda v: str(v))
def test_cost_is_never_above_the_greedy_baseline(n: int, m: int, max_size: int) -> None:
    for seed in range(4):
        state = random_city("quality", n, m, seed, max_size=max_size).freeze()
        ours = solution_cost(state, solve(state))
        greedy = solution_cost(state, GreedySolver().solve(state, {}, 1.0))
        assert ours <= greedy + 1e-6, (seed, ours, greedy)


def test_reported_etas_are_exactly_the_core_cost_model() -> None:
    for strategy in ("auto", "global", "rounds"):
        for seed in range(3):
            state = random_city("etas", 200, 60, seed, max_size=3).freeze()
            solution = solve(state, strategy=strategy)
            assert np.array_equal(route_etas(state, solution), solution.pickup_eta)
            assert solution.stats["objective"] == pytest.approx(
                solution_cost(state, solution), rel=1e-12)
            assert solution.orders.dtype == np.int64
            assert solution.couriers.dtype == np.int64
            assert solution.pickup_eta.dtype == np.float64


def test_bundles_orders_on_one_courier_when_capacity_allows() -> None:
    # A car with room for 3 next to three orders in a row; a slow bike far away.
    state = tiny_city([(1000.0, 0.0), (1010.0, 0.0), (1020.0, 0.0)],
                      [(0.0, 0.0), (9000.0, 9000.0)], capacity=[3, 1], speed=[10.0, 4.0])
    solution = solve(state)
    assert solution.orders.tolist() == [0, 1, 2]
    assert solution.couriers.tolist() == [0, 0, 0]
    # Collected one after the other, pickup to pickup: 100 s, then +1 s, then +1 s.
    assert solution.pickup_eta.tolist() == pytest.approx([100.0, 101.0, 102.0])
    greedy = GreedySolver().solve(state.freeze(), {}, 1.0)
    assert solution_cost(state, solution) < solution_cost(state, greedy)


def test_bundles_respect_order_sizes() -> None:
    # Capacity 3 and sizes 2, 2, 1 at one spot: at most 2 + 1 on the car.
    state = tiny_city([(500.0, 0.0)] * 3, [(0.0, 0.0)], capacity=[3], speed=[5.0],
                      size=[2, 2, 1])
    for strategy in ("auto", "global", "rounds"):
        solution = solve(state, strategy=strategy)
        assert int(state.size[solution.orders].sum()) <= 3
        assert sorted(state.size[solution.orders].tolist()) == [1, 2]


def test_capacity_holds_on_random_cities_with_large_orders() -> None:
    for seed in range(6):
        state = random_city("sizes", 250, 60, seed, max_size=4, busy_share=0.2)
        for strategy in ("global", "rounds"):
            solution = solve(state, strategy=strategy)  # check_solution checks capacity
            assert solution.stats["bundled_couriers"] > 0


# ------------------------------------------------------------------ (4) max_eta


def test_respects_max_eta() -> None:
    state = random_city("eta", 300, 100, 3, max_size=2)
    free = solve(state)
    assert free.pickup_eta.max() > 300.0  # the limit below actually bites
    capped = solve(state, max_eta=300.0)
    assert capped.orders.size > 0
    assert capped.pickup_eta.max() <= 300.0
    assert route_etas(state, capped).max() <= 300.0


def test_max_eta_leaves_unreachable_orders_unassigned() -> None:
    # 1,000 m at 5 m/s is 200 s; nothing can make that pickup within 150 s.
    state = tiny_city([(1000.0, 0.0), (100.0, 0.0)], [(0.0, 0.0)], capacity=[2],
                      speed=[5.0])
    assert solve(state, max_eta=150.0).orders.tolist() == [1]
    assert sorted(solve(state, max_eta=250.0).orders.tolist()) == [0, 1]


# ------------------------------------------------------------------ parameters


def test_parameters_are_checked_and_unknown_keys_ignored() -> None:
    # Struct numbers arrive as floats; other keys belong to the state source.
    p = parse_params({"k": 5.0, "max_eta": 600, "orders": 200, "seed": 3})
    assert (p.k, p.max_eta, p.strategy) == (5, 600.0, "auto")
    assert math.isinf(parse_params({}).max_eta)
    for bad in ({"k": 0}, {"k": 2.5}, {"k": True}, {"k": "20"}, {"max_eta": -1},
                {"unassigned_penalty": 0}, {"strategy": "best"}, {"max_rounds": 0}):
        with pytest.raises(ValueError):
            MinCostFlowSolver().solve(random_city("p", 5, 5, 0), bad, 1.0)


def test_k_limits_the_arcs() -> None:
    state = random_city("k", 1500, 1500, 1)
    sparse = solve(state, k=5, strategy="rounds")
    assert sparse.stats["assigned"] > 0.9 * state.n_orders
    # Per flow: k per order + k per courier, plus at most 4k per order and per courier
    # when the flow is widened for stranded orders; far below the 2.25 M pairs.
    n, m = state.n_orders, state.n_couriers
    per_flow = sparse.stats["arcs"] / sparse.stats["flows"]
    assert per_flow <= 5 * 5 * (n + m)
    assert per_flow < 0.02 * n * m
    wider = solve(state, k=20, strategy="rounds")
    assert wider.stats["arcs"] > sparse.stats["arcs"]


def test_small_cities_get_every_feasible_arc() -> None:
    state = random_city("dense", 40, 15, 2, busy_share=0.0)
    p = parse_params({})
    assert state.n_couriers <= p.k
    solution = solve(state, strategy="rounds", max_rounds=1)
    pairs = (state.size[:, None] <= state.capacity[None, :]).sum()
    assert solution.stats["arcs"] == pairs  # every (order, courier) pair that fits
