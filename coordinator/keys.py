"""The key layout under the namespace prefix (documented in the README).

::

    <ns>/cities/<city>                 CitySettings (JSON)        dispatchctl city ...
    <ns>/workers/<worker-id>           WorkerInfo (JSON)          under the worker's lease
    <ns>/election/<city>/<lease hex>   worker id (plain text)     under the worker's lease
    <ns>/decisions/<city>              Decision (JSON)            fenced by the token
    <ns>/status/<city>                 CityStatus (JSON)          fenced by the token
    <ns>/state/<city>                  StateSnapshot (JSON)       for the ``etcd`` state source
    <ns>/drain/<worker-id>             "1"                        a drained worker takes no city
    <ns>/load/<worker-id>              WorkerLoad (JSON)          under the worker's lease
    <ns>/relays/<sink>/election/<lease hex>  relay id             a relay's candidate key
    <ns>/relays/<sink>/status/<relay-id>     RelayStatus (JSON)   under the relay's lease
"""

from __future__ import annotations

import re

from coordinator.errors import ConfigError

__all__ = ["Keys", "check_city_name", "check_worker_id"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_city_name(city: str) -> str:
    if not _NAME.match(city):
        raise ConfigError(
            f"invalid city name {city!r}: use letters, digits, '.', '_' or '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return city


def check_worker_id(worker_id: str) -> str:
    if not _NAME.match(worker_id):
        raise ConfigError(
            f"invalid worker id {worker_id!r}: use letters, digits, '.', '_' or '-'"
        )
    return worker_id


class Keys:
    """Builds and parses every key of one namespace."""

    def __init__(self, namespace: str) -> None:
        ns = "/" + namespace.strip("/")
        if ns == "/" or "//" in ns:
            raise ConfigError(f"invalid namespace {namespace!r}: use a prefix like /dispatch")
        self.namespace = ns
        self.cities = f"{ns}/cities/"
        self.workers = f"{ns}/workers/"
        self.elections = f"{ns}/election/"
        self.decisions = f"{ns}/decisions/"
        self.statuses = f"{ns}/status/"
        self.states = f"{ns}/state/"
        self.drains = f"{ns}/drain/"
        self.loads = f"{ns}/load/"
        self.relays = f"{ns}/relays/"

    def city(self, city: str) -> str:
        return self.cities + city

    def worker(self, worker_id: str) -> str:
        return self.workers + worker_id

    def election(self, city: str) -> str:
        """The election prefix of a city, as given to ``etcdctl elect``."""
        return self.elections + city

    def decision(self, city: str) -> str:
        return self.decisions + city

    def status(self, city: str) -> str:
        return self.statuses + city

    def state(self, city: str) -> str:
        return self.states + city

    def drain(self, worker_id: str) -> str:
        return self.drains + worker_id

    def load(self, worker_id: str) -> str:
        """What each city led by ``worker_id`` costs it (placement by cost)."""
        return self.loads + worker_id

    def relay_election(self, sink: str) -> str:
        """The election prefix of a sink's relays (one of them is active)."""
        return f"{self.relays}{sink}/election"

    def relay_status(self, sink: str, relay_id: str) -> str:
        return f"{self.relays}{sink}/status/{relay_id}"

    @staticmethod
    def tail(key: str, root: str) -> str:
        """The part of ``key`` after ``root`` (a city or worker id)."""
        return key[len(root):] if key.startswith(root) else key

    def candidate(self, key: str) -> tuple[str, str] | None:
        """``(city, lease hex)`` of an election key, ``None`` for anything else."""
        rest = self.tail(key, self.elections)
        city, sep, lease = rest.partition("/")
        if not sep or not city or not lease or "/" in lease:
            return None
        return city, lease
