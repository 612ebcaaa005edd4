"""Leader election with etcd's own ``concurrency.Election`` semantics and key layout.

A candidate is the key ``<prefix>/<lease id in lower-case hex>``, created under the
candidate's lease. The leader is the key with the lowest create revision under the
prefix; a candidate waits until every key created before its own is deleted. Because
the layout is etcd's own, ``etcdctl elect -l <prefix>`` prints the leader's value, and a
candidate started with ``etcdctl elect <prefix> <value>`` competes on equal terms.

Leadership is proven by a :class:`LeaderKey`: the candidate key and its create
revision, the *fencing token*. Every write made on behalf of the leader carries
``LeaderKey.compare()`` in its transaction, so a leader that lost its key (lease
expired while it was paused, key deleted by an operator) can no longer write anything,
whatever it believes.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from coordinator.errors import EtcdError, LeaseLost, NotLeader
from coordinator.etcd import EtcdClient, KeyValue
from coordinator.recipes.session import Session

__all__ = ["Election", "LeaderKey", "leader_of", "wait_deletes"]


@dataclass(frozen=True)
class LeaderKey:
    """Proof of leadership: a candidate key and its create revision (the token)."""

    prefix: str
    key: str
    token: int
    lease: int

    def compare(self) -> Any:
        """The transaction compare that holds only while this leadership lasts."""
        return EtcdClient.cmp_create_revision(self.key, self.token)


def leader_of(client: EtcdClient, prefix: str, *, revision: int = 0) -> KeyValue | None:
    """The current leader's key (lowest create revision under ``prefix/``), if any."""
    kvs, _ = client.range(_slash(prefix), prefix=True, sort="create", limit=1,
                          revision=revision)
    return kvs[0] if kvs else None


def _slash(prefix: str) -> str:
    return prefix if prefix.endswith("/") else prefix + "/"


def wait_deletes(client: EtcdClient, prefix: str, max_create_revision: int, *,
                 cancel: threading.Event | None = None, session: Session | None = None,
                 poll: float = 0.5) -> None:
    """Wait until no key under ``prefix/`` has a create revision ≤ ``max_create_revision``.

    Like etcd's ``waitDeletes`` it waits on the newest such key (the immediate
    predecessor) only, so candidates form a queue and a leader's departure wakes one
    successor, not all of them. Returns early with ``LeaseLost`` when ``session`` dies:
    a candidate whose lease expired must never go on to report leadership.
    """
    while True:
        if cancel is not None and cancel.is_set():
            raise NotLeader("campaign cancelled")
        if session is not None:
            session.check()
        kvs, revision = client.range(_slash(prefix), prefix=True, sort="create",
                                     descending=True, limit=1,
                                     max_create_revision=max_create_revision)
        if not kvs:
            return
        _wait_delete(client, kvs[0].key, revision, cancel=cancel, session=session, poll=poll)


def _wait_delete(client: EtcdClient, key: str, revision: int, *,
                 cancel: threading.Event | None, session: Session | None,
                 poll: float) -> None:
    stream = client.watch_stream(key, revision + 1)
    done = threading.Event()

    def read() -> None:
        try:
            for batch in stream:
                if any(e.kind == "delete" and e.kv.key == key for e in batch.events):
                    break
        except EtcdError:
            pass  # the caller re-reads the predecessor and watches again
        finally:
            done.set()

    reader = threading.Thread(target=read, name=f"wait-delete {key}", daemon=True)
    reader.start()
    try:
        while not done.wait(poll):
            if cancel is not None and cancel.is_set():
                return
            if session is not None and session.expired():
                return
    finally:
        stream.close()


class Election:
    """One election on ``prefix`` for one session, with the verbs of etcd's Go
    ``concurrency.Election`` that are used here: campaign (or its two halves, ``enter``
    and ``confirm``, which ``Campaigns`` drives from one watch for many cities),
    proclaim, resign, and withdraw (give a candidacy up, leading or not).
    ``leader_of`` reads the current leader."""

    def __init__(self, client: EtcdClient, session: Session, prefix: str) -> None:
        self._client = client
        self._session = session
        self.prefix = prefix.rstrip("/")
        self.key = f"{self.prefix}/{session.lease_hex}"
        self._leader: LeaderKey | None = None

    @classmethod
    def resume(cls, client: EtcdClient, session: Session, leader: LeaderKey) -> Election:
        """An election whose leadership was won earlier (etcd's ``ResumeElection``)."""
        election = cls(client, session, leader.prefix)
        election._leader = leader
        return election

    def enter(self, value: str) -> int:
        """Create this session's candidate key if absent; return its create revision.

        Idempotent, like Go's ``Campaign`` before it waits: entering again finds the
        existing key (and updates its value if it differs).
        """
        client = self._client
        result = client.txn(
            [client.cmp_create_revision(self.key, 0)],
            [client.op_put(self.key, value, lease=self._session.lease_id)],
            [client.op_range(self.key)],
        )
        if result.succeeded:
            return result.revision
        existing = result.ranges()[0]
        if not existing:
            # The key vanished between compare and read: the lease died in between.
            raise LeaseLost(f"candidate key {self.key} disappeared while entering")
        kv = existing[0]
        if kv.value.decode(errors="replace") != value:
            client.txn([client.cmp_create_revision(self.key, kv.create_revision)],
                       [client.op_put(self.key, value, lease=self._session.lease_id)])
        return kv.create_revision

    def campaign(self, value: str, *, cancel: threading.Event | None = None) -> LeaderKey:
        """Block until elected. Raises ``NotLeader`` when cancelled, ``LeaseLost`` when
        the session dies while waiting (the candidate key is then gone anyway)."""
        revision = self.enter(value)
        try:
            wait_deletes(self._client, self.prefix, revision - 1,
                         cancel=cancel, session=self._session)
            # Go's Campaign can report leadership after its own lease expired. Only
            # claim it after checking that our key is still the one we created.
            leader = self.confirm(revision)
            if leader is None:
                raise LeaseLost(f"candidate key {self.key} was deleted while waiting")
        except BaseException:
            self.withdraw()
            raise
        return leader

    def confirm(self, revision: int) -> LeaderKey | None:
        """Read etcd: is our key, created at ``revision``, the leader now?"""
        first = leader_of(self._client, self.prefix)
        if first is None or first.key != self.key or first.create_revision != revision:
            return None
        self._leader = LeaderKey(self.prefix, self.key, revision, self._session.lease_id)
        return self._leader

    def proclaim(self, value: str) -> None:
        """Change the leader's value without a new election (fenced)."""
        leader = self._require_leader()
        client = self._client
        result = client.txn([leader.compare()],
                            [client.op_put(leader.key, value, lease=leader.lease)])
        if not result.succeeded:
            self._leader = None
            raise NotLeader(f"{self.prefix}: not leader any more (proclaim rejected)")

    def resign(self) -> None:
        """Give leadership up: delete our key if it is still ours."""
        leader = self._require_leader()
        self._client.txn([leader.compare()], [self._client.op_delete(leader.key)])
        self._leader = None

    def withdraw(self) -> None:
        """Delete our candidate key whether or not it leads (a cancelled campaign)."""
        with contextlib.suppress(EtcdError):  # if etcd is away, the lease takes the key
            self._client.delete(self.key)
        self._leader = None

    def _require_leader(self) -> LeaderKey:
        if self._leader is None:
            raise NotLeader(f"{self.prefix}: not leader")
        return self._leader
