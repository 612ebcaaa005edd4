"""Placement by cost: bounded loads on measured cost, sticky within a tolerance.

Pure and deterministic, like the rest of the plan (``coordinator.balancer``): every
worker computes the same owners from the same cities, members, costs and current owners.

Each active worker's *share* is the total cost in proportion to its capacity; its
*bound* is ``(1 + tolerance)`` × its share, its *floor* ``(1 - tolerance)`` × its share.

1. Walk the cities heaviest first (then by name): each stays with its current owner
   when that worker is eligible and the city still fits under its bound. Then walk the
   others, heaviest first: a new city goes to the best-ranked eligible worker
   (rendezvous order) under which it fits, a city that must move (its owner is full,
   gone or no longer eligible) to the least loaded worker under which it fits, so that
   it moves once, not from one busy worker to the next. An empty worker always fits,
   so a city heavier than its bound gets a worker to itself, and, heaviest first,
   before any light city is added to that worker. A city that fits nowhere goes to the
   least loaded eligible worker.
2. While some worker is below its floor (a worker that just joined) or above its bound,
   move from the most loaded worker (relative to capacity) to the least loaded one the
   city that leaves the two closest, if any brings the busier one down.

Stickiness is the hysteresis: while every worker is between its floor and its bound,
nothing moves, however the costs wobble. When members change, only the cities that no
longer fit (or a newcomer's fill) move.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordinator.balancer import Member

__all__ = ["by_cost"]


def by_cost(ranked: dict[str, list[Member]], active: list[Member], costs: dict[str, float],
            current: Mapping[str, str], tolerance: float,
            ) -> tuple[dict[str, str], dict[str, float], dict[str, float]]:
    """``(owners, loads, shares)`` for the cities of ``ranked`` (city -> its eligible
    members, best first), each city's cost in ``costs`` (all positive)."""
    capacity = {m.worker_id: m.capacity for m in active}
    total_capacity = sum(capacity.values())
    total = sum(costs[c] for c in ranked)
    shares = {w: total * cap / total_capacity for w, cap in capacity.items()} \
        if total_capacity else {}
    bound = {w: (1 + tolerance) * share for w, share in shares.items()}
    floor = {w: (1 - tolerance) * share for w, share in shares.items()}
    loads = dict.fromkeys(capacity, 0.0)
    owners: dict[str, str] = {}

    def fits(worker: str, cost: float) -> bool:
        return loads[worker] == 0.0 or loads[worker] + cost <= bound[worker] + 1e-12

    heaviest_first = sorted(ranked, key=lambda c: (-costs[c], c))
    displaced = []
    for city in heaviest_first:  # 1a: stay where you are while you fit
        kept = current.get(city)
        if kept is not None and kept in capacity and any(
                m.worker_id == kept for m in ranked[city]) and fits(kept, costs[city]):
            owners[city] = kept
            loads[kept] += costs[city]
        else:
            displaced.append(city)
    for city in displaced:  # 1b: the rest, heaviest first, where they fit
        names = [m.worker_id for m in ranked[city]]
        cost = costs[city]
        room = [w for w in names if fits(w, cost)]
        if room and city in current:  # moving anyway: to the idlest, not the next busy
            owner = min(room, key=lambda w: (loads[w] / capacity[w], names.index(w)))
        else:
            owner = room[0] if room else min(
                names, key=lambda w: ((loads[w] + cost) / capacity[w], w))
        owners[city] = owner
        loads[owner] += cost
    _even_out(ranked, costs, capacity, owners, loads, floor, bound)
    return owners, loads, shares


def _even_out(ranked: dict[str, list[Member]], costs: dict[str, float],
              capacity: dict[str, float], owners: dict[str, str], loads: dict[str, float],
              floor: dict[str, float], bound: dict[str, float]) -> None:
    """Step 2: move single cities from the busiest worker to the idlest while one of
    them is out of its band and a move brings the busier one down (in place)."""
    held: dict[str, set[str]] = {w: set() for w in capacity}
    for city, owner in owners.items():
        held[owner].add(city)
    eligible = {city: {m.worker_id for m in members} for city, members in ranked.items()}
    for _ in range(len(owners)):
        by_load = sorted(capacity, key=lambda w: (loads[w] / capacity[w], w))
        idle, busy = by_load[0], by_load[-1]
        if loads[idle] >= floor[idle] - 1e-12 and loads[busy] <= bound[busy] + 1e-12:
            return
        busy_rel = loads[busy] / capacity[busy]

        movable = [c for c in held[busy] if idle in eligible[c]
                   and (loads[idle] + costs[c]) / capacity[idle] < busy_rel - 1e-12]
        if not movable:
            return
        city = min(movable, key=lambda c: (abs(
            (loads[busy] - costs[c]) / capacity[busy]
            - (loads[idle] + costs[c]) / capacity[idle]), c))
        held[busy].discard(city)
        held[idle].add(city)
        owners[city] = idle
        loads[busy] -= costs[city]
        loads[idle] += costs[city]
