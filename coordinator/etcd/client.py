"""The etcd client: key-value, transactions, leases, cluster status and watches,
each request failing over between endpoints and failing with our own errors."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import grpc
from etcd3 import etcdrpc

from coordinator.errors import (
    ConfigError,
    EtcdAuthError,
    EtcdError,
    EtcdNoSpace,
    EtcdTimeout,
    EtcdUnavailable,
)
from coordinator.etcd.channel import (
    EtcdConfig,
    _code,
    _details,
    _Endpoint,
    _first_line,
    _StreamEnded,
    prefix_end,
    translate,
)
from coordinator.etcd.results import Alarm, ClusterMember, KeyValue, MemberStatus, TxnResult
from coordinator.etcd.watch import WatchStream

__all__ = ["EtcdClient", "SortTarget"]

T = TypeVar("T")

_FAILOVER_CODES = {grpc.StatusCode.UNAVAILABLE}
#: etcd's require-leader metadata: a member without a raft leader refuses at once
_HAS_LEADER = (("hasleader", "true"),)

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
                    f"{_first_line(_details(exc))}"
                ) from exc
            raise error from exc
        endpoint.token = response.token

    def call(self, method: Callable[[_Endpoint], Callable[..., T]], request: Any,
             *, timeout: float | None = None, require_leader: bool = True) -> T:
        """Send one unary request, failing over between endpoints on UNAVAILABLE.

        ``require_leader``: the request says so (etcd's ``hasleader`` metadata), and a
        member that knows no raft leader answers "no leader" (UNAVAILABLE) at once
        instead of holding the request until it times out: a member partitioned from
        the others, however well it answers, sends us on to the majority. Only the
        diagnostics that must reach a leaderless member (status, alarms) leave it off.

        Every failure ends in a :mod:`coordinator.errors` exception (the gRPC error as
        its cause), whatever shape the gRPC error had: callers catch ``EtcdError``.
        """
        last: grpc.RpcError | None = None
        last_endpoint = self._endpoints[0]
        for endpoint in self._order():
            for attempt in range(2):
                try:
                    result = self._send(endpoint, method, request, timeout, require_leader)
                except grpc.RpcError as exc:
                    last, last_endpoint = exc, endpoint
                    if _code(exc) == grpc.StatusCode.UNAUTHENTICATED and attempt == 0 \
                            and self.config.user is not None:
                        endpoint.token = None  # token expired or from another member
                        continue
                    break
                self._mark_good(endpoint)
                return result
            assert last is not None
            if _code(last) == grpc.StatusCode.DEADLINE_EXCEEDED:
                # A member that stopped answering (paused, partitioned, lost quorum):
                # the deadline is spent, so report it, but send the next request to
                # another member.
                self._skip(endpoint)
            if _code(last) not in _FAILOVER_CODES:
                raise translate(last, last_endpoint.url) from last
        assert last is not None
        raise translate(last, last_endpoint.url) from last

    def _send(self, endpoint: _Endpoint, method: Callable[[_Endpoint], Callable[..., T]],
              request: Any, timeout: float | None, require_leader: bool = False) -> T:
        """One attempt on one endpoint; gRPC errors are left to the caller to translate."""
        try:
            return method(endpoint)(
                request,
                timeout=timeout or self.config.timeout,
                metadata=self._metadata(endpoint, _HAS_LEADER if require_leader else ()),
            )
        except ValueError as exc:  # grpc: "Cannot invoke RPC: Channel closed!"
            raise EtcdUnavailable("the etcd client has been closed") from exc

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
        return TxnResult.from_pb(response)

    def read_prefixes(self, prefixes: Sequence[str]) -> tuple[list[list[KeyValue]], int]:
        """Every key under each prefix, all read at one revision, and that revision.

        One read-only transaction, one round trip. etcd 3.5 refuses even a read-only
        transaction while its NOSPACE alarm is raised (3.4 serves it), which is when an
        operator most needs ``dispatchctl status``: then one range per prefix, each
        pinned to the first one's revision, reads the same snapshot.
        """
        try:
            result = self.txn([], [self.op_range(prefix, prefix=True) for prefix in prefixes])
            return result.ranges(), result.revision
        except EtcdNoSpace:
            pass
        out: list[list[KeyValue]] = []
        revision = 0
        for prefix in prefixes:
            kvs, at = self.range(prefix, prefix=True, revision=revision)
            revision = revision or at
            out.append(kvs)
        return out, revision

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
    def op_txn(compare: Sequence[Any], success: Sequence[Any] = (),
               failure: Sequence[Any] = ()) -> Any:
        """A transaction nested in another, with its own compare (see
        :meth:`TxnResult.nested`)."""
        return etcdrpc.RequestOp(request_txn=etcdrpc.TxnRequest(
            compare=list(compare), success=list(success), failure=list(failure)))

    @staticmethod
    def op_size(op: Any) -> int:
        """The encoded size of an operation, in bytes (etcd limits a request's size)."""
        return int(op.ByteSize())

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
                raise _StreamEnded("the keep-alive stream closed without an answer")
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

    def status(self, endpoint: str | None = None) -> MemberStatus:
        """Maintenance status of one endpoint of ours (default: the current one, failing
        over like any request)."""
        request = etcdrpc.StatusRequest()
        if endpoint is None:
            answered: list[str] = []

            def method(e: _Endpoint) -> Any:
                answered.append(e.url)
                return e.maintenance.Status

            response = self.call(method, request, require_leader=False)
            return MemberStatus.from_pb(answered[-1], response)
        target = next((e for e in self._endpoints if e.url == endpoint), None)
        if target is None:
            raise ConfigError(f"{endpoint} is not one of this client's etcd endpoints")
        try:
            response = self._send(target, lambda e: e.maintenance.Status, request, None)
        except grpc.RpcError as exc:
            raise translate(exc, target.url) from exc
        return MemberStatus.from_pb(target.url, response)

    def members(self) -> list[ClusterMember]:
        response = self.call(lambda e: e.cluster.MemberList, etcdrpc.MemberListRequest())
        return [ClusterMember.from_pb(member) for member in response.members]

    def alarms(self) -> list[Alarm]:
        """The alarms raised on any member (none: an empty list)."""
        request = etcdrpc.AlarmRequest(action=etcdrpc.AlarmRequest.GET, memberID=0,
                                       alarm=etcdrpc.NONE)
        response = self.call(lambda e: e.maintenance.Alarm, request, require_leader=False)
        return [Alarm.from_pb(alarm) for alarm in response.alarms if alarm.alarm != etcdrpc.NONE]

    def compact(self, revision: int, *, physical: bool = False) -> None:
        self.call(lambda e: e.kv.Compact,
                  etcdrpc.CompactionRequest(revision=revision, physical=physical))

    # -- watch ------------------------------------------------------------------------

    def watch_stream(self, prefix: str, start_revision: int,
                     *, prev_kv: bool = False) -> WatchStream:
        """Open one watch stream on a prefix; see :class:`coordinator.recipes.watch.PrefixWatch`."""
        for endpoint in self._order():
            stream = WatchStream(
                endpoint, prefix, start_revision, prev_kv=prev_kv,
                metadata=functools.partial(self._metadata, endpoint, _HAS_LEADER),
                on_stall=functools.partial(self._skip, endpoint))
            try:
                stream.open()
            except EtcdUnavailable:
                continue
            self._mark_good(endpoint)
            return stream
        raise EtcdUnavailable(f"no etcd endpoint of {', '.join(self.config.endpoints)} answered")

