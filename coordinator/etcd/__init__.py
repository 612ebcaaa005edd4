"""The one boundary between this project and etcd.

A small client over etcd's own gRPC API (the generated stubs shipped by
``python3-etcd3`` as ``etcd3.etcdrpc``). We own this layer rather than use that
package's high-level client because coordination needs things it gets wrong or lacks:
range requests with create-revision bounds, watches that resume from a revision after a
stream error, failover that re-authenticates per member, and one place where every
gRPC error becomes a :mod:`coordinator.errors` exception.

Failover: one channel per endpoint; a request that finds its endpoint UNAVAILABLE is
retried once on each other endpoint. Every request we send is safe to repeat: campaign
keys are created by create-if-absent transactions, fenced writes carry their own
compare, keep-alives and reads are idempotent.

Only this package imports ``grpc`` or ``etcd3``; what it hands out are plain frozen
dataclasses (:mod:`coordinator.etcd.results`) and opaque transaction operations built
by :class:`EtcdClient`'s ``op_*`` and ``cmp_*`` methods.

- :mod:`~coordinator.etcd.channel`: configuration, one channel per endpoint, and the
  translation of gRPC errors;
- :mod:`~coordinator.etcd.client`: the requests, with failover;
- :mod:`~coordinator.etcd.watch`: one watch stream;
- :mod:`~coordinator.etcd.results`: what requests return.
"""

from __future__ import annotations

from coordinator.etcd.channel import EtcdConfig, prefix_end
from coordinator.etcd.client import EtcdClient, SortTarget
from coordinator.etcd.results import (
    Alarm,
    ClusterMember,
    KeyValue,
    MemberStatus,
    TxnResult,
    WatchBatch,
    WatchEvent,
)
from coordinator.etcd.watch import WatchStream

__all__ = [
    "Alarm",
    "ClusterMember",
    "EtcdClient",
    "EtcdConfig",
    "KeyValue",
    "MemberStatus",
    "SortTarget",
    "TxnResult",
    "WatchBatch",
    "WatchEvent",
    "WatchStream",
    "prefix_end",
]
