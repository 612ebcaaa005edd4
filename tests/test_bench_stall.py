"""bench.stall's reading of a stall: how long on time took to come back, from samples."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.stall import recovery


def samples(on_time: list[float], seconds: float = 10.0) -> list[dict[str, Any]]:
    """One sample per ``seconds``, each with 1,000 gaps of which ``on_time`` were on time."""
    return [{"minute": (i + 1) * seconds / 60, "seconds": seconds, "gaps": 1000,
             "on_time": round(1000 * share), "on_time_share": share}
            for i, share in enumerate(on_time)]


def test_on_time_is_back_at_the_first_good_minute_after_etcd_goes_on() -> None:
    # a good minute; the stall (60-72 s) in samples ending at 70 and 80 s; three late
    # samples (to 110 s); good to the end
    rows = samples([1.0] * 6 + [0.2, 0.3] + [0.5, 0.9, 0.99] + [1.0] * 12)
    found = recovery(rows, 1.0, 12.0)
    # the first minute pooled at 99.5 % starts at 100 s (99 % then five at 100 %)
    assert found["recovered_after_s"] == pytest.approx(100 - 72)
    assert found["on_time_before"] == 1.0
    assert found["on_time_after_recovery"] == pytest.approx((990 + 12 * 1000) / 13000)


def test_a_fleet_that_stays_late_never_recovers() -> None:
    """The hour's incident: 80-88 % on time for minutes after the stall."""
    rows = samples([1.0] * 6 + [0.2, 0.3] + [0.85, 0.88, 0.80] * 8)
    found = recovery(rows, 1.0, 12.0)
    assert math.isnan(found["recovered_after_s"])
    assert math.isnan(found["on_time_after_recovery"])


def test_one_late_sample_in_a_good_minute_does_not_hold_recovery_back() -> None:
    rows = samples([1.0] * 6 + [0.2, 0.3] + [1.0, 0.99, 1.0, 1.0, 1.0, 1.0] + [1.0] * 6)
    # back from the first sample after the stall's, at 80 s
    assert recovery(rows, 1.0, 12.0)["recovered_after_s"] == pytest.approx(80 - 72)


def test_on_a_machine_that_ran_late_before_the_stall_that_is_the_target() -> None:
    """A stall's cost is measured against what the machine did before it: a minute at
    98 % before the stall makes 98 % the mark to come back to."""
    rows = samples([0.98] * 6 + [0.2, 0.3] + [0.9] + [0.98] * 12)
    found = recovery(rows, 1.0, 12.0)
    assert found["target"] == pytest.approx(0.98)
    assert found["recovered_after_s"] == pytest.approx(90 - 72)
