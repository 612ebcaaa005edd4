"""The placement as etcd holds it and as the workers' planner would set it, with the
moves between the two and why (``dispatchctl plan``).

Reads the namespace once (cities, workers, drains, elections, published loads) and runs
the same plan every worker runs (``coordinator.balancer.plan`` on
``coordinator.plan_inputs``), so what it shows is what the workers are converging to.
Whether a pending move waits for the churn budget, the city's cool-down or the rebalance
delay only its current owner knows: it publishes that beside its load (``waiting``), and
each move here carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordinator.balancer import CityNeeds, Member, Plan, may_own, plan
from coordinator.codec import decode
from coordinator.errors import CitySettingsError
from coordinator.etcd import EtcdClient, KeyValue
from coordinator.keys import Keys
from coordinator.plan_inputs import CityEntry, city_costs, city_needs
from coordinator.recipes.loads import merge_costs
from coordinator.settings import parse_settings
from protos import dispatch_pb2 as pb

__all__ = ["Move", "PlacementView", "WorkerLoadView", "read_loads", "read_placement"]


def read_loads(client: EtcdClient, keys: Keys) -> dict[str, pb.WorkerLoad]:
    """Worker id -> the load it last published (unreadable ones left out)."""
    kvs, _ = client.get_prefix(keys.loads)
    return _decode_loads(kvs)


def _decode_loads(kvs: list[KeyValue]) -> dict[str, pb.WorkerLoad]:
    loads = {}
    for kv in kvs:
        try:
            load = decode(pb.WorkerLoad, kv.value)
        except ValueError:
            continue
        loads[load.worker_id] = load
    return loads


@dataclass(frozen=True)
class Move:
    city: str
    source: str  # "" when nobody leads the city
    target: str
    cost: float
    reason: str
    #: why its owner has not started it yet, as the owner last published ("" if not)
    waits: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"city": self.city, "from": self.source, "to": self.target,
                "cost": self.cost, "reason": self.reason, "waits": self.waits}


@dataclass(frozen=True)
class WorkerLoadView:
    worker_id: str
    #: cost of the cities it leads now, and of those the plan gives it
    current: float
    planned: float
    share: float
    cities: int
    measured: float  # what it published itself (its own cities, as it measured them)
    drained: bool

    def to_json(self) -> dict[str, Any]:
        return {"workerId": self.worker_id, "current": self.current,
                "planned": self.planned, "share": self.share, "cities": self.cities,
                "published": self.measured, "drained": self.drained,
                "ratio": self.current / self.share if self.share else None}


@dataclass
class PlacementView:
    placement: str
    tolerance: float
    revision: int
    current: dict[str, str]
    plan: Plan
    workers: list[WorkerLoadView] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    #: cities whose cost is measured (the others are priced by the prior)
    measured: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "placement": self.placement, "tolerance": self.tolerance,
            "revision": self.revision,
            "workers": [w.to_json() for w in self.workers],
            "cities": [{"city": city, "cost": self.plan.costs.get(city),
                        "measured": city in self.measured,
                        "owner": self.current.get(city, ""),
                        "planned": self.plan.owner(city) or ""}
                       for city in sorted(self.plan.ranking)],
            "moves": [m.to_json() for m in self.moves],
            "orphans": self.plan.orphans,
        }


def read_placement(client: EtcdClient, keys: Keys, *, placement: str = "cost",
                   tolerance: float = 0.10, standbys: int = 1) -> PlacementView:
    roots = [keys.cities, keys.elections, keys.workers, keys.drains, keys.loads]
    ranges, revision = client.read_prefixes(roots)
    cities_kv, election_kv, worker_kv, drain_kv, load_kv = ranges
    entries: dict[str, CityEntry] = {}
    for kv in cities_kv:
        city = Keys.tail(kv.key, keys.cities)
        try:
            entries[city] = parse_settings(city, kv.value)
        except CitySettingsError as exc:
            entries[city] = exc
    first: dict[str, tuple[int, str]] = {}
    for kv in election_kv:
        parsed = keys.candidate(kv.key)
        if parsed is not None and (parsed[0] not in first
                                   or kv.create_revision < first[parsed[0]][0]):
            first[parsed[0]] = (kv.create_revision, kv.value.decode(errors="replace"))
    drained = {Keys.tail(kv.key, keys.drains) for kv in drain_kv}
    members = []
    for kv in worker_kv:
        worker_id = Keys.tail(kv.key, keys.workers)
        try:
            info = decode(pb.WorkerInfo, kv.value)
        except ValueError:
            info = pb.WorkerInfo(worker_id=worker_id)
        members.append(Member(worker_id, info.capacity or 1.0, dict(info.labels),
                              worker_id in drained))
    members.sort(key=lambda m: m.worker_id)
    loads = list(_decode_loads(load_kv).values())
    needs = city_needs(entries)
    current = {city: worker for city, (_, worker) in first.items() if city in needs}
    measured = merge_costs(loads, current)
    costs = city_costs(entries, needs, measured)
    target = plan(needs, members, standbys=standbys, tolerance=tolerance, current=current,
                  costs=None if placement == "count" else costs)
    view = PlacementView(placement, tolerance, revision, current, target,
                         measured=set(measured) & set(needs))
    published = {load.worker_id: load.total for load in loads}
    for m in members:
        mine = [c for c, w in current.items() if w == m.worker_id]
        view.workers.append(WorkerLoadView(
            m.worker_id, sum(costs[c] for c in mine),
            sum(costs[c] for c in target.owned_by(m.worker_id)),
            target.shares.get(m.worker_id, 0.0), len(mine),
            published.get(m.worker_id, 0.0), m.drained))
    live = {m.worker_id: m for m in members}
    waiting = {load.worker_id: load.waiting for load in loads}
    for city in sorted(target.ranking, key=lambda c: (-costs[c], c)):
        source, goal = current.get(city, ""), target.owner(city) or ""
        if source != goal:
            waits = waiting[source].get(city, "") if source in waiting else ""
            view.moves.append(Move(city, source, goal, costs[city],
                                   _why(city, source, goal, view, live, needs[city]), waits))
    return view


def _why(city: str, source: str, target: str, view: PlacementView,
         live: dict[str, Member], needs: CityNeeds) -> str:
    if not source:
        return "nobody leads it"
    member = live.get(source)
    if member is None:
        return f"{source} is gone"
    if member.drained:
        return f"{source} is drained"
    if not may_own(member, needs):
        return f"{source} may not own it (labels)"
    if view.placement == "count":
        return "count placement"
    loads = {w.worker_id: w for w in view.workers}
    tolerance = view.tolerance
    src, dst = loads.get(source), loads.get(target)
    if src is not None and src.share and src.current > (1 + tolerance) * src.share:
        return f"{source} over its bound ({src.current:.4f} > " \
               f"{(1 + tolerance) * src.share:.4f} CPU s/s)"
    if dst is not None and dst.share and dst.current < (1 - tolerance) * dst.share:
        return f"{target} under its floor ({dst.current:.4f} < " \
               f"{(1 - tolerance) * dst.share:.4f} CPU s/s)"
    return "a heavy city set apart, cities coarser than the band spread out, or the " \
        "rebalance that follows"
