"""A ``StateSnapshot`` message checked field by field and turned into solver arrays, and
a state turned back into one (what the state archive stores).

Shared by every source that reads the snapshot's JSON mapping (etcd, HTTP, archives).
``state_from_snapshot(city, snapshot_from_state(s), ...)`` gives ``s`` back exactly,
array by array (the snapshot's doubles are the arrays' doubles, and JSON carries a
double exactly), for every state whose sizes are at least 1 and whose couriers have a
vehicle — the snapshot's defaults for 0 and empty.
"""

from __future__ import annotations

import math

import numpy as np

from coordinator.errors import StateError
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["snapshot_from_state", "state_from_snapshot"]


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
        bad = next((i for i in ids if "\x00" in i), None)
        if bad is not None:
            # PostgreSQL's text refuses NUL: a decision carrying it could never reach the
            # sink, so it must not be decided on
            raise StateError(f"{kind} id {bad!r} contains a NUL character")
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


def snapshot_from_state(state: CityState) -> pb.StateSnapshot:
    """``state`` as a ``StateSnapshot`` (the inverse of :func:`state_from_snapshot`)."""
    pickup, dropoff, position = state.pickup.tolist(), state.dropoff.tolist(), \
        state.position.tolist()
    snapshot = pb.StateSnapshot(
        orders=[pb.Order(id=i, pickup=pb.Point(x=p[0], y=p[1]),
                         dropoff=pb.Point(x=d[0], y=d[1]), ready_in_seconds=r, size=z)
                for i, p, d, r, z in zip(state.order_ids.tolist(), pickup, dropoff,
                                         state.ready_in.tolist(), state.size.tolist(),
                                         strict=True)],
        couriers=[pb.Courier(id=i, position=pb.Point(x=p[0], y=p[1]), speed=v, capacity=c,
                             vehicle=k)
                  for i, p, v, c, k in zip(state.courier_ids.tolist(), position,
                                           state.speed.tolist(), state.capacity.tolist(),
                                           state.vehicle.tolist(), strict=True)],
    )
    snapshot.taken_at.FromNanoseconds(round(state.taken_at * 1e9))
    return snapshot
