"""``dispatchctl plan``, loads in ``workers`` and ``status``, and the placement metrics:
against real etcd, with real workers where the figures must be measured."""

from __future__ import annotations

import json
import time

from coordinator.codec import decode, encode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from protos import dispatch_pb2 as pb
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import dispatchctl, running_worker
from tests.test_balance import owners


def test_plan_shows_the_moves_pending_and_why(etcd: EtcdCluster, client: EtcdClient,
                                              keys: Keys, namespace: str) -> None:
    """A namespace written by hand: w1 leads every city, w2 just joined."""
    cities = {"capital": 1.0, **{f"town-{i}": 0.1 for i in range(6)}}
    for city in cities:
        client.put(keys.city(city), CityConfig(city, "greedy").encode())
        client.put(f"{keys.election(city)}/{1:x}", "w1")
    for worker in ("w1", "w2"):
        client.put(keys.worker(worker), encode(pb.WorkerInfo(worker_id=worker)))
    waits = "churn budget: 1.0 moves/min for this worker (--moves-per-minute 2 over 2 workers)"
    client.put(keys.load("w1"), encode(pb.WorkerLoad(
        worker_id="w1", cities=cities, total=sum(cities.values()),
        waiting={"town-0": waits})))
    out = json.loads(dispatchctl(etcd.endpoints, namespace, "plan", "--json").stdout)
    workers = {w["workerId"]: w for w in out["workers"]}
    assert workers["w1"]["current"] == sum(cities.values()) and workers["w2"]["current"] == 0
    # the capital is heavy: it keeps w1 to itself, and every town moves to w2
    moves = {m["city"]: m for m in out["moves"]}
    assert set(moves) == {f"town-{i}" for i in range(6)}
    assert all(m["from"] == "w1" and m["to"] == "w2" for m in moves.values())
    assert all("under its floor" in m["reason"] or "over its bound" in m["reason"]
               for m in moves.values()), moves
    assert all(c["measured"] for c in out["cities"])
    # why a move has not started: only its owner knows, and publishes it with its load
    assert moves["town-0"]["waits"] == waits and moves["town-1"]["waits"] == ""

    text = dispatchctl(etcd.endpoints, namespace, "plan").stdout
    assert "LOAD/SHARE" in text and "town-0" in text and "7 measured, 0 at their prior" in text
    assert "WAITS" in text and "churn budget: 1.0 moves/min" in text
    count = json.loads(dispatchctl(etcd.endpoints, namespace, "plan", "--json",
                                   "--placement", "count").stdout)
    assert len(count["moves"]) in (3, 4)  # half of seven, by count


def test_a_worker_publishes_its_cities_costs_and_shows_them(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str) -> None:
    for city, orders in (("big", 400), ("small", 10)):
        client.put(keys.city(city), CityConfig(
            city, "greedy", 0.5, params={"orders": orders, "couriers": orders}).encode())
    with running_worker(etcd.endpoints, namespace, solve_isolation="thread",
                        load_interval=0.5) as worker:
        def measured() -> pb.WorkerLoad | None:
            kv = client.get(keys.load("w1"))
            if kv is None:
                return None
            load = decode(pb.WorkerLoad, kv.value)
            return load if {"big", "small"} <= set(load.cities) else None

        load = wait_until(measured, timeout=15, message="both cities' costs published")
        assert isinstance(load, pb.WorkerLoad)
        assert load.cities["big"] > load.cities["small"] > 0
        kv = client.get(keys.load("w1"))
        assert kv is not None and kv.lease != 0  # gone with the worker
        metrics = worker.metrics.render().decode()
        assert 'dispatch_city_cost{city="big"}' in metrics
        assert "dispatch_worker_load " in metrics and "dispatch_moves_held_back" in metrics

        rows = json.loads(dispatchctl(etcd.endpoints, namespace, "workers", "--json").stdout)
        assert rows[0]["load"] > 0
        assert "LOAD" in dispatchctl(etcd.endpoints, namespace, "workers").stdout
        status = json.loads(dispatchctl(etcd.endpoints, namespace, "status", "--json").stdout)
        assert status["workerLoads"]["w1"] > 0 and set(status["cityCosts"]) == {"big", "small"}
        assert "load per worker" in dispatchctl(etcd.endpoints, namespace, "status").stdout


def test_moves_the_churn_budget_holds_back_show_what_they_wait_for(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str) -> None:
    """Real workers: w1 leads twelve equal cities when w2 joins. With one move a minute
    for the fleet, one city moves at once; the plan's other moves wait, and their owner
    says so through ``dispatchctl plan``."""
    options: dict[str, object] = {"solve_isolation": "thread", "lease_ttl": 2,
                                  "load_interval": 0.5, "moves_per_minute": 1.0}
    cities = [f"city-{i:02d}" for i in range(12)]
    with running_worker(etcd.endpoints, namespace, "w1", **options):
        wait_until(lambda: client.get(keys.worker("w1")), timeout=15,
                   message="w1 registered")
        # cities taken in a session's first 2 x TTL are the fleet forming: their first
        # move is free of the budget, and this test is about the budget
        time.sleep(2 * 2 + 1)
        for city in cities:
            client.put(keys.city(city), CityConfig(
                city, "greedy", 0.5, params={"orders": 20, "couriers": 15}).encode())

        def measured_on_w1() -> bool:
            kv = client.get(keys.load("w1"))
            return kv is not None and set(decode(pb.WorkerLoad, kv.value).cities) == \
                set(cities) and set(owners(client, keys).values()) == {"w1"}

        wait_until(measured_on_w1, timeout=20, message="w1 leading and measuring every city")
        with running_worker(etcd.endpoints, namespace, "w2", **options):
            def held_back() -> list[dict[str, str]] | None:
                out = json.loads(dispatchctl(etcd.endpoints, namespace, "plan",
                                             "--json").stdout)
                moves = [m for m in out["moves"] if m["from"] == "w1"]
                waiting = [m for m in moves if m["waits"].startswith("churn budget")]
                return moves if len(moves) >= 3 and waiting == moves else None

            moves = wait_until(held_back, timeout=30, interval=0.5,
                               message="the moves left waiting for the budget")
            # the budget allowed one move now; the plan wants half the cities on w2
            assert list(owners(client, keys).values()).count("w2") == 1, moves
            text = dispatchctl(etcd.endpoints, namespace, "plan").stdout
            assert "churn budget: 0.5 moves/min for this worker" in text, text
