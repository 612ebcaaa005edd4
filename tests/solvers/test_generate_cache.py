"""simulated_state caches per city and per window of ticks: none of it may show in results.

A state must be the same whether computed cold (empty caches) or warm (after the ticks
before it, after other sizes or options of the same city, on other threads), and the arrays
handed out must not be shared with the caches.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

import solvers.generate as generate
from solvers.contract import CityState
from solvers.generate import simulated_state


def identical(a: CityState, b: CityState) -> bool:
    """Same values, dtypes, shapes and strides, to the bit."""
    return a.city == b.city and a.taken_at == b.taken_at and all(
        x.dtype == y.dtype and x.shape == y.shape and x.strides == y.strides
        and x.tobytes() == y.tobytes()
        for x, y in zip(a.arrays().values(), b.arrays().values(), strict=True))


def state(tick: int, n: int, m: int, **kw: object) -> CityState:
    args: dict[str, object] = {"n_orders": n, "n_couriers": m, "seed": 2,
                               "taken_at": 100.0 + tick}
    args.update(kw)
    return simulated_state("cache-city", tick, **args)  # type: ignore[arg-type]


def cold(tick: int, n: int, m: int, **kw: object) -> CityState:
    generate._city.cache_clear()
    return state(tick, n, m, **kw)


@pytest.fixture(autouse=True)
def clean_cache() -> Iterator[None]:
    generate._city.cache_clear()
    yield
    generate._city.cache_clear()


SIZES = [(0, 0), (0, 4), (4, 0), (1, 1), (30, 20), (200, 100)]


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("max_size", [1, 3])
def test_warm_equals_cold(n: int, m: int, max_size: int) -> None:
    # 1_031 and 1_032 are the last tick of a 32-tick window and the first of the next.
    for tick in (1_000, 1_031, 1_032, 7):
        warm = [state(t, n, m, max_size=max_size) for t in range(tick - 50, tick + 1)][-1]
        assert identical(warm, cold(tick, n, m, max_size=max_size))


def test_other_options_and_jumps_do_not_leak_between_calls() -> None:
    expected = {(t, k): cold(t, 30, 20, max_size=k, busy_share=0.3) for t in (5, 37, 900_000)
                for k in (1, 2)}
    generate._city.cache_clear()
    for _ in range(2):
        for (t, k), want in expected.items():
            state(t + 1, 30, 20, max_size=3 - k)  # same city, another size limit
            state(-t, 30, 20)  # far away, even negative
            assert identical(state(t, 30, 20, max_size=k, busy_share=0.3), want)


def test_order_id_width_grows_inside_a_window() -> None:
    """Order ids reach 7 digits at some tick: the dtype is sized per tick, as np.array does."""
    n = 3
    city = generate._city("cache-city", 2, n, 2, 10_000.0, 5)
    # The first tick at which slot s shows an order whose id has 7 digits.
    first = min(int(-(-(10**6 - s) // n) * city.life[s] - city.shift[s]) for s in range(n))
    widths = set()
    for tick in range(first - 40, first + 40):
        warm = state(tick, n, 2)
        ids = warm.order_ids
        assert ids.dtype == np.array(ids.tolist(), dtype=np.str_).dtype
        widths.add(ids.dtype.itemsize // 4)
        assert identical(warm, cold(tick, n, 2))
    assert widths == {8, 9}  # "o-999999" and "o-1000002": both widths were exercised


def test_threads_share_caches_safely() -> None:
    ticks = range(0, 120, 3)
    expected = {t: cold(t, 30, 20) for t in ticks}
    generate._city.cache_clear()
    failures: list[int] = []

    def run(offset: int) -> None:
        for i in range(len(ticks) * 3):
            t = ticks[(i * 7 + offset) % len(ticks)]
            if not identical(state(t, 30, 20), expected[t]):
                failures.append(t)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_returned_arrays_are_not_the_caches() -> None:
    want = cold(40, 30, 20)
    got = state(40, 30, 20)
    for array in got.arrays().values():
        if array.flags.writeable:  # a caller may scribble on its own copy...
            array[...] = array[:1] if array.shape[0] else array
    got.freeze()  # ...or freeze it
    after = [state(t, 30, 20) for t in (40, 41)]  # from the same caches
    assert identical(after[0], want)
    assert identical(after[1], cold(41, 30, 20))
    # What is shared (the fixed speeds, as before the caches existed) cannot be written.
    assert not state(40, 30, 20).speed.flags.writeable


def test_fast_noise_seeding_matches_numpy() -> None:
    """The per-window derivation of default_rng's state: SeedSequence, then PCG64 seeding.

    Should numpy ever seed differently, simulated_state falls back to default_rng (and stays
    correct, only slower): this test is what says so.
    """
    rng = np.random.default_rng(0)
    seeds = [0, 1, 2**32 - 1, 2**32, 2**64 - 1]
    seeds += [int(s) for s in rng.integers(0, 2**64, size=200, dtype=np.uint64)]
    seeds += [int(s) for s in rng.integers(0, 2**32, size=50, dtype=np.int64)]
    words = generate._seed_words(seeds)
    assert generate._FAST_NOISE
    for seed, row in zip(seeds, words, strict=True):
        assert np.array_equal(row, np.random.SeedSequence(seed).generate_state(4, np.uint64))
        fast = generate._seeded_generator(row.tolist()).normal(0.0, 5.0, size=(4, 2))
        assert fast.tobytes() == np.random.default_rng(seed).normal(0.0, 5.0, (4, 2)).tobytes()


def test_default_rng_fallback_gives_the_same_states(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [cold(t, 30, 20) for t in (3, 33, 64)]
    monkeypatch.setattr(generate, "_FAST_NOISE", False)
    for t, want in zip((3, 33, 64), fast, strict=True):
        assert identical(cold(t, 30, 20), want)
