"""A state source that keeps no history, so the suite can show that an archived city's
decisions replay whatever its source: the ``etcd`` source without its ``StateRef``."""

from __future__ import annotations

from coordinator.settings import CityConfig
from coordinator.sources.contract import StateSource
from coordinator.sources.etcd import EtcdSource
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["NoHistorySource"]


class NoHistorySource(EtcdSource):
    description = "The etcd source, saying nothing of how to read a state back."

    def load_with_ref(self, config: CityConfig, now: float
                      ) -> tuple[CityState, pb.StateRef | None]:
        return super().load_with_ref(config, now)[0], None

    def reload(self, city: str, ref: pb.StateRef, taken_at: float) -> CityState:
        return StateSource.reload(self, city, ref, taken_at)
