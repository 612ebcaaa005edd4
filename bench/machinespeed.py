"""The machine's own speed beside a long benchmark: a baseline for "was it us?".

    python -m bench.machinespeed     # the probe itself: one line per 100 ms, until killed

A small child process at real-time priority (``SCHED_FIFO``, where the system allows it;
root does) wakes every 10 ms and, every tenth time, runs a fixed unit of pure-Python
work. Every 100 ms it reports:

* the unit's CPU time (its own clock): what the same instructions cost now. More means
  the machine itself ran slower (other tenants of the host, a busy sibling hyperthread,
  a lower clock);
* the longest wake-up delay of its 10 ms sleeps. At real-time priority no process of
  ours can keep it waiting more than a moment, so a long delay means the machine stopped
  running us all (a virtual CPU not scheduled by its host): a *stall*;
* how far the wall clock moved against the monotonic one (decisions are stamped with
  wall-clock time, so a clock step would look like a late tick).

:class:`SpeedProbe` adds, from ``/proc/stat``, the share of the machine's CPU time its
host gave to others (*steal*): time no process of ours could run, however idle the
guest looked.

``bench.steady`` samples them beside its on-time figures, so that a dip can be told
apart from a fault of ours. The probe costs about 1 % of a core.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

__all__ = ["SpeedProbe"]

SLEEP = 0.01
UNIT_EVERY = 10
UNIT_LOOPS = 20_000


def _unit() -> int:
    total = 0
    for i in range(UNIT_LOOPS):
        total += i * i % 7
    return total


def _realtime() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        return False
    return True


def cpu_times() -> tuple[int, int]:
    """The machine's stolen and total CPU time so far, in clock ticks (``/proc/stat``'s
    first line; ``(0, 0)`` where there is none)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal guest guest_nice; the guest times
    # are already counted in user and nice
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def main() -> int:
    print(f"realtime {int(_realtime())}", flush=True)
    offset = time.time() - time.monotonic()
    while True:
        cpu = time.thread_time()
        _unit()
        cpu = time.thread_time() - cpu
        stall = 0.0
        for _ in range(UNIT_EVERY):
            asked = time.monotonic()
            time.sleep(SLEEP)
            stall = max(stall, time.monotonic() - asked - SLEEP)
        step, offset = time.time() - time.monotonic() - offset, time.time() - time.monotonic()
        try:
            print(f"{cpu:.6f} {stall:.6f} {step:.6f}", flush=True)
        except BrokenPipeError:
            return 0


class SpeedProbe:
    """Runs the probe in a child process; :meth:`take` gives what it saw since the last
    call, in milliseconds: the unit's median CPU time, the longest stall, the number of
    stalls over ``STALL_MS``, the largest step of the wall clock; and the share of the
    machine's CPU time stolen by its host meanwhile."""

    STALL_MS = 50.0

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "bench.machinespeed"],
                                      stdout=subprocess.PIPE, text=True)
        self.realtime: bool | None = None
        self._lock = threading.Lock()
        self._cpu: list[float] = []
        self._stalls: list[float] = []
        self._step = 0.0
        self._cpu_times = cpu_times()
        self._thread = threading.Thread(target=self._read, name="speed probe", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith("realtime"):
                self.realtime = line.split()[1] == "1"
                continue
            cpu, stall, step = (float(x) for x in line.split())
            with self._lock:
                self._cpu.append(cpu)
                self._stalls.append(stall)
                self._step = max(self._step, abs(step))

    def take(self) -> dict[str, float]:
        with self._lock:
            cpu, stalls, step = self._cpu, self._stalls, self._step
            self._cpu, self._stalls, self._step = [], [], 0.0
        (stolen0, total0), (stolen, total) = self._cpu_times, cpu_times()
        self._cpu_times = stolen, total
        steal = (stolen - stolen0) / (total - total0) if total > total0 else float("nan")
        if not cpu:
            nan = float("nan")
            return {"unit_cpu_ms": nan, "stall_max_ms": nan, "stalls": 0,
                    "clock_step_ms": nan, "steal_share": steal}
        return {"unit_cpu_ms": 1e3 * statistics.median(cpu), "steal_share": steal,
                "stall_max_ms": 1e3 * max(stalls),
                "stalls": sum(1e3 * s > self.STALL_MS for s in stalls),
                "clock_step_ms": 1e3 * step}

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()


if __name__ == "__main__":
    sys.exit(main())
