"""``simulated``: a deterministic synthetic city that evolves from tick to tick.

Parameters: ``orders`` (default 50), ``couriers`` (default 30), ``seed`` (default 0).
Costs no round trip to etcd, so it runs inside the compute gate.
"""

from __future__ import annotations

from coordinator.settings import CityConfig
from coordinator.sources.contract import StateSource, int_param
from solvers.contract import CityState

__all__ = ["SimulatedSource"]


class SimulatedSource(StateSource):
    cpu_bound = True

    def load(self, config: CityConfig, now: float) -> CityState:
        from solvers.generate import simulated_state

        params = config.params
        n_orders = int_param(params, "orders", 50, 0, 100_000)
        n_couriers = int_param(params, "couriers", 30, 0, 100_000)
        seed = int_param(params, "seed", 0, 0, 2**31 - 1)
        tick = int(now // config.period)
        return simulated_state(config.city, tick, n_orders=n_orders, n_couriers=n_couriers,
                               seed=seed, taken_at=now).freeze()
