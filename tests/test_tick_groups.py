"""Tick groups: quick cities due together are ticked as one group, and only quick ones."""

from __future__ import annotations

import threading
import time

from coordinator.codec import assigned
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from solvers.contract import CityState
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import decision, running_worker


def test_a_city_that_outgrows_inline_solving_leaves_its_group_and_is_still_decided(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str) -> None:
    names = [f"g{i}" for i in range(4)]
    for name in names:
        client.put(keys.city(name), CityConfig(name, "greedy", 0.2).encode())
    # one slack of a whole period: every city's ticks fall in the same slot
    with running_worker(etcd.endpoints, namespace, tick_slack=0.2,
                        solve_isolation="thread") as worker:
        calls: list[list[str]] = []
        lock = threading.Lock()
        group = worker.ticker._tick_group
        assert group is not None

        in_group = threading.local()
        solved_in_a_group: list[int] = []  # sizes of solves a group waited for
        solve = worker.runner.solve

        def recorded(items: list[tuple[str, float]]) -> list[object]:
            with lock:
                calls.append([city for city, _ in items])
            in_group.on = True
            try:
                return group(items)  # type: ignore[return-value]
            finally:
                in_group.on = False

        def watched(name: str, solver: object, state: CityState, *args: object,
                    **kwargs: object) -> object:
            if getattr(in_group, "on", False) and not worker.runner.runs_inline(
                    solver, state):  # type: ignore[arg-type]
                solved_in_a_group.append(state.n_orders * state.n_couriers)
            return solve(name, solver, state, *args, **kwargs)  # type: ignore[arg-type]

        worker.ticker._tick_group = recorded  # type: ignore[assignment]
        worker.runner.solve = watched  # type: ignore[method-assign,assignment]
        wait_until(lambda: any(len(c) == 4 for c in calls), message="a group of all four")
        # 100 x 50 pairs: past greedy's inline limit (2,500), so solved on a solve thread
        client.put(keys.city("g1"), CityConfig(
            "g1", "greedy", 0.2, params={"orders": 100, "couriers": 50}).encode())
        # (the default 50 x 30 city assigns at most 30 orders)
        wait_until(lambda: (d := decision(client, keys, "g1")) and len(assigned(d)) > 30,
                   message="g1 decided at its new size")
        with lock:
            calls.clear()
        before = decision(client, keys, "g1")
        time.sleep(1.0)
        with lock:
            seen = [c for c in calls if len(c) > 1]
        assert seen and all("g1" not in c and len(c) == 3 for c in seen), seen
        after = decision(client, keys, "g1")
        assert after is not None and before is not None and after.tick > before.tick
        assert not solved_in_a_group, "a group waited for a solve that is not inline"
