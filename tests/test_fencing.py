"""The fence: a decision is accepted only from the leader of the moment."""

from __future__ import annotations

import pytest

from coordinator.errors import FencedOut
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.recipes.election import Election
from coordinator.recipes.session import Session
from coordinator.recipes.store import DecisionStore
from protos import dispatch_pb2 as pb
from tests.etcd_server import EtcdCluster


def decision(city: str, token: int, worker: str) -> pb.Decision:
    return pb.Decision(city=city, token=token, worker_id=worker, solver="greedy")


def test_stale_token_is_rejected_after_the_lease_is_revoked(client: EtcdClient,
                                                              keys: Keys) -> None:
    store = DecisionStore(client, keys)
    session = Session(client, ttl=5)
    leader = Election(client, session, keys.election("paris")).campaign("w1")
    store.commit("paris", leader, decision("paris", leader.token, "w1"))

    session.close()  # revokes the lease: the candidate key is gone

    with pytest.raises(FencedOut):
        store.commit("paris", leader, decision("paris", leader.token, "w1"))
    latest = store.latest("paris")
    assert latest is not None and latest[0].worker_id == "w1"


def test_stale_token_is_rejected_after_the_key_is_recreated_by_a_new_campaign(
        client: EtcdClient, keys: Keys) -> None:
    """Same lease, same key name, new create revision: the old token must not pass."""
    store = DecisionStore(client, keys)
    session = Session(client, ttl=5)
    election = Election(client, session, keys.election("paris"))
    old = election.campaign("w1")
    election.resign()
    new = Election(client, session, keys.election("paris")).campaign("w1")

    assert new.key == old.key and new.token > old.token
    with pytest.raises(FencedOut):
        store.commit("paris", old, decision("paris", old.token, "w1"))
    store.commit("paris", new, decision("paris", new.token, "w1"))
    session.close()


def test_each_new_leader_holds_a_strictly_larger_token(client: EtcdClient, keys: Keys) -> None:
    store = DecisionStore(client, keys)
    tokens = []
    for i in range(4):
        session = Session(client, ttl=5)
        leader = Election(client, session, keys.election("rome")).campaign(f"w{i}")
        store.commit("rome", leader, decision("rome", leader.token, f"w{i}"))
        tokens.append(leader.token)
        session.close()
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_a_deposed_leader_cannot_overwrite_the_new_leaders_decision(client: EtcdClient,
                                                                     keys: Keys) -> None:
    store = DecisionStore(client, keys)
    first = Session(client, ttl=5)
    second = Session(client, ttl=5)
    old = Election(client, first, keys.election("oslo")).campaign("old")
    waiting = Election(client, second, keys.election("oslo"))
    waiting.enter("new")
    first.close()
    new = waiting.campaign("new")
    store.commit("oslo", new, decision("oslo", new.token, "new"))

    with pytest.raises(FencedOut):
        store.commit("oslo", old, decision("oslo", old.token, "old"))
    latest = store.latest("oslo")
    assert latest is not None and latest[0].worker_id == "new"
    second.close()


def test_a_batch_of_commits_fences_each_city_on_its_own(client: EtcdClient,
                                                        keys: Keys) -> None:
    """One etcd round trip, many cities: a stale token fails only its own city."""
    from concurrent.futures import ThreadPoolExecutor

    from coordinator.recipes.batcher import CommitBatcher

    batcher = CommitBatcher(client)
    store = DecisionStore(client, keys, batcher)
    session = Session(client, ttl=5)
    leaders = {c: Election(client, session, keys.election(c)).campaign("w1")
               for c in ("a", "b", "c", "d")}
    stale = leaders["c"]
    Election.resume(client, session, stale).resign()  # "c" is no longer ours

    def commit(city: str) -> str:
        try:
            store.commit(city, leaders[city], decision(city, leaders[city].token, "w1"))
            return "ok"
        except FencedOut:
            return "fenced"

    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            results = dict(zip(leaders, pool.map(commit, leaders), strict=True))
            assert results == {"a": "ok", "b": "ok", "c": "fenced", "d": "ok"}
    assert store.latest("c") is None
    assert batcher.commits == 20 and batcher.batches < 20  # several shared a round trip
    batcher.close()
    session.close()


def test_commit_many_sends_a_group_in_one_round_trip_and_fences_each_city_on_its_own(
        client: EtcdClient, keys: Keys) -> None:
    """A tick group's commits: one transaction, and a stale token fails its city only."""
    from coordinator.recipes.batcher import CommitBatcher
    from coordinator.recipes.store import Commit

    batcher = CommitBatcher(client)
    store = DecisionStore(client, keys, batcher)
    session = Session(client, ttl=5)
    leaders = {c: Election(client, session, keys.election(c)).campaign("w1")
               for c in ("a", "b", "c", "d")}
    Election.resume(client, session, leaders["c"]).resign()  # "c" is no longer ours

    outcomes = store.commit_many([Commit(c, leader, decision(c, leader.token, "w1"))
                                  for c, leader in leaders.items()])
    assert isinstance(outcomes[2], FencedOut) and outcomes[2].city == "c"
    revisions = [outcomes[i] for i in (0, 1, 3)]
    assert all(isinstance(r, int) for r in revisions) and len(set(revisions)) == 1
    assert batcher.batches == 1 and batcher.commits == 4
    assert store.latest("c") is None
    for c in ("a", "b", "d"):
        latest = store.latest(c)
        assert latest is not None and latest[0].token == leaders[c].token
    batcher.close()
    session.close()


def test_a_commit_gives_up_at_its_deadline_when_etcd_does_not_answer(
        etcd: EtcdCluster, keys: Keys) -> None:
    """A commit caught in an etcd outage is abandoned at its own deadline (the worker
    passes the moment its city's next tick is due) rather than the batcher's general
    timeout, so the next tick's fresh decision is sent as soon as etcd can take it."""
    import time

    from coordinator.errors import EtcdTimeout
    from coordinator.etcd import EtcdConfig
    from coordinator.recipes.batcher import CommitBatcher

    client = EtcdClient(EtcdConfig(endpoints=(etcd.endpoints,), timeout=5))
    batcher = CommitBatcher(client, timeout=5)
    store = DecisionStore(client, keys, batcher)
    session = Session(client, ttl=10)
    leader = Election(client, session, keys.election("lima")).campaign("w1")
    member = etcd.members[0]
    member.pause()
    try:
        started = time.monotonic()
        with pytest.raises(EtcdTimeout):
            store.commit("lima", leader, decision("lima", leader.token, "w1"), timeout=0.3)
        assert time.monotonic() - started < 1.0
    finally:
        member.resume()
    store.commit("lima", leader, decision("lima", leader.token, "w1"), timeout=2)
    assert store.latest("lima") is not None
    batcher.close()
    session.close()
    client.close()


def test_a_commit_whose_deadline_passed_in_the_queue_is_never_sent(
        client: EtcdClient, keys: Keys) -> None:
    """A decision that waited in the batcher past its deadline is stale: it is failed,
    not written."""
    import threading

    from coordinator.errors import EtcdTimeout
    from coordinator.recipes.batcher import CommitBatcher

    batcher = CommitBatcher(client)
    store = DecisionStore(client, keys, batcher)
    session = Session(client, ttl=5)
    leader = Election(client, session, keys.election("quito")).campaign("w1")
    # hold the sender thread inside a batch until the second commit's deadline is past
    entered, release = threading.Event(), threading.Event()
    original = client.txn

    def slow_txn(*args: object, **kwargs: object) -> object:
        entered.set()
        release.wait(5)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    client.txn = slow_txn  # type: ignore[method-assign]
    first = batcher.submit([leader.compare()], [client.op_put(keys.state("quito"), b"1")])
    assert entered.wait(5)
    second = batcher.submit([leader.compare()],
                            [client.op_put(keys.decision("quito"), b"{}")], timeout=0.05)
    threading.Timer(0.3, release.set).start()
    succeeded, _ = first.result(5)
    assert succeeded
    with pytest.raises(EtcdTimeout):
        second.result(5)
    client.txn = original  # type: ignore[method-assign]
    assert store.latest("quito") is None
    batcher.close()
    session.close()
