"""etcd's quota filled: the NOSPACE alarm said as such, and deciding resumes by itself.

A private etcd with a 1 MiB ``--quota-backend-bytes`` (the shared one must not be
filled), one real worker process, one city. Ballast keys fill the database until etcd
raises NOSPACE and refuses every write; the worker must keep its lease, say exactly
what is wrong (its log, the ``dispatch_etcd_nospace`` gauge, ``dispatchctl status`` and
``dispatchctl doctor``), and decide again by itself once the test, as the operator,
deletes the ballast, compacts, defragments and disarms. See docs/safety.md, "etcd as
operators run it".
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.errors import EtcdNoSpace
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from tests.conftest import WorkerProcess, wait_until
from tests.etcd_server import EtcdCluster, free_port
from tests.helpers import decision, dispatchctl

QUOTA = 1 << 20


@pytest.fixture
def small_etcd() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(1, extra_args=["--quota-backend-bytes", str(QUOTA)]).start()
    yield cluster
    cluster.close()


def _gauge(port: int) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("dispatch_etcd_nospace "):
                return float(line.split()[1])
    return None


def fill(client: EtcdClient, prefix: str) -> int:
    """Put 100 kB ballast keys until etcd refuses with NOSPACE; how many it took."""
    for n in range(1000):
        try:
            client.put(f"{prefix}{n:04d}", b"x" * 100_000)
        except EtcdNoSpace:
            return n
    raise AssertionError("etcd took 100 MB under a 1 MiB quota")


def clear(cluster: EtcdCluster, client: EtcdClient, prefix: str) -> None:
    """What the operator does: free the space, compact, defragment, disarm."""
    client.delete(prefix, prefix=True)
    _, revision = client.range(prefix, prefix=True, count_only=True)
    cluster.etcdctl("compact", str(revision), "--physical")
    cluster.etcdctl("defrag")
    cluster.etcdctl("alarm", "disarm")


def test_a_full_quota_is_reported_and_deciding_resumes_once_disarmed(
        small_etcd: EtcdCluster, namespace: str, tmp_path: Path) -> None:
    keys = Keys(namespace)
    client = EtcdClient(EtcdConfig(endpoints=(small_etcd.endpoints,), timeout=5.0))
    port = free_port()
    worker = WorkerProcess(small_etcd.endpoints, namespace, "w1", tmp_path,
                           "--metrics-port", str(port), "--solve-isolation", "thread")
    try:
        dispatchctl(small_etcd.endpoints, namespace, "city", "add", "paris", "--solver",
                    "greedy", "--period", "0.3", "--param", "orders=5", "--param",
                    "couriers=3")
        first = wait_until(lambda: decision(client, keys, "paris"), message="a decision")
        assert first is not None
        ballast = namespace + "-ballast/"
        assert fill(client, ballast) > 0
        assert [a.kind for a in client.alarms()] == ["NOSPACE"]
        wait_until(lambda: "NOSPACE" in worker.log(), message="the worker to say NOSPACE")
        wait_until(lambda: _gauge(port) == 1.0, message="dispatch_etcd_nospace 1")
        # the operator's tools say it too, though etcd 3.5 refuses even their read-only
        # transaction now
        status = dispatchctl(small_etcd.endpoints, namespace, "status")
        assert "etcd alarm NOSPACE" in status.stdout, status.stdout
        as_json = json.loads(dispatchctl(small_etcd.endpoints, namespace, "status",
                                         "--json").stdout)
        assert as_json["etcdAlarms"] == ["NOSPACE"]
        doctor = dispatchctl(small_etcd.endpoints, namespace, "doctor", check=False)
        assert "NOSPACE" in doctor.stdout and doctor.returncode != 0, doctor.stdout
        stuck = decision(client, keys, "paris")
        assert stuck is not None and stuck.token == first.token  # the lease held

        clear(small_etcd, client, ballast)
        resumed = wait_until(
            lambda: (d := decision(client, keys, "paris")) is not None
            and d.decided_at.ToNanoseconds() > stuck.decided_at.ToNanoseconds() and d,
            timeout=10, message="a decision after the alarm was disarmed")
        assert resumed and resumed.token == first.token, "same lease, no restart"  # type: ignore[union-attr]
        wait_until(lambda: _gauge(port) == 0.0, message="dispatch_etcd_nospace 0")
        assert worker.process.poll() is None
    finally:
        worker.close()
        client.close()
