"""What etcd requests return, as plain frozen dataclasses.

The converters read the generated protobuf messages field by field, so nothing outside
:mod:`coordinator.etcd` touches one. Fields newer etcd versions added are read when the
stubs we run know them and are ``None`` (or empty) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Alarm",
    "ClusterMember",
    "KeyValue",
    "MemberStatus",
    "TxnResult",
    "WatchBatch",
    "WatchEvent",
]


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd stores it (``lease`` 0: attached to none)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @staticmethod
    def from_pb(kv: Any) -> KeyValue:
        return KeyValue(
            key=kv.key.decode(),
            value=bytes(kv.value),
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


@dataclass(frozen=True)
class TxnResult:
    """A transaction's outcome: whether its compare held, the store revision, and what
    its range and nested-transaction operations answered, each in order."""

    succeeded: bool
    revision: int
    range_results: tuple[tuple[KeyValue, ...], ...] = ()
    nested_results: tuple[bool, ...] = ()

    @staticmethod
    def from_pb(response: Any) -> TxnResult:
        ranges, nested = [], []
        for op in response.responses:
            kind = op.WhichOneof("response")
            if kind == "response_range":
                ranges.append(tuple(KeyValue.from_pb(kv) for kv in op.response_range.kvs))
            elif kind == "response_txn":
                nested.append(bool(op.response_txn.succeeded))
        return TxnResult(bool(response.succeeded), int(response.header.revision),
                         tuple(ranges), tuple(nested))

    def ranges(self) -> list[list[KeyValue]]:
        """The key-values of every range operation, in order."""
        return [list(kvs) for kvs in self.range_results]

    def nested(self) -> list[bool]:
        """Whether each nested transaction (``EtcdClient.op_txn``) succeeded, in order."""
        return list(self.nested_results)


#: etcd's alarm kinds by number (``etcdserverpb.AlarmType``; the stubs we ship predate
#: CORRUPT, so the names are ours)
_ALARM_KINDS = {1: "NOSPACE", 2: "CORRUPT"}


def _optional(message: Any, name: str) -> Any:
    """A field newer etcd versions added, or ``None`` when the stubs we run predate it."""
    return getattr(message, name) if name in message.DESCRIPTOR.fields_by_name else None


@dataclass(frozen=True)
class MemberStatus:
    """One member's answer to ``Status`` (``etcdctl endpoint status``)."""

    endpoint: str
    member_id: int
    cluster_id: int
    version: str
    db_size: int
    #: bytes of the database actually in use (etcd 3.4+; ``None`` if unknown)
    db_size_in_use: int | None
    #: the raft leader's member id as this member knows it (0: none)
    leader: int
    raft_index: int
    raft_term: int
    errors: tuple[str, ...] = ()

    @staticmethod
    def from_pb(endpoint: str, status: Any) -> MemberStatus:
        in_use = _optional(status, "dbSizeInUse")
        return MemberStatus(
            endpoint=endpoint,
            member_id=int(status.header.member_id),
            cluster_id=int(status.header.cluster_id),
            version=str(status.version),
            db_size=int(status.dbSize),
            db_size_in_use=None if in_use is None else int(in_use),
            leader=int(status.leader),
            raft_index=int(status.raftIndex),
            raft_term=int(status.raftTerm),
            errors=tuple(_optional(status, "errors") or ()),
        )


@dataclass(frozen=True)
class ClusterMember:
    """One entry of the member list (``etcdctl member list``)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    @staticmethod
    def from_pb(member: Any) -> ClusterMember:
        return ClusterMember(
            id=int(member.ID),
            name=str(member.name),
            peer_urls=tuple(member.peerURLs),
            client_urls=tuple(member.clientURLs),
            is_learner=bool(_optional(member, "isLearner")),
        )


@dataclass(frozen=True)
class Alarm:
    """An alarm raised on a member: ``kind`` is etcd's name for it (``NOSPACE``,
    ``CORRUPT``), or its number for a kind we do not know."""

    member_id: int
    kind: str

    @staticmethod
    def from_pb(alarm: Any) -> Alarm:
        number = int(alarm.alarm)
        return Alarm(int(alarm.memberID), _ALARM_KINDS.get(number, str(number)))


@dataclass(frozen=True)
class WatchEvent:
    """One change: ``prev`` is the key before it, when the watch asked for it."""

    kind: Literal["put", "delete"]
    kv: KeyValue
    prev: KeyValue | None


@dataclass(frozen=True)
class WatchBatch:
    """One watch response: its events and the store revision it is current to."""

    revision: int
    events: list[WatchEvent]
