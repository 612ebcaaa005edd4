"""How ``dispatchctl`` shows things: the one table printer, JSON output, and the status
rows that ``status`` prints and every ``watch`` frame colours.

Pure formatting: nothing here reads etcd; the commands pass in what they read.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from coordinator.ops.overview import CityView, Overview, RelayView

__all__ = ["age", "colour", "print_json", "print_table", "relay_rows", "render_watch",
           "status_rows", "table_lines", "ttl"]


def table_lines(rows: list[list[str]]) -> list[str]:
    """``rows`` (the first is the header) as lines of left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def print_table(rows: list[list[str]]) -> None:
    for line in table_lines(rows):
        click.echo(line)


def print_json(value: Any) -> None:
    """What every ``--json`` option prints: ``value`` indented by two."""
    click.echo(json.dumps(value, indent=2))


def age(seconds: float | None) -> str:
    """A duration as a short figure: ``4.2s``, ``17m``, ``3.5h``; ``never`` for none."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def ttl(seconds: int) -> str:
    """A lease's time left (etcd says -1 for a lease that is gone)."""
    return "expired" if seconds < 0 else f"{seconds}s"


# -- the status table ---------------------------------------------------------------------


def status_rows(views: list[CityView]) -> list[list[str]]:
    """The ``status`` table, header first, one row per city in ``views``' order."""
    rows = [["CITY", "OWNER", "TOKEN", "QUEUED", "SOLVER", "LAST DECISION", "STATE", "LAST ERROR"]]
    for v in views:
        state = "disabled" if not v.enabled else (v.state or ("late" if v.late else "ok"))
        if v.enabled and v.late and state == "ok":
            state = "late"
        rows.append([v.city, v.owner or "-", str(v.token or "-"), str(len(v.standbys)),
                     v.solver or "?", age(v.decision_age), state, v.last_error[:80]])
    return rows


def relay_rows(views: list[RelayView]) -> list[list[str]]:
    """The relays table under ``status``: one row per relay, header first."""
    rows = [["SINK", "RELAY", "ACTIVE", "CURSOR", "LAG", "LAG AGE", "UPDATED", "LAST ERROR"]]
    for v in views:
        rows.append([v.sink, v.relay_id, "yes" if v.active else "standby", str(v.cursor),
                     str(v.lag_revisions), age(v.lag_seconds), age(v.updated_age),
                     v.last_error[:80]])
    return rows


def colour(view: CityView) -> str | None:
    """Failing (or unowned) cities red, late ones yellow, disabled ones dim."""
    if not view.enabled:
        return "bright_black"
    if view.settings_error or view.state == "failing" or view.last_error or not view.owner:
        return "red"
    if view.late:
        return "yellow"
    return None


def render_watch(overview: Overview, namespace: str, *, now: float | None = None) -> list[str]:
    """The lines of one ``dispatchctl watch`` frame, with ANSI colours (``click.style``);
    ``click.echo`` drops the colours when the output is not a terminal."""
    now = time.time() if now is None else now
    views = overview.cities
    late = sum(1 for v in views if colour(v) == "yellow")
    failing = sum(1 for v in views if colour(v) == "red")
    drained = len(set(overview.workers) & overview.drained)
    header = (f"{namespace}  revision {overview.revision}  "
              f"{time.strftime('%H:%M:%S', time.localtime(now))}  "
              f"workers {len(overview.workers)}"
              + (f" ({drained} drained)" if drained else "")
              + f"  cities {len(views)}")
    summary = []
    if late:
        summary.append(click.style(f"{late} late", fg="yellow"))
    if failing:
        summary.append(click.style(f"{failing} failing or unowned", fg="red"))
    lines = [click.style(header, bold=True) + ("  " + ", ".join(summary) if summary else "")]
    if not views:
        lines.append(f"no cities under {namespace} (add one with `dispatchctl city add`)")
        return lines
    table = table_lines(status_rows(views))
    lines.append(click.style(table[0], bold=True))
    for view, line in zip(views, table[1:], strict=True):
        fg = colour(view)
        lines.append(click.style(line, fg=fg) if fg else line)
    return lines
