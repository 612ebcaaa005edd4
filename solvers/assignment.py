"""Optimal one-to-one assignment under the dispatch objective, on a dense cost matrix.

The dispatch objective prices a one-to-one decision as ``Σ assigned pickup times +
penalty × unassigned orders``. Subtracting the constant ``penalty × n_orders`` turns it
into ``Σ (pickup time − penalty)`` over assigned pairs, so a pair is worth taking iff its
time is below the penalty, and *leaving an order unassigned is the same as assigning it
to a pair that costs exactly the penalty*. That is what :func:`assign` does: forbidden
or worthless pairs cost ``penalty`` in the matrix handed to the assignment solver and are
dropped from its answer. The optimum of that full rectangular assignment is then exactly
the optimum of the dispatch objective (any partial assignment pads to a full one at
``penalty`` per missing pair, and back).

``scipy.optimize.linear_sum_assignment`` is fast when couriers outnumber orders and
far slower when orders slightly outnumber couriers (shortest augmenting paths then run
across the city; figures in ``docs/solvers.md``). Two changes keep the answer optimal
and recover part of that:

* rows are solved in ascending order of their cheapest allowed pair, so confident
  orders settle the duals before the contested ones augment;
* a near-balanced over-demanded matrix (fewer couriers than orders, but at least
  :data:`PAD_RATIO` × as many) is padded to a square with penalty columns — idle
  "nobody" couriers, exactly what leaving an order unassigned costs. Scarcer couriers
  solve faster unpadded.

Neither changes the worst case, which ``docs/solvers.md`` measures.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from solvers.contract import FloatArray, IntArray

__all__ = ["BACKENDS", "PAD_RATIO", "allowed_pairs", "assign", "lap_available"]

BoolArray = npt.NDArray[np.bool_]

#: Over-demanded problems (more orders than couriers) are padded to a square with
#: penalty columns when couriers number at least this share of the orders.
PAD_RATIO = 0.8

#: Assignment backends: ``scipy`` (always) and ``lap`` (``lap.lapjv``, if installed).
BACKENDS = ("scipy", "lap")


def lap_available() -> bool:
    """Whether the optional ``lap`` package can be imported."""
    return importlib.util.find_spec("lap") is not None


def allowed_pairs(eta: FloatArray, size: npt.ArrayLike, free: npt.ArrayLike,
                  max_eta: float, penalty: float) -> BoolArray:
    """Pairs (order i, courier j) worth assigning: fits, in time, cheaper than the penalty.

    ``size[i] <= free[j]`` (so a courier with no free capacity takes nothing),
    ``eta[i, j] <= max_eta`` and ``eta[i, j] < penalty`` (which also refuses NaN and
    infinite times).
    """
    ok: BoolArray = np.less_equal.outer(np.asarray(size, dtype=np.int64),
                                        np.asarray(free, dtype=np.int64))
    ok &= eta < penalty
    if np.isfinite(max_eta):
        ok &= eta <= max_eta
    return ok


def _solve_scipy(work: FloatArray) -> tuple[IntArray, IntArray]:
    rows, cols = linear_sum_assignment(work)
    return rows.astype(np.int64), cols.astype(np.int64)


def _solve_lap(work: FloatArray) -> tuple[IntArray, IntArray]:
    import lap

    _, x, _ = lap.lapjv(work, extend_cost=True)
    x = np.asarray(x, dtype=np.int64)
    rows = np.flatnonzero(x >= 0).astype(np.int64)
    return rows, x[rows]


def assign(cost: FloatArray, allowed: BoolArray, penalty: float,
           backend: str = "scipy") -> tuple[IntArray, IntArray]:
    """Rows and columns of an optimal one-to-one assignment of allowed pairs.

    Minimises ``Σ cost[pairs] + penalty × (rows left out)`` over matchings that use
    only ``allowed`` pairs, where every allowed cost must be below ``penalty``. Rows
    and columns with no allowed pair are removed first (they cannot take part), which
    also keeps busy couriers out of the solver. Returns pairs sorted by row. Pure
    function of its inputs; ``cost`` and ``allowed`` are not modified.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown assignment backend {backend!r}")
    empty = np.zeros(0, dtype=np.int64)
    row_ok = np.flatnonzero(allowed.any(axis=1))
    col_ok = np.flatnonzero(allowed.any(axis=0))
    if row_ok.size == 0 or col_ok.size == 0:
        return empty, empty.copy()
    whole = row_ok.size == allowed.shape[0] and col_ok.size == allowed.shape[1]
    sub_allowed = allowed if whole else allowed[np.ix_(row_ok, col_ok)]
    sub_cost = cost if whole else cost[np.ix_(row_ok, col_ok)]
    n, m = sub_allowed.shape
    width = n if m < n and m >= PAD_RATIO * n else m
    work = np.full((n, width), penalty, dtype=np.float64)
    np.copyto(work[:, :m], sub_cost, where=sub_allowed)
    # Easiest rows first (see the module docstring); stable, so ties keep their order.
    first = np.argsort(work[:, :m].min(axis=1), kind="stable")
    work = work[first]
    rows, cols = _solve_lap(work) if backend == "lap" else _solve_scipy(work)
    rows = first[rows]
    keep = cols < m
    rows, cols = rows[keep], cols[keep]
    keep = sub_allowed[rows, cols]
    rows, cols = row_ok[rows[keep]], col_ok[cols[keep]]
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]
