"""The conformance kit accepts the built-ins and rejects broken solvers, saying why."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from solvers.bundle import BundleSolver
from solvers.conformance import (
    CASES,
    ConformanceCase,
    assert_case_conformant,
    assert_conformant,
    conformance_cases,
    run_case,
    run_conformance,
)
from solvers.contract import CityState, Solution, Solver
from solvers.greedy import GreedySolver
from solvers.hungarian import HungarianSolver


@pytest.mark.parametrize("solver", [GreedySolver(), HungarianSolver(), BundleSolver()],
                         ids=lambda s: type(s).__name__)
def test_builtins_pass_the_whole_kit(solver: Solver) -> None:
    # CPU time: a shared CI machine's load inflates wall time, not the solver's work.
    report = run_conformance(solver, large=True, clock="cpu")
    assert report.ok, report.format()
    assert set(report.timings) == {case.name for case in CASES}


@pytest.mark.parametrize("case", conformance_cases(large=False), ids=str)
def test_per_case_parametrisation(case: ConformanceCase) -> None:
    assert_case_conformant(GreedySolver(), case)


def test_cases_are_varied_and_rebuild_identically() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert [c.name for c in conformance_cases(large=False)] == \
        [c.name for c in CASES if not c.large]
    shapes = {(c.build().n_orders, c.build().n_couriers) for c in CASES}
    assert {(0, 0), (25, 0), (0, 25), (1, 1), (2_000, 2_000)} <= shapes
    for case in CASES:
        if not case.large:
            a, b = case.build(), case.build()
            assert all(np.array_equal(x, y) for x, y in
                       zip(a.arrays().values(), b.arrays().values(), strict=True))


# ------------------------------------------------------------------ broken solvers


class _OneEach(Solver):
    """Valid baseline: order i to courier i where it fits."""

    def answer(self, state: CityState) -> Solution:
        k = min(state.n_orders, state.n_couriers)
        idx = np.arange(k, dtype=np.int64)
        fits = state.size[:k] <= state.capacity[:k]
        return Solution(idx[fits], idx[fits], np.full(int(fits.sum()), 60.0))

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        return self.answer(state)


class WritesInPlace(_OneEach):
    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        state.ready_in[:] = 0.0
        return self.answer(state)


class UnfreezesAndWrites(_OneEach):
    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        speed = state.speed
        while speed.base is not None and isinstance(speed.base, np.ndarray):
            speed = speed.base
        speed.setflags(write=True)
        state.speed.setflags(write=True)
        state.speed[:] *= 2.0
        return self.answer(state)


class AssignsTwice(_OneEach):
    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        if state.n_orders == 0 or state.n_couriers < 2:
            return Solution.empty()
        return Solution(np.array([0, 0]), np.array([0, 1]), np.array([1.0, 2.0]))


class Flaky(_OneEach):
    def __init__(self) -> None:
        self.calls = itertools.count()

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        return self.answer(state) if next(self.calls) % 2 else Solution.empty()


class Raises(_OneEach):
    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        raise RuntimeError("boom\nsecond line")


class ReturnsNone(_OneEach):
    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        return None  # type: ignore[return-value]


class SlowOnOneCase(_OneEach):
    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        if state.n_orders == 1:
            time.sleep(4 * budget)
        return self.answer(state)


REJECTED: list[tuple[Solver, str]] = [
    (WritesInPlace(), "more-orders: raised ValueError: assignment destination is read-only "
                      "(the solver wrote into its input state)"),
    (UnfreezesAndWrites(), "more-orders: mutated its input: state.speed"),
    (AssignsTwice(), "more-orders: invalid solution: order index 0 (o-000000) assigned twice"),
    (Flaky(), "more-orders: nondeterministic: two solves of identical input gave different "
              "orders, couriers, pickup_eta"),
    (Raises(), "more-orders: raised RuntimeError: boom"),
    (ReturnsNone(), "more-orders: returned NoneType, not a Solution"),
]


@pytest.mark.parametrize(("solver", "reason"), REJECTED, ids=lambda x: type(x).__name__)
def test_broken_solvers_are_rejected_with_a_clear_reason(solver: Solver, reason: str) -> None:
    report = run_conformance(solver, large=False)
    assert not report.ok
    assert reason in report.failures, report.format()
    with pytest.raises(AssertionError, match="more-orders"):
        assert_conformant(solver, large=False)


class _SleepFor(_OneEach):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        time.sleep(self.seconds)
        return self.answer(state)


def test_over_budget_is_a_warning_and_far_over_a_failure() -> None:
    # Budgets far above scheduling noise, so a loaded CI machine cannot flip the verdict.
    report = run_conformance(SlowOnOneCase(), budget=0.25, large=False)
    assert not report.ok
    assert report.failures[0].startswith("one-to-one: took 1."), report.format()
    assert report.failures[0].endswith("over 3x the 0.25s budget")
    assert report.timings["one-to-one"] >= 1.0
    assert len(report.failures) == 1  # the other cases are fast
    lax = run_case(_SleepFor(0.3), CASES[0], budget=0.25)  # 1.2x the budget
    assert not lax.failures
    assert lax.warnings[0].startswith("took 0.3") and lax.warnings[0].endswith(
        "over the 0.25s budget")


def test_cpu_clock_ignores_sleeping() -> None:
    wall = run_case(_SleepFor(0.2), CASES[0], budget=0.05)
    cpu = run_case(_SleepFor(0.2), CASES[0], budget=0.05, clock="cpu")
    assert wall.failures and not cpu.failures and cpu.seconds < 0.05
    with pytest.raises(ValueError, match="clock"):
        run_case(_SleepFor(0.0), CASES[0], clock="sundial")


def test_a_hung_solver_is_abandoned() -> None:
    started = time.perf_counter()
    result = run_case(_SleepFor(2.0), CASES[0], budget=0.01, hang_after=0.2)
    assert time.perf_counter() - started < 1.5
    assert result.failures and "did not return within 0.2s" in result.failures[0]


def test_report_format_is_a_readable_table() -> None:
    text = run_conformance(AssignsTwice(), large=False).format()
    assert text.splitlines()[0].startswith("conformance of AssignsTwice (budget 1s): FAILED")
    for case in conformance_cases(large=False):
        assert case.name in text
    assert "failures:" in text and "FAIL" in text


# ------------------------------------------------------------------ the replay check


def _snapshot_round_trip(state: CityState) -> CityState:
    """What ``dispatchctl replay`` solves on: the state through the archive's snapshot."""
    from coordinator.codec import decode, encode
    from coordinator.sources.snapshot import snapshot_from_state, state_from_snapshot
    from protos import dispatch_pb2 as pb

    snapshot = decode(pb.StateSnapshot, encode(snapshot_from_state(state)))
    return state_from_snapshot(state.city, snapshot, state.taken_at)


@pytest.mark.parametrize("solver", [GreedySolver(), HungarianSolver(), BundleSolver()],
                         ids=lambda s: type(s).__name__)
def test_builtins_replay_on_states_rebuilt_from_their_snapshot(solver: Solver) -> None:
    report = run_conformance(solver, large=False, clock="cpu", rebuild=_snapshot_round_trip)
    assert report.ok, report.format()


def test_a_history_dependent_solver_fails_the_replay_check_alone() -> None:
    """It answers the same input the same way twice in a row (the determinism check
    passes), but what it answers depends on what it solved before: a replay differs."""
    from dispatch_testsolvers import StickySolver

    assert run_conformance(StickySolver(), large=False, replay=False).ok
    report = run_conformance(StickySolver(), large=False)
    assert not report.ok
    assert ("more-orders: replay: a fresh StickySolver() on the same state rebuilt from its "
            "snapshot gave different couriers (the answer depends on earlier solves or on "
            "chance: its decisions cannot be replayed)") in report.failures, report.format()


def test_a_random_solver_fails_and_an_unconstructible_one_is_warned_about() -> None:
    from dispatch_testsolvers import RandomSolver

    report = run_conformance(RandomSolver(), large=False)
    assert not report.ok and any("nondeterministic" in f for f in report.failures)
    lax = run_case(_SleepFor(0.0), CASES[4])
    assert not lax.failures
    assert lax.warnings == ["replay check skipped: _SleepFor() cannot be constructed without "
                            "arguments (the worker constructs solvers that way)"]
