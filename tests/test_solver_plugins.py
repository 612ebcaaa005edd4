"""Solvers as plugins: live switch, shadow evaluation, a package installed while running."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coordinator.codec import assigned
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.plugins import SOLVERS, installed
from coordinator.settings import CityConfig
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import decision, dispatchctl, running_worker


def test_shadow_solvers_are_recorded_and_compared(etcd: EtcdCluster, client: EtcdClient,
                                                  keys: Keys, namespace: str) -> None:
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "greedy",
                "--period", "0.3", "--shadow", "hungarian", "--shadow", "test-raise")
    with running_worker(etcd.endpoints, namespace):
        wait_until(lambda: (d := decision(client, keys, "paris")) and d.tick >= 4,
                   timeout=20, message="a few decisions")
    d = decision(client, keys, "paris")
    assert d is not None and d.solver == "greedy", "a shadow was published"
    shadows = {s.solver: s for s in d.shadows}
    assert shadows["hungarian"].cost > 0 and not shadows["hungarian"].error
    assert "boom" in shadows["test-raise"].error

    out = json.loads(dispatchctl(etcd.endpoints, namespace, "compare", "paris",
                                 "--json").stdout)
    rows = {(r["role"], r["solver"]): r for r in out["solvers"]}
    active, optimal = rows[("active", "greedy")], rows[("shadow", "hungarian")]
    assert optimal["meanCost"] <= active["meanCost"] + 1e-6  # optimal one-to-one
    assert rows[("shadow", "test-raise")]["errors"] == rows[("shadow", "test-raise")]["ticks"]
    table = dispatchctl(etcd.endpoints, namespace, "compare", "paris").stdout
    assert "hungarian" in table and "VS ACTIVE" in table


def test_a_running_city_switches_to_the_third_party_plugin(etcd: EtcdCluster,
                                                           client: EtcdClient, keys: Keys,
                                                           namespace: str) -> None:
    if "ortools-flow" not in {p.name for p in installed(SOLVERS, describe=False)}:
        pytest.skip("plugins/dispatch-ortools is not installed (make test installs it)")
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "greedy",
                "--period", "0.3")
    with running_worker(etcd.endpoints, namespace):
        wait_until(lambda: decision(client, keys, "paris"), timeout=20, message="a decision")
        dispatchctl(etcd.endpoints, namespace, "city", "set", "paris", "--solver",
                    "ortools-flow")
        d = wait_until(lambda: (x := decision(client, keys, "paris")) and
                       x.solver == "ortools-flow" and x, timeout=10,
                       message="a decision by the plugin")
        assert d is not None and assigned(d)


PLUGIN = textwrap.dedent('''
    import numpy as np
    from solvers.contract import Solution, Solver

    class FirstFit(Solver):
        description = "Installed while the worker was running."

        def solve(self, state, params, budget):
            orders, couriers, used = [], [], set()
            for i in range(state.n_orders):
                for j in range(state.n_couriers):
                    if j not in used and state.capacity[j] >= state.size[i]:
                        used.add(j); orders.append(i); couriers.append(j)
                        break
            return Solution(np.array(orders, dtype=np.int64),
                            np.array(couriers, dtype=np.int64),
                            np.zeros(len(orders)))
''')


def test_a_solver_installed_while_the_worker_runs_is_used_without_a_restart(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        tmp_path: Path) -> None:
    package = tmp_path / "latecomer"
    (package / "dispatch_latecomer").mkdir(parents=True)
    (package / "dispatch_latecomer" / "__init__.py").write_text(PLUGIN)
    (package / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "dispatch-latecomer"
        version = "0.1.0"
        [project.entry-points."dispatch.solvers"]
        latecomer = "dispatch_latecomer:FirstFit"
    '''))
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "greedy",
                "--period", "0.3")
    try:
        with running_worker(etcd.endpoints, namespace):
            wait_until(lambda: decision(client, keys, "paris"), timeout=20,
                       message="a decision")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--no-build-isolation", str(package)], check=True,
                           capture_output=True)
            dispatchctl(etcd.endpoints, namespace, "city", "set", "paris", "--solver",
                        "latecomer")
            wait_until(lambda: (x := decision(client, keys, "paris")) and
                       x.solver == "latecomer", timeout=15, message="the new solver's decision")
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y",
                        "dispatch-latecomer"], capture_output=True)


def test_city_add_refuses_a_solver_nobody_can_load_unless_forced(etcd: EtcdCluster,
                                                                 namespace: str) -> None:
    refused = dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver",
                          "nonexistent", check=False)
    assert refused.returncode == 1 and "no solver named 'nonexistent'" in refused.stderr
    forced = dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver",
                         "nonexistent", "--force")
    assert "added city paris" in forced.stdout
    assert CityConfig  # the settings module is what validates the rest
