"""Fuzzing what a worker reads: city settings, state snapshots, solver outputs.

One in-process worker (``tests.helpers.running_worker``) runs for the whole module
against the real etcd, with a healthy control city beside whatever hypothesis feeds it.
For every example, whatever the input:

- the worker does not crash: its control loop and its four watch threads stay alive,
  and it keeps deciding the control city;
- a broken city never gets a decision, and its problem is named on its status
  (``<ns>/status/<city>``: state ``failing``, a one-line ``lastError``);
- a valid city gets a decision, and the decision only names orders and couriers of its
  state, no order twice, no courier beyond its capacity.

Solver outputs are fuzzed twice: straight through ``solvers.validate.check_solution``
against a plain-Python reference, and through the worker by a solver double that answers
whatever hypothesis drew.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from coordinator.codec import assigned, decode
from coordinator.errors import CitySettingsError
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.settings import parse_settings
from coordinator.worker import Worker
from protos import dispatch_pb2 as pb
from solvers.contract import CityState, Solution, Solver
from solvers.generate import random_city
from solvers.validate import InvalidSolution, check_solution
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import running_worker

FUZZ = settings(max_examples=30, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
CONTROL = "control"
CONTROL_PERIOD = 0.2
WATCHES = ("watch cities", "watch elections", "watch workers", "watch drains")
FUZZ_SOLVER = "fuzz-solver"


# -- the worker under test ------------------------------------------------------------


@dataclass
class Fleet:
    """The module's one worker, its etcd client and keys, and the cities fed to it."""

    worker: Worker
    client: EtcdClient
    keys: Keys
    counter: Iterator[int] = field(default_factory=itertools.count)
    broken: list[str] = field(default_factory=list)
    answers: dict[str, Callable[[CityState], Solution]] = field(default_factory=dict)
    verdicts: dict[str, list[bool]] = field(default_factory=dict)

    def new_city(self, kind: str) -> str:
        return f"{kind}-{next(self.counter)}"

    def decision(self, city: str) -> pb.Decision | None:
        kv = self.client.get(self.keys.decision(city))
        return None if kv is None else decode(pb.Decision, kv.value)

    def status(self, city: str) -> pb.CityStatus | None:
        kv = self.client.get(self.keys.status(city))
        return None if kv is None else decode(pb.CityStatus, kv.value)

    def assert_healthy(self) -> None:
        """The worker is running, watching, and deciding the control city."""
        def fresh() -> bool:
            d = self.decision(CONTROL)
            return d is not None and \
                time.time() - d.decided_at.ToNanoseconds() / 1e9 < 10 * CONTROL_PERIOD + 1
        wait_until(fresh, timeout=5, message="a fresh decision for the control city")
        assert not self.worker.wait_stopped(0), "the worker's control loop ended"
        names = [t.name for t in threading.enumerate()]
        for watch in WATCHES:
            assert watch in names, f"the worker's {watch!r} thread died"

    def expect_failing(self, city: str, timeout: float = 10.0) -> pb.CityStatus:
        status = wait_until(
            lambda: (s := self.status(city)) is not None and s.state == "failing" and s,
            timeout=timeout, message=f"{city} to be reported failing")
        assert isinstance(status, pb.CityStatus)
        assert status.last_error, "no error named"
        assert "\n" not in status.last_error, f"lastError is not one line: {status.last_error!r}"
        assert self.decision(city) is None, f"a broken city ({city}) got a decision"
        self.broken.append(city)
        return status

    def expect_decision(self, city: str, timeout: float = 10.0) -> pb.Decision:
        def decided() -> pb.Decision | None:
            d = self.decision(city)
            if d is None:
                s = self.status(city)
                assert s is None or s.state != "failing", \
                    f"a valid city ({city}) failed: {s.last_error}"
            return d
        d = wait_until(decided, timeout=timeout, message=f"a decision for {city}")
        assert isinstance(d, pb.Decision)
        return d

    def remove(self, city: str) -> None:
        self.client.delete(self.keys.city(city))
        self.client.delete(self.keys.state(city))


@pytest.fixture(scope="module")
def fleet(etcd: EtcdCluster) -> Iterator[Fleet]:
    namespace = f"/fuzz-{uuid.uuid4().hex[:8]}"
    keys = Keys(namespace)
    client = EtcdClient(EtcdConfig(endpoints=tuple(etcd.endpoints.split(","))))
    client.put(keys.city(CONTROL), json.dumps(
        {"solver": "greedy", "periodSeconds": CONTROL_PERIOD,
         "params": {"orders": 20, "couriers": 10}}))
    with running_worker(etcd.endpoints, namespace, "fuzz-w", solve_isolation="thread",
                        max_backoff=2.0) as worker:
        f = Fleet(worker, client, keys)
        original = worker.plugins.solver

        def solver(name: str) -> Solver:
            return AnswerSolver(f) if name == FUZZ_SOLVER else original(name)

        worker.plugins.solver = solver  # type: ignore[method-assign]
        f.assert_healthy()
        yield f
        # Whatever happened, no broken city ever had a decision in etcd's history.
        from coordinator.ops.verify import verify

        report = verify(client, keys)
        assert report.ok, report.violations
        decided = set(report.decisions_by_city)
        assert not decided & set(f.broken), sorted(decided & set(f.broken))
    client.close()


# -- JSON strategies ------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) |
    st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)

SOLVERS = ("greedy", "hungarian", "bundle")


@st.composite
def valid_settings(draw: st.DrawFn) -> dict[str, Any]:
    settings_: dict[str, Any] = {"solver": draw(st.sampled_from(SOLVERS))}
    if draw(st.booleans()):
        settings_["periodSeconds"] = draw(st.sampled_from([0, 0.05, 0.1, 0.5, 1, 3600]))
    if draw(st.booleans()):
        settings_["stateSource"] = "simulated"
    if draw(st.booleans()):
        settings_["enabled"] = True
    params: dict[str, Any] = {}
    for name in ("orders", "couriers"):
        if draw(st.booleans()):
            params[name] = draw(st.integers(0, 40))
    if draw(st.booleans()):
        params["seed"] = draw(st.integers(0, 2**31 - 1))
    if draw(st.booleans()):
        params["max_eta"] = draw(st.floats(1, 1e6))
    if params:
        settings_["params"] = params
    if draw(st.booleans()):
        settings_["labels"] = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8),
                                                   max_size=3))
    return settings_


# Each turns a valid settings object into a broken one (as bytes).
def _with(**fields: Any) -> Callable[[dict[str, Any]], bytes]:
    return lambda s: json.dumps({**s, **fields}).encode()


def _params(**fields: Any) -> Callable[[dict[str, Any]], bytes]:
    return lambda s: json.dumps({**s, "params": {**s.get("params", {}), **fields}}).encode()


BREAKAGES: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "no solver": lambda s: json.dumps({k: v for k, v in s.items() if k != "solver"}).encode(),
    "solver is a number": _with(solver=3),
    "solver is a list": _with(solver=["greedy"]),
    "unknown solver": _with(solver="no-such-solver"),
    "unknown state source": _with(stateSource="carrier-pigeon"),
    "period is text": _with(periodSeconds="fast"),
    "period is negative": _with(periodSeconds=-1),
    "period is tiny": _with(periodSeconds=0.001),
    "period is huge": _with(periodSeconds=1e300),
    "period is NaN": _with(periodSeconds="NaN"),
    "period is Infinity": _with(periodSeconds="Infinity"),
    "period is -Infinity": _with(periodSeconds="-Infinity"),
    "period is bare NaN": lambda s: json.dumps({**s, "periodSeconds": math.nan}).encode(),
    "enabled is text": _with(enabled="yes"),
    "params is a list": _with(params=[1, 2]),
    "labels hold numbers": _with(labels={"zone": 1}),
    "shadow solvers is text": _with(shadowSolvers="greedy"),
    "empty shadow solver": _with(shadowSolvers=[""]),
    "unknown field": _with(colour="red"),
    "orders negative": _params(orders=-1),
    "orders huge": _params(orders=10**9),
    "orders fractional": _params(orders=2.5),
    "orders text": _params(orders="many"),
    "seed negative": _params(seed=-5),
    "max_eta negative": _params(max_eta=-1),
    "max_eta text": _params(max_eta="soon"),
    "hungarian backend unknown": lambda s: json.dumps(
        {**s, "solver": "hungarian", "params": {**s.get("params", {}), "backend": "abacus"}}
    ).encode(),
    "truncated JSON": lambda s: json.dumps(s).encode()[:-1],
    "empty value": lambda s: b"",
    "whitespace": lambda s: b"  \n ",
    "not UTF-8": lambda s: b"\xff\xfe" + json.dumps(s).encode(),
    "a JSON list": lambda s: json.dumps([s]).encode(),
    "a JSON string": lambda s: json.dumps(json.dumps(s)).encode(),
    "null": lambda s: b"null",
    "deeply nested": lambda s: (b"[" * 5000) + (b"]" * 5000),
    "deeply nested params": lambda s: json.dumps(
        {**s, "params": {"x": json.loads("[" * 300 + "]" * 300)}}).encode(),
}

#: what the status must mention for each breakage
NAMES: dict[str, str] = {
    "no solver": "no solver", "solver is a number": "solver", "solver is a list": "solver",
    "unknown solver": "no-such-solver", "unknown state source": "carrier-pigeon",
    "period is text": "periodSeconds", "period is negative": "periodSeconds",
    "period is tiny": "periodSeconds", "period is huge": "periodSeconds",
    "period is NaN": "periodSeconds", "period is Infinity": "periodSeconds",
    "period is -Infinity": "periodSeconds", "period is bare NaN": "periodSeconds",
    "enabled is text": "enabled", "params is a list": "params", "labels hold numbers": "labels",
    "shadow solvers is text": "shadowSolvers", "empty shadow solver": "shadow solver",
    "unknown field": "colour", "orders negative": "orders", "orders huge": "orders",
    "orders fractional": "orders", "orders text": "orders", "seed negative": "seed",
    "max_eta negative": "max_eta", "max_eta text": "max_eta",
    "hungarian backend unknown": "backend", "truncated JSON": "malformed",
    "empty value": "empty", "whitespace": "empty", "not UTF-8": "UTF-8",
    "a JSON list": "malformed", "a JSON string": "malformed", "null": "malformed",
    "deeply nested": "malformed", "deeply nested params": "params",
}


def _usable(city: str, raw: bytes) -> bool:
    """Whether a worker could tick these settings at all (settings-level check only)."""
    try:
        parse_settings(city, raw)
    except CitySettingsError:
        return False
    except RecursionError:
        return False
    return True


# -- settings -------------------------------------------------------------------------


@FUZZ
@given(valid=valid_settings(), breakage=st.sampled_from(sorted(BREAKAGES)))
def test_broken_city_settings_are_reported_and_never_decided(fleet: Fleet,
                                                            valid: dict[str, Any],
                                                            breakage: str) -> None:
    city = fleet.new_city("broken")
    raw = BREAKAGES[breakage](valid)
    fleet.client.put(fleet.keys.city(city), raw)
    status = fleet.expect_failing(city)
    assert status.city == city and status.worker_id == "fuzz-w"
    assert NAMES[breakage] in status.last_error, (breakage, status.last_error)
    fleet.assert_healthy()
    fleet.remove(city)


def test_every_settings_breakage_at_once(fleet: Fleet) -> None:
    """Each breakage once, all cities at the same time, beside a valid one."""
    base = {"solver": "greedy", "periodSeconds": 0.3, "params": {"orders": 5, "couriers": 3}}
    cities = {}
    for breakage, breaks in BREAKAGES.items():
        cities[breakage] = city = fleet.new_city("sweep")
        fleet.client.put(fleet.keys.city(city), breaks(base))
    fine = fleet.new_city("sweep-ok")
    fleet.client.put(fleet.keys.city(fine), json.dumps(base))
    for breakage, city in cities.items():
        status = fleet.expect_failing(city)
        assert NAMES[breakage] in status.last_error, (breakage, status.last_error)
    fleet.expect_decision(fine)
    fleet.assert_healthy()
    for city in [*cities.values(), fine]:
        fleet.remove(city)


@FUZZ
@given(value=json_values)
def test_random_json_as_city_settings_is_reported(fleet: Fleet, value: object) -> None:
    raw = json.dumps(value).encode()
    city = fleet.new_city("random")
    assume(not _usable(city, raw))  # nothing random names a real solver, but be sure
    fleet.client.put(fleet.keys.city(city), raw)
    fleet.expect_failing(city)
    fleet.assert_healthy()
    fleet.remove(city)


@FUZZ
@given(valid=valid_settings())
def test_valid_city_settings_are_decided(fleet: Fleet, valid: dict[str, Any]) -> None:
    city = fleet.new_city("valid")
    fleet.client.put(fleet.keys.city(city), json.dumps(valid))
    d = fleet.expect_decision(city)
    assert d.city == city and d.worker_id == "fuzz-w" and d.solver == valid["solver"]
    fleet.assert_healthy()
    fleet.remove(city)


# -- state snapshots for the `etcd` state source ----------------------------------------

finite = st.floats(-1e5, 1e5, allow_nan=False)


@st.composite
def valid_snapshot(draw: st.DrawFn) -> dict[str, Any]:
    n_orders = draw(st.integers(0, 25))
    n_couriers = draw(st.integers(0, 15))
    orders = [{"id": f"o{i}", "pickup": {"x": draw(finite), "y": draw(finite)},
               "dropoff": {"x": draw(finite), "y": draw(finite)},
               "readyInSeconds": draw(st.floats(0, 3600)),
               "size": draw(st.sampled_from([0, 1, 2, 3, 2**31 - 1]))}
              for i in range(n_orders)]
    couriers = [{"id": f"c{i}", "position": {"x": draw(finite), "y": draw(finite)},
                 "speed": draw(st.floats(0.1, 40)), "capacity": draw(st.integers(0, 5)),
                 "vehicle": draw(st.sampled_from(["bike", "car", ""]))}
                for i in range(n_couriers)]
    snapshot: dict[str, Any] = {"orders": orders, "couriers": couriers}
    if draw(st.booleans()):
        snapshot["takenAt"] = "2030-01-01T00:00:00Z"
    # protobuf's JSON omits defaults; so may a producer
    for item in orders + couriers:
        for key in [k for k, v in item.items() if v in (0, "") and k != "id"]:
            if draw(st.booleans()):
                del item[key]
    return snapshot


def _order(snapshot: dict[str, Any], **fields: Any) -> dict[str, Any]:
    orders = [dict(o) for o in snapshot["orders"]] or \
        [{"id": "o0", "pickup": {"x": 0, "y": 0}, "dropoff": {"x": 1, "y": 1}}]
    orders[0].update(fields)
    return {**snapshot, "orders": orders}


def _courier(snapshot: dict[str, Any], **fields: Any) -> dict[str, Any]:
    couriers = [dict(c) for c in snapshot["couriers"]] or \
        [{"id": "c0", "position": {"x": 0, "y": 0}, "speed": 5, "capacity": 1}]
    couriers[0].update(fields)
    return {**snapshot, "couriers": couriers}


def _dup(snapshot: dict[str, Any], kind: str) -> dict[str, Any]:
    items = [dict(x) for x in snapshot[kind]] or \
        ([{"id": "o0"}] if kind == "orders" else [{"id": "c0", "speed": 5}])
    return {**snapshot, kind: [*items, dict(items[0])]}


SNAPSHOT_BREAKAGES: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "NaN pickup": lambda s: json.dumps(_order(s, pickup={"x": "NaN", "y": 0})).encode(),
    "inf dropoff": lambda s: json.dumps(_order(s, dropoff={"x": 0, "y": "Infinity"})).encode(),
    "bare NaN position": lambda s: json.dumps(
        _courier(s, position={"x": math.nan, "y": 0})).encode(),
    "-inf position": lambda s: json.dumps(
        _courier(s, position={"x": "-Infinity", "y": 0})).encode(),
    "NaN readyIn": lambda s: json.dumps(_order(s, readyInSeconds="NaN")).encode(),
    "negative readyIn": lambda s: json.dumps(_order(s, readyInSeconds=-3)).encode(),
    "negative size": lambda s: json.dumps(_order(s, size=-1)).encode(),
    "size beyond int32": lambda s: json.dumps(_order(s, size=2**31)).encode(),
    "fractional size": lambda s: json.dumps(_order(s, size=1.5)).encode(),
    "negative capacity": lambda s: json.dumps(_courier(s, capacity=-2)).encode(),
    "zero speed": lambda s: json.dumps(_courier(s, speed=0)).encode(),
    "negative speed": lambda s: json.dumps(_courier(s, speed=-4)).encode(),
    "NaN speed": lambda s: json.dumps(_courier(s, speed="NaN")).encode(),
    "duplicate order ids": lambda s: json.dumps(_dup(s, "orders")).encode(),
    "duplicate courier ids": lambda s: json.dumps(_dup(s, "couriers")).encode(),
    "empty order id": lambda s: json.dumps(_order(s, id="")).encode(),
    "empty courier id": lambda s: json.dumps(_courier(s, id="")).encode(),
    "NUL in an order id": lambda s: json.dumps(_order(s, id="o\x00-1")).encode(),
    "unknown field": lambda s: json.dumps({**s, "weather": "rain"}).encode(),
    "orders is an object": lambda s: json.dumps({**s, "orders": {"id": "o1"}}).encode(),
    "speed is text": lambda s: json.dumps(_courier(s, speed="fast")).encode(),
    "bad timestamp": lambda s: json.dumps({**s, "takenAt": "yesterday"}).encode(),
    "truncated": lambda s: json.dumps(s).encode()[:-1],
    "not UTF-8": lambda s: b"\xc3\x28" + json.dumps(s).encode(),
    "empty value": lambda s: b"",
    "a JSON number": lambda s: b"42",
}

#: what the status must mention for each breakage
SNAPSHOT_NAMES: dict[str, str] = {
    "NaN pickup": "pickup", "inf dropoff": "dropoff", "bare NaN position": "position",
    "-inf position": "position", "NaN readyIn": "readyInSeconds",
    "negative readyIn": "readyInSeconds", "negative size": "size", "size beyond int32": "size",
    "fractional size": "size", "negative capacity": "capacity", "zero speed": "speed",
    "negative speed": "speed", "NaN speed": "speed", "duplicate order ids": "more than once",
    "duplicate courier ids": "more than once", "empty order id": "empty id",
    "empty courier id": "empty id", "NUL in an order id": "NUL character",
    "unknown field": "weather", "orders is an object": "orders",
    "speed is text": "speed", "bad timestamp": "takenAt", "truncated": "malformed",
    "not UTF-8": "UTF-8", "empty value": "empty", "a JSON number": "malformed",
}


def _etcd_city(fleet: Fleet, solver: str, state: str | bytes | None = None) -> str:
    """A new city on the ``etcd`` source; its ``state`` is put first, so that no tick
    can run before it is there (and fail with "no state snapshot")."""
    city = fleet.new_city("snap")
    if state is not None:
        fleet.client.put(fleet.keys.state(city), state)
    fleet.client.put(fleet.keys.city(city), json.dumps(
        {"solver": solver, "stateSource": "etcd", "periodSeconds": 0.3}))
    return city


@FUZZ
@given(snapshot=valid_snapshot(), breakage=st.sampled_from(sorted(SNAPSHOT_BREAKAGES)),
       solver=st.sampled_from(SOLVERS))
def test_broken_state_snapshots_are_reported_and_never_decided(
        fleet: Fleet, snapshot: dict[str, Any], breakage: str, solver: str) -> None:
    city = _etcd_city(fleet, solver, SNAPSHOT_BREAKAGES[breakage](snapshot))
    status = fleet.expect_failing(city)
    assert SNAPSHOT_NAMES[breakage] in status.last_error, (breakage, status.last_error)
    fleet.assert_healthy()
    fleet.remove(city)


def test_every_snapshot_breakage_at_once(fleet: Fleet) -> None:
    snapshot = {"orders": [{"id": "o1", "pickup": {"x": 1, "y": 1},
                            "dropoff": {"x": 2, "y": 2}, "size": 1}],
                "couriers": [{"id": "c1", "position": {"x": 0, "y": 0}, "speed": 5,
                              "capacity": 2}]}
    cities = {}
    for breakage, breaks in SNAPSHOT_BREAKAGES.items():
        cities[breakage] = _etcd_city(fleet, "hungarian", breaks(snapshot))
    fine = _etcd_city(fleet, "hungarian", json.dumps(snapshot))
    for breakage, city in cities.items():
        status = fleet.expect_failing(city)
        assert SNAPSHOT_NAMES[breakage] in status.last_error, (breakage, status.last_error)
    assert assigned(fleet.expect_decision(fine)) == {"o1": "c1"}
    fleet.assert_healthy()
    for city in [*cities.values(), fine]:
        fleet.remove(city)


@FUZZ
@given(snapshot=valid_snapshot(), solver=st.sampled_from(SOLVERS))
def test_valid_state_snapshots_are_decided_within_the_state(
        fleet: Fleet, snapshot: dict[str, Any], solver: str) -> None:
    city = _etcd_city(fleet, solver, json.dumps(snapshot))
    d = fleet.expect_decision(city)
    orders = {o["id"]: o.get("size") or 1 for o in snapshot["orders"]}
    capacity = {c["id"]: c.get("capacity", 0) for c in snapshot["couriers"]}
    load: dict[str, int] = {}
    for order, courier in assigned(d).items():
        assert order in orders and courier in capacity
        load[courier] = load.get(courier, 0) + orders[order]
    assert all(load[c] <= capacity[c] for c in load), (load, capacity)
    assert set(d.unassigned) | set(assigned(d)) == set(orders)
    assert not set(d.unassigned) & set(assigned(d))
    fleet.assert_healthy()
    fleet.remove(city)


def test_a_missing_and_a_large_snapshot(fleet: Fleet) -> None:
    """No snapshot at all: failing. A large one (2,000 orders, 800 couriers): decided, or
    failing with the reason (the solve may not fit a 0.3 s period here) — never a crash."""
    missing = _etcd_city(fleet, "greedy")
    assert "no state snapshot" in fleet.expect_failing(missing).last_error
    fleet.remove(missing)

    big = _etcd_city(fleet, "hungarian")
    state = random_city(big, 2000, 800, 1)
    snapshot = {
        "orders": [{"id": str(i), "pickup": {"x": float(p[0]), "y": float(p[1])},
                    "dropoff": {"x": float(q[0]), "y": float(q[1])},
                    "readyInSeconds": float(r), "size": int(z)}
                   for i, p, q, r, z in zip(state.order_ids, state.pickup, state.dropoff,
                                            state.ready_in, state.size, strict=True)],
        "couriers": [{"id": str(i), "position": {"x": float(p[0]), "y": float(p[1])},
                      "speed": float(v), "capacity": int(c)}
                     for i, p, v, c in zip(state.courier_ids, state.position, state.speed,
                                           state.capacity, strict=True)],
    }
    fleet.client.put(fleet.keys.state(big), json.dumps(snapshot))

    def outcome() -> str | None:
        if fleet.decision(big) is not None:
            return "decided"
        s = fleet.status(big)
        return "failing" if s is not None and s.state == "failing" else None

    wait_until(outcome, timeout=30, message="the large city to be decided or reported")
    s = fleet.status(big)
    if s is not None and s.state == "failing":
        assert "\n" not in s.last_error
    fleet.assert_healthy()
    fleet.remove(big)


# -- solver outputs -------------------------------------------------------------------


def reference_problem(state: CityState, solution: object) -> str | None:
    """An independent, plain-Python statement of the contract: None if valid."""
    if not isinstance(solution, Solution):
        return "not a Solution"
    arrays = (solution.orders, solution.couriers, solution.pickup_eta)
    if not all(isinstance(a, np.ndarray) and a.ndim == 1 for a in arrays):
        return "not 1-D arrays"
    if solution.orders.dtype.kind not in "iu" or solution.couriers.dtype.kind not in "iu":
        return "indices not integers"
    if solution.pickup_eta.dtype.kind not in "iuf":
        return "ETAs not numbers"
    if not len(solution.orders) == len(solution.couriers) == len(solution.pickup_eta):
        return "lengths differ"
    orders = [int(i) for i in solution.orders]
    couriers = [int(j) for j in solution.couriers]
    if any(not 0 <= i < state.n_orders for i in orders):
        return "unknown order"
    if any(not 0 <= j < state.n_couriers for j in couriers):
        return "unknown courier"
    if len(set(orders)) != len(orders):
        return "order twice"
    if orders:
        etas = [float(e) for e in solution.pickup_eta]
        if any(not math.isfinite(e) for e in etas):
            return "ETA not finite"
        if any(e < 0 for e in etas):
            return "ETA negative"
        load: dict[int, int] = {}
        for i, j in zip(orders, couriers, strict=True):
            load[j] = load.get(j, 0) + int(state.size[i])
        if any(load[j] > int(state.capacity[j]) for j in load):
            return "over capacity"
    stats = solution.stats
    if not isinstance(stats, Mapping):
        return "stats not a mapping"
    for key, value in stats.items():
        if not isinstance(key, str) or isinstance(value, bool) or \
                not isinstance(value, int | float | np.integer | np.floating) or \
                not math.isfinite(float(value)):
            return "bad stats"
    return None


INDEX_DTYPES = ["int64", "int32", "int8", "uint16", "uint64", "float64", "bool", "<U2",
                "object"]
ETA_DTYPES = ["float64", "float32", "int64", "uint8", "bool", "complex128", "<U3", "object"]


@st.composite
def solution_recipe(draw: st.DrawFn) -> Callable[[CityState], Solution]:
    """A way to build an answer for whatever state the solver is given."""
    length = draw(st.integers(0, 8))
    extra = draw(st.sampled_from([0, 0, 0, 1, -1]))  # make one array a different length
    order_picks = draw(st.lists(st.floats(0, 1), min_size=length, max_size=length))
    courier_picks = draw(st.lists(st.floats(0, 1), min_size=length, max_size=length))
    out_of_range = draw(st.sampled_from([None, None, None, -1, 10**6]))
    order_dtype = draw(st.sampled_from(INDEX_DTYPES[:5] * 3 + INDEX_DTYPES))
    courier_dtype = draw(st.sampled_from(INDEX_DTYPES[:5] * 3 + INDEX_DTYPES))
    eta_dtype = draw(st.sampled_from(ETA_DTYPES[:4] * 3 + ETA_DTYPES))
    etas = draw(st.lists(st.floats(-10, 1e4) | st.sampled_from([math.nan, math.inf]),
                         min_size=length, max_size=length))
    shape = draw(st.sampled_from(["1d"] * 8 + ["2d", "scalar", "list"]))
    stats = draw(st.dictionaries(st.text(max_size=4) | st.integers(),
                                 st.floats() | st.booleans() | st.text(max_size=3),
                                 max_size=2))
    wrong_type = draw(st.sampled_from([None] * 12 + ["dict", "tuple"]))

    def build(state: CityState) -> Solution:
        n, m = max(state.n_orders, 1), max(state.n_couriers, 1)
        orders = [min(int(u * n), n - 1) for u in order_picks]
        couriers = [min(int(u * m), m - 1) for u in courier_picks]
        if out_of_range is not None and orders:
            orders[-1] = out_of_range
        eta_values: list[float] = list(etas)
        if extra == 1:
            eta_values.append(1.0)
        elif extra == -1 and eta_values:
            eta_values.pop()

        def arr(values: list[Any], dtype: str) -> Any:
            try:
                a = np.array(values, dtype=dtype)
            except (ValueError, OverflowError, TypeError):
                a = np.array(values)
            if shape == "2d":
                return a.reshape(1, -1)
            if shape == "scalar" and a.size:
                return a[0]
            if shape == "list":
                return values
            return a

        with np.errstate(all="ignore"):
            solution = Solution(arr(orders, order_dtype), arr(couriers, courier_dtype),
                                arr(eta_values, eta_dtype), stats=stats)
        if wrong_type == "dict":
            return {"orders": orders}  # type: ignore[return-value]
        if wrong_type == "tuple":
            return (orders, couriers, etas)  # type: ignore[return-value]
        return solution

    return build


@st.composite
def small_state(draw: st.DrawFn) -> CityState:
    state = random_city("fuzz", draw(st.integers(0, 8)), draw(st.integers(0, 6)),
                        draw(st.integers(0, 1000)))
    return state.freeze()


@settings(max_examples=400, deadline=None)
@given(state=small_state(), recipe=solution_recipe())
def test_check_solution_agrees_with_a_plain_reference(
        state: CityState, recipe: Callable[[CityState], Solution]) -> None:
    solution = recipe(state)
    expected = reference_problem(state, solution)
    try:
        check_solution(state, solution)
    except InvalidSolution as exc:
        assert expected is not None, f"a valid solution was refused: {exc}"
        assert str(exc) and "\n" not in str(exc)
    else:
        assert expected is None, f"check_solution accepted an answer with {expected}"


class AnswerSolver(Solver):
    """TEST DOUBLE: answers each city with what hypothesis drew for it, and records
    whether that answer was valid (by the reference) for the state it was given."""

    description = "fuzz double"

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        build = self.fleet.answers[state.city]
        solution = build(state)
        self.fleet.verdicts.setdefault(state.city, []).append(
            reference_problem(state, solution) is None)
        return solution


@FUZZ
@given(recipe=solution_recipe(), orders=st.integers(0, 10), couriers=st.integers(0, 6))
def test_solver_outputs_through_the_worker(fleet: Fleet,
                                           recipe: Callable[[CityState], Solution],
                                           orders: int, couriers: int) -> None:
    city = fleet.new_city("answer")
    fleet.answers[city] = recipe
    fleet.client.put(fleet.keys.city(city), json.dumps(
        {"solver": FUZZ_SOLVER, "periodSeconds": 0.3,
         "params": {"orders": orders, "couriers": couriers}}))

    def outcome() -> str | None:
        if fleet.decision(city) is not None:
            return "decided"
        s = fleet.status(city)
        return "failing" if s is not None and s.state == "failing" else None

    result = wait_until(outcome, timeout=10, message=f"{city} to be decided or reported")
    fleet.remove(city)
    time.sleep(0.1)
    verdicts = fleet.verdicts.get(city, [])
    assert verdicts, "the solver double was never asked"
    d = fleet.decision(city)
    if d is not None:
        # the tick counter only counts answers that passed validation
        assert sum(verdicts) >= d.tick >= 1, f"an invalid answer was committed: {verdicts}"
    if result == "failing":
        assert not all(verdicts), f"a valid answer was refused: {fleet.status(city)}"
        s = fleet.status(city)
        assert s is not None and s.last_error and "\n" not in s.last_error
    if not any(verdicts):
        assert d is None, "an invalid answer was committed"
        fleet.broken.append(city)
    fleet.assert_healthy()
