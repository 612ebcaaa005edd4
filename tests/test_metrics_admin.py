"""Prometheus metrics and the admin port (gRPC health + ``dispatch.v1.Admin``).

Three groups:

- ``Metrics`` on its own (names, labels, exposition over HTTP, several per process);
- ``AdminServer`` in front of a real in-process worker on real etcd (health follows the
  lease, ``Status`` shows leadership, ``Drain`` moves cities away);
- the worker's own wiring (``WorkerConfig(metrics_port=..., admin_port=...)``), skipped
  until ``WorkerConfig`` has those fields.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from coordinator import __version__
from coordinator.errors import (
    CitySettingsError,
    EtcdTimeout,
    PluginError,
    SolverFailed,
    StaleState,
    StateError,
    StateUnavailable,
)
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.ops.overview import read_overview
from coordinator.recipes.election import LeaderKey
from coordinator.recipes.session import Session
from coordinator.worker import WorkerConfig
from coordinator.worker.admin import ADMIN_SERVICE, AdminServer, AdminTarget
from coordinator.worker.metrics import ERROR_KINDS, Metrics, error_kind
from protos import admin_pb2 as apb
from protos import admin_pb2_grpc as agrpc
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster, free_port
from tests.helpers import decision, dispatchctl, running_worker

# the generated stub class carries no annotations
AdminStub: Callable[[grpc.Channel], Any] = agrpc.AdminStub
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from the text exposition format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


# -- Metrics on its own -------------------------------------------------------------------


def test_metrics_names_labels_and_exposition_over_http() -> None:
    metrics = Metrics()
    metrics.identify("w1", "0.1.0")
    metrics.tick("paris", 0.012)
    metrics.tick("paris", -1.0)  # clock noise never makes a negative observation
    metrics.solved("greedy", 0.05)
    metrics.committed("paris", 0.004, None)
    metrics.committed("paris", 0.003, 2.1)
    metrics.fenced("paris")
    metrics.solver_error("paris", "solver")
    metrics.solver_error("paris", "made-up")  # unknown kinds stay bounded
    metrics.skipped("paris")
    metrics.keepalive_failed()
    metrics.lease_lost()
    metrics.ownership(3, 2)
    metrics.lease_left(4.2)
    port = metrics.serve(0, "127.0.0.1")
    try:
        text = scrape(port)
    finally:
        metrics.close()
    expected = {
        ("dispatch_worker_info", (("version", "0.1.0"), ("worker_id", "w1"))): 1,
        ("dispatch_ticks_total", (("city", "paris"),)): 2,
        ("dispatch_tick_lateness_seconds_count", ()): 2,
        ("dispatch_solve_seconds_count", (("solver", "greedy"),)): 1,
        ("dispatch_commits_total", (("city", "paris"),)): 2,
        ("dispatch_commit_latency_seconds_count", ()): 2,
        ("dispatch_decision_age_seconds_count", ()): 1,
        ("dispatch_fenced_out_total", (("city", "paris"),)): 1,
        ("dispatch_solver_errors_total", (("city", "paris"), ("kind", "solver"))): 1,
        ("dispatch_solver_errors_total", (("city", "paris"), ("kind", "internal"))): 1,
        ("dispatch_skipped_ticks_total", (("city", "paris"),)): 1,
        ("dispatch_lease_keepalive_failures_total", ()): 1,
        ("dispatch_lease_lost_total", ()): 1,
        ("dispatch_cities_owned", ()): 3,
        ("dispatch_candidates_queued", ()): 2,
        ("dispatch_lease_ttl_remaining_seconds", ()): 4.2,
    }
    got = samples(text)
    for key, wanted in expected.items():
        assert got.get(key) == wanted, (key, got.get(key))
    assert value(text, "dispatch_tick_lateness_seconds_bucket", le="0.001") == 1  # the -1.0
    # no label beyond the bounded ones
    names = {label for (_name, labels) in got for label, _ in labels}
    assert names <= {"city", "solver", "kind", "le", "worker_id", "version"}


def test_several_metrics_objects_live_in_one_process_and_forget_cities() -> None:
    first, second = Metrics(), Metrics()
    first.tick("paris", 0.0)
    second.tick("lyon", 0.0)
    assert 'city="lyon"' not in first.render().decode()
    assert 'city="paris"' not in second.render().decode()
    first.solver_error("paris", "state")
    first.forget("paris")
    assert 'city="paris"' not in first.render().decode()


def test_scrape_time_samplers_run_before_the_gauges_are_read() -> None:
    metrics = Metrics()
    state = {"owned": 0}
    metrics.sample_on_scrape(lambda: metrics.ownership(state["owned"], 1))
    state["owned"] = 7
    text = metrics.render().decode()
    assert value(text, "dispatch_cities_owned") == 7
    def broken() -> None:
        raise ZeroDivisionError

    metrics.sample_on_scrape(broken)  # a broken sampler does not break /metrics
    assert value(metrics.render().decode(), "dispatch_candidates_queued") == 1


def test_error_kinds_are_a_fixed_vocabulary() -> None:
    assert error_kind(CitySettingsError("x")) == "settings"
    assert error_kind(PluginError("x")) == "plugin"
    assert error_kind(StateError("x")) == "state"
    assert error_kind(StaleState("x", 12.0, 10.0)) == "state_stale"
    assert error_kind(StateUnavailable("x")) == "state_unavailable"
    assert error_kind(SolverFailed("x")) == "solver"
    assert error_kind(EtcdTimeout("x")) == "etcd"
    assert error_kind(ZeroDivisionError()) == "internal"
    assert set(ERROR_KINDS) == {"settings", "plugin", "state", "state_stale",
                               "state_unavailable", "solver", "etcd", "etcd_nospace",
                               "internal"}


def test_serving_twice_or_on_a_busy_port_fails_loudly() -> None:
    metrics = Metrics()
    port = metrics.serve(0, "127.0.0.1")
    try:
        with pytest.raises(RuntimeError):
            metrics.serve(0, "127.0.0.1")
        with pytest.raises(OSError):
            Metrics().serve(port, "127.0.0.1")
    finally:
        metrics.close()


# -- AdminServer in front of a real worker ----------------------------------------------


@contextmanager
def admin(worker: AdminTarget) -> Iterator[tuple[AdminServer, grpc.Channel]]:
    server = AdminServer(worker, 0, "127.0.0.1").start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, channel
    finally:
        channel.close()
        server.stop(0)


def check(channel: grpc.Channel, service: str = "") -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    status: int = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status
    return status


def status_of(channel: grpc.Channel) -> apb.WorkerStatus:
    reply: apb.WorkerStatus = AdminStub(channel).Status(apb.StatusRequest(), timeout=5)
    return reply


def _leads(channel: grpc.Channel, city: str) -> bool:
    return any(c.city == city and c.role == "leader" and c.HasField("last_decision_at")
               for c in status_of(channel).cities)


def test_admin_status_and_health_of_a_deciding_worker(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys) -> None:
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "greedy",
                "--period", "0.3")
    with running_worker(etcd.endpoints, namespace, "w1", lease_ttl=3) as worker, \
            admin(worker) as (server, channel):
        wait_until(lambda: _leads(channel, "paris"), timeout=20, message="w1 leading paris")
        # health follows the session by polling it (every 0.5 s)
        wait_until(lambda: check(channel) == SERVING, timeout=5, message="SERVING")
        assert check(channel, ADMIN_SERVICE) == SERVING
        reply = status_of(channel)
        assert reply.worker_id == "w1" and reply.namespace == namespace and reply.version
        assert worker.session is not None and reply.lease_id == worker.session.lease_hex
        assert 0 < reply.lease_ttl_remaining <= 3 and not reply.drained
        (paris,) = reply.cities
        current = decision(client, keys, "paris")
        assert current is not None and paris.token == current.token
        assert paris.consecutive_failures == 0 and paris.last_error == ""
        assert abs(paris.last_decision_at.ToNanoseconds() / 1e9 - time.time()) < 5
        assert server.address.endswith(f":{server.port}")


def test_admin_status_shows_a_failing_city(etcd: EtcdCluster, namespace: str) -> None:
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "no-such",
                "--period", "0.2", "--force")
    with running_worker(etcd.endpoints, namespace, "w1", lease_ttl=3) as worker, \
            admin(worker) as (_server, channel):
        def failing() -> bool:
            cities = status_of(channel).cities
            return bool(cities) and cities[0].consecutive_failures >= 1
        wait_until(failing, timeout=20, message="paris failing")
        (paris,) = status_of(channel).cities
        assert paris.role == "leader" and "no-such" in paris.last_error
        assert not paris.HasField("last_decision_at")


def test_drain_through_the_admin_port_moves_cities_away(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys) -> None:
    cities = ["paris", "lyon", "nice"]
    for city in cities:
        dispatchctl(etcd.endpoints, namespace, "city", "add", city, "--solver", "greedy",
                    "--period", "0.3")
    with running_worker(etcd.endpoints, namespace, "w1", lease_ttl=3) as w1, \
            running_worker(etcd.endpoints, namespace, "w2", lease_ttl=3), \
            admin(w1) as (_server, channel):
        wait_until(lambda: w1.campaigns.leaders(), timeout=20, message="w1 leading a city")
        stub = AdminStub(channel)
        reply = stub.Drain(apb.DrainRequest(wait_seconds=20), timeout=30)
        assert reply.drained and list(reply.cities_led) == [], reply
        assert "leads no city" in reply.message
        assert client.get(keys.drain("w1")) is not None
        assert all("w1" not in (v.owner, *v.standbys)
                   for v in read_overview(client, keys).cities), "w1 still holds a key"
        # w2 takes over at its own pace: a city it handed to w1 before it saw the drain
        # mark has no candidate until w2 stands for it again.
        wait_until(lambda: {v.city: v.owner for v in read_overview(client, keys).cities}
                   == dict.fromkeys(cities, "w2"), timeout=10, message="w2 owning all")
        assert status_of(channel).drained
        assert check(channel) == SERVING  # drained is healthy: it still holds its lease

        reply = stub.Undrain(apb.UndrainRequest(), timeout=5)
        assert not reply.drained and "undrained" in reply.message
        assert client.get(keys.drain("w1")) is None
        wait_until(lambda: w1.campaigns.leaders(), timeout=20, message="w1 leading again")
        assert "was not drained" in stub.Undrain(apb.UndrainRequest(), timeout=5).message
    assert " 0 violations" in dispatchctl(etcd.endpoints, namespace, "verify").stdout


@dataclass
class _Config:
    worker_id: str


@dataclass
class _Campaigns:
    def leaders(self) -> dict[str, LeaderKey]:
        return {}

    def entered(self) -> set[str]:
        return set()


@dataclass
class _BareTarget:
    """The smallest thing with a real session that AdminServer can watch."""

    client: EtcdClient
    keys: Keys
    session: Session | None
    config: _Config = field(default_factory=lambda: _Config("bare"))
    campaigns: _Campaigns = field(default_factory=_Campaigns)

    def health(self, city: str) -> tuple[str, int, float]:
        return "", 0, 0.0


def test_health_is_not_serving_once_the_lease_is_lost(client: EtcdClient, keys: Keys) -> None:
    lost = threading.Event()
    session = Session(client, 2, on_lost=lambda _s, _r: lost.set())
    target = _BareTarget(client, keys, session)
    with admin(target) as (server, channel):
        assert check(channel) == SERVING
        client.lease_revoke(session.lease_id)  # as if etcd expired it
        assert lost.wait(10)
        wait_until(lambda: check(channel) == NOT_SERVING and
                   check(channel, ADMIN_SERVICE) == NOT_SERVING,
                   timeout=5, message="NOT_SERVING")
        reply = status_of(channel)
        assert reply.lease_id == "" and reply.lease_ttl_remaining == 0
        target.session = Session(client, 2)  # a new session: serving again
        wait_until(lambda: check(channel) == SERVING, timeout=5, message="SERVING again")
        target.session.close()
        target.session = None
        wait_until(lambda: check(channel) == NOT_SERVING, timeout=5, message="no session")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, \
            pytest.raises(grpc.RpcError) as info:
        check(channel)  # stopped: the port is closed
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                 grpc.StatusCode.DEADLINE_EXCEEDED)


def test_drain_does_not_report_done_while_etcd_still_queues_the_worker(
        client: EtcdClient, keys: Keys) -> None:
    # The worker's own view is empty, but a candidate key of its is still queued in
    # etcd (say a peer is handing it a city it has not yet seen): not done yet.
    session = Session(client, 5)
    try:
        client.put(keys.cities + "paris", "{}")
        client.put(keys.election("paris") + f"/{session.lease_hex}", "bare",
                   lease=session.lease_id)
        with admin(_BareTarget(client, keys, session)) as (_server, channel):
            reply = AdminStub(channel).Drain(apb.DrainRequest(wait_seconds=0.3), timeout=10)
            assert "leads no city" not in reply.message and "stands for 1" in reply.message
            client.delete(keys.election("paris"), prefix=True)
            reply = AdminStub(channel).Drain(apb.DrainRequest(wait_seconds=5), timeout=10)
            assert "leads no city" in reply.message, reply
    finally:
        session.close()


def test_admin_port_in_use_is_an_os_error(client: EtcdClient, keys: Keys) -> None:
    target = _BareTarget(client, keys, None)
    with admin(target) as (server, _channel), pytest.raises(OSError, match="admin port"):
        AdminServer(target, server.port, "127.0.0.1")


# -- the worker's own wiring (WorkerConfig.metrics_port / admin_port) --------------------

wired = pytest.mark.skipif(
    not hasattr(WorkerConfig(), "admin_port") or not hasattr(WorkerConfig(), "metrics_port"),
    reason="WorkerConfig has no metrics_port/admin_port yet (worker wiring pending)",
)


def _wait_for_commits(port: int, city: str, n: int) -> str:
    def enough() -> str | None:
        try:
            text = scrape(port)
        except OSError:  # URLError included: the worker is still starting
            return None
        return text if (value(text, "dispatch_commits_total", city=city) or 0) >= n else None
    result = wait_until(enough, timeout=20, message=f"{n} commits of {city} in /metrics")
    assert isinstance(result, str)
    return result


@wired
def test_a_worker_serves_metrics_health_and_status_on_its_ports(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys) -> None:
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "greedy",
                "--period", "0.3")
    metrics_port, admin_port = free_port(), free_port()
    with running_worker(etcd.endpoints, namespace, "w1", lease_ttl=3,
                        metrics_port=metrics_port, admin_port=admin_port) as _worker:
        text = _wait_for_commits(metrics_port, "paris", 3)
        assert (value(text, "dispatch_ticks_total", city="paris") or 0) >= 3
        assert (value(text, "dispatch_tick_lateness_seconds_count") or 0) >= 3
        assert (value(text, "dispatch_solve_seconds_count", solver="greedy") or 0) >= 3
        assert (value(text, "dispatch_commit_latency_seconds_count") or 0) >= 3
        assert (value(text, "dispatch_decision_age_seconds_count") or 0) >= 2
        assert value(text, "dispatch_cities_owned") == 1
        assert 0 < (value(text, "dispatch_lease_ttl_remaining_seconds") or 0) <= 3
        assert value(text, "dispatch_fenced_out_total", city="paris") in (None, 0)
        assert value(text, "dispatch_worker_info", worker_id="w1", version=__version__) == 1

        channel = grpc.insecure_channel(f"127.0.0.1:{admin_port}")
        try:
            wait_until(lambda: check(channel) == SERVING, timeout=10, message="SERVING")
            assert check(channel, ADMIN_SERVICE) == SERVING
            (paris,) = status_of(channel).cities
            assert paris.role == "leader" and paris.token > 0
        finally:
            channel.close()
        info = read_overview(client, keys).workers["w1"]
        assert info.admin_address.endswith(f":{admin_port}"), info


@wired
def test_drain_through_a_workers_own_admin_port(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys) -> None:
    for city in ("paris", "lyon"):
        dispatchctl(etcd.endpoints, namespace, "city", "add", city, "--solver", "greedy",
                    "--period", "0.3")
    admin_port = free_port()
    with running_worker(etcd.endpoints, namespace, "w1", lease_ttl=3,
                        metrics_port=free_port(), admin_port=admin_port) as w1, \
            running_worker(etcd.endpoints, namespace, "w2", lease_ttl=3,
                           metrics_port=free_port(), admin_port=free_port()):
        wait_until(lambda: w1.campaigns.leaders(), timeout=20, message="w1 leading")
        channel = grpc.insecure_channel(f"127.0.0.1:{admin_port}")
        try:
            reply = AdminStub(channel).Drain(apb.DrainRequest(wait_seconds=20),
                                                   timeout=30)
        finally:
            channel.close()
        assert reply.drained and not reply.cities_led
        wait_until(lambda: {v.owner for v in read_overview(client, keys).cities} == {"w2"},
                   timeout=10, message="w2 owning all")
    assert " 0 violations" in dispatchctl(etcd.endpoints, namespace, "verify").stdout


def test_the_container_probe_exits_zero_only_while_serving(client: EtcdClient,
                                                           keys: Keys) -> None:
    import subprocess
    import sys

    def probe(port: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "coordinator.cli.probe",
                               f"127.0.0.1:{port}"], capture_output=True, text=True,
                              timeout=30)

    session = Session(client, 2)
    target = _BareTarget(client, keys, session)
    try:
        with admin(target) as (server, _channel):
            serving = probe(server.port)
            assert serving.returncode == 0 and "SERVING" in serving.stdout
            target.session = None
            not_serving = probe(server.port)
            assert not_serving.returncode == 1 and "NOT_SERVING" in not_serving.stderr
        closed = probe(server.port)
        assert closed.returncode == 1 and len(closed.stderr.strip().splitlines()) == 1
    finally:
        session.close()
