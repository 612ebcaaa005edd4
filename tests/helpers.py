"""Small helpers shared by the worker tests: dispatchctl, decisions, in-process workers."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coordinator.codec import decode
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.worker import Worker, WorkerConfig
from protos import dispatch_pb2 as pb


def dispatchctl(endpoints: str, namespace: str, *args: str,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli.ctl", "--etcd", endpoints,
         "--namespace", namespace, *args],
        capture_output=True, text=True, timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dispatchctl {' '.join(args)} failed: {result.stderr}")
    return result


def decision(client: EtcdClient, keys: Keys, city: str) -> pb.Decision | None:
    kv = client.get(keys.decision(city))
    return None if kv is None else decode(pb.Decision, kv.value)


def status(client: EtcdClient, keys: Keys, city: str) -> pb.CityStatus | None:
    kv = client.get(keys.status(city))
    return None if kv is None else decode(pb.CityStatus, kv.value)


@contextmanager
def running_worker(endpoints: str, namespace: str, worker_id: str = "w1", *,
                   prepare: Callable[[Worker], None] | None = None,
                   **options: object) -> Iterator[Worker]:
    """A worker running in this process (for tests that need no kill or pause);
    ``prepare`` sees it before it starts."""
    client = EtcdClient(EtcdConfig(endpoints=tuple(endpoints.split(","))))
    worker = Worker(client, WorkerConfig(worker_id=worker_id, namespace=namespace,
                                         **options))  # type: ignore[arg-type]
    if prepare is not None:
        prepare(worker)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(20)
        client.close()
