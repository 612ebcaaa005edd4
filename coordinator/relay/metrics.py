"""Prometheus metrics of one relay, on a registry of its own (as the worker's are, so
several relays can live in one process: the tests).

Labels stay bounded: ``kind`` of ``dispatch_relay_errors_total`` is one of
:data:`ERROR_KINDS`; nothing is labelled per city or revision.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from coordinator.errors import EtcdError, LeaseLost, NotLeader, SinkError, SinkUnavailable

__all__ = ["ERROR_KINDS", "RelayMetrics", "error_kind"]

log = logging.getLogger(__name__)

#: every value the ``kind`` label may take
ERROR_KINDS = ("sink_unavailable", "sink", "etcd", "lease", "internal")


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of a relay error (one of :data:`ERROR_KINDS`)."""
    if isinstance(exc, SinkUnavailable):
        return "sink_unavailable"
    if isinstance(exc, SinkError):
        return "sink"
    if isinstance(exc, EtcdError):
        return "etcd"
    if isinstance(exc, LeaseLost | NotLeader):
        return "lease"
    return "internal"


class RelayMetrics:
    """The ``dispatch_relay_*`` metrics; only :meth:`serve` opens a port."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        ns = "dispatch"
        self.lag_revisions = Gauge(
            "relay_lag_revisions", "Revision of the newest decision in etcd minus the "
            "sink's cursor (0: caught up).", namespace=ns, registry=r)
        self.lag_seconds = Gauge(
            "relay_lag_seconds", "Age of the oldest decision received but not yet in the "
            "sink (0: none waiting).", namespace=ns, registry=r)
        self.active = Gauge(
            "relay_active", "1 while this relay leads its sink's election and applies; "
            "0 while it stands by.", namespace=ns, registry=r)
        self.applied = Counter(
            "relay_applied", "Decisions the sink applied (newer than what it held).",
            namespace=ns, registry=r)
        self.refused = Counter(
            "relay_refused", "Decisions the sink refused as not newer (repeats after a "
            "retry or takeover, or another relay was first).", namespace=ns, registry=r)
        self.errors = Counter(
            "relay_errors", "Failures by kind (sink_unavailable, sink, etcd, lease, "
            "internal); each is retried.", ["kind"], namespace=ns, registry=r)
        self.gaps = Counter(
            "relay_gaps", "Times the cursor was older than etcd's compaction point: only "
            "each city's latest decision could be delivered.", namespace=ns, registry=r)
        self.malformed = Counter(
            "relay_malformed", "Values under the decisions prefix that are not decisions "
            "(skipped).", namespace=ns, registry=r)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)  # every series exists from the start, at 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def error(self, exc: BaseException) -> None:
        self.errors.labels(error_kind(exc)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` from a daemon thread; returns the bound port."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server, self._thread = server, thread
        bound: int = server.server_port
        log.info("serving metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
