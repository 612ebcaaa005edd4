"""What the ownership plan is computed from: each city's needs and cost, out of the
cities' settings and the costs the workers published. Shared by the workers' planner
(``coordinator.worker.ownership``) and ``dispatchctl plan``, so both compute the same plan.

A city with no measurement yet is priced by :func:`prior_cost`, a small model of the
built-in solvers' CPU on the city's size (docs/operations.md, *Placement by cost*).
"""

from __future__ import annotations

from collections.abc import Mapping

from coordinator.balancer import CityNeeds
from coordinator.errors import CitySettingsError
from coordinator.settings import CityConfig

__all__ = ["CityEntry", "city_costs", "city_needs", "prior_cost"]

CityEntry = CityConfig | CitySettingsError

#: CPU seconds per order × courier pair and tick, by solver (from docs/solvers.md's
#: table: greedy ~75 ms, hungarian and bundle ~230–300 ms at 2,000 × 2,000)
PER_PAIR = {"greedy": 2e-8, "hungarian": 8e-8, "bundle": 8e-8}
#: a solver the model does not know: priced like the expensive built-ins
UNKNOWN_PER_PAIR = 8e-8
#: state load, validation and commit of a small city's tick (simulated state; 2–4 ms
#: measured on a busy 2-core machine)
TICK_OVERHEAD = 0.002


def prior_cost(config: CityConfig) -> float:
    """CPU seconds per second a city is expected to cost before it is measured: its
    ``orders`` × ``couriers`` parameters (the simulator's defaults, 50 × 30, when absent)
    priced per pair for its solver, plus a fixed overhead per tick, over its period."""
    try:
        orders = float(config.params.get("orders", 50))
        couriers = float(config.params.get("couriers", 30))
    except (TypeError, ValueError):
        orders, couriers = 50.0, 30.0
    per_pair = PER_PAIR.get(config.solver, UNKNOWN_PER_PAIR)
    cpu = TICK_OVERHEAD + per_pair * max(orders, 0.0) * max(couriers, 0.0)
    return cpu / max(config.period, 0.01)


def city_needs(entries: Mapping[str, CityEntry]) -> dict[str, CityNeeds]:
    """The cities to place (enabled, or unreadable: someone must report them), each
    with its required and preferred worker labels."""
    return {
        city: CityNeeds(entry.require_labels, entry.prefer_labels)
        if isinstance(entry, CityConfig) else CityNeeds()
        for city, entry in entries.items()
        if not isinstance(entry, CityConfig) or entry.enabled
    }


def city_costs(entries: Mapping[str, CityEntry], cities: Mapping[str, object],
               measured: Mapping[str, float]) -> dict[str, float]:
    """Each of ``cities``' cost: measured where someone measured it, else the prior."""
    costs = {}
    for city in cities:
        cost = measured.get(city)
        if cost is None or cost <= 0:
            entry = entries.get(city)
            cost = prior_cost(entry if isinstance(entry, CityConfig) else CityConfig(city, ""))
        costs[city] = cost
    return costs
