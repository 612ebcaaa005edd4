"""Prometheus metrics of one worker, on a registry of its own.

Why a private ``CollectorRegistry`` and not prometheus_client's global one: several
workers may live in one process (the tests, the demo), and the global registry refuses
a second metric of the same name. Each :class:`Metrics` owns its registry and serves
exactly that on ``/metrics``.

Labels stay bounded: ``city`` (cities are configuration, a few hundred at most),
``solver`` (installed plugins) and ``kind`` (the fixed list in :data:`ERROR_KINDS`).
Nothing is ever labelled per order, courier, token or lease: each of those would
create a new time series per value and exhaust Prometheus.

The methods are small verbs the worker calls at the moment something happens
(``tick``, ``committed``, ``fenced``, ...). Gauges that describe *state* rather than
events (cities owned, lease time left) can either be pushed (``ownership``,
``lease_left``) or pulled at scrape time through :meth:`Metrics.sample_on_scrape`, so
they are never older than the scrape that reads them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from coordinator.errors import (
    CitySettingsError,
    EtcdError,
    EtcdNoSpace,
    PluginError,
    SolverFailed,
    StaleState,
    StateError,
    StateUnavailable,
)

__all__ = ["ERROR_KINDS", "Metrics", "error_kind"]

log = logging.getLogger(__name__)

#: Every value the ``kind`` label of ``dispatch_solver_errors_total`` may take.
ERROR_KINDS = ("settings", "plugin", "state", "state_stale", "state_unavailable", "solver",
               "etcd", "etcd_nospace", "internal")


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label for a failed tick's exception (one of :data:`ERROR_KINDS`).

    Mapping the exception type to a short fixed word keeps the label bounded: the
    error *message* belongs in the log and in the city's status, never in a label.
    """
    if isinstance(exc, CitySettingsError):
        return "settings"
    if isinstance(exc, PluginError):
        return "plugin"
    if isinstance(exc, StaleState):
        return "state_stale"
    if isinstance(exc, StateUnavailable):
        return "state_unavailable"
    if isinstance(exc, StateError):
        return "state"
    if isinstance(exc, SolverFailed):
        return "solver"
    if isinstance(exc, EtcdNoSpace):
        return "etcd_nospace"
    if isinstance(exc, EtcdError):
        return "etcd"
    return "internal"


_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SOLVE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_AGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class _ScrapeHook(Collector):
    """Runs callbacks at the start of every collection and yields no metric itself.

    Registered first, so the registry (which collects in registration order) runs it
    before it reads the gauges the callbacks set.
    """

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def collect(self) -> Iterable[Metric]:
        for callback in list(self.callbacks):
            try:
                callback()
            except Exception:  # a broken sampler must not break /metrics
                log.exception("metrics sampler failed")
        return []


class Metrics:
    """The ``dispatch_*`` metrics of one worker.

    Cheap to create (a registry and a dozen metric objects), so a worker always has
    one; only :meth:`serve` opens a port.
    """

    def __init__(self, prefix: str = "dispatch") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._hook = _ScrapeHook()
        self.registry.register(self._hook)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        #: per-city ``(ticks, commits)`` and per-solver ``solve_seconds`` series
        self._cities: dict[str, tuple[Any, Any]] = {}
        self._solvers: dict[str, Any] = {}
        self._costed: set[str] = set()
        self._moves = 0
        r = self.registry
        ns = prefix  # prometheus_client calls the name prefix a "namespace"

        # -- state -----------------------------------------------------------------------
        self.cities_owned = Gauge(
            "cities_owned", "Cities this worker currently leads.", namespace=ns, registry=r)
        self.candidates_queued = Gauge(
            "candidates_queued",
            "Cities where this worker is a queued (hot standby) candidate, not the leader.",
            namespace=ns, registry=r)
        self.lease_ttl_remaining = Gauge(
            "lease_ttl_remaining_seconds",
            "Seconds left on this worker's lease by its local (early-erring) estimate; "
            "0 when it has no live lease.", namespace=ns, registry=r)
        self.etcd_nospace = Gauge(
            "etcd_nospace", "1 while etcd refuses this worker's decisions for its NOSPACE "
            "alarm (database over --quota-backend-bytes), 0 once one is accepted again.",
            namespace=ns, registry=r)

        self.city_cost = Gauge(
            "city_cost", "Measured cost of each city this worker ticked recently: CPU "
            "seconds per second of its whole tick (state load, solve wherever it ran, "
            "validation, commit), smoothed.", ["city"], namespace=ns, registry=r)
        self.worker_load = Gauge(
            "worker_load", "The sum of dispatch_city_cost over the cities this worker "
            "leads: CPU seconds per second.", namespace=ns, registry=r)
        self.moves_held_back = Gauge(
            "moves_held_back", "Planned moves of cities away from this worker waiting for "
            "the churn budget or a city's cool-down.", namespace=ns, registry=r)

        self.worker_info = Gauge(
            "worker_info", "Always 1; labels name the worker id and version behind this "
            "scrape target (join on instance to put worker ids on other series).",
            ["worker_id", "version"], namespace=ns, registry=r)

        # -- events ----------------------------------------------------------------------
        self.ticks = Counter(
            "ticks", "Ticks started, per city.", ["city"], namespace=ns, registry=r)
        self.commits = Counter(
            "commits", "Decisions committed (fenced write accepted), per city.", ["city"],
            namespace=ns, registry=r)
        self.fenced_out = Counter(
            "fenced_out", "Fenced writes etcd rejected: this worker had lost the city.",
            ["city"], namespace=ns, registry=r)
        self.solver_errors = Counter(
            "solver_errors", "Failed ticks per city and kind (settings, plugin, state, "
            "state_stale, state_unavailable, solver, etcd, etcd_nospace, internal).",
            ["city", "kind"], namespace=ns, registry=r)
        self.skipped_ticks = Counter(
            "skipped_ticks", "Ticks skipped because the previous tick of the city was "
            "still running (overrun).", ["city"], namespace=ns, registry=r)
        self.keepalive_failures = Counter(
            "lease_keepalive_failures", "Lease keep-alive requests that failed.",
            namespace=ns, registry=r)
        self.moves = Counter(
            "moves", "Planned moves (graceful handovers) this worker started under the "
            "churn budget.", namespace=ns, registry=r)
        self.leases_lost = Counter(
            "lease_lost", "Times this worker's lease was lost (every city dropped at once).",
            namespace=ns, registry=r)

        # -- latencies -------------------------------------------------------------------
        self.tick_lateness = Histogram(
            "tick_lateness_seconds", "How late a tick started after its due time.",
            namespace=ns, registry=r, buckets=_LATENESS_BUCKETS)
        self.solve_seconds = Histogram(
            "solve_seconds", "Solver run time, per solver.", ["solver"],
            namespace=ns, registry=r, buckets=_SOLVE_BUCKETS)
        self.commit_latency = Histogram(
            "commit_latency_seconds", "Duration of the fenced commit transaction.",
            namespace=ns, registry=r, buckets=_COMMIT_BUCKETS)
        self.decision_age = Histogram(
            "decision_age_seconds", "Age of a city's previous decision when a new one is "
            "committed: about one period when healthy, more after a failover or failures.",
            namespace=ns, registry=r, buckets=_AGE_BUCKETS)

    # -- the verbs the worker calls ------------------------------------------------------

    def identify(self, worker_id: str, version: str) -> None:
        """Set ``dispatch_worker_info{worker_id, version} 1`` (call once at start)."""
        self.worker_info.clear()
        self.worker_info.labels(worker_id, version).set(1)

    def tick(self, city: str, lateness: float) -> None:
        """A tick of ``city`` starts, ``lateness`` seconds after it was due."""
        self._series(city)[0].inc()
        self.tick_lateness.observe(max(0.0, lateness))

    def solved(self, solver: str, seconds: float) -> None:
        child = self._solvers.get(solver)
        if child is None:
            child = self._solvers[solver] = self.solve_seconds.labels(solver)
        child.observe(max(0.0, seconds))

    def committed(self, city: str, latency: float, previous_age: float | None) -> None:
        """A decision of ``city`` was accepted. ``previous_age``: seconds between the
        previous decision of the city (by anyone) and this one; ``None`` for the first."""
        self._series(city)[1].inc()
        self.etcd_nospace.set(0)
        self.commit_latency.observe(max(0.0, latency))
        if previous_age is not None:
            self.decision_age.observe(max(0.0, previous_age))

    def _series(self, city: str) -> tuple[Any, Any]:
        """The city's ``ticks`` and ``commits`` series, looked up once: ``labels()``
        validates and locks on every call, and these two are counted every tick."""
        series = self._cities.get(city)
        if series is None:
            series = self._cities[city] = (self.ticks.labels(city), self.commits.labels(city))
        return series

    def fenced(self, city: str) -> None:
        self.fenced_out.labels(city).inc()

    def solver_error(self, city: str, kind: str) -> None:
        """A tick of ``city`` failed; ``kind`` is one of :data:`ERROR_KINDS`
        (see :func:`error_kind`). Unknown kinds are counted as ``internal``."""
        self.solver_errors.labels(city, kind if kind in ERROR_KINDS else "internal").inc()
        if kind == "etcd_nospace":
            self.etcd_nospace.set(1)

    def skipped(self, city: str) -> None:
        self.skipped_ticks.labels(city).inc()

    def keepalive_failed(self) -> None:
        self.keepalive_failures.inc()

    def lease_lost(self) -> None:
        self.leases_lost.inc()

    def ownership(self, owned: int, queued: int) -> None:
        self.cities_owned.set(owned)
        self.candidates_queued.set(queued)

    def load(self, costs: dict[str, float], led: set[str], held_back: int,
             moves: int) -> None:
        """Set the placement gauges: each city's measured cost (a city no longer
        measured here loses its series), this worker's load over the cities it leads,
        the moves held back, and the moves started so far (a running total)."""
        for labels in list(self._costed - set(costs)):
            with contextlib.suppress(KeyError):
                self.city_cost.remove(labels)
        self._costed = set(costs)
        for city, cost in costs.items():
            self.city_cost.labels(city).set(cost)
        self.worker_load.set(sum(cost for city, cost in costs.items() if city in led))
        self.moves_held_back.set(held_back)
        self.moves.inc(max(0, moves - self._moves))
        self._moves = max(moves, self._moves)

    def lease_left(self, seconds: float) -> None:
        self.lease_ttl_remaining.set(max(0.0, seconds))

    def forget(self, city: str) -> None:
        """Drop every series of a city that was removed from the namespace, so a
        deployment that renames cities does not accumulate dead series."""
        self._cities.pop(city, None)
        for counter in (self.ticks, self.commits, self.fenced_out, self.skipped_ticks):
            with contextlib.suppress(KeyError):
                counter.remove(city)
        for kind in ERROR_KINDS:
            with contextlib.suppress(KeyError):
                self.solver_errors.remove(city, kind)

    def sample_on_scrape(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` at the start of every scrape (and :meth:`render`), e.g.
        to set ``ownership`` and ``lease_left`` from the worker's live state."""
        self._hook.callbacks.append(callback)

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format, as ``/metrics`` serves it."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the bound
        port (pass 0 to let the system pick one)."""
        if self._server is not None:
            raise RuntimeError("metrics are already served")
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server, self._thread = server, thread
        bound: int = server.server_port
        log.info("serving metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def close(self) -> None:
        """Stop serving (the port is released)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
