"""A process the harness starts, stops and breaks again and again under one name.

:class:`ProcessSlot` runs its command (``argv()``, given by a subclass: a worker in
``fleet``, a relay in ``sink``) in a session of its own, appending to one log that marks
every start, and sends it the signals the faults need: ``SIGKILL``, ``SIGTERM`` with a
deadline, ``SIGSTOP``/``SIGCONT``; ``close`` takes its whole process group down for good.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ProcessSlot"]


@dataclass(kw_only=True)
class ProcessSlot:
    """One restartable process; ``lock`` is held while it is being started."""

    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    #: the harness stopped it on purpose and will start it again
    expected_down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        """What the harness calls it (a worker id, a relay id)."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The command line of the process."""
        raise NotImplementedError

    def start(self) -> None:
        with self.lock:
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"==== chaos: start #{self.starts} at {time.time():.3f}\n".encode())
                log.flush()
                self.process = subprocess.Popen(
                    self.argv(), stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self.paused = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def crashed(self) -> bool:
        """It exited although nobody stopped it."""
        with self.lock:
            return not self.expected_down and self.process is not None \
                and self.process.poll() is not None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """kill -9 (the process only: children of its own notice and exit)."""
        self.resume()
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def terminate(self, timeout: float) -> bool:
        """SIGTERM and wait for a graceful exit; kill -9 after ``timeout``. True if it
        left by itself."""
        self.resume()
        self.signal(signal.SIGTERM)
        if self.process is None:
            return True
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def close(self) -> None:
        """Stop the whole process group for good."""
        if self.process is None:
            return
        self.resume()
        if self.alive():
            self.terminate(15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
