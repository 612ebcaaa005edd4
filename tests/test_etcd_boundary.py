"""The etcd boundary: typed results, every failure one of our errors, and gRPC kept
inside ``coordinator.etcd``.

The results and the happy paths are checked against a real etcd. The failure paths
that a healthy server never takes (a keep-alive stream that ends without an answer, a
gRPC error carrying no status) are provoked by replacing one stub of one endpoint.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from coordinator.errors import ConfigError, EtcdError, EtcdUnavailable
from coordinator.etcd import (
    Alarm,
    ClusterMember,
    EtcdClient,
    EtcdConfig,
    MemberStatus,
)
from coordinator.recipes.session import Session
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster

ROOT = Path(__file__).resolve().parent.parent


class _SilentLease:
    """A lease stub whose keep-alive stream ends at once, without an answer."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def LeaseKeepAlive(self, requests: Iterator[Any], **_: Any) -> Iterator[Any]:
        return iter(())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _StatuslessKV:
    """A key-value stub that fails with a bare ``grpc.RpcError`` (no status code)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def Range(self, *_: Any, **__: Any) -> Any:
        raise grpc.RpcError("no status")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _endpoint(client: EtcdClient) -> Any:
    return client._endpoints[0]


def test_a_keepalive_stream_that_ends_without_an_answer_is_etcd_unavailable(
        client: EtcdClient) -> None:
    lease_id, _ = client.lease_grant(5)
    endpoint = _endpoint(client)
    endpoint.lease = _SilentLease(endpoint.lease)
    try:
        with pytest.raises(EtcdUnavailable, match="without an answer"):
            client.lease_keepalive(lease_id)
    finally:
        endpoint.lease = endpoint.lease._real
    assert client.lease_keepalive(lease_id) > 0
    client.lease_revoke(lease_id)


def test_a_grpc_error_without_a_status_is_an_etcd_error(client: EtcdClient) -> None:
    endpoint = _endpoint(client)
    endpoint.kv = _StatuslessKV(endpoint.kv)
    try:
        with pytest.raises(EtcdError, match="no status") as caught:
            client.get("/anything")
    finally:
        endpoint.kv = endpoint.kv._real
    assert isinstance(caught.value.__cause__, grpc.RpcError)


def test_a_closed_client_fails_with_etcd_unavailable(etcd: EtcdCluster) -> None:
    client = EtcdClient(EtcdConfig(endpoints=tuple(etcd.endpoints.split(","))))
    client.close()
    with pytest.raises(EtcdUnavailable, match="closed"):
        client.get("/anything")
    with pytest.raises(EtcdUnavailable, match="closed"):
        client.status(client.config.endpoints[0])


def test_the_keepalive_thread_survives_an_unexpected_error(client: EtcdClient) -> None:
    session = Session(client, ttl=1)
    original = client.lease_keepalive
    calls = 0

    def flaky(lease_id: int, **options: Any) -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("a bug below the session")
        return original(lease_id, **options)

    client.lease_keepalive = flaky  # type: ignore[method-assign]
    try:
        wait_until(lambda: calls >= 5, timeout=5, message="keep-alives after the errors")
        assert session._thread.is_alive() and not session.lost.is_set()
        assert session.time_left() > 0
    finally:
        client.lease_keepalive = original  # type: ignore[method-assign]
        session.close()


def test_a_failed_keepalive_reaches_the_failure_callback(client: EtcdClient) -> None:
    failures: list[Exception] = []
    reported = threading.Event()

    def on_failure(exc: Exception) -> None:
        failures.append(exc)
        reported.set()

    session = Session(client, ttl=1, on_keepalive_failure=on_failure)
    endpoint = _endpoint(client)
    endpoint.lease = _SilentLease(endpoint.lease)
    try:
        assert reported.wait(3)
    finally:
        endpoint.lease = endpoint.lease._real
    assert isinstance(failures[0], EtcdUnavailable)
    assert session._thread.is_alive()
    session.close()


def test_status_members_and_alarms_are_typed(client: EtcdClient) -> None:
    members = client.members()
    assert members and all(isinstance(m, ClusterMember) for m in members)
    ids = {m.id for m in members}
    assert all(m.client_urls and m.peer_urls and not m.is_learner for m in members)

    status = client.status()
    assert isinstance(status, MemberStatus)
    assert status.endpoint == client.endpoint
    assert status.member_id in ids and status.leader in ids and status.cluster_id
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", status.version)
    assert status.db_size > 0 and status.raft_index > 0 and status.raft_term > 0
    assert status.db_size_in_use is None or 0 < status.db_size_in_use <= status.db_size
    assert client.status(client.config.endpoints[0]).member_id == status.member_id

    alarms = client.alarms()
    assert alarms == [] and all(isinstance(a, Alarm) for a in alarms)


def test_status_of_an_endpoint_not_ours_is_a_config_error(client: EtcdClient) -> None:
    with pytest.raises(ConfigError):
        client.status("http://127.0.0.1:1")


def test_no_grpc_outside_the_boundary() -> None:
    # gRPC servers and their probe, not etcd clients: the worker's admin port, the
    # health port it shares with the relay, the container probe
    allowed = {"coordinator/worker/admin.py", "coordinator/grpchealth.py",
               "coordinator/cli/probe.py"}
    pattern = re.compile(r"^\s*(import grpc|from grpc\b|from etcd3\b|import etcd3)", re.M)
    found = []
    for top in ("coordinator", "devtools", "bench", "plugins", "solvers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith("coordinator/etcd/") or relative in allowed:
                continue
            if pattern.search(path.read_text()):
                found.append(relative)
    assert found == []
