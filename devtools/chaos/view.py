"""The fleet as etcd shows it while a run goes on: each city's latest decision, its
leading worker, the cities gone stale and how many cities each worker leads."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from coordinator.codec import decode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from protos import dispatch_pb2 as pb

__all__ = ["FleetView"]


class FleetView:
    """Read through ``client`` (a client of its own, with a short timeout: the progress
    line must not hang while etcd cannot answer)."""

    def __init__(self, client: EtcdClient, keys: Keys, cities: Mapping[str, CityConfig],
                 workers: Sequence[str]) -> None:
        self.client = client
        self.keys = keys
        self.cities = cities
        self.workers = workers

    def snapshot(self) -> tuple[dict[str, float], dict[str, str]]:
        """(city -> decidedAt of its latest decision, city -> leading worker)."""
        decided: dict[str, float] = {}
        kvs, _ = self.client.get_prefix(self.keys.decisions)
        for kv in kvs:
            with contextlib.suppress(ValueError):
                d = decode(pb.Decision, kv.value)
                decided[Keys.tail(kv.key, self.keys.decisions)] = \
                    d.decided_at.ToNanoseconds() / 1e9
        leaders: dict[str, tuple[int, str]] = {}
        kvs, _ = self.client.get_prefix(self.keys.elections)
        for kv in kvs:
            parsed = self.keys.candidate(kv.key)
            if parsed is None:
                continue
            city = parsed[0]
            if city not in leaders or kv.create_revision < leaders[city][0]:
                leaders[city] = (kv.create_revision, kv.value.decode(errors="replace"))
        return decided, {city: worker for city, (_, worker) in leaders.items()}

    def stale(self, decided: dict[str, float], now: float) -> list[str]:
        """Cities without a decision in the last two periods (+ 1 s)."""
        return sorted(city for city, config in self.cities.items()
                      if now - decided.get(city, 0.0) > 2 * config.period + 1.0)

    def owners(self, leaders: dict[str, str]) -> dict[str, int]:
        """How many cities each worker leads (0 for a worker that leads none)."""
        counts = {worker: 0 for worker in self.workers}
        for worker in leaders.values():
            if worker in counts:
                counts[worker] += 1
        return counts
