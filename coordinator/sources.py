"""State sources: where a city's state comes from at the start of each tick.

A state source is a plugin in ``dispatch.state_sources``; it is constructed once per
worker with a ``SourceContext`` and asked for a *fresh* state every tick (never a value
cached from an earlier tick). Malformed state raises ``StateError`` naming what is
wrong, which ends up on the city's status.

Built-ins:

``simulated``
    A deterministic synthetic city (``solvers.generate.simulated_state``) that evolves
    from tick to tick. Parameters: ``orders`` (default 50), ``couriers`` (default 30),
    ``seed`` (default 0). Costs no round trip to etcd.
``etcd``
    Reads a ``StateSnapshot`` JSON from ``<ns>/state/<city>`` (one round trip), so any
    producer — or an operator with ``etcdctl put`` — can feed a city.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from coordinator.codec import decode
from coordinator.errors import StateError
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["EtcdSource", "SimulatedSource", "SourceContext", "StateSource", "state_from_snapshot"]


@dataclass(frozen=True)
class SourceContext:
    client: EtcdClient
    keys: Keys


class StateSource(abc.ABC):
    #: ``load`` computes and never waits (no network, no disk): the worker then runs it
    #: inside its compute gate (``coordinator.worker.gate``). Leave it False for a source that
    #: reads over the network, or it would hold every other tick up while it waits.
    cpu_bound: ClassVar[bool] = False

    def __init__(self, context: SourceContext) -> None:
        self.context = context

    @abc.abstractmethod
    def load(self, config: CityConfig, now: float) -> CityState:
        """The city's state as of now. Raise ``StateError`` if it is unusable."""


def _int_param(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not float(value).is_integer() or not low <= value <= high:
        raise StateError(f"parameter {name}={value!r} must be an integer in [{low}, {high}]")
    return int(value)


class SimulatedSource(StateSource):
    cpu_bound = True

    def load(self, config: CityConfig, now: float) -> CityState:
        from solvers.generate import simulated_state

        params = config.params
        n_orders = _int_param(params, "orders", 50, 0, 100_000)
        n_couriers = _int_param(params, "couriers", 30, 0, 100_000)
        seed = _int_param(params, "seed", 0, 0, 2**31 - 1)
        tick = int(now // config.period)
        return simulated_state(config.city, tick, n_orders=n_orders, n_couriers=n_couriers,
                               seed=seed, taken_at=now).freeze()


class EtcdSource(StateSource):
    def load(self, config: CityConfig, now: float) -> CityState:
        key = self.context.keys.state(config.city)
        kv = self.context.client.get(key)
        if kv is None:
            raise StateError(f"no state snapshot at {key}")
        try:
            snapshot = decode(pb.StateSnapshot, kv.value, what=f"state snapshot {key}")
        except ValueError as exc:
            raise StateError(str(exc)) from exc
        taken_at = snapshot.taken_at.ToNanoseconds() / 1e9 if snapshot.HasField("taken_at") \
            else time.time()
        return state_from_snapshot(config.city, snapshot, taken_at).freeze()


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
