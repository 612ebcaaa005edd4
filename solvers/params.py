"""Reading a city's solver parameters: checked, defaulted, with one-line errors.

A city's ``params`` arrive as a JSON object (protobuf ``Struct``), so every number is a
float and an "integer" is a float with no fraction. The same mapping is shared with the
city's state source and with any shadow solvers, so a solver must ignore keys it does
not know and only reject the values of keys it does. Errors are ``ValueError`` — the
contract's signal for "parameters I cannot accept" — with a message fit for an
operator's status line.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from solvers.cost import UNASSIGNED_PENALTY_SECONDS

__all__ = ["choice", "max_eta", "positive_int", "seconds", "unassigned_penalty"]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def seconds(params: Mapping[str, Any], name: str, default: float) -> float:
    """A positive number of seconds; ``default`` when absent or null."""
    value = params.get(name)
    if value is None:
        return default
    if not _number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"parameter {name}={value!r} must be a positive number of seconds")
    return float(value)


def max_eta(params: Mapping[str, Any]) -> float:
    """``max_eta``: never assign a pickup later than this many seconds (default: no limit)."""
    return seconds(params, "max_eta", math.inf)


def unassigned_penalty(params: Mapping[str, Any]) -> float:
    """``unassigned_penalty``: seconds an unassigned order costs (default: the core's)."""
    return seconds(params, "unassigned_penalty", UNASSIGNED_PENALTY_SECONDS)


def positive_int(params: Mapping[str, Any], name: str, default: int) -> int:
    """An integer ≥ 1 (integral floats accepted, booleans not); ``default`` when absent."""
    value = params.get(name)
    if value is None:
        return default
    if not _number(value) or not math.isfinite(value) or not float(value).is_integer() \
            or value < 1:
        raise ValueError(f"parameter {name}={value!r} must be an integer >= 1")
    return int(value)


def choice(params: Mapping[str, Any], name: str, default: str,
           allowed: Collection[str]) -> str:
    """One of ``allowed`` (a string); ``default`` when absent or null."""
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"parameter {name}={value!r} must be one of "
                         f"{', '.join(sorted(allowed))}")
    return value
