"""The relay's admin port: the standard gRPC health service (``grpc.health.v1``), as the
worker serves it, so the same probes (Kubernetes ``grpc``, ``grpc_health_probe``) work.

SERVING means: the relay holds a live etcd lease and its sink answered the last time it
was used. A standby is healthy too (it is ready to take over); which relay is active is
in ``RelayStatus`` and ``dispatch_relay_active``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["HealthServer"]

log = logging.getLogger(__name__)

#: how often the status follows the relay (a ``Check`` also refreshes it)
POLL_SECONDS = 0.5


class _Health(health.HealthServicer):  # type: ignore[misc]
    def __init__(self, refresh: Callable[[], None]) -> None:
        super().__init__(experimental_non_blocking=True)
        self._refresh = refresh

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._refresh()
        return super().Check(request, context)


class HealthServer:
    """gRPC health on ``host:port`` following ``healthy()``; port 0 picks a free one."""

    def __init__(self, healthy: Callable[[], bool], port: int, host: str = "0.0.0.0") -> None:
        self._healthy = healthy
        # no SO_REUSEPORT: a second relay on the same port must fail, not share it
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                                   options=[("grpc.so_reuseport", 0)])
        self._health = _Health(self._refresh)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port: int = self._server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise OSError(f"admin port: cannot listen on {bind}: {exc}") from exc
        self._serving: bool | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="relay health", daemon=True)

    def start(self) -> HealthServer:
        self._refresh()
        self._server.start()
        self._thread.start()
        log.info("gRPC health service on port %d", self.port)
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
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
            self._health.set("", health_pb2.HealthCheckResponse.SERVING if serving
                             else health_pb2.HealthCheckResponse.NOT_SERVING)

    def _follow(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._refresh()
