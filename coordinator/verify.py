"""An independent check of a namespace's history: was every decision made by the leader
of its time?

It trusts nothing the workers say about themselves. It replays etcd's own revision
history of the election and decision keys (a watch from an old revision returns every
change since, in order) and checks, for every accepted decision of every city:

1. its token equals the create revision of the candidate key that led the city (lowest
   create revision under the city's election prefix) just before the decision was
   written;
2. tokens never decrease from one decision to the next;
3. its ``workerId`` is the value (the worker id) of that leading candidate key.

History must not be compacted past ``start_revision`` for the check to be complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from coordinator.codec import decode
from coordinator.errors import EtcdCompacted
from coordinator.etcd import EtcdClient, WatchEvent
from coordinator.keys import Keys
from protos import dispatch_pb2 as pb

__all__ = ["Report", "Violation", "replay", "verify"]


@dataclass(frozen=True)
class Violation:
    city: str
    revision: int
    message: str

    def __str__(self) -> str:
        return f"{self.city} @ revision {self.revision}: {self.message}"


@dataclass
class Report:
    start_revision: int
    end_revision: int
    decisions: int = 0
    cities: set[str] = field(default_factory=set)
    violations: list[Violation] = field(default_factory=list)
    decisions_by_city: dict[str, list[tuple[int, pb.Decision]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def replay(client: EtcdClient, prefix: str, start_revision: int,
           end_revision: int) -> Iterator[WatchEvent]:
    """Every change under ``prefix`` from ``start_revision`` through ``end_revision``."""
    if end_revision < start_revision:
        return
    stream = client.watch_stream(prefix, start_revision)
    try:
        for batch in stream:
            for event in batch.events:
                if event.kv.mod_revision > end_revision:
                    return
                yield event
                if event.kv.mod_revision == end_revision:
                    return
            if batch.revision >= end_revision and not batch.events:
                return
    finally:
        stream.close()


def verify(client: EtcdClient, keys: Keys, *, start_revision: int = 1) -> Report:
    _, end = client.get_prefix(keys.namespace + "/", count_only=True)
    report = Report(start_revision, end)
    # city -> candidate key -> (create revision, value)
    candidates: dict[str, dict[str, tuple[int, str]]] = {}
    last_token: dict[str, int] = {}
    if start_revision > 1:
        kvs, _ = client.get_prefix(keys.elections, revision=start_revision - 1)
        for kv in kvs:
            parsed = keys.candidate(kv.key)
            if parsed:
                candidates.setdefault(parsed[0], {})[kv.key] = (
                    kv.create_revision, kv.value.decode(errors="replace"))
    try:
        events = list(replay(client, keys.namespace + "/", start_revision, end))
    except EtcdCompacted as exc:
        raise EtcdCompacted(
            f"history from revision {start_revision} has been compacted; verify from a "
            f"later revision (--from) or postpone compaction during the run",
            exc.compact_revision,
        ) from exc
    for event in events:
        key = event.kv.key
        parsed = keys.candidate(key)
        if parsed is not None:
            city = parsed[0]
            if event.kind == "delete":
                candidates.get(city, {}).pop(key, None)
            else:
                candidates.setdefault(city, {})[key] = (
                    event.kv.create_revision, event.kv.value.decode(errors="replace"))
            continue
        if not key.startswith(keys.decisions) or event.kind != "put":
            continue
        city = Keys.tail(key, keys.decisions)
        revision = event.kv.mod_revision
        report.decisions += 1
        report.cities.add(city)

        def violation(message: str, city: str = city, revision: int = revision) -> None:
            report.violations.append(Violation(city, revision, message))

        try:
            decision = decode(pb.Decision, event.kv.value, what="decision")
        except ValueError as exc:
            violation(str(exc))
            continue
        report.decisions_by_city.setdefault(city, []).append((revision, decision))
        queue = sorted(candidates.get(city, {}).values())
        if not queue:
            violation(f"decision with token {decision.token} by {decision.worker_id!r} "
                      "written while the city had no candidate at all")
        else:
            leader_rev, leader_value = queue[0]
            if decision.token != leader_rev:
                violation(f"token {decision.token} by {decision.worker_id!r} but the leader "
                          f"at revision {revision - 1} was {leader_value!r} with token "
                          f"{leader_rev}")
            elif decision.worker_id != leader_value:
                violation(f"workerId {decision.worker_id!r} but the leading candidate key "
                          f"(token {leader_rev}) belongs to {leader_value!r}")
        previous = last_token.get(city, 0)
        if decision.token < previous:
            violation(f"token went down from {previous} to {decision.token}")
        last_token[city] = max(previous, decision.token)
    return report
