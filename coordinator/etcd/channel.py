"""Where etcd is, one gRPC channel per endpoint, and gRPC errors translated.

:func:`translate` is the only place a gRPC error becomes a :mod:`coordinator.errors`
exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    EtcdNoSpace,
    EtcdTimeout,
    EtcdUnavailable,
)

__all__ = ["EtcdConfig", "prefix_end", "translate"]


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


class _StreamEnded(grpc.RpcError):  # type: ignore[misc]
    """A streaming call that ended without its one answer: the member went away, so it
    reads as UNAVAILABLE and the request fails over like any other."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    """The status of a gRPC error; ``None`` for a bare ``RpcError`` that carries none.

    A member that gave up on a request when its context ran out (etcd 3.4, a member
    without a raft leader) answers UNKNOWN "context deadline exceeded": that is a
    timeout, and reads as one."""
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None
    if status == grpc.StatusCode.UNKNOWN and "context deadline exceeded" in _details(exc):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return status


def _details(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    return (details() if callable(details) else None) or str(exc)


def translate(exc: grpc.RpcError, endpoint: str) -> EtcdError:
    """Map a gRPC error from etcd onto our error hierarchy (the only place that does)."""
    code = _code(exc)
    details = _details(exc) or str(code)
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
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "space exceeded" in details:
        return EtcdNoSpace(f"{where} refuses writes: NOSPACE alarm, the database is over "
                           "its quota (--quota-backend-bytes); an operator must compact, "
                           "defragment and `etcdctl alarm disarm`")
    if code == grpc.StatusCode.INVALID_ARGUMENT and "auth" in details:
        return EtcdAuthError(f"{where} refused: {_first_line(details)}")
    return EtcdError(f"{where}: {code.name if code else 'error'}: {_first_line(details)}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text

