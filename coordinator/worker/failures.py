"""What a failed tick leaves behind, by what failed it.

- Fenced out (etcd rejected the tick's fenced write: the city is someone else's now):
  the worker steps down from the city at once.
- etcd could not be reached: not the city's fault; a quick retry (``ETCD_RETRY``) so
  that the city decides the moment etcd is back. etcd's NOSPACE alarm (database over
  its quota) is handled the same way, but said as such: in the log, the city's status
  on the admin port and the ``dispatch_etcd_nospace`` gauge; the city decides again the
  moment an operator disarms the alarm, with no restart.
- The city's settings, its state, its plugins or its solver at fault (or a bug): the
  city backs off (its period doubling, up to ``max_backoff``) and its status says it is
  failing. It never stalls another city.
"""

from __future__ import annotations

import time

from coordinator.errors import (
    CitySettingsError,
    EtcdError,
    EtcdNoSpace,
    FencedOut,
    PluginError,
    SolverFailed,
    StateError,
)
from coordinator.logs import CityLog
from coordinator.recipes.campaigns import Campaigns
from coordinator.recipes.registry import CityRegistry
from coordinator.recipes.store import DecisionStore
from coordinator.worker.health import Tick
from coordinator.worker.metrics import Metrics, error_kind
from coordinator.worker.ownership import period_of
from coordinator.worker.ticker import Retry, TickResult

__all__ = ["FailurePolicy"]


class FailurePolicy:
    """Turns a tick's error into the ticker's answer, and books it."""

    def __init__(self, *, worker_id: str, max_backoff: float, registry: CityRegistry,
                 campaigns: Campaigns, store: DecisionStore, metrics: Metrics) -> None:
        self._worker_id = worker_id
        self._max_backoff = max_backoff
        self._registry = registry
        self._campaigns = campaigns
        self._store = store
        self._metrics = metrics
        #: fenced writes etcd rejected, over every city
        self.fenced_out = 0

    def after(self, tick: Tick, exc: Exception) -> TickResult:
        """The ticker's answer for ``tick``, failed with ``exc``: ``None`` once stepped
        down, a :class:`Retry` when etcd could not be reached, a backoff in seconds when
        the city is at fault."""
        clog = tick.clog
        if isinstance(exc, FencedOut):
            self._step_down(tick.city, clog, exc)
            return None
        self._metrics.solver_error(tick.city, error_kind(exc))
        if isinstance(exc, EtcdError):
            return self._unreachable(tick, clog, exc)
        if isinstance(exc, CitySettingsError | PluginError | StateError | SolverFailed):
            return self._at_fault(tick, clog, str(exc))
        clog.error("tick of %s failed unexpectedly", tick.city, exc_info=exc)
        return self._at_fault(tick, clog, f"internal error: {type(exc).__name__}: {exc}")

    def _step_down(self, city: str, clog: CityLog, exc: FencedOut) -> None:
        self.fenced_out += 1
        self._metrics.fenced(city)
        clog.warning("fenced out: %s; stepping down", exc)
        self._campaigns.drop(city, "fenced out by etcd")

    def _unreachable(self, tick: Tick, clog: CityLog, exc: EtcdError) -> Retry:
        """Try again soon, not a period later; the ticker drops the retry when the
        city's next tick comes first (an attempt that waited out its commit deadline is
        followed by that tick)."""
        health = tick.health
        nospace = isinstance(exc, EtcdNoSpace)
        retry = Retry(health.etcd_unreachable(time.monotonic() - tick.started,
                                              error=str(exc) if nospace else ""))
        if nospace:
            (clog.error if health.failures == 1 else clog.debug)(
                "etcd refuses the decisions of %s (%d in a row; trying again within "
                "%.1fs): %s", tick.city, health.failures, retry.seconds, exc)
            return retry
        (clog.warning if health.failures == 1 else clog.debug)(
            "tick of %s could not reach etcd (%d in a row; trying again within %.1fs): "
            "%s", tick.city, health.failures, retry.seconds, exc)
        return retry

    def _at_fault(self, tick: Tick, clog: CityLog, error: str) -> float:
        """Back off, and report the city failing (fenced: a deposed owner's report
        must not overwrite its successor's)."""
        city, leader, health = tick.city, tick.leader, tick.health
        first = not health.failing_with(error)
        delay = health.fault(error, period_of(self._registry, city), self._max_backoff)
        (clog.error if first else clog.info)(
            "tick of %s failed (%d in a row, retry in %.1fs): %s",
            city, health.failures, delay, error,
        )
        status = health.failing_status(city, self._worker_id, leader.token, delay)
        try:
            self._store.write_status(city, leader, status)
            health.reported(leader.token)
        except FencedOut as exc:
            self._step_down(city, clog, exc)
        except EtcdError as exc:
            clog.warning("could not record the failure of %s: %s", city, exc)
        return delay
