"""A prefix watch that survives stream errors, failover and compaction.

etcd drops a watch stream when its member dies, loses the raft leader, or the client
fails over to another endpoint, and it does not resume it for us. ``PrefixWatch`` keeps
one stream per prefix alive: every stream it opens starts with a read of the whole
prefix, handed to the listener as a fresh snapshot, and watches from the revision of
that read + 1, so no change is lost.

It does not resume from the last event delivered. The prefixes watched this way hold
state (candidates, settings, members, loads), are small, and are quiet for long
stretches while decisions write thousands of revisions elsewhere. To replay from an old
revision, etcd reads every revision since of every key, under the lock its writes wait
on: three workers resuming together after a pause made it stall for seconds and cost a
fourth worker its lease (docs/operations.md). A read costs what the prefix holds now.

The listener sees a snapshot first (``on_snapshot``), then batches of events
(``on_events``) in revision order, all from one thread; after any stream error, a new
snapshot, which may skip changes that came and went meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from coordinator.backoff import Backoff
from coordinator.errors import DispatchError, EtcdCompacted
from coordinator.etcd import EtcdClient, KeyValue, WatchBatch, WatchStream
from coordinator.keys import Keys

__all__ = ["PrefixWatch", "WatchedPrefix"]

log = logging.getLogger(__name__)

SnapshotHandler = Callable[[list[KeyValue], int], None]
EventsHandler = Callable[[WatchBatch], None]

#: 0.1 s after a first failure, doubling to 2 s, each spread over [0.5, 1.5) times that
_RETRY = Backoff(0.1, 2.0, jitter=1.0)


class PrefixWatch:
    """One prefix watched from one thread, resumed after every stream error."""

    def __init__(self, client: EtcdClient, prefix: str, *, on_snapshot: SnapshotHandler,
                 on_events: EventsHandler, name: str | None = None,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self._client = client
        self.prefix = prefix
        self._on_snapshot = on_snapshot
        self._on_events = on_events
        self._on_error = on_error
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._lock = threading.Lock()
        self.revision = 0  # last revision delivered to the listener
        self.synced = threading.Event()
        self.restarts = 0
        self._thread = threading.Thread(
            target=self._run, name=name or f"watch {prefix}", daemon=True
        )

    def start(self) -> PrefixWatch:
        self._thread.start()
        return self

    def close(self) -> None:
        """Tell the watch to end (its stream closed), without waiting for its thread:
        several watches closed first and then stopped end together, not one by one."""
        self._stop.set()
        with self._lock:
            if self._stream is not None:
                self._stream.close()

    def stop(self) -> None:
        self.close()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=5)

    def _snapshot(self) -> None:
        kvs, revision = self._client.get_prefix(self.prefix)
        self._on_snapshot(kvs, revision)
        self.revision = revision
        self.synced.set()

    def _run(self) -> None:
        failures = 0  # in a row, since a stream last opened
        failing_since = 0.0  # monotonic time the current streak of failures began
        last_warning = 0.0
        while not self._stop.is_set():
            try:
                self._snapshot()
                stream = self._client.watch_stream(self.prefix, self.revision + 1)
                with self._lock:
                    if self._stop.is_set():
                        stream.close()
                        return
                    self._stream = stream
                failures = 0
                if failing_since:
                    log.info("watch on %s resumed after %.1fs", self.prefix,
                             time.monotonic() - failing_since)
                    failing_since = 0.0
                for batch in stream:
                    if batch.events:
                        self._on_events(batch)
                        self.revision = max(self.revision, batch.events[-1].kv.mod_revision)
            except EtcdCompacted as exc:
                # the snapshot's revision compacted before the stream opened: read again
                log.warning("watch on %s fell behind compaction (%s); re-reading it",
                            self.prefix, exc)
            except DispatchError as exc:
                if self._stop.is_set():
                    return
                if self._on_error is not None:
                    self._on_error(exc)
                now = time.monotonic()
                # One warning when a streak of failures starts, then one every 30 s.
                level = logging.DEBUG
                if not failing_since or now - last_warning > 30:
                    level, last_warning = logging.WARNING, now
                failing_since = failing_since or now
                log.log(level, "watch on %s interrupted: %s; re-reading it", self.prefix, exc)
                failures += 1
                self._stop.wait(_RETRY.delay(failures))
            finally:
                with self._lock:
                    if self._stream is not None:
                        self._stream.close()
                        self._stream = None
            self.restarts += 1


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
