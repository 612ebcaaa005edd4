"""A worker's admin port: gRPC health checking and the ``dispatch.v1.Admin`` service.

Why gRPC and the *standard* health service: orchestrators already speak it
(Kubernetes ``grpc`` probes, ``grpc_health_probe``, Envoy, Consul), so a worker needs no
custom probe script. Health means one thing here: the worker holds a live etcd lease.
Without one it owns nothing and can decide nothing, so a load balancer or supervisor
should see it as not serving; with one it is doing its job even if it leads no city
(hot standby, or drained).

The Admin service answers from the worker's memory (what it leads, its last errors),
which ``dispatchctl status`` cannot see from etcd alone, and offers drain/undrain for
deploy hooks. Drain writes the same key ``dispatchctl drain`` writes, so both ways are
one mechanism: the balancer treats a drained member as owning nothing, the worker hands
its cities over gracefully, and the mark survives a restart of the worker until someone
undrains it.

This module does not import :mod:`coordinator.worker` (the worker imports us); it
codes against the small :class:`AdminTarget` protocol instead.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator import __version__
from coordinator.errors import DispatchError, EtcdError
from coordinator.etcd import EtcdClient
from coordinator.grpchealth import HealthServer
from coordinator.keys import Keys
from coordinator.ops.overview import read_overview
from coordinator.recipes.election import LeaderKey
from coordinator.recipes.session import Session
from protos import admin_pb2 as apb
from protos import admin_pb2_grpc as agrpc

__all__ = ["ADMIN_SERVICE", "AdminServer", "AdminTarget"]

log = logging.getLogger(__name__)

#: The fully qualified name of the Admin service, also a health-check service name.
ADMIN_SERVICE = "dispatch.v1.Admin"

class _HasWorkerId(Protocol):
    @property
    def worker_id(self) -> str: ...


class _CampaignView(Protocol):
    def leaders(self) -> Mapping[str, LeaderKey]: ...

    def entered(self) -> set[str]: ...


class AdminTarget(Protocol):
    """What the admin server needs from a worker (``coordinator.worker.Worker``)."""

    @property
    def config(self) -> _HasWorkerId: ...

    @property
    def session(self) -> Session | None: ...

    @property
    def campaigns(self) -> _CampaignView: ...

    @property
    def keys(self) -> Keys: ...

    @property
    def client(self) -> EtcdClient: ...

    def health(self, city: str) -> tuple[str, int, float]: ...


def _live(worker: AdminTarget) -> bool:
    session = worker.session
    return session is not None and not session.lost.is_set()


def _timestamp(seconds: float) -> Timestamp | None:
    if seconds <= 0:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _standing(worker: AdminTarget) -> list[str]:
    """Cities in whose election ``worker`` still holds a key: as leader, queued, or
    being withdrawn at this moment.

    Its own view is not enough to say "leads no city": a queued key becomes the leader
    the moment the key before it is deleted (a peer that had not yet seen the drain mark
    handing a city over to us), before our watch says so. etcd has the last word.
    """
    local = worker.campaigns.entered() | set(worker.campaigns.leaders())
    if local:
        return sorted(local)
    me = worker.config.worker_id
    try:
        cities = read_overview(worker.client, worker.keys).cities
    except DispatchError as exc:
        log.warning("admin Drain: cannot read the elections: %s", exc)
        return ["?"]
    return sorted(v.city for v in cities if v.holds_key_of(me))


class _AdminService(agrpc.AdminServicer):
    def __init__(self, worker: AdminTarget) -> None:
        self._worker = worker

    def _drained(self) -> bool:
        w = self._worker
        return w.client.get(w.keys.drain(w.config.worker_id)) is not None

    def Status(self, request: apb.StatusRequest, context: grpc.ServicerContext) -> Any:
        w = self._worker
        session = w.session
        leaders = dict(w.campaigns.leaders())
        cities = sorted(set(w.campaigns.entered()) | set(leaders))
        reply = apb.WorkerStatus(worker_id=w.config.worker_id, namespace=w.keys.namespace,
                                 version=__version__)
        if session is not None and not session.lost.is_set():
            reply.lease_id = session.lease_hex
            reply.lease_ttl_remaining = round(session.time_left(), 3)
        try:
            reply.drained = self._drained()
        except EtcdError as exc:
            # Status is most wanted when etcd is in trouble: answer what we know.
            log.warning("admin Status: cannot read the drain mark: %s", exc)
        for city in cities:
            last_error, failures, last_decision_at = w.health(city)
            leader = leaders.get(city)
            state = apb.CityState(
                city=city, role="leader" if leader is not None else "standby",
                token=leader.token if leader is not None else 0,
                last_error=last_error, consecutive_failures=failures,
            )
            stamp = _timestamp(last_decision_at)
            if stamp is not None:
                state.last_decision_at.CopyFrom(stamp)
            reply.cities.append(state)
        return reply

    def Drain(self, request: apb.DrainRequest, context: grpc.ServicerContext) -> Any:
        w = self._worker
        worker_id = w.config.worker_id
        try:
            w.client.put(w.keys.drain(worker_id), "1")
        except DispatchError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot write the drain mark: {exc}")
        log.info("drained through the admin port: handing cities over")
        deadline = time.monotonic() + max(0.0, min(request.wait_seconds, 3600.0))
        standing = _standing(w)
        while standing and time.monotonic() < deadline and context.is_active():
            time.sleep(0.1)
            standing = _standing(w)
        led = sorted(w.campaigns.leaders())
        if not standing:
            message = f"{worker_id} drained; it leads no city"
        elif request.wait_seconds > 0:
            message = (f"{worker_id} drained; still leads {len(led)} cities and stands for "
                       f"{len(standing)} after {request.wait_seconds:g}s")
        else:
            message = f"{worker_id} drained; handing over {len(led)} cities"
        return apb.DrainReply(worker_id=worker_id, drained=True, cities_led=led,
                              message=message)

    def Undrain(self, request: apb.UndrainRequest, context: grpc.ServicerContext) -> Any:
        w = self._worker
        worker_id = w.config.worker_id
        try:
            removed = w.client.delete(w.keys.drain(worker_id))
        except DispatchError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot delete the drain mark: {exc}")
        log.info("undrained through the admin port")
        message = (f"{worker_id} undrained; it takes its share of cities again" if removed
                   else f"{worker_id} was not drained")
        return apb.DrainReply(worker_id=worker_id, drained=False,
                              cities_led=sorted(w.campaigns.leaders()), message=message)


class AdminServer:
    """gRPC health + Admin on ``host:port`` for one worker.

    ``AdminServer(worker, port).start()`` binds and serves; ``port`` 0 picks a free
    port (read it back from :attr:`port`). :meth:`stop` ends serving.
    """

    def __init__(self, worker: AdminTarget, port: int, host: str = "0.0.0.0") -> None:
        self._worker = worker
        self.host = host
        # The generated registration function carries no annotations; give it a type.
        add_admin: Callable[[Any, Any], None] = agrpc.add_AdminServicer_to_server
        self._health = HealthServer(
            lambda: _live(worker), port, host, services=("", ADMIN_SERVICE),
            add=lambda server: add_admin(_AdminService(worker), server),
            name="admin", threads=4)
        self.port: int = self._health.port

    @property
    def address(self) -> str:
        """``host:port`` to publish in ``WorkerInfo.admin_address``: the machine's host
        name when listening on every interface (``0.0.0.0`` is nobody's address)."""
        host = socket.gethostname() if self.host in ("", "0.0.0.0", "::", "[::]") else self.host
        return f"{host}:{self.port}"

    def start(self) -> AdminServer:
        self._health.start()
        log.info("admin and health service on %s:%d", self.host, self.port)
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._health.stop(grace)
