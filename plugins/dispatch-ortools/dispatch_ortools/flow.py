"""Capacity-aware courier/order assignment as a min-cost flow, solved with OR-Tools.

What it optimises
    The core's dispatch objective: the sum over assigned orders of the estimated pickup
    time (seconds after ``taken_at``) plus a fixed penalty for every order left
    unassigned. A courier collects its orders one after the other, pickup to pickup,
    and each pickup happens at ``max(arrival, ready_in)``; the ``pickup_eta`` values
    returned are exactly those sequential times, listed per courier in visiting order.

The model
    A network ``source -> order -> courier -> sink`` solved by OR-Tools'
    ``SimpleMinCostFlow``: one unit of flow per order; order->courier arcs (capacity 1,
    cost = pickup seconds scaled to integer milliseconds) only where the courier's free
    capacity holds the order's size and the pickup is within ``max_eta`` and below the
    unassigned penalty; a bypass arc order->sink at the penalty cost keeps the flow
    always feasible, so "leave it unassigned" is priced exactly like the objective
    prices it.

    Arcs are limited for large cities: an order gets arcs to its ``k`` fastest
    couriers, and a courier to its ``k`` fastest orders. The courier side matters
    where orders crowd a hotspot: they all share the same few nearest couriers, and
    without it the couriers just beyond get no arc (on the core's synthetic cities it
    removed every case where the k-limit had left the answer above greedy's, for ~30%
    more time; widening stranded orders' arcs and re-solving was also tried: +0.2%
    quality for +30% time, not kept).

    Two strategies are solved and the cheaper answer (under the objective above) kept:

    ``global``
        One flow over the whole city in which a courier can take ``capacity //
        smallest order size`` orders through unit courier->sink slot arcs, the s-th
        extra order costing ``s × 0.5 × median candidate pickup time`` more (a convex
        stand-in for the wait that sequential pickups add to later orders). Each
        courier's orders are then sequenced (exactly, over every permutation, up to 5
        orders; earliest-next beyond). Sizes above 1 are handled by a repair pass:
        orders that would overflow ``sum(size) <= capacity`` are dropped (the quickest
        direct pickups that fit are kept), and stops whose sequential pickup breaks
        ``max_eta`` or costs at least the penalty are skipped. Whatever is left over is
        offered to rounds as below, starting from the end of each route.
    ``rounds``
        Successive flows in which every courier takes at most one more order, priced
        from where and when its previous pickup ends. Prices are exact for the
        sequential model and sizes are checked against the room left, so nothing needs
        repair; it is myopic across rounds, which ``global`` is not.

    Neither ever exceeds a courier's free capacity or reports a pickup after
    ``max_eta``.

Complexity
    Per flow, O(n·m) vectorised numpy to find the arcs (in row blocks, so memory stays
    O(block·m)), then OR-Tools' cost-scaling min-cost flow on n + m + 2 nodes and at
    most k·(n + m) + 2·n + m arcs (``global`` adds one courier->sink arc per order a
    courier may take, never more than its arcs). Rounds are bounded by the number of
    orders a courier can carry and by ``max_rounds``. ``auto`` costs about the sum of
    both strategies (figures in the plugin's README). The
    work done depends only on the input, never on the clock (``budget`` is not
    consulted), so identical input gives identical output; lower ``k`` or pick one
    strategy to go faster.

When to pick it
    Cities where couriers carry several orders (scooters, cars) or where orders
    outnumber couriers: it decides bundles and assignment together, and its flows are
    optimal over their arcs, unlike greedy. On the core's synthetic cities it was never
    worse than ``greedy`` up to 800 × 300 (with the k-limit it can end a hair above it
    at 2,000 × 2,000 under a tight ``max_eta``: 0.0006% in one case seen), and on
    average ~3% cheaper than the built-in ``bundle`` (rounds of exact one-to-one
    assignments), which still comes out ahead on some cities (by up to ~12% on one
    small bundled city). When every courier has room for one order only it reduces to
    a one-to-one assignment over the k-limited arcs: ``hungarian`` is then the simpler,
    exact choice if it fits the budget.

Parameters (all optional; the city's params are shared with the state source and any
shadow solvers, so keys this solver does not know are ignored)
    ``k`` (int >= 1, default 20): arcs per order (its fastest couriers) and per
    courier (its fastest orders); a city with at most k couriers or at most k orders
    gets every feasible arc.
    ``max_eta`` (seconds > 0 or null, default none): never assign an order whose pickup
    would happen later than this.
    ``unassigned_penalty`` (seconds > 0, default the core's
    ``UNASSIGNED_PENALTY_SECONDS``): cost of leaving an order unassigned.
    ``strategy`` (``auto`` | ``global`` | ``rounds``, default ``auto``: run both, keep
    the cheaper).
    ``max_rounds`` (int >= 1, default 64): bound on fill rounds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from ortools.graph.python import min_cost_flow
from solvers import params as _params
from solvers.contract import CityState, Solution, Solver
from solvers.cost import UNASSIGNED_PENALTY_SECONDS, pickup_time_matrix, travel_seconds

__all__ = ["FlowParams", "MinCostFlowSolver", "parse_params"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Arcs = tuple[IntArray, IntArray, FloatArray]

#: Flow costs are integers: seconds are scaled to this many units (milliseconds)...
COST_SCALE = 1000.0
#: ...unless the penalty is so large that the biggest scaled cost would pass this bound;
#: OR-Tools' cost scaling multiplies costs by the node count and must not overflow int64.
MAX_SCALED_COST = float(2**40)
#: In the ``global`` flow the s-th extra order of a courier costs ``s`` times this share
#: of the median candidate pickup time: a stand-in for the wait that collecting orders
#: one after another adds to the later ones (tuned on ``solvers.generate`` cities).
SLOT_COST_SHARE = 0.5
#: Route orders exactly (all permutations) up to this many stops per courier.
EXACT_ROUTE_MAX = 5
#: Cap on the size of one candidate-generation block (rows × couriers floats).
_BLOCK_CELLS = 1_000_000

STRATEGIES = ("auto", "global", "rounds")


@dataclass(frozen=True)
class FlowParams:
    k: int = 20
    max_eta: float = math.inf
    unassigned_penalty: float = UNASSIGNED_PENALTY_SECONDS
    strategy: str = "auto"
    max_rounds: int = 64

    @property
    def limit(self) -> float:
        """Latest pickup worth an arc: within max_eta and strictly below the penalty."""
        return float(min(self.max_eta, np.nextafter(self.unassigned_penalty, 0.0)))

    @property
    def scale(self) -> float:
        return min(COST_SCALE, MAX_SCALED_COST / self.unassigned_penalty)


def parse_params(params: Mapping[str, Any]) -> FlowParams:
    """Check and default this solver's parameters; raise ``ValueError`` if unusable.

    Keys this solver does not know are ignored: a city's params are shared with its
    state source and shadow solvers.
    """
    return FlowParams(
        k=_params.positive_int(params, "k", 20),
        max_eta=_params.max_eta(params),
        unassigned_penalty=_params.unassigned_penalty(params),
        strategy=_params.choice(params, "strategy", "auto", STRATEGIES),
        max_rounds=_params.positive_int(params, "max_rounds", 64),
    )


def _leg(a: FloatArray, b: FloatArray, speed: float) -> float:
    """Seconds from point ``a`` to ``b``: the core's arithmetic, bit for bit
    (``sqrt(dx*dx + dy*dy) / speed``, see ``solvers.cost``)."""
    dx = float(b[0]) - float(a[0])
    dy = float(b[1]) - float(a[1])
    return math.sqrt(dx * dx + dy * dy) / speed


# --------------------------------------------------------------------------- pieces


@dataclass
class _Couriers:
    """Per-courier state while routes grow: where and when the last pickup ends, room."""

    position: FloatArray  # m×2
    time: FloatArray  # m
    free: IntArray  # m
    speed: FloatArray  # m

    def copy(self) -> _Couriers:
        return _Couriers(self.position.copy(), self.time.copy(), self.free.copy(),
                         self.speed)


@dataclass(frozen=True)
class _Orders:
    pickup: FloatArray  # n×2
    ready: FloatArray
    size: IntArray


def _candidates(orders: _Orders, rows: IntArray, couriers: _Couriers, limit: float,
                k: int) -> Arcs:
    """Feasible (order, courier) arcs: each order's ``k`` fastest couriers and each
    courier's ``k`` fastest orders (among ``rows``).

    Pickup time of order i by courier j = ``max(time_j + |position_j - pickup_i| /
    speed_j, ready_i)`` (``solvers.cost.pickup_time_matrix``); feasible iff ``size_i <=
    free_j`` and the time is ``<= limit``. The courier side matters where orders crowd
    a hotspot: they all share the same few nearest couriers, and without it the couriers
    just beyond would get no arc at all. Returns parallel arrays (order index, courier
    index, pickup time), sorted by order then courier.
    """
    active = np.flatnonzero(couriers.free > 0)
    if rows.size == 0 or active.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    pos, t0 = couriers.position[active], couriers.time[active]
    speed, free = couriers.speed[active], couriers.free[active]
    width = active.size
    dense = k >= width  # every feasible pair is an arc already
    block = max(1, _BLOCK_CELLS // width)  # bounded memory, cache-friendly
    keys, times = [], []  # key = position in `rows` * width + position in `active`
    col_pos = np.zeros((width, 0), np.int64)  # each courier's best rows so far...
    col_t = np.zeros((width, 0), np.float64)  # ...and their times
    for begin in range(0, rows.size, block):
        rb = rows[begin:begin + block]
        t = pickup_time_matrix(orders.pickup[rb], orders.ready[rb], pos, speed, start=t0)
        t[(orders.size[rb, None] > free[None, :]) | ~(t <= limit)] = np.inf  # NaN too
        here = np.arange(begin, begin + rb.size, dtype=np.int64)
        idx = _smallest(t, k)
        tv = np.take_along_axis(t, idx, axis=1)
        ok = np.isfinite(tv)
        keys.append((here[:, None] * width + idx)[ok])
        times.append(tv[ok])
        if dense:
            continue
        tt = np.ascontiguousarray(t.T)  # couriers × orders of this block
        idx = _smallest(tt, k)
        col_pos = np.concatenate([col_pos, here[idx]], axis=1)
        col_t = np.concatenate([col_t, np.take_along_axis(tt, idx, axis=1)], axis=1)
        if col_t.shape[1] > k:
            idx = _smallest(col_t, k)
            col_pos = np.take_along_axis(col_pos, idx, axis=1)
            col_t = np.take_along_axis(col_t, idx, axis=1)
    ok = np.isfinite(col_t)
    keys.append((col_pos * width + np.arange(width)[:, None])[ok])
    times.append(col_t[ok])
    key, first = np.unique(np.concatenate(keys), return_index=True)
    arc_t = np.concatenate(times)[first]
    return (rows[key // width].astype(np.int64), active[key % width].astype(np.int64),
            arc_t.astype(np.float64))


def _smallest(a: FloatArray, k: int) -> IntArray:
    """Column indices of the ``k`` smallest entries of each row of ``a`` (any order)."""
    if k >= a.shape[1]:
        return np.broadcast_to(np.arange(a.shape[1], dtype=np.int64), a.shape)
    return np.argpartition(a, k - 1, axis=1)[:, :k].astype(np.int64)


def _min_cost_flow(n: int, m: int, arcs: Arcs, courier_cap: IntArray, p: FlowParams,
                   slot_cost: float = 0.0) -> Arcs:
    """Solve source -> order -> courier -> sink, with a penalty bypass order -> sink.

    ``courier_cap[j]`` orders at most go through courier j; with ``slot_cost`` > 0 its
    s-th order (from 0) adds ``s * slot_cost`` seconds. Returns the candidate arcs that
    carry flow.
    """
    arc_o, arc_c, arc_t = arcs
    if arc_o.size == 0:
        return arcs
    source, sink = n + m, n + m + 1
    order_node = np.arange(n, dtype=np.int32)
    used, indegree = np.unique(arc_c, return_counts=True)
    # No courier can take more orders than it has arcs: keeps the slot arcs <= arcs.
    cap = np.minimum(courier_cap[used], indegree).astype(np.int64)
    scale = p.scale

    mcf = min_cost_flow.SimpleMinCostFlow()
    mcf.add_arcs_with_capacity_and_unit_cost(
        np.full(n, source, np.int32), order_node, np.ones(n, np.int64), np.zeros(n, np.int64))
    penalty_cost = round(p.unassigned_penalty * scale)
    mcf.add_arcs_with_capacity_and_unit_cost(  # leave it unassigned, at the penalty
        order_node, np.full(n, sink, np.int32), np.ones(n, np.int64),
        np.full(n, penalty_cost, np.int64))
    cand = mcf.add_arcs_with_capacity_and_unit_cost(
        arc_o.astype(np.int32), (n + arc_c).astype(np.int32),
        np.ones(arc_o.size, np.int64), np.rint(arc_t * scale).astype(np.int64))
    if slot_cost > 0 and int(cap.max()) > 1:
        # Convex courier -> sink: one unit arc per slot, the s-th costing s * slot_cost
        # (capped at the penalty: a dearer slot could never beat the bypass anyway).
        cu = np.repeat(used, cap)
        slot = np.arange(cu.size) - np.repeat(np.cumsum(cap) - cap, cap)
        slot_costs = np.minimum(np.rint(slot * (slot_cost * scale)), penalty_cost)
        mcf.add_arcs_with_capacity_and_unit_cost(
            (n + cu).astype(np.int32), np.full(cu.size, sink, np.int32),
            np.ones(cu.size, np.int64), slot_costs.astype(np.int64))
    else:
        mcf.add_arcs_with_capacity_and_unit_cost(
            (n + used).astype(np.int32), np.full(used.size, sink, np.int32),
            cap, np.zeros(used.size, np.int64))
    mcf.set_nodes_supplies(np.array([source, sink], np.int32), np.array([n, -n], np.int64))
    status = mcf.solve()
    if status != mcf.OPTIMAL:  # the bypass keeps every order routable: not expected
        raise RuntimeError(f"OR-Tools SimpleMinCostFlow returned status {status!r}")
    chosen = np.asarray(mcf.flows(np.asarray(cand, np.int32))) > 0
    return arc_o[chosen], arc_c[chosen], arc_t[chosen]


def _permutations(size: int) -> IntArray:
    """Every permutation of ``range(size)`` as rows, in lexicographic order (cached)."""
    if size not in _PERMUTATIONS:
        _PERMUTATIONS[size] = np.array(list(itertools.permutations(range(size))),
                                       dtype=np.int64).reshape(-1, size)
    return _PERMUTATIONS[size]


_PERMUTATIONS: dict[int, IntArray] = {}


def _sequence(start: FloatArray, t0: float, speed: float, stops: list[int],
              orders: _Orders) -> list[int]:
    """Visiting order of ``stops`` with the least sum of pickup times: exact (every
    permutation, vectorised) up to :data:`EXACT_ROUTE_MAX` stops, earliest-next beyond.
    Only the order is decided here; the reported times are recomputed with :func:`_leg`."""
    if len(stops) <= 1:
        return list(stops)
    pts = orders.pickup[stops]
    ready = orders.ready[stops]
    first = travel_seconds(start[None, :], pts, [speed])[0]  # start -> stop
    between = travel_seconds(pts, pts, np.full(len(stops), speed))  # stop -> stop
    if len(stops) <= EXACT_ROUTE_MAX:
        perms = _permutations(len(stops))
        t = np.maximum(t0 + first[perms[:, 0]], ready[perms[:, 0]])
        total = t.copy()
        for r in range(1, len(stops)):
            t = np.maximum(t + between[perms[:, r - 1], perms[:, r]], ready[perms[:, r]])
            total += t
        best = perms[int(np.argmin(total))]  # first minimum: deterministic
        return [stops[q] for q in best.tolist()]
    left, route, t, prev = list(range(len(stops))), [], t0, -1
    while left:
        legs = first[left] if prev < 0 else between[prev, left]
        times = np.maximum(t + legs, ready[left])
        pick = int(np.argmin(times))
        t, prev = float(times[pick]), left.pop(pick)
        route.append(prev)
    return [stops[q] for q in route]


class _Plan:
    """Routes under construction: per courier, the stops in visiting order."""

    def __init__(self, state: CityState) -> None:
        self.couriers = _Couriers(
            position=np.array(state.position, dtype=np.float64).reshape(-1, 2),
            time=np.zeros(state.n_couriers, dtype=np.float64),
            free=np.array(state.capacity, dtype=np.int64),
            speed=np.array(state.speed, dtype=np.float64),
        )
        self.stop_order: list[int] = []
        self.stop_courier: list[int] = []
        self.stop_time: list[float] = []
        self.assigned = np.zeros(state.n_orders, dtype=bool)
        self.flows = 0
        self.arcs = 0

    def visit(self, j: int, i: int, t: float, orders: _Orders) -> None:
        c = self.couriers
        c.position[j] = orders.pickup[i]
        c.time[j] = t
        c.free[j] -= int(orders.size[i])
        self.stop_order.append(i)
        self.stop_courier.append(j)
        self.stop_time.append(t)
        self.assigned[i] = True

    def objective(self, penalty: float) -> float:
        unassigned = int(self.assigned.size - np.count_nonzero(self.assigned))
        return math.fsum(self.stop_time) + penalty * unassigned

    def solution(self, p: FlowParams, strategy: str) -> Solution:
        orders = np.asarray(self.stop_order, dtype=np.int64)
        couriers = np.asarray(self.stop_courier, dtype=np.int64)
        times = np.asarray(self.stop_time, dtype=np.float64)
        by_courier = np.argsort(couriers, kind="stable")  # keeps each visiting order
        return Solution(
            orders=orders[by_courier], couriers=couriers[by_courier],
            pickup_eta=times[by_courier],
            stats={
                "objective": self.objective(p.unassigned_penalty),
                "assigned": float(orders.size),
                "unassigned": float(self.assigned.size - orders.size),
                "bundled_couriers": float(np.count_nonzero(np.bincount(couriers) > 1))
                if couriers.size else 0.0,
                "flows": float(self.flows),
                "arcs": float(self.arcs),
                "strategy_global": 1.0 if strategy == "global" else 0.0,
            },
        )


# --------------------------------------------------------------------- strategies


def _fill_rounds(plan: _Plan, orders: _Orders, p: FlowParams,
                 first: Arcs | None = None) -> None:
    """Flows in which each courier takes at most one more order, costed from its last
    stop, until nothing more is worth assigning. ``first``: candidate arcs already
    computed for the plan's current state."""
    n, m = orders.ready.size, plan.couriers.free.size
    one_each = np.ones(m, dtype=np.int64)
    for _ in range(p.max_rounds):
        arcs = first if first is not None else _candidates(
            orders, np.flatnonzero(~plan.assigned), plan.couriers, p.limit, p.k)
        first = None
        if arcs[0].size == 0:
            return
        got_o, got_c, got_t = _min_cost_flow(n, m, arcs, one_each, p)
        plan.flows += 1
        plan.arcs += int(arcs[0].size)
        if got_o.size == 0:
            return
        for i, j, t in zip(got_o.tolist(), got_c.tolist(), got_t.tolist(), strict=True):
            plan.visit(j, i, t, orders)


def _solve_global(state: CityState, orders: _Orders, p: FlowParams, arcs: Arcs) -> _Plan:
    plan = _Plan(state)
    start = plan.couriers.copy()
    # Orders a courier may carry: exact when every size is 1, optimistic otherwise
    # (repaired below, so capacity is never exceeded).
    count_cap = start.free // max(1, int(orders.size.min()))
    slot_cost = SLOT_COST_SHARE * float(np.median(arcs[2])) if arcs[2].size else 0.0
    got_o, got_c, got_t = _min_cost_flow(orders.ready.size, start.free.size, arcs,
                                         count_cap, p, slot_cost)
    plan.flows += 1
    plan.arcs += int(arcs[0].size)

    by_courier: dict[int, list[tuple[float, int]]] = {}
    for i, j, t in zip(got_o.tolist(), got_c.tolist(), got_t.tolist(), strict=True):
        by_courier.setdefault(j, []).append((t, i))
    for j in sorted(by_courier):
        # Sizes: keep the quickest direct pickups that fit; the rest go to the fill.
        room, kept = int(start.free[j]), []
        for _, i in sorted(by_courier[j]):
            if orders.size[i] <= room:
                kept.append(i)
                room -= int(orders.size[i])
        speed = float(start.speed[j])
        route = _sequence(start.position[j], 0.0, speed, kept, orders)
        # Walk the route; skip a stop whose sequential pickup breaks max_eta or costs
        # at least the penalty (skipping one only makes the later stops earlier).
        here, t = start.position[j], 0.0
        for i in route:
            ti = max(t + _leg(here, orders.pickup[i], speed), float(orders.ready[i]))
            if ti <= p.limit:
                plan.visit(j, i, ti, orders)
                here, t = orders.pickup[i], ti
    _fill_rounds(plan, orders, p)
    return plan


def _solve_rounds(state: CityState, orders: _Orders, p: FlowParams, arcs: Arcs) -> _Plan:
    plan = _Plan(state)
    _fill_rounds(plan, orders, p, first=arcs)
    return plan


class MinCostFlowSolver(Solver):
    """Capacity-aware min-cost-flow assignment with sequential bundles (OR-Tools)."""

    description: ClassVar[str] = (
        "OR-Tools min-cost flow: capacity-aware bundling, k-nearest arcs, "
        "sequential pickup ETAs"
    )

    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        p = parse_params(params)
        if state.n_orders == 0 or state.n_couriers == 0:
            return Solution.empty()
        orders = _Orders(
            pickup=np.asarray(state.pickup, dtype=np.float64).reshape(-1, 2),
            ready=np.asarray(state.ready_in, dtype=np.float64),
            size=np.asarray(state.size, dtype=np.int64),
        )
        # Both strategies start from the same first-leg candidates.
        arcs = _candidates(orders, np.arange(state.n_orders, dtype=np.int64),
                           _Plan(state).couriers, p.limit, p.k)
        plans: list[tuple[str, _Plan]] = []
        if p.strategy in ("auto", "global"):
            plans.append(("global", _solve_global(state, orders, p, arcs)))
        if p.strategy in ("auto", "rounds"):
            plans.append(("rounds", _solve_rounds(state, orders, p, arcs)))
        # Cheapest wins; min() keeps the first on a tie, so the choice is stable.
        name, best = min(plans, key=lambda item: item[1].objective(p.unassigned_penalty))
        return best.solution(p, name)
