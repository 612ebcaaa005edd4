"""The one retry delay: jittered, capped doubling.

Every loop that tries again after a failure (the worker's control loop, a city's failed
tick, a tick that could not reach etcd, a watch that lost its stream, a worker sitting
out after repeated lease loss) asks a :class:`Backoff` how long to wait after the n-th
failure in a row. The caller owns the count; the policy owns the arithmetic, so the
doubling, the cap and the jitter are written once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """``base`` seconds after the first failure, doubling up to ``cap``.

    ``jitter`` spreads each delay uniformly over ``[1 - jitter/2, 1 + jitter/2)`` times
    its nominal value, so that workers that failed together do not retry together
    (0: no jitter). ``floor`` in :meth:`delay` is a lower bound applied before the
    jitter: a retry must not come sooner than, say, the failed attempt took.
    """

    base: float
    cap: float
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError(f"backoff needs 0 < base <= cap (got {self.base}, {self.cap})")
        if not 0.0 <= self.jitter <= 2.0:
            raise ValueError(f"backoff jitter must be within [0, 2] (got {self.jitter})")

    def nominal(self, failures: int, *, floor: float = 0.0) -> float:
        """The delay after ``failures`` failures in a row (1: the first), before jitter."""
        doublings = min(max(failures, 1) - 1, 32)
        return max(min(self.base * 2.0**doublings, self.cap), floor)

    def delay(self, failures: int, *, floor: float = 0.0,
              rng: Callable[[], float] = random.random) -> float:
        """The jittered delay after ``failures`` failures in a row (1: the first)."""
        return self.nominal(failures, floor=floor) * (1.0 - self.jitter / 2 + self.jitter * rng())
