"""A worker's settings for state sources that read outside etcd.

Connection settings are the worker's (command line or ``DISPATCH_*`` environment), never
a city's: a city's settings live in etcd, readable by anyone who may list cities, so no
password belongs there. A city may only choose *what* to read (its queries, a URL
without credentials), not with whose credentials.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.errors import StateError
from coordinator.settings import CityConfig

__all__ = ["SourceOptions"]


@dataclass(frozen=True)
class SourceOptions:
    #: libpq URL of the database the ``postgres`` source reads (``--state-postgres-url``)
    postgres_url: str = ""
    #: URL template with ``{city}`` the ``http`` source GETs (``--state-http-url``)
    http_url: str = ""
    #: share of a city's period a solve may use; a source's reads get the same share
    budget_fraction: float = 0.8

    def time_budget(self, config: CityConfig) -> float:
        """Seconds a read of ``config``'s state may take: the city's ``timeoutSeconds``
        parameter, else its period times the worker's budget fraction, so that a slow
        store cannot hold a tick past its period."""
        value = config.params.get("timeoutSeconds")
        if value is None:
            return config.period * self.budget_fraction
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0 < value <= 3600:
            raise StateError(f"parameter timeoutSeconds={value!r} must be a number of "
                             "seconds in (0, 3600]")
        return float(value)
