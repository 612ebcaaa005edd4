"""Synthetic cities: realistic ranges, determinism, smooth evolution, stable ids."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from solvers.contract import CityState
from solvers.generate import (
    NOMINAL_TICK_SECONDS,
    VEHICLES,
    random_city,
    simulated_state,
    stable_seed,
)


def same(a: CityState, b: CityState) -> bool:
    return a.city == b.city and a.taken_at == b.taken_at and all(
        np.array_equal(x, y) for x, y in zip(a.arrays().values(), b.arrays().values(),
                                             strict=True))


def sim(tick: int, **kw: int | str) -> CityState:
    args: dict[str, object] = {"n_orders": 200, "n_couriers": 100, "seed": 3,
                               "taken_at": 1000.0 + tick}
    args.update(kw)
    city = str(args.pop("city", "lisbon"))
    return simulated_state(city, tick, **args)  # type: ignore[arg-type]


def test_random_city_shapes_dtypes_and_ids() -> None:
    state = random_city("porto", 120, 45, 1, max_size=3, taken_at=12.5)
    assert state.city == "porto" and state.taken_at == 12.5
    assert state.n_orders == 120 and state.n_couriers == 45
    assert state.pickup.shape == state.dropoff.shape == (120, 2)
    assert state.position.shape == (45, 2)
    assert state.pickup.dtype == state.ready_in.dtype == state.speed.dtype == np.float64
    assert state.size.dtype == state.capacity.dtype == np.int64
    assert state.order_ids[123 % 120] == "o-000003" and state.courier_ids[42] == "c-0042"
    assert len(set(state.order_ids.tolist())) == 120
    assert len(set(state.courier_ids.tolist())) == 45


def test_random_city_is_realistic() -> None:
    state = random_city("porto", 3_000, 1_000, 2, max_size=3)
    for points in (state.pickup, state.dropoff, state.position):
        assert points.min() >= 0.0 and points.max() <= 10_000.0
    assert state.ready_in.min() >= 0.0 and state.ready_in.max() <= 600.0
    assert set(np.unique(state.size).tolist()) == {1, 2, 3}
    assert np.mean(state.size == 1) > 0.5  # mostly single-unit orders
    assert set(state.vehicle.tolist()) == set(VEHICLES)
    expected = {"bike": (4.5, 1, 2), "scooter": (7.0, 2, 3), "car": (9.0, 3, 5)}
    for vehicle, (speed, low, high) in expected.items():
        mine = state.vehicle == vehicle
        assert abs(state.speed[mine].mean() - speed) < 0.3
        cap = state.capacity[mine]
        assert set(cap[cap > 0].tolist()) <= set(range(low, high + 1))
    busy = np.mean(state.capacity == 0)
    assert 0.05 < busy < 0.15
    # Clustered demand: pickups are far more concentrated than uniform points would be.
    grid = np.histogram2d(state.pickup[:, 0], state.pickup[:, 1], bins=10,
                          range=[[0, 10_000], [0, 10_000]])[0]
    assert np.sort(grid.ravel())[-10:].sum() > 0.4 * state.n_orders


def test_random_city_is_deterministic() -> None:
    assert same(random_city("a", 50, 20, 7), random_city("a", 50, 20, 7))
    assert not same(random_city("a", 50, 20, 7), random_city("a", 50, 20, 8))
    assert not np.array_equal(random_city("a", 50, 20, 7).pickup,
                              random_city("b", 50, 20, 7).pickup)


def test_stable_seed_does_not_depend_on_python_hash_salt() -> None:
    code = "from solvers.generate import stable_seed; print(stable_seed('x', 1, 2))"
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PYTHONHASHSEED": salt, "PYTHONPATH": "."}, check=True).stdout
        for salt in ("1", "2")
    }
    assert outputs == {f"{stable_seed('x', 1, 2)}\n"}


def test_simulated_state_is_deterministic_and_exactly_sized() -> None:
    assert same(sim(41), sim(41))
    state = sim(41)
    assert state.n_orders == 200 and state.n_couriers == 100
    assert len(set(state.order_ids.tolist())) == 200
    assert not same(sim(41), sim(41, seed=4))
    assert not same(sim(41), sim(41, city="porto"))


def test_orders_churn_with_stable_ids_and_attributes() -> None:
    before, after = sim(100), sim(101)
    ids_before = {o: k for k, o in enumerate(before.order_ids.tolist())}
    kept = [(ids_before[o], k) for k, o in enumerate(after.order_ids.tolist())
            if o in ids_before]
    churned = before.n_orders - len(kept)
    assert 0 < churned < 0.15 * before.n_orders  # some appear and disappear, most stay
    i, k = (np.array(x) for x in zip(*kept, strict=True))
    assert np.array_equal(before.pickup[i], after.pickup[k])
    assert np.array_equal(before.dropoff[i], after.dropoff[k])
    assert np.array_equal(before.size[i], after.size[k])
    expected_ready = np.maximum(before.ready_in[i] - NOMINAL_TICK_SECONDS, 0.0)
    assert np.allclose(after.ready_in[k], expected_ready)


def test_orders_eventually_all_turn_over() -> None:
    first = set(sim(0).order_ids.tolist())
    assert not first & set(sim(40).order_ids.tolist())


def test_couriers_move_smoothly() -> None:
    before, after = sim(500), sim(501)
    assert np.array_equal(before.courier_ids, after.courier_ids)
    assert np.array_equal(before.vehicle, after.vehicle)
    step = np.hypot(*(after.position - before.position).T)
    assert step.max() < after.speed.max() * NOMINAL_TICK_SECONDS + 50.0  # + GPS noise
    assert np.median(step) > 1.0  # they do move
    far = sim(900)
    assert np.median(np.hypot(*(far.position - before.position).T)) > 200.0


def test_simulated_state_is_cheap() -> None:
    sim(0)
    started = time.process_time()  # CPU time: immune to other processes' load
    for tick in range(50):
        sim(tick)
    assert (time.process_time() - started) / 50 < 0.01


@pytest.mark.parametrize(("n", "m"), [(0, 0), (0, 5), (5, 0)])
def test_empty_simulations(n: int, m: int) -> None:
    state = simulated_state("x", 3, n_orders=n, n_couriers=m, seed=0, taken_at=0.0)
    assert state.n_orders == n and state.n_couriers == m
    assert state.pickup.shape == (n, 2) and state.position.shape == (m, 2)
