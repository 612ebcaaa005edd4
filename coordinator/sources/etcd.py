"""``etcd``: a ``StateSnapshot`` JSON read from ``<ns>/state/<city>`` (one round trip).

Any producer, or an operator with ``etcdctl put``, can feed a city this way; it suits
small states (a large state written every tick does not belong in etcd).

A decision records the mod revision of the key it read (``StateRef.revision``); etcd's
history keeps that state until it is compacted, so a replay reads it back at that
revision.
"""

from __future__ import annotations

import time

from coordinator.codec import decode
from coordinator.errors import EtcdCompacted, StateError, StateGone
from coordinator.settings import CityConfig
from coordinator.sources.contract import StateSource
from coordinator.sources.snapshot import state_from_snapshot
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["EtcdSource"]


class EtcdSource(StateSource):
    def load(self, config: CityConfig, now: float) -> CityState:
        return self.load_with_ref(config, now)[0]

    def load_with_ref(self, config: CityConfig, now: float
                      ) -> tuple[CityState, pb.StateRef | None]:
        key = self.context.keys.state(config.city)
        kv = self.context.client.get(key)
        if kv is None:
            raise StateError(f"no state snapshot at {key}")
        state = _state(config.city, key, kv.value, time.time())
        return state, pb.StateRef(revision=kv.mod_revision)

    def reload(self, city: str, ref: pb.StateRef, taken_at: float) -> CityState:
        key = self.context.keys.state(city)
        try:
            kv = self.context.client.get(key, revision=ref.revision)
        except EtcdCompacted as exc:
            raise StateGone(f"the state of {city} at revision {ref.revision} is gone: etcd "
                            "compacted that revision away and the state was not archived"
                            ) from exc
        if kv is None or kv.mod_revision != ref.revision:
            raise StateGone(f"{key} holds no state written at revision {ref.revision}")
        return _state(city, key, kv.value, taken_at)


def _state(city: str, key: str, value: bytes, default_taken_at: float) -> CityState:
    """The state in a snapshot's JSON, at its own ``takenAt`` when it has one."""
    try:
        snapshot = decode(pb.StateSnapshot, value, what=f"state snapshot {key}")
    except ValueError as exc:
        raise StateError(str(exc)) from exc
    taken_at = snapshot.taken_at.ToNanoseconds() / 1e9 if snapshot.HasField("taken_at") \
        else default_taken_at
    return state_from_snapshot(city, snapshot, taken_at).freeze()
