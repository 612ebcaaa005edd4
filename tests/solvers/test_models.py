"""The built-in models: optimality, bundling, greedy semantics, parameters."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from solvers.assignment import lap_available
from solvers.bundle import BundleSolver
from solvers.contract import CityState, Solution, Solver
from solvers.cost import UNASSIGNED_PENALTY_SECONDS, eta_matrix, route_etas, solution_cost
from solvers.generate import random_city
from solvers.greedy import GreedySolver
from solvers.hungarian import HungarianSolver
from solvers.validate import check_solution

BACKENDS = ["scipy", "lap"] if lap_available() else ["scipy"]
SOLVERS: list[Solver] = [GreedySolver(), HungarianSolver(), BundleSolver()]


def brute_force_one_to_one(state: CityState, max_eta: float = math.inf,
                           penalty: float = UNASSIGNED_PENALTY_SECONDS) -> float:
    """The optimal one-to-one objective by enumerating every partial matching."""
    eta = eta_matrix(state)
    n, m = eta.shape
    best = math.inf
    for choice in itertools.product(range(-1, m), repeat=n):
        used = [j for j in choice if j >= 0]
        if len(used) != len(set(used)):
            continue
        total = 0.0
        for i, j in enumerate(choice):
            if j < 0:
                total += penalty
            elif state.size[i] > state.capacity[j] or eta[i, j] > max_eta:
                total = math.inf
                break
            else:
                total += eta[i, j]
        best = min(best, total)
    return best


SMALL = [(n, m, seed) for seed in range(6) for n, m in ((3, 3), (4, 2), (2, 5), (5, 4))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("n", "m", "seed"), SMALL)
def test_hungarian_is_optimal_on_small_cities(n: int, m: int, seed: int, backend: str) -> None:
    state = random_city("small", n, m, seed, max_size=2, busy_share=0.2).freeze()
    got = HungarianSolver().solve(state, {"backend": backend}, 1.0)
    check_solution(state, got)
    assert solution_cost(state, got) == pytest.approx(brute_force_one_to_one(state), rel=1e-9)
    assert got.stats["objective"] == pytest.approx(solution_cost(state, got))


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_optimal_with_max_eta(seed: int) -> None:
    state = random_city("small-eta", 4, 4, seed, busy_share=0.0).freeze()
    limit = float(np.median(eta_matrix(state)))
    got = HungarianSolver().solve(state, {"max_eta": limit}, 1.0)
    assert (got.pickup_eta <= limit).all()
    assert solution_cost(state, got) == pytest.approx(
        brute_force_one_to_one(state, max_eta=limit), rel=1e-9)


def test_penalty_decides_what_is_worth_assigning() -> None:
    state = random_city("penalty", 6, 6, 3, busy_share=0.0).freeze()
    cheap = float(np.sort(eta_matrix(state).min(axis=1))[2])  # 3 orders beat this
    for solver in SOLVERS:
        got = solver.solve(state, {"unassigned_penalty": cheap}, 1.0)
        assert (got.pickup_eta < cheap).all()
    got = HungarianSolver().solve(state, {"unassigned_penalty": cheap}, 1.0)
    assert solution_cost(state, got, cheap) == pytest.approx(
        brute_force_one_to_one(state, penalty=cheap))


def test_bundle_serves_more_orders_than_hungarian_when_couriers_have_room() -> None:
    state = random_city("bundle", 300, 80, 11, max_size=2, busy_share=0.0).freeze()
    hungarian = HungarianSolver().solve(state, {}, 1.0)
    bundle = BundleSolver().solve(state, {}, 1.0)
    check_solution(state, bundle)
    assert bundle.orders.size > hungarian.orders.size
    assert solution_cost(state, bundle) < solution_cost(state, hungarian)
    assert bundle.stats["rounds"] >= 2 and bundle.stats["bundled"] > 0
    loads = np.bincount(bundle.couriers, minlength=state.n_couriers)
    assert loads.max() > 1
    assert loads.max() <= 3  # max_rounds default


@pytest.mark.parametrize("seed", range(5))
def test_bundle_is_never_worse_than_hungarian(seed: int) -> None:
    state = random_city("never-worse", 120, 60, seed, max_size=3).freeze()
    h = solution_cost(state, HungarianSolver().solve(state, {}, 1.0))
    b = solution_cost(state, BundleSolver().solve(state, {}, 1.0))
    assert b <= h + 1e-6


def test_bundle_first_round_is_hungarian() -> None:
    state = random_city("first-round", 200, 150, 4, max_size=2).freeze()
    h = HungarianSolver().solve(state, {}, 1.0)
    b = BundleSolver().solve(state, {"max_rounds": 1}, 1.0)
    order = np.argsort(b.orders)
    assert np.array_equal(b.orders[order], h.orders)
    assert np.array_equal(b.couriers[order], h.couriers)


def test_bundle_rounds_respect_capacity_and_max_eta() -> None:
    state = random_city("cap", 200, 40, 8, max_size=3, busy_share=0.0).freeze()
    got = BundleSolver().solve(state, {"max_rounds": 10, "max_eta": 1500}, 1.0)
    check_solution(state, got)
    assert got.pickup_eta.max() <= 1500
    load = np.bincount(got.couriers, weights=state.size[got.orders], minlength=40)
    assert (load <= state.capacity).all()


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("seed", range(3))
def test_reported_etas_are_the_recomputed_ones(solver: Solver, seed: int) -> None:
    state = random_city("consistent", 150, 60, seed, max_size=3).freeze()
    got = solver.solve(state, {}, 1.0)
    check_solution(state, got)
    assert np.array_equal(route_etas(state, got), got.pickup_eta)
    for name in ("orders", "couriers"):
        assert getattr(got, name).dtype == np.int64
    assert got.pickup_eta.dtype == np.float64


def brute_force_greedy(state: CityState) -> set[tuple[int, int]]:
    eta = eta_matrix(state)
    pairs = sorted((eta[i, j], i, j) for i in range(state.n_orders)
                   for j in range(state.n_couriers) if state.size[i] <= state.capacity[j])
    taken_o: set[int] = set()
    taken_c: set[int] = set()
    out = set()
    for _, i, j in pairs:
        if i not in taken_o and j not in taken_c:
            out.add((i, j))
            taken_o.add(i)
            taken_c.add(j)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_greedy_takes_the_globally_fastest_pair_first(seed: int) -> None:
    state = random_city("greedy", 25, 15, seed, max_size=2).freeze()
    got = GreedySolver().solve(state, {}, 1.0)
    check_solution(state, got)
    assert set(zip(got.orders.tolist(), got.couriers.tolist(), strict=True)) == \
        brute_force_greedy(state)


def test_greedy_gap_to_optimum_is_sensible() -> None:
    state = random_city("gap", 400, 400, 2).freeze()
    optimum = solution_cost(state, HungarianSolver().solve(state, {}, 1.0))
    greedy = solution_cost(state, GreedySolver().solve(state, {}, 1.0))
    assert optimum <= greedy <= 1.25 * optimum


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_unit_capacities_give_one_order_per_courier(solver: Solver) -> None:
    state = random_city("units", 50, 20, 5, busy_share=0.0)
    state = CityState(**{**state.__dict__,
                         "capacity": np.ones(20, dtype=np.int64)}).freeze()
    got = solver.solve(state, {}, 1.0)
    assert np.bincount(got.couriers).max() == 1
    assert got.orders.size == 20


BAD_PARAMS: list[dict[str, Any]] = [
    {"max_eta": -1}, {"max_eta": "soon"}, {"max_eta": True}, {"max_eta": float("nan")},
    {"unassigned_penalty": 0}, {"backend": "gurobi"},
]


@pytest.mark.parametrize("params", BAD_PARAMS, ids=str)
@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_bad_parameters_raise_value_error(solver: Solver, params: dict[str, Any]) -> None:
    if "backend" in params and isinstance(solver, GreedySolver):
        pytest.skip("greedy has no backend")
    with pytest.raises(ValueError, match="parameter"):
        solver.solve(random_city("p", 3, 3, 1), params, 1.0)


@pytest.mark.parametrize("rounds", [0, 2.5, "3"])
def test_bad_max_rounds(rounds: Any) -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        BundleSolver().solve(random_city("p", 3, 3, 1), {"max_rounds": rounds}, 1.0)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_unknown_parameters_are_ignored(solver: Solver) -> None:
    state = random_city("shared", 10, 10, 1).freeze()
    params = {"orders": 10.0, "couriers": 10.0, "seed": 1.0, "max_rounds": 2.0}
    assert np.array_equal(solver.solve(state, params, 1.0).orders,
                          solver.solve(state, {"max_rounds": 2}, 1.0).orders)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize(("n", "m"), [(0, 0), (0, 3), (3, 0)])
def test_empty_cities(solver: Solver, n: int, m: int) -> None:
    got = solver.solve(random_city("empty", n, m, 1).freeze(), {}, 1.0)
    assert isinstance(got, Solution) and got.orders.size == 0
    assert got.orders.dtype == np.int64 and got.pickup_eta.dtype == np.float64


def test_lap_backend_finds_the_same_optimum() -> None:
    if not lap_available():
        pytest.skip("lap not installed")
    state = random_city("lap", 300, 250, 9, max_size=2).freeze()
    a = HungarianSolver().solve(state, {"backend": "scipy"}, 1.0)
    b = HungarianSolver().solve(state, {"backend": "lap"}, 1.0)
    assert solution_cost(state, a) == pytest.approx(solution_cost(state, b), rel=1e-12)
