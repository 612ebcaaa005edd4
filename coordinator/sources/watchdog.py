"""Cutting a read that outlives its tick's time budget, from one shared thread.

A server-side timeout (``statement_timeout``) needs a server that still runs: a paused
database or a half-dead network path answers nothing, and a blocking client would hold
the tick's thread for as long as the kernel keeps the connection. A source arms the
watchdog around a read with a function that breaks the connection (shuts its socket
down); if the read is not over by its deadline, that function runs and the blocked call
fails at once. One thread serves every city's reads, rather than a timer thread each.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["Alarm", "Watchdog", "cut_after", "shutdown_socket"]


def cut_after(budget: float) -> float:
    """When a read given ``budget`` seconds is cut: a little after the budget, so that a
    server that still runs ends it first (``statement_timeout``, a socket timeout) with
    the more precise message."""
    return budget * 1.25 + 0.1

log = logging.getLogger(__name__)


class Alarm:
    """Whether a guarded read was cut for running past its deadline."""

    fired = False


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Alarm, Callable[[], None]]] = []
        self._armed: set[Alarm] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, seconds: float, cut: Callable[[], None]) -> Iterator[Alarm]:
        """Run ``cut`` if the block is still running ``seconds`` from now; the alarm
        yielded says whether it did (the block's error is then the deadline's)."""
        alarm = Alarm()
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._ids),
                                        alarm, cut))
            self._armed.add(alarm)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="source-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield alarm
        finally:
            with self._cond:  # waits for a cut in progress: the connection is still ours
                self._armed.discard(alarm)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed: its read ended in time
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, alarm, cut = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(alarm)
                alarm.fired = True
                # Under the lock, so the read cannot leave its guard (and its connection
                # be closed and its descriptor reused) while the cut is under way.
                try:
                    cut()
                except Exception:  # a cut must never stop the watchdog serving others
                    log.exception("cutting an overdue state read failed")


def shutdown_socket(fileno: int) -> None:
    """Shut a connected socket down for both directions: a read blocked on it returns
    at once with an error, and its owner sees a broken connection."""
    import socket

    with contextlib.suppress(OSError):  # already closed: nothing left to cut
        sock = socket.socket(fileno=fileno)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the descriptor stays its owner's to close
