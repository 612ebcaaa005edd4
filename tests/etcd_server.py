"""The test suite's etcd servers: see ``devtools.localetcd`` (also used by the demo); which
etcd binaries they run is ``DISPATCH_TEST_ETCD`` (``make test ETCD=3.5``)."""

from devtools.localetcd import (
    BINARIES,
    ETCD,
    ETCDCTL,
    EtcdCluster,
    EtcdMember,
    etcdctl_leader,
    free_port,
)

__all__ = ["BINARIES", "ETCD", "ETCDCTL", "EtcdCluster", "EtcdMember", "etcdctl_leader",
           "free_port"]
