"""A ``StateSnapshot`` message checked field by field and turned into solver arrays.

Shared by every source that reads the snapshot's JSON mapping (etcd, HTTP, archives).
"""

from __future__ import annotations

import math

import numpy as np

from coordinator.errors import StateError
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["state_from_snapshot"]


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise StateError(f"{what} is not a finite number ({value!r})")
    return value


def state_from_snapshot(city: str, snapshot: pb.StateSnapshot, taken_at: float) -> CityState:
    """Check a snapshot field by field and turn it into the solver's arrays."""
    order_ids = [o.id for o in snapshot.orders]
    courier_ids = [c.id for c in snapshot.couriers]
    for kind, ids in (("order", order_ids), ("courier", courier_ids)):
        if any(not i for i in ids):
            raise StateError(f"an {kind} has an empty id" if kind == "order"
                             else f"a {kind} has an empty id")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise StateError(f"{kind} id {dup!r} appears more than once")
    for o in snapshot.orders:
        for name, p in (("pickup", o.pickup), ("dropoff", o.dropoff)):
            _finite(p.x, f"order {o.id} {name}.x")
            _finite(p.y, f"order {o.id} {name}.y")
        if _finite(o.ready_in_seconds, f"order {o.id} readyInSeconds") < 0:
            raise StateError(f"order {o.id} readyInSeconds is negative")
        if o.size < 0:
            raise StateError(f"order {o.id} size {o.size} is negative")
    for c in snapshot.couriers:
        _finite(c.position.x, f"courier {c.id} position.x")
        _finite(c.position.y, f"courier {c.id} position.y")
        if not _finite(c.speed, f"courier {c.id} speed") > 0:
            raise StateError(f"courier {c.id} speed {c.speed} must be positive")
        if c.capacity < 0:
            raise StateError(f"courier {c.id} capacity {c.capacity} is negative")

    def points(ps: list[pb.Point]) -> np.ndarray:
        return np.array([[p.x, p.y] for p in ps], dtype=np.float64).reshape(len(ps), 2)

    return CityState(
        city=city,
        taken_at=taken_at,
        order_ids=np.array(order_ids, dtype=np.str_),
        pickup=points([o.pickup for o in snapshot.orders]),
        dropoff=points([o.dropoff for o in snapshot.orders]),
        ready_in=np.array([o.ready_in_seconds for o in snapshot.orders], dtype=np.float64),
        size=np.array([o.size or 1 for o in snapshot.orders], dtype=np.int64),
        courier_ids=np.array(courier_ids, dtype=np.str_),
        position=points([c.position for c in snapshot.couriers]),
        speed=np.array([c.speed for c in snapshot.couriers], dtype=np.float64),
        capacity=np.array([c.capacity for c in snapshot.couriers], dtype=np.int64),
        vehicle=np.array([c.vehicle or "bike" for c in snapshot.couriers], dtype=np.str_),
    )
