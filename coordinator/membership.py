"""Membership: each worker announces itself under ``<ns>/workers/<id>`` on its lease."""

from __future__ import annotations

from coordinator.codec import encode
from coordinator.errors import ConfigError
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.session import Session
from protos import dispatch_pb2 as pb

__all__ = ["WorkerIdTaken", "register"]


class WorkerIdTaken(ConfigError):
    """Another live session holds this worker id."""


def register(client: EtcdClient, keys: Keys, session: Session, info: pb.WorkerInfo) -> None:
    """Create or refresh our membership key; refuse an id held by another live lease.

    A worker restarted after kill -9 finds its old key until the old lease expires; the
    caller retries until then rather than steal the id from a possibly live process.
    """
    key = keys.worker(info.worker_id)
    info.lease_id = session.lease_hex
    value = encode(info)
    result = client.txn(
        [client.cmp_create_revision(key, 0)],
        [client.op_put(key, value, lease=session.lease_id)],
        [client.op_range(key)],
    )
    if result.succeeded:
        return
    existing = result.ranges()[0]
    if existing and existing[0].lease not in (0, session.lease_id):
        raise WorkerIdTaken(
            f"worker id {info.worker_id!r} is registered by another live session "
            f"(lease {existing[0].lease:x}); waiting for it to expire"
        )
    client.put(key, value, lease=session.lease_id)
