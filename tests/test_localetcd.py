"""The test suite's own etcd servers: ports that other processes cannot take."""

from __future__ import annotations

import socket
from pathlib import Path

from devtools.localetcd import EtcdCluster, free_port


def test_free_ports_are_outside_the_ephemeral_range_and_never_repeat() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if low > 12000:
        assert max(ports) < low


def test_a_member_whose_port_was_taken_starts_again_on_new_ports() -> None:
    cluster = EtcdCluster(1)
    taken = cluster.members[0].client_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            cluster.start(timeout=20)
            assert cluster.members[0].running()
            assert cluster.members[0].client_port != taken
            cluster.etcdctl("put", "k", "v")
        finally:
            cluster.close()
