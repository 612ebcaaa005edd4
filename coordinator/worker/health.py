"""A city's health on this worker: its counters, its backoff and its status.

A :class:`CityHealth` is changed only through its own methods, each named for what
happened to the city (a tick decided, could not reach etcd, failed at the city's own
fault). The tick that owns the city at the moment calls them: a city's ticks never
overlap (``Ticker``), so its health needs no lock of its own. Readers on other threads
(the admin server, ``Worker.health``) take a :meth:`CityHealth.snapshot`; every field
is read atomically under the GIL, and a status is advisory, so a snapshot taken while a
tick finishes may pair one tick's error with the next one's count.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple

from coordinator.backoff import Backoff
from coordinator.logs import CityLog
from coordinator.recipes.election import LeaderKey
from coordinator.worker.messages import timestamp
from protos import dispatch_pb2 as pb

__all__ = ["ETCD_RETRY", "CityHealth", "HealthBook", "Tick"]

log = logging.getLogger("coordinator.worker")

#: A tick that could not reach etcd is tried again soon, not a period later: 0.2 s after
#: the first such failure, doubling up to 2 s, jittered 0.8–1.2, never sooner than the
#: failed tick took (a retry decides afresh and must not cost more than what it
#: retries). etcd being briefly unreachable is not the city's fault, and the city should
#: decide the moment etcd is back; the low cap keeps a long outage from holding cities
#: back once it is over (docs/worker.md).
ETCD_RETRY = Backoff(0.2, 2.0, jitter=0.4)


class CityHealth:
    """One city's failures, backoff and reported status, as this worker has seen them."""

    __slots__ = ("_error_since", "_failures", "_faults", "_last_decision_at",
                 "_last_error", "_previous_decision", "_quick", "_reported_token", "_ticks",
                 "_unreachable")

    def __init__(self) -> None:
        #: consecutive failed ticks, whatever failed them (the status, the logs)
        self._failures = 0
        #: of those, the latest run that could not reach etcd (the quick retry's doubling)
        self._unreachable = 0
        #: consecutive failures of the city's own making: its settings, state, plugins
        #: or solver (the backoff's doubling). Kept apart from ``_unreachable``: quick
        #: retries through an etcd outage are not the city's fault (docs/worker.md).
        self._faults = 0
        self._last_error = ""
        self._error_since = 0.0
        #: the leader token whose status etcd holds (written by us)
        self._reported_token = 0
        #: decisions composed here (a decision's ``tick``)
        self._ticks = 0
        #: when this worker last decided the city (wall clock; 0: never)
        self._last_decision_at = 0.0
        #: when the city was last decided, by us or by the worker before us (wall clock)
        self._previous_decision: float | None = None
        #: the last tick could neither block nor take long (``TickPipeline.prepare``)
        self._quick = False

    @property
    def failures(self) -> int:
        """Consecutive failed ticks."""
        return self._failures

    @property
    def ticks(self) -> int:
        """Decisions composed here (the latest one's ``Decision.tick``)."""
        return self._ticks

    @property
    def quick(self) -> bool:
        """Whether the city's next tick may run in a group (its last one was quick)."""
        return self._quick

    def snapshot(self) -> tuple[str, int, float]:
        """(last error, consecutive failures, time of our last decision)."""
        return self._last_error, self._failures, self._last_decision_at

    # -- a tick under way ---------------------------------------------------------------

    def took_over(self, decided_at: float) -> None:
        """The city's latest decision, found when we start ticking it (wall clock)."""
        self._previous_decision = decided_at

    def found_quick(self, quick: bool) -> None:
        """What the tick under way found out: whether it could block or take long."""
        self._quick = quick

    def next_tick(self) -> int:
        """Count a composed decision; its number (``Decision.tick``)."""
        self._ticks += 1
        return self._ticks

    def ok_status(self, city: str, worker_id: str, token: int) -> pb.CityStatus | None:
        """The "ok" status a decision is committed with: after failed ticks, or the
        first under ``token``; ``None`` when etcd's status is ours and ok already."""
        if not self._failures and self._reported_token == token:
            return None
        return pb.CityStatus(city=city, worker_id=worker_id, token=token, state="ok",
                             updated_at=timestamp(time.time()))

    def decided(self, now: float, token: int) -> float | None:
        """etcd accepted a decision made under ``token`` at ``now`` (wall clock): the
        city is healthy again. Returns the seconds since the city's previous decision,
        ``None`` for the first one seen."""
        previous, self._previous_decision = self._previous_decision, now
        self._failures, self._unreachable, self._faults = 0, 0, 0
        self._last_error = ""
        self._reported_token = token
        self._last_decision_at = now
        return None if previous is None else now - previous

    # -- a failed tick ------------------------------------------------------------------

    def etcd_unreachable(self, spent: float, *, error: str = "") -> float:
        """A tick that took ``spent`` seconds could not reach etcd: seconds until the
        quick retry (``ETCD_RETRY``). ``error``: what to show as the city's last error
        (etcd answering but refusing every write: its NOSPACE alarm)."""
        if error:
            self._last_error = error
        self._failures += 1
        self._unreachable += 1
        return ETCD_RETRY.delay(self._unreachable, floor=spent)

    def failing_with(self, error: str) -> bool:
        """Whether the city's last tick failed with this same ``error``."""
        return self._failures > 0 and error == self._last_error

    def fault(self, error: str, period: float, max_backoff: float) -> float:
        """A tick failed at the city's own fault: seconds until its next tick, the
        period doubling with each such failure in a row, up to ``max_backoff``,
        jittered 0.75–1.25."""
        if self._failures == 0:
            self._error_since = time.time()
        self._failures += 1
        self._faults += 1
        self._unreachable = 0
        self._last_error = error
        backoff = Backoff(min(period, max_backoff), max_backoff, jitter=0.5)
        return backoff.delay(self._faults)

    def failing_status(self, city: str, worker_id: str, token: int,
                       retry_in: float) -> pb.CityStatus:
        """The "failing" status that reports the latest :meth:`fault`."""
        return pb.CityStatus(
            city=city, worker_id=worker_id, token=token, state="failing",
            last_error=self._last_error, error_since=timestamp(self._error_since),
            consecutive_failures=self._failures, updated_at=timestamp(time.time()),
            retry_in_seconds=round(retry_in, 3),
        )

    def reported(self, token: int) -> None:
        """etcd holds the status we wrote under ``token``."""
        self._reported_token = token


class HealthBook:
    """Every city's :class:`CityHealth` on this worker (kept for the worker's life)."""

    def __init__(self) -> None:
        self._cities: dict[str, CityHealth] = {}
        #: guards adding a city against readers going through them all
        self._lock = threading.Lock()

    def of(self, city: str) -> CityHealth:
        """The city's health, made on its first tick. A plain dict read after that."""
        health = self._cities.get(city)
        if health is None:
            with self._lock:
                health = self._cities.setdefault(city, CityHealth())
        return health

    def quick(self, city: str) -> bool:
        """Whether the city's last tick was quick (asked by the ticker, under its lock:
        a dict read, atomic under the GIL)."""
        health = self._cities.get(city)
        return health is not None and health.quick

    def snapshot(self, city: str) -> tuple[str, int, float]:
        """:meth:`CityHealth.snapshot` of a city; a city never ticked here is healthy."""
        health = self._cities.get(city)
        return ("", 0, 0.0) if health is None else health.snapshot()

    def ticks(self) -> int:
        """Decisions composed here, over every city."""
        with self._lock:
            cities = list(self._cities.values())
        return sum(health.ticks for health in cities)


class Tick(NamedTuple):
    """One tick of one city under way."""

    city: str
    leader: LeaderKey
    health: CityHealth
    #: when the tick was due, and when it began (monotonic)
    due: float
    started: float

    @property
    def clog(self) -> CityLog:
        """The city's logger (made when needed: most ticks log nothing)."""
        return CityLog(log, self.city, self.leader.token)
