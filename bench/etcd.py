"""A benchmark's private etcd: starting it, a client for it, its /metrics, cities in it.

Importing this module makes SIGTERM and SIGHUP end a benchmark the way Ctrl-C does, so
the etcd servers and worker processes it started are stopped on the way out.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from devtools.localetcd import EtcdCluster


def server_args(retention: int = 20000, snapshot_count: int = 10000) -> list[str]:
    """etcd's flags for benchmarks: history bounded to ``retention`` revisions (decisions
    are rewritten every second), room so a long run never trips the space quota, and the
    raft log held in memory between snapshots bounded (docs/operations.md)."""
    return ["--auto-compaction-mode", "revision", "--auto-compaction-retention",
            str(retention), "--quota-backend-bytes", str(8 * 1024**3),
            "--snapshot-count", str(snapshot_count)]


ETCD_ARGS = server_args()


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP end a benchmark like Ctrl-C does: through its ``finally`` blocks,
    which stop its worker processes and etcd servers. Without this, ``kill <pid>`` or
    ``timeout`` left them running (each worker in a session of its own)."""
    raise SystemExit(128 + signum)


if threading.current_thread() is threading.main_thread():
    for _signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(_signum) in (signal.SIG_DFL, None):
            signal.signal(_signum, _exit_on_signal)


def start(members: int = 1, args: Sequence[str] = ETCD_ARGS) -> EtcdCluster:
    """A started etcd cluster on loopback with the benchmarks' settings (or ``args``
    instead); close it."""
    return EtcdCluster(members, extra_args=list(args)).start()


@contextlib.contextmanager
def cluster(members: int = 1, args: Sequence[str] = ETCD_ARGS) -> Iterator[EtcdCluster]:
    """:func:`start`, closed on the way out."""
    started = start(members, args)
    try:
        yield started
    finally:
        started.close()


def client_for(endpoints: str, timeout: float = 5.0) -> EtcdClient:
    return EtcdClient(EtcdConfig(endpoints=tuple(endpoints.split(",")), timeout=timeout))


def pid(started: EtcdCluster, index: int = 0) -> int:
    """The process id of one member (to measure its CPU and memory)."""
    process = started.members[index].process
    assert process is not None
    return process.pid


# -- /metrics -------------------------------------------------------------------------------

def scrape(url: str) -> dict[str, float]:
    """etcd's /metrics (served on its client URL) as ``{series: value}``."""
    text = urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def grpc_requests(metrics: dict[str, float]) -> dict[str, float]:
    """Requests etcd received, by method: unary calls handled plus stream messages
    (``LeaseKeepAlive``, ``Watch``) received."""
    out: dict[str, float] = defaultdict(float)
    for series, value in metrics.items():
        if series.startswith("grpc_server_handled_total{"):
            labels = dict(_LABEL.findall(series))
            if labels.get("grpc_type") == "unary":
                out[labels["grpc_method"]] += value
        elif series.startswith("grpc_server_msg_received_total{"):
            labels = dict(_LABEL.findall(series))
            if labels.get("grpc_type") == "bidi_stream":
                out[labels["grpc_method"]] += value
    return dict(out)


def metric(metrics: dict[str, float], name: str) -> float:
    """The sum of a metric over all its label sets."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


@dataclass
class MetricsDelta:
    """The change of etcd's counters between two scrapes."""

    seconds: float
    requests: dict[str, float]
    mvcc: dict[str, float]
    cpu_seconds: float

    @property
    def total_requests(self) -> float:
        return sum(v for k, v in self.requests.items() if k not in ("Watch",))

    def rate(self) -> float:
        return self.total_requests / self.seconds if self.seconds else math.nan


class EtcdMeter:
    """Scrape etcd's /metrics now and later; report what happened in between."""

    MVCC = ("etcd_mvcc_txn_total", "etcd_mvcc_put_total", "etcd_mvcc_range_total",
            "etcd_mvcc_delete_total", "etcd_server_proposals_committed_total",
            "etcd_disk_wal_fsync_duration_seconds_count")

    def __init__(self, url: str) -> None:
        self.url = url
        self._start = scrape(url)
        self._t0 = time.monotonic()

    def delta(self) -> MetricsDelta:
        end = scrape(self.url)
        seconds = time.monotonic() - self._t0
        a, b = grpc_requests(self._start), grpc_requests(end)
        requests = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
        requests = {k: v for k, v in requests.items() if v}
        mvcc = {k: metric(end, k) - metric(self._start, k) for k in self.MVCC}
        cpu = metric(end, "process_cpu_seconds_total") \
            - metric(self._start, "process_cpu_seconds_total")
        return MetricsDelta(seconds, requests, mvcc, cpu)


# -- cities ---------------------------------------------------------------------------------

def put_cities(client: EtcdClient, keys: Keys, names: Sequence[str], *, solver: str,
               period: float, params: dict[str, Any] | None = None,
               state_source: str = "simulated", steady_pace: bool = False) -> None:
    """Create cities, as ``dispatchctl city add`` would (64 puts per transaction)."""
    ops = [client.op_put(keys.city(name), CityConfig(
        city=name, solver=solver, period=period, state_source=state_source,
        params=dict(params or {}), steady_pace=steady_pace).encode()) for name in names]
    for i in range(0, len(ops), 64):
        client.txn([], ops[i:i + 64])


def city_names(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]
