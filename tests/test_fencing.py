"""The fence: a decision is accepted only from the leader of the moment."""

from __future__ import annotations

import pytest

from coordinator.election import Election
from coordinator.errors import FencedOut
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.session import Session
from coordinator.store import DecisionStore
from protos import dispatch_pb2 as pb


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

    from coordinator.batcher import CommitBatcher

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
