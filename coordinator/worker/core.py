"""The worker: session, membership, campaigns, ticks — composed.

Threads, each with one job:

- the session's keep-alive thread (``coordinator.recipes.session``);
- two watch threads, cities and elections (``registry``, ``campaigns``);
- the control loop (``Worker.run``): keeps a live session, stands for the cities this
  worker should hold, starts and stops ticking as leadership comes and goes;
- the ticker's scheduler and its pool of tick threads (``coordinator.worker.ticker``).

A tick's data flows one way: state source → solver → validation → fenced commit.
Quick cities due together are ticked as a group (``Worker._tick_group``): their ticks
run one after another on one tick thread, and their commits share one transaction. A
failing city is retried with exponential backoff and reported on its status; it never
stalls another city. Losing leadership (fenced out, key deleted, lease lost) stops the
city's ticks at once.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator import __version__
from coordinator.balancer import CityNeeds, Member, Plan, plan
from coordinator.errors import (
    CitySettingsError,
    ConfigError,
    DispatchError,
    EtcdError,
    FencedOut,
    LeaseLost,
    PluginError,
    SolverFailed,
    StateError,
)
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.logs import CityLog
from coordinator.plugins import PluginLoader
from coordinator.recipes.batcher import CommitBatcher
from coordinator.recipes.campaigns import Campaigns
from coordinator.recipes.election import LeaderKey
from coordinator.recipes.membership import Members, WorkerIdTaken, register
from coordinator.recipes.registry import CityRegistry
from coordinator.recipes.session import Session
from coordinator.recipes.store import Commit, DecisionStore
from coordinator.settings import CityConfig
from coordinator.sources import SourceContext
from coordinator.worker.admin import AdminServer
from coordinator.worker.gate import GATED_MAX_PAIRS, ComputeGate
from coordinator.worker.metrics import Metrics, error_kind
from coordinator.worker.runner import SolveResult, make_runner
from coordinator.worker.ticker import Retry, Ticker
from protos import dispatch_pb2 as pb
from solvers.contract import CityState, Solver
from solvers.cost import solution_cost
from solvers.validate import InvalidSolution, check_solution

__all__ = ["Worker", "WorkerConfig", "default_worker_id"]

log = logging.getLogger("coordinator.worker")


def default_worker_id() -> str:
    host = socket.gethostname().split(".")[0] or "worker"
    return f"{host}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str = field(default_factory=default_worker_id)
    namespace: str = "/dispatch"
    lease_ttl: int = 5
    labels: dict[str, str] = field(default_factory=dict)
    capacity: float = 1.0
    tick_threads: int = 8
    #: ticks due within this many seconds of each other run together (``Ticker``),
    #: each at most this late; 0 runs every tick at its exact due time
    tick_slack: float = 0.02
    admin_address: str = ""
    #: hot standby candidates each city keeps queued on other workers
    standbys: int = 1
    #: "process": solves run in a pool of solver processes (safe for solvers that hold
    #: the GIL or hang); "thread": in this process
    solve_isolation: str = "process"
    solve_processes: int | None = None
    #: share of a city's period a solve may use; past ``hang_factor`` × budget it is
    #: abandoned
    budget_fraction: float = 0.8
    hang_factor: float = 2.0
    #: serve Prometheus metrics / the gRPC health+admin service on these ports (0: any)
    metrics_port: int | None = None
    admin_port: int | None = None
    max_backoff: float = 30.0


@dataclass
class _Health:
    #: consecutive failed ticks, whatever failed them (the city's status, the logs)
    failures: int = 0
    #: of those, the latest run that could not reach etcd (the quick retry's doubling)
    unreachable: int = 0
    #: consecutive failures of the city's own making: its settings, state, plugins or
    #: solver (the backoff's doubling). Kept apart from ``unreachable``: a solver that
    #: failed once after six quick retries through an etcd outage was held back for
    #: 26 s, as if it had failed seven times.
    faults: int = 0
    last_error: str = ""
    error_since: float = 0.0
    reported_token: int = 0
    ticks: int = 0
    last_decision_at: float = 0.0
    #: the last tick could neither block nor take long (see ``Worker._prepare``)
    quick: bool = False


class _Alone:
    """``Worker._prepare`` in a group: this city must be ticked on its own."""


_ALONE = _Alone()


@dataclass(frozen=True)
class _Tick:
    """One tick of one city under way."""

    city: str
    leader: LeaderKey
    health: _Health
    started: float

    @property
    def clog(self) -> CityLog:
        """The city's logger (made when needed: most ticks log nothing)."""
        return CityLog(log, self.city, self.leader.token)


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class Worker:
    #: A commit is abandoned when its city's next tick is due (that tick decides afresh),
    #: but is always given at least this long: a healthy etcd answers in milliseconds.
    MIN_COMMIT_TIMEOUT = 0.25
    #: A tick that could not reach etcd is tried again this soon, doubling up to
    #: ``ETCD_RETRY_MAX``, when that comes before the city's next tick (see ``_retry``).
    ETCD_RETRY = 0.2
    ETCD_RETRY_MAX = 2.0

    def __init__(self, client: EtcdClient, config: WorkerConfig) -> None:
        self.client = client
        self.config = config
        self.keys = Keys(config.namespace)
        self.batcher = CommitBatcher(client)
        self.store = DecisionStore(client, self.keys, self.batcher)
        self.plugins = PluginLoader(SourceContext(client, self.keys))
        self.gate = ComputeGate()
        self.runner = make_runner(
            "thread" if config.solve_isolation == "thread" else "process",
            config.solve_processes,
        )
        self.session: Session | None = None
        self._registered = False
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._health: dict[str, _Health] = {}
        self._losses: list[float] = []
        self._sit_out_until = 0.0
        self._health_lock = threading.Lock()
        self.registry = CityRegistry(client, self.keys, on_change=self._changed)
        self.campaigns = Campaigns(client, self.keys, config.worker_id,
                                   on_change=self._changed, on_lost=self._lost,
                                   on_elected=self._elected)
        self.members = Members(client, self.keys, on_change=self._dirty.set)
        self.plan = Plan({}, [])
        self._plan_inputs: tuple[object, ...] | None = None
        self._plan_memo = self.plan
        self.metrics = Metrics()
        self.metrics.identify(config.worker_id, __version__)
        self.metrics.sample_on_scrape(self._sample_metrics)
        self.admin: AdminServer | None = None
        self._servers_started = False
        self.ticker = Ticker(self._tick, max_workers=config.tick_threads,
                             slack=config.tick_slack, on_skip=self.metrics.skipped,
                             tick_group=self._tick_group, groupable=self._groupable)
        self._previous_decision: dict[str, float] = {}
        self._shadow_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shadow")
        self.fenced_out = 0

    # -- lifecycle ----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Warm shutdown: finish ticks in flight, resign every city, revoke the lease."""
        self._stopping.set()
        self._dirty.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def run(self) -> None:
        log.info("worker %s starting (namespace %s, lease TTL %ds, etcd %s)",
                 self.config.worker_id, self.keys.namespace, self.config.lease_ttl,
                 ",".join(self.client.config.endpoints))
        self.start_servers()
        self.registry.start()
        self.campaigns.start()
        self.members.start()
        self.plugins.preload()
        backoff = 0.2
        try:
            while not self._stopping.is_set():
                wait = 0.5
                try:
                    self._step()
                    backoff = 0.2
                except (EtcdError, LeaseLost, WorkerIdTaken) as exc:
                    log.warning("%s; retrying in %.1fs", exc, backoff)
                    wait = backoff * (0.5 + random.random())
                    backoff = min(backoff * 2, 5.0)
                self._dirty.wait(wait)
                self._dirty.clear()
        finally:
            self._shutdown()

    def start_servers(self) -> None:
        """Metrics and admin/health endpoints, before anything else, so that probes
        answer (NOT_SERVING) from the first moment. Idempotent; a port that is taken is
        a ``ConfigError``."""
        if self._servers_started:
            return
        self._servers_started = True
        try:
            if self.config.metrics_port is not None:
                port = self.metrics.serve(self.config.metrics_port)
                log.info("serving Prometheus metrics on port %d", port)
            if self.config.admin_port is not None:
                self.admin = AdminServer(self, self.config.admin_port).start()
                log.info("serving gRPC health and admin on %s", self.admin.address)
        except OSError as exc:
            raise ConfigError(f"cannot listen for metrics or admin: {exc.strerror or exc}") \
                from exc

    def _sample_metrics(self) -> None:
        leaders = self.campaigns.leaders()
        self.metrics.ownership(len(leaders), len(self.campaigns.entered() - set(leaders)))
        session = self.session
        self.metrics.lease_left(session.time_left() if session is not None else 0.0)

    def _step(self) -> None:
        if not (self.registry.wait_synced(0) and self.campaigns.wait_synced(0)
                and self.members.synced() and self.runner.ready()):
            return  # stand for no city before we can see the namespace and solve
        session = self.session
        if session is None or session.lost.is_set():
            self._new_session()
        if not self._registered:
            self._register()
        self._reconcile()

    #: a worker that lost its lease this many times within ``FLAP_WINDOW`` seconds sits
    #: out before standing again, instead of bouncing cities around
    FLAP_LIMIT = 3
    FLAP_WINDOW = 120.0

    def _new_session(self) -> None:
        old, now = self.session, time.monotonic()
        if old is not None:
            self.session = None
            self._drop_all(f"lease {old.lease_hex} lost: {old.lost_reason}")
            self._losses = [t for t in self._losses if now - t < self.FLAP_WINDOW] + [now]
            others = [m for m in self.members.members()
                      if m.worker_id != self.config.worker_id and not m.drained]
            # Sitting out only helps when someone else can take the cities meanwhile.
            if len(self._losses) >= self.FLAP_LIMIT and others:
                pause = min(60.0, 5.0 * 2 ** (len(self._losses) - self.FLAP_LIMIT))
                self._sit_out_until = now + pause
                log.warning("lease lost %d times in %.0fs: standing for no city for %.0fs "
                            "so that ownership does not bounce around", len(self._losses),
                            self.FLAP_WINDOW, pause)
        if now < self._sit_out_until:
            raise LeaseLost(f"sitting out for {self._sit_out_until - now:.0f}s more after "
                            "repeated lease loss")
        self._registered = False
        self.session = Session(self.client, self.config.lease_ttl, on_lost=self._session_lost,
                               on_keepalive_failure=lambda _exc: self.metrics.keepalive_failed())
        self.campaigns.bind(self.session)
        log.info("new session with lease %s (TTL %ds)", self.session.lease_hex,
                 self.config.lease_ttl)

    def _register(self) -> None:
        assert self.session is not None
        info = pb.WorkerInfo(
            worker_id=self.config.worker_id, host=socket.gethostname(), pid=os.getpid(),
            version=__version__, capacity=self.config.capacity, labels=self.config.labels,
            admin_address=self.admin.address if self.admin else self.config.admin_address,
            started_at=_timestamp(time.time()),
        )
        register(self.client, self.keys, self.session, info)
        self._registered = True

    def _session_lost(self, session: Session, reason: str) -> None:
        self.metrics.lease_lost()
        self._drop_all(f"lease {session.lease_hex} lost: {reason}")
        self._dirty.set()

    def _drop_all(self, reason: str) -> None:
        for city in list(self.campaigns.leaders()):
            self.campaigns.drop(city, reason)

    def _shutdown(self) -> None:
        log.info("stopping: finishing ticks in flight and handing cities over")
        self._hand_over(sorted(self.campaigns.leaders()))
        self.ticker.stop(wait=False)
        self._shadow_pool.shutdown(wait=False, cancel_futures=True)
        self.batcher.close()
        self.runner.close()
        if self.session is not None:
            self.session.close()
        self.campaigns.stop()
        self.members.stop()
        self.registry.stop()
        if self.admin is not None:
            self.admin.stop()
        self.metrics.close()
        log.info("worker %s stopped", self.config.worker_id)
        self._stopped.set()

    # -- ownership ----------------------------------------------------------------------

    def _changed(self, _cities: set[str]) -> None:
        self._dirty.set()

    def _elected(self, city: str, _leader: LeaderKey) -> None:
        """Start ticking a city the moment we win it (see ``Campaigns._claim_first``)."""
        if self._stopping.is_set() or city in self.ticker.cities():
            return
        self._start_ticking(city)

    def _lost(self, city: str, leader: LeaderKey, reason: str) -> None:
        """Stop acting for ``city`` at once."""
        self.ticker.remove(city)
        CityLog(log, city, leader.token).warning("stepping down from %s: %s", city, reason)
        self._dirty.set()

    def _make_plan(self) -> Plan:
        entries = self.registry.entries()
        needs = {
            city: CityNeeds(entry.require_labels, entry.prefer_labels)
            if isinstance(entry, CityConfig) else CityNeeds()
            for city, entry in entries.items()
            if not isinstance(entry, CityConfig) or entry.enabled
        }
        members = self.members.members()
        me = self.config.worker_id
        if self._registered and not any(m.worker_id == me for m in members):
            # our own membership key may not have come back through the watch yet
            members.append(Member(me, self.config.capacity, self.config.labels,
                                  me in self.members.drained()))
        members.sort(key=lambda m: m.worker_id)
        # The control loop runs every half second; with a thousand cities the rendezvous
        # ranking is most of its cost, and its inputs rarely change.
        inputs = (needs, members, self.config.standbys)
        if inputs != self._plan_inputs:
            self._plan_inputs = inputs
            self._plan_memo = plan(needs, members, standbys=self.config.standbys)
        return self._plan_memo

    def _queued(self, city: str, worker_id: str) -> bool:
        return any(kv.value.decode(errors="replace") == worker_id
                   for kv in self.campaigns.queue(city)[1:])

    def _reconcile(self) -> None:
        self.plan = self._make_plan()
        me = self.config.worker_id
        enabled = self.registry.enabled()
        wanted = self.plan.wanted_by(me)
        leaders = self.campaigns.leaders()
        handover = []
        for city in leaders:
            planned = self.plan.owner(city)
            if city not in enabled:
                continue  # disabled or removed: leave below
            if planned != me and planned is not None and self._queued(city, planned):
                # Graceful handover: the planned owner is queued, so resigning after the
                # tick in flight hands the city over with no gap.
                log.info("handing %s over to %s", city, planned)
                handover.append(city)
                continue
            wanted.add(city)  # keep leading until someone can take over
        entered = self.campaigns.entered()
        self._hand_over(handover)
        self._leave(sorted(entered - wanted - set(handover)))
        for city in sorted(wanted - entered):
            self.campaigns.enter(city)
        for city in sorted(wanted & entered):
            self.campaigns.evaluate(city)
        # ticking first: a city won in between (``_elected``) must not look stale
        ticking = self.ticker.cities()
        leaders = self.campaigns.leaders()
        for city in ticking - set(leaders):
            self.ticker.remove(city)
        for city in sorted(set(leaders) - self.ticker.cities()):
            self._start_ticking(city)
        for city in set(leaders) & ticking:
            self.ticker.set_period(city, self._period(city))

    def _leave(self, cities: list[str]) -> None:
        """Stop ticking, let ticks in flight finish, then leave the election."""
        idles = [(city, self.ticker.remove(city)) for city in cities]
        for city, idle in idles:
            if idle is not None:
                idle.wait(self._period(city) + 1.0)
            self.campaigns.leave(city)

    def _hand_over(self, cities: list[str]) -> None:
        """Resign ``cities`` so that whoever is queued next keeps their rhythm.

        A city whose next tick is due soon ticks once more first (``Ticker.retire``):
        its successor ticks one period after our last decision, and needs that time to
        see the resignation and claim the city. Each city is resigned as soon as it is
        done here, the ones not due soon at once.
        """
        retiring: list[tuple[float, str, threading.Event]] = []
        for city in cities:
            period = self._period(city)
            retired = self.ticker.retire(city, within=min(period / 2, max(0.2, period / 4)))
            if retired is not None:
                done, due = retired
                retiring.append((due, city, done))
            else:
                self._resign(city)
        for _due, city, done in sorted(retiring, key=lambda r: r[0]):
            if not done.wait(self._period(city) + 1.0):
                log.warning("tick of %s still running at handover", city)
            self._resign(city)

    def _resign(self, city: str) -> None:
        try:
            self.campaigns.leave(city)
        except DispatchError as exc:
            log.warning("could not resign %s: %s", city, exc)

    def _start_ticking(self, city: str) -> None:
        """Keep the city's rhythm across a handover: tick one period after the last
        decision (at once when it is older, as after a crash). A city that never
        decided ticks at once, then at a phase of its own (from its name): cities
        created together must not tick in lockstep, a burst per period on every worker.
        """
        period = self._period(city)
        try:
            latest = self.store.latest(city)
        except (EtcdError, ValueError):
            latest = None
        if latest is None:
            phase = zlib.crc32(city.encode()) / 2**32 * period
            self.ticker.add(city, period, then_at_phase=phase)
        else:
            self.ticker.add(city, period, first_in=self._first_tick_in(city, latest[0]))

    def _first_tick_in(self, city: str, latest: pb.Decision) -> float:
        decided = latest.decided_at.ToNanoseconds() / 1e9
        self._previous_decision[city] = decided
        return float(max(0.0, min(decided + self._period(city) - time.time(),
                                  self._period(city))))

    def _period(self, city: str) -> float:
        entry = self.registry.get(city)
        return entry.period if isinstance(entry, CityConfig) else 2.0

    # -- ticks --------------------------------------------------------------------------

    def health(self, city: str) -> tuple[str, int, float]:
        """(last error, consecutive failures, time of our last decision) of a city."""
        with self._health_lock:
            h = self._health.get(city)
        return ("", 0, 0.0) if h is None else (h.last_error, h.failures, h.last_decision_at)

    def _health_of(self, city: str) -> _Health:
        with self._health_lock:
            return self._health.setdefault(city, _Health())

    def _tick(self, city: str, due: float) -> float | Retry | None:
        began = self._begin(city, due)
        if began is None:
            return None
        try:
            commit = self._prepare(began, due)
        except Exception as exc:
            return self._tick_failed(began, exc)
        results: list[float | Retry | None] = [None]
        if isinstance(commit, Commit):
            self._commit([(0, began, commit)], results)
        return results[0]

    def _tick_group(self, items: list[tuple[str, float]]) -> list[float | Retry | None]:
        """Tick cities due together (``Ticker``: only cities whose last tick was
        ``quick``), one after another on this thread, and commit their decisions in one
        round trip. Every city still fails, backs off and is fenced on its own.

        The group holds the compute gate across all its cities' work, not city by city:
        a group's commit overlaps the next group's compute, and two groups taking turns
        at the gate for every step of every city cost ~3.5 thread switches per tick.
        What may wait on etcd (a failing city's status write) comes after the gate.
        """
        results: list[float | Retry | None] = [None] * len(items)
        pending: list[tuple[int, _Tick, Commit]] = []
        failed: list[tuple[int, _Tick, Exception]] = []
        with self.gate.held(patient=True):
            for i, (city, due) in enumerate(items):
                began = self._begin(city, due)
                if began is None:
                    continue
                try:
                    commit = self._prepare(began, due, grouped=True)
                except Exception as exc:
                    failed.append((i, began, exc))
                    continue
                if commit is _ALONE:
                    results[i] = Retry(0.0)  # at once, on its own
                elif isinstance(commit, Commit):
                    pending.append((i, began, commit))
        for i, began, error in failed:
            results[i] = self._tick_failed(began, error)
        if pending:
            self._commit(pending, results)
        return results

    def _commit(self, pending: list[tuple[int, _Tick, Commit]],
                results: list[float | Retry | None]) -> None:
        """Commit prepared ticks in one round trip; book each city's outcome, and put
        what a failed one leaves behind at its index in ``results``."""
        sent = time.monotonic()
        outcomes: list[int | Exception]
        try:
            outcomes = self.store.commit_many([commit for _, _, commit in pending])
        except Exception as exc:
            outcomes = [exc] * len(pending)
        for (i, began, _), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, Exception):
                results[i] = self._tick_failed(began, outcome)
            else:
                self._committed(began, sent)

    def _groupable(self, city: str) -> bool:
        """Whether the city's ticks may run in a group (asked by the ticker, under its
        lock: a plain dict read, atomic under the GIL, without ``_health_lock``)."""
        health = self._health.get(city)
        return health is not None and health.quick

    def _begin(self, city: str, due: float) -> _Tick | None:
        """A tick's context, or ``None`` if the city is no longer ours to tick."""
        leader = self.campaigns.leader(city)
        if leader is None or self._stopping.is_set():
            return None
        began = _Tick(city, leader, self._health_of(city), time.monotonic())
        self.metrics.tick(city, began.started - due)
        return began

    def _tick_failed(self, began: _Tick, exc: Exception) -> float | Retry | None:
        """What a failed tick leaves behind: stepping down when fenced out, a quick
        retry when etcd could not be reached, a backoff (and a failing status) when the
        city's settings, its state, its plugins or its solver are at fault."""
        city, leader, health, clog = began.city, began.leader, began.health, began.clog
        if isinstance(exc, FencedOut):
            self.fenced_out += 1
            self.metrics.fenced(city)
            clog.warning("fenced out: %s; stepping down", exc)
            self.campaigns.drop(city, "fenced out by etcd")
            return None
        self.metrics.solver_error(city, error_kind(exc))
        if isinstance(exc, EtcdError):
            health.failures += 1
            health.unreachable += 1
            retry = self._retry(health, time.monotonic() - began.started)
            (clog.warning if health.failures == 1 else clog.debug)(
                "tick of %s could not reach etcd (%d in a row; trying again within %.1fs): "
                "%s", city, health.failures, retry.seconds, exc)
            return retry
        if isinstance(exc, CitySettingsError | PluginError | StateError | SolverFailed):
            return self._failed(city, leader, health, str(exc), clog)
        clog.error("tick of %s failed unexpectedly", city, exc_info=exc)
        return self._failed(city, leader, health,
                            f"internal error: {type(exc).__name__}: {exc}", clog)

    def _prepare(self, began: _Tick, due: float, *,
                 grouped: bool = False) -> Commit | _Alone | None:
        """Everything of a tick before its commit: the fenced write it comes to, or
        ``None`` when the city is not to be decided (gone or disabled). In a group
        (``grouped``), a city whose tick turns out not to be quick any more returns
        ``_ALONE`` before it solves: it is ticked again at once on its own, so that a
        city that grew past its solver's inline limit does not hold up its group."""
        city, leader, health = began.city, began.leader, began.health
        entry = self.registry.get(city)
        if entry is None:
            return None
        if isinstance(entry, CitySettingsError):
            raise entry
        if not entry.enabled:
            return None
        source = self.plugins.source(entry.state_source)
        solver = self.plugins.solver(entry.solver)
        with self.gate.held(source.cpu_bound and not grouped):  # a group holds it
            state = source.load(entry, time.time())
        # A solve sent to a process or a solve thread is waited for outside the gate; an
        # inline one is part of the tick's compute.
        inline = self.runner.runs_inline(solver, state)
        # Quick: nothing in this tick can block or take long, so the next may run in a
        # group with other cities' (``_tick_group``) and hold none of them up.
        health.quick = inline and source.cpu_bound and not entry.shadow_solvers
        if grouped and not health.quick:
            return _ALONE
        budget = entry.period * self.config.budget_fraction
        shadows = [self._shadow_pool.submit(self._shadow, name, state, entry.params, budget)
                   for name in entry.shadow_solvers if name != entry.solver]
        result = None if inline else self._solve(entry, solver, state, budget)
        small = state.n_orders * state.n_couriers <= GATED_MAX_PAIRS
        with self.gate.held((inline or small) and not grouped):
            if result is None:
                result = self._solve(entry, solver, state, budget)
            decision = self._compose(city, leader, entry, state, result, health)
        decision.shadows.extend(future.result() for future in shadows)
        status = None
        if health.failures or health.reported_token != leader.token:
            status = pb.CityStatus(city=city, worker_id=self.config.worker_id,
                                   token=leader.token, state="ok",
                                   updated_at=_timestamp(time.time()))
        timeout = max(due + entry.period - time.monotonic(), self.MIN_COMMIT_TIMEOUT)
        return Commit(city, leader, decision, status, timeout)

    def _committed(self, began: _Tick, sent: float) -> None:
        """Book a decision etcd accepted (``sent``: when its commit left)."""
        city, health = began.city, began.health
        now = time.time()
        previous = self._previous_decision.get(city)
        self.metrics.committed(city, time.monotonic() - sent,
                               None if previous is None else now - previous)
        self._previous_decision[city] = now
        if health.failures:
            began.clog.info("%s recovered after %d failed ticks", city, health.failures)
        health.failures, health.unreachable, health.faults = 0, 0, 0
        health.last_error = ""
        health.reported_token = began.leader.token
        health.last_decision_at = now

    def _solve(self, entry: CityConfig, solver: Solver, state: CityState,
               budget: float) -> SolveResult:
        result = self.runner.solve(entry.solver, solver, state, entry.params,
                                   budget=budget, deadline=budget * self.config.hang_factor)
        self.metrics.solved(entry.solver, result.seconds)
        return result

    def _compose(self, city: str, leader: LeaderKey, entry: CityConfig, state: CityState,
                 result: SolveResult, health: _Health) -> pb.Decision:
        """The decision message of a solved tick, once the solution proves valid."""
        try:
            check_solution(state, result.solution)
        except InvalidSolution as exc:
            raise SolverFailed(f"solver {entry.solver!r} returned an invalid solution: "
                               f"{exc}") from exc
        solution = result.solution
        # Python lists first: one numpy element at a time is ~10 times slower.
        orders: list[str] = state.order_ids[solution.orders].tolist()
        couriers: list[str] = state.courier_ids[solution.couriers].tolist()
        left = np.ones(state.n_orders, dtype=bool)
        left[solution.orders] = False
        health.ticks += 1
        return pb.Decision(
            city=city, token=leader.token, worker_id=self.config.worker_id,
            solver=entry.solver, lease_id=f"{leader.lease:x}",
            assignments=dict(zip(orders, couriers, strict=True)),
            unassigned=state.order_ids[left].tolist(),
            state_read_at=_timestamp(state.taken_at), solve_seconds=result.seconds,
            decided_at=_timestamp(time.time()), tick=health.ticks,
            details=[pb.Assignment(order_id=o, courier_id=c, pickup_eta_seconds=e)
                     for o, c, e in zip(orders, couriers, solution.pickup_eta.tolist(),
                                        strict=True)],
            cost=float(solution_cost(state, solution)),
        )

    def _shadow(self, name: str, state: CityState, params: Mapping[str, Any],
                budget: float) -> pb.ShadowResult:
        """Run a shadow solver on the tick's state; any failure is recorded, not raised.

        A shadow gets the active solver's budget as its hard deadline, so it can never
        delay the decision by more than that.
        """
        try:
            solver = self.plugins.solver(name)
            result = self.runner.solve(name, solver, state, params, budget=budget,
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

    def _retry(self, health: _Health, spent: float) -> Retry:
        """When to try a tick that could not reach etcd again: soon, not a period later.

        etcd being briefly unreachable (a raft election, a member restarting, a lost
        quorum, a connection being re-established) is not the city's fault: the city
        should decide the moment etcd is back. Waiting for the next period cost up to a
        period for every city after every leader election, and a city with a 30 s
        period would lose 30 s to a 2 s blip. So the tick is tried again after
        ``ETCD_RETRY`` seconds, doubling up to ``ETCD_RETRY_MAX``, never sooner than the
        failed tick took (a retry decides afresh, and must not cost more than the work
        it retries), and not at all when the city's next tick comes first (the ticker
        sees to that): an attempt that waited out its commit deadline is followed by
        the next tick. The doubling stops at 2 s: a backoff grown without bound during
        a 2 s election once held cities back for seconds after etcd was fine again.
        """
        delay = min(self.ETCD_RETRY * 2 ** min(health.unreachable - 1, 8),
                    self.ETCD_RETRY_MAX)
        return Retry(max(delay, spent) * (0.8 + 0.4 * random.random()))

    def _backoff(self, city: str, health: _Health) -> float:
        health.failures += 1
        health.faults += 1
        health.unreachable = 0
        base = min(self._period(city) * 2 ** min(health.faults - 1, 16),
                   self.config.max_backoff)
        return float(base * (0.75 + random.random() / 2))

    def _failed(self, city: str, leader: LeaderKey, health: _Health, error: str,
                clog: CityLog) -> float:
        first = health.failures == 0 or error != health.last_error
        if health.failures == 0:
            health.error_since = time.time()
        delay = self._backoff(city, health)
        health.last_error = error
        (clog.error if first else clog.info)(
            "tick of %s failed (%d in a row, retry in %.1fs): %s",
            city, health.failures, delay, error,
        )
        status = pb.CityStatus(
            city=city, worker_id=self.config.worker_id, token=leader.token, state="failing",
            last_error=error, error_since=_timestamp(health.error_since),
            consecutive_failures=health.failures, updated_at=_timestamp(time.time()),
            retry_in_seconds=round(delay, 3),
        )
        try:
            self.store.write_status(city, leader, status)
            health.reported_token = leader.token
        except FencedOut as exc:
            self.fenced_out += 1
            self.metrics.fenced(city)
            clog.warning("fenced out: %s; stepping down", exc)
            self.campaigns.drop(city, "fenced out by etcd")
        except EtcdError as exc:
            clog.warning("could not record the failure of %s: %s", city, exc)
        return delay
