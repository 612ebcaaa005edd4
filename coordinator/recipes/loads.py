"""Measured costs: each worker publishes what its cities cost it under
``<ns>/load/<worker-id>`` on its lease, and every worker watches the prefix (one watch)
to plan placement on cost."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from coordinator.codec import decode, encode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.recipes.session import Session
from coordinator.recipes.watch import WatchedPrefix
from protos import dispatch_pb2 as pb

__all__ = ["Loads", "merge_costs", "publish_load"]


def publish_load(client: EtcdClient, keys: Keys, session: Session, load: pb.WorkerLoad) -> None:
    """Write this worker's load under its lease: it vanishes with the worker."""
    client.put(keys.load(load.worker_id), encode(load), lease=session.lease_id)


class Loads:
    """Every live worker's published load, kept current by one prefix watch."""

    def __init__(self, client: EtcdClient, keys: Keys, on_change: Callable[[], None]) -> None:
        self._loads = WatchedPrefix(client, keys.loads, on_change, "watch loads")
        #: worker id -> (mod revision, decoded): the planner asks every half second
        self._decoded: dict[str, tuple[int, pb.WorkerLoad]] = {}

    def start(self) -> Loads:
        self._loads.start()
        return self

    def stop(self) -> None:
        self._loads.stop()

    def synced(self) -> bool:
        return self._loads.synced.is_set()

    def by_worker(self) -> dict[str, pb.WorkerLoad]:
        out = {}
        decoded = {}
        for worker_id, kv in self._loads.items().items():
            cached = self._decoded.get(worker_id)
            if cached is not None and cached[0] == kv.mod_revision:
                load = cached[1]
            else:
                try:
                    load = decode(pb.WorkerLoad, kv.value)
                except ValueError:
                    continue  # unreadable: as if unmeasured
            decoded[worker_id] = (kv.mod_revision, load)
            out[worker_id] = load
        self._decoded = decoded
        return out

    def costs(self, owners: Mapping[str, str]) -> dict[str, float]:
        """City -> measured cost (see :func:`merge_costs`)."""
        return merge_costs(self.by_worker().values(), owners)


def merge_costs(loads: Iterable[pb.WorkerLoad], owners: Mapping[str, str]) -> dict[str, float]:
    """City -> cost over ``loads`` (``WorkerLoad`` messages). A city reported by more
    than one worker (just handed over: the old owner still reports it a while) takes its
    current owner's figure (``owners``: city -> worker id), else the newest report's
    (ties: the larger worker id, so that every reader picks the same)."""
    ordered = sorted(loads, key=lambda m: (m.measured_at.ToNanoseconds(), m.worker_id))
    costs: dict[str, float] = {}
    for message in ordered:
        costs.update(message.cities)
    for message in ordered:
        costs.update((city, cost) for city, cost in message.cities.items()
                     if owners.get(city) == message.worker_id)
    return costs
