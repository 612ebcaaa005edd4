"""The parts of a page: a section per benchmark, the targets it checks, where the
page and its plots are, and the machine a result came from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.format import mapping, num, numbers


@dataclass
class Check:
    """A target from the issues and how a run did against it."""

    target: str
    measured: str
    met: bool | None
    note: str = ""


@dataclass
class Section:
    """One benchmark's part of the page: its heading, its lines, the targets it checked."""

    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)


@dataclass
class Context:
    """Where the page is written and where its plots are (links are relative to the page)."""

    out: Path
    images: Path

    def image(self, name: str, alt: str) -> list[str]:
        """The plot, linked relative to the page, if it exists."""
        path = self.images / f"{name}.png"
        if not path.is_file():
            return []
        link = Path(os.path.relpath(path, self.out.parent)).as_posix()
        return [f"![{alt}]({link})", ""]


def machine_lines(data: dict[str, Any]) -> list[str]:
    """Where and when a result was measured, as a bullet list."""
    m = mapping(data.get("machine"))
    items: list[str] = []
    run = []
    if m.get("date"):
        run.append(str(m["date"]))
    mode = data.get("mode")
    if mode == "quick":
        run.append("`--quick` mode (fewer trials, shorter windows than the full run)")
    elif mode:
        run.append(f"{mode} mode")
    if run:
        items.append("**Run:** " + ", ".join(run))
    cpu = m.get("cpu_model") or m.get("cpu")
    cores = num(m.get("cores"))
    hardware = [str(cpu)] if cpu else []
    if cores is not None:
        hardware.append(f"{cores:.0f} cores")
    if m.get("platform"):
        hardware.append(str(m["platform"]))
    if hardware:
        items.append("**Machine:** " + ", ".join(hardware))
    software = []
    if m.get("python"):
        software.append(f"Python {m['python']}")
    if m.get("etcd"):
        software.append(f"etcd {m['etcd']} (one member, loopback)")
    software += [f"{k} {v}" for k, v in mapping(m.get("versions")).items()]
    if software:
        items.append("**Software:** " + ", ".join(software))
    loads = numbers(m["load_average_at_start"]) \
        if isinstance(m.get("load_average_at_start"), list) else []
    one_minute = num(m.get("load_average_1m"))
    load = None
    if loads:
        load = " / ".join(f"{x:.2f}" for x in loads) \
            + (" (1, 5, 15 min)" if len(loads) == 3 else "")
        one_minute = loads[0]
    elif one_minute is not None:
        load = f"{one_minute:.2f} (1 min)"
    if load is not None:
        busy = one_minute is not None and cores is not None and one_minute > cores
        items.append("**Load average at start:** " + load + (
            f" — above the {cores:.0f} cores: other work competed for the CPU during this "
            "run" if busy else ""))
    c = mapping(m.get("code"))
    if c.get("commit"):
        line = f"**Code:** commit `{c['commit']}`"
        if c.get("subject"):
            line += f" ({c['subject']})"
        modified = [str(x) for x in c.get("modified") or [] if x]
        if modified:
            line += "; uncommitted changes to " + ", ".join(f"`{x}`" for x in modified)
        if c.get("note"):
            line += f"; note: {c['note']}"
        items.append(line)
    else:
        items.append("**Code:** commit not recorded")
    return [f"- {item}" for item in items] + [""]
