"""``etcd``: a ``StateSnapshot`` JSON read from ``<ns>/state/<city>`` (one round trip).

Any producer, or an operator with ``etcdctl put``, can feed a city this way; it suits
small states (a large state written every tick does not belong in etcd).
"""

from __future__ import annotations

import time

from coordinator.codec import decode
from coordinator.errors import StateError
from coordinator.settings import CityConfig
from coordinator.sources.contract import StateSource
from coordinator.sources.snapshot import state_from_snapshot
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["EtcdSource"]


class EtcdSource(StateSource):
    def load(self, config: CityConfig, now: float) -> CityState:
        key = self.context.keys.state(config.city)
        kv = self.context.client.get(key)
        if kv is None:
            raise StateError(f"no state snapshot at {key}")
        try:
            snapshot = decode(pb.StateSnapshot, kv.value, what=f"state snapshot {key}")
        except ValueError as exc:
            raise StateError(str(exc)) from exc
        taken_at = snapshot.taken_at.ToNanoseconds() / 1e9 if snapshot.HasField("taken_at") \
            else time.time()
        return state_from_snapshot(config.city, snapshot, taken_at).freeze()
