"""The machine and the software a benchmark measured, recorded with every result."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import ROOT
from devtools.localetcd import ETCD


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def etcd_version() -> str:
    try:
        out = subprocess.run([ETCD, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"etcd Version:\s*(\S+)", out)
    return match.group(1) if match else out.strip().splitlines()[0]


def code_version() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (the work tree of a
    shared checkout can change while a benchmark runs: each worker process imports the
    code as it is when it starts)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()
             if line[3:].startswith(("coordinator/", "solvers/", "protos/"))]
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "subject": git("log", "-1", "--format=%s"), "modified": dirty}


def describe() -> dict[str, Any]:
    """The machine and the software measured, recorded with every result."""
    return {
        "code": code_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "etcd": etcd_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, ours or not) since
    boot, from ``/proc/stat``; 0 where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
