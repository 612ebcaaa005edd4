"""Election semantics and interoperability with etcd's own ``etcdctl elect``."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

from coordinator.errors import LeaseLost, NotLeader
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.recipes.election import Election, leader_of
from coordinator.recipes.session import Session
from tests.conftest import wait_until
from tests.etcd_server import ETCDCTL, EtcdCluster, etcdctl_leader


def test_candidate_key_uses_etcds_layout(client: EtcdClient, keys: Keys) -> None:
    session = Session(client, ttl=5)
    leader = Election(client, session, keys.election("paris")).campaign("w1")
    assert leader.key == f"{keys.election('paris')}/{session.lease_id:x}"
    kv = client.get(leader.key)
    assert kv is not None and kv.lease == session.lease_id and kv.create_revision == leader.token
    session.close()


def test_etcdctl_elect_lists_our_leader(etcd: EtcdCluster, client: EtcdClient,
                                        keys: Keys) -> None:
    session = Session(client, ttl=5)
    Election(client, session, keys.election("paris")).campaign("worker-7")
    assert etcdctl_leader(etcd.endpoints, keys.election("paris")) == "worker-7"
    session.close()


def test_an_etcdctl_candidate_leads_and_we_wait_behind_it(etcd: EtcdCluster,
                                                          client: EtcdClient,
                                                          keys: Keys) -> None:
    prefix = keys.election("paris")
    proc = subprocess.Popen([ETCDCTL, f"--endpoints={etcd.endpoints}", "elect", prefix, "ops"],
                            stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (kv := leader_of(client, prefix)) and kv.value == b"ops",
                   message="etcdctl to lead")
        session = Session(client, ttl=5)
        won = threading.Event()
        cancel = threading.Event()

        def campaign() -> None:
            try:
                Election(client, session, prefix).campaign("w1", cancel=cancel)
                won.set()
            except NotLeader:
                pass

        thread = threading.Thread(target=campaign)
        thread.start()
        time.sleep(1.0)
        assert not won.is_set(), "a worker claimed leadership while etcdctl leads"

        proc.send_signal(signal.SIGINT)  # etcdctl resigns on interrupt
        proc.wait(10)
        assert won.wait(10), "worker did not take over after etcdctl resigned"
        assert etcdctl_leader(etcd.endpoints, prefix) == "w1"
        cancel.set()
        thread.join()
        session.close()
    finally:
        proc.kill()


def test_candidates_queue_in_creation_order(client: EtcdClient, keys: Keys) -> None:
    prefix = keys.election("rome")
    sessions = [Session(client, ttl=5) for _ in range(3)]
    elections = [Election(client, s, prefix) for s in sessions]
    first = elections[0].campaign("a")
    elections[1].enter("b")
    elections[2].enter("c")
    assert leader_of(client, prefix).value == b"a"  # type: ignore[union-attr]
    elections[0].resign()
    second = elections[1].campaign("b")
    assert second.token > first.token
    assert leader_of(client, prefix).value == b"b"  # type: ignore[union-attr]
    for s in sessions:
        s.close()


def test_entering_twice_is_idempotent_and_proclaim_updates_the_value(client: EtcdClient,
                                                                      keys: Keys) -> None:
    session = Session(client, ttl=5)
    election = Election(client, session, keys.election("rome"))
    rev = election.enter("a")
    assert election.enter("a") == rev
    leader = election.campaign("a")
    election.proclaim("b")
    kv = client.get(leader.key)
    assert kv is not None and kv.value == b"b" and kv.create_revision == leader.token
    session.close()


def test_a_campaign_whose_lease_dies_while_waiting_never_reports_leadership(
        client: EtcdClient, keys: Keys) -> None:
    prefix = keys.election("oslo")
    holder = Session(client, ttl=5)
    Election(client, holder, prefix).campaign("holder")
    waiter = Session(client, ttl=2)
    outcome: list[object] = []

    def campaign() -> None:
        try:
            outcome.append(Election(client, waiter, prefix).campaign("waiter"))
        except (LeaseLost, NotLeader) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=campaign)
    thread.start()
    time.sleep(0.3)
    waiter.orphan()  # stop keep-alives: the lease expires while the campaign waits
    time.sleep(3.0)
    holder.close()  # now the waiter's predecessor goes away
    thread.join(10)
    assert outcome and isinstance(outcome[0], LeaseLost | NotLeader)
    assert leader_of(client, prefix) is None


@pytest.mark.parametrize("ttl", [1, 2])
def test_keepalive_reports_lease_loss_when_etcd_forgets_the_lease(client: EtcdClient,
                                                                 ttl: int) -> None:
    session = Session(client, ttl=ttl)
    client.lease_revoke(session.lease_id)
    assert session.lost.wait(ttl + 2)
    assert session.expired()
