"""``simulated``: a deterministic synthetic city that evolves from tick to tick.

Parameters: ``orders`` (default 50), ``couriers`` (default 30), ``seed`` (default 0).
Costs no round trip to etcd, so it runs inside the compute gate. A decision records the
seed, tick and sizes it used (``StateRef``), from which a replay regenerates the state.
"""

from __future__ import annotations

from coordinator.errors import StateError
from coordinator.settings import CityConfig
from coordinator.sources.contract import StateSource, int_param
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["SimulatedSource"]


class SimulatedSource(StateSource):
    cpu_bound = True

    def load(self, config: CityConfig, now: float) -> CityState:
        return self.load_with_ref(config, now)[0]

    def load_with_ref(self, config: CityConfig, now: float
                      ) -> tuple[CityState, pb.StateRef | None]:
        params = config.params
        ref = pb.StateRef(
            orders=int_param(params, "orders", 50, 0, 100_000),
            couriers=int_param(params, "couriers", 30, 0, 100_000),
            seed=int_param(params, "seed", 0, 0, 2**31 - 1),
            tick=int(now // config.period),
        )
        return _generate(config.city, ref, now), ref

    def reload(self, city: str, ref: pb.StateRef, taken_at: float) -> CityState:
        try:
            return _generate(city, ref, taken_at)
        except ValueError as exc:  # a ref no worker wrote (negative sizes)
            raise StateError(f"cannot regenerate the state of {city} (tick {ref.tick}): {exc}"
                             ) from exc


def _generate(city: str, ref: pb.StateRef, taken_at: float) -> CityState:
    from solvers.generate import simulated_state

    return simulated_state(city, ref.tick, n_orders=ref.orders, n_couriers=ref.couriers,
                           seed=ref.seed, taken_at=taken_at).freeze()
