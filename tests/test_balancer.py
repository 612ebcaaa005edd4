"""The ownership plan: fair shares, stability, affinity, standbys (pure, no etcd)."""

from __future__ import annotations

import math

import pytest

from coordinator.balancer import CityNeeds, Member, plan, rank


def cities(n: int) -> dict[str, CityNeeds]:
    return {f"city-{i:03d}": CityNeeds() for i in range(n)}


def owned_counts(p: object, members: list[Member]) -> dict[str, int]:
    return {m.worker_id: len(p.owned_by(m.worker_id)) for m in members}  # type: ignore[attr-defined]


@pytest.mark.parametrize("n, w", [(60, 3), (60, 4), (10, 4), (7, 3), (1000, 7), (3, 5)])
def test_every_worker_owns_between_floor_and_ceiling_of_its_share(n: int, w: int) -> None:
    members = [Member(f"w{i}") for i in range(w)]
    counts = owned_counts(plan(cities(n), members), members)
    assert sum(counts.values()) == n
    assert all(n // w <= c <= math.ceil(n / w) for c in counts.values()), counts


def test_shares_follow_capacity_weights() -> None:
    members = [Member("big", capacity=2.0), Member("small-1"), Member("small-2")]
    counts = owned_counts(plan(cities(60), members), members)
    assert counts == {"big": 30, "small-1": 15, "small-2": 15}


def test_a_joining_worker_moves_few_cities() -> None:
    before = plan(cities(60), [Member(f"w{i}") for i in range(3)])
    after = plan(cities(60), [Member(f"w{i}") for i in range(4)])
    moved = sum(before.owner(c) != after.owner(c) for c in before.ranking)
    assert after.owned_by("w3") and 15 <= moved <= 25, moved  # ideal: 60/4 = 15


def test_drained_workers_own_nothing_and_standbys_are_other_workers() -> None:
    members = [Member("w0"), Member("w1", drained=True), Member("w2")]
    p = plan(cities(20), members, standbys=1)
    assert not p.owned_by("w1") and "w1" not in str(p.ranking.values())
    for ranked in p.ranking.values():
        assert len(ranked) == 2 and ranked[0] != ranked[1]


def test_required_labels_are_respected_and_unsatisfiable_cities_reported() -> None:
    members = [Member("a", labels={"zone": "a"}), Member("b", labels={"zone": "b"})]
    needs = {"x": CityNeeds(require={"zone": "a"}), "y": CityNeeds(require={"zone": "c"}),
             **{f"c{i}": CityNeeds() for i in range(4)}}
    p = plan(needs, members)
    assert p.ranking["x"] == ["a"]
    assert p.orphans == ["y"]


def test_preferred_labels_win_when_there_is_room() -> None:
    members = [Member("a", labels={"zone": "a"}), Member("b", labels={"zone": "b"})]
    needs = {f"c{i}": CityNeeds(prefer={"zone": "b"}) for i in range(1)}
    assert plan(needs, members).owner("c0") == "b"


def test_the_plan_is_the_same_whatever_order_members_are_listed_in() -> None:
    members = [Member(f"w{i}") for i in range(5)]
    assert plan(cities(50), members).ranking == plan(cities(50), members[::-1]).ranking


def test_a_kept_ranking_gives_the_same_plan_as_ranking_afresh() -> None:
    members = [Member("a", labels={"zone": "a"}), Member("b", labels={"zone": "b"}),
               Member("c", capacity=2.0), Member("d", drained=True)]
    needs = {**cities(40), "x": CityNeeds(require={"zone": "a"}),
             "y": CityNeeds(require={"zone": "z"}), "p": CityNeeds(prefer={"zone": "b"})}
    kept = rank(needs, members)
    costs = {city: 0.01 * (1 + i % 7) for i, city in enumerate(sorted(needs))}
    current = plan(needs, members, costs=costs)
    for kwargs in ({}, {"costs": costs}, {"costs": costs, "tolerance": 0.3},
                   {"costs": costs, "current": {c: current.owner(c) or "" for c in needs}}):
        assert plan(needs, members, ranking=kept, **kwargs) == plan(needs, members, **kwargs)
