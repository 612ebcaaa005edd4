"""Connections kept open across ticks and shared by a worker's cities.

Ticks run on several threads at once; each takes a connection for the length of one
read and gives it back. A connection that failed during a read is closed, not given
back, and so are the idle ones opened before it (after a database restart or a
keep-alive timeout they are as dead as the one that failed), so the next read opens a
fresh one. Only idle connections are capped: at most one per tick thread is in use.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Pool"]

C = TypeVar("C")


class Pool(Generic[C]):
    def __init__(self, open_: Callable[[], C], close: Callable[[C], None], *,
                 usable: Callable[[C], bool] = lambda _c: True, max_idle: int = 8) -> None:
        self._open = open_
        self._close = close
        self._usable = usable
        self._max_idle = max_idle
        self._idle: list[C] = []
        self._lock = threading.Lock()
        #: connections opened over the pool's life (to show reuse)
        self.opened = 0

    @contextlib.contextmanager
    def connection(self) -> Iterator[tuple[C, bool]]:
        """A connection and whether it was used before (a reused one may have been
        closed by the other end while idle: worth one retry on a fresh one)."""
        conn, reused = self._take()
        try:
            yield conn, reused
        except BaseException:
            self._close_quietly(conn)
            self.clear()
            raise
        self._give_back(conn)

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close_quietly(conn)

    def _take(self) -> tuple[C, bool]:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if self._usable(conn):
                return conn, True
            self._close_quietly(conn)
        conn = self._open()
        with self._lock:
            self.opened += 1
        return conn, False

    def _give_back(self, conn: C) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle and self._usable(conn):
                self._idle.append(conn)
                return
        self._close_quietly(conn)

    def _close_quietly(self, conn: C) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection may complain
            self._close(conn)
