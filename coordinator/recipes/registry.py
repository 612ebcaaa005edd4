"""The live set of cities: one watch on ``<ns>/cities/`` shared by everything.

Each entry is either a validated ``CityConfig`` or the ``CitySettingsError`` that says
why its settings cannot be used: a malformed city is still a city (somebody owns it and
reports the problem on its status), it just cannot tick until it is fixed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from coordinator.errors import CitySettingsError, ConfigError
from coordinator.etcd import EtcdClient, KeyValue, WatchBatch
from coordinator.keys import Keys, check_city_name
from coordinator.recipes.watch import PrefixWatch
from coordinator.settings import CityConfig, parse_settings

__all__ = ["CityEntry", "CityRegistry"]

log = logging.getLogger(__name__)

CityEntry = CityConfig | CitySettingsError


class CityRegistry:
    def __init__(self, client: EtcdClient, keys: Keys,
                 on_change: Callable[[set[str]], None] | None = None) -> None:
        self._keys = keys
        self._on_change = on_change
        self._lock = threading.Lock()
        self._cities: dict[str, CityEntry] = {}
        self._watch = PrefixWatch(client, keys.cities, on_snapshot=self._snapshot,
                                  on_events=self._events, name="watch cities")

    def start(self) -> CityRegistry:
        self._watch.start()
        return self

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._watch.synced.wait(timeout)

    def stop(self) -> None:
        self._watch.stop()

    def get(self, city: str) -> CityEntry | None:
        with self._lock:
            return self._cities.get(city)

    def entries(self) -> dict[str, CityEntry]:
        with self._lock:
            return dict(self._cities)

    def enabled(self) -> set[str]:
        """Cities someone should own: enabled ones, and malformed ones (to report them)."""
        with self._lock:
            return {
                city for city, entry in self._cities.items()
                if not isinstance(entry, CityConfig) or entry.enabled
            }

    def _parse(self, kv: KeyValue) -> tuple[str, CityEntry] | None:
        city = Keys.tail(kv.key, self._keys.cities)
        try:
            check_city_name(city)
        except ConfigError as exc:
            log.warning("ignoring key %s: %s", kv.key, exc)
            return None
        try:
            return city, parse_settings(city, kv.value)
        except CitySettingsError as exc:
            log.warning("city %s: %s", city, exc)
            return city, exc

    def _snapshot(self, kvs: list[KeyValue], revision: int) -> None:
        cities: dict[str, CityEntry] = {}
        for kv in kvs:
            parsed = self._parse(kv)
            if parsed is not None:
                cities[parsed[0]] = parsed[1]
        with self._lock:
            changed = set(cities) | set(self._cities)
            self._cities = cities
        self._notify(changed)

    def _events(self, batch: WatchBatch) -> None:
        changed = set()
        with self._lock:
            for event in batch.events:
                city = Keys.tail(event.kv.key, self._keys.cities)
                if event.kind == "delete":
                    self._cities.pop(city, None)
                    changed.add(city)
                    continue
                parsed = self._parse(event.kv)
                if parsed is not None:
                    self._cities[parsed[0]] = parsed[1]
                    changed.add(city)
        self._notify(changed)

    def _notify(self, changed: set[str]) -> None:
        if changed and self._on_change is not None:
            self._on_change(changed)
