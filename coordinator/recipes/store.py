"""The fenced decision store: the only way a decision reaches etcd.

A decision (and, when it changes, the city's status) is written by one transaction::

    if create_revision(<leader's candidate key>) == token:
        put <ns>/decisions/<city>   (and <ns>/status/<city>)
    else:
        nothing

so a worker whose leadership ended — lease expired while it was paused, key deleted,
a newer leader elected — has its write rejected by etcd itself, however sure it is
that it still leads. The token is the candidate key's create revision, which grows with
every new leader, and is stored in the decision for downstream services to carry into
their own stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.codec import decode, encode
from coordinator.errors import FencedOut
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.recipes.batcher import CommitBatcher
from coordinator.recipes.election import LeaderKey
from protos import dispatch_pb2 as pb

__all__ = ["Commit", "DecisionStore"]


@dataclass(frozen=True)
class Commit:
    """One city's fenced write, for ``DecisionStore.commit_many``."""

    city: str
    leader: LeaderKey
    decision: pb.Decision
    status: pb.CityStatus | None = None
    timeout: float | None = None


class DecisionStore:
    """``batcher``: send commits through a ``CommitBatcher`` (one round trip for many
    cities, each still fenced by its own nested transaction)."""

    def __init__(self, client: EtcdClient, keys: Keys,
                 batcher: CommitBatcher | None = None) -> None:
        self._client = client
        self._keys = keys
        self._batcher = batcher

    def commit(self, city: str, leader: LeaderKey, decision: pb.Decision,
               status: pb.CityStatus | None = None, *, timeout: float | None = None) -> int:
        """Write ``decision`` (and ``status``) if ``leader`` still leads; return the
        revision it was written at. Raises ``FencedOut`` if the fence rejected it and
        ``EtcdTimeout`` if etcd did not answer within ``timeout`` seconds (a decision
        is worth nothing once the city's next one is due)."""
        return self._fenced(city, leader, self._ops(city, decision, status), timeout)

    def commit_many(self, commits: list[Commit]) -> list[int | Exception]:
        """``commit`` for several cities in as few round trips as possible (through the
        batcher; one at a time without it). Each city's revision, or the exception its
        own commit failed with (``FencedOut``, an ``EtcdError``), in order: every city
        is fenced on its own, and one city's stale token rejects that city only."""
        if self._batcher is None:
            outcomes: list[int | Exception] = []
            for c in commits:
                try:
                    outcomes.append(self.commit(c.city, c.leader, c.decision, c.status,
                                                timeout=c.timeout))
                except Exception as exc:  # handed back to the caller
                    outcomes.append(exc)
            return outcomes
        answers = self._batcher.commit_many([
            ([c.leader.compare()], self._ops(c.city, c.decision, c.status), c.timeout)
            for c in commits])
        results: list[int | Exception] = []
        for c, answer in zip(commits, answers, strict=True):
            if isinstance(answer, Exception):
                results.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                succeeded, revision = answer
                results.append(revision if succeeded
                               else FencedOut(c.city, c.leader.token, c.leader.key))
        return results

    def _ops(self, city: str, decision: pb.Decision,
             status: pb.CityStatus | None) -> list[object]:
        ops = [self._client.op_put(self._keys.decision(city), encode(decision))]
        if status is not None:
            ops.append(self._client.op_put(self._keys.status(city), encode(status)))
        return ops

    def write_status(self, city: str, leader: LeaderKey, status: pb.CityStatus) -> int:
        """Record a city's status; fenced like decisions so a deposed owner cannot
        overwrite the new owner's report."""
        return self._fenced(
            city, leader, [self._client.op_put(self._keys.status(city), encode(status))]
        )

    def _fenced(self, city: str, leader: LeaderKey, ops: list[object],
                timeout: float | None = None) -> int:
        if self._batcher is not None:
            succeeded, revision = self._batcher.commit([leader.compare()], ops,
                                                       timeout=timeout)
        else:
            result = self._client.txn([leader.compare()], ops, timeout=timeout)
            succeeded, revision = result.succeeded, result.revision
        if not succeeded:
            raise FencedOut(city, leader.token, leader.key)
        return revision

    def latest(self, city: str, *, revision: int = 0) -> tuple[pb.Decision, int] | None:
        """The decision current at ``revision`` (default: now) and its mod revision."""
        kv = self._client.get(self._keys.decision(city), revision=revision)
        if kv is None:
            return None
        return decode(pb.Decision, kv.value, what=f"decision of {city}"), kv.mod_revision

    def status(self, city: str) -> pb.CityStatus | None:
        kv = self._client.get(self._keys.status(city))
        return None if kv is None else decode(pb.CityStatus, kv.value, what="status")
