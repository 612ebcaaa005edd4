"""The churn budget's arithmetic: shares of the fleet's budget, cool-down, a forming
fleet (pure; the budget against real workers: tests/test_cost_placement.py)."""

from __future__ import annotations

import time

from coordinator.worker.churn import ChurnBudget


def test_each_worker_spends_at_most_its_share_then_refills_at_its_rate() -> None:
    budget = ChurnBudget(moves_per_minute=120, cooldown=0)
    # 4 workers: 30 moves a minute each, at most 30 at once
    assert [budget.take(f"c{i}", fleet=4) for i in range(30)] == [None] * 30
    assert "churn budget" in (budget.take("c30", fleet=4) or "")
    time.sleep(0.1)  # 30 a minute: one every 2 s, so none yet
    assert budget.take("c30", fleet=4) is not None
    assert budget.spent == 30


def test_a_small_budget_still_allows_one_move() -> None:
    budget = ChurnBudget(moves_per_minute=1, cooldown=0)
    assert budget.take("a", fleet=10) is None
    assert budget.take("b", fleet=10) is not None


def test_a_city_that_just_arrived_waits_for_its_cool_down() -> None:
    budget = ChurnBudget(moves_per_minute=600, cooldown=0.3)
    budget.arrived("a")
    assert "cool-down" in (budget.take("a", fleet=1) or "")
    assert budget.take("b", fleet=1) is None
    time.sleep(0.35)
    assert budget.take("a", fleet=1) is None


def test_a_city_taken_while_the_fleet_formed_moves_once_for_free() -> None:
    budget = ChurnBudget(moves_per_minute=1, cooldown=60)
    budget.take("spend-the-only-token", fleet=1)
    budget.formed("a")
    assert budget.take("a", fleet=1) is None  # free, despite the empty budget
    assert budget.take("a", fleet=1) is not None  # but only once
    assert budget.spent == 1


def test_a_city_taken_while_the_fleet_formed_pays_for_a_move_long_after() -> None:
    """The free move is for settling the fleet as it forms: a city that stayed where
    the fleet formed is moved later (a rebalance, a worker joining) on the budget."""
    budget = ChurnBudget(moves_per_minute=1, cooldown=0, forming=0.2)
    budget.take("spend-the-only-token", fleet=1)
    budget.formed("a")
    time.sleep(0.25)
    assert "churn budget" in (budget.take("a", fleet=1) or "")




def test_what_a_failure_brought_goes_back_for_free_whenever_it_can() -> None:
    """A survivor took two cities of w2 when w2's lease was lost. Its moves to w2 are
    free, two of them, whichever cities the plan sends and however late (w2 must come
    back and stand again first); moves elsewhere pay, and a city handed to us since
    still waits out its cool-down."""
    budget = ChurnBudget(moves_per_minute=1, cooldown=60, forming=0.1)
    budget.take("spend-the-only-token", fleet=1)
    budget.failed_over("a", "w2")
    budget.failed_over("b", "w2")
    budget.arrived("mine")
    time.sleep(0.15)
    assert "churn budget" in (budget.take("a", fleet=2, to="w3") or "")
    assert "cool-down" in (budget.take("mine", fleet=2, to="w2") or "")
    assert budget.take("own", fleet=2, to="w2") is None  # not one of them: owed all the same
    assert budget.take("a", fleet=2, to="w2") is None
    assert "churn budget" in (budget.take("b", fleet=2, to="w2") or "")  # two, no more
    assert budget.spent == 1


def test_a_new_session_owes_nothing() -> None:
    budget = ChurnBudget(moves_per_minute=1, cooldown=0, forming=0.0)
    budget.take("spend-the-only-token", fleet=1)
    budget.failed_over("a", "w2")
    budget.forget()
    assert "churn budget" in (budget.take("a", fleet=2, to="w2") or "")
