"""Running solvers with a deadline, so a broken one cannot hold a city — or the worker —
hostage.

``SolveRunner.solve`` returns a result or raises ``SolverFailed`` with a one-line reason;
a solver's exception never escapes into the coordinator's loops. A solve that runs past
its deadline is abandoned, and its result, should it ever arrive, is never committed.

Two ways to run a solve:

``process`` (default)
    Each solve runs in one of a small pool of solver processes. Solvers such as ``lap``
    or OR-Tools hold the GIL for a whole solve; in our own process that would starve the
    lease keep-alive and the ticker (``docs/solvers.md``, *The GIL*). In a separate
    process they cannot, a solver that eats a core eats its own, and a hung solve is
    ended by killing its process and starting a fresh one. The
    processes are *spawned* (never forked from a process running gRPC threads), so a
    program that embeds ``Worker`` must guard its entry point with
    ``if __name__ == "__main__":``, as multiprocessing requires. A city small enough
    for its solver's ``Solver.inline_max_pairs`` (built in: ``greedy`` up to 2,500
    order × courier pairs) is solved on the tick's own thread instead: sending it to a
    process and back would cost the worker more CPU than the solve.
``thread``
    Each solve runs on its own daemon thread in the worker process: no IPC cost, fit for
    solvers that release the GIL (numpy, scipy). A hung solve can only be abandoned,
    not stopped: it keeps one parked thread. Cities within ``inline_max_pairs`` are
    solved on the calling thread here too.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from coordinator.errors import SolverFailed
from solvers.contract import CityState, Solution, Solver

__all__ = ["ProcessSolveRunner", "SolveResult", "SolveRunner", "ThreadSolveRunner",
           "make_runner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SolveResult:
    solution: Solution
    seconds: float
    #: CPU seconds the solve used off the calling thread (a solve thread or a solver
    #: process); 0 for an inline solve, whose CPU is the calling thread's own
    cpu: float = 0.0
    #: whether ``cpu`` was spent in this process (a solve thread), not a solver process
    in_process: bool = True


def _describe(name: str, kind: str, message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"solver {name!r} raised {kind}" + (f": {first}" if first else "")


def _late(name: str, budget: float, deadline: float) -> SolverFailed:
    return SolverFailed(f"solver {name!r} did not finish within {deadline:.2f}s "
                        f"(budget {budget:.2f}s); the solve was abandoned")


def _checked(name: str, solution: object, seconds: float, cpu: float = 0.0,
             in_process: bool = True) -> SolveResult:
    if not isinstance(solution, Solution):
        raise SolverFailed(f"solver {name!r} returned {type(solution).__name__}, not a Solution")
    return SolveResult(solution, seconds, cpu, in_process)


class SolveRunner:
    """Interface: run ``solver`` (registered as ``name``) on ``state``."""

    abandoned = 0
    #: solves run on the calling thread (see :meth:`runs_inline`)
    inline = 0

    def solve(self, name: str, solver: Solver, state: CityState, params: Mapping[str, Any],
              *, budget: float, deadline: float) -> SolveResult:
        raise NotImplementedError

    @staticmethod
    def runs_inline(solver: Solver, state: CityState) -> bool:
        """Whether ``solve`` runs this city on the calling thread: the solver vouches
        (``Solver.inline_max_pairs``) that a city this small takes well under a
        millisecond and cannot hang, so neither a process nor a thread is needed."""
        limit = getattr(type(solver), "inline_max_pairs", 0)
        return state.n_orders * state.n_couriers <= limit

    def _solve_inline(self, name: str, solver: Solver, state: CityState,
                      params: Mapping[str, Any], budget: float) -> SolveResult:
        self.inline += 1
        started = time.perf_counter()
        try:
            solution = solver.solve(state, params, budget)
        except Exception as exc:
            raise SolverFailed(_describe(name, type(exc).__name__, str(exc))) from exc
        return _checked(name, solution, time.perf_counter() - started)

    def ready(self) -> bool:
        """Whether a solve could start now (a worker stands for no city before)."""
        return True

    def close(self) -> None:
        """Release processes or threads."""


class ThreadSolveRunner(SolveRunner):
    """Solves on reusable daemon threads; a hung solver keeps its thread, nobody else's.

    Starting a thread per solve cost more than a small solve itself, so threads are
    reused: one that finishes goes back to the idle list, one that hangs is simply never
    seen again, and a new thread is started when none is idle.
    """

    def __init__(self) -> None:
        self._idle: list[_SolveThread] = []
        self._lock = threading.Lock()

    def solve(self, name: str, solver: Solver, state: CityState, params: Mapping[str, Any],
              *, budget: float, deadline: float) -> SolveResult:
        if self.runs_inline(solver, state):
            return self._solve_inline(name, solver, state, params, budget)
        with self._lock:
            thread = self._idle.pop() if self._idle else _SolveThread()
        job = _Job(solver, state, params, budget)
        thread.jobs.put(job)
        if not job.done.wait(deadline):
            self.abandoned += 1  # the thread is left to finish (or not) on its own
            raise _late(name, budget, deadline)
        with self._lock:
            self._idle.append(thread)
        if job.error is not None:
            raise SolverFailed(_describe(name, type(job.error).__name__, str(job.error))) \
                from job.error
        return _checked(name, job.solution, job.seconds, job.cpu)


@dataclass
class _Job:
    solver: Solver
    state: CityState
    params: Mapping[str, Any]
    budget: float
    solution: object = None
    error: BaseException | None = None
    seconds: float = 0.0
    cpu: float = 0.0

    def __post_init__(self) -> None:
        self.done = threading.Event()


class _SolveThread:
    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="solve", daemon=True).start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                job.solution = job.solver.solve(job.state, job.params, job.budget)
            except BaseException as exc:
                job.error = exc
            finally:
                job.seconds = time.perf_counter() - started
                job.cpu = time.thread_time() - cpu
                job.done.set()


def _child_main(conn: multiprocessing.connection.Connection) -> None:
    """Solver process: load solvers by entry-point name, solve what the parent sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    from coordinator.plugins import PluginLoader

    loader = PluginLoader(None)
    # Import every installed solver before saying we are ready, so that no solve pays
    # for imports (scipy, OR-Tools) inside its deadline.
    from coordinator.plugins import SOLVERS, installed

    for info in installed(SOLVERS, describe=False):
        with contextlib.suppress(Exception):
            loader.solver(info.name)
    try:
        conn.send(("ready",))
    except OSError:  # the worker died or gave up on us while we were importing
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        name, state, params, budget = message
        started, cpu = time.perf_counter(), time.process_time()
        try:
            solver = loader.solver(name)
            solution = solver.solve(state.freeze(), params, budget)
            reply: tuple[Any, ...] = ("ok", solution, time.perf_counter() - started,
                                      time.process_time() - cpu)
        except BaseException as exc:
            reply = ("error", type(exc).__name__, str(exc))
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError, OSError):
            return  # the worker is gone (killed, or it abandoned us): nothing to tell
        except Exception as exc:  # e.g. an unpicklable result
            with contextlib.suppress(OSError):
                conn.send(("error", type(exc).__name__, f"result could not be returned: {exc}"))


class _Process:
    def __init__(self, context: Any, index: int) -> None:
        parent, child = context.Pipe()
        self.conn: multiprocessing.connection.Connection = parent
        self.process = context.Process(target=_child_main, args=(child,), daemon=True,
                                       name=f"dispatch-solver-{index}")
        self.process.start()
        child.close()

    def wait_ready(self, timeout: float) -> bool:
        try:
            return bool(self.conn.poll(timeout)) and self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            return False

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.join(2)
        with contextlib.suppress(Exception):
            self.conn.close()


class ProcessSolveRunner(SolveRunner):
    """A fixed pool of warm solver processes; a hung or crashed one is replaced.

    Processes are started ahead of need and join the pool only once they have imported
    every installed solver, so starting one never eats into a solve's deadline.

    A city small enough for its solver's ``inline_max_pairs`` is solved on the calling
    thread instead (``inline`` counts them): the round trip to a process would cost more
    than the solve. So is it under ``thread`` isolation: a hand-off to a solve thread
    costs more than such a solve, too.
    """

    START_TIMEOUT = 120.0

    def __init__(self, processes: int | None = None) -> None:
        self.size = processes or max(1, min(4, os.cpu_count() or 1))
        # "spawn": never fork a process that runs gRPC threads
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Condition()
        self._created = 0
        self._idle: list[_Process] = []
        self._closed = False
        self._ever_ready = False
        for _ in range(self.size):
            self._start_one()

    def _start_one(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._created += 1
            index = self._created
        threading.Thread(target=self._warm_up, args=(index,), daemon=True,
                         name=f"start solver process {index}").start()

    def _warm_up(self, index: int) -> None:
        try:
            proc = _Process(self._context, index)
        except Exception:
            log.exception("could not start a solver process")
            time.sleep(1.0)
            self._start_one()
            return
        if not proc.wait_ready(self.START_TIMEOUT):
            log.error("solver process %d did not start; replacing it", index)
            proc.kill()
            self._start_one()
            return
        self._give_back(proc)

    def ready(self) -> bool:
        with self._lock:
            return self._ever_ready

    def _take(self, until: float) -> _Process:
        with self._lock:
            while not self._idle:
                remaining = until - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise SolverFailed("no solver process was free before the deadline "
                                       "(all busy or still starting)")
                self._lock.wait(remaining)
            return self._idle.pop()

    def _give_back(self, proc: _Process | None) -> None:
        if proc is None:
            self._start_one()  # replace the one we killed
            return
        with self._lock:
            if self._closed:
                proc.kill()
                return
            self._idle.append(proc)
            self._ever_ready = True
            self._lock.notify()

    def solve(self, name: str, solver: Solver, state: CityState, params: Mapping[str, Any],
              *, budget: float, deadline: float) -> SolveResult:
        if self.runs_inline(solver, state):
            return self._solve_inline(name, solver, state, params, budget)
        proc = self._take(time.monotonic() + deadline)
        # The deadline for *running* starts once a process is ours: a solve that queued
        # behind others has not hung, and killing its healthy process as if it had would
        # shrink the pool exactly when it is busiest.
        until = time.monotonic() + deadline
        try:
            proc.conn.send((name, state, dict(params), budget))
            if not proc.conn.poll(max(0.0, until - time.monotonic())):
                self.abandoned += 1
                proc.kill()  # the only way to stop a hung solve
                proc = None  # type: ignore[assignment]
                raise _late(name, budget, deadline)
            reply = proc.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            if proc is not None:
                proc.kill()
            proc = None  # type: ignore[assignment]
            raise SolverFailed(f"solver {name!r} crashed its solver process "
                               f"({type(exc).__name__})") from exc
        finally:
            self._give_back(proc)
        if reply[0] == "error":
            raise SolverFailed(_describe(name, reply[1], reply[2]))
        return _checked(name, reply[1], float(reply[2]), float(reply[3]), in_process=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._lock.notify_all()
        for proc in idle:
            with contextlib.suppress(Exception):
                proc.conn.send(None)
            proc.kill()


Isolation = Literal["process", "thread"]


def make_runner(isolation: Isolation, processes: int | None = None) -> SolveRunner:
    if isolation == "thread":
        return ThreadSolveRunner()
    return ProcessSolveRunner(processes)
