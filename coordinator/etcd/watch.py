"""One gRPC watch stream on one prefix (resumed by
:class:`coordinator.recipes.watch.PrefixWatch`)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from etcd3 import etcdrpc

from coordinator.errors import EtcdCompacted, EtcdTimeout, EtcdUnavailable
from coordinator.etcd.channel import _Endpoint, prefix_end, translate
from coordinator.etcd.results import KeyValue, WatchBatch, WatchEvent

__all__ = ["WatchStream"]

_watch_ids = itertools.count(1)


class WatchStream:
    """A single gRPC watch stream on one prefix, read as an iterator of batches.

    The stream asks etcd for ``require leader`` so a member cut off from the raft
    leader cancels it rather than leaving it silently stale.
    """

    def __init__(self, endpoint: _Endpoint, prefix: str, start_revision: int, *,
                 prev_kv: bool, metadata: Callable[[], Any],
                 on_stall: Callable[[], None]) -> None:
        # ``metadata`` (auth token, "hasleader") is asked for when the stream opens;
        # ``on_stall`` tells the client to send its next request to another member.
        self._metadata = metadata
        self._on_stall = on_stall
        self._endpoint = endpoint
        self.prefix = prefix
        self.start_revision = start_revision
        self._prev_kv = prev_kv
        self._closed = threading.Event()
        self._call: Any = None
        self._responses: Iterator[Any] | None = None
        self.watch_id = next(_watch_ids)
        self.last_seen = time.monotonic()
        self.stalled = False

    #: seconds between progress requests; a stream that stays silent for
    #: ``STALL_AFTER`` seconds is treated as dead (its member stalled or lost quorum)
    PROGRESS_EVERY = 1.0
    STALL_AFTER = 3.0

    def _requests(self) -> Iterator[Any]:
        yield etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
            key=self.prefix.encode(), range_end=prefix_end(self.prefix),
            start_revision=self.start_revision, prev_kv=self._prev_kv, progress_notify=True,
        ))
        # A stopped (SIGSTOP) or partitioned member leaves the TCP connection open and
        # the stream silent. Ask for progress every second; etcd answers with an empty
        # response at the current revision, so silence means the member is gone.
        while not self._closed.wait(self.PROGRESS_EVERY):
            if time.monotonic() - self.last_seen > self.STALL_AFTER:
                self.stalled = True
                self.close()
                return
            yield etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())

    def open(self) -> None:
        metadata = self._metadata()
        try:
            self._call = self._endpoint.watch.Watch(self._requests(), metadata=metadata)
        except ValueError as exc:  # grpc: "Cannot invoke RPC: Channel closed!"
            raise EtcdUnavailable("the etcd client has been closed") from exc
        self._responses = iter(self._call)
        try:
            first = next(self._responses)
        except grpc.RpcError as exc:
            self.close()
            raise translate(exc, self._endpoint.url) from exc
        except StopIteration as exc:
            self.close()
            raise EtcdUnavailable(f"etcd {self._endpoint.url} closed the watch") from exc
        self._check(first)

    def _check(self, response: Any) -> None:
        if response.compact_revision:
            self.close()
            raise EtcdCompacted(
                f"watch on {self.prefix} from revision {self.start_revision}: compacted "
                f"up to {response.compact_revision}", response.compact_revision,
            )
        if response.canceled:
            self.close()
            reason = response.cancel_reason or "canceled by etcd"
            raise EtcdUnavailable(f"etcd {self._endpoint.url} canceled the watch: {reason}")

    def __iter__(self) -> Iterator[WatchBatch]:
        assert self._responses is not None, "open() first"
        try:
            for response in self._responses:
                self.last_seen = time.monotonic()
                self._check(response)
                events = [
                    WatchEvent(
                        "delete" if event.type == 1 else "put",
                        KeyValue.from_pb(event.kv),
                        KeyValue.from_pb(event.prev_kv) if event.HasField("prev_kv") else None,
                    )
                    for event in response.events
                ]
                yield WatchBatch(response.header.revision, events)
        except grpc.RpcError as exc:
            if self.stalled:
                self._on_stall()
                raise EtcdTimeout(f"etcd {self._endpoint.url} stopped answering the watch "
                                  f"on {self.prefix}") from exc
            if self._closed.is_set():
                return
            raise translate(exc, self._endpoint.url) from exc
        if not self._closed.is_set():
            raise EtcdUnavailable(f"etcd {self._endpoint.url} ended the watch stream")

    def close(self) -> None:
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
