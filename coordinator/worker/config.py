"""A worker's settings: who it is, where it works, how much it takes on."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

__all__ = ["WorkerConfig", "default_worker_id"]


def default_worker_id() -> str:
    """``<short hostname>-<pid>``: unique on a host, readable in logs and decisions."""
    host = socket.gethostname().split(".")[0] or "worker"
    return f"{host}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str = field(default_factory=default_worker_id)
    namespace: str = "/dispatch"
    lease_ttl: int = 5
    labels: dict[str, str] = field(default_factory=dict)
    capacity: float = 1.0
    tick_threads: int = 8
    #: cities' ticks are phased onto a grid whose step is at most this long (``Ticker``'s
    #: quantum), so ticks due together run as one burst; 0: every tick at its due time
    tick_slack: float = 0.1
    admin_address: str = ""
    #: hot standby candidates each city keeps queued on other workers
    standbys: int = 1
    #: "process": solves run in a pool of solver processes (safe for solvers that hold
    #: the GIL or hang); "thread": in this process
    solve_isolation: str = "process"
    solve_processes: int | None = None
    #: share of a city's period a solve may use; past ``hang_factor`` × budget it is
    #: abandoned
    budget_fraction: float = 0.8
    hang_factor: float = 2.0
    #: serve Prometheus metrics / the gRPC health+admin service on these ports (0: any)
    metrics_port: int | None = None
    admin_port: int | None = None
    #: the longest a city at fault waits between ticks (its backoff's cap)
    max_backoff: float = 30.0
    #: where the ``postgres`` and ``http`` state sources read (kept out of etcd)
    state_postgres_url: str = ""
    state_http_url: str = ""
    #: PostgreSQL URL of the state archive (the postgres sink's database) where the
    #: states of cities with ``archiveState`` go; None: such cities' ticks fail
    archive_url: str | None = None
    #: "cost": plan on each city's measured cost (CPU seconds per second); "count": give
    #: every worker the same number of cities (kept to compare the two)
    placement: str = "cost"
    #: placing by cost, a worker may carry up to (1 + tolerance) x its share, and no
    #: city moves while none is over that bound
    tolerance: float = 0.10
    #: planned moves (graceful handovers) per minute across the fleet; a city whose
    #: owner died is taken at once, outside this budget
    moves_per_minute: float = 60.0
    #: a city that moved is not moved again for this many seconds
    move_cooldown: float = 15.0
    #: placing by cost, seconds an imbalance beyond the tolerance must last before
    #: cities move to correct it (a worker joining, leaving or draining moves at once)
    rebalance_delay: float = 30.0
    #: how often the measured costs are published at most (seconds)
    load_interval: float = 5.0
