"""Balanced ownership: fair shares, affinity, drain, graceful handover, rolling restarts."""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable

import pytest

from coordinator.balancer import Plan
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.ops.overview import read_overview
from coordinator.ops.replay import past_decisions
from coordinator.ops.verify import verify
from coordinator.recipes.election import Election
from coordinator.recipes.session import Session
from coordinator.settings import CityConfig
from coordinator.worker import Worker
from tests.conftest import WorkerProcess, wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import running_worker

Spawn = Callable[..., WorkerProcess]
#: many workers on 2 cores: keep each one small; these tests count cities per worker
#: (placement by cost: tests/test_cost_placement.py)
LIGHT = ("--solve-isolation", "thread", "--placement", "count")


def owners(client: EtcdClient, keys: Keys) -> dict[str, str]:
    """city -> the worker whose candidate key leads its election."""
    kvs, _ = client.get_prefix(keys.elections)
    first: dict[str, tuple[int, str]] = {}
    for kv in kvs:
        parsed = keys.candidate(kv.key)
        if parsed is None:
            continue
        city = parsed[0]
        if city not in first or kv.create_revision < first[city][0]:
            first[city] = (kv.create_revision, kv.value.decode())
    return {city: worker for city, (_, worker) in first.items()}


def balanced(client: EtcdClient, keys: Keys, n: int, workers: list[str]) -> Counter[str] | None:
    counts = Counter(owners(client, keys).values())
    low, high = n // len(workers), math.ceil(n / len(workers))
    if sum(counts.values()) == n and set(counts) == set(workers) and \
            all(low <= counts[w] <= high for w in workers):
        return counts
    return None


def add_cities(client: EtcdClient, keys: Keys, n: int, period: float = 1.0,
               **extra: object) -> list[str]:
    names = [f"city-{i:02d}" for i in range(n)]
    for name in names:
        client.put(keys.city(name), CityConfig(name, "greedy", period, **extra).encode())  # type: ignore[arg-type]
    return names


def test_three_then_four_workers_share_sixty_cities_fairly(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, spawn_worker: Spawn) -> None:
    add_cities(client, keys, 60)
    for w in ("w1", "w2", "w3"):
        spawn_worker(w, *LIGHT)
    counts = wait_until(lambda: balanced(client, keys, 60, ["w1", "w2", "w3"]), timeout=30,
                        message="20 cities each")
    before = owners(client, keys)
    spawn_worker("w4", *LIGHT)
    wait_until(lambda: balanced(client, keys, 60, ["w1", "w2", "w3", "w4"]), timeout=30,
               message="15 cities each")
    after = owners(client, keys)
    moved = sum(before[c] != after[c] for c in before)
    assert moved <= 25, f"a join moved {moved} of 60 cities (ideal: 15); before {counts}"
    # every city has a hot standby queued on another worker
    def standbys_queued() -> bool:
        kvs, _ = client.get_prefix(keys.elections)
        per_city = Counter(keys.candidate(kv.key)[0] for kv in kvs)  # type: ignore[index]
        return len(per_city) == 60 and all(n >= 2 for n in per_city.values())

    wait_until(standbys_queued, timeout=20, message="a standby for every city")
    assert verify(client, keys).ok


def test_a_drained_worker_hands_everything_over_and_gets_work_back(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, spawn_worker: Spawn) -> None:
    add_cities(client, keys, 12)
    for w in ("w1", "w2", "w3"):
        spawn_worker(w, *LIGHT)
    wait_until(lambda: balanced(client, keys, 12, ["w1", "w2", "w3"]), timeout=30,
               message="a fair share each")
    client.put(keys.drain("w2"), "1")
    wait_until(lambda: balanced(client, keys, 12, ["w1", "w3"]), timeout=20,
               message="w2 to own nothing")
    assert "w2" not in owners(client, keys).values()
    assert "w2" in read_overview(client, keys).drained
    client.delete(keys.drain("w2"))
    wait_until(lambda: balanced(client, keys, 12, ["w1", "w2", "w3"]), timeout=20,
               message="w2 to take its share again")
    assert verify(client, keys).ok


def test_each_city_moves_once_to_its_planned_owner(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, spawn_worker: Spawn) -> None:
    """An undrained worker takes its share back, each city straight from its owner: every
    city already has a standby queued, ahead of the worker it is planned for, and that
    standby steps back. Were it to stay ahead, the owner's resignation would hand it the
    city, and the city would move again."""
    add_cities(client, keys, 24)
    workers = ["w1", "w2", "w3", "w4"]
    client.put(keys.drain("w2"), "1")
    # By count: the plan is the rendezvous ranking, the same before and after every move,
    # so any second move is the bug's. (By cost, these cities' measured costs swing with
    # each handover, a later plan may rightly move a city again once its cool-down is
    # over, and the test failed in CI for that. The step-back is the same code either
    # way: the standby queued while w2 was drained is ahead of it.)
    for w in workers:
        spawn_worker(w, "--solve-isolation", "thread", "--placement", "count")
    rest = ["w1", "w3", "w4"]
    wait_until(lambda: set(owners(client, keys).values()) == set(rest) and
               len(owners(client, keys)) == 24, timeout=30, message="w2 to own nothing")
    wait_until(lambda: queued(client, keys) == 24, timeout=20, message="every standby queued")
    before = owners(client, keys)
    client.delete(keys.drain("w2"))
    _, undrained_at = client.range(keys.drain("w2"))
    wait_until(lambda: sum(w == "w2" for w in owners(client, keys).values()) >= 4,
               timeout=60, message="w2 to take its share")
    time.sleep(3.0)  # any second move would have started by now
    moved = [c for c, w in owners(client, keys).items() if w != before[c]]
    assert moved
    for city in moved:
        writers = [r.decision.worker_id for r in past_decisions(client, keys.decision(city))
                   if r.revision > undrained_at]
        hops = [before[city]] + [w for w, _ in itertools.groupby(reversed(writers))
                                 if w != before[city]]
        assert len(hops) == 2, f"{city} went {' -> '.join(hops)}"
    assert verify(client, keys).ok


def test_standbys_whose_plans_disagree_step_back_at_most_once_per_cooldown(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two standbys, each planning the city for the other, would step back behind each
    other on every control step: a delete and a put of a candidate key per city, twice a
    second, for as long as their plans disagree (seen after a mass lease loss, ~100
    cities at once). Each steps back at most once per ``--move-cooldown``."""
    [city] = add_cities(client, keys, 1)
    planning = forced_plan(monkeypatch, city)
    with running_worker(etcd.endpoints, namespace, "w1", prepare=planning("w1", "w2", "w3"),
                        **IN_PROCESS):
        wait_until(lambda: owners(client, keys).get(city) == "w1", message="w1 to lead")
        _, since = client.get_prefix(keys.election(city))
        with running_worker(etcd.endpoints, namespace, "w2", prepare=planning("w3", "w2"),
                            **IN_PROCESS), \
                running_worker(etcd.endpoints, namespace, "w3", prepare=planning("w2", "w3"),
                               **IN_PROCESS):
            time.sleep(8.0)
    entered = candidacies(client, keys.election(city), since)
    # each entered once; one of them found itself ahead of the other and stepped back,
    # then the other did; and no more within the cool-down (15 s)
    assert 3 <= len(entered) <= 4, sorted(entered)


def test_a_standby_finds_its_place_by_its_own_key_not_by_its_name(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker restarted within its lease's TTL finds a key of its own name, left by its
    previous session, ahead of the planned owner. Its new key is behind it already:
    stepping back for the old key's place changes nothing, and was done again after each
    cool-down until the old lease expired."""
    [city] = add_cities(client, keys, 1)
    planning = forced_plan(monkeypatch, city)
    previous = Session(client, ttl=30)
    with running_worker(etcd.endpoints, namespace, "w1", prepare=planning("w1", "w3", "w2"),
                        **IN_PROCESS):
        wait_until(lambda: owners(client, keys).get(city) == "w1", message="w1 to lead")
        Election(client, previous, keys.election(city)).enter("w2")
        with running_worker(etcd.endpoints, namespace, "w3", prepare=planning("w3", "w2"),
                            **IN_PROCESS):
            wait_until(lambda: len(client.get_prefix(keys.election(city))[0]) == 3,
                       message="w3 to queue")
            _, since = client.get_prefix(keys.election(city))
            with running_worker(etcd.endpoints, namespace, "w2",
                                prepare=planning("w3", "w2"), **IN_PROCESS):
                time.sleep(4.0)
    previous.close()
    entered = candidacies(client, keys.election(city), since)
    assert [worker for worker, _, _ in entered] == ["w2"], sorted(entered)


#: in-process workers for the tests that force a plan
IN_PROCESS: dict[str, object] = {"solve_isolation": "thread", "lease_ttl": 2}


def forced_plan(monkeypatch: pytest.MonkeyPatch,
                city: str) -> Callable[..., Callable[[Worker], None]]:
    """``planning(*ranked)``: a worker's ``prepare`` that makes its plan rank ``city``'s
    workers so, whatever the costs and members say (to make workers disagree)."""
    def planning(*ranked: str) -> Callable[[Worker], None]:
        def prepare(worker: Worker) -> None:
            forced = Plan({city: list(ranked)}, [])
            monkeypatch.setattr(worker.ownership, "_make_plan", lambda registered: forced)
        return prepare
    return planning


def candidacies(client: EtcdClient, prefix: str, since: int) -> set[tuple[str, int, int]]:
    """(worker, create revision, lease) of every candidate key created under ``prefix``
    after revision ``since``, from etcd's history: a candidacy that lasted a millisecond
    counts too."""
    end = f"{prefix}/~end"
    client.put(end, "")
    seen: set[tuple[str, int, int]] = set()
    stream = client.watch_stream(prefix + "/", since + 1)
    try:
        for batch in stream:
            for event in batch.events:
                if event.kv.key == end:
                    return seen
                if event.kind == "put" and event.kv.version == 1:
                    seen.add((event.kv.value.decode(), event.kv.create_revision,
                              event.kv.lease))
    finally:
        stream.close()
    raise AssertionError("the watch ended before the end of the history")


def queued(client: EtcdClient, keys: Keys) -> int:
    """How many cities have a standby queued behind their leader."""
    kvs, _ = client.get_prefix(keys.elections)
    per_city = Counter(keys.candidate(kv.key)[0] for kv in kvs)  # type: ignore[index]
    return sum(1 for n in per_city.values() if n >= 2)


def test_affinity_is_respected_and_an_unownable_city_is_reported(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, spawn_worker: Spawn) -> None:
    client.put(keys.city("eu"), CityConfig("eu", "greedy", 0.5,
                                           require_labels={"zone": "eu"}).encode())
    client.put(keys.city("mars"), CityConfig("mars", "greedy", 0.5,
                                             require_labels={"zone": "mars"}).encode())
    add_cities(client, keys, 4, period=0.5)
    spawn_worker("w-eu", "--label", "zone=eu", *LIGHT)
    spawn_worker("w-us", "--label", "zone=us", *LIGHT)
    wait_until(lambda: owners(client, keys).get("eu") == "w-eu", timeout=20,
               message="eu to be owned by the eu worker")
    kvs, _ = client.get_prefix(keys.election("eu") + "/")
    assert {kv.value.decode() for kv in kvs} == {"w-eu"}, "a non-eu worker stood for eu"
    mars = next(v for v in read_overview(client, keys).cities if v.city == "mars")
    assert mars.owner == "" and mars.state == "unowned" and "zone=mars" in mars.last_error


def test_a_rolling_restart_misses_no_tick(etcd: EtcdCluster, client: EtcdClient,
                                          keys: Keys, namespace: str,
                                          spawn_worker: Spawn) -> None:
    period = 1.0
    cities = add_cities(client, keys, 9, period=period)
    workers = {w: spawn_worker(w, *LIGHT, ttl=5) for w in ("w1", "w2", "w3")}
    wait_until(lambda: balanced(client, keys, 9, list(workers)), timeout=30,
               message="a fair share each")
    _, start = client.get_prefix(keys.decisions, count_only=True)
    time.sleep(2 * period)
    for name in list(workers):
        assert workers[name].terminate() == 0
        workers[name] = spawn_worker(name, *LIGHT, ttl=5)  # restarted before the next stops
        wait_until(lambda: balanced(client, keys, 9, list(workers)), timeout=30,
                   message=f"{name} back with its share")
    time.sleep(2 * period)

    report = verify(client, keys, start_revision=start + 1)
    assert report.ok, report.violations
    worst = (0.0, "", "", "")
    for city in cities:
        history = [(d.decided_at.ToNanoseconds() / 1e9, d.worker_id)
                   for _, d in report.decisions_by_city[city]]
        for (t0, w0), (t1, w1) in itertools.pairwise(history):
            worst = max(worst, (t1 - t0, city, w0, w1))
    # the bound is period + 100 ms; allow scheduling noise of a loaded 2-core CI box
    assert worst[0] <= period + 0.35, f"largest gap between decisions: {worst}"
