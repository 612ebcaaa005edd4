"""What each city costs this worker: CPU seconds per second of its whole tick, smoothed.

A tick's cost is the CPU its tick thread spent on it (state load, an inline solve,
validation, its share of the commit: ``time.thread_time``) plus the CPU of a solve run
elsewhere (a solve thread or a solver process reports its own). Divided by the city's
period it is a rate, CPU seconds per second, comparable across cities of any period;
an exponentially weighted mean over ticks smooths it.

A city with no measurement yet is planned on a prior (``coordinator.plan_inputs``).
"""

from __future__ import annotations

import threading
import time

__all__ = ["LoadMeter", "LoadReport"]

class LoadMeter:
    """Per-city smoothed cost of the ticks run here; thread-safe (tick threads write,
    the control loop reads)."""

    #: weight of the newest tick in the mean (about the last twenty ticks count: a solve's
    #: time varies from tick to tick with the shape of the state, and placement must not)
    ALPHA = 0.1
    #: a city no longer ticked here is still reported this long (seconds), so that the
    #: fleet keeps its measurement while the new owner's own builds up
    KEEP = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cost: dict[str, float] = {}
        self._seen: dict[str, float] = {}

    def seed(self, city: str, cost: float) -> None:
        """Start a city's mean from a cost measured elsewhere (a city taken over)."""
        with self._lock:
            self._cost.setdefault(city, cost)
            self._seen.setdefault(city, time.monotonic())

    def ticked(self, city: str, cpu_seconds: float, period: float) -> None:
        """Book one tick of ``city`` that used ``cpu_seconds`` in all."""
        sample = max(cpu_seconds, 0.0) / max(period, 0.01)
        with self._lock:
            old = self._cost.get(city)
            self._cost[city] = sample if old is None else old + self.ALPHA * (sample - old)
            self._seen[city] = time.monotonic()

    def costs(self) -> dict[str, float]:
        """The cities ticked here recently, each with its smoothed cost."""
        now = time.monotonic()
        with self._lock:
            for city in [c for c, seen in self._seen.items() if now - seen > self.KEEP]:
                del self._seen[city]
                self._cost.pop(city, None)
            return dict(self._cost)


class LoadReport:
    """When this worker's costs are worth publishing again: at most every ``interval``
    seconds, and only when a city came or went or a cost changed notably (by more than
    ``change``, relative, and ``floor`` absolute): a steady fleet writes nothing."""

    def __init__(self, interval: float, change: float = 0.10, floor: float = 0.0005) -> None:
        self.interval = interval
        self.change = change
        self.floor = floor
        self._published: dict[str, float] | None = None
        self._at = -float("inf")

    def due(self, costs: dict[str, float], now: float) -> bool:
        if now - self._at < self.interval:
            return False
        old = self._published
        if old is None or old.keys() != costs.keys():
            return True
        return any(abs(cost - old[c]) > max(self.change * old[c], self.floor)
                   for c, cost in costs.items())

    def published(self, costs: dict[str, float], now: float) -> None:
        self._published, self._at = dict(costs), now

    def forget(self) -> None:
        """A new session: the old key died with the old lease; publish again."""
        self._published, self._at = None, -float("inf")
