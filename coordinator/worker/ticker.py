"""Per-city ticks on a shared thread pool: on time, never overlapping, never piling up.

One scheduler thread keeps a heap of due times. When a city's tick is due and its
previous tick is still running, the tick is *skipped* (counted, not queued): a slow
solve must not turn into a backlog of stale decisions. Due times stay on the city's
period grid, so one late tick does not shift every later one.

A tick that overruns its period makes the city skip the ticks whose time passed while
it ran. A tick function may put its next tick off (a backoff after a failure) by
returning a delay in seconds, or ask for an extra attempt before the next tick on the
grid by returning :class:`Retry`. Either way the city comes back to its own grid
afterwards: cities retried together after an etcd outage would otherwise all fall into
step with the moment etcd came back.

Ticks are coalesced (``slack``), as the kernel coalesces timers: a tick runs at its due
time rounded up to a multiple of the city's *quantum*, never before it is due. Cities
due within the same quantum then run as one burst, while the tick threads are awake,
and their commits share etcd transactions; a busy worker spends less CPU per tick on
waking threads and on round trips. The quantum is the largest whole fraction of the
city's period not over ``slack`` (``period / ceil(period / slack)``), so a city's ticks
keep exactly their spacing whatever its period: a 50 ms city under a 100 ms slack still
ticks every 50 ms. A city's phase is put onto its quantum's grid when it is added.

Cities due at the same moment can also be *ticked together* (``tick_group``): the
ticker hands a tick thread a whole group of due cities that ``groupable`` vouches for
(cities whose ticks are quick and never block), and the tick function runs them one
after another and commits them in one round trip. A tick costs mostly thread wake-ups
and a round trip to etcd, not its own work (docs/worker.md): per group those are paid
once. Each city of a group is still its own tick: skipped, retried, retired and
rescheduled on its own grid exactly as if it had run alone.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["GroupFn", "Retry", "TickFn", "Ticker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retry:
    """A tick function's answer: try again in ``seconds``, if that comes before the
    city's next tick on its grid (otherwise that tick is the next attempt)."""

    seconds: float


TickResult: TypeAlias = float | Retry | None
TickFn = Callable[[str, float], TickResult]
#: ticks several (city, due) at once; one result per city, in order
GroupFn = Callable[[list[tuple[str, float]]], list[TickResult]]


@dataclass
class _Slot:
    period: float
    generation: int
    #: the city's coalescing grid: a whole fraction of its period, at most the slack
    quantum: float = 0.0
    ticks: int = 0
    skipped: int = 0
    #: set by :meth:`Ticker.retire`: the slot ends after its next tick, then this is set
    last: threading.Event | None = None
    #: after the first tick, move onto the grid ``align + k * period`` (monotonic)
    align: float | None = None
    #: a due time on the city's grid, kept while its ticks run off the grid (a tick
    #: asked for a retry or a backoff)
    grid: float | None = None


class Ticker:
    #: cities due together are ticked in groups of at most this many: one etcd
    #: transaction's worth (``CommitBatcher.MAX_ITEMS``). Not split further across the
    #: tick threads: their Python runs one at a time anyway, and splitting costs CPU in
    #: thread switches and contention for the GIL (docs/worker.md).
    GROUP_MAX = 100

    def __init__(self, tick: TickFn, *, max_workers: int = 8, slack: float = 0.0,
                 on_skip: Callable[[str], None] | None = None,
                 tick_group: GroupFn | None = None,
                 groupable: Callable[[str], bool] | None = None) -> None:
        """``tick_group`` and ``groupable``: cities for which ``groupable(city)`` is
        true (asked under the ticker's lock: it must be quick and must not call back)
        and that are due together are ticked by one call of ``tick_group``."""
        self._tick = tick
        self._slack = slack
        self._on_skip = on_skip
        self._tick_group = tick_group
        self._groupable = groupable if tick_group is not None else None
        #: ticks run in a group, and the groups they ran in
        self.grouped = 0
        self.groups = 0
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tick")
        self._slots: dict[str, _Slot] = {}
        # Keyed by city, not slot: a tick still running from an earlier add() must
        # finish before the city's next tick starts, whoever scheduled it.
        self._idle: dict[str, threading.Event] = {}
        #: (run at, sequence, city, generation, due): ``run at`` is ``due`` coalesced
        self._heap: list[tuple[float, int, str, int, float]] = []
        self._seq = itertools.count()
        self._generations = itertools.count(1)
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)
        self._thread.start()

    def add(self, city: str, period: float, *, first_in: float = 0.0,
            then_at_phase: float | None = None) -> None:
        """Start ticking ``city`` every ``period`` seconds, the first tick in ``first_in``.

        ``then_at_phase`` (seconds, wall clock modulo the period): after the first tick,
        tick at the wall-clock times ``≡ then_at_phase (mod period)`` instead of on the
        first tick's grid, at least a period after the first.

        With a ``slack``, the city's grid is put onto its quantum's grid: the first tick
        comes up to a quantum sooner than asked (never later), and the phase is rounded
        down likewise. The city then ticks exactly when due, and coalescing costs it
        nothing; a handed-over city's first tick is never later than one period after
        its last decision, and a first tick due now runs now.
        """
        with self._cond:
            now = time.monotonic()
            slot = _Slot(period=period, generation=next(self._generations),
                         quantum=self._quantum(period))
            if then_at_phase is not None:
                slot.align = _floored(now + (then_at_phase - time.time()) % period,
                                      slot.quantum)
            replaced = self._slots.get(city)
            if replaced is not None and replaced.last is not None:
                replaced.last.set()
            self._slots[city] = slot
            # The first tick is not coalesced: a city taken over from a dead worker is
            # due now, and waits for nothing (a later first tick is on the quantum's grid).
            first = max(now, _floored(now + first_in, slot.quantum))
            self._push(first, city, slot, run_at=first)

    def set_period(self, city: str, period: float) -> None:
        """Tick ``city`` every ``period`` from its next tick on. A new period may have a
        new quantum: the city then moves onto the new quantum's grid after its next
        tick, or every later tick would wait for the grid (spaced right, but late)."""
        with self._cond:
            slot = self._slots.get(city)
            if slot is None or slot.period == period:
                return
            slot.period = period
            quantum = self._quantum(period)
            if quantum != slot.quantum:
                slot.quantum = quantum
                queued = self._queued(city, slot)
                slot.align = _floored(queued[1] if queued else time.monotonic(), quantum)

    def remove(self, city: str) -> threading.Event | None:
        """Stop ticking ``city``; returns an event set once its tick in flight is done."""
        with self._cond:
            slot = self._slots.pop(city, None)
            self._cond.notify()
            idle = self._idle.get(city)
        if slot is None:
            return None
        if slot.last is not None and (idle is None or idle.is_set()):
            slot.last.set()  # retired, and its last tick will not run now
        if idle is None:
            idle = threading.Event()
            idle.set()
        return idle

    def retire(self, city: str, *, within: float) -> tuple[threading.Event, float] | None:
        """Stop ticking ``city`` for a handover, at the best moment for its successor.

        If the city's next tick is due within ``within`` seconds, that tick still runs
        and the city stops right after it; otherwise it stops now (after the tick in
        flight, if any). Returns an event set once the city is done here, and the
        monotonic time by which that is expected (``0`` for now), or ``None`` if the
        city was not ticking.

        Why: the successor keeps the city's rhythm, ticking one period after the last
        decision. Resigning just before a due tick would leave it less time to see the
        resignation and claim the city than that tick needs, and the gap would grow by
        the difference; a tick run first gives it a whole period.
        """
        with self._cond:
            slot = self._slots.get(city)
            if slot is None:
                return None
            idle = self._idle.get(city)
            running = idle is not None and not idle.is_set()
            queued = self._queued(city, slot)
            now = time.monotonic()
            if not running and queued is not None and queued[0] - now <= within:
                slot.last = threading.Event()
                return slot.last, queued[0]
        done = self.remove(city)
        return (done, 0.0) if done is not None else None

    def running(self, city: str) -> bool:
        with self._cond:
            idle = self._idle.get(city)
            return idle is not None and not idle.is_set()

    def cities(self) -> set[str]:
        with self._cond:
            return set(self._slots)

    def stats(self, city: str) -> tuple[int, int]:
        with self._cond:
            slot = self._slots.get(city)
            return (slot.ticks, slot.skipped) if slot else (0, 0)

    def stop(self, *, wait: bool = True) -> None:
        with self._cond:
            self._stopped = True
            for slot in self._slots.values():
                if slot.last is not None:
                    slot.last.set()
            self._slots.clear()
            self._cond.notify()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _push(self, due: float, city: str, slot: _Slot, *,
              run_at: float | None = None) -> None:
        run_at = _coalesced(due, slot.quantum) if run_at is None else run_at
        entry = (run_at, next(self._seq), city, slot.generation, due)
        heapq.heappush(self._heap, entry)
        # The scheduler sleeps until the earliest due time; it need not wake for a later
        # one. Waking it after every tick cost a thread switch per tick, and in a busy
        # worker every switch makes the running tick's Python slower (``coordinator.worker.gate``).
        if self._heap[0] is entry:
            self._cond.notify()

    def _queued(self, city: str, slot: _Slot) -> tuple[float, float] | None:
        """The city's queued tick as (run at, due), ``None`` if none is queued (called
        with the lock held; a scan of the heap, so not for every tick)."""
        return min(((at, due) for at, _, c, g, due in self._heap
                    if c == city and g == slot.generation), default=None)

    def _quantum(self, period: float) -> float:
        """The largest whole fraction of ``period`` not over the slack (0: no slack)."""
        if self._slack <= 0 or period <= 0:
            return 0.0
        return period / math.ceil(period / self._slack - 1e-9)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if self._heap[0][0] > now:
                    self._cond.wait(self._heap[0][0] - now)
                    continue
                group: list[tuple[str, _Slot, float, threading.Event]] = []
                while self._heap and self._heap[0][0] <= now:
                    _, _, city, generation, due = heapq.heappop(self._heap)
                    started = self._start(city, generation, due, now)
                    if started is None:
                        continue
                    if self._groupable is not None and self._groupable(city):
                        group.append(started)
                    else:
                        self._pool.submit(self._run_tick, *started)
                self._submit_group(group)

    def _start(self, city: str, generation: int, due: float,
               now: float) -> tuple[str, _Slot, float, threading.Event] | None:
        """Mark a popped tick running; ``None`` if it is stale or must be skipped."""
        slot = self._slots.get(city)
        if slot is None or slot.generation != generation:
            return None
        idle = self._idle.get(city)
        if idle is None:
            idle = self._idle[city] = threading.Event()
            idle.set()
        if not idle.is_set():
            # Busy with a tick scheduled by an earlier add() of this city (each slot
            # has one entry queued or one tick running, never both).
            self._skip(city, slot, 1)
            self._push(self._next_due(due, slot.period, now), city, slot)
            return None
        idle.clear()
        return city, slot, due, idle

    def _submit_group(self, group: list[tuple[str, _Slot, float, threading.Event]]) -> None:
        if len(group) == 1:
            self._pool.submit(self._run_tick, *group[0])
            return
        for i in range(0, len(group), self.GROUP_MAX):
            self._pool.submit(self._run_group, group[i:i + self.GROUP_MAX])
            self.groups += 1
        self.grouped += len(group)

    def _skip(self, city: str, slot: _Slot, count: int) -> None:
        slot.skipped += count
        if self._on_skip is not None:
            for _ in range(count):
                self._on_skip(city)

    @staticmethod
    def _next_due(due: float, period: float, now: float) -> float:
        """The first time on the period grid after ``now``."""
        missed = max(0, int((now - due) // period))
        return due + (missed + 1) * period

    def _run_tick(self, city: str, slot: _Slot, due: float, idle: threading.Event) -> None:
        delay: float | Retry | None = None
        try:
            delay = self._tick(city, due)
        except Exception:
            log.exception("tick of %s raised", city)
        finally:
            with self._cond:
                self._done(city, slot, due, idle, delay)

    def _run_group(self, group: list[tuple[str, _Slot, float, threading.Event]]) -> None:
        assert self._tick_group is not None
        delays: list[TickResult] = [None] * len(group)
        try:
            answer = self._tick_group([(city, due) for city, _, due, _ in group])
            if len(answer) != len(group):
                raise ValueError(f"{len(answer)} results for {len(group)} cities")
            delays = answer
        except Exception:
            log.exception("tick of %s raised", ", ".join(city for city, *_ in group))
        finally:
            with self._cond:
                for (city, slot, due, idle), delay in zip(group, delays, strict=True):
                    self._done(city, slot, due, idle, delay)

    def _done(self, city: str, slot: _Slot, due: float, idle: threading.Event,
              delay: float | Retry | None) -> None:
        """A city's tick is over: schedule its next (called with the lock held)."""
        slot.ticks += 1
        idle.set()
        if slot.last is not None:
            if self._slots.get(city) is slot:
                del self._slots[city]
            slot.last.set()
        elif self._slots.get(city) is slot and not self._stopped:
            self._push(self._after(city, slot, due, delay), city, slot)

    def _after(self, city: str, slot: _Slot, due: float, delay: float | Retry | None) -> float:
        """When the tick after the one due at ``due`` is due."""
        now = time.monotonic()
        grid = slot.grid if slot.grid is not None else due  # a due time on the grid
        if isinstance(delay, Retry):
            if now + delay.seconds < self._next_due(grid, slot.period, now):
                slot.grid = grid
                return now + delay.seconds
            delay = None
        if delay is not None:
            slot.grid = grid
            return now + delay
        slot.grid = None
        next_due = self._next_due(grid, slot.period, now)
        overrun = round((next_due - grid) / slot.period) - 1
        if overrun > 0 and grid == due:  # not after retries: they ran instead of those
            self._skip(city, slot, overrun)
        if slot.align is not None:
            earliest = max(grid + slot.period, now)
            next_due = slot.align + slot.period * math.ceil(
                (earliest - slot.align) / slot.period)
            slot.align = None
        return next_due


def _floored(at: float, quantum: float) -> float:
    """The last multiple of ``quantum`` at or before ``at``."""
    return at if quantum <= 0 else math.floor(at / quantum) * quantum


def _coalesced(due: float, quantum: float) -> float:
    """When a tick due at ``due`` runs: on the next multiple of ``quantum``."""
    if quantum <= 0:
        return due
    # A due time on the grid, off by a rounding error of ``align + k * period``, must
    # not be put off to the next multiple: it runs at once.
    return max(due, math.ceil(due / quantum - 1e-6) * quantum)
