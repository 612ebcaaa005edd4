"""Strict validation of a solver's answer before anything is committed.

The coordinator calls :func:`check_solution` on every tick, between the solve and the
fenced commit, so a buggy or third-party solver can never publish a decision that sends
one order to two couriers, overloads a courier or carries a NaN ETA downstream. It is
the safety net, so it trusts nothing about the ``Solution`` (not even that the fields
are numpy arrays) and stops at the first problem with a one-line message an operator
can act on: it names the offending order or courier by id and index.

Every check is a few vectorised numpy operations (``bincount`` for duplicates and
capacity), O(assigned + orders + couriers), well under a millisecond for 2,000 × 2,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from solvers.contract import CityState, IntArray, Solution

__all__ = ["InvalidSolution", "check_solution"]


class InvalidSolution(ValueError):
    """A solver's answer breaks the contract; the message says how, in one line."""


_INDEX_KINDS = "iu"  # signed / unsigned integers
_TIME_KINDS = "iuf"  # any real number type; bool, complex, str, object are refused


def _array(value: object, name: str, kinds: str, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise InvalidSolution(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.ndim != 1:
        raise InvalidSolution(f"{name} must be a 1-D array, got shape {value.shape}")
    if value.dtype.kind not in kinds:
        raise InvalidSolution(f"{name} must hold {what}, got dtype {value.dtype}")
    return value


def _check_indices(values: np.ndarray, count: int, kind: str, plural: str) -> IntArray:
    """Reject out-of-range indices; return them as int64."""
    if values.size:
        bad = (values < 0) | (values >= count)
        if bad.any():
            first = values[int(np.argmax(bad))]
            raise InvalidSolution(
                f"unknown {kind} index {first} (city has {count} {plural})")
    return values.astype(np.int64, copy=False)


def _times(count: int) -> str:
    return "twice" if count == 2 else f"{count} times"


def _check_stats(stats: object) -> None:
    if not isinstance(stats, Mapping):
        raise InvalidSolution(f"stats must be a mapping, got {type(stats).__name__}")
    for key, value in stats.items():
        if not isinstance(key, str):
            raise InvalidSolution(f"stats key {key!r} is not a string")
        number = isinstance(value, int | float | np.integer | np.floating) \
            and not isinstance(value, bool)
        if not number:
            raise InvalidSolution(
                f"stats[{key!r}] must be a number, got {type(value).__name__}")
        if not math.isfinite(float(value)):
            raise InvalidSolution(f"stats[{key!r}] is not a finite number ({value})")


def check_solution(state: CityState, solution: Solution) -> None:
    """Raise :class:`InvalidSolution` unless ``solution`` is a valid answer for ``state``.

    Checks, in order: it is a ``Solution``; ``orders`` and ``couriers`` are 1-D integer
    numpy arrays and ``pickup_eta`` a 1-D numeric one, all of one length; every index
    names an existing order / courier; no order is assigned twice; no courier carries
    more size than its free capacity; every ETA is finite and ≥ 0; ``stats`` maps
    strings to finite numbers. Returns ``None`` when all hold.
    """
    if not isinstance(solution, Solution):
        raise InvalidSolution(f"expected a Solution, got {type(solution).__name__}")
    orders_in = _array(solution.orders, "orders", _INDEX_KINDS, "integers")
    couriers_in = _array(solution.couriers, "couriers", _INDEX_KINDS, "integers")
    eta = _array(solution.pickup_eta, "pickup_eta", _TIME_KINDS, "numbers")
    lengths = (orders_in.shape[0], couriers_in.shape[0], eta.shape[0])
    if len(set(lengths)) != 1:
        raise InvalidSolution(
            "arrays of different lengths: orders {}, couriers {}, pickup_eta {}".format(*lengths))

    n, m = state.n_orders, state.n_couriers
    orders = _check_indices(orders_in, n, "order", "orders")
    couriers = _check_indices(couriers_in, m, "courier", "couriers")
    if orders.size == 0:
        _check_stats(solution.stats)
        return

    counts = np.bincount(orders, minlength=n)
    twice = counts > 1
    if twice.any():
        i = int(np.argmax(twice))
        raise InvalidSolution(
            f"order index {i} ({state.order_ids[i]}) assigned {_times(int(counts[i]))}")

    eta64 = eta.astype(np.float64, copy=False)
    finite = np.isfinite(eta64)
    if not finite.all():
        k = int(np.argmin(finite))
        raise InvalidSolution(
            f"pickup_eta not finite for order {state.order_ids[orders[k]]} ({eta64[k]})")
    negative = eta64 < 0
    if negative.any():
        k = int(np.argmax(negative))
        raise InvalidSolution(
            f"pickup_eta negative for order {state.order_ids[orders[k]]}: {eta64[k]}")

    size = np.asarray(state.size, dtype=np.int64)
    capacity = np.asarray(state.capacity, dtype=np.int64)
    # Float weights are exact for integer sums below 2**53: plenty for capacity units.
    load = np.bincount(couriers, weights=size[orders], minlength=m)
    over = load > capacity
    if over.any():
        j = int(np.argmax(over))
        raise InvalidSolution(
            f"courier {state.courier_ids[j]} over capacity: {int(load[j])} > {int(capacity[j])}")
    _check_stats(solution.stats)
