"""Placement by cost: bounds, heavy cities alone, stickiness, few moves (pure, no etcd)."""

from __future__ import annotations

import random

import pytest

from coordinator.balancer import CityNeeds, Member, Plan, plan


def fleet(n: int) -> list[Member]:
    return [Member(f"w{i}") for i in range(n)]


def heavy_tailed() -> dict[str, float]:
    """3 capitals, 30 towns, 300 villages (CPU seconds per second)."""
    costs = {f"capital-{i}": 0.40 + 0.01 * i for i in range(3)}
    costs |= {f"town-{i:02d}": 0.02 + 0.001 * (i % 5) for i in range(30)}
    costs |= {f"village-{i:03d}": 0.0006 + 0.0001 * (i % 7) for i in range(300)}
    return costs


def needs(costs: dict[str, float]) -> dict[str, CityNeeds]:
    return {city: CityNeeds() for city in costs}


def owners(p: Plan) -> dict[str, str]:
    return {city: ranked[0] for city, ranked in p.ranking.items()}


def moved(a: Plan, b: Plan) -> list[str]:
    return [c for c in a.ranking if c in b.ranking and a.owner(c) != b.owner(c)]


@pytest.mark.parametrize("workers", [4, 5, 8])
def test_every_worker_stays_within_its_bound(workers: int) -> None:
    costs = {f"c{i:03d}": random.Random(i).uniform(0.001, 0.05) for i in range(200)}
    members = fleet(workers)
    p = plan(needs(costs), members, costs=costs, tolerance=0.10)
    total = sum(costs.values())
    assert sum(p.loads.values()) == pytest.approx(total)
    for m in members:
        assert p.loads[m.worker_id] <= 1.10 * total / workers + 1e-9, p.loads
        assert p.loads[m.worker_id] >= 0.90 * total / workers - 1e-9, p.loads


def test_a_city_heavier_than_a_share_gets_a_worker_to_itself() -> None:
    costs = {"capital": 2.0, **{f"town-{i}": 0.05 for i in range(40)}}  # total 4, share 1
    p = plan(needs(costs), fleet(4), costs=costs)
    alone = p.owner("capital")
    assert p.owned_by(alone) == {"capital"}
    # the others share the towns within their bound
    assert all(p.loads[w] <= 1.1 * 1.0 for w in p.loads if w != alone), p.loads


def test_heavy_cities_spread_one_per_worker_first() -> None:
    costs = heavy_tailed()
    p = plan(needs(costs), fleet(4), costs=costs)
    capitals = {p.owner(f"capital-{i}") for i in range(3)}
    assert len(capitals) == 3
    assert max(p.loads.values()) <= 1.10 * sum(costs.values()) / 4


def test_imbalance_within_the_tolerance_moves_nothing() -> None:
    costs = heavy_tailed()
    members = fleet(4)
    first = plan(needs(costs), members, costs=costs)
    # every cost wobbles by up to ±5 %: the placement must hold still
    wobbled = {c: v * random.Random(c).uniform(0.95, 1.05) for c, v in costs.items()}
    again = plan(needs(wobbled), members, costs=wobbled, current=owners(first))
    assert moved(first, again) == []
    # without the current placement as input, the same wobble would move cities
    fresh = plan(needs(wobbled), members, costs=wobbled)
    assert moved(first, fresh), "the test's wobble is too small to prove stickiness"


def test_a_join_moves_few_cities_and_the_newcomer_gets_its_share() -> None:
    costs = heavy_tailed()
    before = plan(needs(costs), fleet(4), costs=costs)
    after = plan(needs(costs), fleet(5), costs=costs, current=owners(before))
    total = sum(costs.values())
    assert after.loads["w4"] >= 0.9 * total / 5
    moved_cost = sum(costs[c] for c in moved(before, after))
    # ideal: a fifth of the load moves; every move lands on the newcomer
    assert moved_cost <= 0.3 * total, moved_cost / total
    assert {after.owner(c) for c in moved(before, after)} == {"w4"}


def test_a_leave_moves_only_the_leavers_cities() -> None:
    costs = {f"c{i:03d}": 0.01 for i in range(100)}
    members = fleet(5)
    before = plan(needs(costs), members, costs=costs)
    after = plan(needs(costs), members[:4], costs=costs, current=owners(before))
    assert set(moved(before, after)) == before.owned_by("w4")
    assert max(after.loads.values()) <= 1.1 * 1.0 / 4


def test_labels_and_drains_as_by_count() -> None:
    members = [Member("a", labels={"zone": "a"}), Member("b"), Member("c", drained=True)]
    costs = {"x": 0.5, "y": 0.01, "z": 0.01}
    p = plan({"x": CityNeeds(require={"zone": "a"}), "y": CityNeeds(), "z": CityNeeds(),
              "nowhere": CityNeeds(require={"zone": "q"})}, members, costs=costs)
    assert p.ranking["x"] == ["a"] and p.orphans == ["nowhere"]
    assert not p.owned_by("c")


def test_the_plan_is_the_same_whatever_the_order_of_inputs() -> None:
    costs = heavy_tailed()
    members = fleet(4)
    a = plan(needs(costs), members, costs=costs)
    b = plan(dict(reversed(list(needs(costs).items()))), members[::-1],
             costs=dict(reversed(list(costs.items()))))
    assert a.ranking == b.ranking


def test_unmeasured_cities_count_as_nearly_free_and_count_placement_is_unchanged() -> None:
    p = plan({"a": CityNeeds(), "b": CityNeeds()}, fleet(2), costs={})
    assert len({p.owner("a"), p.owner("b")}) == 2
    assert plan(needs(heavy_tailed()), fleet(3)).loads == {}


def test_a_join_into_a_large_fleet_still_converges() -> None:
    """With 20 workers, one more lowers each share by less than the tolerance: the
    sticky step alone would leave the newcomer idle."""
    costs = {f"c{i:03d}": 0.01 for i in range(400)}
    before = plan(needs(costs), fleet(20), costs=costs)
    after = plan(needs(costs), fleet(21), costs=costs, current=owners(before))
    assert after.loads["w20"] >= 0.9 * 4.0 / 21
    assert {after.owner(c) for c in moved(before, after)} == {"w20"}


def test_a_newcomer_beside_a_lone_heavy_city_gets_work_and_wobbles_then_move_nothing() -> None:
    costs = {"capital": 10.0, **{f"town-{i:03d}": 0.02 for i in range(200)}}
    two = [Member("w1"), Member("w2")]
    before = plan(needs(costs), two, costs=costs)
    assert before.owned_by(before.owner("capital") or "") == {"capital"}
    three = [*two, Member("w3")]
    after = plan(needs(costs), three, costs=costs, current=owners(before))
    assert after.owned_by(after.owner("capital") or "") == {"capital"}
    towns = [w for w in ("w1", "w2", "w3") if w != after.owner("capital")]
    assert all(1.8 - 1e-9 <= after.loads[w] <= 2.2 + 1e-9 for w in towns), after.loads
    # the share is what the capital leaves: 4 over two workers, not 14 over three
    assert all(after.shares[w] == pytest.approx(2.0) for w in towns), after.shares
    # the towns' workers stay within the band of the share the capital leaves them
    wobbled = {c: v * random.Random(c).uniform(0.93, 1.07) for c, v in costs.items()}
    again = plan(needs(wobbled), three, costs=wobbled, current=owners(after))
    assert moved(after, again) == []


def test_a_city_near_a_fair_share_does_not_flip_between_set_apart_and_shared() -> None:
    towns = {f"town-{i:02d}": 0.01 for i in range(60)}
    costs = {"capital": 0.195, **towns}  # just under a fair share (0.199)
    first = plan(needs(costs), fleet(4), costs=costs)
    assert len(first.owned_by(first.owner("capital") or "")) > 1  # shared
    for wobble in (0.19, 0.2, 0.201, 0.203):  # now under, now just over a fair share
        again = {**costs, "capital": wobble}
        assert moved(first, plan(needs(again), fleet(4), costs=again,
                                 current=owners(first))) == [], wobble


def fleet_mix() -> dict[str, float]:
    """As measured in bench.fleet: 3 capitals of about half a worker's share each, 30
    towns and 300 villages (total 0.64, share 0.16; two capitals fit under one bound)."""
    costs = {f"capital-{i}": 0.075 + 0.003 * i for i in range(3)}
    costs |= {f"town-{i:02d}": 0.0025 for i in range(30)}
    costs |= {f"village-{i:03d}": 0.0011 for i in range(300)}
    return costs


def test_cities_coarser_than_the_band_spread_one_per_worker() -> None:
    costs = fleet_mix()
    p = plan(needs(costs), fleet(4), costs=costs)
    assert len({p.owner(f"capital-{i}") for i in range(3)}) == 3
    assert max(p.loads.values()) <= 1.05 * sum(costs.values()) / 4 + 1e-9, p.loads


def test_two_capitals_on_one_worker_are_parted_by_one_move_and_then_stay() -> None:
    costs = fleet_mix()
    first = plan(needs(costs), fleet(4), costs=costs)
    crowded = owners(first)
    crowded["capital-1"] = crowded["capital-0"]  # as a plan of yesterday's costs left it
    parted = plan(needs(costs), fleet(4), costs=costs, current=crowded)
    assert len({parted.owner(f"capital-{i}") for i in range(3)}) == 3
    assert [c for c, w in crowded.items() if parted.owner(c) != w
            and c.startswith("capital")] == ["capital-0"]  # the lighter of the two
    wobbled = {c: v * random.Random(c).uniform(0.95, 1.05) for c, v in costs.items()}
    assert moved(parted, plan(needs(wobbled), fleet(4), costs=wobbled,
                              current=owners(parted))) == []


def test_a_worker_drifted_over_its_bound_gives_down_to_its_share() -> None:
    """Brought back only into the band, the next wobble would send it over again."""
    costs = fleet_mix()
    first = plan(needs(costs), fleet(4), costs=costs)
    busy = first.owner("capital-0") or ""
    drifted = {c: v * (1.15 if first.owner(c) == busy else 1.0) for c, v in costs.items()}
    again = plan(needs(drifted), fleet(4), costs=drifted, current=owners(first))
    assert again.loads[busy] <= 1.0 * again.shares[busy] + 1e-9, again.loads
    assert {first.owner(c) for c in moved(first, again)} == {busy}


def test_a_failovers_undoing_does_not_flip_with_the_wobble_of_the_costs() -> None:
    """After three of four workers lost their leases at once, the fourth holds every
    city. While it gives them back, the plan is made again at every cost publication,
    and the costs of a thousand like cities wobble by a few percent. The plan must name
    (nearly) the same owners each time: each change re-queues standbys, and a city is
    handed over only once its planned owner is queued next (walked by cost, 753 of
    1,000 planned owners changed, and the hour-long run's etcd stall left the fleet
    80 % on time for over ten minutes)."""
    cities = [f"c{i:04d}" for i in range(1000)]
    even = dict.fromkeys(cities, 0.0013)
    base = plan(needs(even), fleet(4), costs=even)
    taken = dict.fromkeys(cities, "w1")  # the survivor took every city over

    def replanned(seed: int) -> Plan:
        rng = random.Random(seed)
        wobbled = {c: 0.0013 * rng.uniform(0.95, 1.05) for c in cities}
        return plan(needs(wobbled), fleet(4), costs=wobbled, current=taken)

    first, second = replanned(1), replanned(2)
    assert len(moved(first, second)) <= 10
    # and the cities go back where the fleet had them, not somewhere new
    assert sum(first.owner(c) == base.owner(c) for c in cities) >= 0.95 * len(cities)
