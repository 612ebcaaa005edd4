"""Placement by cost: bounded loads on measured cost, sticky within a tolerance.

Pure and deterministic, like the rest of the plan (``coordinator.balancer``): every
worker computes the same owners from the same cities, members, costs and current owners.

A city is *heavy* when it costs more than a fair share of what the heavier cities leave
(each of those takes a worker). Each active worker's *share* is the cost of the other
cities in proportion to its capacity, over the workers the heavy cities leave; its
*bound* is ``(1 + tolerance)`` × its share, its *floor* ``(1 - tolerance)`` × its share.
A city is *lumpy* when it costs more than the tolerance band itself (``tolerance`` × a
mean share): moving one overshoots the band, so lumpy cities are spread by number (no
worker holds two more than another could take) before the light ones fill the room
left, rather than two landing on one worker only because they fit under its bound.

When every city's current owner is still eligible, every city heavy by a margin (more
than ``1 + tolerance`` times a fair share) is alone on its worker, the cities lumpy by
the same margin are spread by number and no other worker is over its bound, the current
placement stands: nothing moves, however the costs wobble (the hysteresis). A worker
under its floor alone moves nothing: it only has room to spare, and a worker that joins
(empty) leaves the others over their bounds.
Otherwise the plan is rebuilt, aiming at *half* the tolerance so that it comes to rest
well inside the band (a worker over its bound at its share, so that it does not sit
where the next wobble sends it over again), in two tiers, the heavy and lumpy
cities first, then the rest:

1. In each tier, walk the cities: each stays with its current owner when that worker
   is eligible and the city still fits (a lumpy city also while its owner holds fewer
   lumpy cities than an even spread gives each). Then walk the others: a lumpy city
   goes to the eligible worker under which it fits that holds the fewest lumpy cities
   (then the least loaded); a heavy city that must move to the least loaded worker
   under which it fits; a light city to the best-ranked eligible worker (rendezvous
   order) under which it fits, one that must move (its owner is full, gone or no
   longer eligible) first to a worker well under its share (by half the tolerance: one
   that joined or came back), then to one under its share, best-ranked first, so that
   it moves once, not from one busy worker to the next. An empty worker always
   fits, so a city heavier than its bound gets a worker to itself, and, heaviest
   first, before any other city is added to that worker. A city that fits nowhere goes
   to the least loaded eligible worker.

   The heavy and lumpy tier is walked heaviest first. The light tier is walked by
   the rank its current owner has for it (best first), then by name, never by cost:
   like cities wobble by a few percent between two publications, and ordered by
   cost, which of them stayed and which moved was drawn anew at every plan, each
   change re-queueing standbys (docs/operations.md, "Placement by cost"). So a worker
   keeps the cities it ranks best for, and gives back the ones it took over.
2. Move from the most loaded worker (relative to capacity) that has a city to give to
   the least loaded one the city that leaves the two closest, if any brings the busier
   one down, until every worker is within half the tolerance of its share; a lumpy city
   only to a worker that holds fewer lumpy cities. A worker carrying a heavy city
   alone takes no part.

When members change, only the cities that no longer fit (or a newcomer's fill) move.
"""

from __future__ import annotations

import math
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
        # Heavy and lumpy by a margin: a city whose measured cost wobbles around a
        # threshold must not flip the placement between one treatment and the other.
        clearly = _heavy(costs, ranked, len(capacity), 1 + tolerance)
        shares = _shares(costs, ranked, capacity, clearly)
        lumps = _lumpy(costs, clearly, shares, tolerance, 1 + tolerance)
        loads = _loads(kept, costs, capacity)
        if _steady(kept, clearly, loads, shares, tolerance) and \
                _spread(kept, lumps, ranked, _alone(kept, clearly)):
            return kept, loads, shares
    heavy = _heavy(costs, ranked, len(capacity))
    shares = _shares(costs, ranked, capacity, heavy)
    lumpy = _lumpy(costs, heavy, shares, tolerance)
    # Rebalance, aiming well inside the band (half the tolerance) so that the next
    # wobble of the costs finds no worker at its edge, and a worker over its bound
    # deeper still (its share): brought back only into the band, the next wobble
    # would send it over again and the rebalance repeat every few minutes.
    bound = {w: (1 + tolerance) * share for w, share in shares.items()}
    before = _loads(kept, costs, capacity)
    over = {w for w in shares if before[w] > bound[w] + 1e-12}
    aim = {w: share if w in over else (1 + tolerance / 2) * share
            for w, share in shares.items()}
    low = {w: (1 - tolerance / 2) * share for w, share in shares.items()}
    loads = dict.fromkeys(capacity, 0.0)
    lumps_on = dict.fromkeys(capacity, 0)  # lumpy cities per worker
    even = math.ceil(len(lumpy) / max(len(capacity) - len(heavy), 1))
    owners: dict[str, str] = {}

    def fits(worker: str, cost: float, limit: float) -> bool:
        return loads[worker] == 0.0 or loads[worker] + cost <= limit + 1e-12

    def room_for(names: list[str], cost: float, *limits: dict[str, float]) -> list[str]:
        """The workers under whose aim the city fits (or under ``limits`` first), else
        under whose bound; a worker that was over its bound (it gives cities away) only
        when no other has room."""
        for limit in (*limits, aim, bound):
            for over_too in (False, True):
                room = [w for w in names if fits(w, cost, limit[w])
                        and (over_too or w not in over)]
                if room:
                    return room
        return []

    def place(city: str, owner: str) -> None:
        owners[city] = owner
        loads[owner] += costs[city]
        lumps_on[owner] += city in lumpy

    def steadiest(city: str) -> tuple[int, str]:
        """Light cities in the order they keep their owners: the ones whose owner ranks
        best for them first, then by name; never by cost (see the module's docstring)."""
        names = [m.worker_id for m in ranked[city]]
        owner = kept.get(city)
        return (names.index(owner) if owner in names else len(names), city)

    heaviest_first = sorted(ranked, key=lambda c: (-costs[c], c))
    coarse = [c for c in heaviest_first if c in heavy or c in lumpy]
    light = sorted((c for c in ranked if c not in heavy and c not in lumpy), key=steadiest)
    for tier in (coarse, light):
        displaced = []
        for city in tier:  # 1a: stay where you are while you fit
            owner = kept.get(city)
            if owner is not None and fits(owner, costs[city], aim[owner]) and (
                    city not in lumpy or lumps_on[owner] < even):
                place(city, owner)
            else:
                displaced.append(city)
        for city in displaced:  # 1b: the rest, in the tier's order, where they fit
            names = [m.worker_id for m in ranked[city]]
            cost = costs[city]
            # a light city on the move: first to a worker well under its share (one
            # that joined or came back after a failure), then to one under its share,
            # best-ranked first
            room = room_for(names, cost, *([low, shares] if tier is light and city in kept
                                           else []))
            if city in lumpy:  # the fewest lumps, then the idlest (fitting or not)
                owner = min(room or names, key=lambda w: (
                    lumps_on[w], loads[w] / capacity[w], names.index(w)))
            elif room and city in kept and tier is coarse:  # to the idlest, not the next busy
                owner = min(room, key=lambda w: (loads[w] / capacity[w], names.index(w)))
            else:
                owner = room[0] if room else min(
                    names, key=lambda w: ((loads[w] + cost) / capacity[w], w))
            place(city, owner)
    workers = [w for w in capacity if w not in _alone(owners, heavy)]
    _even_out(ranked, costs, capacity, owners, loads, workers, shares, tolerance / 2,
              lumpy)
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


def _lumpy(costs: dict[str, float], heavy: set[str], shares: dict[str, float],
            tolerance: float, margin: float = 1.0) -> set[str]:
    """The cities, not heavy, that cost more than ``margin`` × the tolerance band
    (``tolerance`` × a mean share): too coarse for the band to absorb."""
    if not shares:
        return set()
    band = margin * tolerance * sum(shares.values()) / len(shares)
    return {c for c, cost in costs.items() if cost > band and c not in heavy}


def _spread(owners: Mapping[str, str], lumpy: set[str], ranked: dict[str, list[Member]],
            alone: set[str]) -> bool:
    """Whether no lumpy city sits on a worker holding two more lumpy cities than another
    worker that could take it (one not carrying a heavy city alone)."""
    count: dict[str, int] = {}
    for city in lumpy:
        if city in owners:
            count[owners[city]] = count.get(owners[city], 0) + 1
    for city in lumpy:
        owner = owners.get(city)
        if owner is None:
            continue
        if any(count.get(m.worker_id, 0) + 1 < count[owner] for m in ranked[city]
               if m.worker_id not in alone):
            return False
    return True


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
              workers: list[str], shares: dict[str, float], within: float,
              lumpy: set[str]) -> None:
    """Step 2 (in place): until every worker of ``workers`` is ``within`` its share
    (half the tolerance: a rebalance aims well inside the band that triggers it), move
    single cities from the busiest worker that has one to give to the idlest, if that
    brings the busier down (a lumpy city only to a worker holding fewer of them)."""
    floor = {w: (1 - within) * shares[w] for w in workers}
    bound = {w: (1 + within) * shares[w] for w in workers}
    held: dict[str, set[str]] = {w: set() for w in capacity}
    lumps = dict.fromkeys(capacity, 0)
    for city, owner in owners.items():
        held[owner].add(city)
        lumps[owner] += city in lumpy
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
                       and (loads[idle] + costs[c]) / capacity[idle] < busy_load - 1e-12
                       and (c not in lumpy or lumps[idle] < lumps[busy])]
            if movable:
                break
        else:
            return
        city = min(movable, key=lambda c: (abs(
            (loads[busy] - costs[c]) / capacity[busy]
            - (loads[idle] + costs[c]) / capacity[idle]), c))
        held[busy].discard(city)
        held[idle].add(city)
        if city in lumpy:
            lumps[busy] -= 1
            lumps[idle] += 1
        owners[city] = idle
        loads[busy] -= costs[city]
        loads[idle] += costs[city]
