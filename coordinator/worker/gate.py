"""One tick computes at a time: a lock around the short, CPU-bound steps of a tick.

Why a lock, when the GIL already lets only one thread run Python? Because numpy
*releases* the GIL around every operation on 500 or more elements. With the worker's
tick threads all ready to run, each release hands the GIL to another thread and each
re-acquisition waits for it back: two context switches per array operation, hundreds
per tick. With the threads taking turns through one lock, the others wait *once*, on
the lock, instead of at every numpy call. That is what a worker's ticks do whenever
several are due at once: in bursts, and in a worker near its CPU limit
(docs/worker.md has the measurements).

So a tick holds the gate across its compute (simulated state, an inline solve,
validation, cost, the decision message). What may block or take long stays outside:
reading state over the network, solves sent to a solver process or a solve thread, the
commit, and the steps of large cities, whose array operations are long enough for
releasing the GIL to pay (they can run on the other core).

A tick never waits more than :attr:`ComputeGate.wait` for the gate. Past that it
computes alongside whoever holds it (``bypassed`` counts these): a holder that is stuck
(an inline solver that broke its promise to be quick) costs the others that delay,
never their ticks.

A *group* of quick cities (``TickPipeline.tick_group``) holds the gate across all its
cities' compute, and another group waits for it patiently: for as long as the holder
has held the gate for less than :attr:`ComputeGate.patience`. Groups then compute one
at a time while one's commit overlaps the next one's compute.
"""

from __future__ import annotations

import threading
import time

__all__ = ["GATED_MAX_PAIRS", "ComputeGate"]

#: Cities with at most this many order × courier pairs validate, cost and compose their
#: decision inside the gate (100 × 100: well under a millisecond of work).
GATED_MAX_PAIRS = 10_000


class ComputeGate:
    def __init__(self, wait: float = 0.05, patience: float = 0.5) -> None:
        self.wait = wait
        self.patience = patience
        self._lock = threading.Lock()
        #: when the holder took the gate (time.monotonic())
        self._since = 0.0
        #: times a tick gave up waiting and computed without the gate
        self.bypassed = 0
        self._nothing = _Held(None, 0.0)

    def held(self, when: bool = True, *, patient: bool = False) -> _Held:
        """Hold the gate for the ``with`` block (if ``when``; otherwise do nothing).
        ``patient``: wait for as long as the holder is not stuck (held it for less
        than ``patience``), not just ``wait``. A plain object, not a generator: a tick
        enters it twice, and a generator-based context manager cost more than the lock."""
        if not when:
            return self._nothing
        return _Held(self, self.patience if patient else self.wait)


class _Held:
    __slots__ = ("_acquired", "_gate", "_patience")

    def __init__(self, gate: ComputeGate | None, patience: float) -> None:
        self._gate = gate
        self._patience = patience
        self._acquired = False

    def __enter__(self) -> None:
        gate = self._gate
        if gate is None:
            return
        while True:
            if gate._lock.acquire(timeout=gate.wait):
                self._acquired = True
                gate._since = time.monotonic()
                return
            # Still held: by a stuck holder, or by a busy one (a new holder each time
            # we look is progress, and restarts its clock)
            if time.monotonic() - gate._since >= self._patience:
                gate.bypassed += 1
                return

    def __exit__(self, *exc: object) -> None:
        if self._acquired:
            self._acquired = False
            assert self._gate is not None
            self._gate._lock.release()
