"""What a city is measured to cost: its ticks, and its share of the process's CPU that
no tick booked (gRPC's threads, the control loop), which grows with ticks."""

from __future__ import annotations

import random

import pytest

from coordinator.worker.load import LoadMeter, LoadReport


class Clocks:
    """A process CPU counter and a clock the test moves."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.now = 100.0

    def meter(self) -> LoadMeter:
        return LoadMeter(window=5.0, process_cpu=lambda: self.cpu, clock=lambda: self.now)


def test_a_city_costs_its_ticks_cpu_over_its_period() -> None:
    clocks = Clocks()
    meter = clocks.meter()
    meter.ticked("a", 0.02, period=2.0)
    assert meter.costs() == {"a": pytest.approx(0.01)}


def test_a_citys_cost_holds_steady_though_its_ticks_swing() -> None:
    """A capital's solve time swings by a fifth from tick to tick, and for several ticks
    at a time (measured in the fleet benchmark). Its cost is a mean over about 100 s of
    ticks, so it stays within 10 % of the true mean; over the last twenty ticks it
    strayed by a fifth, enough to move its worker across the tolerance band and back."""
    clocks = Clocks()
    meter = clocks.meter()
    rng = random.Random(0)
    swing, seen = 0.0, []
    for tick in range(600):                      # 20 minutes of a 2 s period
        swing = 0.6 * swing + rng.gauss(0.0, 0.14)
        meter.ticked("capital", 0.5 * (1 + swing), period=2.0)
        if tick >= 100:
            seen.append(meter.costs()["capital"] / 0.25)
    assert max(abs(x - 1) for x in seen) < 0.10


def test_a_citys_first_ticks_are_averaged_plainly_and_a_seed_counts_as_ten() -> None:
    clocks = Clocks()
    meter = clocks.meter()
    meter.ticked("new", 0.4, period=2.0)
    assert meter.costs()["new"] == pytest.approx(0.2)      # known from its first tick
    meter.ticked("new", 0.2, period=2.0)
    assert meter.costs()["new"] == pytest.approx(0.15)     # the mean of two
    meter.seed("moved", 0.2)                               # measured by its last owner
    meter.ticked("moved", 0.64, period=2.0)
    assert meter.costs()["moved"] == pytest.approx(0.2 + (0.32 - 0.2) / 11)


def test_cpu_no_tick_booked_is_shared_out_in_proportion_to_each_citys_cost() -> None:
    """Not by tick rate: part of it is the worker's own and stays when a city leaves, so
    a village beside a capital must not carry as much of it as the capital."""
    clocks = Clocks()
    meter = clocks.meter()
    meter.ticked("village", 0.001, period=0.5)   # 0.002 CPU s/s, 2 ticks a second
    meter.ticked("capital", 0.200, period=2.0)   # 0.1 CPU s/s, 0.5 ticks a second
    clocks.cpu += 0.201
    meter.costs()                                # the first window opens
    meter.ticked("village", 0.001, period=0.5)
    meter.ticked("capital", 0.200, period=2.0)
    clocks.cpu += 0.201 + 1.0                    # 1 CPU second booked to no tick
    clocks.now += 10.0                           # over 10 s: 0.1 cores
    costs = meter.costs()
    assert meter.unbooked() == pytest.approx(0.1)
    assert costs["village"] == pytest.approx(0.002 * (1 + 0.1 / 0.102))
    assert costs["capital"] == pytest.approx(0.1 * (1 + 0.1 / 0.102))
    assert sum(costs.values()) == pytest.approx(0.102 + 0.1)  # nothing lost, none twice


def test_a_worker_with_one_light_city_does_not_put_its_own_overhead_on_it() -> None:
    """A worker that just joined leads one village and spends ten times as much on its
    keep-alives, watches and control loop: that stays when the village leaves, so the
    village carries at most as much again as its own ticks (else the plan sees the
    worker full and sends it nothing more)."""
    clocks = Clocks()
    meter = clocks.meter()
    meter.costs()
    meter.ticked("village", 0.005, period=0.5)   # 0.01 CPU s/s
    clocks.cpu += 0.005 + 1.0                    # 0.1 cores booked to no tick
    clocks.now += 10.0
    assert meter.costs() == {"village": pytest.approx(0.01 * 2)}
    assert meter.unbooked() == pytest.approx(0.1)


def test_a_solve_in_a_solver_process_is_not_taken_from_this_process() -> None:
    clocks = Clocks()
    meter = clocks.meter()
    meter.costs()
    # 0.9 s of the tick ran in a solver process: this process spent 0.1 on it, and 0.5
    # on no tick
    meter.ticked("capital", 1.0, period=1.0, here=0.1)
    clocks.cpu += 0.1 + 0.5
    clocks.now += 10.0
    assert meter.costs() == {"capital": pytest.approx(1.0 + 0.05)}
    assert meter.unbooked() == pytest.approx(0.05)


def test_the_unbooked_cpu_is_measured_over_whole_windows() -> None:
    clocks = Clocks()
    meter = clocks.meter()
    meter.ticked("a", 0.2, period=1.0)
    meter.costs()
    clocks.cpu += 0.5
    clocks.now += 1.0                            # too short a window to judge
    assert meter.costs() == {"a": pytest.approx(0.2)}
    clocks.now += 4.0
    assert meter.costs()["a"] == pytest.approx(0.2 + 0.1)


def test_a_load_is_published_again_when_other_moves_wait_not_as_their_wait_grows() -> None:
    report = LoadReport(interval=5.0)
    costs = {"a": 0.01, "b": 0.02}
    assert report.due(costs, 0.0, {})
    report.published(costs, 0.0, {})
    budget = {"a": "churn budget: 1.0 moves/min for this worker"}
    assert not report.due(costs, 1.0, budget)          # not before the interval
    assert report.due(costs, 6.0, budget)               # a move now waits
    report.published(costs, 6.0, budget)
    delay = {"a": "rebalance delay: out of balance for 12s"}
    assert report.due(costs, 12.0, delay)               # it waits for something else
    report.published(costs, 12.0, delay)
    longer = {"a": "rebalance delay: out of balance for 20s"}
    assert not report.due(costs, 20.0, longer)          # the same wait, only longer


def test_a_load_is_published_again_when_its_sum_drifts_though_no_city_moved_a_tenth() -> None:
    """A capital is most of its worker's load: 9 % more of it, unpublished, left the
    planner seeing that worker inside its bound while it was over."""
    report = LoadReport(interval=5.0)
    costs = {"capital": 0.15, **{f"village-{i}": 0.001 for i in range(20)}}
    report.published(costs, 0.0, {})
    assert not report.due({**costs, "capital": 0.152}, 10.0, {})  # 1 % of the sum
    assert report.due({**costs, "capital": 0.15 * 1.09}, 10.0, {})
