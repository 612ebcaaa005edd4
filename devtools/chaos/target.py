"""What a fault needs from the harness: the small protocol that opens the chaos circle.

The faults (``devtools.chaos.faults``) break things through :class:`ChaosTarget` alone —
kill, stop or continue a worker or a relay, cut or slow their links, kill or pause an
etcd member, restart PostgreSQL, stall a city's solver — and never import the harness
that implements it (``devtools.chaos.harness.Harness``, with ``fleet.WorkerSlot`` and
``fleet.Etcd`` for the workers and the cluster, ``sink.RelaySlot`` and
``devtools.localpg.LocalPostgres`` for the relays and their database), as
``coordinator.worker.admin.AdminTarget`` stands between the admin server and the worker.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from coordinator.settings import CityConfig

if TYPE_CHECKING:
    from devtools.localetcd import EtcdMember

__all__ = ["ChaosTarget", "EtcdTarget", "LinkTarget", "PostgresTarget", "RelayTarget",
           "WorkerTarget"]


class LinkTarget(Protocol):
    """One worker's roads to etcd (``devtools.proxy.ProxyGroup``), or one relay's road to
    PostgreSQL (``devtools.proxy.Proxy``)."""

    def cut(self) -> None: ...

    def restore(self) -> None: ...

    def stall(self) -> None: ...

    def unstall(self) -> None: ...

    def slow(self, delay: float) -> None: ...


class WorkerTarget(Protocol):
    """One worker process slot (``fleet.WorkerSlot``)."""

    #: set while a fault keeps the worker down on purpose (not a crash)
    expected_down: bool

    @property
    def worker_id(self) -> str: ...

    @property
    def process(self) -> subprocess.Popen[bytes] | None: ...

    @property
    def proxies(self) -> LinkTarget: ...

    def start(self) -> None: ...

    def kill(self) -> None: ...

    def terminate(self, timeout: float) -> bool: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def solver_processes(self) -> list[int]: ...

    def kill_child(self, pid: int) -> None: ...


class RelayTarget(Protocol):
    """One ``dispatch-relay`` process slot (``sink.RelaySlot``)."""

    #: set while a fault keeps the relay down on purpose (not a crash)
    expected_down: bool

    @property
    def relay_id(self) -> str: ...

    @property
    def link(self) -> LinkTarget:
        """Its connection to PostgreSQL."""

    def start(self) -> None: ...

    def kill(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class PostgresTarget(Protocol):
    """The relays' database server (``devtools.localpg.LocalPostgres``)."""

    def stop(self, timeout: float = ...) -> None:
        """Fast shutdown: open sessions are terminated."""

    def kill(self) -> None:
        """SIGKILL, as a crash: the next start runs crash recovery."""

    def restart(self, timeout: float = ...) -> None:
        """Start again on the same port (stopping it first if it runs)."""


class EtcdTarget(Protocol):
    """The etcd cluster (``fleet.Etcd``)."""

    @property
    def members(self) -> Sequence[EtcdMember]: ...

    def member(self, index: int) -> EtcdMember: ...

    def leader(self) -> EtcdMember | None: ...

    def kill(self, member: EtcdMember) -> None: ...

    def restart(self, member: EtcdMember) -> None: ...

    def pause(self, member: EtcdMember) -> None: ...

    def resume(self, member: EtcdMember) -> None: ...

    def stop_member(self, member: EtcdMember) -> None: ...

    def start_member(self, member: EtcdMember) -> None: ...

    def replace(self, member: EtcdMember) -> str: ...

    def isolate(self, member: EtcdMember) -> None: ...

    def heal_links(self) -> None: ...

    def has_quorum(self) -> bool: ...

    def wait_healthy(self, timeout: float, stop: threading.Event | None = None) -> bool: ...


class ChaosTarget(Protocol):
    """The fleet under faults, and the run's bookkeeping that a fault reports to."""

    @property
    def turn(self) -> threading.Lock | None:
        """Held while a fault that concerns every city is in place (None: overlap)."""

    @property
    def ttl(self) -> int:
        """The workers' lease TTL in seconds."""

    @property
    def recovery_margin(self) -> float:
        """Seconds on top of the TTL that a fault's after-effects are left to fade."""

    @property
    def workers(self) -> Sequence[WorkerTarget]: ...

    @property
    def etcd(self) -> EtcdTarget: ...

    @property
    def relays(self) -> Sequence[RelayTarget]:
        """The relays (none: the run has no sink, and no sink faults)."""

    @property
    def postgres(self) -> PostgresTarget | None: ...

    def active_relay(self) -> RelayTarget | None:
        """The relay that leads its sink's election now, as etcd says (None: unknown)."""

    @property
    def slow_cities(self) -> Sequence[CityConfig]:
        """The cities on the ``test-slow`` solver (targets of ``slow-solve``)."""

    def put_settings(self, config: CityConfig) -> None:
        """Write a city's settings, retrying while etcd cannot take the write."""

    def record_no_quorum(self, lost: float, regained: float) -> None:
        """A window with no etcd majority: left out of availability."""

    def emit(self, message: str) -> None: ...

    def problem(self, message: str) -> None: ...

    def heal(self) -> None:
        """Undo every fault still in place."""
