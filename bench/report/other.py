"""A section for a results file no renderer knows: its machine, its top-level keys
and its plot, if there is one."""

from __future__ import annotations

from typing import Any

from bench.report.parts import Context, Section, machine_lines


def render(name: str, d: dict[str, Any], ctx: Context) -> Section:
    s = Section(name, f"Other results: {name}")
    s.lines += machine_lines(d)
    s.lines += [f"`bench.report` has no renderer for `{name}.json`; top-level keys: "
                + ", ".join(f"`{k}`" for k in d if k != "machine") + ".", ""]
    s.lines += ctx.image(name, name)
    return s
