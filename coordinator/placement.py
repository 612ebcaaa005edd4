"""Placement by cost: bounded loads on measured cost, sticky within a tolerance.

Pure and deterministic, like the rest of the plan (``coordinator.balancer``): every
worker computes the same owners from the same cities, members, costs and current owners.

A city is *heavy* when it costs more than a fair share of what the heavier cities leave
(each of those takes a worker). Each active worker's *share* is the cost of the other
cities in proportion to its capacity, over the workers the heavy cities leave; its
*bound* is ``(1 + tolerance)`` × its share, its *floor* ``(1 - tolerance)`` × its share.

When every city's current owner is still eligible, every city heavy by a margin (more
than ``1 + tolerance`` times a fair share) is alone on its worker and no other worker
is over its bound, the current placement stands: nothing moves, however the costs
wobble (the hysteresis). A worker under its floor alone moves nothing: it only has room
to spare, and a worker that joins (empty) leaves the others over their bounds.
Otherwise the plan is rebuilt, aiming at *half* the tolerance so that it comes to rest
well inside the band:

1. Walk the cities heaviest first (then by name): each stays with its current owner
   when that worker is eligible and the city still fits. Then walk the
   others, heaviest first: a new city goes to the best-ranked eligible worker
   (rendezvous order) under which it fits, a city that must move (its owner is full,
   gone or no longer eligible) to the least loaded worker under which it fits, so that
   it moves once, not from one busy worker to the next. An empty worker always fits,
   so a city heavier than its bound gets a worker to itself, and, heaviest first,
   before any light city is added to that worker. A city that fits nowhere goes to the
   least loaded eligible worker.
2. Move from the most loaded worker (relative to capacity) that has a city to give to
   the least loaded one the city that leaves the two closest, if any brings the busier
   one down, until every worker is within half the tolerance of its share. A worker
   carrying a heavy city alone takes no part.

When members change, only the cities that no longer fit (or a newcomer's fill) move.
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
    kept = {city: owner for city, owner in current.items() if city in ranked
            and any(m.worker_id == owner for m in ranked[city])}
    if len(kept) == len(ranked):
        # Heavy by a margin: a city whose measured cost wobbles around a fair share must
        # not flip the placement between set apart and shared.
        clearly = _heavy(costs, ranked, len(capacity), 1 + tolerance)
        shares = _shares(costs, ranked, capacity, clearly)
        loads = _loads(kept, costs, capacity)
        if _steady(kept, clearly, loads, shares, tolerance):
            return kept, loads, shares
    heavy = _heavy(costs, ranked, len(capacity))
    shares = _shares(costs, ranked, capacity, heavy)
    # Rebalance, aiming well inside the band (half the tolerance) so that the next
    # wobble of the costs finds no worker at its edge.
    aim = {w: (1 + tolerance / 2) * share for w, share in shares.items()}
    bound = {w: (1 + tolerance) * share for w, share in shares.items()}
    loads = dict.fromkeys(capacity, 0.0)
    owners: dict[str, str] = {}

    def fits(worker: str, cost: float, limit: dict[str, float]) -> bool:
        return loads[worker] == 0.0 or loads[worker] + cost <= limit[worker] + 1e-12

    heaviest_first = sorted(ranked, key=lambda c: (-costs[c], c))
    displaced = []
    for city in heaviest_first:  # 1a: stay where you are while you fit
        owner = kept.get(city)
        if owner is not None and fits(owner, costs[city], aim):
            owners[city] = owner
            loads[owner] += costs[city]
        else:
            displaced.append(city)
    for city in displaced:  # 1b: the rest, heaviest first, where they fit
        names = [m.worker_id for m in ranked[city]]
        cost = costs[city]
        room = [w for w in names if fits(w, cost, aim)] or \
            [w for w in names if fits(w, cost, bound)]
        if room and city in kept:  # moving anyway: to the idlest, not the next busy
            owner = min(room, key=lambda w: (loads[w] / capacity[w], names.index(w)))
        else:
            owner = room[0] if room else min(
                names, key=lambda w: ((loads[w] + cost) / capacity[w], w))
        owners[city] = owner
        loads[owner] += cost
    workers = [w for w in capacity if w not in _alone(owners, heavy)]
    _even_out(ranked, costs, capacity, owners, loads, workers, shares, tolerance / 2)
    return owners, loads, shares


def _loads(owners: Mapping[str, str], costs: dict[str, float],
           capacity: dict[str, float]) -> dict[str, float]:
    loads = dict.fromkeys(capacity, 0.0)
    for city, owner in owners.items():
        loads[owner] += costs[city]
    return loads


def _alone(owners: Mapping[str, str], heavy: set[str]) -> set[str]:
    """The workers that carry a heavy city and nothing else."""
    count: dict[str, int] = {}
    for owner in owners.values():
        count[owner] = count.get(owner, 0) + 1
    return {owners[city] for city in heavy if city in owners and count[owners[city]] == 1}


def _steady(owners: Mapping[str, str], heavy: set[str], loads: dict[str, float],
            shares: dict[str, float], tolerance: float) -> bool:
    """Whether the current placement stands: every heavy city alone on its worker, and
    no other worker over its bound (the hysteresis)."""
    alone = _alone(owners, heavy)
    if len(alone) < len(heavy):
        return False
    return all(loads[w] <= (1 + tolerance) * shares[w] + 1e-12
               for w in shares if w not in alone)


def _heavy(costs: dict[str, float], ranked: dict[str, list[Member]], workers: int,
           margin: float = 1.0) -> set[str]:
    """The cities heavier than ``margin`` × a fair share of what is left once the heavier
    ones have a worker each (at most all workers but one)."""
    rest = sum(costs[c] for c in ranked)
    heavy: set[str] = set()
    for city in sorted(ranked, key=lambda c: (-costs[c], c)):
        if len(heavy) >= workers - 1 or \
                costs[city] <= margin * rest / (workers - len(heavy)):
            break
        heavy.add(city)
        rest -= costs[city]
    return heavy


def _shares(costs: dict[str, float], ranked: dict[str, list[Member]],
            capacity: dict[str, float], heavy: set[str]) -> dict[str, float]:
    """Each worker's fair share: the cost of the cities that are not heavy, over the
    capacity of the workers the heavy ones leave, in proportion to capacity (a worker
    that will carry a heavy city is, on average, one worker's capacity)."""
    if not capacity:
        return {}
    mean_capacity = sum(capacity.values()) / len(capacity)
    rest = sum(costs[c] for c in ranked if c not in heavy)
    room = sum(capacity.values()) - len(heavy) * mean_capacity
    return {w: rest * cap / room for w, cap in capacity.items()}


def _even_out(ranked: dict[str, list[Member]], costs: dict[str, float],
              capacity: dict[str, float], owners: dict[str, str], loads: dict[str, float],
              workers: list[str], shares: dict[str, float], within: float) -> None:
    """Step 2 (in place): until every worker of ``workers`` is ``within`` its share
    (half the tolerance: a rebalance aims well inside the band that triggers it), move
    single cities from the busiest worker that has one to give to the idlest, if that
    brings the busier down."""
    floor = {w: (1 - within) * shares[w] for w in workers}
    bound = {w: (1 + within) * shares[w] for w in workers}
    held: dict[str, set[str]] = {w: set() for w in capacity}
    for city, owner in owners.items():
        held[owner].add(city)
    eligible = {city: {m.worker_id for m in members} for city, members in ranked.items()}
    for _ in range(len(owners)):
        by_load = sorted(workers, key=lambda w: (loads[w] / capacity[w], w))
        if len(by_load) < 2:
            return
        idle = by_load[0]
        for busy in reversed(by_load[1:]):
            if loads[idle] >= floor[idle] - 1e-12 and loads[busy] <= bound[busy] + 1e-12:
                return  # everyone left is within the band
            busy_load = loads[busy] / capacity[busy]
            movable = [c for c in held[busy] if idle in eligible[c]
                       and (loads[idle] + costs[c]) / capacity[idle] < busy_load - 1e-12]
            if movable:
                break
        else:
            return
        city = min(movable, key=lambda c: (abs(
            (loads[busy] - costs[c]) / capacity[busy]
            - (loads[idle] + costs[c]) / capacity[idle]), c))
        held[busy].discard(city)
        held[idle].add(city)
        owners[city] = idle
        loads[busy] -= costs[city]
        loads[idle] += costs[city]
