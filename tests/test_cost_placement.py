"""Placement by cost against real etcd and real worker processes: a heavy city ends alone,
a join converges, moves stay within the churn budget, a dead worker's cities are taken at
once whatever the budget, and no city misses a tick across the moves."""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Callable

from coordinator.codec import decode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.ops.placement import read_placement
from coordinator.ops.verify import verify
from coordinator.settings import CityConfig
from protos import dispatch_pb2 as pb
from tests.conftest import WorkerProcess, wait_until
from tests.test_balance import owners

Spawn = Callable[..., WorkerProcess]
PERIOD = 1.0
TOWNS = [f"town-{i}" for i in range(6)]


def add_fleet(client: EtcdClient, keys: Keys) -> None:
    """One capital (hungarian 800 × 600: tens of ms a tick) and six small towns (a few
    ms a tick, most of it the tick's own overhead): the capital outweighs all towns."""
    cities = [CityConfig("capital", "hungarian", PERIOD,
                         params={"orders": 800, "couriers": 600})]
    cities += [CityConfig(name, "greedy", PERIOD, params={"orders": 20, "couriers": 15})
               for name in TOWNS]
    for config in cities:
        client.put(keys.city(config.city), config.encode())


def capital_alone(client: EtcdClient, keys: Keys, workers: set[str]) -> Counter[str] | None:
    placed = owners(client, keys)
    counts = Counter(placed.values())
    if len(placed) == 1 + len(TOWNS) and set(counts) == workers and counts[placed["capital"]] == 1:
        return counts
    return None


def settled(client: EtcdClient, keys: Keys, workers: set[str],
            quiet: float = 3.0) -> dict[str, str]:
    """The placement once the capital is alone and nothing moved for ``quiet`` seconds."""
    last: dict[str, str] = {}
    since = time.monotonic()

    def check() -> dict[str, str] | None:
        nonlocal last, since
        placed = owners(client, keys)
        if placed != last:
            last, since = placed, time.monotonic()
        if capital_alone(client, keys, workers) and time.monotonic() - since >= quiet:
            return placed
        return None

    return wait_until(check, timeout=40, interval=0.2, message="a settled placement")


def published(client: EtcdClient, keys: Keys) -> dict[str, float]:
    kvs, _ = client.get_prefix(keys.loads)
    costs: dict[str, float] = {}
    for kv in kvs:
        costs.update(decode(pb.WorkerLoad, kv.value).cities)
    return costs


def moves_and_worst_gap(client: EtcdClient, keys: Keys,
                        start: int) -> tuple[int, tuple[float, str]]:
    """Writer changes since revision ``start``, and the largest gap between decisions of
    the cities that moved (the capital, never moved, may be late for the machine's sake:
    a busy shared 2-core box)."""
    report = verify(client, keys, start_revision=start + 1)
    assert report.ok, report.violations
    moves, worst = 0, (0.0, "")
    for city, history in report.decisions_by_city.items():
        changes = sum(a.worker_id != b.worker_id for (_, a), (_, b)
                      in itertools.pairwise(history))
        moves += changes
        if not changes:
            continue
        for (_, a), (_, b) in itertools.pairwise(history):
            gap = (b.decided_at.ToNanoseconds() - a.decided_at.ToNanoseconds()) / 1e9
            worst = max(worst, (gap, city))
    return moves, worst


def test_a_heavy_city_ends_alone_and_a_join_converges_with_no_missed_tick(
        etcd: object, client: EtcdClient, keys: Keys, spawn_worker: Spawn) -> None:
    add_fleet(client, keys)
    # no rebalance delay: a newcomer's first measurements may leave a worker over its
    # bound for a while, and this test waits only for a quiet placement
    light = ("--solve-isolation", "thread", "--move-cooldown", "0", "--rebalance-delay", "0")
    spawn_worker("w1", *light)
    spawn_worker("w2", *light)
    wait_until(lambda: capital_alone(client, keys, {"w1", "w2"}), timeout=30,
               message="the capital alone on one of two workers")
    costs = wait_until(lambda: (c := published(client, keys)).keys() >= {"capital", *TOWNS}
                       and c, timeout=20, message="every city's cost published")
    assert costs["capital"] > 3 * max(costs[t] for t in TOWNS), costs
    _, start = client.get_prefix(keys.decisions, count_only=True)

    spawn_worker("w3", *light)
    placed = settled(client, keys, {"w1", "w2", "w3"})
    # The newcomer takes its share of the towns, by cost: each worker's own overhead
    # (keep-alives, the control loop) is most of its measured load and sits on its few
    # towns, so the shares by number vary (two and four, and once one and five on a busy
    # CI machine, where the newcomer's one town already brought it to its share), but no
    # worker but the capital's is over its bound.
    towns = Counter(w for city, w in placed.items() if city != "capital")
    assert towns["w3"] >= 1, placed

    def within_bounds() -> bool:  # as measured now (costs wobble around the bound)
        view = read_placement(client, keys).to_json()
        return all(load["current"] <= (1 + view["tolerance"]) * load["share"]
                   for load in view["workers"] if load["workerId"] != placed["capital"])
    wait_until(within_bounds, timeout=10, message="every worker within its bound")
    moves, worst = moves_and_worst_gap(client, keys, start)
    # the bound is period + 100 ms; allow scheduling noise of a loaded 2-core box
    assert worst[0] <= PERIOD + 0.35, f"largest gap between decisions: {worst}"
    # with no cool-down and no rebalance delay, a town whose cost swings as it moves
    # may move on once more: a few extra moves, not a storm (7 seen once in ~20 runs)
    assert moves <= 8, f"{moves} moves for a join that needs about 3"


def test_moves_stay_within_the_budget_but_a_dead_workers_cities_move_at_once(
        etcd: object, client: EtcdClient, keys: Keys, spawn_worker: Spawn) -> None:
    add_fleet(client, keys)
    # 3 moves a minute over 3 workers: each may start one now and one every 60 s
    light = ("--solve-isolation", "thread", "--moves-per-minute", "3", "--move-cooldown", "0")
    workers = {w: spawn_worker(w, *light) for w in ("w1", "w2")}
    wait_until(lambda: capital_alone(client, keys, set(workers)), timeout=30,
               message="the capital alone on one of two workers")
    # a city taken as the fleet formed moves once for free within 4 x TTL (8 s) of
    # being taken: this test is about the budget, so the newcomer comes after that
    time.sleep(4 * 2 + 1)
    _, start = client.get_prefix(keys.decisions, count_only=True)
    workers["w3"] = spawn_worker("w3", *light)
    # the newcomer's first city: decided by it (a busy machine may take a while). Up to
    # a minute more: while the workers' views of the new member differ for a moment, a
    # token can go on a move the next plan undoes (seen once in 20 runs: w1 handed a
    # town to w2, which handed it straight back, before it ticked there), and the next
    # token comes a minute later
    wait_until(lambda: moves_and_worst_gap(client, keys, start)[0] >= 1, timeout=90,
               message="the newcomer given a first city")
    time.sleep(5 * PERIOD)  # the plan wants 3 towns on w3: the budget allows 1, maybe 2
    moves, worst = moves_and_worst_gap(client, keys, start)
    assert 1 <= moves <= 2, f"{moves} moves within seconds under a budget of 3 a minute"
    assert worst[0] <= PERIOD + 0.35, f"largest gap between decisions: {worst}"

    placed = owners(client, keys)
    towns_worker = next(w for w in ("w1", "w2") if w != placed["capital"])
    theirs = {c for c, w in placed.items() if w == towns_worker}
    killed_at = time.time()
    workers[towns_worker].kill()

    def taken_over() -> bool:
        now = owners(client, keys)
        return all(now.get(c) not in (None, towns_worker) for c in theirs)

    wait_until(taken_over, timeout=10, message="the dead worker's cities taken over")
    # lease TTL 2 s; the budget (spent) must not hold any of them back
    assert time.time() - killed_at <= 2 + 2.5, "takeover waited for the budget"


def test_a_failover_is_undone_at_once_whatever_the_budget(
        etcd: object, client: EtcdClient, keys: Keys, spawn_worker: Spawn) -> None:
    """Two of three workers lose their leases together (stopped past the TTL, as when
    etcd stalls longer than that) and come back with new sessions; the third took their
    cities over. Those cities were placed by the failure, not by the plan: they go back
    at once, not one every few minutes under the budget, or the survivor runs
    overloaded for as long."""
    for i in range(12):
        client.put(keys.city(f"v{i:02d}"),
                   CityConfig(f"v{i:02d}", "greedy", 0.5,
                              params={"orders": 20, "couriers": 15}).encode())
    # 1 move a minute over 3 workers: a token each, then one every 3 minutes
    light = ("--solve-isolation", "thread", "--moves-per-minute", "1")
    workers = {w: spawn_worker(w, *light) for w in ("w1", "w2", "w3")}

    def spread() -> bool:  # every worker leads cities (placed by cost, about 4 each)
        counts = Counter(owners(client, keys).values())
        return sum(counts.values()) == 12 and min(counts[w] for w in workers) >= 2

    wait_until(spread, timeout=60, message="the cities spread over three workers")
    time.sleep(4 * 2 + 1)  # past the forming fleet's free moves (4 x TTL)
    for w in ("w2", "w3"):
        workers[w].signal(signal.SIGSTOP)
    wait_until(lambda: Counter(owners(client, keys).values())["w1"] == 12, timeout=15,
               message="the survivor taking the lost workers' cities over")
    for w in ("w2", "w3"):
        workers[w].signal(signal.SIGCONT)
    # back within seconds: under the budget, the survivor's one token would bring one
    # city back, and the next token would come 3 minutes later
    wait_until(spread, timeout=20, message="the cities given back at once")
