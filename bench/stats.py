"""Statistics of measured values: percentiles, repeated runs, latency distributions."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return float(data[low] + (data[high] - data[low]) * (pos - low))


def median_and_range(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements (and how many)."""
    return {"median": percentile(values, 50), "min": min(values), "max": max(values),
            "n": len(values)}


def summary(values: Sequence[float]) -> dict[str, float]:
    """A distribution: count, p50, p90, p99, max and mean (NaN where there are none)."""
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else math.nan,
            "mean": sum(values) / len(values) if values else math.nan}
