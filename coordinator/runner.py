"""Running a solver with a deadline, so a broken one cannot hold a city hostage.

The coordinator never lets a solver's exception or a hang escape into its own loops:
``SolveRunner.solve`` returns a result or raises ``SolverFailed`` with a one-line reason.
A solve that runs past its deadline is abandoned — its result, should it ever arrive,
is dropped, never committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.errors import SolverFailed
from solvers.contract import CityState, Solution, Solver

__all__ = ["SolveResult", "SolveRunner"]


@dataclass(frozen=True)
class SolveResult:
    solution: Solution
    seconds: float


class SolveRunner:
    """Runs each solve on its own daemon thread and waits at most ``deadline`` for it.

    A thread per solve (rather than a pool) means a hung solver costs one parked thread,
    not a pool slot every other city needs.
    """

    def __init__(self) -> None:
        self.abandoned = 0

    def solve(self, name: str, solver: Solver, state: CityState, params: Mapping[str, Any],
              *, budget: float, deadline: float) -> SolveResult:
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            started = time.perf_counter()
            try:
                box["solution"] = solver.solve(state, params, budget)
            except BaseException as exc:
                box["error"] = exc
            finally:
                box["seconds"] = time.perf_counter() - started
                done.set()

        thread = threading.Thread(target=run, name=f"solve {state.city}/{name}", daemon=True)
        thread.start()
        if not done.wait(deadline):
            self.abandoned += 1
            raise SolverFailed(
                f"solver {name!r} did not finish within {deadline:.2f}s "
                f"(budget {budget:.2f}s); the solve was abandoned"
            )
        error = box.get("error")
        if error is not None:
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            detail = f": {message}" if message else ""
            raise SolverFailed(f"solver {name!r} raised {type(error).__name__}{detail}") from error
        solution = box.get("solution")
        if not isinstance(solution, Solution):
            raise SolverFailed(
                f"solver {name!r} returned {type(solution).__name__}, not a Solution"
            )
        return SolveResult(solution, float(box["seconds"]))
