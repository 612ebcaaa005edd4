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

Undoing a failure is not churn either; these moves are free of the budget (a city
placed by a failure has no cool-down):
- **Giving back what a failure brought.** A city taken because the lease of its last
  writer is gone (``failed_over``: after etcd stalled past the TTL, or its workers were
  paused, one survivor may hold most of the fleet's cities) is owed to that writer, by
  worker id. While this worker owes a worker cities, its moves to that worker are free,
  one per city owed, whichever cities the plan picks (a rebuild keeps the cities the
  survivor ranks best, not the ones it had), and however late: workers coming back from
  a pause, or restarted, first need their new sessions and their candidacies.
- **Settling as the fleet forms.** Such a city, or one taken from nobody while the
  session was young (``formed``; its first ``2 × TTL``: workers started together each see
  the others a moment late), moves once anywhere within ``forming`` seconds
  (``4 × TTL``) of the take.
Otherwise it is an ordinary move: a city that sat where the fleet formed for an hour is
not moved for free by the first rebalance, nor to a worker that joins later.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

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
        #: worker id -> cities taken here because its lease was gone, not yet given back
        self._owed: Counter[str] = Counter()
        #: moves started here since the worker started
        self.spent = 0

    def arrived(self, city: str) -> None:
        """``city`` was just handed to us: its cool-down starts now."""
        with self._lock:
            self._arrived[city] = time.monotonic()

    def formed(self, city: str) -> None:
        """``city`` was placed by a failure: its first move is free, if it comes within
        ``forming`` seconds."""
        with self._lock:
            self._forming[city] = time.monotonic()
            self._arrived.pop(city, None)  # not a move: no cool-down

    def failed_over(self, city: str, home: str) -> None:
        """``city`` was taken because the lease of ``home``, its last writer, is gone:
        settling as for ``formed``, and one city owed to ``home``."""
        self.formed(city)
        with self._lock:
            self._owed[home] += 1

    def forget(self) -> None:
        """A new session: the cities owed went with the old one."""
        with self._lock:
            self._owed.clear()

    def take(self, city: str, fleet: int, to: str | None = None) -> str | None:
        """Spend one move of ``city`` to worker ``to`` and return ``None``, or say why it
        must wait (``fleet``: the active workers sharing the budget)."""
        now = time.monotonic()
        share = self.moves_per_minute / max(fleet, 1)
        with self._lock:
            formed = self._forming.pop(city, None)
            if formed is not None and now - formed <= self.forming:
                self._give_back(to)  # counted as given back, if owed
                return None
            arrived = self._arrived.get(city)
            if arrived is not None and now - arrived < self.cooldown:
                return f"cool-down: moved here {now - arrived:.0f}s ago " \
                       f"(--move-cooldown {self.cooldown:.0f}s)"
            if self._give_back(to):
                return None
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

    def _give_back(self, to: str | None) -> bool:
        """Count a move to ``to`` against the cities owed to it, if any (lock held)."""
        if to is None or self._owed[to] <= 0:
            return False
        self._owed[to] -= 1
        return True
