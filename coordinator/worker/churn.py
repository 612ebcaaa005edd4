"""The churn budget: how many planned moves this worker may start, and when.

Every worker computes the same plan, and a planned move starts only when the city's
leader hands it over (``Ownership``). So the giver is the one place to count moves:
each worker allows itself its share of the fleet's ``moves_per_minute`` (the budget
over the number of active workers), as a token bucket that holds at most one share.
The shares add up to the fleet's budget whatever the moment each worker spends them, with
no shared clock or counter in etcd. A worker's view of the fleet size may lag a join or
a leave by a watch event; for that moment the sum may exceed the budget by one share.

A city taken over here is not handed over again within ``cooldown`` seconds, so a city
never moves twice within it. Cities of a dead worker are not moves: its standbys take
them over by election when its lease expires, and nothing here delays that.

Undoing a failure is not churn either. A city placed by a failure rather than by the
plan, taken because the lease of its last writer is gone (after etcd stalled past the
TTL, one survivor may hold most of the fleet's cities) or taken from nobody while the
session was young (its first ``2 × TTL``: workers started together each see the others
a moment late), gets its first move free of the budget and of the cool-down if it starts
within ``forming`` seconds (``4 × TTL``) of the take (``formed``), so the fleet settles
at once. A change of members within that time starts it again (``members_changed``):
workers coming back from a pause return after their cities failed over, and only then
can the cities go back. Later it is an ordinary move: a city that sat where the fleet
formed for an hour is not moved for free by the first rebalance (nor when a worker joins
long after).
"""

from __future__ import annotations

import threading
import time

__all__ = ["ChurnBudget"]


class ChurnBudget:
    def __init__(self, moves_per_minute: float, cooldown: float,
                 forming: float = 20.0) -> None:
        self.moves_per_minute = moves_per_minute
        self.cooldown = cooldown
        self.forming = forming
        self._lock = threading.Lock()
        self._tokens: float | None = None  # full at the first look
        self._refilled = time.monotonic()
        self._arrived: dict[str, float] = {}
        self._forming: dict[str, float] = {}  # city -> when it was taken, forming
        #: moves started here since the worker started
        self.spent = 0

    def arrived(self, city: str) -> None:
        """``city`` was just handed to us: its cool-down starts now."""
        with self._lock:
            self._arrived[city] = time.monotonic()

    def formed(self, city: str) -> None:
        """``city`` was placed by a failure (its writer's lease gone, or nobody there
        while the fleet forms): its first move is free, if it comes within ``forming``
        seconds."""
        with self._lock:
            self._forming[city] = time.monotonic()

    def members_changed(self) -> None:
        """The fleet's members changed: the free first moves not yet expired last
        ``forming`` seconds from now (the ones expired are forgotten)."""
        now = time.monotonic()
        with self._lock:
            self._forming = {city: now for city, taken in self._forming.items()
                             if now - taken <= self.forming}

    def take(self, city: str, fleet: int) -> str | None:
        """Spend one move on ``city`` and return ``None``, or say why it must wait
        (``fleet``: the active workers sharing the budget)."""
        now = time.monotonic()
        share = self.moves_per_minute / max(fleet, 1)
        with self._lock:
            formed = self._forming.pop(city, None)
            if formed is not None and now - formed <= self.forming:
                return None
            arrived = self._arrived.get(city)
            if arrived is not None and now - arrived < self.cooldown:
                return f"cool-down: moved here {now - arrived:.0f}s ago " \
                       f"(--move-cooldown {self.cooldown:.0f}s)"
            capacity = max(share, 1.0)
            tokens = capacity if self._tokens is None else min(
                capacity, self._tokens + (now - self._refilled) * share / 60.0)
            self._tokens, self._refilled = tokens, now
            if tokens < 1.0:
                return f"churn budget: {share:.1f} moves/min for this worker " \
                       f"(--moves-per-minute {self.moves_per_minute:g} over {fleet} workers)"
            self._tokens = tokens - 1.0
            self._arrived.pop(city, None)
            self.spent += 1
            return None
