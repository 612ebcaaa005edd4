"""``http``: a city's state as ``StateSnapshot`` JSON, fetched with a GET each tick.

The URL is a template with ``{city}`` (replaced by the city's name, percent-encoded):
the city's ``url`` parameter, else the worker's ``--state-http-url``
(``DISPATCH_STATE_HTTP_URL``). A URL in a city's settings (etcd) may not carry a
password; credentials belong in the worker's URL. The response must be 200 with the
``StateSnapshot`` message's JSON mapping (README, "State sources"), which is checked
field by field like every other snapshot.

Connections are kept alive and reused across ticks and cities (a pool per host); each
request is bounded by the tick's time budget (every connect and read, as socket
timeouts, and the whole request cut by a watchdog soon after it). When the state was
observed: the snapshot's ``takenAt``, else the response's ``Last-Modified`` header, else
the time the response arrived.

http.client's and the socket's errors stop here: unreachable or too slow becomes
``StateUnavailable``, a bad status or body ``StateError``.
"""

from __future__ import annotations

import http.client
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from coordinator.codec import decode
from coordinator.errors import StateError, StateUnavailable
from coordinator.settings import CityConfig
from coordinator.sources.contract import SourceContext, StateSource
from coordinator.sources.pool import Pool
from coordinator.sources.snapshot import state_from_snapshot
from coordinator.sources.watchdog import Watchdog, cut_after, shutdown_socket
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["HttpSource"]

#: a larger body is refused rather than read into memory
MAX_BODY = 256 * 1024 * 1024

_Origin = tuple[str, str, int]
_Connection = http.client.HTTPConnection
#: how a kept-alive connection the server closed while idle fails on its next use
_CLOSED_WHILE_IDLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HttpSource(StateSource):
    description = "a StateSnapshot JSON fetched with GET from a URL template with {city}"

    def __init__(self, context: SourceContext) -> None:
        super().__init__(context)
        self._pools: dict[_Origin, Pool[_Connection]] = {}
        self._lock = threading.Lock()
        self._watchdog = Watchdog()

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.clear()

    @property
    def opened(self) -> int:
        """Connections opened so far (kept alive and reused across ticks and cities)."""
        with self._lock:
            return sum(pool.opened for pool in self._pools.values())

    def load(self, config: CityConfig, now: float) -> CityState:
        url = self._url(config)
        budget = self.context.options.time_budget(config)
        status, reason, headers, body, received = self._get(url, budget)
        if status != 200:
            raise StateError(f"GET {url}: HTTP {status} {reason}".rstrip())
        try:
            snapshot = decode(pb.StateSnapshot, body, what=f"state from {url}")
        except ValueError as exc:
            raise StateError(str(exc)) from exc
        taken_at = snapshot.taken_at.ToNanoseconds() / 1e9 if snapshot.HasField("taken_at") \
            else _last_modified(headers.get("last-modified")) or received
        return state_from_snapshot(config.city, snapshot, taken_at).freeze()

    def _url(self, config: CityConfig) -> str:
        template = config.params.get("url")
        if template is None:
            template = self.context.options.http_url
            if not template:
                raise StateError("the http state source needs the city's url parameter or "
                                 "the worker's --state-http-url (DISPATCH_STATE_HTTP_URL)")
        elif not isinstance(template, str) or urlsplit(template).password is not None:
            raise StateError("parameter url must be a URL template without a password "
                             "(credentials belong in the worker's --state-http-url)")
        try:
            url = template.replace("{city}", quote(config.city, safe=""))
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a bad port
        except ValueError as exc:
            raise StateError(f"bad state URL {template!r}: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StateError(f"bad state URL {template!r}: want http(s)://host/...{{city}}")
        return url

    # -- the boundary -------------------------------------------------------------------

    def _get(self, url: str, budget: float) -> tuple[int, str, dict[str, str], bytes, float]:
        """Status, reason, headers (lower-case names), body and arrival time of a GET.
        A kept-alive connection the server closed while idle is retried once."""
        parts = urlsplit(url)
        pool = self._pool((parts.scheme, parts.hostname or "", parts.port or 0))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Accept": "application/json", "User-Agent": "dispatch-worker"}
        if parts.username is not None:
            headers["Authorization"] = _basic(unquote(parts.username),
                                              unquote(parts.password or ""))
        for attempt in (1, 2):
            reused, alarm = False, None
            try:
                with pool.connection() as (conn, reused), \
                        self._watchdog.guard(cut_after(budget), lambda: _cut(conn)) as alarm:
                    conn.timeout = budget
                    if conn.sock is not None:
                        conn.sock.settimeout(budget)
                    conn.request("GET", target, headers=headers)
                    response = conn.getresponse()
                    length = response.getheader("content-length")
                    if length is not None and length.isdigit() and int(length) > MAX_BODY:
                        raise StateError(f"GET {url}: a body of {length} bytes is larger "
                                         f"than {MAX_BODY}")
                    body = response.read(MAX_BODY + 1)
                    if len(body) > MAX_BODY or response.will_close:
                        conn.close()
                if alarm.fired:  # the cut socket may have ended the body early, unseen
                    conn.close()
                    raise TimeoutError
                return (response.status, response.reason,
                        {k.lower(): v for k, v in response.getheaders()}, body, time.time())
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, TimeoutError) or (alarm is not None and alarm.fired):
                    raise StateUnavailable(f"GET {url}: no answer within the tick's "
                                           f"{budget:.2f}s time budget") from exc
                if attempt == 1 and reused and isinstance(exc, _CLOSED_WHILE_IDLE):
                    continue
                raise StateUnavailable(f"GET {url}: {_why(exc)}") from exc
        raise AssertionError("unreachable")

    def _pool(self, origin: _Origin) -> Pool[_Connection]:
        with self._lock:
            pool = self._pools.get(origin)
            if pool is None:
                scheme, host, port = origin
                kind = http.client.HTTPSConnection if scheme == "https" \
                    else http.client.HTTPConnection
                pool = Pool(lambda: kind(host, port or None), lambda c: c.close(),
                            usable=lambda c: c.sock is not None)
                self._pools[origin] = pool
            return pool


def _cut(conn: _Connection) -> None:
    if conn.sock is not None:
        shutdown_socket(conn.sock.fileno())


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _basic(user: str, password: str) -> str:
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _last_modified(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
