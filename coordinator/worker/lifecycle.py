"""The worker: session, membership, campaigns and ticks, composed; its life from start
to warm shutdown.

Threads, each with one job:

- the session's keep-alive thread (``coordinator.recipes.session``);
- the watch threads: cities, elections, members and drain marks (``registry``,
  ``campaigns``, ``membership``);
- the control loop (:meth:`Worker.run`): keeps a live session and registration, and
  reconciles what this worker stands for, leads and ticks (``ownership``);
- the ticker's scheduler and its pool of tick threads (``ticker``), which run the tick
  pipeline (``pipeline``; a failed tick is handled by ``failures``).

Losing leadership (fenced out, key deleted, lease lost) stops the city's ticks at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from coordinator import __version__
from coordinator.backoff import Backoff
from coordinator.balancer import Plan
from coordinator.errors import ConfigError, EtcdError, LeaseLost, WorkerIdTaken
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.plugins import PluginLoader
from coordinator.recipes.batcher import CommitBatcher
from coordinator.recipes.campaigns import Campaigns
from coordinator.recipes.election import LeaderKey
from coordinator.recipes.loads import Loads, publish_load
from coordinator.recipes.membership import Members, register
from coordinator.recipes.registry import CityRegistry
from coordinator.recipes.session import Session, lease_alive
from coordinator.recipes.store import DecisionStore
from coordinator.sinks.archive import StateArchive
from coordinator.sources import SourceContext
from coordinator.sources.options import SourceOptions
from coordinator.worker.admin import AdminServer
from coordinator.worker.config import WorkerConfig
from coordinator.worker.failures import FailurePolicy
from coordinator.worker.gate import ComputeGate
from coordinator.worker.health import HealthBook
from coordinator.worker.load import LoadMeter, LoadReport
from coordinator.worker.messages import timestamp
from coordinator.worker.metrics import Metrics
from coordinator.worker.ownership import Ownership
from coordinator.worker.pipeline import TickPipeline
from coordinator.worker.runner import make_runner
from coordinator.worker.ticker import Ticker, TickResult
from protos import dispatch_pb2 as pb

__all__ = ["Worker"]

log = logging.getLogger("coordinator.worker")

#: the control loop's wait after a step that failed n times in a row (etcd down, the
#: lease lost, our worker id taken): 0.2 s doubling up to 5 s, jittered 0.5–1.5
CONTROL_RETRY = Backoff(0.2, 5.0, jitter=1.0)
#: how long a worker whose lease keeps being lost sits out: 5 s on the ``FLAP_LIMIT``-th
#: loss within the window, doubling up to a minute (``nominal``: not jittered)
SIT_OUT = Backoff(5.0, 60.0, jitter=0.0)


class Worker:
    #: a worker that lost its lease this many times within ``FLAP_WINDOW`` seconds sits
    #: out before standing again, instead of bouncing cities around
    FLAP_LIMIT = 3
    FLAP_WINDOW = 120.0

    def __init__(self, client: EtcdClient, config: WorkerConfig) -> None:
        self.client = client
        self.config = config
        self.keys = Keys(config.namespace)
        self.batcher = CommitBatcher(client)
        self.store = DecisionStore(client, self.keys, self.batcher)
        self.plugins = PluginLoader(SourceContext(client, self.keys, SourceOptions(
            postgres_url=config.state_postgres_url, http_url=config.state_http_url,
            budget_fraction=config.budget_fraction)))
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
        self._losses: list[float] = []
        self._sit_out_until = 0.0
        self.registry = CityRegistry(client, self.keys, on_change=self._changed)
        self.campaigns = Campaigns(client, self.keys, config.worker_id,
                                   on_change=self._changed, on_lost=self._lost,
                                   on_elected=self._elected)
        self.members = Members(client, self.keys, on_change=self._dirty.set)
        self.loads = Loads(client, self.keys, on_change=self._dirty.set)
        self.load_meter = LoadMeter()
        self._load_report = LoadReport(config.load_interval)
        self.metrics = Metrics()
        self.metrics.identify(config.worker_id, __version__)
        self.metrics.sample_on_scrape(self._sample_metrics)
        self.admin: AdminServer | None = None
        self._servers_started = False
        self.healths = HealthBook()
        self.archive = StateArchive(config.archive_url) if config.archive_url else None
        self.failures = FailurePolicy(
            worker_id=config.worker_id, max_backoff=config.max_backoff,
            registry=self.registry, campaigns=self.campaigns, store=self.store,
            metrics=self.metrics)
        self.pipeline = TickPipeline(
            worker_id=config.worker_id, budget_fraction=config.budget_fraction,
            hang_factor=config.hang_factor, registry=self.registry,
            campaigns=self.campaigns, plugins=self.plugins, runner=self.runner,
            gate=self.gate, store=self.store, metrics=self.metrics, healths=self.healths,
            failures=self.failures, stopping=self._stopping, archive=self.archive,
            load=self.load_meter)
        self.ticker = Ticker(self.pipeline.tick, max_workers=config.tick_threads,
                             slack=config.tick_slack, on_skip=self.metrics.skipped,
                             tick_group=self.pipeline.tick_group,
                             groupable=self.healths.quick)
        self.ownership = Ownership(
            config=config, registry=self.registry, campaigns=self.campaigns,
            members=self.members, ticker=self.ticker, store=self.store,
            healths=self.healths, stopping=self._stopping, dirty=self._dirty,
            loads=self.loads, meter=self.load_meter,
            lease_alive=lambda lease: lease_alive(client, lease))

    # -- what others read ---------------------------------------------------------------

    @property
    def plan(self) -> Plan:
        """The ownership plan last reconciled to."""
        return self.ownership.plan

    @property
    def fenced_out(self) -> int:
        """Fenced writes etcd rejected since the worker started, over every city."""
        return self.failures.fenced_out

    def health(self, city: str) -> tuple[str, int, float]:
        """(last error, consecutive failures, time of our last decision) of a city."""
        return self.healths.snapshot(city)

    def decisions_composed(self) -> int:
        """Decisions this worker composed, over every city (committed or not)."""
        return self.healths.ticks()

    def fail_tick(self, city: str, error: Exception) -> TickResult:
        """Handle ``error`` as the failure of a tick of ``city`` begun now, exactly as a
        tick that failed so would (status, backoff, stepping down), and return what it
        tells the ticker: for tests and drills of the failure policy. ``LookupError``
        when the city is not ours to tick."""
        tick = self.pipeline.begin(city, time.monotonic())
        if tick is None:
            raise LookupError(f"{city} is not ticked by worker {self.config.worker_id}")
        return self.failures.after(tick, error)

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
        self.loads.start()
        self.plugins.preload()
        failures = 0
        try:
            while not self._stopping.is_set():
                wait = 0.5
                try:
                    self._step()
                    failures = 0
                except (EtcdError, LeaseLost, WorkerIdTaken) as exc:
                    failures += 1
                    log.warning("%s; retrying in %.1fs", exc, CONTROL_RETRY.nominal(failures))
                    wait = CONTROL_RETRY.delay(failures)
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
        self.metrics.load(self.load_meter.costs(), set(leaders),
                          len(self.ownership.held_back), self.ownership.churn.spent)

    def _step(self) -> None:
        if not (self.registry.wait_synced(0) and self.campaigns.wait_synced(0)
                and self.members.synced() and self.loads.synced() and self.runner.ready()):
            return  # stand for no city before we can see the namespace and solve
        session = self.session
        if session is None or session.lost.is_set():
            self._new_session()
        if not self._registered:
            self._register()
        self.ownership.reconcile(registered=self._registered)
        self._publish_load()

    def _publish_load(self) -> None:
        """Publish what our cities cost, when due (``LoadReport``)."""
        costs, now = self.load_meter.costs(), time.monotonic()
        waiting = self.ownership.waiting()
        if self.session is None or not self._load_report.due(costs, now, waiting):
            return
        load = pb.WorkerLoad(worker_id=self.config.worker_id, cities=costs,
                             total=sum(costs.values()), measured_at=timestamp(time.time()),
                             waiting=waiting)
        publish_load(self.client, self.keys, self.session, load)
        self._load_report.published(costs, now, waiting)
    def _new_session(self) -> None:
        old, now = self.session, time.monotonic()
        if old is not None:
            self.session = None
            self.ownership.drop_all(f"lease {old.lease_hex} lost: {old.lost_reason}")
            self._losses = [t for t in self._losses if now - t < self.FLAP_WINDOW] + [now]
            others = [m for m in self.members.members()
                      if m.worker_id != self.config.worker_id and not m.drained]
            # Sitting out only helps when someone else can take the cities meanwhile.
            if len(self._losses) >= self.FLAP_LIMIT and others:
                pause = SIT_OUT.nominal(len(self._losses) - self.FLAP_LIMIT + 1)
                self._sit_out_until = now + pause
                log.warning("lease lost %d times in %.0fs: standing for no city for %.0fs "
                            "so that ownership does not bounce around", len(self._losses),
                            self.FLAP_WINDOW, pause)
        if now < self._sit_out_until:
            raise LeaseLost(f"sitting out for {self._sit_out_until - now:.0f}s more after "
                            "repeated lease loss")
        self._registered = False
        self._load_report.forget()
        self.ownership.new_session()
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
            started_at=timestamp(time.time()),
        )
        register(self.client, self.keys, self.session, info)
        self._registered = True

    def _session_lost(self, session: Session, reason: str) -> None:
        self.metrics.lease_lost()
        self.ownership.drop_all(f"lease {session.lease_hex} lost: {reason}")
        self._dirty.set()

    def _shutdown(self) -> None:
        log.info("stopping: finishing ticks in flight and handing cities over")
        self.ownership.hand_over(sorted(self.campaigns.leaders()))
        self.ticker.stop(wait=False)
        self.pipeline.close()
        self.batcher.close()
        self.runner.close()
        if self.archive is not None:
            self.archive.close()
        if self.session is not None:
            self.session.close()
        self.campaigns.stop()
        self.members.stop()
        self.loads.stop()
        self.registry.stop()
        if self.admin is not None:
            self.admin.stop()
        self.metrics.close()
        log.info("worker %s stopped", self.config.worker_id)
        self._stopped.set()

    # -- the recipes' callbacks ---------------------------------------------------------

    def _changed(self, _cities: set[str]) -> None:
        self._dirty.set()

    def _elected(self, city: str, leader: LeaderKey) -> None:
        self.ownership.elected(city, leader)

    def _lost(self, city: str, leader: LeaderKey, reason: str) -> None:
        self.ownership.lost(city, leader, reason)
