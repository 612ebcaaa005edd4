"""Capacity-aware courier/order assignment as a min-cost flow, solved with OR-Tools.

What it optimises
    The core's dispatch objective: the sum over assigned orders of the estimated pickup
    time (seconds after ``taken_at``) plus a fixed penalty for every order left
    unassigned. A courier collects its orders one after the other, pickup to pickup,
    and each pickup happens at ``max(arrival, ready_in)``; the ``pickup_eta`` values
    returned are exactly those sequential times, listed per courier in visiting order.

The model
    A network ``source -> order -> courier -> sink`` solved by OR-Tools'
    ``SimpleMinCostFlow``: one unit of flow per order; an order->courier arc (capacity 1,
    cost = integer-scaled pickup seconds) only where the courier's free capacity holds
    the order's size, the pickup time is at most ``max_eta`` and below the unassigned
    penalty, and the courier is among the order's ``k`` fastest to reach it; a bypass
    arc order->sink at the penalty cost keeps the flow always feasible, so "leave it
    unassigned" is priced exactly like the objective prices it.

    Two strategies are solved and the cheaper answer (under the objective above) kept:

    ``global``
        One flow over the whole city in which courier->sink carries as many orders as
        the courier's free capacity allows (``capacity // smallest order size``), with
        arc costs = direct pickup times. Each courier's orders are then sequenced
        (exactly for up to 5 orders, nearest-earliest beyond), sizes are repaired
        (orders that would overflow ``sum(size) <= capacity`` are dropped, cheapest kept
        first), and stops whose sequential pickup time breaks ``max_eta`` or costs more
        than the penalty are skipped. Dropped orders go to the fill rounds below.
    ``rounds``
        Successive flows in which every courier takes at most one more order, costed
        from where and when its previous pickup ends. Costs are exact for the sequential
        model and sizes are checked against the remaining capacity, so nothing needs
        repair; it is myopic across rounds, which ``global`` is not.

    Both never exceed a courier's capacity and never report a pickup after ``max_eta``.

Complexity
    Candidate generation is O(n·m) vectorised numpy per round (processed in row chunks
    so memory stays O(chunk·m)); each flow has n + m + 2 nodes and at most
    n·(k + 2) + m arcs. Rounds are bounded by the largest number of orders a courier can
    carry (and by ``max_rounds``). 2,000 orders × 2,000 couriers with k=20 solves in a
    few tenths of a second on one core. The work done depends only on the input, never
    on the clock, so identical input gives identical output.

When to pick it
    Cities where bundling matters (couriers with capacity for several orders) or where
    orders outnumber couriers: unlike a one-to-one assignment (Hungarian) it decides
    bundles and assignment together, and unlike greedy it is globally optimal within
    each flow. It scales to thousands of orders and couriers through the k-nearest arc
    limit. For tiny cities with unit capacities a plain Hungarian assignment gives the
    same answer.

Parameters (all optional; the city's params are shared with the state source and any
shadow solvers, so keys this solver does not know are ignored)
    ``k`` (int >= 1, default 20): couriers considered per order.
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
from solvers.cost import pickup_time_matrix

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
    unassigned_penalty: float = 3600.0
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
    """Mutable per-courier state: where and when the last pickup ends, room left."""

    position: FloatArray  # m×2
    time: FloatArray  # m
    free: IntArray  # m
    speed: FloatArray  # m


@dataclass(frozen=True)
class _Orders:
    pickup: FloatArray
    ready: FloatArray
    size: IntArray


def _candidates(
    orders: _Orders, rows: IntArray, couriers: _Couriers, limit: float, k: int,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Up to ``k`` feasible couriers per order in ``rows``, fastest pickup first.

    Pickup time of order i by courier j = ``max(time_j + |position_j - pickup_i| /
    speed_j, ready_i)``; feasible iff ``size_i <= free_j`` and the time is ``<= limit``.
    Returns parallel arrays (order index, courier index, pickup time).
    """
    active = np.flatnonzero(couriers.free > 0)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if rows.size == 0 or active.size == 0:
        return empty
    pos = couriers.position[active]
    t0 = couriers.time[active]
    speed = couriers.speed[active]
    free = couriers.free[active]
    kk = min(k, active.size)
    block = max(1, _BLOCK_CELLS // active.size)
    out_o, out_c, out_t = [], [], []
    for start in range(0, rows.size, block):
        rb = rows[start:start + block]
        pk = orders.pickup[rb]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t = np.subtract.outer(pk[:, 0], pos[:, 0])
            dy = np.subtract.outer(pk[:, 1], pos[:, 1])
            t *= t
            dy *= dy
            t += dy
            np.sqrt(t, out=t)  # distance, metres
            t /= speed[None, :]
            t += t0[None, :]
            np.maximum(t, orders.ready[rb, None], out=t)
            bad = (orders.size[rb, None] > free[None, :]) | ~(t <= limit)
        t[bad] = np.inf
        if kk < active.size:
            idx = np.argpartition(t, kk - 1, axis=1)[:, :kk]
            idx.sort(axis=1)  # canonical arc order, independent of partition internals
        else:
            idx = np.broadcast_to(np.arange(active.size), t.shape)
        tv = np.take_along_axis(t, idx, axis=1)
        ok = np.isfinite(tv)
        out_o.append(np.broadcast_to(rb[:, None], idx.shape)[ok])
        out_c.append(active[idx[ok]])
        out_t.append(tv[ok])
    return (np.concatenate(out_o).astype(np.int64), np.concatenate(out_c).astype(np.int64),
            np.concatenate(out_t).astype(np.float64))


def _min_cost_flow(
    n: int, m: int, arc_o: IntArray, arc_c: IntArray, arc_t: FloatArray,
    courier_cap: IntArray, penalty: float, slot_cost: float = 0.0,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Solve source -> order -> courier -> sink with a penalty bypass order -> sink.

    Returns the candidate arcs carrying flow, as (order, courier, time) arrays.
    """
    if arc_o.size == 0:
        return arc_o, arc_c, arc_t
    source, sink = n + m, n + m + 1
    order_node = np.arange(n, dtype=np.int32)
    used = np.unique(arc_c)
    cap = courier_cap[used].astype(np.int64)
    arc_cost = np.rint(arc_t * COST_SCALE).astype(np.int64)
    penalty_cost = round(penalty * COST_SCALE)

    mcf = min_cost_flow.SimpleMinCostFlow()
    mcf.add_arcs_with_capacity_and_unit_cost(
        np.full(n, source, np.int32), order_node,
        np.ones(n, np.int64), np.zeros(n, np.int64))
    mcf.add_arcs_with_capacity_and_unit_cost(
        order_node, np.full(n, sink, np.int32),
        np.ones(n, np.int64), np.full(n, penalty_cost, np.int64))
    cand = mcf.add_arcs_with_capacity_and_unit_cost(
        arc_o.astype(np.int32), (n + arc_c).astype(np.int32),
        np.ones(arc_o.size, np.int64), arc_cost)
    if slot_cost > 0 and cap.size and cap.max() > 1:
        # Convex courier -> sink: the s-th extra order of a courier costs s * slot_cost,
        # a stand-in for the wait that sequential pickups add to later orders.
        slots = np.arange(int(cap.max()))
        cu, sl = np.meshgrid(used, slots, indexing="ij")
        keep = sl < cap[:, None]
        cu, sl = cu[keep], sl[keep]
        mcf.add_arcs_with_capacity_and_unit_cost(
            (n + cu).astype(np.int32), np.full(cu.size, sink, np.int32),
            np.ones(cu.size, np.int64),
            np.rint(sl * slot_cost * COST_SCALE).astype(np.int64))
    else:
        mcf.add_arcs_with_capacity_and_unit_cost(
            (n + used).astype(np.int32), np.full(used.size, sink, np.int32),
            cap, np.zeros(used.size, np.int64))
    mcf.set_nodes_supplies(np.array([source, sink], np.int32), np.array([n, -n], np.int64))
    status = mcf.solve()
    if status != mcf.OPTIMAL:  # cannot happen: the bypass keeps every order routable
        raise RuntimeError(f"OR-Tools min cost flow returned status {status}")
    chosen = np.asarray(mcf.flows(np.asarray(cand, np.int32))) > 0
    return arc_o[chosen], arc_c[chosen], arc_t[chosen]


def _sequence(
    start: FloatArray, t0: float, speed: float, stops: list[int], orders: _Orders,
) -> list[int]:
    """Visiting order of ``stops`` minimising the sum of sequential pickup times."""
    if len(stops) <= 1:
        return list(stops)
    pts = orders.pickup[stops]
    ready = orders.ready[stops]
    n = len(stops)
    from_start = np.hypot(*(pts - start).T) / speed
    between = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1]) / speed
    if n <= EXACT_ROUTE_MAX:
        best, best_total = None, math.inf
        for perm in itertools.permutations(range(n)):
            t, total, prev = t0, 0.0, -1
            for p in perm:
                t = max(t + (from_start[p] if prev < 0 else between[prev, p]), ready[p])
                total += t
                if total >= best_total:
                    break
                prev = p
            else:
                best, best_total = perm, total
        assert best is not None
        return [stops[p] for p in best]
    left = list(range(n))
    route: list[int] = []
    t, prev = t0, -1
    while left:
        times = [max(t + (from_start[p] if prev < 0 else between[prev, p]), ready[p]) for p in left]
        pick = int(np.argmin(times))
        t, prev = times[pick], left.pop(pick)
        route.append(prev)
    return [stops[p] for p in route]


class _Plan:
    """Routes under construction: per courier, the stops in visiting order."""

    def __init__(self, state: CityState) -> None:
        self.couriers = _Couriers(
            position=np.array(state.position, dtype=np.float64, copy=True).reshape(-1, 2),
            time=np.zeros(state.n_couriers, dtype=np.float64),
            free=np.array(state.capacity, dtype=np.int64, copy=True),
            speed=np.array(state.speed, dtype=np.float64, copy=True),
        )
        self.route_orders: list[int] = []
        self.route_couriers: list[int] = []
        self.route_times: list[float] = []
        self.assigned = np.zeros(state.n_orders, dtype=bool)
        self.rounds = 0
        self.arcs = 0

    def visit(self, j: int, i: int, t: float, orders: _Orders) -> None:
        c = self.couriers
        c.position[j] = orders.pickup[i]
        c.time[j] = t
        c.free[j] -= int(orders.size[i])
        self.route_orders.append(i)
        self.route_couriers.append(j)
        self.route_times.append(t)
        self.assigned[i] = True

    def objective(self, penalty: float) -> float:
        unassigned = int(self.assigned.size - self.assigned.sum())
        return float(math.fsum(self.route_times)) + penalty * unassigned

    def solution(self, penalty: float, strategy: str) -> Solution:
        orders = np.asarray(self.route_orders, dtype=np.int64)
        couriers = np.asarray(self.route_couriers, dtype=np.int64)
        times = np.asarray(self.route_times, dtype=np.float64)
        # Group by courier, keep each courier's visiting order (stable sort).
        order = np.argsort(couriers, kind="stable")
        return Solution(
            orders=orders[order], couriers=couriers[order], pickup_eta=times[order],
            stats={
                "objective": self.objective(penalty),
                "assigned": float(orders.size),
                "unassigned": float(self.assigned.size - orders.size),
                "rounds": float(self.rounds),
                "arcs": float(self.arcs),
                "strategy_global": 1.0 if strategy == "global" else 0.0,
            },
        )


Arcs = tuple[IntArray, IntArray, FloatArray]


def _limit(p: FlowParams) -> float:
    """Latest pickup worth an arc: within max_eta and strictly cheaper than the penalty."""
    return float(min(p.max_eta, np.nextafter(p.unassigned_penalty, 0.0)))


def _fill_rounds(plan: _Plan, orders: _Orders, p: FlowParams, first: Arcs | None = None,
                 ) -> None:
    """Rounds of one-more-order-per-courier flows, costed from each courier's last stop.

    ``first``: candidate arcs already computed for the plan's current state.
    """
    n, m = orders.ready.size, plan.couriers.free.size
    ones = np.ones(m, dtype=np.int64)
    for _ in range(p.max_rounds):
        if first is not None:
            (arc_o, arc_c, arc_t), first = first, None
        else:
            rows = np.flatnonzero(~plan.assigned)
            arc_o, arc_c, arc_t = _candidates(orders, rows, plan.couriers, _limit(p), p.k)
        if arc_o.size == 0:
            return
        plan.rounds += 1
        plan.arcs += int(arc_o.size)
        got_o, got_c, got_t = _min_cost_flow(n, m, arc_o, arc_c, arc_t, ones,
                                             p.unassigned_penalty)
        if got_o.size == 0:
            return
        for i, j, t in zip(got_o.tolist(), got_c.tolist(), got_t.tolist(), strict=True):
            plan.visit(j, i, t, orders)


def _initial_arcs(state: CityState, orders: _Orders, p: FlowParams) -> Arcs:
    return _candidates(orders, np.arange(state.n_orders, dtype=np.int64),
                       _Plan(state).couriers, _limit(p), p.k)


def _solve_global(state: CityState, orders: _Orders, p: FlowParams, arcs: Arcs) -> _Plan:
    plan = _Plan(state)
    n, m = state.n_orders, state.n_couriers
    limit = _limit(p)
    start = _Couriers(plan.couriers.position.copy(), plan.couriers.time.copy(),
                      plan.couriers.free.copy(), plan.couriers.speed)
    smallest = max(1, int(orders.size.min()))
    count_cap = start.free // smallest
    arc_o, arc_c, arc_t = arcs
    plan.arcs += int(arc_o.size)
    plan.rounds += 1
    import os
    beta = float(os.environ.get("BETA", "0"))
    slot = beta * float(np.median(arc_t)) if arc_t.size else 0.0
    got_o, got_c, got_t = _min_cost_flow(n, m, arc_o, arc_c, arc_t, count_cap,
                                         p.unassigned_penalty, slot)
    # Per courier: repair sizes (cheapest direct pickups first), sequence, then walk the
    # route skipping stops that break max_eta or cost more than leaving them unassigned.
    by_courier: dict[int, list[tuple[float, int]]] = {}
    for i, j, t in zip(got_o.tolist(), got_c.tolist(), got_t.tolist(), strict=True):
        by_courier.setdefault(j, []).append((t, i))
    for j in sorted(by_courier):
        room = int(start.free[j])
        kept: list[int] = []
        for _, i in sorted(by_courier[j]):
            if orders.size[i] <= room:
                kept.append(i)
                room -= int(orders.size[i])
        route = _sequence(start.position[j], 0.0, float(start.speed[j]), kept, orders)
        pos, t, speed = start.position[j], 0.0, float(start.speed[j])
        for i in route:
            arrive = t + math.hypot(*(orders.pickup[i] - pos)) / speed
            ti = max(arrive, float(orders.ready[i]))
            if ti <= limit:
                plan.visit(j, i, ti, orders)
                pos, t = orders.pickup[i], ti
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
        arcs = _initial_arcs(state, orders, p)
        plans: list[tuple[str, _Plan]] = []
        if p.strategy in ("auto", "global"):
            plans.append(("global", _solve_global(state, orders, p, arcs)))
        if p.strategy in ("auto", "rounds"):
            plans.append(("rounds", _solve_rounds(state, orders, p, arcs)))
        # Cheapest wins; on a tie the first (global) is kept, so the choice is stable.
        name, best = min(plans, key=lambda item: item[1].objective(p.unassigned_penalty))
        return best.solution(p.unassigned_penalty, name)
