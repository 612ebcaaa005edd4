"""Follow accepted decisions in etcd revision order, from a cursor.

Only fenced commits reach ``<ns>/decisions/<city>``, so that key's mod revision is a
strictly increasing version of a city's accepted decisions across leaders. A consumer
(the relay, or any service reading etcd directly) remembers the highest revision it
holds and follows from there::

    follower = DecisionFollower(client, keys, after=cursor)
    for batch in follower:          # lists of Delivery, in revision order
        store(batch)                # e.g. apply it where revision > what you hold
    ...
    follower.stop()                 # from any thread; iteration ends promptly

What it survives, without losing or repeating a decision:

- a watch stream error or an endpoint failover: a new stream from the last revision
  received + 1;
- compaction past the cursor: the events in between are gone, so it reads the prefix at
  the compaction point (or, if that went too, now), yields each city's latest decision
  newer than the cursor, reports a :class:`Gap`, and watches on from that read;
- a malformed value: logged with its key and revision, reported as :class:`Malformed`,
  skipped;
- a slow consumer: at most ``buffer_max`` decisions are held; past that the stream is
  left unread for up to ``PAUSE_AFTER`` seconds, then the watch is paused (closed, then
  resumed from where it was), rather than left to look stalled.

A batch never splits one revision (a batched commit writes many cities at one revision,
and a cursor between them would skip the rest), so a batch can exceed ``batch_max`` by
the cities of its last revision. Deleted keys (a city removed) yield nothing. Callbacks
(``on_gap``, ``on_malformed``, ``on_error``) run in the iterating thread, in stream
order. The follower is single-use: iterate it once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from coordinator.backoff import Backoff
from coordinator.codec import decode, stored_decision
from coordinator.errors import ConfigError, DispatchError, EtcdCompacted
from coordinator.etcd import EtcdClient, KeyValue, WatchEvent, WatchStream
from coordinator.keys import Keys, check_city_name
from coordinator.sinks.contract import Delivery
from protos import dispatch_pb2 as pb

__all__ = ["DecisionFollower", "Gap", "Malformed", "to_delivery"]

log = logging.getLogger(__name__)

#: 0.1 s after a first failure, doubling to 2 s, jittered (as PrefixWatch retries)
_RETRY = Backoff(0.1, 2.0, jitter=1.0)


@dataclass(frozen=True)
class Gap:
    """Decisions of revisions ``from_revision``..``to_revision`` were compacted away
    before they could be read: only each city's latest (``cities``, delivered next) is
    known; any decision it replaced in that span is lost to the consumer."""

    from_revision: int
    to_revision: int
    cities: tuple[str, ...]


@dataclass(frozen=True)
class Malformed:
    """A value under the decisions prefix that is not a decision (skipped)."""

    key: str
    revision: int
    reason: str


@dataclass(frozen=True)
class _Failed:
    """The watch failed and is being retried (``on_error``)."""

    error: DispatchError


_Item = Delivery | Gap | Malformed | _Failed


def to_delivery(keys: Keys, kv: KeyValue) -> Delivery:
    """The delivery of one decision key; ``ValueError`` naming what is wrong with it."""
    city = Keys.tail(kv.key, keys.decisions)
    try:
        check_city_name(city)
    except ConfigError as exc:
        raise ValueError(f"not a city's decision key: {exc}") from None
    stored = stored_decision(kv.value)
    if stored is not None:  # the worker's own form: the message is decoded if ever read
        named = stored.get("city")
        if named and named != city:
            raise ValueError(f"decision names city {named!r}, not {city!r}")
        return Delivery.of_stored(city, kv.mod_revision, int(stored.get("token", 0)),
                                  kv.value)
    decision = decode(pb.Decision, kv.value, what="decision")
    if decision.city and decision.city != city:
        raise ValueError(f"decision names city {decision.city!r}, not {city!r}")
    return Delivery(city=city, revision=kv.mod_revision, token=decision.token,
                    decision=decision, value=kv.value)


class DecisionFollower:
    """An iterator of batches of :class:`Delivery` after revision ``after``.

    ``batch_max``: deliveries merged into one batch when more are already buffered.
    ``prepare``: run on the reader thread on each delivery as it arrives, ahead of the
    consumer (the relay passes :meth:`Sink.prepare`); a ``ValueError`` from it marks the
    decision malformed.
    ``revision`` is the last revision yielded; ``etcd_revision`` the newest store
    revision a watch response reported; ``gaps`` and ``malformed`` count those events.
    """

    #: seconds a full buffer may hold the open stream unread before the watch is paused
    PAUSE_AFTER = 1.0

    def __init__(self, client: EtcdClient, keys: Keys, *, after: int = 0,
                 batch_max: int = 500, buffer_max: int | None = None,
                 on_gap: Callable[[Gap], None] | None = None,
                 on_malformed: Callable[[Malformed], None] | None = None,
                 on_error: Callable[[DispatchError], None] | None = None,
                 prepare: Callable[[Delivery], Delivery] | None = None) -> None:
        if after < 0 or batch_max < 1:
            raise ValueError("a follower needs after >= 0 and batch_max >= 1")
        self._client = client
        self._keys = keys
        self._batch_max = batch_max
        self._buffer_max = max(buffer_max or 4 * batch_max, batch_max)
        self._on_gap = on_gap
        self._on_malformed = on_malformed
        self._on_error = on_error
        self._prepare = prepare
        self.revision = after
        self.etcd_revision = 0
        self.gaps = 0
        self.malformed = 0
        self._received = after  # last revision the reader took from etcd
        self._items: deque[_Item] = deque()
        self._deliveries = 0  # deliveries in ``_items``
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._crash: BaseException | None = None
        self._started = False
        self._thread = threading.Thread(target=self._read, name="follow decisions",
                                        daemon=True)

    # -- the consumer's side --------------------------------------------------------------

    def __iter__(self) -> Iterator[list[Delivery]]:
        return self

    def __next__(self) -> list[Delivery]:
        if not self._started and not self._stop.is_set():
            self._started = True
            self._thread.start()
        while True:
            with self._cond:
                while not self._items and not self._stop.is_set() and self._crash is None:
                    self._cond.wait()
                if self._crash is not None:
                    raise self._crash
                if self._stop.is_set():
                    raise StopIteration
                taken = self._take()
            batch = self._notify(taken)
            if batch:
                self.revision = max(self.revision, batch[-1].revision)
                return batch

    def _take(self) -> list[_Item]:
        """Items up to ``batch_max`` deliveries, ending at a revision boundary."""
        taken: list[_Item] = []
        count = 0
        items = self._items
        while items:
            head = items[0]
            if isinstance(head, Delivery):
                if count >= self._batch_max and head.revision != _last_revision(taken):
                    break
                count += 1
            taken.append(items.popleft())
        self._deliveries -= count
        self._cond.notify_all()
        return taken

    def _notify(self, taken: list[_Item]) -> list[Delivery]:
        batch: list[Delivery] = []
        for item in taken:
            if isinstance(item, Delivery):
                batch.append(item)
            elif isinstance(item, Gap):
                self.gaps += 1
                if self._on_gap is not None:
                    self._on_gap(item)
            elif isinstance(item, Malformed):
                self.malformed += 1
                self.revision = max(self.revision, item.revision)
                if self._on_malformed is not None:
                    self._on_malformed(item)
            elif self._on_error is not None:
                self._on_error(item.error)
        return batch

    def oldest_buffered(self) -> Delivery | None:
        """The first delivery received but not yet yielded (for lag), if any."""
        with self._cond:
            return next((i for i in self._items if isinstance(i, Delivery)), None)

    def stop(self) -> None:
        """End the iteration (what is buffered is dropped) and the watch; idempotent."""
        self._stop.set()
        with self._cond:
            stream = self._stream
            self._cond.notify_all()
        if stream is not None:
            stream.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> DecisionFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the reader thread ----------------------------------------------------------------

    def _push(self, items: list[_Item]) -> None:
        with self._cond:
            self._items.extend(items)
            self._deliveries += sum(isinstance(i, Delivery) for i in items)
            self._cond.notify_all()

    def _full(self) -> bool:
        return self._deliveries >= self._buffer_max

    def _read(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # a bug: make the consumer see it, never hang it
            log.exception("decisions follower stopped by an unexpected error")
            with self._cond:
                self._crash = exc
                self._cond.notify_all()

    def _follow(self) -> None:
        failures = 0
        compacted: int | None = None  # compaction point when a snapshot is needed
        prefix = self._keys.decisions
        while not self._stop.is_set():
            stream: WatchStream | None = None
            try:
                if compacted is not None:
                    self._snapshot(compacted)
                    compacted = None
                stream = self._client.watch_stream(prefix, self._received + 1)
                with self._cond:
                    if self._stop.is_set():
                        return
                    self._stream = stream
                if failures:
                    log.info("decisions follower resumed from revision %d",
                             self._received + 1)
                failures = 0
                for response in stream:
                    self.etcd_revision = max(self.etcd_revision, response.revision)
                    if response.events:
                        # Resume after the last event, never from a header revision
                        # (etcd 3.4 answers progress requests ahead of unsent events).
                        self._push(self._convert(response.events))
                        self._received = max(self._received,
                                             response.events[-1].kv.mod_revision)
                        if self._full() and not self._wait_for_room(self.PAUSE_AFTER):
                            break
            except EtcdCompacted as exc:
                log.warning("decisions follower: revision %d is compacted (%s)",
                            self._received + 1, exc)
                compacted = exc.compact_revision
            except DispatchError as exc:
                if self._stop.is_set():
                    return
                failures += 1
                self._push([_Failed(exc)])
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "decisions follower interrupted: %s; retrying from revision %d",
                        exc, self._received + 1)
                self._stop.wait(_RETRY.delay(failures))
            finally:
                with self._cond:
                    self._stream = None
                if stream is not None:
                    stream.close()
            self._wait_for_room()

    def _wait_for_room(self, timeout: float | None = None) -> bool:
        """Backpressure: wait (at most ``timeout`` seconds) until the consumer has made
        room; whether it has. Waiting with the stream open lets gRPC's flow control hold
        etcd back and wastes nothing; past ``PAUSE_AFTER`` the watch is closed instead
        (a stream left unread that long would look stalled), and what etcd had already
        sent is read again on resuming."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._full() or self._stop.is_set(),
                                       timeout)

    def _convert(self, events: list[WatchEvent]) -> list[_Item]:
        return [self._item(event.kv) for event in events if event.kind == "put"]

    def _item(self, kv: KeyValue) -> Delivery | Malformed:
        try:
            delivery = to_delivery(self._keys, kv)
            return delivery if self._prepare is None else self._prepare(delivery)
        except ValueError as exc:
            log.warning("skipping malformed decision %s at revision %d: %s",
                        kv.key, kv.mod_revision, exc)
            return Malformed(kv.key, kv.mod_revision, str(exc))

    def _snapshot(self, compact_revision: int) -> None:
        """Read the prefix at the compaction point (or now, if compaction moved on),
        queue each city's latest decision newer than what was received, and a Gap."""
        prefix = self._keys.decisions
        try:
            kvs, _ = self._client.get_prefix(prefix, revision=compact_revision)
            at = compact_revision
        except EtcdCompacted:
            kvs, at = self._client.get_prefix(prefix)
        fresh = sorted((kv for kv in kvs if kv.mod_revision > self._received),
                       key=lambda kv: (kv.mod_revision, kv.key))
        items = [self._item(kv) for kv in fresh]
        cities = tuple(i.city for i in items if isinstance(i, Delivery))
        gap = Gap(self._received + 1, at, cities)
        log.warning("decisions follower: revisions %d..%d were compacted before they were "
                    "read; delivering the latest decision of %d cities as of revision %d "
                    "(decisions they replaced in that span are skipped)",
                    gap.from_revision, gap.to_revision, len(cities), at)
        self._push([gap, *items])
        self._received = max(self._received, at)


def _last_revision(items: list[_Item]) -> int:
    for item in reversed(items):
        if isinstance(item, Delivery):
            return item.revision
    return -1
