"""One tick of a city: state source → solver → validation → fenced commit.

Each step returns what it computes. :meth:`TickPipeline.begin` gives the tick's
context, or ``None`` when the city is not ours to tick; :meth:`TickPipeline.prepare`
gives the :class:`Commit` the tick comes to, or already the ticker's answer (``None``:
nothing to decide; :data:`ALONE`: tick this city again at once, on its own);
:meth:`TickPipeline.commit` sends prepared ticks in one round trip and gives each
tick's answer, in order. A failed step raises, and :class:`FailurePolicy` turns the
error into that answer.

Quick cities due together are ticked as a group (:meth:`TickPipeline.tick_group`):
one after another on one tick thread, their commits in one transaction. Every city of a
group still fails, backs off and is fenced on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from coordinator.errors import CitySettingsError, PluginError, SolverFailed
from coordinator.plugins import PluginLoader
from coordinator.recipes.campaigns import Campaigns
from coordinator.recipes.registry import CityRegistry
from coordinator.recipes.store import Commit, DecisionStore
from coordinator.settings import CityConfig
from coordinator.sinks.archive import StateArchive
from coordinator.sources.freshness import check_fresh
from coordinator.worker.failures import FailurePolicy
from coordinator.worker.gate import GATED_MAX_PAIRS, ComputeGate
from coordinator.worker.health import HealthBook, Tick
from coordinator.worker.load import LoadMeter
from coordinator.worker.messages import decision, state_ref, timestamp, validated
from coordinator.worker.metrics import Metrics
from coordinator.worker.pace import Pacer
from coordinator.worker.runner import SolveResult, SolveRunner
from coordinator.worker.ticker import Retry, TickResult
from protos import dispatch_pb2 as pb
from solvers.contract import CityState, Solver
from solvers.cost import solution_cost
from solvers.validate import InvalidSolution, check_solution

__all__ = ["ALONE", "TickPipeline"]

#: :meth:`TickPipeline.prepare` in a group, for a city whose tick turned out not to be
#: quick: tick it again at once, on its own, so that it holds up no other city.
ALONE = Retry(0.0)


class TickPipeline:
    """Ticks the cities this worker leads: the ``Ticker``'s tick functions."""

    #: A commit is abandoned when its city's next tick is due (that tick decides afresh),
    #: but is always given at least this long: a healthy etcd answers in milliseconds.
    MIN_COMMIT_TIMEOUT = 0.25

    def __init__(self, *, worker_id: str, budget_fraction: float, hang_factor: float,
                 registry: CityRegistry, campaigns: Campaigns, plugins: PluginLoader,
                 runner: SolveRunner, gate: ComputeGate, store: DecisionStore,
                 metrics: Metrics, healths: HealthBook, failures: FailurePolicy,
                 stopping: threading.Event, archive: StateArchive | None = None,
                 load: LoadMeter | None = None) -> None:
        self._worker_id = worker_id
        self._budget_fraction = budget_fraction
        self._hang_factor = hang_factor
        self._registry = registry
        self._campaigns = campaigns
        self._plugins = plugins
        self._runner = runner
        self._gate = gate
        self._store = store
        self._metrics = metrics
        self._healths = healths
        self._failures = failures
        self._stopping = stopping
        self._archive = archive
        self._load = load or LoadMeter()
        #: city -> CPU its solve in flight used off the tick thread, and whether in this
        #: process (a solve thread) rather than a solver process (``_book``)
        self._solve_cpu: dict[str, tuple[float, bool]] = {}
        self._pacer = Pacer()
        self._shadow_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shadow")

    def close(self) -> None:
        """Abandon shadow solves not yet started (the worker is stopping)."""
        self._shadow_pool.shutdown(wait=False, cancel_futures=True)

    # -- the ticker's tick functions ----------------------------------------------------

    def tick(self, city: str, due: float) -> TickResult:
        """Tick one city on its own."""
        cpu = time.thread_time()
        try:
            return self._tick(city, due)
        finally:
            self._book(city, time.thread_time() - cpu)

    def _tick(self, city: str, due: float) -> TickResult:
        tick = self.begin(city, due)
        if tick is None:
            return None
        try:
            prepared = self.prepare(tick)
        except Exception as exc:
            return self._failures.after(tick, exc)
        if not isinstance(prepared, Commit):
            return prepared
        return self.commit([tick], [prepared])[0]

    def tick_group(self, items: list[tuple[str, float]]) -> list[TickResult]:
        """Tick cities due together (only cities whose last tick was quick: the ticker
        asks :meth:`HealthBook.quick`), one after another on this thread, and commit
        their decisions in one round trip.

        The group holds the compute gate across all its cities' work, not city by city,
        so that a group's commit overlaps the next group's compute (docs/worker.md).
        What may wait on etcd (a failing city's status write) comes after the gate.
        """
        results: list[TickResult] = [None] * len(items)
        at: list[int] = []
        ticks: list[Tick] = []
        commits: list[Commit] = []
        failed: list[tuple[int, Tick, Exception]] = []
        cpu = dict.fromkeys((city for city, _ in items), 0.0)
        with self._gate.held(patient=True):
            for i, (city, due) in enumerate(items):
                cpu[city] -= time.thread_time()
                tick = self.begin(city, due)
                if tick is None:
                    continue
                try:
                    prepared = self.prepare(tick, grouped=True)
                except Exception as exc:
                    failed.append((i, tick, exc))
                    continue
                finally:
                    cpu[city] += time.thread_time()
                if isinstance(prepared, Commit):
                    at.append(i)
                    ticks.append(tick)
                    commits.append(prepared)
                else:
                    results[i] = prepared
        for i, tick, error in failed:
            results[i] = self._failures.after(tick, error)
        if commits:
            started = time.thread_time()
            for i, result in zip(at, self.commit(ticks, commits), strict=True):
                results[i] = result
            for tick in ticks:  # the shared commit, shared evenly
                cpu[tick.city] += (time.thread_time() - started) / len(ticks)
        for (city, _), result in zip(items, results, strict=True):
            if result is not ALONE:  # its tick is still to come, on its own
                self._book(city, max(cpu[city], 0.0))
        return results

    # -- the steps ----------------------------------------------------------------------

    def begin(self, city: str, due: float) -> Tick | None:
        """A tick's context, or ``None`` if the city is no longer ours to tick."""
        leader = self._campaigns.leader(city)
        if leader is None or self._stopping.is_set():
            return None
        tick = Tick(city, leader, self._healths.of(city), due, time.monotonic())
        self._metrics.tick(city, tick.started - due)
        return tick

    def prepare(self, tick: Tick, *, grouped: bool = False) -> Commit | TickResult:
        """Everything of a tick before its commit: the fenced write it comes to, or
        ``None`` when the city is not to be decided (gone or disabled). In a group
        (``grouped``, the group holding the gate), a city whose tick turns out not to be
        quick any more gives :data:`ALONE` before it solves."""
        city, leader, health, due, _ = tick
        entry = self._registry.get(city)
        if entry is None:
            return None
        if isinstance(entry, CitySettingsError):
            raise entry
        if not entry.enabled:
            return None
        source = self._plugins.source(entry.state_source)
        solver = self._plugins.solver(entry.solver)
        gate = self._gate
        with gate.held(source.cpu_bound and not grouped):
            state, ref = source.load_with_ref(entry, time.time())
        check_fresh(entry, state, time.time())
        # A solve sent to a process or a solve thread is waited for outside the gate; an
        # inline one is part of the tick's compute.
        inline = self._runner.runs_inline(solver, state)
        # Quick: nothing in this tick can block or take long, so the next may run in a
        # group with other cities' and hold none of them up.
        quick = inline and source.cpu_bound and not entry.shadow_solvers \
            and not entry.archive_state and not entry.steady_pace
        health.found_quick(quick)
        if grouped and not quick:
            return ALONE
        budget = entry.period * self._budget_fraction
        shadows = [self._shadow_pool.submit(self._shadow, name, state, entry.params, budget)
                   for name in entry.shadow_solvers if name != entry.solver]
        result = None if inline else self._solve(entry, solver, state, budget)
        if result is not None:
            self._solve_cpu[city] = (result.cpu, result.in_process)
        small = state.n_orders * state.n_couriers <= GATED_MAX_PAIRS
        with gate.held((inline or small) and not grouped):
            if result is None:
                result = self._solve(entry, solver, state, budget)
            validated(entry.solver, state, result.solution)
            message = decision(city, leader, self._worker_id, entry.solver, state, result,
                               health.next_tick(),
                               state_ref(entry.state_source, ref, budget))
        if entry.archive_state:  # stored before the commit: see coordinator/sinks/archive.py
            message.state_ref.archive_id = self._archived(city, state, due + entry.period)
        message.shadows.extend(future.result() for future in shadows)
        if entry.steady_pace:  # a decision's time is when it leaves
            self._hold(tick, budget)
            message.decided_at.CopyFrom(timestamp(time.time()))
        status = health.ok_status(city, self._worker_id, leader.token)
        timeout = max(due + entry.period - time.monotonic(), self.MIN_COMMIT_TIMEOUT)
        return Commit(city, leader, message, status, timeout)

    def commit(self, ticks: list[Tick], commits: list[Commit]) -> list[TickResult]:
        """Commit prepared ticks in one round trip; what each leaves behind, in order."""
        sent = time.monotonic()
        outcomes: list[int | Exception]
        try:
            outcomes = self._store.commit_many(commits)
        except Exception as exc:
            outcomes = [exc] * len(commits)
        return [self._failures.after(tick, outcome) if isinstance(outcome, Exception)
                else self._decided(tick, sent)
                for tick, outcome in zip(ticks, outcomes, strict=True)]

    def _decided(self, tick: Tick, sent: float) -> TickResult:
        """Book a decision etcd accepted (``sent``: when its commit left); the city's
        next tick is the next on its grid."""
        now = time.time()
        failed = tick.health.failures
        since_previous = tick.health.decided(now, tick.leader.token)
        self._metrics.committed(tick.city, time.monotonic() - sent, since_previous)
        if failed:
            tick.clog.info("%s recovered after %d failed ticks", tick.city, failed)
        return None

    def _hold(self, tick: Tick, limit: float) -> None:
        """Wait (outside the compute gate) until the steady release time of ``tick``'s
        decision, at most ``limit`` seconds after it was due (``Pacer``)."""
        now = time.monotonic()
        release = self._pacer.release_at(tick.city, tick.due, now, limit)
        if release > now:
            self._stopping.wait(release - now)

    def _archived(self, city: str, state: CityState, next_due: float) -> str:
        """Archive the state of a city with ``archiveState`` on; its archive id. Waiting
        for the archive ends when the city's next tick is due, as a commit's does."""
        if self._archive is None:
            raise CitySettingsError(f"city {city} archives its state (archiveState) but this "
                                    "worker has no --archive-url (DISPATCH_ARCHIVE_URL)")
        wait = max(next_due - time.monotonic(), self.MIN_COMMIT_TIMEOUT)
        return self._archive.keep(city, state, wait=wait)

    def _book(self, city: str, cpu: float) -> None:
        """Add a finished tick's CPU, here and elsewhere, to the city's measured cost."""
        elsewhere, in_process = self._solve_cpu.pop(city, (0.0, True))
        entry = self._registry.get(city)
        if isinstance(entry, CityConfig) and self._campaigns.leader(city) is not None:
            self._load.ticked(city, cpu + elsewhere, entry.period,
                              here=cpu + elsewhere if in_process else cpu)

    def _solve(self, entry: CityConfig, solver: Solver, state: CityState,
               budget: float) -> SolveResult:
        result = self._runner.solve(entry.solver, solver, state, entry.params,
                                    budget=budget, deadline=budget * self._hang_factor)
        self._metrics.solved(entry.solver, result.seconds)
        return result

    def _shadow(self, name: str, state: CityState, params: Mapping[str, Any],
                budget: float) -> pb.ShadowResult:
        """Run a shadow solver on the tick's state; any failure is recorded, not raised.

        A shadow gets the active solver's budget as its hard deadline, so it can never
        delay the decision by more than that.
        """
        try:
            solver = self._plugins.solver(name)
            result = self._runner.solve(name, solver, state, params, budget=budget,
                                        deadline=budget)
            check_solution(state, result.solution)
        except (PluginError, SolverFailed, InvalidSolution) as exc:
            return pb.ShadowResult(solver=name, error=str(exc))
        assigned = int(result.solution.orders.shape[0])
        return pb.ShadowResult(
            solver=name, cost=float(solution_cost(state, result.solution)),
            solve_seconds=result.seconds, assigned=assigned,
            unassigned=state.n_orders - assigned,
        )
