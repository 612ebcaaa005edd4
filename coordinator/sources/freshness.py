"""Freshness: a state is only decided on while it is younger than its city allows.

Every source says when its state was observed (``CityState.taken_at``); a city with a
``max_state_age`` refuses one observed longer ago, so that a producer that stopped
shows as a failing city ("stale: observed 12.3s ago") instead of couriers being sent
by a picture of the past. The check runs in the tick right after the load, for every
source alike.
"""

from __future__ import annotations

from coordinator.errors import StaleState
from coordinator.settings import CityConfig
from solvers.contract import CityState

__all__ = ["check_fresh"]


def check_fresh(config: CityConfig, state: CityState, now: float) -> None:
    """Raise ``StaleState`` if ``state`` is older than ``config`` allows at ``now``."""
    limit = config.max_state_age
    if limit > 0 and now - state.taken_at > limit:
        raise StaleState(config.city, now - state.taken_at, limit)
