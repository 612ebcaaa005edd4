"""A cold start decides at once: workers started together over cities that never
decided give every city its first decision within the lease TTL + 1 s of the first
worker's session, whatever the plan moves afterwards (the first elected decides, then
hands over with the usual zero gap)."""

from __future__ import annotations

from collections.abc import Callable

from coordinator.codec import decode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.ops.verify import verify
from coordinator.settings import CityConfig
from protos import dispatch_pb2 as pb
from tests.conftest import WorkerProcess, wait_until

Spawn = Callable[..., WorkerProcess]
TTL = 2


def test_three_workers_started_together_decide_every_city_within_ttl_plus_one_second(
        etcd: object, client: EtcdClient, keys: Keys, spawn_worker: Spawn) -> None:
    cities = [f"city-{i}" for i in range(7)]
    for city in cities:
        client.put(keys.city(city), CityConfig(city, "greedy", 1.0).encode())
    for w in ("w1", "w2", "w3"):
        spawn_worker(w, "--solve-isolation", "thread", ttl=TTL)
    wait_until(lambda: len(client.get_prefix(keys.decisions)[0]) == len(cities),
               timeout=30, message="every city's first decision")
    # a worker registers right after its session is granted
    kvs, _ = client.get_prefix(keys.workers)
    first_session = min(decode(pb.WorkerInfo, kv.value).started_at.ToNanoseconds() / 1e9
                        for kv in kvs)
    report = verify(client, keys)
    firsts = {city: history[0][1].decided_at.ToNanoseconds() / 1e9 - first_session
              for city, history in report.decisions_by_city.items()}
    assert max(firsts.values()) <= TTL + 1.0, firsts
