"""The conformance kit: does a solver honour the contract on awkward cities?

Written for third-party solver authors, to run from their own test suite with nothing but
this package installed::

    from solvers.conformance import assert_conformant
    def test_my_solver_conforms():
        assert_conformant(MySolver(), budget=1.0)

or one test per case::

    @pytest.mark.parametrize("case", conformance_cases(), ids=str)
    def test_case(case):
        assert_case_conformant(MySolver(), case)

For every case (empty cities, no couriers, busy couriers, orders that fit nobody,
bundling room, everyone at the same spot, 2,000 × 2,000, ...) the kit solves a *frozen*
state (read-only arrays, so an in-place write raises) and afterwards compares it with a
deep copy (so a solver that unfreezes and writes is caught too); it checks the answer
with :func:`solvers.validate.check_solution` — the very check the coordinator applies
before committing — and solves a fresh identical state again to check determinism (of
``orders``, ``couriers`` and ``pickup_eta``; ``stats`` may legitimately hold timings).
Exceptions are captured with their message rather than aborting the run, so one report
lists every problem.

Solve time is the best of ``repeats`` runs (at least two, for the determinism check):
over the budget is a warning, over three times the budget a failure (the coordinator
abandons a solve that runs far past its budget). Time is wall-clock by default, as the
coordinator measures it; ``clock="cpu"`` uses the process's CPU time instead, which
other processes' load on a shared CI machine does not inflate (it counts every thread of
the process, so a multi-threaded solver is charged for all its cores). A solve that has
not returned after ``hang_after`` wall seconds is reported as hung and left running on a
daemon thread.

The replay check (every case but the large one): a decision must be reproducible by
``dispatchctl replay``, which solves the decision's state again, rebuilt from its
snapshot, with a solver freshly loaded in another process. So the kit solves the case's
state mid-history (right after another city with the same ids), then solves the state
rebuilt from its values (``rebuild``: by default through Python lists, as a snapshot
holds it) with a fresh instance (``type(solver)()``, as the worker constructs solvers),
and the two answers must be the same. A solver whose answer depends on what it solved
before, or on chance, fails it even when two solves in a row agree.

The kit does not judge quality — a valid answer that assigns nothing passes. Use the
benchmark (``bench/solvers.py``) and :func:`solvers.cost.solution_cost` for that.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from solvers.contract import CityState, Solution, Solver
from solvers.generate import random_city
from solvers.validate import InvalidSolution, check_solution

__all__ = [
    "CASES",
    "CaseResult",
    "ConformanceCase",
    "ConformanceReport",
    "assert_case_conformant",
    "assert_conformant",
    "conformance_cases",
    "rebuilt",
    "run_case",
    "run_conformance",
]


@dataclass(frozen=True)
class ConformanceCase:
    """A named city shape. ``build()`` returns a fresh, writable, identical state."""

    name: str
    build: Callable[[], CityState]
    about: str = ""
    large: bool = False

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------- cases


def _city(n: int, m: int, **kw: Any) -> Callable[[], CityState]:
    def build() -> CityState:
        return random_city("conformance", n, m, seed=7, **kw)
    return build


def _with(base: Callable[[], CityState], **changes: Callable[[CityState], Any]
          ) -> Callable[[], CityState]:
    """``base`` with some fields replaced by functions of the base state."""
    def build() -> CityState:
        state = base()
        return dataclasses.replace(state, **{k: f(state) for k, f in changes.items()})
    return build


def _same_spot(state: CityState) -> CityState:
    spot = np.array([5_000.0, 5_000.0])
    return dataclasses.replace(
        state,
        pickup=np.tile(spot, (state.n_orders, 1)),
        position=np.tile(spot + 100.0, (state.n_couriers, 1)),
        ready_in=np.full(state.n_orders, 120.0),
        speed=np.full(state.n_couriers, 5.0),
        capacity=np.full(state.n_couriers, 2, dtype=np.int64),
    )


def _duplicates() -> CityState:
    return _same_spot(random_city("conformance", 40, 25, seed=7, max_size=2))


CASES: tuple[ConformanceCase, ...] = (
    ConformanceCase("empty", _city(0, 0), "no orders and no couriers"),
    ConformanceCase("no-couriers", _city(25, 0), "orders but nobody to take them"),
    ConformanceCase("no-orders", _city(0, 25), "couriers but nothing to do"),
    ConformanceCase("one-to-one", _city(1, 1, busy_share=0.0), "one order, one courier"),
    ConformanceCase("more-orders", _city(120, 30), "4 orders per courier"),
    ConformanceCase("more-couriers", _city(30, 120), "4 couriers per order"),
    ConformanceCase("some-busy", _city(60, 60, busy_share=0.5),
                    "half the couriers have 0 free capacity"),
    ConformanceCase("all-busy", _with(_city(40, 20), capacity=lambda s: np.zeros(
        s.n_couriers, dtype=np.int64)), "every courier has 0 free capacity"),
    ConformanceCase("too-big", _with(_city(40, 30), size=lambda s: np.full(
        s.n_orders, 6, dtype=np.int64)), "every order is bigger than any capacity"),
    ConformanceCase("bundling", _city(150, 30, max_size=3, busy_share=0.0),
                    "sizes 1-3, couriers with room for several orders"),
    ConformanceCase("same-spot", _duplicates,
                    "every pickup at one spot, every courier at another: all ties"),
    ConformanceCase("all-late", _with(_city(80, 80), ready_in=lambda s: np.full(
        s.n_orders, 600.0)), "every order ready in 10 minutes: ETA plateaus"),
    ConformanceCase("large", _city(2_000, 2_000), "2,000 orders x 2,000 couriers",
                    large=True),
)


def conformance_cases(large: bool = True) -> list[ConformanceCase]:
    """The cases, for ``pytest.mark.parametrize("case", conformance_cases(), ids=str)``.

    A list rather than a generator: pytest deprecates parametrising over iterators.
    """
    return [case for case in CASES if large or not case.large]


# --------------------------------------------------------------------------- running


@dataclass
class CaseResult:
    """What happened to one case: timing (best run, seconds) and problems found."""

    name: str
    shape: tuple[int, int]
    seconds: float = float("nan")
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Run:
    solution: object = None
    error: BaseException | None = None
    wall: float = 0.0
    cpu: float = 0.0
    finished: bool = False


def _solve(solver: Solver, state: CityState, params: Mapping[str, Any], budget: float,
           hang_after: float) -> _Run:
    """One solve on a daemon thread, so a hung solver cannot hang the kit."""
    run = _Run()
    done = threading.Event()

    def target() -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            run.solution = solver.solve(state, params, budget)
        except BaseException as exc:  # reported, never re-raised
            run.error = exc
        finally:
            run.wall = time.perf_counter() - wall
            run.cpu = time.process_time() - cpu
            done.set()

    threading.Thread(target=target, name=f"conformance {state.city}", daemon=True).start()
    run.finished = done.wait(hang_after)
    return run


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = f"raised {type(exc).__name__}" + (f": {lines[0]}" if lines else "")
    if "read-only" in text:
        text += " (the solver wrote into its input state)"
    return text


def _snapshot(state: CityState) -> dict[str, Any]:
    copy: dict[str, Any] = {k: np.array(v, copy=True) for k, v in state.arrays().items()}
    copy["city"], copy["taken_at"] = state.city, state.taken_at
    return copy


def _mutations(state: CityState, before: dict[str, Any],
               arrays: dict[str, np.ndarray]) -> list[str]:
    changed = []
    for name, old in before.items():
        new = getattr(state, name)
        if isinstance(old, np.ndarray):
            if new is not arrays[name]:
                changed.append(f"state.{name} (replaced)")
            elif new.dtype != old.dtype or new.shape != old.shape \
                    or not np.array_equal(new, old, equal_nan=new.dtype.kind == "f"):
                changed.append(f"state.{name}")
        elif new != old:
            changed.append(f"state.{name}")
    return changed


def _same(a: Solution, b: Solution) -> list[str]:
    return [name for name in ("orders", "couriers", "pickup_eta")
            if not np.array_equal(getattr(a, name), getattr(b, name))]


def rebuilt(state: CityState) -> CityState:
    """``state`` rebuilt from its values alone, as a snapshot holds them: fresh arrays
    from Python lists (strings at their own width), nothing shared with the original."""
    arrays = {name: np.array(a.tolist(), dtype=np.str_ if a.dtype.kind == "U" else a.dtype
                             ).reshape(a.shape)
              for name, a in state.arrays().items()}
    return CityState(city=state.city, taken_at=state.taken_at, **arrays)


def _replay_problem(solver: Solver, case: ConformanceCase, params: Mapping[str, Any],
                    budget: float, hang_after: float,
                    rebuild: Callable[[CityState], CityState]) -> tuple[str, str]:
    """(failure, warning) of the replay check; empty strings when it passes."""
    try:
        fresh = type(solver)()
    except Exception:
        return "", (f"replay check skipped: {type(solver).__name__}() cannot be constructed "
                    "without arguments (the worker constructs solvers that way)")
    probe = case.build()
    other = random_city("conformance", probe.n_orders, probe.n_couriers, seed=8)
    runs = [_solve(solver, other.freeze(), params, budget, hang_after),
            _solve(solver, case.build().freeze(), params, budget, hang_after),
            _solve(fresh, rebuild(case.build()).freeze(), params, budget, hang_after)]
    for run in runs:
        if not run.finished:
            return f"replay: did not return within {hang_after:.1f}s", ""
        if run.error is not None:
            return f"replay: {_describe(run.error)}", ""
        if not isinstance(run.solution, Solution):
            return f"replay: returned {type(run.solution).__name__}, not a Solution", ""
    live, replayed = runs[1].solution, runs[2].solution
    assert isinstance(live, Solution) and isinstance(replayed, Solution)
    if differ := _same(live, replayed):
        return (f"replay: a fresh {type(solver).__name__}() on the same state rebuilt from "
                f"its snapshot gave different {', '.join(differ)} (the answer depends on "
                "earlier solves or on chance: its decisions cannot be replayed)"), ""
    return "", ""


def run_case(solver: Solver, case: ConformanceCase, *, budget: float = 1.0,
             repeats: int = 2, params: Mapping[str, Any] | None = None,
             hang_after: float | None = None, clock: str = "wall", replay: bool = True,
             rebuild: Callable[[CityState], CityState] | None = None) -> CaseResult:
    """Check ``solver`` on one case; never raises for the solver's faults.

    ``clock`` is ``"wall"`` (default) or ``"cpu"`` (see the module docstring);
    ``hang_after`` (wall seconds) defaults to ``max(10 × budget, budget + 5)``;
    ``replay`` runs the replay check (not on large cases), rebuilding the state with
    ``rebuild`` (default :func:`rebuilt`).
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', not {clock!r}")
    params = dict(params or {})
    hang_after = hang_after if hang_after is not None else max(10.0 * budget, budget + 5.0)
    probe = case.build()
    result = CaseResult(case.name, (probe.n_orders, probe.n_couriers))
    first: Solution | None = None
    times: list[float] = []
    for _ in range(max(2, repeats)):
        state = case.build().freeze()
        before, arrays = _snapshot(state), state.arrays()
        run = _solve(solver, state, params, budget, hang_after)
        if not run.finished:
            result.failures.append(f"did not return within {hang_after:.1f}s (hung; the "
                                   "solve was left running on a daemon thread)")
            return result
        times.append(run.cpu if clock == "cpu" else run.wall)
        if run.error is not None:
            result.failures.append(_describe(run.error))
            break
        changed = _mutations(state, before, arrays)
        if changed:
            result.failures.append(f"mutated its input: {', '.join(changed)}")
            break
        if not isinstance(run.solution, Solution):
            result.failures.append(f"returned {type(run.solution).__name__}, not a Solution")
            break
        try:
            check_solution(state, run.solution)
        except InvalidSolution as exc:
            result.failures.append(f"invalid solution: {exc}")
            break
        if first is None:
            first = run.solution
        elif differ := _same(first, run.solution):
            result.failures.append("nondeterministic: two solves of identical input gave "
                                   f"different {', '.join(differ)}")
            break
    result.seconds = min(times) if times else float("nan")
    took = f"took {result.seconds:.3f}s" + (" of CPU" if clock == "cpu" else "")
    if result.seconds > 3.0 * budget:
        result.failures.append(f"{took}, over 3x the {budget:g}s budget")
    elif result.seconds > budget:
        result.warnings.append(f"{took}, over the {budget:g}s budget")
    if replay and not case.large and not result.failures:
        failure, warning = _replay_problem(solver, case, params, budget, hang_after,
                                           rebuild or rebuilt)
        result.failures += [failure] if failure else []
        result.warnings += [warning] if warning else []
    return result


@dataclass
class ConformanceReport:
    """The outcome of :func:`run_conformance`. ``failures`` read ``"case: problem"``."""

    solver: str
    budget: float
    ok: bool
    failures: list[str]
    warnings: list[str]
    timings: dict[str, float]
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    clock: str = "wall"

    def format(self) -> str:
        """A plain-text table, one line per case, then the failures and warnings."""
        verdict = "OK" if self.ok else f"FAILED ({len(self.failures)} failures)"
        clock = ", CPU time" if self.clock == "cpu" else ""
        lines = [f"conformance of {self.solver} (budget {self.budget:g}s{clock}): {verdict}",
                 f"{'case':<16} {'orders x couriers':>17} {'best time':>11}  result"]
        for name, seconds in self.timings.items():
            n, m = self.shapes.get(name, (0, 0))
            prefix = f"{name}: "
            status = "FAIL" if any(f.startswith(prefix) for f in self.failures) else (
                "slow" if any(w.startswith(prefix) for w in self.warnings) else "ok")
            shown = "-" if np.isnan(seconds) else f"{seconds * 1e3:.1f} ms"
            lines.append(f"{name:<16} {f'{n} x {m}':>17} {shown:>11}  {status}")
        for title, items in (("failures", self.failures), ("warnings", self.warnings)):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  {item}" for item in items)
        return "\n".join(lines)


def run_conformance(solver: Solver, *, budget: float = 1.0, large: bool = True,
                    repeats: int = 2, params: Mapping[str, Any] | None = None,
                    clock: str = "wall", replay: bool = True,
                    rebuild: Callable[[CityState], CityState] | None = None
                    ) -> ConformanceReport:
    """Run every case (the 2,000 × 2,000 one only with ``large``) and report."""
    failures: list[str] = []
    warnings: list[str] = []
    timings: dict[str, float] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for case in conformance_cases(large):
        result = run_case(solver, case, budget=budget, repeats=repeats, params=params,
                          clock=clock, replay=replay, rebuild=rebuild)
        failures += [f"{case.name}: {problem}" for problem in result.failures]
        warnings += [f"{case.name}: {problem}" for problem in result.warnings]
        timings[case.name] = result.seconds
        shapes[case.name] = result.shape
    return ConformanceReport(solver=type(solver).__name__, budget=budget, ok=not failures,
                             failures=failures, warnings=warnings, timings=timings,
                             shapes=shapes, clock=clock)


def assert_conformant(solver: Solver, **kwargs: Any) -> ConformanceReport:
    """:func:`run_conformance`, raising ``AssertionError`` with the report if it failed."""
    report = run_conformance(solver, **kwargs)
    if not report.ok:
        raise AssertionError(report.format())
    return report


def assert_case_conformant(solver: Solver, case: ConformanceCase, **kwargs: Any) -> None:
    """:func:`run_case` for one parametrised case, raising ``AssertionError`` on failure."""
    result = run_case(solver, case, **kwargs)
    if result.failures:
        raise AssertionError(f"{type(solver).__name__} on case {case.name!r}: "
                             + "; ".join(result.failures))
