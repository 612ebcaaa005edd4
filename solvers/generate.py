"""Synthetic cities: for tests, the conformance kit, benchmarks and the demo source.

Two generators share one notion of a city:

* :func:`random_city` — one snapshot. Orders cluster around a few restaurant hotspots
  (plus some scattered background), couriers wait near hotspots or roam anywhere, and
  couriers differ by vehicle: bikes (~4.5 m/s, 1–2 free units), scooters (~7 m/s, 2–3)
  and cars (~9 m/s, 3–5). A share of couriers are busy (0 free capacity), because a
  solver that ignores capacity must be caught by the tests, not in production.
* :func:`simulated_state` — a city that evolves tick by tick: couriers glide along
  smooth orbits, orders appear and disappear, and an order keeps its id and attributes
  for as long as it lives (its ``ready_in`` counting down). The coordinator's
  ``simulated`` state source serves it, so a demo cluster has something real-looking to
  dispatch without any producer.

Everything is a pure function of its arguments. Seeds come from a BLAKE2 hash of the
arguments — never Python's ``hash()``, which is salted per process — so two workers (or
two runs) generate the same city. Attributes are drawn as uniforms and shaped by the same
code for both generators; :func:`simulated_state` draws an order's uniforms from a
counter-based hash of the order's identity rather than from a tick's random stream, which
is what keeps an order unchanged from one tick to the next.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from solvers.contract import CityState, FloatArray, IntArray, StrArray

__all__ = ["NOMINAL_TICK_SECONDS", "VEHICLES", "random_city", "simulated_state", "stable_seed"]

#: Vehicle types, their share of the fleet, base speed (m/s) and free capacity range.
VEHICLES: tuple[str, ...] = ("bike", "scooter", "car")
_SHARE = np.array([0.45, 0.35, 0.20])
_SPEED = np.array([4.5, 7.0, 9.0])
_CAPACITY_LOW = np.array([1, 2, 3])
_CAPACITY_HIGH = np.array([2, 3, 5])

#: Simulated time between two ticks, used to move couriers and age orders. The real
#: period is the city's setting; the simulation only needs a plausible pace.
NOMINAL_TICK_SECONDS = 5.0

_ORDER_COLUMNS = 10  # uniforms consumed per order
_COURIER_COLUMNS = 10  # uniforms consumed per courier
_MAX_READY_SECONDS = 600.0
_BACKGROUND_SHARE = 0.15  # orders not tied to a hotspot
_ROAMING_SHARE = 0.4  # couriers not waiting near a hotspot


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from ``parts``' string forms, identical in every process."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class _Layout:
    """Where a city's demand is: hotspot centres, their popularity, the city's size."""

    area: float
    hotspots: FloatArray  # h×2
    cumulative: FloatArray  # h, cumulative popularity ending at 1
    spread: float  # std (m) of orders around their hotspot


def _layout(rng: np.random.Generator, area: float, hotspots: int) -> _Layout:
    h = max(1, hotspots)
    margin = 0.1 * area
    centres = rng.uniform(margin, area - margin, size=(h, 2))
    popularity = rng.dirichlet(np.full(h, 2.0))
    cumulative = np.cumsum(popularity)
    cumulative[-1] = 1.0
    return _Layout(area=area, hotspots=centres, cumulative=cumulative, spread=0.04 * area)


def _normal_pair(u1: FloatArray, u2: FloatArray) -> FloatArray:
    """Two independent standard normals per row (Box–Muller), shape k×2."""
    radius = np.sqrt(-2.0 * np.log1p(-u1))  # 1 - u1 in (0, 1]: log is finite
    angle = 2.0 * np.pi * u2
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def _hotspot(layout: _Layout, u: FloatArray) -> FloatArray:
    index = np.searchsorted(layout.cumulative, u, side="right")
    centres: FloatArray = layout.hotspots[np.minimum(index, layout.hotspots.shape[0] - 1)]
    return centres


def _clip(points: FloatArray, area: float) -> FloatArray:
    return np.clip(points, 0.0, area)


@dataclass(frozen=True)
class _Orders:
    pickup: FloatArray
    dropoff: FloatArray
    ready_in: FloatArray
    size: IntArray


def _orders(u: FloatArray, layout: _Layout, max_size: int) -> _Orders:
    """Shape n×_ORDER_COLUMNS uniforms into orders."""
    pickup = _hotspot(layout, u[:, 1]) + layout.spread * _normal_pair(u[:, 2], u[:, 3])
    background = u[:, 0] < _BACKGROUND_SHARE
    pickup = np.where(background[:, None], u[:, 4:6] * layout.area, pickup)
    trip = 300.0 - 2000.0 * np.log1p(-u[:, 6])  # metres, exponential tail
    heading = 2.0 * np.pi * u[:, 7]
    dropoff = pickup + trip[:, None] * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    # Most orders take one unit; bigger ones get rarer (u² skews towards small sizes).
    size = 1 + np.minimum(np.floor(max_size * u[:, 9] ** 2), max_size - 1).astype(np.int64)
    return _Orders(
        pickup=_clip(pickup, layout.area),
        dropoff=_clip(dropoff, layout.area),
        ready_in=_MAX_READY_SECONDS * u[:, 8],
        size=size,
    )


@dataclass(frozen=True)
class _Couriers:
    position: FloatArray
    speed: FloatArray
    capacity: IntArray
    vehicle: IntArray  # index into VEHICLES


def _couriers(u: FloatArray, layout: _Layout, busy_share: float) -> _Couriers:
    """Shape m×_COURIER_COLUMNS uniforms into couriers."""
    vehicle = np.minimum(np.searchsorted(np.cumsum(_SHARE), u[:, 0], side="right"), 2)
    speed = _SPEED[vehicle] * (0.85 + 0.3 * u[:, 1])
    low, high = _CAPACITY_LOW[vehicle], _CAPACITY_HIGH[vehicle]
    capacity = np.minimum(low + np.floor(u[:, 2] * (high - low + 1)), high).astype(np.int64)
    capacity[u[:, 3] < busy_share] = 0
    near = _hotspot(layout, u[:, 5]) + 2.5 * layout.spread * _normal_pair(u[:, 6], u[:, 7])
    roaming = u[:, 4] < _ROAMING_SHARE
    position = np.where(roaming[:, None], u[:, 8:10] * layout.area, near)
    return _Couriers(position=_clip(position, layout.area), speed=speed,
                     capacity=capacity, vehicle=vehicle)


def _ids(prefix: str, numbers: IntArray, width: int) -> StrArray:
    return np.array([f"{prefix}-{k:0{width}d}" for k in numbers.tolist()], dtype=np.str_)


def _state(city: str, taken_at: float, order_ids: StrArray, orders: _Orders,
           courier_ids: StrArray, couriers: _Couriers, position: FloatArray) -> CityState:
    return CityState(
        city=city,
        taken_at=float(taken_at),
        order_ids=order_ids,
        pickup=orders.pickup.reshape(-1, 2),
        dropoff=orders.dropoff.reshape(-1, 2),
        ready_in=orders.ready_in,
        size=orders.size,
        courier_ids=courier_ids,
        position=position.reshape(-1, 2),
        speed=couriers.speed,
        capacity=couriers.capacity,
        vehicle=np.array(VEHICLES, dtype=np.str_)[couriers.vehicle],
    )


def random_city(city: str, n_orders: int, n_couriers: int, seed: int, *,
                area_m: float = 10_000.0, taken_at: float = 0.0, max_size: int = 1,
                hotspots: int = 5, busy_share: float = 0.1) -> CityState:
    """One realistic snapshot of ``city`` with ``n_orders`` orders and ``n_couriers``.

    ``area_m`` is the side of the square city (metres); order sizes are 1..``max_size``
    (mostly 1); ``busy_share`` of the couriers have 0 free capacity. Ids are
    ``o-000123`` and ``c-0042``. Identical arguments give an identical city.
    """
    if n_orders < 0 or n_couriers < 0 or max_size < 1:
        raise ValueError("n_orders and n_couriers must be >= 0 and max_size >= 1")
    rng = np.random.default_rng(stable_seed("random_city", city, seed))
    layout = _layout(rng, area_m, hotspots)
    orders = _orders(rng.random((n_orders, _ORDER_COLUMNS)), layout, max_size)
    couriers = _couriers(rng.random((n_couriers, _COURIER_COLUMNS)), layout, busy_share)
    return _state(city, taken_at,
                  _ids("o", np.arange(n_orders, dtype=np.int64), 6), orders,
                  _ids("c", np.arange(n_couriers, dtype=np.int64), 4), couriers,
                  couriers.position)


# ----------------------------------------------------------------------- simulation

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _hashed_uniforms(key: int, a: IntArray, b: IntArray, columns: int) -> FloatArray:
    """Uniforms in [0, 1), shape k×columns, a pure function of (key, a[i], b[i], column).

    A counter-based generator: the uniforms of one (a, b) pair never depend on which
    other pairs are drawn, which a sequential random stream cannot offer.
    """
    ident = _splitmix64(a.astype(np.uint64) * _MIX1 ^ _splitmix64(b.astype(np.uint64)))
    base = _splitmix64(ident ^ np.uint64(key))
    cols = np.arange(1, columns + 1, dtype=np.uint64) * _GOLDEN
    bits = _splitmix64(base[:, None] + cols[None, :])
    uniforms: FloatArray = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2.0**53)
    return uniforms


@functools.lru_cache(maxsize=4096)
def _fixed(city: str, seed: int, n_orders: int, n_couriers: int, area_m: float,
           hotspots: int) -> tuple[int, _Layout, FloatArray, FloatArray, _Couriers]:
    """What does not change between ticks of a simulated city, computed once per city:
    a worker asks for the same city every period. The arrays are never written to."""
    key = stable_seed("simulated_state", city, seed)
    fixed = np.random.default_rng(key)
    layout = _layout(fixed, area_m, hotspots)
    slot_u = fixed.random((n_orders, 2))
    courier_u = fixed.random((n_couriers, _COURIER_COLUMNS + 6))
    base = _couriers(courier_u[:, :_COURIER_COLUMNS], layout, 0.0)
    for array in (slot_u, courier_u, base.position, base.speed, base.capacity, base.vehicle):
        array.setflags(write=False)
    return key, layout, slot_u, courier_u, base


def simulated_state(city: str, tick: int, *, n_orders: int, n_couriers: int, seed: int,
                    taken_at: float, area_m: float = 10_000.0, max_size: int = 1,
                    hotspots: int = 5, busy_share: float = 0.1) -> CityState:
    """``city`` as it is at ``tick``: a deterministic simulation, exactly sized.

    The city has ``n_orders`` order *slots*. Slot ``s`` holds a sequence of orders, each
    living ``L_s`` ticks (8–32, fixed per slot, offset per slot so that slots turn over at
    different ticks): about 1/20 of the orders are replaced every tick. An order is
    identified by (slot, generation), its id is ``o-<generation × n_orders + slot>`` and
    its attributes come from a hash of that identity, so it is the same at every tick of
    its life except ``ready_in``, which counts down by :data:`NOMINAL_TICK_SECONDS`.

    Couriers ``c-0000…`` keep their vehicle, speed and capacity, orbit a home point on a
    smooth Lissajous path at about half their speed, become busy (0 free capacity) on
    smooth stretches of time, and carry a few metres of GPS noise drawn from the tick's
    own generator (seeded from ``(city, seed, tick)``).

    Identical ``(city, tick, sizes, seed, ...)`` give an identical state. Costs well
    under a millisecond for 200 orders × 100 couriers.
    """
    if n_orders < 0 or n_couriers < 0 or max_size < 1:
        raise ValueError("n_orders and n_couriers must be >= 0 and max_size >= 1")
    key, layout, slot_u, courier_u, base = _fixed(city, seed, n_orders, n_couriers, area_m,
                                                  hotspots)
    noise = np.random.default_rng(stable_seed("simulated_state", city, seed, tick))

    slots = np.arange(n_orders, dtype=np.int64)
    life = 8 + np.floor(25 * slot_u[:, 0]).astype(np.int64)
    shifted = tick + np.floor(slot_u[:, 1] * life).astype(np.int64)
    generation, age = np.divmod(shifted, life)
    orders = _orders(_hashed_uniforms(key, slots, generation, _ORDER_COLUMNS),
                     layout, max_size)
    ready_in = np.maximum(orders.ready_in - age * NOMINAL_TICK_SECONDS, 0.0)
    orders = _Orders(orders.pickup, orders.dropoff, ready_in, orders.size)
    order_ids = _ids("o", generation * n_orders + slots, 6)

    couriers = base
    extra = courier_u[:, _COURIER_COLUMNS:]
    radius = 300.0 + 1500.0 * extra[:, 0]
    omega = 0.5 * couriers.speed * NOMINAL_TICK_SECONDS / radius  # radians per tick
    ratio = 0.6 + 0.8 * extra[:, 1]
    t = float(tick)
    orbit = np.stack([np.cos(omega * t + 2 * np.pi * extra[:, 2]),
                      np.sin(ratio * omega * t + 2 * np.pi * extra[:, 3])], axis=1)
    position = couriers.position + radius[:, None] * orbit
    position += noise.normal(0.0, 5.0, size=position.shape)
    # Busy while a slow sine of the courier's own phase sits above a threshold that
    # makes the busy share of time ≈ busy_share.
    threshold = np.cos(np.pi * busy_share)
    busy = np.cos(0.02 * t * (0.5 + extra[:, 4]) + 2 * np.pi * extra[:, 5]) > threshold
    capacity = np.where(busy, 0, couriers.capacity).astype(np.int64)
    couriers = _Couriers(couriers.position, couriers.speed, capacity, couriers.vehicle)
    return _state(city, taken_at, order_ids, orders,
                  _ids("c", np.arange(n_couriers, dtype=np.int64), 4), couriers,
                  _clip(position, area_m))
