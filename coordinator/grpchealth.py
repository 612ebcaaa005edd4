"""The standard gRPC health service (``grpc.health.v1``) following a ``healthy()`` call,
on a port of its own: what the worker's admin port and the relay's health port share, so
the same probes (Kubernetes ``grpc``, ``grpc_health_probe``, ``coordinator.cli.probe``)
work on both.

The status is brought up to date before every ``Check`` (a probe sees the process as it
is now) and polled for ``Watch`` subscribers. SO_REUSEPORT is off: grpc turns it on by
default, and a second process started on the same port would then *share* it, probes
reaching either at random. Refuse the port instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["HealthServer"]

log = logging.getLogger(__name__)

#: how often the status follows ``healthy()`` for ``Watch`` subscribers
POLL_SECONDS = 0.5


class _Health(health.HealthServicer):  # type: ignore[misc]
    def __init__(self, refresh: Callable[[], None]) -> None:
        super().__init__(experimental_non_blocking=True)
        self._refresh = refresh

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._refresh()
        return super().Check(request, context)


class HealthServer:
    """gRPC health on ``host:port`` for ``services`` (``""``: the whole server); port 0
    picks a free one (read it back from :attr:`port`). ``add`` registers further
    servicers on the same server before it starts."""

    def __init__(self, healthy: Callable[[], bool], port: int, host: str = "0.0.0.0", *,
                 services: Sequence[str] = ("",),
                 add: Callable[[grpc.Server], None] | None = None,
                 name: str = "health", threads: int = 2) -> None:
        self._healthy = healthy
        self._services = tuple(services)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name),
            options=[("grpc.so_reuseport", 0)])
        self._health = _Health(self._refresh)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if add is not None:
            add(self._server)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port: int = self._server.add_insecure_port(bind)
        except RuntimeError as exc:  # grpc: "Failed to bind to address"
            raise OSError(f"admin port: cannot listen on {bind}: {exc}") from exc
        self._serving: bool | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=name, daemon=True)

    def start(self) -> HealthServer:
        self._refresh()
        self._server.start()
        self._thread.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        # Report NOT_SERVING before the port closes so a watching prober sees why.
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait(grace + 1.0)
        if self._thread.is_alive():
            self._thread.join(2)

    def _refresh(self) -> None:
        if self._stop.is_set():
            return
        serving = self._healthy()
        with self._lock:
            if serving == self._serving:
                return
            self._serving = serving
            status = (health_pb2.HealthCheckResponse.SERVING if serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            for service in self._services:
                self._health.set(service, status)

    def _follow(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._refresh()
