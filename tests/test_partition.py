"""Partitions between etcd members while every member still answers clients.

The members reach each other through ``devtools.peerlink`` proxies, so a test cuts the
raft traffic between two members and nothing else: the isolated member still accepts
gRPC connections, which is what makes this fault harder than a member that is down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coordinator.codec import decode
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.doctor.cluster import check_cluster
from coordinator.ops.verify import verify
from coordinator.settings import CityConfig
from devtools.localetcd import EtcdCluster, EtcdMember
from protos import dispatch_pb2 as pb
from tests.conftest import WorkerProcess, wait_until
from tests.test_cluster import _decisions_continue

pytestmark = pytest.mark.cluster


def _isolated(cluster: EtcdCluster, which: str) -> EtcdMember:
    leader = cluster.leader()
    if which == "leader":
        return leader
    return next(m for m in cluster.members if m is not leader)


def _endpoints_from(cluster: EtcdCluster, first: EtcdMember) -> str:
    """The cluster's client URLs with ``first`` first: the member a client tries first."""
    return ",".join([first.client_url, *(m.client_url for m in cluster.members
                                          if m is not first)])


def _leaderless(member: EtcdMember) -> bool:
    with EtcdClient(EtcdConfig(endpoints=(member.client_url,), timeout=1.0)) as probe:
        return probe.status().leader == 0


@pytest.mark.parametrize("which", ["leader", "follower"])
def test_a_member_cut_from_its_peers_sends_requests_on_to_the_majority(
        linked_cluster3: EtcdCluster, which: str) -> None:
    """A member that answers clients but has no raft leader refuses at once ("no
    leader"), so a request sent to it first is served by the majority well inside its
    timeout, instead of waiting that whole timeout for a member that cannot commit."""
    cluster = linked_cluster3
    cut = _isolated(cluster, which)
    assert cluster.links is not None
    timeout = 10.0
    client = EtcdClient(EtcdConfig(endpoints=tuple(_endpoints_from(cluster, cut).split(",")),
                                   timeout=timeout))
    try:
        client.put("/partition/before", "1")
        cluster.links.isolate(cut.name)
        wait_until(lambda: _leaderless(cut), timeout=15, message=f"{cut.name} to lose its leader")
        others = [m for m in cluster.members if m is not cut]
        wait_until(lambda: not _leaderless(others[0]), timeout=15,
                   message="the majority to elect a leader")
        for i in range(3):
            client._current = 0  # the isolated member first, every time
            started = time.monotonic()
            client.put("/partition/during", str(i))
            assert time.monotonic() - started < timeout / 3, \
                f"a put waited {time.monotonic() - started:.1f}s on the isolated member"
            assert client.endpoint != cut.client_url
        # the isolated member still answers, knowing no leader, and `dispatchctl
        # doctor` names it
        with EtcdClient(EtcdConfig(endpoints=(cut.client_url,), timeout=1.0)) as alone:
            assert alone.status().leader == 0
        findings = [f for f in check_cluster(client) if f.check == "etcd leader"]
        assert [f.level for f in findings] == ["warn"], findings
        assert cut.name in findings[0].message and "no raft leader" in findings[0].message
    finally:
        cluster.links.heal()
        client.close()
    cluster.wait_ready()
    with EtcdClient(EtcdConfig(endpoints=(cut.client_url,), timeout=5.0)) as rejoined:
        kv = wait_until(lambda: rejoined.get("/partition/during"), timeout=15,
                        message="the healed member to catch up")
        assert kv.value == b"2"


def _leases(client: EtcdClient, keys: Keys) -> dict[str, str]:
    """worker -> the lease it is registered under (``<ns>/workers/<id>``): a worker that
    lost its lease registers again under a new one."""
    kvs, _ = client.get_prefix(keys.workers)
    infos = [decode(pb.WorkerInfo, kv.value, what="worker info") for kv in kvs]
    return {info.worker_id: info.lease_id for info in infos}


@pytest.mark.parametrize("which", ["leader", "follower"])
def test_workers_talking_to_a_partitioned_member_keep_their_cities(
        linked_cluster3: EtcdCluster, tmp_path: Path, which: str) -> None:
    """Workers whose first endpoint is the member cut off (the raft leader cut from both
    followers, or one follower alone) move to the majority and keep their leases (each
    registered under the same lease before and after), decisions keep coming, and etcd's
    history holds only fenced decisions of the leader of their time."""
    cluster = linked_cluster3
    assert cluster.links is not None
    keys = Keys("/dispatch")
    cut = _isolated(cluster, which)
    majority = [m for m in cluster.members if m is not cut]
    client = EtcdClient(EtcdConfig(endpoints=tuple(m.client_url for m in majority), timeout=3))
    cities = ("paris", "rome", "oslo")
    for city in cities:
        client.put(keys.city(city), CityConfig(city, "greedy", 0.3).encode())
    endpoints = _endpoints_from(cluster, cut)
    workers = [WorkerProcess(endpoints, "/dispatch", f"w{i}", tmp_path, ttl=3)
               for i in range(2)]
    try:
        for city in cities:
            _decisions_continue(client, keys, city, 0.5)
        leases = _leases(client, keys)
        assert len(leases) == 2, leases
        cluster.links.isolate(cut.name)
        try:
            for city in cities:
                _decisions_continue(client, keys, city, 2.0)
        finally:
            cluster.links.heal()
        cluster.wait_ready()
        for city in cities:
            _decisions_continue(client, keys, city, 1.0)
        assert _leases(client, keys) == leases, "a worker lost its lease to the partition"
        report = verify(client, keys)
        assert report.ok, report.violations
        for w in workers:
            assert w.process.poll() is None and "Traceback" not in w.log()
    finally:
        for w in workers:
            w.close()
        client.close()
