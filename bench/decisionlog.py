"""Every decision of a namespace as one watch stream delivers it, and what the failover
and scale benchmarks read from it: who wrote each city last, the gaps between a city's
decisions."""

from __future__ import annotations

import calendar
import itertools
import re
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.etcd import EtcdClient, WatchBatch
from coordinator.keys import Keys
from coordinator.recipes.watch import PrefixWatch

_DECIDED = re.compile(rb'"decidedAt":\s*"([^"]+)"')
_WORKER = re.compile(rb'"workerId":\s*"([^"]+)"')
_TOKEN = re.compile(rb'"token":\s*"?(\d+)')


def decided_at(value: bytes) -> float | None:
    """A stored decision's ``decidedAt`` (epoch seconds), ``None`` if it has none."""
    found = _DECIDED.search(value)
    return parse_rfc3339(found.group(1).decode()) if found else None


def writer(value: bytes) -> str:
    """A stored decision's ``workerId``, ``""`` if it has none."""
    found = _WORKER.search(value)
    return found.group(1).decode() if found else ""


def parse_rfc3339(text: str) -> float:
    """protobuf's Timestamp JSON (``2024-01-01T00:00:00.123456Z``) → epoch seconds."""
    main, _, frac = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + frac) if frac else 0.0)


@dataclass
class Seen:
    """One decision as the watch delivered it."""

    city: str
    received: float      # time.time() when the watch delivered it
    decided: float       # its decidedAt (the writer's clock; same host here)
    worker: str
    token: int
    revision: int


@dataclass
class DecisionLog:
    """Every decision of a namespace, from one watch stream on ``<ns>/decisions/``.

    Parses only the three fields it needs (a regular expression, not the protobuf JSON
    parser), so watching 1,000 decisions a second costs the benchmark process little.
    """

    client: EtcdClient
    keys: Keys
    by_city: dict[str, list[Seen]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _watch: PrefixWatch | None = None

    def start(self) -> DecisionLog:
        """Watch from now on: decisions already in etcd are not replayed. The watch
        resumes after a stream error (a member killed, a defragmentation that outlasts
        the stream), so a benchmark never goes on measuring with a dead watch."""
        self._watch = PrefixWatch(self.client, self.keys.decisions, name="decision log",
                                  on_snapshot=lambda kvs, revision: None,
                                  on_events=self._events).start()
        if not self._watch.synced.wait(30):
            raise TimeoutError(f"could not read {self.keys.decisions} within 30 s")
        return self

    def _events(self, batch: WatchBatch) -> None:
        root = self.keys.decisions
        now = time.time()
        seen = []
        for event in batch.events:
            if event.kind != "put":
                continue
            value = event.kv.value
            decided = decided_at(value)
            token = _TOKEN.search(value)
            seen.append(Seen(
                event.kv.key[len(root):], now, now if decided is None else decided,
                writer(value), int(token.group(1)) if token else 0, event.kv.mod_revision))
        with self._cond:
            for s in seen:
                self.by_city[s.city].append(s)
            self.count += len(seen)
            self._cond.notify_all()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def wait(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (checked on every delivered batch)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def snapshot(self) -> dict[str, list[Seen]]:
        with self._cond:
            return {city: list(items) for city, items in self.by_city.items()}

    def latest_writer(self) -> dict[str, str]:
        with self._cond:
            return {city: items[-1].worker for city, items in self.by_city.items() if items}

    def first_after(self, city: str, since: float, *, not_worker: str | None = None,
                    worker: str | None = None) -> Seen | None:
        with self._cond:
            for s in self.by_city.get(city, ()):
                if s.received >= since and (not_worker is None or s.worker != not_worker) \
                        and (worker is None or s.worker == worker):
                    return s
        return None


def wait_settled(decisions: DecisionLog, cities: int, quiet: float, timeout: float) -> bool:
    """Wait until every one of ``cities`` has decided and no city changed writer for
    ``quiet`` seconds (placement settled); ``False`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    if not decisions.wait(lambda d: len(d.by_city) >= cities,
                          max(1.0, deadline - time.monotonic())):
        return False
    last, since = decisions.latest_writer(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = decisions.latest_writer()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


def gaps(seen: Sequence[Seen], start: float, end: float, *,
         clock: str = "decided") -> list[float]:
    """Intervals between consecutive decisions of one city whose later decision falls
    in [start, end) (by the chosen clock: ``decided`` or ``received``)."""
    times = [getattr(s, clock) for s in seen]
    return [b - a for a, b in itertools.pairwise(times) if start <= b < end]

