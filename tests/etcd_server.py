"""The test suite's etcd servers: see ``coordinator.localetcd`` (also used by the demo)."""

from coordinator.localetcd import ETCD, ETCDCTL, EtcdCluster, EtcdMember, etcdctl_leader, free_port

__all__ = ["ETCD", "ETCDCTL", "EtcdCluster", "EtcdMember", "etcdctl_leader", "free_port"]
