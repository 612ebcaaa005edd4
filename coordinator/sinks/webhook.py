"""The ``webhook`` sink: each accepted decision POSTed to an HTTP(S) receiver.

The receiver keeps the ordering rule itself: *apply only if Dispatch-Revision is greater
than the revision you hold for Dispatch-City, else answer 409*. Every request carries
the decision's canonical JSON (:func:`coordinator.codec.encode`) and the headers
``Dispatch-City``, ``Dispatch-Revision``, ``Dispatch-Token`` and ``Dispatch-Namespace``.
A 2xx answer means applied, 409 means refused as not newer; anything else, or no
answer, is a :class:`~coordinator.errors.SinkError` and the relay tries again.

Unlike a database, a receiver cannot take a batch atomically: a batch is applied one
POST at a time, up to the first failure, and the relay then repeats the whole batch.
The receiver's rule makes the repeat harmless (the decisions it already holds get 409).

``GET <url>`` answered with ``200 {"cursor": N}`` tells a starting relay where the
receiver stands (the highest revision it answered 2xx or 409 to). A receiver that does
not implement it (404, 405, 501, ...) reads as cursor 0: the relay then starts from
etcd's oldest retained revision and the receiver 409s what it already holds.

Only the standard library: one kept-alive ``http.client`` connection, re-opened when the
receiver drops it; ``https`` verifies the certificate against the system's CAs (or
``SSL_CERT_FILE``); ``user:password@`` in the URL is sent as HTTP basic authentication.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.parse
from collections.abc import Sequence

from coordinator import __version__
from coordinator.codec import encode
from coordinator.errors import ConfigError, SinkError, SinkUnavailable
from coordinator.sinks.contract import Applied, Delivery, Sink

__all__ = ["WebhookSink"]

#: answers that mean "the receiver is down or busy right now" rather than "it refuses"
_UNAVAILABLE = {408, 429, 502, 503, 504}


class WebhookSink(Sink):
    """POST each decision to ``url``; ``timeout`` seconds per request (connect + answer)."""

    name = "webhook"

    def __init__(self, url: str, *, namespace: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"webhook URL {url!r}: expected http:// or https://")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"webhook URL {url!r}: the port is not a number in "
                              "0..65535") from exc
        if not parts.hostname:
            raise ConfigError(f"webhook URL {url!r}: no host")
        if timeout <= 0:
            raise ConfigError(f"webhook timeout must be positive (got {timeout})")
        self.namespace = namespace
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._timeout = timeout
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        netloc += f":{port}" if port is not None else ""
        #: the URL as error messages show it: without credentials or query string
        self.where = f"{parts.scheme}://{netloc}{parts.path or '/'}"
        self._headers = {"User-Agent": f"dispatch-relay/{__version__}",
                         "Dispatch-Namespace": namespace}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._connection: http.client.HTTPConnection | None = None
        self._used = False  # whether the open connection has served a request
        self._high = 0  # the highest revision answered 2xx or 409 (or the receiver's)
        self._synced = False  # whether the receiver's cursor has been asked for

    def init_schema(self) -> None:
        """Nothing to create: the receiver owns its storage."""

    def cursor(self) -> int:
        status, body = self._request("GET", None, {"Accept": "application/json"})
        if status in _UNAVAILABLE or (status >= 500 and status != 501):
            raise SinkUnavailable(f"webhook {self.where} answered {status} to GET "
                                  f"(its cursor){_excerpt(body)}")
        self._synced = True
        if status != 200:
            # no cursor support: 0 (etcd's oldest revision) unless this sink delivered some
            return self._high
        try:
            value = json.loads(body)["cursor"]
            cursor = int(value)
        except (ValueError, KeyError, TypeError) as exc:
            raise SinkError(f"webhook {self.where} answered GET with 200 but not "
                            f'{{"cursor": N}}{_excerpt(body)}') from exc
        if cursor < 0 or isinstance(value, bool | float):
            raise SinkError(f"webhook {self.where}: cursor {value!r} is not a revision")
        self._high = max(self._high, cursor)
        self._synced = True
        return cursor

    def apply(self, batch: Sequence[Delivery]) -> Applied:
        """POST the batch in its order (the relay's: by revision), stopping at the first
        failure (raised).

        The cursor returned is the receiver's (asked once per sink object) raised by the
        revisions answered since."""
        if not self._synced:
            self.cursor()
        applied = refused = 0
        for delivery in batch:
            if self._post(delivery):
                applied += 1
            else:
                refused += 1
            self._high = max(self._high, delivery.revision)
        return Applied(applied=applied, refused=refused, cursor=self._high)

    def close(self) -> None:
        self._drop()

    # -- one request ---------------------------------------------------------------------

    def _post(self, delivery: Delivery) -> bool:
        """True when the receiver applied the decision, False when it refused it (409)."""
        headers = {"Content-Type": "application/json",
                   "Dispatch-City": delivery.city,
                   "Dispatch-Revision": str(delivery.revision),
                   "Dispatch-Token": str(delivery.token)}
        status, body = self._request("POST", encode(delivery.decision), headers)
        if 200 <= status < 300:
            return True
        if status == 409:
            return False
        what = (f"webhook {self.where} answered {status} to the decision of {delivery.city} "
                f"at revision {delivery.revision}{_excerpt(body)}")
        if status in _UNAVAILABLE or status >= 500:
            raise SinkUnavailable(what)
        raise SinkError(what)

    def _request(self, method: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one request and read its whole answer (so the connection can be reused).

        A kept-alive connection the receiver closed while idle fails on its next use; that
        request is sent once more on a fresh connection (a repeated POST is harmless:
        the receiver answers 409).
        """
        for attempt in (1, 2):
            reused = self._used
            connection = self._connect()
            try:
                connection.request(method, self._target, body=body,
                                   headers={**self._headers, **headers})
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if reused and attempt == 1 and not isinstance(exc, TimeoutError):
                    continue
                raise SinkUnavailable(f"webhook {self.where}: {_reason(exc, self._timeout)}"
                                      ) from exc
            self._used = True
            if response.will_close:
                self._drop()
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._https:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout,
                    context=ssl.create_default_context())
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout)
            self._used = False
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._used = False


def _reason(exc: BaseException, timeout: float) -> str:
    """A connection failure in a few words."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the receiver closed the connection without answering"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0]


def _excerpt(body: bytes) -> str:
    """The start of an answer's body, for an error message (empty for none)."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    line = text.splitlines()[0]
    return f": {line[:200]}"
