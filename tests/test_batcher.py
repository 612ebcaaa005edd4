"""The commit batcher: an idle worker pays no hand-off, a busy one shares round trips."""

from __future__ import annotations

import threading

from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.recipes.batcher import CommitBatcher
from coordinator.recipes.election import Election
from coordinator.recipes.session import Session
from tests.conftest import wait_until


def test_an_idle_batcher_sends_a_commit_on_the_callers_own_thread(
        client: EtcdClient, keys: Keys) -> None:
    batcher = CommitBatcher(client)
    session = Session(client, ttl=5)
    leader = Election(client, session, keys.election("lima")).campaign("w1")
    senders: list[str] = []
    original = client.txn

    def txn(*args: object, **kwargs: object) -> object:
        senders.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    client.txn = txn  # type: ignore[method-assign]
    try:
        succeeded, _ = batcher.commit([leader.compare()],
                                      [client.op_put(keys.state("lima"), b"1")])
    finally:
        client.txn = original  # type: ignore[method-assign]
    assert succeeded and senders == [threading.current_thread().name]
    batcher.close()
    session.close()


def test_commits_arriving_while_one_is_in_flight_share_the_next_round_trip(
        client: EtcdClient, keys: Keys) -> None:
    batcher = CommitBatcher(client)
    session = Session(client, ttl=5)
    leader = Election(client, session, keys.election("lima")).campaign("w1")
    entered, release = threading.Event(), threading.Event()
    original = client.txn
    calls = 0

    def txn(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            release.wait(5)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    client.txn = txn  # type: ignore[method-assign]
    results: list[bool] = []

    def commit(i: int) -> None:
        ok, _ = batcher.commit([leader.compare()],
                               [client.op_put(keys.state(f"lima{i}"), b"1")])
        results.append(ok)

    first = threading.Thread(target=commit, args=(0,))
    first.start()
    assert entered.wait(5)  # the first commit is in flight, sent by its own thread
    others = [threading.Thread(target=commit, args=(i,)) for i in range(1, 6)]
    for t in others:
        t.start()
    # all five wait for the round trip in flight
    wait_until(lambda: len(batcher._queue) == 5, timeout=5, message="five queued commits")
    release.set()
    for t in [first, *others]:
        t.join(5)
    client.txn = original  # type: ignore[method-assign]
    assert results == [True] * 6
    assert calls == 2 and batcher.commits == 6 and batcher.batches == 2
    batcher.close()
    session.close()
