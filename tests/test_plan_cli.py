"""``dispatchctl plan``, loads in ``workers`` and ``status``, and the placement metrics:
against real etcd, with real workers where the figures must be measured."""

from __future__ import annotations

import json

from coordinator.codec import decode, encode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from protos import dispatch_pb2 as pb
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import dispatchctl, running_worker


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
