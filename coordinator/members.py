"""Live members and drain marks, each kept current by one prefix watch."""

from __future__ import annotations

import threading
from collections.abc import Callable

from coordinator.balancer import Member
from coordinator.codec import decode
from coordinator.etcd import EtcdClient, KeyValue, WatchBatch
from coordinator.keys import Keys
from coordinator.watch import PrefixWatch
from protos import dispatch_pb2 as pb

__all__ = ["Members", "WatchedPrefix"]


class WatchedPrefix:
    """The keys under one prefix as a dict ``tail -> KeyValue``, kept current."""

    def __init__(self, client: EtcdClient, prefix: str, on_change: Callable[[], None],
                 name: str) -> None:
        self._prefix = prefix
        self._on_change = on_change
        self._lock = threading.Lock()
        self._items: dict[str, KeyValue] = {}
        self._watch = PrefixWatch(client, prefix, on_snapshot=self._snapshot,
                                  on_events=self._events, name=name)

    def start(self) -> None:
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()

    @property
    def synced(self) -> threading.Event:
        return self._watch.synced

    def items(self) -> dict[str, KeyValue]:
        with self._lock:
            return dict(self._items)

    def _snapshot(self, kvs: list[KeyValue], _revision: int) -> None:
        with self._lock:
            self._items = {Keys.tail(kv.key, self._prefix): kv for kv in kvs}
        self._on_change()

    def _events(self, batch: WatchBatch) -> None:
        with self._lock:
            for event in batch.events:
                tail = Keys.tail(event.kv.key, self._prefix)
                if event.kind == "delete":
                    self._items.pop(tail, None)
                else:
                    self._items[tail] = event.kv
        self._on_change()


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
