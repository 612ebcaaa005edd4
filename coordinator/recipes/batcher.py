"""Many cities' fenced commits in one etcd round trip, each still fenced on its own.

A worker that owns hundreds of cities would otherwise send one transaction per tick,
and etcd would append and fsync one raft entry per transaction. The batcher sends what
is waiting as one outer transaction whose operations are *nested* transactions, one per
city, each with its own compare::

    txn {                                   # no compare: always applies
      txn { if create_revision(paris candidate) == 41 then put decisions/paris ... }
      txn { if create_revision(rome candidate)  == 57 then put decisions/rome  ... }
    }

Every nested transaction succeeds or fails on its own compare, so one city's stale
token rejects that city's write only: fencing is exactly as strong as with separate
transactions. Batching is opportunistic, with no timer: while one round trip is in
flight the next batch gathers whatever arrives, so an idle worker pays no extra latency
and a busy one sends fewer, larger requests. A ``commit`` that finds nothing in flight
and nothing queued is sent by the calling thread itself, sparing two thread switches.

Each commit carries its own deadline (by default the batcher's ``timeout``; the worker
passes the moment its city's next tick is due). A batch is sent with the earliest
deadline among its commits, and a commit whose deadline passed while it queued is
failed without being sent. The reason is an etcd leader loss: a proposal a follower
forwards to a dead leader is lost, and the request hangs until its deadline even after
a new leader is elected a moment later. A commit abandoned when its city's next tick
is due leaves room for that tick's fresh decision, which reaches the new leader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from coordinator.errors import DispatchError, EtcdTimeout
from coordinator.etcd import EtcdClient

__all__ = ["CommitBatcher"]

log = logging.getLogger(__name__)


@dataclass
class _Item:
    compare: Sequence[Any]
    ops: Sequence[Any]
    size: int
    deadline: float  # time.monotonic() after which the commit is abandoned
    future: Future[tuple[bool, int]]


class CommitBatcher:
    #: etcd refuses transactions with more than --max-txn-ops (default 128) operations
    #: and requests over --max-request-bytes (default 1.5 MiB)
    MAX_ITEMS = 100
    MAX_BYTES = 1024 * 1024
    #: the shortest time a batch is given: below it even a healthy etcd could not answer
    MIN_TIMEOUT = 0.05

    def __init__(self, client: EtcdClient, *, timeout: float = 1.5) -> None:
        """``timeout``: how long a commit may wait for etcd. Shorter than the general
        request timeout on purpose: a proposal caught in an etcd leader election can
        hang for the server's whole request timeout (~7 s), while a commit retried on
        the next tick reaches the new leader in a moment. A decision that cannot be
        committed within a period is stale anyway."""
        self._client = client
        self._timeout = timeout
        self._queue: list[_Item] = []
        self._cond = threading.Condition()
        self._closed = False
        #: a round trip is in flight (sent by the batcher's thread or by a caller)
        self._sending = False
        self.batches = 0
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="commit batcher", daemon=True)
        self._thread.start()

    def submit(self, compare: Sequence[Any], ops: Sequence[Any], *,
               timeout: float | None = None) -> Future[tuple[bool, int]]:
        """Queue one fenced write; the future gives (succeeded, revision), or raises
        ``EtcdTimeout`` if etcd did not answer within ``timeout`` (default and upper
        bound: the batcher's own timeout)."""
        item = self._item(compare, ops, timeout)
        with self._cond:
            if self._closed:
                raise DispatchError("the commit batcher is closed")
            self._queue.append(item)
            self._cond.notify()
        return item.future

    def commit(self, compare: Sequence[Any], ops: Sequence[Any], *,
               timeout: float | None = None) -> tuple[bool, int]:
        """``submit`` and wait. When nothing is in flight or queued, the calling thread
        sends the commit itself: handing it to the batcher's thread and being woken
        with the answer would cost two thread switches, and in a busy worker each
        switch slows whatever Python is running (``coordinator.worker.gate``)."""
        item = self._item(compare, ops, timeout)
        self._enqueue([item])
        return item.future.result()

    def commit_many(self, writes: Sequence[tuple[Sequence[Any], Sequence[Any], float | None]]
                    ) -> list[tuple[bool, int] | BaseException]:
        """``commit`` for several (compare, ops, timeout) writes at once: together in
        one round trip (as many as etcd's limits require), sent by the calling thread
        when nothing is in flight. Each write's outcome in order, or the exception that
        failed it: one write's failure is not the others'."""
        items = [self._item(compare, ops, timeout) for compare, ops, timeout in writes]
        self._enqueue(items)
        outcomes: list[tuple[bool, int] | BaseException] = []
        for item in items:
            error = item.future.exception()
            outcomes.append(item.future.result() if error is None else error)
        return outcomes

    def _enqueue(self, items: list[_Item]) -> None:
        """Send ``items`` from this thread if nothing is in flight or queued; otherwise
        queue them for the batcher's thread, to go with the next batch."""
        with self._cond:
            if self._closed:
                raise DispatchError("the commit batcher is closed")
            direct = not self._sending and not self._queue
            if direct:
                self._sending = True
            else:
                self._queue.extend(items)
                self._cond.notify()
        if direct:
            self._send_direct(items)

    def _send_direct(self, items: list[_Item]) -> None:
        """Send ``items`` from the calling thread, which has set ``_sending``."""
        try:
            while items:
                count = self._fitting(items)
                self._send(items[:count])
                items = items[count:]
        finally:
            with self._cond:
                self._sending = False
                if self._queue:  # commits queued meanwhile go out together
                    self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _item(self, compare: Sequence[Any], ops: Sequence[Any],
              timeout: float | None) -> _Item:
        # compares are a few dozen bytes: counted as such, not measured
        size = sum(EtcdClient.op_size(op) for op in ops) + 64 * len(compare)
        wait = self._timeout if timeout is None else min(timeout, self._timeout)
        return _Item(compare, ops, size, time.monotonic() + wait, Future())

    def _take(self) -> list[_Item]:
        """The next batch, once nothing else is in flight (empty: closed and drained)."""
        with self._cond:
            while (self._sending or not self._queue) and not self._closed:
                self._cond.wait()
            while self._sending:  # closing: let the commit in flight finish first
                self._cond.wait(0.1)
            count = self._fitting(self._queue)
            batch = self._queue[:count]
            del self._queue[:count]
            self._sending = bool(batch)
            return batch

    def _fitting(self, items: list[_Item]) -> int:
        """How many of ``items``, from the first, fit in one transaction."""
        count = size = 0
        for item in items[:self.MAX_ITEMS]:
            if count and size + item.size > self.MAX_BYTES:
                break
            count += 1
            size += item.size
        return count

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return  # closed and drained
            try:
                self._send(batch)
            finally:
                with self._cond:
                    self._sending = False

    def _send(self, batch: list[_Item]) -> None:
        """One round trip for ``batch``; every item's future gets its outcome."""
        now = time.monotonic()
        for item in batch:
            if item.deadline <= now:
                item.future.set_exception(EtcdTimeout(
                    "the commit waited past its deadline for an earlier batch to finish"))
        batch = [item for item in batch if item.deadline > now]
        if not batch:
            return
        timeout = max(self.MIN_TIMEOUT, min(item.deadline for item in batch) - now)
        try:
            if len(batch) == 1:
                result = self._client.txn(batch[0].compare, batch[0].ops, timeout=timeout)
                outcomes = [result.succeeded]
            else:
                result = self._client.txn(
                    [], [self._client.op_txn(item.compare, item.ops) for item in batch],
                    timeout=timeout)
                outcomes = result.nested()
        except Exception as exc:
            for item in batch:
                item.future.set_exception(exc)
            return
        with self._cond:
            self.batches += 1
            self.commits += len(batch)
        for item, succeeded in zip(batch, outcomes, strict=True):
            item.future.set_result((succeeded, result.revision))
