"""A loopback TCP proxy that a test harness controls: one worker's road to one etcd member.

The chaos harness (``devtools.chaos``) and the hygiene tests put one ``Proxy`` between
each worker and each etcd member, so they can break that one worker's connection to
etcd without touching anybody else's:

``cut()``
    Close every open connection (both sides, at once) and refuse new ones: the listening
    socket is closed, so a reconnect gets ``ECONNREFUSED`` — what a worker sees when a
    firewall rejects it or its host's network goes down.
``restore()``
    Listen again on the same port; the worker's gRPC channels reconnect by themselves.
``stall()`` / ``unstall()``
    Keep every connection open but stop moving bytes (in either direction) — a silent
    partition: no FIN, no RST, just nothing. New connections are accepted and stall too.
``refuse(senders)`` / ``admit()``
    With a ``sender`` function, every connection is named by who opened it (read from
    the first bytes it sends, e.g. an HTTP header); ``refuse`` closes the connections of
    those senders and any new one they open, while everybody else's keep flowing: a
    link cut between two parties that both still reach everyone else
    (:mod:`devtools.peerlink` cuts etcd members apart this way).
``slow(delay)``
    Hold every chunk of bytes ``delay`` seconds before passing it on, in both directions
    (``slow(0)`` ends it): a congested or far-away link. A request and its answer take
    at least twice the delay, and bytes that arrive while a chunk waits follow in the
    next one, so a busy stream falls further behind rather than losing anything.

Plain threads and blocking sockets: one accept thread per proxy, two pump threads per
connection. Nothing here knows about gRPC or etcd; it moves bytes (and hands the first
ones of each connection to ``sender`` when given one).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Proxy", "ProxyGroup"]

log = logging.getLogger(__name__)

_BUFFER = 65536
#: how many of the latest bytes of a connection that has named nobody yet ``sender`` is
#: shown (an HTTP request's head is far shorter)
_HEAD_LIMIT = 16384


def _hard_close(sock: socket.socket) -> None:
    """Close ``sock`` with a reset rather than a graceful FIN, waking any thread that is
    blocked reading it (``close`` alone does not wake a blocked ``recv`` on Linux)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    upstream: socket.socket
    open_directions: int = 2
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: who opened the connection (``sender``'s answer); ``None`` or ``""`` while it has
    #: named nobody
    sender: str | None = None
    head: bytes = b""

    def close(self) -> None:
        _hard_close(self.client)
        _hard_close(self.upstream)


class Proxy:
    """Forward ``127.0.0.1:<port>`` to ``target`` (``host:port``) until told otherwise."""

    ACCEPT_POLL = 0.2
    CONNECT_TIMEOUT = 2.0

    def __init__(self, target: str, *, port: int = 0, name: str = "",
                 sender: Callable[[bytes], str | None] | None = None) -> None:
        host, _, target_port = target.rpartition(":")
        host = host.split("://", 1)[-1] or "127.0.0.1"
        self.target = (host, int(target_port))
        self.name = name or f"proxy->{target}"
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._listener: socket.socket | None = None
        self._cut = False
        self._closed = False
        self._flowing = threading.Event()
        self._flowing.set()
        #: seconds every chunk waits before it is passed on (see :meth:`slow`)
        self.delay = 0.0
        self.port = port
        self.accepted = 0
        self.cuts = 0
        self._threads: set[threading.Thread] = set()
        self._sender = sender
        self._refused: frozenset[str] = frozenset()

    # -- control ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> Proxy:
        self._listen()
        return self

    def cut(self) -> None:
        """Close every connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            self.cuts += 1
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            _hard_close(listener)
        for conn in connections:
            conn.close()

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        with self._lock:
            if not self._cut or self._closed:
                return
            self._cut = False
        self._listen()

    def stall(self) -> None:
        """Stop moving bytes on every connection (they stay open)."""
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

    def slow(self, delay: float) -> None:
        """Delay every chunk by ``delay`` seconds from now on (0: full speed again)."""
        self.delay = max(0.0, delay)

    def refuse(self, senders: set[str]) -> None:
        """From now on, close every connection opened by one of ``senders`` (needs a
        ``sender`` function); ``refuse(set())`` or :meth:`admit` lets them in again."""
        with self._lock:
            self._refused = frozenset(senders)
            doomed = {c for c in self._connections if c.sender in self._refused}
            self._connections -= doomed
        for conn in doomed:
            conn.close()

    def admit(self) -> None:
        self.refuse(set())

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def is_stalled(self) -> bool:
        return not self._flowing.is_set()

    def connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def threads(self) -> int:
        """Threads of this proxy still running (accept and pump threads)."""
        with self._lock:
            self._threads = {t for t in self._threads if t.is_alive()}
            return len(self._threads)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.cut()
        self._flowing.set()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    def _spawn(self, target: object, *args: object, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name,  # type: ignore[arg-type]
                                  daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                # the port is briefly unavailable after a cut; never take another one,
                # the worker only knows this address
                if self.port == 0 or time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.05)
        listener.listen(64)
        listener.settimeout(self.ACCEPT_POLL)
        self.port = listener.getsockname()[1]
        with self._lock:
            if self._cut or self._closed:
                listener.close()
                return
            self._listener = listener
        self._spawn(self._accept_loop, listener, name=f"{self.name} accept")

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by cut()
            client.settimeout(None)
            self._spawn(self._connect, client, name=f"{self.name} connect")

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=self.CONNECT_TIMEOUT)
        except OSError:
            _hard_close(client)  # the member is down: the client sees a reset
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(client, upstream)
        with self._lock:
            if self._cut or self._closed:
                conn.close()
                return
            self._connections.add(conn)
            self.accepted += 1
        self._spawn(self._pump, conn, client, upstream, name=f"{self.name} up")
        self._spawn(self._pump, conn, upstream, client, name=f"{self.name} down")

    def _pump(self, conn: _Connection, source: socket.socket, sink: socket.socket) -> None:
        clean = False
        try:
            while True:
                data = source.recv(_BUFFER)
                if not data:
                    break
                if source is conn.client and not self._admitted(conn, data):
                    return
                while not self._flowing.wait(0.2):
                    if self._cut or self._closed:
                        return
                if self.delay > 0:
                    time.sleep(self.delay)
                sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)  # pass the half-close on
            clean = True
        except OSError:
            pass
        finally:
            with conn.lock:
                conn.open_directions -= 1
                done = conn.open_directions <= 0
            # a reset in one direction ends both; a clean EOF waits for the other one
            if done or not clean or self._cut or self._closed:
                conn.close()
                with self._lock:
                    self._connections.discard(conn)


    def _admitted(self, conn: _Connection, data: bytes) -> bool:
        """Name the connection from the bytes it sent (``sender``); False when its sender
        is refused, so the bytes that named it are never passed on. A connection that
        has named nobody yet is asked about again with every chunk: an anonymous first
        request (a health probe) may be followed by a named one on the same connection."""
        if self._sender is not None and not conn.sender:
            conn.head = (conn.head + data)[-_HEAD_LIMIT:]
            named = self._sender(conn.head)
            if named:
                conn.sender, conn.head = named, b""
            elif named is not None:
                conn.sender = ""
        with self._lock:
            refused = bool(conn.sender) and conn.sender in self._refused
            if refused:
                self._connections.discard(conn)
        if refused:
            conn.close()
        return not refused


class ProxyGroup:
    """One worker's proxies, one per etcd member: cut or stall them together."""

    def __init__(self, targets: list[str], *, name: str = "") -> None:
        self.proxies = [Proxy(t, name=f"{name} -> {t}" if name else "") for t in targets]

    def start(self) -> ProxyGroup:
        for proxy in self.proxies:
            proxy.start()
        return self

    @property
    def endpoints(self) -> str:
        """The comma-separated URL list to give the worker as ``--etcd``."""
        return ",".join(p.url for p in self.proxies)

    def cut(self) -> None:
        for proxy in self.proxies:
            proxy.cut()

    def restore(self) -> None:
        for proxy in self.proxies:
            proxy.restore()

    def stall(self) -> None:
        for proxy in self.proxies:
            proxy.stall()

    def unstall(self) -> None:
        for proxy in self.proxies:
            proxy.unstall()

    def slow(self, delay: float) -> None:
        for proxy in self.proxies:
            proxy.slow(delay)

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
