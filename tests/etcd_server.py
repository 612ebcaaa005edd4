"""The test suite's etcd servers: see ``devtools.localetcd`` (also used by the demo)."""

from devtools.localetcd import ETCD, ETCDCTL, EtcdCluster, EtcdMember, etcdctl_leader, free_port

__all__ = ["ETCD", "ETCDCTL", "EtcdCluster", "EtcdMember", "etcdctl_leader", "free_port"]
