"""What each city costs this worker: CPU seconds per second of its whole tick, smoothed.

A tick's cost is the CPU its tick thread spent on it (state load, an inline solve,
validation, its share of the commit: ``time.thread_time``) plus the CPU of a solve run
elsewhere (a solve thread or a solver process reports its own). Divided by the city's
period it is a rate, CPU seconds per second, comparable across cities of any period;
an exponentially weighted mean over about the last ``HORIZON`` seconds of ticks smooths
it. Not over the last twenty ticks, as before: a heavy solve's time swings from tick to
tick and for tens of seconds with what else the machine runs, and a short mean carried
its worker across the tolerance band and back, moving cities for nothing
(docs/operations.md, *Placement by cost*).

The rest of the process's CPU (gRPC's threads sending commits and receiving watch
events, the control loop) belongs to no tick: it is measured over windows and spread
over the cities in proportion to their own costs. Without it a worker of many small
cities costs more than its cities add up to, and placement overloads it. Not by tick
rate: part of it is the worker's own (keep-alives, the control loop) and stays when a
city leaves; spread by tick rate it made the light cities beside a capital look dearer
than they are, and each rebalance moved more of them away than it needed to, again and
again. A commit's bytes grow with the city too.

A city with no measurement yet is planned on a prior (``coordinator.plan_inputs``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["LoadMeter", "LoadReport"]

class LoadMeter:
    """Per-city smoothed cost of the ticks run here, the process's unbooked CPU shared
    out; thread-safe (tick threads write, the control loop reads)."""

    #: seconds of ticks a city's mean is over: each tick weighs ``1 - exp(-period /
    #: HORIZON)``, or ``1/n`` while that is more (its ``n``-th tick): a plain mean
    #: at first, so that a city's cost is known from its first tick on
    HORIZON = 100.0
    #: a city seeded with a cost measured elsewhere counts as this many ticks measured
    SEEDED = 10
    #: a city no longer ticked here is still reported this long (seconds), so that the
    #: fleet keeps its measurement while the new owner's own builds up
    KEEP = 30.0
    #: weight of each new window in the mean of the unbooked CPU
    WINDOW_ALPHA = 0.3
    #: the unbooked CPU shared out is at most this many times what the ticks booked
    OVERHEAD_CAP = 1.0

    def __init__(self, *, window: float = 5.0,
                 process_cpu: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``window``: seconds over which the unbooked CPU is measured; ``process_cpu``
        and ``clock``: this process's CPU seconds and the time (tests pass their own)."""
        self._lock = threading.Lock()
        self._clock = clock
        self._window_seconds = window
        self._cost: dict[str, float] = {}
        self._ticks: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self._process_cpu = process_cpu
        self._booked = 0.0                   # CPU of this process booked to ticks, in all
        self._window: tuple[float, float, float] | None = None  # (when, process, booked)
        self._unbooked: float | None = None  # smoothed, in cores

    def seed(self, city: str, cost: float) -> None:
        """Start a city's mean from a cost measured elsewhere (a city taken over)."""
        with self._lock:
            self._cost.setdefault(city, cost)
            self._ticks.setdefault(city, self.SEEDED)
            self._seen.setdefault(city, self._clock())

    def ticked(self, city: str, cpu_seconds: float, period: float, *,
               here: float | None = None) -> None:
        """Book one tick of ``city`` that used ``cpu_seconds`` in all, ``here`` of them
        (default all) on this process's threads rather than in a solver process."""
        period = max(period, 0.01)
        sample = max(cpu_seconds, 0.0) / period
        with self._lock:
            old = self._cost.get(city)
            ticks = self._ticks.get(city, 0) + 1
            self._ticks[city] = ticks
            weight = max(1.0 / ticks, -math.expm1(-period / self.HORIZON))
            self._cost[city] = sample if old is None else old + weight * (sample - old)
            self._seen[city] = self._clock()
            self._booked += max(cpu_seconds if here is None else here, 0.0)

    def costs(self) -> dict[str, float]:
        """The cities ticked here recently, each with its smoothed cost and its share of
        the unbooked CPU (in proportion to that cost, ``OVERHEAD_CAP`` at most)."""
        now = self._clock()
        with self._lock:
            for city in [c for c, seen in self._seen.items() if now - seen > self.KEEP]:
                del self._seen[city]
                self._cost.pop(city, None)
                self._ticks.pop(city, None)
            self._measure_unbooked(now)
            total = sum(self._cost.values())
            if not self._unbooked or not total:
                return dict(self._cost)
            scale = 1.0 + min(self._unbooked / total, self.OVERHEAD_CAP)
            return {c: cost * scale for c, cost in self._cost.items()}

    def unbooked(self) -> float:
        """The process's CPU no tick booked, smoothed, in cores (0 before a window)."""
        with self._lock:
            return self._unbooked or 0.0

    def _measure_unbooked(self, now: float) -> None:
        cpu = self._process_cpu()
        if self._window is None:
            self._window = (now, cpu, self._booked)
            return
        since, cpu0, booked0 = self._window
        if now - since < self._window_seconds:
            return
        sample = max((cpu - cpu0) - (self._booked - booked0), 0.0) / (now - since)
        old = self._unbooked
        self._unbooked = sample if old is None else old + self.WINDOW_ALPHA * (sample - old)
        self._window = (now, cpu, self._booked)


class LoadReport:
    """When this worker's costs are worth publishing again: at most every ``interval``
    seconds, and only when a city came or went, a cost changed notably (by more than
    ``change``, relative, and ``floor`` absolute), their sum by more than ``total``
    (relative), or a different set of moves waits, or waits for another reason: a steady
    fleet writes nothing. The sum's own threshold is finer: a capital's cost drifting by
    less than ``change`` is most of its worker's load, and the planner, seeing the old
    figure, left that worker over its bound (docs/operations.md, *Placement by cost*)."""

    def __init__(self, interval: float, change: float = 0.10, floor: float = 0.0005,
                 total: float = 0.02) -> None:
        self.interval = interval
        self.change = change
        self.floor = floor
        self.total = total
        self._published: dict[str, float] | None = None
        self._waiting: dict[str, str] = {}
        self._at = -float("inf")

    def due(self, costs: dict[str, float], now: float,
            waiting: dict[str, str] | None = None) -> bool:
        if now - self._at < self.interval:
            return False
        old = self._published
        if old is None or old.keys() != costs.keys() or \
                _kinds(waiting or {}) != _kinds(self._waiting):
            return True
        before = sum(old.values())
        if abs(sum(costs.values()) - before) > max(self.total * before, self.floor):
            return True
        return any(abs(cost - old[c]) > max(self.change * old[c], self.floor)
                   for c, cost in costs.items())

    def published(self, costs: dict[str, float], now: float,
                  waiting: dict[str, str] | None = None) -> None:
        self._published, self._at = dict(costs), now
        self._waiting = dict(waiting or {})

    def forget(self) -> None:
        """A new session: the old key died with the old lease; publish again."""
        self._published, self._at = None, -float("inf")


def _kinds(waiting: dict[str, str]) -> dict[str, str]:
    """City -> what it waits for ("churn budget", "cool-down", ...), not for how long."""
    return {city: why.partition(":")[0] for city, why in waiting.items()}
