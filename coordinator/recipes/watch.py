"""A prefix watch that survives stream errors, failover and compaction.

etcd drops a watch stream when its member dies, loses the raft leader, or the client
fails over to another endpoint, and it does not resume it for us. ``PrefixWatch`` keeps
one stream per prefix alive. After an error it opens a new stream from the last
revision it delivered + 1, so no event is lost or repeated, when that is near the
present; otherwise, or when that revision has been compacted away, it re-reads the
whole prefix and hands the listener a fresh snapshot (which skips changes that came and
went meanwhile).

Near means within ``REPLAY_LIMIT`` revisions of etcd's revision, asked before resuming
(a count of the prefix: one small round trip). To replay, etcd reads every revision
since, of every key and not only the prefix's, under a lock its writes wait on. A quiet
prefix (candidates, members, settings) may be tens of thousands of revisions behind
while decisions write elsewhere: three workers resuming such watches together after a
pause stalled etcd for seconds and cost a fourth worker its lease (docs/operations.md).
A read costs what the prefix holds now.

The listener sees a snapshot first (``on_snapshot``), then batches of events
(``on_events``) in revision order, all from one thread.
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

#: the most revisions a resumed stream replays; further behind, the prefix is read again
REPLAY_LIMIT = 1000

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

    def _far_behind(self) -> bool:
        """Whether etcd is more than ``REPLAY_LIMIT`` revisions past the last one
        delivered: cheaper to read the prefix again than to make etcd replay them."""
        _, now = self._client.get_prefix(self.prefix, count_only=True)
        return now - self.revision > REPLAY_LIMIT

    def _run(self) -> None:
        failures = 0  # in a row, since a stream last opened
        need_snapshot = True
        failing_since = 0.0  # monotonic time the current streak of failures began
        last_warning = 0.0
        while not self._stop.is_set():
            try:
                if need_snapshot or self._far_behind():
                    self._snapshot()
                    need_snapshot = False
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
                        # Resume after the last event delivered, never from a header
                        # revision: etcd 3.4 answers progress requests with the current
                        # revision even while this watcher is still catching up, so a
                        # header can run ahead of events not yet sent.
                        self.revision = max(self.revision, batch.events[-1].kv.mod_revision)
            except EtcdCompacted as exc:
                log.warning("watch on %s fell behind compaction (%s); re-reading it",
                            self.prefix, exc)
                need_snapshot = True
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
                log.log(level, "watch on %s interrupted: %s; retrying (from revision %d)",
                        self.prefix, exc, self.revision + 1)
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
