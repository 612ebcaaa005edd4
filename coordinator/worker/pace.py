"""Steady pace: a decision released at a steady offset after its tick's due time.

A city's decisions come one period apart plus the difference between two consecutive
tick durations, and a heavy solve's time varies with what else the machine runs: its
gaps do too, although every tick starts on time (docs/worker.md, *Steady pace*). A
city with ``steadyPace`` holds each decision until a steady offset after its tick's due
time, the 99th percentile of its recent tick durations: its gaps are then the period,
bar the rare tick slower than that, at the cost of the hold's latency. The *logical
execution time* of real-time systems: outputs leave at a fixed time after their inputs.

The hold never passes the solve budget, and a city with fewer than ``WARM`` ticks
measured here is not held.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["Pacer"]


class Pacer:
    """Per-city release times; thread-safe (tick threads call it)."""

    #: ticks remembered per city, and how many before any hold
    WINDOW = 100
    WARM = 10
    QUANTILE = 0.99

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._durations: dict[str, deque[float]] = {}

    def release_at(self, city: str, due: float, ready: float, limit: float) -> float:
        """When to release the decision of ``city``'s tick due at ``due`` and ready at
        ``ready`` (monotonic seconds): ``due`` plus the city's recent high quantile of
        tick durations, at most ``limit`` seconds after ``due``, never before ``ready``.
        Books this tick's duration for the ticks to come."""
        with self._lock:
            durations = self._durations.setdefault(city, deque(maxlen=self.WINDOW))
            offset = _quantile(durations, self.QUANTILE) if len(durations) >= self.WARM \
                else 0.0
            durations.append(max(ready - due, 0.0))
        return max(ready, due + min(offset, limit))


def _quantile(values: deque[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]
