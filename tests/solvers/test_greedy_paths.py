"""``greedy`` decides small cities by sorting every pair and large ones with a lazy heap;
both must take the pairs in the same (ETA, order, courier) order."""

from __future__ import annotations

import numpy as np
import pytest

from solvers.greedy import _take_lazily, _take_sorted


@pytest.mark.parametrize("seed", range(20))
def test_sorting_and_the_lazy_heap_pick_the_same_pairs_even_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n, m = (int(x) for x in rng.integers(1, 12, size=2))
        cost = rng.integers(0, 5, size=(n, m)).astype(float)  # many ties
        cost[rng.random((n, m)) < 0.3] = np.inf  # forbidden pairs
        sorted_pairs = sorted(zip(*_take_sorted(cost.copy()), strict=True))
        lazy_pairs = sorted(zip(*_take_lazily(cost.copy()), strict=True))
        assert sorted_pairs == lazy_pairs
