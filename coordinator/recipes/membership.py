"""Membership: each worker announces itself under ``<ns>/workers/<id>`` on its lease, and
every worker sees who is alive (``<ns>/workers/``) and who is drained (``<ns>/drain/``)."""

from __future__ import annotations

from collections.abc import Callable

from coordinator.balancer import Member
from coordinator.codec import decode, encode
from coordinator.errors import WorkerIdTaken
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.recipes.session import Session
from coordinator.recipes.watch import WatchedPrefix
from protos import dispatch_pb2 as pb

__all__ = ["Members", "register"]


def register(client: EtcdClient, keys: Keys, session: Session, info: pb.WorkerInfo) -> None:
    """Create or refresh our membership key; refuse an id held by another live lease.

    A worker restarted after kill -9 finds its old key until the old lease expires; the
    caller retries until then rather than steal the id from a possibly live process.
    """
    key = keys.worker(info.worker_id)
    info.lease_id = session.lease_hex
    value = encode(info)
    result = client.txn(
        [client.cmp_create_revision(key, 0)],
        [client.op_put(key, value, lease=session.lease_id)],
        [client.op_range(key)],
    )
    if result.succeeded:
        return
    existing = result.ranges()[0]
    if existing and existing[0].lease not in (0, session.lease_id):
        raise WorkerIdTaken(
            f"worker id {info.worker_id!r} is registered by another live session "
            f"(lease {existing[0].lease:x}); waiting for it to expire"
        )
    client.put(key, value, lease=session.lease_id)


class Members:
    """Who is alive (``<ns>/workers/``) and who is drained (``<ns>/drain/``)."""

    def __init__(self, client: EtcdClient, keys: Keys, on_change: Callable[[], None]) -> None:
        self._workers = WatchedPrefix(client, keys.workers, on_change, "watch workers")
        self._drains = WatchedPrefix(client, keys.drains, on_change, "watch drains")

    def start(self) -> Members:
        self._workers.start()
        self._drains.start()
        return self

    def stop(self) -> None:
        self._workers.stop()
        self._drains.stop()

    def synced(self) -> bool:
        return self._workers.synced.is_set() and self._drains.synced.is_set()

    def drained(self) -> set[str]:
        return set(self._drains.items())

    def infos(self) -> dict[str, pb.WorkerInfo]:
        out = {}
        for worker_id, kv in self._workers.items().items():
            try:
                out[worker_id] = decode(pb.WorkerInfo, kv.value)
            except ValueError:
                out[worker_id] = pb.WorkerInfo(worker_id=worker_id)
        return out

    def members(self) -> list[Member]:
        drained = self.drained()
        return [
            Member(worker_id, info.capacity or 1.0, dict(info.labels), worker_id in drained)
            for worker_id, info in self.infos().items()
        ]
