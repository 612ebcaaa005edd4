"""The one boundary between this project and etcd.

A small client over etcd's own gRPC API (the generated stubs shipped by
``python3-etcd3`` as ``etcd3.etcdrpc``). We own this layer rather than use that
package's high-level client because coordination needs things it gets wrong or lacks:
range requests with create-revision bounds, watches that resume from a revision after a
stream error, failover that re-authenticates per member, and one place where every
gRPC error becomes a :mod:`coordinator.errors` exception.

Failover: one channel per endpoint; a request that finds its endpoint UNAVAILABLE is
retried once on each other endpoint. Every request we send is safe to repeat: campaign
keys are created by create-if-absent transactions, fenced writes carry their own
compare, keep-alives and reads are idempotent.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

# grpc's C core writes failed TLS handshakes (wrong CA: INFO; no client certificate:
# ERROR) straight to stderr, bypassing logging: that breaks the command lines' one-line
# errors and a worker's JSON log lines. Every such failure also reaches us as a status
# (translated below), so the core's own lines add nothing. It reads this variable once,
# when it loads; set GRPC_VERBOSITY yourself to see them.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
from etcd3 import etcdrpc

from coordinator.errors import (
    ConfigError,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdTimeout,
    EtcdUnavailable,
)

__all__ = [
    "EtcdClient",
    "EtcdConfig",
    "KeyValue",
    "TxnResult",
    "prefix_end",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# HTTP/2 keep-alive pings detect a dead connection instead of waiting for TCP to time
# out. etcd's server refuses pings closer than --grpc-keepalive-min-time (5 s by
# default) or sent with no stream open, answering GOAWAY "too_many_pings" and dropping
# every stream on the connection; so ping gently. A silently stalled member is detected
# much sooner by request deadlines and by watch progress checks (``WatchStream``).
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

_FAILOVER_CODES = {grpc.StatusCode.UNAVAILABLE}


@dataclass(frozen=True)
class EtcdConfig:
    """Where etcd is and how to authenticate; shared by the worker and dispatchctl."""

    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    timeout: float = 5.0
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @staticmethod
    def parse_endpoints(value: str) -> tuple[str, ...]:
        endpoints = tuple(part.strip() for part in value.split(",") if part.strip())
        if not endpoints:
            raise ConfigError("--etcd: no endpoint given")
        for endpoint in endpoints:
            _split_endpoint(endpoint)
        return endpoints


def _split_endpoint(endpoint: str) -> tuple[str, int, bool]:
    """``http://host:port`` → (host, port, tls). A bare ``host:port`` means http."""
    text = endpoint if "://" in endpoint else f"http://{endpoint}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--etcd: {endpoint!r} is not an http(s)://host:port URL")
    try:
        port = parts.port or 2379
    except ValueError as exc:
        raise ConfigError(f"--etcd: {endpoint!r} has an invalid port") from exc
    return parts.hostname, port, parts.scheme == "https"


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @staticmethod
    def from_pb(kv: Any) -> KeyValue:
        return KeyValue(
            key=kv.key.decode(),
            value=bytes(kv.value),
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: Sequence[Any]

    def ranges(self) -> list[list[KeyValue]]:
        """The key-values of every range response, in order."""
        out = []
        for response in self.responses:
            if response.WhichOneof("response") == "response_range":
                out.append([KeyValue.from_pb(kv) for kv in response.response_range.kvs])
        return out


def prefix_end(prefix: str) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


class _Endpoint:
    def __init__(self, url: str, config: EtcdConfig) -> None:
        host, port, tls = _split_endpoint(url)
        self.url = url
        self.target = f"{host}:{port}"
        if tls:
            self.channel = grpc.secure_channel(
                self.target, _tls_credentials(config), options=_CHANNEL_OPTIONS
            )
        else:
            self.channel = grpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        self.kv = etcdrpc.KVStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.cluster = etcdrpc.ClusterStub(self.channel)
        self.maintenance = etcdrpc.MaintenanceStub(self.channel)
        self.auth = etcdrpc.AuthStub(self.channel)
        # etcd's "simple" auth tokens are local to the member that issued them, so a
        # token is kept per endpoint and obtained again after failing over.
        self.token: str | None = None


def _tls_credentials(config: EtcdConfig) -> grpc.ChannelCredentials:
    def read(path: str | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc

    if (config.cert is None) != (config.key is None):
        raise ConfigError("--etcd-cert and --etcd-key must be given together")
    return grpc.ssl_channel_credentials(
        root_certificates=read(config.ca_cert, "CA certificate"),
        private_key=read(config.key, "client key"),
        certificate_chain=read(config.cert, "client certificate"),
    )


def translate(exc: grpc.RpcError, endpoint: str) -> EtcdError:
    """Map a gRPC error from etcd onto our error hierarchy (the only place that does)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    where = f"etcd {endpoint}"
    if code == grpc.StatusCode.UNAVAILABLE and any(
            marker in details for marker in ("TSI_", "handshake", "SSL", "certificate")):
        return EtcdAuthError(f"TLS handshake with {where} failed ({_first_line(details)}): "
                             "check --etcd-ca, --etcd-cert and --etcd-key")
    if code == grpc.StatusCode.UNAVAILABLE:
        return EtcdUnavailable(f"{where} unavailable: {_first_line(details)}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EtcdTimeout(f"{where} did not answer in time (no quorum?)")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return EtcdAuthError(f"{where} refused: {_first_line(details)}")
    if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return EtcdCompacted(f"{where}: {details}", 0)
    if code == grpc.StatusCode.INVALID_ARGUMENT and "auth" in details:
        return EtcdAuthError(f"{where} refused: {_first_line(details)}")
    return EtcdError(f"{where}: {code.name if code else 'error'}: {_first_line(details)}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


SortTarget = Literal["key", "create", "mod"]


class EtcdClient:
    """A thread-safe etcd v3 client with endpoint failover and translated errors."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._endpoints = [_Endpoint(url, config) for url in config.endpoints]
        self._current = 0
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------

    def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.channel.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._current].url

    def _order(self) -> list[_Endpoint]:
        with self._lock:
            start = self._current
        n = len(self._endpoints)
        return [self._endpoints[(start + i) % n] for i in range(n)]

    def _skip(self, endpoint: _Endpoint) -> None:
        with self._lock:
            if self._endpoints[self._current] is endpoint:
                self._current = (self._current + 1) % len(self._endpoints)

    def _mark_good(self, endpoint: _Endpoint) -> None:
        with self._lock:
            self._current = self._endpoints.index(endpoint)

    def _metadata(self, endpoint: _Endpoint, extra: Sequence[tuple[str, str]] = ()) -> Any:
        metadata = list(extra)
        if self.config.user is not None:
            if endpoint.token is None:
                self._authenticate(endpoint)
            metadata.append(("token", endpoint.token or ""))
        return metadata

    def _authenticate(self, endpoint: _Endpoint) -> None:
        if self.config.password is None:
            raise ConfigError("--etcd-user needs --etcd-password (or DISPATCH_ETCD_PASSWORD)")
        request = etcdrpc.AuthenticateRequest(name=self.config.user, password=self.config.password)
        try:
            response = endpoint.auth.Authenticate(request, timeout=self.config.timeout)
        except grpc.RpcError as exc:
            error = translate(exc, endpoint.url)
            if isinstance(error, EtcdError) and not isinstance(
                error, EtcdUnavailable | EtcdTimeout
            ):
                raise EtcdAuthError(
                    f"etcd {endpoint.url} refused user {self.config.user!r}: "
                    f"{_first_line(exc.details() or '')}"
                ) from exc
            raise error from exc
        endpoint.token = response.token

    def call(self, method: Callable[[_Endpoint], Callable[..., T]], request: Any,
             *, timeout: float | None = None) -> T:
        """Send one unary request, failing over between endpoints on UNAVAILABLE."""
        last: grpc.RpcError | None = None
        last_endpoint = self._endpoints[0]
        for endpoint in self._order():
            for attempt in range(2):
                try:
                    result = method(endpoint)(
                        request,
                        timeout=timeout or self.config.timeout,
                        metadata=self._metadata(endpoint),
                    )
                except ValueError as exc:  # grpc: "Cannot invoke RPC: Channel closed!"
                    raise EtcdUnavailable("the etcd client has been closed") from exc
                except grpc.RpcError as exc:
                    last, last_endpoint = exc, endpoint
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED and attempt == 0 \
                            and self.config.user is not None:
                        endpoint.token = None  # token expired or from another member
                        continue
                    break
                self._mark_good(endpoint)
                return result
            assert last is not None
            if last.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # A member that stopped answering (paused, partitioned, lost quorum):
                # the deadline is spent, so report it, but send the next request to
                # another member.
                self._skip(endpoint)
            if last.code() not in _FAILOVER_CODES:
                raise translate(last, last_endpoint.url) from last
        assert last is not None
        raise translate(last, last_endpoint.url) from last

    # -- key-value --------------------------------------------------------------------

    @staticmethod
    def range_request(key: str, *, prefix: bool = False, limit: int = 0, revision: int = 0,
                      sort: SortTarget | None = None, descending: bool = False,
                      max_create_revision: int = 0, keys_only: bool = False,
                      count_only: bool = False) -> Any:
        request = etcdrpc.RangeRequest(
            key=key.encode(), limit=limit, revision=revision, keys_only=keys_only,
            count_only=count_only, max_create_revision=max_create_revision,
        )
        if prefix:
            request.range_end = prefix_end(key)
        if sort is not None:
            request.sort_target = {
                "key": etcdrpc.RangeRequest.KEY,
                "create": etcdrpc.RangeRequest.CREATE,
                "mod": etcdrpc.RangeRequest.MOD,
            }[sort]
            request.sort_order = (
                etcdrpc.RangeRequest.DESCEND if descending else etcdrpc.RangeRequest.ASCEND
            )
        return request

    def range(self, key: str, **options: Any) -> tuple[list[KeyValue], int]:
        """Keys matching ``key`` (see :meth:`range_request`) and the store revision."""
        response = self.call(lambda e: e.kv.Range, self.range_request(key, **options))
        return [KeyValue.from_pb(kv) for kv in response.kvs], response.header.revision

    def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        kvs, _ = self.range(key, revision=revision)
        return kvs[0] if kvs else None

    def get_prefix(self, prefix: str, **options: Any) -> tuple[list[KeyValue], int]:
        return self.range(prefix, prefix=True, **options)

    def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        data = value.encode() if isinstance(value, str) else value
        response = self.call(
            lambda e: e.kv.Put, etcdrpc.PutRequest(key=key.encode(), value=data, lease=lease)
        )
        return int(response.header.revision)

    def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete a key (or a prefix); returns how many keys were deleted."""
        request = etcdrpc.DeleteRangeRequest(key=key.encode())
        if prefix:
            request.range_end = prefix_end(key)
        return int(self.call(lambda e: e.kv.DeleteRange, request).deleted)

    def txn(self, compare: Sequence[Any], success: Sequence[Any] = (),
            failure: Sequence[Any] = (), *, timeout: float | None = None) -> TxnResult:
        response = self.call(
            lambda e: e.kv.Txn,
            etcdrpc.TxnRequest(compare=list(compare), success=list(success),
                               failure=list(failure)),
            timeout=timeout,
        )
        return TxnResult(response.succeeded, response.header.revision, response.responses)

    # transaction building blocks

    @staticmethod
    def op_put(key: str, value: bytes | str, *, lease: int = 0) -> Any:
        data = value.encode() if isinstance(value, str) else value
        return etcdrpc.RequestOp(
            request_put=etcdrpc.PutRequest(key=key.encode(), value=data, lease=lease)
        )

    @staticmethod
    def op_delete(key: str) -> Any:
        return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key.encode()))

    @classmethod
    def op_range(cls, key: str, **options: Any) -> Any:
        return etcdrpc.RequestOp(request_range=cls.range_request(key, **options))

    @staticmethod
    def cmp_create_revision(key: str, revision: int) -> Any:
        """``create_revision(key) == revision`` (revision 0: the key does not exist)."""
        return etcdrpc.Compare(
            key=key.encode(), result=etcdrpc.Compare.EQUAL,
            target=etcdrpc.Compare.CREATE, create_revision=revision,
        )

    @staticmethod
    def cmp_mod_revision(key: str, revision: int) -> Any:
        return etcdrpc.Compare(
            key=key.encode(), result=etcdrpc.Compare.EQUAL,
            target=etcdrpc.Compare.MOD, mod_revision=revision,
        )

    # -- leases -----------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        response = self.call(lambda e: e.lease.LeaseGrant, etcdrpc.LeaseGrantRequest(TTL=ttl))
        if response.error:
            raise EtcdError(f"lease grant refused: {response.error}")
        return int(response.ID), int(response.TTL)

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Refresh a lease once; returns the TTL etcd granted. 0 means the lease is gone."""
        def send(endpoint: _Endpoint) -> Callable[..., Any]:
            def once(request: Any, *, timeout: float, metadata: Any) -> Any:
                for response in endpoint.lease.LeaseKeepAlive(
                    iter([request]), timeout=timeout, metadata=metadata
                ):
                    return response
                raise grpc.RpcError("keep-alive stream closed without an answer")
            return once

        response = self.call(send, etcdrpc.LeaseKeepAliveRequest(ID=lease_id), timeout=timeout)
        return int(response.TTL)

    def lease_revoke(self, lease_id: int) -> None:
        with contextlib.suppress(EtcdError):
            self.call(lambda e: e.lease.LeaseRevoke, etcdrpc.LeaseRevokeRequest(ID=lease_id))

    def lease_time_to_live(self, lease_id: int) -> tuple[int, int]:
        """(TTL left, granted TTL) of a lease; TTL left is -1 when it has expired."""
        response = self.call(
            lambda e: e.lease.LeaseTimeToLive, etcdrpc.LeaseTimeToLiveRequest(ID=lease_id)
        )
        return int(response.TTL), int(response.grantedTTL)

    # -- cluster ----------------------------------------------------------------------

    def status(self, endpoint: str | None = None) -> Any:
        """Maintenance status of one endpoint (default: the current one)."""
        if endpoint is None:
            return self.call(lambda e: e.maintenance.Status, etcdrpc.StatusRequest())
        target = next(e for e in self._endpoints if e.url == endpoint)
        try:
            return target.maintenance.Status(
                etcdrpc.StatusRequest(), timeout=self.config.timeout,
                metadata=self._metadata(target),
            )
        except grpc.RpcError as exc:
            raise translate(exc, target.url) from exc

    def members(self) -> Any:
        return self.call(lambda e: e.cluster.MemberList, etcdrpc.MemberListRequest()).members

    def alarms(self) -> Any:
        request = etcdrpc.AlarmRequest(action=etcdrpc.AlarmRequest.GET, memberID=0,
                                       alarm=etcdrpc.NONE)
        return self.call(lambda e: e.maintenance.Alarm, request).alarms

    def compact(self, revision: int, *, physical: bool = False) -> None:
        self.call(lambda e: e.kv.Compact,
                  etcdrpc.CompactionRequest(revision=revision, physical=physical))

    # -- watch ------------------------------------------------------------------------

    def watch_stream(self, prefix: str, start_revision: int,
                     *, prev_kv: bool = False) -> WatchStream:
        """Open one watch stream on a prefix; see :class:`coordinator.recipes.watch.PrefixWatch`."""
        for endpoint in self._order():
            stream = WatchStream(self, endpoint, prefix, start_revision, prev_kv=prev_kv)
            try:
                stream.open()
            except EtcdUnavailable:
                continue
            self._mark_good(endpoint)
            return stream
        raise EtcdUnavailable(f"no etcd endpoint of {', '.join(self.config.endpoints)} answered")


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue
    prev: KeyValue | None


@dataclass(frozen=True)
class WatchBatch:
    """One watch response: its events and the store revision it is current to."""

    revision: int
    events: list[WatchEvent]


_watch_ids = itertools.count(1)


class WatchStream:
    """A single gRPC watch stream on one prefix, read as an iterator of batches.

    The stream asks etcd for ``require leader`` so a member cut off from the raft
    leader cancels it rather than leaving it silently stale.
    """

    def __init__(self, client: EtcdClient, endpoint: _Endpoint, prefix: str,
                 start_revision: int, *, prev_kv: bool) -> None:
        self._client = client
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
        metadata = self._client._metadata(self._endpoint, [("hasleader", "true")])
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
                self._client._skip(self._endpoint)
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
