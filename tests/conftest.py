"""Fixtures that start real etcd and PostgreSQL servers; nothing here mocks either."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from devtools.localpg import LocalPostgres
from tests.etcd_server import BINARIES, EtcdCluster

_ETCD_VERSION = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Fail at once, in one line, when the etcd that ``DISPATCH_TEST_ETCD`` selects
    (``devtools.localetcd``) is missing or is another version."""
    try:
        config.stash[_ETCD_VERSION] = BINARIES.check()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_report_header(config: pytest.Config) -> str:
    return f"etcd {config.stash.get(_ETCD_VERSION, '?')} ({BINARIES.etcd})"


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdCluster]:
    """One etcd member shared by the session; tests isolate by namespace."""
    cluster = EtcdCluster(1).start()
    yield cluster
    cluster.close()


@pytest.fixture
def cluster3() -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster a test may break."""
    cluster = EtcdCluster(3).start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One PostgreSQL server shared by the session (started on first use); tests isolate
    by database. Missing binaries fail loudly: `make test` installs them."""
    server = LocalPostgres().start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return postgres_server.create_database(f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def namespace() -> str:
    return f"/test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


@pytest.fixture
def client(etcd: EtcdCluster) -> Iterator[EtcdClient]:
    c = EtcdClient(EtcdConfig(endpoints=tuple(etcd.endpoints.split(",")), timeout=5.0))
    yield c
    c.close()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.05, message: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


class WorkerProcess:
    """A real ``dispatch-worker`` process (for kill -9, SIGSTOP, SIGTERM)."""

    def __init__(self, endpoints: str, namespace: str, worker_id: str, log_dir: Path,
                 *extra: str, ttl: int = 2) -> None:
        self.worker_id = worker_id
        self.log_path = log_dir / f"{worker_id}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli.worker", "--etcd", endpoints,
             "--namespace", namespace, "--worker-id", worker_id, "--lease-ttl", str(ttl),
             *extra],
            stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()


@pytest.fixture
def spawn_worker(etcd: EtcdCluster, namespace: str,
                 tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def spawn(worker_id: str, *extra: str, ttl: int = 2, endpoints: str | None = None,
              ns: str | None = None) -> WorkerProcess:
        w = WorkerProcess(endpoints or etcd.endpoints, ns or namespace, worker_id, tmp_path,
                          *extra, ttl=ttl)
        workers.append(w)
        return w

    yield spawn
    for w in workers:
        w.close()
    if os.environ.get("DISPATCH_TEST_SHOW_LOGS"):
        for w in workers:
            print(f"---- {w.worker_id}\n{w.log()}")


@pytest.fixture
def linked_cluster3() -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster whose members reach each other through
    ``devtools.peerlink`` proxies (``cluster.links``): a test may cut members apart
    while every member still answers clients."""
    cluster = EtcdCluster(3, peer_links=True).start()
    yield cluster
    cluster.close()
