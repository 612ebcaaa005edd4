"""A run's live output: timestamped event lines, kept in ``events.log`` too, and one
progress line that they scroll past (redrawn in place on a terminal, every 10 s else).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TextIO

__all__ = ["Console"]


class Console:
    """Thread-safe: the lanes, the monitor and the run itself all write here."""

    def __init__(self, out: TextIO, events: Path, *, progress: bool) -> None:
        self.out = out
        self.progress = progress
        #: the start of the faults (seconds since the epoch): event lines count from it
        self.started = 0.0
        self._lock = threading.Lock()
        self._status_line = ""
        self._last_progress_print = 0.0
        self._events = open(events, "a")  # noqa: SIM115

    def _write(self, text: str) -> None:
        with self._lock:
            if self.progress and self._status_line:
                self.out.write("\r\033[K" + text + "\n" + self._status_line)
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def emit(self, message: str) -> None:
        elapsed = time.time() - self.started if self.started else 0.0
        line = f"{elapsed:7.1f}s  {message}"
        self._events.write(f"{time.time():.3f} {message}\n")
        self._events.flush()
        self._write(line)

    def status(self, line: str) -> None:
        with self._lock:
            self._status_line = line
            if self.progress:
                self.out.write("\r\033[K" + line)
                self.out.flush()
                return
        now = time.monotonic()
        if now - self._last_progress_print >= 10.0:
            self._last_progress_print = now
            self._write(line)

    def end_status(self) -> None:
        with self._lock:
            if self.progress and self._status_line:
                self.out.write("\r\033[K")
                self.out.flush()
            self._status_line = ""

    def close(self) -> None:
        self._events.close()
