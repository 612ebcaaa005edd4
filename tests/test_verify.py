"""The history checker catches what it must: proof that ``verify`` is not a rubber stamp.

Each test writes a history into a real etcd — legitimate fenced decisions through the
project's own recipes, plus the misbehaviour under test from a test-only double — and
asserts that ``coordinator.ops.verify.verify`` reports exactly the bad writes, by revision.
The last tests pin down the availability measurement.
"""

from __future__ import annotations

import time

import pytest

from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.ops.verify import verify
from coordinator.recipes.election import Election, LeaderKey
from coordinator.recipes.session import Session
from coordinator.recipes.store import DecisionStore
from coordinator.settings import CityConfig
from protos import dispatch_pb2 as pb
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import decision as latest_decision
from tests.helpers import running_worker


def make_decision(city: str, token: int, worker: str, decided_at: float | None = None,
                  tick: int = 1) -> pb.Decision:
    d = pb.Decision(city=city, token=token, worker_id=worker, solver="greedy", tick=tick,
                    assignments={"o1": "c1"})
    d.decided_at.FromNanoseconds(int((decided_at or time.time()) * 1e9))
    return d


class UnfencedWriter:
    """TEST DOUBLE — the bug the fence exists to stop: a worker that writes its decision
    with a plain put, no compare, from what it remembers (a token and worker id that may
    be stale). Never do this outside a test."""

    def __init__(self, client: EtcdClient, keys: Keys, worker_id: str, token: int) -> None:
        self.client, self.keys = client, keys
        self.worker_id, self.token = worker_id, token

    def write(self, city: str, *, decided_at: float | None = None) -> int:
        return self.client.put(self.keys.decision(city),
                               _encode(make_decision(city, self.token, self.worker_id,
                                                     decided_at)))


def _encode(message: pb.Decision) -> bytes:
    from coordinator.codec import encode

    return encode(message)


class Candidate:
    """A worker reduced to its recipes: a session, an election, the fenced store."""

    def __init__(self, client: EtcdClient, keys: Keys, city: str, worker_id: str) -> None:
        self.client, self.keys, self.city, self.worker_id = client, keys, city, worker_id
        self.session = Session(client, ttl=5)
        self.election = Election(client, self.session, keys.election(city))
        self.store = DecisionStore(client, keys)
        self.leader: LeaderKey | None = None

    def enter(self) -> Candidate:
        self.election.enter(self.worker_id)
        return self

    def campaign(self) -> LeaderKey:
        self.leader = self.election.campaign(self.worker_id)
        return self.leader

    def commit(self, *, worker_id: str | None = None, decided_at: float | None = None) -> int:
        assert self.leader is not None
        return self.store.commit(self.city, self.leader,
                                 make_decision(self.city, self.leader.token,
                                               worker_id or self.worker_id, decided_at))

    def close(self) -> None:
        self.session.close()


def test_an_honest_history_passes(client: EtcdClient, keys: Keys) -> None:
    first = Candidate(client, keys, "paris", "w1")
    first.campaign()
    first.commit()
    second = Candidate(client, keys, "paris", "w2").enter()
    first.close()
    second.campaign()
    second.commit()
    second.commit()
    report = verify(client, keys)
    assert report.ok, report.violations
    assert report.decisions == 3
    assert [d.worker_id for _, d in report.decisions_by_city["paris"]] == ["w1", "w2", "w2"]
    second.close()


def test_an_unfenced_writer_after_a_takeover_is_reported_with_its_revision(
        client: EtcdClient, keys: Keys) -> None:
    """w1 leads and decides; its lease ends and w2 takes over; then w1 — still sure of
    itself — writes with a plain put and its old token. Only the rogue write is reported,
    at its own revision, naming both tokens and both workers."""
    w1 = Candidate(client, keys, "paris", "w1")
    old = w1.campaign()
    w1.commit()
    w2 = Candidate(client, keys, "paris", "w2").enter()
    w1.close()  # takeover: w1's candidate key goes with its lease
    new = w2.campaign()
    w2.commit()

    rogue_revision = UnfencedWriter(client, keys, "w1", old.token).write("paris")
    after = w2.commit()  # the real leader carries on

    report = verify(client, keys)
    assert not report.ok
    assert report.decisions == 4
    # two findings, both about the rogue write: wrong leader, and a token that went down
    assert {v.revision for v in report.violations} == {rogue_revision}
    assert len(report.violations) == 2
    violation = report.violations[0]
    assert violation.city == "paris"
    assert report.violations[1].message == f"token went down from {new.token} to {old.token}"
    assert f"token {old.token} by 'w1'" in violation.message
    assert f"was 'w2' with token {new.token}" in violation.message
    assert f"revision {rogue_revision - 1}" in violation.message
    assert str(rogue_revision) in str(violation)
    # the rogue write is in history between two honest ones; the latest one is honest
    revisions = [r for r, _ in report.decisions_by_city["paris"]]
    assert revisions.index(rogue_revision) == 2 and revisions[-1] == after
    # checking from after the rogue write finds nothing
    assert verify(client, keys, start_revision=rogue_revision + 1).ok
    w2.close()


def test_an_unfenced_writer_against_live_workers_is_caught_among_their_decisions(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str) -> None:
    """The same with real (in-process) workers: w1 decides, hands over to w2 on
    shutdown, and an unfenced write with w1's last token lands among w2's decisions."""
    endpoints = etcd.endpoints
    client.put(keys.city("rome"), CityConfig("rome", "greedy", 0.2).encode())
    with running_worker(endpoints, namespace, "w1", solve_isolation="thread"):
        first = wait_until(lambda: latest_decision(client, keys, "rome"),
                           message="a decision by w1")
    assert first.worker_id == "w1"  # type: ignore[union-attr]
    stale = UnfencedWriter(client, keys, "w1", first.token)  # type: ignore[union-attr]
    with running_worker(endpoints, namespace, "w2", solve_isolation="thread"):
        wait_until(lambda: (d := latest_decision(client, keys, "rome")) is not None
                   and d.worker_id == "w2", message="a decision by w2")
        rogue_revision = stale.write("rome")
        wait_until(lambda: (d := latest_decision(client, keys, "rome")) is not None
                   and d.worker_id == "w2", message="w2 to decide again")
    report = verify(client, keys)
    assert {v.revision for v in report.violations} == {rogue_revision}, report.violations
    assert "by 'w1' but the leader" in report.violations[0].message
    assert report.decisions >= 3


def test_a_fenced_decision_carrying_another_workers_id_is_reported(
        client: EtcdClient, keys: Keys) -> None:
    """The fence passes (right token), but the decision claims to come from someone
    else: the checker compares workerId with the leading candidate key's value."""
    w1 = Candidate(client, keys, "oslo", "w1")
    leader = w1.campaign()
    w1.commit()
    lying = w1.commit(worker_id="w2")
    report = verify(client, keys)
    assert [v.revision for v in report.violations] == [lying]
    assert report.violations[0].message == (
        f"workerId 'w2' but the leading candidate key (token {leader.token}) "
        "belongs to 'w1'")
    w1.close()


def test_decreasing_tokens_are_reported(client: EtcdClient, keys: Keys) -> None:
    w1 = Candidate(client, keys, "rome", "w1")
    old = w1.campaign()
    w1.commit()
    w2 = Candidate(client, keys, "rome", "w2").enter()
    w1.election.resign()
    new = w2.campaign()
    w2.commit()
    assert new.token > old.token
    back = UnfencedWriter(client, keys, "w1", old.token).write("rome")
    report = verify(client, keys)
    messages = {v.message for v in report.violations if v.revision == back}
    assert f"token went down from {new.token} to {old.token}" in messages
    assert all(v.revision == back for v in report.violations)
    w1.close()
    w2.close()


def test_a_decision_for_a_city_nobody_stands_for_is_reported(client: EtcdClient,
                                                              keys: Keys) -> None:
    revision = UnfencedWriter(client, keys, "ghost", 7).write("lima")
    report = verify(client, keys)
    assert [v.revision for v in report.violations] == [revision]
    assert "no candidate at all" in report.violations[0].message


def test_a_malformed_decision_is_reported(client: EtcdClient, keys: Keys) -> None:
    revision = client.put(keys.decision("bern"), b'{"token": "not a number"')
    report = verify(client, keys)
    assert [v.revision for v in report.violations] == [revision]
    assert "malformed" in report.violations[0].message


# -- availability ---------------------------------------------------------------------


def _city(client: EtcdClient, keys: Keys, city: str, period: float,
          *, enabled: bool = True) -> None:
    client.put(keys.city(city), CityConfig(city, "greedy", period, enabled=enabled).encode())


def test_availability_counts_periods_without_a_decision(client: EtcdClient,
                                                        keys: Keys) -> None:
    base = 1_700_000_000.0
    _city(client, keys, "steady", 0.5)
    _city(client, keys, "gappy", 1.0)
    _city(client, keys, "off", 1.0, enabled=False)
    client.put(keys.city("broken"), b'{"solver": 3}')
    steady = Candidate(client, keys, "steady", "w1")
    steady.campaign()
    gappy = Candidate(client, keys, "gappy", "w1")
    gappy.campaign()
    for k in range(19):  # every 0.5 s from base to base + 9
        steady.commit(decided_at=base + 0.5 * k)
    for k in (0, 1, 2, 3, 7, 8, 9):  # nothing at 4, 5, 6: a 4 s gap
        gappy.commit(decided_at=base + k + 0.05)

    report = verify(client, keys, window=(base, base + 9.0))
    assert report.ok, report.violations
    av = report.availability
    assert av is not None
    assert set(av.cities) == {"steady", "gappy"}  # disabled and broken: not expected
    assert av.cities["steady"].missed == pytest.approx(0.0)
    assert av.cities["steady"].fraction == pytest.approx(1.0)
    g = av.cities["gappy"]
    assert g.expected == pytest.approx(9.0) and g.missed == pytest.approx(3.0)
    assert g.longest_gap == pytest.approx(4.0)
    assert g.fraction == pytest.approx(6 / 9)
    assert av.overall == pytest.approx(1 - 3 / (18 + 9))
    assert av.lowest() is g
    assert "lowest gappy 66.67%" in av.summary()

    # the same 4 s gap, with 3 s of it without quorum: nothing missed
    excused = verify(client, keys, window=(base, base + 9.0),
                     no_quorum=[(base + 3.5, base + 6.5)]).availability
    assert excused is not None
    assert excused.cities["gappy"].missed == pytest.approx(0.0)
    assert excused.cities["gappy"].expected == pytest.approx(6.0)
    assert excused.excluded_seconds == pytest.approx(3.0)
    assert excused.overall == pytest.approx(1.0)
    steady.close()
    gappy.close()


def test_a_late_tick_costs_its_lateness_and_a_skipped_one_a_period(client: EtcdClient,
                                                                   keys: Keys) -> None:
    base = 1_700_000_000.0
    _city(client, keys, "late", 1.0)
    late = Candidate(client, keys, "late", "w1")
    late.campaign()
    # 1.2 s apart (ticks 20 % late), then 2.0 s (one tick skipped), then on time
    for t in (0.0, 1.2, 2.4, 3.6, 5.6, 6.6):
        late.commit(decided_at=base + t)
    av = verify(client, keys, window=(base, base + 6.6)).availability
    assert av is not None
    assert av.cities["late"].missed == pytest.approx(3 * 0.2 + 1.0)
    assert av.cities["late"].fraction == pytest.approx(1 - 1.6 / 6.6)
    assert av.cities["late"].decisions == 6
    # ticks up to a quarter of a period late are on time; the skipped one still costs
    # all of its lateness
    forgiving = verify(client, keys, window=(base, base + 6.6), tolerance=0.25).availability
    assert forgiving is not None and forgiving.cities["late"].missed == pytest.approx(1.0)
    # the window defaults to the span of the decisions checked
    default = verify(client, keys).availability
    assert default is not None and default.start_time == pytest.approx(base)
    assert default.end_time == pytest.approx(base + 6.6)
    late.close()


def test_a_decision_within_a_tenth_of_its_period_is_on_time(client: EtcdClient,
                                                              keys: Keys) -> None:
    """Timer jitter is not unavailability: decisions a few percent off their grid all
    arrived within their periods. Counting every millisecond (tolerance 0) charges the
    late half of the jitter as missed time."""
    base = 1_700_000_000.0
    _city(client, keys, "jittery", 1.0)
    jittery = Candidate(client, keys, "jittery", "w1")
    jittery.campaign()
    for k in range(8):
        jittery.commit(decided_at=base + k + (0.06 if k % 2 else 0.0))
    window = (base, base + 7.0)
    av = verify(client, keys, window=window).availability
    assert av is not None and av.cities["jittery"].missed == pytest.approx(0.0)
    strict = verify(client, keys, window=window, tolerance=0.0).availability
    assert strict is not None and strict.cities["jittery"].missed == pytest.approx(3 * 0.06)
    jittery.close()


def test_a_long_history_is_replayed_to_the_end(client: EtcdClient, keys: Keys) -> None:
    """etcd 3.4.23 answers the watch's progress requests with the current revision while
    a watcher is still catching up in 1,000-revision chunks; the replay must not take
    that for the end. A history long enough to need over a second of catching up, with
    one bad decision at the very end."""
    from concurrent.futures import ThreadPoolExecutor

    w1 = Candidate(client, keys, "kyiv", "w1")
    old = w1.campaign()
    w1.commit()
    filler = keys.namespace + "/filler/"
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put(f"{filler}{i % 64}", b"x"), range(14_000)))
    w2 = Candidate(client, keys, "kyiv", "w2").enter()
    w1.close()
    w2.campaign()
    w2.commit()
    rogue = UnfencedWriter(client, keys, "w1", old.token).write("kyiv")
    report = verify(client, keys)
    assert report.decisions == 3
    assert {v.revision for v in report.violations} == {rogue}
    w2.close()
