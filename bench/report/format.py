"""Cells of the report's Markdown: values read from a results file without trusting
their shape (a missing key or a wrong type gives None, never an exception), numbers
formatted or a dash, and tables that drop the columns nobody filled."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

#: the cell of a figure a results file lacks
DASH = "—"


# -- reading JSON without trusting its shape ----------------------------------------------

def dig(obj: Any, *path: str | int) -> Any:
    """``obj[path[0]][path[1]]…``, or None as soon as a step is missing or of the wrong
    kind."""
    for key in path:
        if isinstance(obj, dict) and isinstance(key, str):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def num(value: Any) -> float | None:
    """A finite number, or None (for None, NaN, infinities, booleans, strings …)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def records(value: Any) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def numbers(values: Iterable[Any]) -> list[float]:
    return [v for v in (num(x) for x in values) if v is not None]


def median(values: Iterable[Any]) -> float | None:
    found = numbers(values)
    return statistics.median(found) if found else None


def quotient(a: Any, b: Any) -> float | None:
    x, y = num(a), num(b)
    return x / y if x is not None and y else None


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# -- formatting ---------------------------------------------------------------------------

def number(value: Any, spec: str = ".2f", unit: str = "") -> str:
    """A number formatted, or a dash when there is none."""
    v = num(value)
    return DASH if v is None else f"{v:{spec}}{unit}"


def count(value: Any) -> str:
    return number(value, ",.0f")


def ratio(value: Any, digits: int = 2) -> str:
    return number(value, f".{digits}f", "×")


def pct(value: Any, digits: int = 1) -> str:
    """A share (0–1) as a percentage."""
    v = num(value)
    return DASH if v is None else f"{100 * v:.{digits}f} %"


def number_range(values: Iterable[Any], spec: str = ".2f") -> str:
    """The lowest and highest of the numbers as ``low–high`` (one figure if they print
    alike), or a dash when there are none."""
    found = numbers(values)
    if not found:
        return DASH
    low, high = min(found), max(found)
    return f"{low:{spec}}" if f"{low:{spec}}" == f"{high:{spec}}" \
        else f"{low:{spec}}–{high:{spec}}"


def text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return DASH if value is None else ("yes" if value else "no")
    if isinstance(value, int | float):
        return count(value) if float(value).is_integer() else number(value, ".3g")
    return str(value)


def verdict(met: bool | None) -> str:
    return DASH if met is None else ("met" if met else "**missed**")


def code(value: Any) -> str:
    return f"`{value}`" if value not in (None, "") else DASH


def escape_cell(value: str) -> str:
    """Text that cannot break a table row: pipes escaped, newlines as spaces."""
    return value.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table; columns with no value in any row are left out, and no rows make
    no table."""
    body = [list(r) for r in rows]
    if not body:
        return []
    keep = [i for i in range(len(headers))
            if i == 0 or any(i < len(r) and r[i] not in (DASH, "") for r in body)]
    out = ["| " + " | ".join(escape_cell(headers[i]) for i in keep) + " |",
           "|" + "---|" * len(keep)]
    out += ["| " + " | ".join(escape_cell(r[i]) if i < len(r) else DASH for i in keep) + " |"
            for r in body]
    return [*out, ""]


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")
