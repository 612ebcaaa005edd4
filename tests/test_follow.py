"""The ordered follower on real etcd: order from a cursor, batches that never split a
revision, deletes and malformed values, compaction (a Gap), member loss, prompt stop."""

from __future__ import annotations

import json
import threading
import time

import pytest

from coordinator.codec import encode
from coordinator.etcd import EtcdClient, EtcdConfig, KeyValue
from coordinator.keys import Keys
from coordinator.recipes.follow import DecisionFollower, Gap, Malformed, to_delivery
from coordinator.sinks import Delivery
from devtools.localetcd import EtcdCluster
from protos import dispatch_pb2 as pb


def put(client: EtcdClient, keys: Keys, city: str, token: int, tick: int) -> int:
    decision = pb.Decision(city=city, token=token, worker_id="w", solver="greedy", tick=tick)
    return client.put(keys.decision(city), encode(decision))


def collect(follower: DecisionFollower, count: int, timeout: float = 10.0) -> list[Delivery]:
    """Iterate ``follower`` on a thread until ``count`` deliveries (or the timeout)."""
    got: list[Delivery] = []
    done = threading.Event()

    def read() -> None:
        for batch in follower:
            got.extend(batch)
            if len(got) >= count:
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return got


def test_yields_in_revision_order_after_the_cursor(client: EtcdClient, keys: Keys) -> None:
    revisions = [put(client, keys, city, 7, n) for n, city in
                 enumerate(["paris", "rome", "paris", "oslo", "rome"])]
    cursor = revisions[1]
    with DecisionFollower(client, keys, after=cursor) as follower:
        got = collect(follower, 3)
        assert [d.revision for d in got] == revisions[2:]
        assert [d.city for d in got] == ["paris", "oslo", "rome"]
        assert all(d.token == 7 and d.decision.city == d.city for d in got)
        later = put(client, keys, "oslo", 8, 9)
        more = collect(follower, 1)
        assert [(d.city, d.revision, d.token) for d in more] == [("oslo", later, 8)]


def test_a_batch_never_splits_a_revision(client: EtcdClient, keys: Keys) -> None:
    ops = [client.op_put(keys.decision(c), encode(pb.Decision(city=c, token=3)))
           for c in ("a", "b", "c")]
    together = client.txn([], ops).revision
    alone = put(client, keys, "d", 3, 1)
    with DecisionFollower(client, keys, after=together - 1, batch_max=2) as follower:
        first = next(follower)
        assert [d.revision for d in first] == [together] * 3  # 3 > batch_max, one revision
        assert [d.revision for d in collect(follower, 1)] == [alone]


def test_deletes_yield_nothing_and_malformed_values_are_skipped(client: EtcdClient,
                                                                keys: Keys) -> None:
    start = put(client, keys, "paris", 1, 1)
    client.delete(keys.decision("paris"))
    bad = client.put(keys.decision("rome"), b"{not json")
    wrong = client.put(keys.decision("oslo"), encode(pb.Decision(city="rome")))
    good = put(client, keys, "rome", 2, 2)
    seen: list[Malformed] = []
    with DecisionFollower(client, keys, after=start, on_malformed=seen.append) as follower:
        got = collect(follower, 1)
        assert [(d.city, d.revision) for d in got] == [("rome", good)]
        assert [(m.key, m.revision) for m in seen] == [
            (keys.decision("rome"), bad), (keys.decision("oslo"), wrong)]
        assert follower.malformed == 2
        assert "names city 'rome'" in seen[1].reason


def test_compaction_past_the_cursor_yields_the_latest_per_city_and_a_gap() -> None:
    cluster = EtcdCluster(1).start()  # private: compacting the shared one cuts others
    client = EtcdClient(EtcdConfig(endpoints=(cluster.endpoints,), timeout=5))
    keys = Keys("/gap")
    try:
        cursor = put(client, keys, "paris", 1, 0)
        put(client, keys, "paris", 1, 1)
        last_paris = put(client, keys, "paris", 1, 2)
        last_rome = put(client, keys, "rome", 1, 1)
        client.put("/gap/other", "x")
        compacted = client.put("/gap/other", "y")
        client.compact(compacted)
        gaps: list[Gap] = []
        with DecisionFollower(client, keys, after=cursor, on_gap=gaps.append) as follower:
            got = collect(follower, 2)
            assert [(d.city, d.revision, d.decision.tick) for d in got] == [
                ("paris", last_paris, 2), ("rome", last_rome, 1)]
            assert gaps == [Gap(cursor + 1, compacted, ("paris", "rome"))]
            after = put(client, keys, "rome", 2, 2)
            assert [d.revision for d in collect(follower, 1)] == [after]
            assert follower.gaps == 1
    finally:
        client.close()
        cluster.close()


def test_survives_the_loss_of_its_member(cluster3: EtcdCluster) -> None:
    # the member the reader talks to first dies; a follower, so that the writer's puts
    # do not wait out an election (that is not what this test is about)
    leader = cluster3.leader()
    victim = next(m for m in cluster3.members if m is not leader)
    others = tuple(m.client_url for m in cluster3.members if m is not victim)
    reader = EtcdClient(EtcdConfig(endpoints=(victim.client_url, *others), timeout=3))
    writer = EtcdClient(EtcdConfig(endpoints=others, timeout=3))
    keys = Keys("/ha")
    try:
        written = [put(writer, keys, "paris", 1, 0)]
        with DecisionFollower(reader, keys, after=0) as follower:
            assert [d.revision for d in collect(follower, 1)] == written
            victim.kill()
            for n in range(1, 6):
                written.append(put(writer, keys, f"c{n % 2}", 1, n))
                time.sleep(0.1)
            got = collect(follower, 5, timeout=20)
            assert [d.revision for d in got] == written[1:]
    finally:
        reader.close()
        writer.close()


def test_stop_ends_an_idle_iteration_promptly(client: EtcdClient, keys: Keys) -> None:
    follower = DecisionFollower(client, keys, after=0)
    ended = threading.Event()

    def read() -> None:
        for _batch in follower:
            pass
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.5)
    started = time.monotonic()
    follower.stop()
    assert ended.wait(2)
    assert time.monotonic() - started < 2


def test_a_stored_decision_is_decoded_only_when_read() -> None:
    """The follower checks a value in the worker's form and leaves its message undecoded
    (a sink that stores the JSON never reads it); read, it is the message; a value in
    another form protobuf reads is decoded at once."""
    keys = Keys("/lazy")
    d = pb.Decision(city="paris", token=9, worker_id="w", solver="greedy",
                    assignments={"o1": "c1"})
    lazy = to_delivery(keys, KeyValue(keys.decision("paris"), encode(d), 3, 5, 1, 0))
    assert lazy.stored and lazy.token == 9 and "decision" not in vars(lazy)
    prepared = lazy.with_prepared("rows")
    assert prepared.prepared == "rows" and "decision" not in vars(prepared)
    assert lazy == Delivery("paris", 5, 9, d, encode(d), stored=True)  # decodes it
    assert vars(lazy)["decision"] == d and prepared.decision == d
    other = json.dumps({"city": "paris", "token": "9", "worker_id": "w"}).encode()
    eager = to_delivery(keys, KeyValue(keys.decision("paris"), other, 3, 6, 2, 0))
    assert not eager.stored and vars(eager)["decision"].worker_id == "w"
    with pytest.raises(ValueError, match="names city 'oslo'"):
        to_delivery(keys, KeyValue(keys.decision("paris"),
                                   encode(pb.Decision(city="oslo")), 3, 7, 3, 0))
