"""The relay: one active per sink, carrying accepted decisions from etcd into the sink.

A relay holds a :class:`Session` and stands in the election ``keys.relay_election(sink)``;
the leader reads the sink's own cursor, follows ``<ns>/decisions/`` from it
(:class:`DecisionFollower`) and hands each batch to ``sink.apply``. The sink applies a
city's decision only when its revision is newer than the one it holds, so a repeat after
a retry, a takeover, or even two relays active at once cannot apply anything twice.

- Sink failure: back off (0.2 s doubling to 5 s), keep the undelivered batch, re-read
  the cursor when the sink answers again, retry what it does not hold, follow on.
- etcd failure: the follower retries on its own; a lease that expires deposes the relay.
- Lost leadership (lease gone, candidate key not the leader): stop applying at once,
  revoke the lease, campaign again. A standby waits in ``campaign``.
- Every ``status_every`` seconds a ``RelayStatus`` is put under the lease at
  ``keys.relay_status(sink, relay_id)``, the gauges are set, and leadership is checked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.backoff import Backoff
from coordinator.codec import encode
from coordinator.errors import DispatchError, EtcdError, LeaseLost, NotLeader, SinkError
from coordinator.etcd import EtcdClient
from coordinator.grpchealth import HealthServer
from coordinator.keys import Keys
from coordinator.recipes.election import Election, LeaderKey, leader_of
from coordinator.recipes.follow import DecisionFollower, Gap, Malformed
from coordinator.recipes.session import Session
from coordinator.relay.metrics import RelayMetrics, error_kind
from coordinator.sinks.contract import Delivery, Sink
from protos import dispatch_pb2 as pb

__all__ = ["Relay", "RelayConfig"]

log = logging.getLogger(__name__)

SINK_RETRY = Backoff(0.2, 5.0, jitter=0.5)
ETCD_RETRY = Backoff(0.2, 5.0, jitter=0.5)


@dataclass(frozen=True)
class RelayConfig:
    sink_name: str
    relay_id: str
    namespace: str = "/dispatch"
    lease_ttl: int = 5
    batch_max: int = 500
    status_every: float = 1.0
    metrics_port: int | None = None
    admin_port: int | None = None


class Relay:
    """``run()`` blocks until :meth:`request_stop`; counters are read by the status."""

    def __init__(self, client: EtcdClient, config: RelayConfig, sink: Sink) -> None:
        self.client = client
        self.config = config
        self.sink = sink
        self.keys = Keys(config.namespace)
        self.metrics = RelayMetrics()
        self.health: HealthServer | None = None
        self.session: Session | None = None
        self.leader: LeaderKey | None = None
        self.cursor = 0
        self.applied = self.refused = self.gaps = self.malformed = 0
        self.last_error = ""
        self._error_kind = ""
        self.sink_ok = True
        self._pending: list[Delivery] = []
        self._follower: DecisionFollower | None = None
        self._stop = threading.Event()
        self._deposed = threading.Event()
        self._wake = threading.Event()

    # -- control ----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.leader is not None and not self._deposed.is_set()

    def healthy(self) -> bool:
        """What the health port reports: a live etcd lease, and a sink that answered the
        last time it was used. A standby is healthy too (ready to take over); which relay
        is active is in ``RelayStatus`` and ``dispatch_relay_active``."""
        session = self.session
        return session is not None and not session.expired() and self.sink_ok

    def start_servers(self) -> None:
        """Metrics and health ports; a port that is taken is an ``OSError``."""
        if self.config.metrics_port is not None:
            self.metrics.serve(self.config.metrics_port)
        if self.config.admin_port is not None:
            self.health = HealthServer(self.healthy, self.config.admin_port,
                                       name="relay health").start()
            log.info("gRPC health service on port %d", self.health.port)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()
        follower = self._follower
        if follower is not None:
            follower.stop()

    def run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self._term()
                    failures = 0
                except (EtcdError, LeaseLost, NotLeader) as exc:
                    if self._stop.is_set():
                        break
                    failures += 1
                    self._error(exc)
                    log.warning("relay: %s; retrying in %.1fs", exc, ETCD_RETRY.nominal(failures))
                    self._stop.wait(ETCD_RETRY.delay(failures))
        finally:
            if self.health is not None:
                self.health.stop()
            self.metrics.close()
            with contextlib.suppress(DispatchError):
                self.sink.close()

    def _term(self) -> None:
        """One session: stand by, lead, deliver until deposed or stopped."""
        session = Session(self.client, self.config.lease_ttl)
        self.session = session
        election = Election(self.client, session,
                            self.keys.relay_election(self.config.sink_name))
        monitor = threading.Thread(target=self._monitor, args=(session,),
                                   name="relay status", daemon=True)
        monitor.start()
        try:
            self._probe_sink()
            leader = election.campaign(self.config.relay_id, cancel=self._stop)
            self._deposed.clear()
            self._wake.clear()
            self.leader = leader
            log.info("relay %s is active for sink %s (token %d)", self.config.relay_id,
                     self.config.sink_name, leader.token)
            self._deliver()
            if self._stop.is_set() and not self._deposed.is_set():
                with contextlib.suppress(DispatchError):
                    election.resign()
        finally:
            self.leader = None
            self._pending = []
            session.close()
            monitor.join(5)
            self.session = None

    def _depose(self, reason: str) -> None:
        if self.leader is None or self._deposed.is_set():
            return
        log.warning("relay %s stops applying: %s", self.config.relay_id, reason)
        self._error(LeaseLost(reason))
        self._deposed.set()
        self._wake.set()
        follower = self._follower
        if follower is not None:
            follower.stop()

    # -- delivery ---------------------------------------------------------------------

    def _running(self) -> bool:
        return not (self._stop.is_set() or self._deposed.is_set())

    def _deliver(self) -> None:
        failures = 0
        while self._running():
            follower: DecisionFollower | None = None
            try:
                after = self._resume()
                follower = DecisionFollower(
                    self.client, self.keys, after=after, batch_max=self.config.batch_max,
                    on_gap=self._on_gap, on_malformed=self._on_malformed,
                    on_error=self._error, prepare=self.sink.prepare)
                self._follower = follower
                if not self._running():
                    break
                for batch in follower:
                    if not self._running():
                        break
                    self._pending = batch
                    self._apply(batch)
                    self._pending = []
                    failures = 0
            except SinkError as exc:
                failures += 1
                self.sink_ok = False
                self._error(exc)
                delay = SINK_RETRY.delay(failures)
                log.warning("sink %s: %s; retrying in %.1fs (%d decisions kept)",
                            self.config.sink_name, exc, delay, len(self._pending))
                self._wake.wait(delay)
            finally:
                self._follower = None
                if follower is not None:
                    follower.stop()

    def _resume(self) -> int:
        """Read the sink's cursor, retry the kept batch, return where to follow from.

        The cursor's own revision is offered again unless the kept batch covers it: a
        sink that takes a revision's cities one at a time may have stopped inside it,
        and it refuses whatever it already holds.
        """
        cursor = self.sink.cursor()
        self._sink_good()
        self.cursor = cursor
        pending = self._pending
        if pending and pending[-1].revision >= cursor:
            retry = [d for d in pending if d.revision >= cursor]
            self._apply(retry)
            self._pending = []
            return pending[-1].revision
        self._pending = []
        return max(cursor - 1, 0)

    def _apply(self, batch: Sequence[Delivery]) -> None:
        if not batch or not self._running():
            return
        result = self.sink.apply(batch)
        self._sink_good()
        self.applied += result.applied
        self.refused += result.refused
        self.metrics.applied.inc(result.applied)
        self.metrics.refused.inc(result.refused)
        self.cursor = max(self.cursor, result.cursor)

    def _probe_sink(self) -> None:
        try:
            self.cursor = self.sink.cursor()
            self._sink_good()
        except SinkError as exc:
            self.sink_ok = False
            self._error(exc)
            log.warning("sink %s not reachable: %s", self.config.sink_name, exc)

    def _sink_good(self) -> None:
        self.sink_ok = True
        if self._error_kind.startswith("sink"):
            self.last_error, self._error_kind = "", ""

    def _error(self, exc: BaseException) -> None:
        self.metrics.error(exc)
        self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._error_kind = error_kind(exc)

    def _on_gap(self, gap: Gap) -> None:
        self.gaps += 1
        self.metrics.gaps.inc()

    def _on_malformed(self, item: Malformed) -> None:
        self.malformed += 1
        self.metrics.malformed.inc()

    # -- status and leadership --------------------------------------------------------

    def _monitor(self, session: Session) -> None:
        while not session.lost.wait(self.config.status_every):
            try:
                self._check_leadership(session)
                self._publish(session)
                if self._error_kind == "etcd":
                    self.last_error, self._error_kind = "", ""
            except EtcdError as exc:
                log.debug("relay status: %s", exc)
            except Exception:
                log.exception("relay status: unexpected error")

    def _check_leadership(self, session: Session) -> None:
        leader = self.leader
        if leader is None or self._deposed.is_set():
            return
        if session.expired():
            self._depose(f"lease {session.lease_hex} expired")
            return
        first = leader_of(self.client, leader.prefix)
        if first is None or first.key != leader.key or first.create_revision != leader.token:
            self._depose(f"{leader.key} no longer leads {leader.prefix}")

    def _lag(self) -> tuple[int, float]:
        if not self.active:
            return 0, 0.0
        kvs, _ = self.client.range(self.keys.decisions, prefix=True, sort="mod",
                                   descending=True, limit=1, keys_only=True)
        newest = kvs[0].mod_revision if kvs else 0
        oldest = self._pending[0] if self._pending else None
        follower = self._follower
        if oldest is None and follower is not None:
            oldest = follower.oldest_buffered()
        seconds = 0.0
        if oldest is not None and oldest.decision.HasField("decided_at"):
            seconds = max(0.0, time.time() - oldest.decision.decided_at.ToNanoseconds() / 1e9)
        return max(0, newest - self.cursor), seconds

    def _publish(self, session: Session) -> None:
        lag_revisions, lag_seconds = self._lag()
        m = self.metrics
        m.active.set(1 if self.active else 0)
        m.lag_revisions.set(lag_revisions)
        m.lag_seconds.set(lag_seconds)
        status = pb.RelayStatus(
            sink=self.config.sink_name, relay_id=self.config.relay_id, active=self.active,
            cursor=self.cursor, lag_revisions=lag_revisions, lag_seconds=lag_seconds,
            applied=self.applied, refused=self.refused, gaps=self.gaps,
            last_error=self.last_error, host=socket.gethostname(), pid=os.getpid())
        status.updated_at.GetCurrentTime()
        self.client.put(self.keys.relay_status(self.config.sink_name, self.config.relay_id),
                        encode(status), lease=session.lease_id)
