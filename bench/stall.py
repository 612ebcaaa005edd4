"""Stalls for the benchmarks: stop etcd or workers (SIGSTOP) past the lease TTL during
a run, and read from the run's samples how long on time took to come back.

A stall is measured against the machine as the same run found it: the mark is 99.5 %
on time, or the worst minute before the stall when the machine did no better.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from bench.output import log

__all__ = ["ON_TIME_TARGET", "Stall", "minute_and_seconds", "pooled", "recovery"]

ON_TIME_TARGET = 0.995


class Stall:
    """Stops processes (SIGSTOP) at ``at`` for ``seconds``, then lets them go on: etcd
    (a slow disk or a starved host stalls it so) or workers, for longer than the lease
    TTL, after which the ones stopped (every worker, when it is etcd) have lost their
    sessions. ``cancel`` before it struck calls it off."""

    def __init__(self, pids: dict[str, int], at: float, seconds: float) -> None:
        self.pids, self.at, self.seconds = pids, at, seconds
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._cancelled.wait(max(0.0, self.at - time.time())):
            return
        names = ", ".join(self.pids)
        log(f"  stopping {names} for {self.seconds:g}s")
        for pid in self.pids.values():
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(self.seconds)
        finally:
            for pid in self.pids.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        log(f"  {names} go on")

    def cancel(self) -> None:
        self._cancelled.set()
        self._thread.join()


def recovery(samples: list[dict[str, Any]], stall_minute: float,
             seconds: float) -> dict[str, Any]:
    """How the fleet came back from a stall: the seconds from its end to the start of
    the first minute of samples (pooled, sliding by one sample) on time at the target,
    or at the worst such minute before the stall where the machine itself did no
    better (NaN when none was); and on time pooled before the stall and from that point
    on (a fleet stuck overloaded, as once for eleven minutes at 80-88 %, shows there)."""
    resumed = stall_minute + seconds / 60
    before = [s for s in samples if s["minute"] <= stall_minute]
    after = [s for s in samples if s["minute"] > resumed]
    baseline = min((on_time for _, on_time in _minutes(before)), default=math.nan)
    target = min(ON_TIME_TARGET, baseline) if not math.isnan(baseline) else ON_TIME_TARGET
    back, since = math.nan, []
    for i, on_time in _minutes(after):
        if on_time >= target:
            start = after[i]["minute"] - after[i]["seconds"] / 60
            back, since = max(0.0, (start - resumed) * 60), after[i:]
            break
    return {"minute": stall_minute, "seconds": seconds, "recovered_after_s": back,
            "target": target, "worst_minute_before": baseline,
            "on_time_before": pooled(before), "on_time_after_recovery": pooled(since),
            "worst_sample_after_recovery": min((s["on_time_share"] for s in since),
                                               default=math.nan)}


def pooled(rows: list[dict[str, Any]]) -> float:
    gaps = sum(r["gaps"] for r in rows)
    return sum(r["on_time"] for r in rows) / gaps if gaps else math.nan


def _minutes(rows: list[dict[str, Any]]) -> Iterator[tuple[int, float]]:
    """(index, on time pooled) of each whole minute of ``rows`` starting at a sample."""
    for i, row in enumerate(rows):
        start, slack = row["minute"] - row["seconds"] / 60, row["seconds"] / 120
        window = [s for s in rows[i:] if s["minute"] <= start + 1.0 + slack]
        on_time = pooled(window)
        if window[-1]["minute"] >= start + 1.0 - slack and not math.isnan(on_time):
            yield i, on_time


def minute_and_seconds(text: str) -> tuple[float, float]:
    """``MINUTE:SECONDS`` as given to ``--stall-etcd``, for argparse."""
    minute, _, seconds = text.partition(":")
    try:
        return float(minute), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected MINUTE:SECONDS, e.g. 8:12") from None
