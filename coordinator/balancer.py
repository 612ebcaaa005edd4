"""Who should own which city: weighted rendezvous hashing with bounded loads.

Every worker computes the same plan from the same inputs (the live members and the
cities, both read from etcd watches), so no coordinator of the coordinators is needed:

1. For each city, rank the eligible workers (not drained, carrying every required
   label) by rendezvous score ``-capacity / ln(h)``, where ``h`` is a stable hash of
   (city, worker) mapped into (0, 1); workers carrying the city's preferred labels rank
   first. Rendezvous ranking changes only for the cities whose top workers come or go,
   so a membership change moves few cities.
2. Walk the cities, most constrained first, then in hash order, and give each to the
   best-ranked worker still under its *bound*: each worker's share of the cities in
   proportion to its capacity, rounded down, plus at most one of the leftover cities.
   That keeps every worker between ⌊N/W⌋ and ⌈N/W⌉ cities (for equal capacities).
   A city whose required labels only overloaded workers carry still gets one of them:
   affinity beats balance.
3. The next ``standbys`` ranked workers queue behind the owner as hot standbys.

With ``costs`` given, step 2 balances measured cost instead of counting cities, sticky to
the current owners within a tolerance (``coordinator.placement``).

The plan says who *should* own a city. Ownership itself is still decided by the
election, and the worker hands a city over only when its planned owner is queued (see
``Worker``), so the plan never causes a gap.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coordinator.placement import by_cost

__all__ = ["CityNeeds", "Member", "Plan", "Ranking", "may_own", "plan", "rank"]

#: the cost of a city counted as ~nothing (no city is free to move)
MIN_COST = 1e-6


@dataclass(frozen=True)
class Member:
    worker_id: str
    capacity: float = 1.0
    labels: Mapping[str, str] = field(default_factory=dict)
    drained: bool = False


@dataclass(frozen=True)
class CityNeeds:
    require: Mapping[str, str] = field(default_factory=dict)
    prefer: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    #: city -> planned owner followed by its standbys, best first
    ranking: dict[str, list[str]]
    #: cities no live worker may own (nobody carries their required labels)
    orphans: list[str]
    #: placement by cost: each active worker's planned load and its share of the total
    #: (CPU seconds per second), and the costs planned on; empty when placing by count
    loads: dict[str, float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)

    def owner(self, city: str) -> str | None:
        ranked = self.ranking.get(city)
        return ranked[0] if ranked else None

    def wanted_by(self, worker_id: str) -> set[str]:
        return {city for city, ranked in self.ranking.items() if worker_id in ranked}

    def owned_by(self, worker_id: str) -> set[str]:
        return {city for city, ranked in self.ranking.items() if ranked[:1] == [worker_id]}


def _unit_hash(*parts: str) -> float:
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    # map into the open interval (0, 1) so that ln() is finite and negative
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def _score(city: str, member: Member) -> float:
    return -member.capacity / math.log(_unit_hash(city, member.worker_id))


def _matches(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def may_own(member: Member, needs: CityNeeds) -> bool:
    """Whether ``member``'s labels meet what the city requires (drains aside)."""
    return _matches(member.labels, needs.require)


@dataclass(frozen=True)
class Ranking:
    """Step 1 alone: each city's eligible workers, best first, and the cities nobody may
    own. It depends only on the cities' needs and the members, so a caller that plans
    again as costs change keeps it (:func:`rank`): the hashing is most of a plan's CPU
    (docs/worker.md, *Ownership and handover*)."""

    active: list[Member]
    ranked: dict[str, list[Member]]
    orphans: list[str]


def rank(cities: Mapping[str, CityNeeds], members: Sequence[Member]) -> Ranking:
    """The rendezvous ranking of ``cities`` over ``members`` (step 1)."""
    active = sorted((m for m in members if not m.drained and m.capacity > 0),
                    key=lambda m: m.worker_id)
    orphans: list[str] = []
    ranked: dict[str, list[Member]] = {}
    for city, needs in cities.items():
        eligible = [m for m in active if _matches(m.labels, needs.require)]
        if not eligible:
            orphans.append(city)
            continue
        def key(m: Member, c: str = city, n: CityNeeds = needs) -> tuple[bool, float, str]:
            return (not _matches(m.labels, n.prefer), -_score(c, m), m.worker_id)

        ranked[city] = sorted(eligible, key=key)
    return Ranking(active, ranked, orphans)


def plan(cities: Mapping[str, CityNeeds], members: Sequence[Member], *,
         standbys: int = 1, costs: Mapping[str, float] | None = None,
         current: Mapping[str, str] | None = None, tolerance: float = 0.10,
         ranking: Ranking | None = None) -> Plan:
    """The ownership plan: by count when ``costs`` (city -> CPU seconds per second) is
    ``None``, else by cost (:mod:`coordinator.placement`), sticky to the ``current``
    owners (city -> worker id) within ``tolerance``. ``ranking``: :func:`rank` of the
    same ``cities`` and ``members``, if the caller kept it."""
    if ranking is None:
        ranking = rank(cities, members)
    active, ranked_members, orphans = ranking.active, ranking.ranked, ranking.orphans
    if costs is None:
        owners = _by_count(ranked_members, active)
        extra: dict[str, dict[str, float]] = {}
    else:
        city_costs = {c: max(float(costs.get(c, MIN_COST)), MIN_COST) for c in ranked_members}
        owners, loads, shares = by_cost(ranked_members, active, city_costs,
                                        current or {}, tolerance)
        extra = {"loads": loads, "shares": shares, "costs": city_costs}
    queues: dict[str, list[str]] = {}
    for city, candidates in ranked_members.items():
        owner = owners[city]
        rest = [m.worker_id for m in candidates if m.worker_id != owner][:standbys]
        queues[city] = [owner, *rest]
    return Plan(queues, sorted(orphans), **extra)


def _by_count(ranked_members: dict[str, list[Member]], active: list[Member]) -> dict[str, str]:
    """Each worker between the floor and the ceiling of its share of the cities."""
    n = len(ranked_members)
    total = sum(m.capacity for m in active)
    quota = {m.worker_id: n * m.capacity / total for m in active} if total else {}
    floor_of = {w: math.floor(q + 1e-9) for w, q in quota.items()}
    ceil_of = {w: math.ceil(q - 1e-9) for w, q in quota.items()}
    extras = n - sum(floor_of.values())
    load = dict.fromkeys(quota, 0)
    owners: dict[str, str] = {}
    order = sorted(ranked_members, key=lambda c: (len(ranked_members[c]), _unit_hash(c), c))
    for city in order:
        candidates = ranked_members[city]
        owner = None
        for m in candidates:
            w = m.worker_id
            if load[w] < floor_of[w]:
                owner = m
                break
            if load[w] < ceil_of[w] and extras > 0:
                owner = m
                extras -= 1
                break
        if owner is None:  # affinity leaves no room: least loaded eligible worker
            owner = min(candidates, key=lambda m: (load[m.worker_id] / m.capacity, m.worker_id))
        load[owner.worker_id] += 1
        owners[city] = owner.worker_id
    return owners
