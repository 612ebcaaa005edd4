"""Processes a benchmark starts beside etcd: ``dispatch-worker``s, the sleeper that
measures the machine's scheduling delay, and what a process tree costs in CPU and RSS."""

# psutil is the `bench` extra, absent (and without stubs) in a plain test environment.
# mypy: disable-error-code="import-not-found, import-untyped"

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import ROOT
from bench.stats import percentile


class Workers:
    """``dispatch-worker`` subprocesses (``python -m coordinator.cli.worker``), each in its
    own process group so a kill reaches its solver processes too."""

    def __init__(self, endpoints: str, namespace: str, logs: Path, *,
                 extra: Sequence[str] = ()) -> None:
        self.endpoints = endpoints
        self.namespace = namespace
        self.logs = logs
        self.extra = list(extra)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, worker_id: str, *args: str) -> subprocess.Popen[bytes]:
        out = open(self.logs / f"{worker_id}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli.worker", "--etcd", self.endpoints,
             "--namespace", self.namespace, "--worker-id", worker_id,
             "--log-level", "warning", *self.extra, *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
        out.close()
        self.procs[worker_id] = proc
        self.started_at[worker_id] = time.time()
        return proc

    def alive(self) -> list[str]:
        return [w for w, p in self.procs.items() if p.poll() is None]

    def kill(self, worker_id: str) -> float:
        """SIGKILL the worker and its solver processes; returns the time of the kill."""
        proc = self.procs[worker_id]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        killed = time.time()
        proc.wait()
        return killed

    def terminate(self, worker_id: str) -> float:
        proc = self.procs[worker_id]
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        return time.time()

    def wait(self, worker_id: str, timeout: float = 30.0) -> None:
        proc = self.procs[worker_id]
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(worker_id)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


_PROBE = """
import sys, time
interval, seconds = float(sys.argv[1]), float(sys.argv[2])
late = []
end = time.monotonic() + seconds
due = time.monotonic() + interval
while due < end:
    time.sleep(max(0.0, due - time.monotonic()))
    late.append(time.monotonic() - due)
    due += interval
print(" ".join(f"{x:.6f}" for x in late))
"""


class JitterProbe:
    """The baseline for lateness, measured in the same run: a tiny Python process that
    only sleeps to a 10 ms grid and records how late it wakes up. On a machine shared
    with other work, this is the scheduling delay any process sees."""

    def __init__(self, seconds: float, interval: float = 0.01) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _PROBE, str(interval),
                                      str(seconds)], stdout=subprocess.PIPE, text=True)

    def result(self) -> dict[str, float]:
        out, _ = self.proc.communicate(timeout=600)
        late = [float(x) for x in out.split()]
        return {"n": len(late), "p50_ms": percentile(late, 50) * 1e3,
                "p99_ms": percentile(late, 99) * 1e3,
                "max_ms": (max(late) if late else math.nan) * 1e3}


def require_psutil() -> None:
    """Exit at once, saying what to run, when psutil (the ``bench`` extra) is missing: a
    benchmark would otherwise find out at its first measurement, after its warm-up."""
    if importlib.util.find_spec("psutil") is None:
        sys.exit("psutil is missing: run the benchmark through make (`make bench`, "
                 "`make bench-steady`), or install the extra: pip install -e '.[bench]'")


def process_tree_usage(pid: int) -> tuple[float, float, float, float]:
    """(CPU seconds of the process, CPU seconds of it and its children, RSS of the process
    in MiB, RSS of it and its children in MiB); NaN and 0 if it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        cpu = sum(proc.cpu_times()[:2])
        rss = proc.memory_info().rss
        total_cpu, total_rss = cpu, rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total_cpu += sum(child.cpu_times()[:2])
                total_rss += child.memory_info().rss
    except psutil.Error:
        return math.nan, math.nan, math.nan, 0
    return cpu, total_cpu, rss / 2**20, total_rss / 2**20
