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
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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


_POW10 = 10 ** np.arange(19, dtype=np.int64)  # every power of ten an int64 holds


def _ids(prefix: str, numbers: IntArray, width: int) -> StrArray:
    """``f"{prefix}-{k:0{width}d}"`` for every ``k``, as ``np.array(..., dtype=np.str_)``
    makes them (dtype ``<U{longest}``, shorter ids padded with NULs), built digit by digit
    as UCS-4 code points rather than string by string."""
    if numbers.shape[0] == 0 or int(numbers.min()) < 0:  # (negative: only for odd ticks)
        return np.array([f"{prefix}-{k:0{width}d}" for k in numbers.tolist()], dtype=np.str_)
    head = len(prefix) + 1
    digits = np.maximum(np.searchsorted(_POW10, numbers, side="right"), max(width, 1))
    longest = int(digits.max())
    padded = np.empty((numbers.shape[0], longest), dtype=np.int64)  # zero-padded to longest
    rest = numbers.copy()
    for column in range(longest - 1, -1, -1):
        np.remainder(rest, 10, out=padded[:, column])
        rest //= 10
    padded += ord("0")
    if int(digits.min()) < longest:  # shorter ids: their digits go left, NULs after them
        source = np.arange(longest) + (longest - digits)[:, None]
        inside = source < longest
        padded = np.where(inside, np.take_along_axis(padded, np.where(inside, source, 0),
                                                     axis=1), 0)
    codes = np.empty((numbers.shape[0], head + longest), dtype=np.uint32)
    codes[:, :head] = [ord(c) for c in prefix + "-"]
    codes[:, head:] = padded
    ids: StrArray = codes.view(np.dtype(f"U{head + longest}")).reshape(-1)
    return ids


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


# Per-tick GPS noise comes from np.random.default_rng(stable_seed(city, seed, tick)), whose
# construction (SeedSequence hashing, then PCG64 seeding) costs more than the rest of a
# small city's tick. The same generator state is derived here for a window of ticks at once:
# SeedSequence's hash (O'Neill's seed_seq, numpy/random/bit_generator.pyx) vectorised over
# the ticks, then PCG64's seeding (pcg64_set_seed) in Python integers, loaded into a
# per-thread Generator. _FAST_NOISE checks the result against numpy once per process and
# falls back to default_rng if they ever disagree.

_SS_INIT_A, _SS_MULT_A = 0x43B0D7E5, 0x931E8875
_SS_INIT_B, _SS_MULT_B = 0x8B51F9DD, 0x58F38DED
_SS_MIX_L, _SS_MIX_R = np.uint32(0xCA01F9DD), np.uint32(0x4973F715)
_SS_SHIFT = np.uint32(16)
_PCG_MULTIPLIER = (2549297995355413924 << 64) + 4865540595714422341
_MASK128 = (1 << 128) - 1

_U32 = npt.NDArray[np.uint32]
_U64 = npt.NDArray[np.uint64]


def _hash_constants(init: int, mult: int, count: int) -> tuple[_U32, _U32]:
    """The xor constant and the multiplier of each of ``count`` successive hashmix steps."""
    xor, mul = [], []
    const = init
    for _ in range(count):
        xor.append(const)
        const = const * mult & 0xFFFFFFFF
        mul.append(const)
    return np.array(xor, dtype=np.uint32)[:, None], np.array(mul, dtype=np.uint32)[:, None]


_SS_POOL_XOR, _SS_POOL_MUL = _hash_constants(_SS_INIT_A, _SS_MULT_A, 4 + 12)
_SS_OUT_XOR, _SS_OUT_MUL = _hash_constants(_SS_INIT_B, _SS_MULT_B, 8)


def _hashmix(value: _U32, xor: _U32, mul: _U32) -> _U32:
    mixed: _U32 = (value ^ xor) * mul  # wrapping
    return mixed ^ (mixed >> _SS_SHIFT)


def _seed_words(seeds: list[int]) -> _U64:
    """``SeedSequence(s).generate_state(4, np.uint64)`` for every 64-bit ``s``: k×4 uint64."""
    entropy = np.array(seeds, dtype=np.uint64)
    # A seed is one or two 32-bit words, lowest first; a missing word hashes as 0.
    pool = np.zeros((4, entropy.shape[0]), dtype=np.uint32)
    pool[0] = (entropy & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    pool[1] = (entropy >> np.uint64(32)).astype(np.uint32)
    pool = _hashmix(pool, _SS_POOL_XOR[:4], _SS_POOL_MUL[:4])
    for src in range(4):  # mix every word into every other, in seed_seq's order
        dst = [d for d in range(4) if d != src]
        steps = slice(4 + 3 * src, 7 + 3 * src)
        hashed = _hashmix(pool[src], _SS_POOL_XOR[steps], _SS_POOL_MUL[steps])
        mixed: _U32 = pool[dst] * _SS_MIX_L - hashed * _SS_MIX_R
        pool[dst] = mixed ^ (mixed >> _SS_SHIFT)
    out = _hashmix(pool[[0, 1, 2, 3, 0, 1, 2, 3]], _SS_OUT_XOR, _SS_OUT_MUL)
    words: _U64 = out[0::2].astype(np.uint64) | (out[1::2].astype(np.uint64) << np.uint64(32))
    return np.ascontiguousarray(words.T)


_thread_local = threading.local()


def _seeded_generator(words: list[int]) -> np.random.Generator:
    """This thread's Generator, in the state ``default_rng`` gives the seed of ``words``."""
    generator: np.random.Generator | None = getattr(_thread_local, "generator", None)
    if generator is None:
        generator = _thread_local.generator = np.random.Generator(np.random.PCG64(0))
    seed_high, seed_low, inc_high, inc_low = words
    inc = (inc_high << 65 | inc_low << 1 | 1) & _MASK128
    state = ((inc + (seed_high << 64 | seed_low)) * _PCG_MULTIPLIER + inc) & _MASK128
    generator.bit_generator.state = {"bit_generator": "PCG64",
                                     "state": {"state": state, "inc": inc},
                                     "has_uint32": 0, "uinteger": 0}
    return generator


def _fast_noise_works() -> bool:
    seeds = [0, 1, 2**32 - 1, 2**32, 2**64 - 1, stable_seed("simulated_state", "check", 0, 1)]
    try:
        for seed, words in zip(seeds, _seed_words(seeds).tolist(), strict=True):
            fast = _seeded_generator(words).normal(0.0, 5.0, size=(3, 2))
            if fast.tobytes() != np.random.default_rng(seed).normal(0.0, 5.0, (3, 2)).tobytes():
                return False
    except Exception:  # any surprise from numpy's internals: use default_rng
        return False
    return True


_FAST_NOISE = _fast_noise_works()

#: Ticks covered by one window of precomputed orders and noise seeds (see :class:`_Window`).
_WINDOW_TICKS = 32


@dataclass(frozen=True)
class _Window:
    """What a simulated city needs for ticks ``start .. start+_WINDOW_TICKS-1``.

    Every order shown in the window, computed in one go: slot ``s``'s generation ``g`` is
    row ``g + row_offset[s]`` (about 2.8 rows per slot on average, as an order lives 8–32
    ticks); and the noise generators' seed words of each tick. Ticks only index into these.
    Arrays are read-only: a tick takes copies.
    """

    start: int
    max_size: int
    row_offset: IntArray  # n
    pickup: FloatArray  # rows×2
    dropoff: FloatArray  # rows×2
    ready_in: FloatArray  # rows, at age 0
    size: IntArray  # rows
    ids: StrArray  # rows
    id_length: IntArray | None  # rows; None when every id has the same length
    noise_words: _U64 | None  # _WINDOW_TICKS×4 (see _seed_words), or None


class _City:
    """What does not change between ticks of a simulated city, computed once per city
    (a worker asks for the same city every period), and the city's current window.
    The arrays are never written to."""

    def __init__(self, city: str, seed: int, n_orders: int, n_couriers: int,
                 area_m: float, hotspots: int) -> None:
        self.city, self.seed = city, seed
        self.key = stable_seed("simulated_state", city, seed)
        fixed = np.random.default_rng(self.key)
        self.layout = _layout(fixed, area_m, hotspots)
        slot_u = fixed.random((n_orders, 2))
        courier_u = fixed.random((n_couriers, _COURIER_COLUMNS + 6))
        self.base = _couriers(courier_u[:, :_COURIER_COLUMNS], self.layout, 0.0)
        self.n_orders, self.n_couriers = n_orders, n_couriers
        self.slots = np.arange(n_orders, dtype=np.int64)
        self.life = 8 + np.floor(25 * slot_u[:, 0]).astype(np.int64)
        self.shift = np.floor(slot_u[:, 1] * self.life).astype(np.int64)
        # The tick-independent factors of simulated_state's courier formulas, each computed
        # with the same operations in the same order, so that results match to the bit.
        extra = courier_u[:, _COURIER_COLUMNS:]
        radius = 300.0 + 1500.0 * extra[:, 0]
        omega = 0.5 * self.base.speed * NOMINAL_TICK_SECONDS / radius  # radians per tick
        ratio = 0.6 + 0.8 * extra[:, 1]
        self.radius = radius[:, None]
        self.omega = omega
        self.ratio_omega = ratio * omega
        self.phase_x = 2 * np.pi * extra[:, 2]
        self.phase_y = 2 * np.pi * extra[:, 3]
        self.busy_rate = 0.5 + extra[:, 4]
        self.busy_phase = 2 * np.pi * extra[:, 5]
        self.courier_ids = _ids("c", np.arange(n_couriers, dtype=np.int64), 4)
        self.vehicle = np.array(VEHICLES, dtype=np.str_)[self.base.vehicle]
        for array in (self.base.position, self.base.speed, self.base.capacity,
                      self.base.vehicle, self.slots, self.life, self.shift, self.radius,
                      self.omega, self.ratio_omega, self.phase_x, self.phase_y,
                      self.busy_rate, self.busy_phase,
                      self.courier_ids, self.vehicle):
            array.setflags(write=False)
        # Replaced (never mutated) when a tick falls outside it. Threads may race to replace
        # it, harmlessly: every candidate is the same pure function's result.
        self.window: _Window | None = None

    def window_at(self, tick: int, max_size: int) -> _Window:
        window = self.window
        if window is None or window.max_size != max_size \
                or not window.start <= tick < window.start + _WINDOW_TICKS:
            window = self._window(tick - tick % _WINDOW_TICKS, max_size)
            self.window = window
        return window

    def _window(self, start: int, max_size: int) -> _Window:
        first = (start + self.shift) // self.life  # each slot's generation at `start`
        last = (start + _WINDOW_TICKS - 1 + self.shift) // self.life
        count = last - first + 1
        begin = np.cumsum(count) - count
        slot = np.repeat(self.slots, count)
        generation = np.repeat(first - begin, count) + np.arange(slot.shape[0],
                                                                  dtype=np.int64)
        # The per-tick code on more rows: it is element-wise, so a row comes out as it would
        # on its own (checked against per-tick computation at each x86-64 SIMD level).
        orders = _orders(_hashed_uniforms(self.key, slot, generation, _ORDER_COLUMNS),
                         self.layout, max_size)
        ids = _ids("o", generation * self.n_orders + slot, 6)
        length = np.char.str_len(ids).astype(np.int64)
        uniform = length.shape[0] == 0 or int(length.min()) == int(length.max())
        noise_words = None
        if self.n_couriers and _FAST_NOISE:
            # stable_seed("simulated_state", city, seed, t) for each t, sharing the hash of
            # the common prefix.
            common = "\x1f".join(("simulated_state", str(self.city), str(self.seed), ""))
            prefix = hashlib.blake2b(common.encode(), digest_size=8)
            seeds = []
            for t in range(start, start + _WINDOW_TICKS):
                hashed = prefix.copy()
                hashed.update(str(t).encode())
                seeds.append(int.from_bytes(hashed.digest(), "little"))
            noise_words = _seed_words(seeds)
        window = _Window(start=start, max_size=max_size, row_offset=begin - first,
                         pickup=orders.pickup, dropoff=orders.dropoff,
                         ready_in=orders.ready_in, size=orders.size, ids=ids,
                         id_length=None if uniform else length, noise_words=noise_words)
        for array in (window.row_offset, window.pickup, window.dropoff, window.ready_in,
                      window.size, window.ids, length, noise_words):
            if array is not None:
                array.setflags(write=False)
        return window


@functools.lru_cache(maxsize=4096)
def _city(city: str, seed: int, n_orders: int, n_couriers: int, area_m: float,
          hotspots: int) -> _City:
    return _City(city, seed, n_orders, n_couriers, area_m, hotspots)


@functools.lru_cache(maxsize=64)
def _busy_threshold(busy_share: float) -> np.float64:
    return np.cos(np.pi * busy_share)  # type: ignore[no-any-return]


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

    Identical ``(city, tick, sizes, seed, ...)`` give an identical state, whatever was
    asked before. What does not depend on the tick is computed once per city (for the
    4,096 most recently asked cities) and orders and noise seeds once per 32-tick window,
    so a city asked tick after tick costs little CPU beyond the first tick of a window
    (figures in ``docs/solvers.md``).
    """
    if n_orders < 0 or n_couriers < 0 or max_size < 1:
        raise ValueError("n_orders and n_couriers must be >= 0 and max_size >= 1")
    fixed = _city(city, seed, n_orders, n_couriers, area_m, hotspots)
    window = fixed.window_at(tick, max_size)

    generation, age = np.divmod(tick + fixed.shift, fixed.life)
    row = generation + window.row_offset
    ready_in = window.ready_in.take(row) - age * NOMINAL_TICK_SECONDS
    np.maximum(ready_in, 0.0, out=ready_in)
    order_ids = window.ids.take(row)
    if window.id_length is not None:  # ids of several lengths: size the dtype as np.array
        width = int(window.id_length.take(row).max())
        if width != order_ids.dtype.itemsize // 4:
            order_ids = order_ids.astype(f"<U{width}")

    # cos and sin get fresh arrays of length m, as they always did (not views, nor in
    # place), so that numpy takes the same loops and gives the same bits.
    t = float(tick)
    base = fixed.base
    position = np.empty((n_couriers, 2))
    position[:, 0] = np.cos(fixed.omega * t + fixed.phase_x)
    position[:, 1] = np.sin(fixed.ratio_omega * t + fixed.phase_y)
    position *= fixed.radius
    position += base.position
    if n_couriers:
        if window.noise_words is not None:
            noise = _seeded_generator(window.noise_words[tick - window.start].tolist())
        else:
            noise = np.random.default_rng(stable_seed("simulated_state", city, seed, tick))
        position += noise.normal(0.0, 5.0, size=position.shape)
    position.clip(0.0, area_m, out=position)
    # Busy while a slow sine of the courier's own phase sits above a threshold that
    # makes the busy share of time ≈ busy_share.
    busy = np.cos(fixed.busy_rate * (0.02 * t) + fixed.busy_phase) \
        > _busy_threshold(busy_share)
    return CityState(
        city=city,
        taken_at=float(taken_at),
        order_ids=order_ids,
        pickup=window.pickup.take(row, axis=0).reshape(-1, 2),  # reshaped as _state does:
        dropoff=window.dropoff.take(row, axis=0).reshape(-1, 2),  # same strides if empty
        ready_in=ready_in,
        size=window.size.take(row),
        courier_ids=fixed.courier_ids.copy(),
        position=position.reshape(-1, 2),
        speed=base.speed,
        capacity=np.where(busy, 0, base.capacity),
        vehicle=fixed.vehicle.copy(),
    )
