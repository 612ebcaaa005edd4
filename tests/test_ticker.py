"""The ticker: ticks on the period grid, never overlapping, and a handover-friendly stop."""

from __future__ import annotations

import itertools
import math
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from coordinator.worker.ticker import Retry, Ticker


class Recorder:
    def __init__(self, *, work: float = 0.0) -> None:
        self.work = work
        self.ticks: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def __call__(self, city: str, due: float) -> None:
        with self.lock:
            self.ticks.append((city, time.monotonic()))
        time.sleep(self.work)

    def times(self, city: str) -> list[float]:
        with self.lock:
            return [t for c, t in self.ticks if c == city]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def ticker(recorder: Recorder) -> Iterator[Ticker]:
    t = Ticker(recorder, max_workers=4)
    yield t
    t.stop()


def test_ticks_follow_the_period_grid(ticker: Ticker, recorder: Recorder) -> None:
    ticker.add("a", 0.1)
    time.sleep(0.55)
    times = recorder.times("a")
    assert 5 <= len(times) <= 7
    first = times[0]
    for i, t in enumerate(times):
        assert abs(t - (first + 0.1 * i)) < 0.05, "a late tick must not shift later ones"


def test_a_tick_that_overruns_skips_instead_of_piling_up() -> None:
    rec = Recorder(work=0.25)
    ticker = Ticker(rec, max_workers=4)
    try:
        ticker.add("slow", 0.1)
        time.sleep(0.8)
        times = rec.times("slow")
        assert all(b - a >= 0.24 for a, b in itertools.pairwise(times))
        assert ticker.stats("slow")[1] >= 3  # skipped ticks are counted
    finally:
        ticker.stop()


def test_retire_runs_a_tick_due_soon_first_then_stops(ticker: Ticker,
                                                      recorder: Recorder) -> None:
    ticker.add("a", 1.0, first_in=0.15)
    retired = ticker.retire("a", within=0.3)
    assert retired is not None
    done, due = retired
    assert due > time.monotonic()  # waits for the coming tick
    assert done.wait(1.0)
    assert len(recorder.times("a")) == 1
    assert "a" not in ticker.cities()
    time.sleep(0.2)
    assert len(recorder.times("a")) == 1  # and no tick after it


def test_retire_stops_at_once_when_the_next_tick_is_far(ticker: Ticker,
                                                         recorder: Recorder) -> None:
    ticker.add("a", 1.0, first_in=0.6)
    retired = ticker.retire("a", within=0.3)
    assert retired is not None
    done, due = retired
    assert due == 0.0 and done.is_set()
    time.sleep(0.8)
    assert recorder.times("a") == []


def test_a_retired_city_removed_before_its_last_tick_does_not_leave_waiters_hanging(
        ticker: Ticker, recorder: Recorder) -> None:
    ticker.add("a", 1.0, first_in=0.2)
    retired = ticker.retire("a", within=0.5)
    assert retired is not None
    ticker.remove("a")  # e.g. fenced out meanwhile
    assert retired[0].wait(0.1)
    time.sleep(0.3)
    assert recorder.times("a") == []


def test_a_new_city_ticks_at_once_then_moves_to_its_own_phase(ticker: Ticker,
                                                              recorder: Recorder) -> None:
    period = 0.4
    phase = (time.time() + 0.25) % period  # the grid point 0.25 s from now
    ticker.add("a", period, then_at_phase=phase)
    time.sleep(1.1)
    times = recorder.times("a")
    assert len(times) >= 3
    assert times[1] - times[0] >= period - 0.02  # never sooner than a period
    wall = [t - time.monotonic() + time.time() for t in times[1:]]
    for t in wall:  # every tick after the first sits on the phase grid
        off = (t - phase) % period
        assert min(off, period - off) < 0.05, (off, wall)


def test_ticks_due_close_together_run_together_on_the_slack_grid(recorder: Recorder) -> None:
    slack, period = 0.1, 0.2
    ticker = Ticker(recorder, max_workers=4, slack=slack)
    try:
        now = time.monotonic()
        bucket = math.ceil(now / slack) * slack + slack  # a multiple of the slack ahead
        asked = {"a": bucket + 0.02, "b": bucket + 0.05, "c": bucket + 0.09}
        for city, at in asked.items():
            ticker.add(city, period, first_in=at - now)
        time.sleep(bucket - time.monotonic() + 2 * period + 0.1)
    finally:
        ticker.stop()
    for city, at in asked.items():
        times = recorder.times(city)
        assert len(times) >= 3, (city, times)
        assert times[0] <= at + 0.01, "the first tick never comes later than asked"
        assert bucket - 0.001 <= times[0] < bucket + 0.03, "the three run together"
        for a, b in itertools.pairwise(times[:3]):  # then one period apart, on the grid
            assert abs(b - a - period) < 0.03, times


def test_a_city_added_to_tick_at_once_does_not_wait_for_the_slack(recorder: Recorder) -> None:
    # a city taken over from a dead worker is overdue: coalescing must not delay it
    slack = 0.5
    ticker = Ticker(recorder, max_workers=4, slack=slack)
    try:
        now = time.monotonic()
        bucket = math.ceil(now / slack) * slack
        if bucket - now < 0.2:  # keep the add well away from the bucket's end
            time.sleep(bucket - now + 0.05)
        added = time.monotonic()
        ticker.add("a", 1.0)
        wait = time.monotonic() + 1.0
        while not recorder.times("a") and time.monotonic() < wait:
            time.sleep(0.005)
    finally:
        ticker.stop()
    assert recorder.times("a")[0] - added < 0.05


class GroupRecorder(Recorder):
    """Ticks cities alone or in groups; remembers each call's cities."""

    def __init__(self, groupable: set[str], answers: dict[str, object]) -> None:
        super().__init__()
        self.groupable = groupable
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, city: str, due: float) -> object:  # type: ignore[override]
        with self.lock:
            self.calls.append([city])
        super().__call__(city, due)
        return self.answers.get(city)

    def group(self, items: list[tuple[str, float]]) -> list[object]:
        with self.lock:
            self.calls.append([city for city, _ in items])
        for city, due in items:
            super().__call__(city, due)
        return [self.answers.get(city) for city, _ in items]


def test_cities_due_together_are_ticked_as_a_group_and_rescheduled_each_on_its_own() -> None:
    slack, period = 0.1, 0.3
    rec = GroupRecorder(groupable={"a", "b", "c"}, answers={"b": Retry(0.1)})
    ticker = Ticker(rec, max_workers=4, slack=slack, tick_group=rec.group,  # type: ignore[arg-type]
                    groupable=rec.groupable.__contains__)
    try:
        now = time.monotonic()
        bucket = math.ceil(now / slack) * slack + slack
        for city in ("a", "b", "c", "solo"):  # all due in the same slack
            ticker.add(city, period, first_in=bucket + 0.05 - now)
        time.sleep(bucket - time.monotonic() + period + 0.15)
    finally:
        ticker.stop()
    grouped = [call for call in rec.calls if len(call) > 1]
    assert grouped and sorted(grouped[0]) == ["a", "b", "c"], rec.calls
    assert ["solo"] in rec.calls, "a city not vouched for runs alone"
    assert all("solo" not in call for call in grouped)
    # b asked for a retry: it ran again before the others' next tick, on its own
    b, a = rec.times("b"), rec.times("a")
    assert len(b) >= 2 and b[1] - b[0] < 0.25, b
    assert a[1] - a[0] == pytest.approx(period, abs=0.03), a
    assert ticker.grouped >= 3


def test_a_period_that_is_a_multiple_of_the_slack_keeps_its_spacing_despite_rounding(
        recorder: Recorder) -> None:
    # align + k * period lands a rounding error above or below the slack grid; above
    # must not put the tick off to the next multiple of the slack
    slack, period = 0.1, 0.3
    ticker = Ticker(recorder, max_workers=4, slack=slack)
    try:
        for i in range(30):
            ticker.add(f"c{i}", period, first_in=0.01 * i, then_at_phase=0.0)
        time.sleep(2.0)
    finally:
        ticker.stop()
    gaps = [b - a for i in range(30) for a, b in itertools.pairwise(recorder.times(f"c{i}")[1:])]
    assert len(gaps) > 60
    assert max(gaps) < period + slack / 2, sorted(gaps)[-5:]


@pytest.mark.parametrize("period", [0.05, 0.13, 0.25])
def test_a_period_shorter_than_or_off_the_slack_keeps_its_spacing(recorder: Recorder,
                                                                   period: float) -> None:
    # the grid a city is coalesced onto is a whole fraction of its own period: a 50 ms
    # city under a 200 ms slack must not tick every 200 ms, nor a 130 ms one every 200
    ticker = Ticker(recorder, max_workers=4, slack=0.2)
    try:
        ticker.add("c", period, first_in=0.013)
        time.sleep(1.0)
    finally:
        ticker.stop()
    times = recorder.times("c")
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert len(times) >= 0.8 / period, times
    assert statistics.median(gaps) == pytest.approx(period, abs=0.01), sorted(gaps)


class DueRecorder(Recorder):
    """Records how late each tick started against its due time."""

    def __init__(self) -> None:
        super().__init__()
        self.late: list[tuple[str, float, float]] = []

    def __call__(self, city: str, due: float) -> None:
        with self.lock:
            self.late.append((city, time.monotonic(), time.monotonic() - due))


def test_a_new_period_moves_the_city_onto_its_new_grid() -> None:
    # 0.4 s on a 0.2 s slack is on a 0.2 s grid; 0.35 s wants a 0.175 s one. Left on
    # the old grid, every tick would wait up to a step for the new one
    rec = DueRecorder()
    ticker = Ticker(rec, max_workers=4, slack=0.2)
    try:
        for i in range(7):
            ticker.add(f"c{i}", 0.4, first_in=0.05 * i)
        time.sleep(0.5)
        for i in range(7):
            ticker.set_period(f"c{i}", 0.35)
        changed = time.monotonic()
        time.sleep(2.0)
    finally:
        ticker.stop()
    settled = [late for _, at, late in rec.late if at > changed + 0.8]
    assert len(settled) >= 7 * 3
    assert max(settled) < 0.03, sorted(settled)[-5:]
