"""Checks of etcd itself: its members, raft leader, alarms, database size and history.

:func:`read_cluster` asks every member once; each check then turns that one picture
into one finding (or none), so ``check_cluster`` is their sum in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coordinator.errors import DispatchError, EtcdAuthError, EtcdCompacted, EtcdError
from coordinator.etcd import ClusterMember, EtcdClient, MemberStatus
from coordinator.keys import Keys
from coordinator.ops.doctor.findings import Finding, Level, size

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "ClusterView",
    "check_alarms",
    "check_cluster",
    "check_db_size",
    "check_history",
    "check_member_count",
    "check_members_answer",
    "check_raft_lag",
    "check_raft_leader",
    "oldest_revision",
    "read_cluster",
]

#: etcd's default ``--quota-backend-bytes`` (2 GiB).
DEFAULT_QUOTA_BYTES = 2 * 1024**3
#: revisions of history kept without any compaction before we suggest configuring it
UNCOMPACTED_REVISIONS_WARNING = 1_000_000
#: raft index gap between members worth a warning (a member that cannot keep up)
RAFT_LAG_WARNING = 5_000


@dataclass(frozen=True)
class ClusterView:
    """The member list and what each member answered (or why it did not)."""

    members: list[ClusterMember]
    #: member id -> display name (its name, else its id in hex)
    names: dict[int, str]
    #: member id -> its status, for the members that answered
    answered: dict[int, MemberStatus]
    #: "name (why)" for each member that did not answer
    down: list[str]

    @property
    def quorum(self) -> int:
        return len(self.members) // 2 + 1


def _member_status(client: EtcdClient, url: str) -> MemberStatus:
    """``Status`` of one member, through our client if it is one of our endpoints,
    else through a short-lived client with the same TLS and credentials (members
    advertise URLs we were not given, e.g. the other members of a cluster)."""
    if url in client.config.endpoints:
        return client.status(url)
    config = replace(client.config, endpoints=(url,), timeout=min(client.config.timeout, 3.0))
    with EtcdClient(config) as probe:
        return probe.status()


def read_cluster(client: EtcdClient) -> ClusterView:
    """Ask every member for its status, through each of its client URLs in turn."""
    members = client.members()
    names = {m.id: m.name or f"{m.id:x}" for m in members}
    answered: dict[int, MemberStatus] = {}
    down: list[str] = []
    for member in members:
        name = names[member.id]
        if not member.client_urls:
            down.append(f"{name} (added but never started)")
            continue
        errors = []
        for url in member.client_urls:
            try:
                answered[member.id] = _member_status(client, url)
                break
            except DispatchError as exc:
                errors.append(str(exc))
        else:
            down.append(f"{name} ({errors[-1] if errors else 'no answer'})")
    return ClusterView(members, names, answered, down)


def check_members_answer(view: ClusterView) -> list[Finding]:
    """Every member answers; with some down, whether a quorum is left."""
    total, up = len(view.members), len(view.answered)
    if view.down:
        level: Level = "fail" if up < view.quorum else "warn"
        what = "no quorum: " if up < view.quorum else ""
        return [Finding(level, "etcd members",
                        f"{what}{up} of {total} members answer; down or "
                        f"unreachable from here: {'; '.join(view.down)}")]
    versions = sorted({s.version for s in view.answered.values()})
    who = "the only member answers" if total == 1 else f"all {total} members answer"
    return [Finding("ok", "etcd members", f"{who} (etcd {', '.join(versions)})")]


def check_member_count(view: ClusterView) -> list[Finding]:
    """An odd number of members, more than one."""
    total = len(view.members)
    if total == 1:
        return [Finding("warn", "etcd members",
                        "a single member: if it stops, every worker stops deciding; run 3 "
                        "or 5 members in production")]
    if total % 2 == 0:
        return [Finding("warn", "etcd members",
                        f"{total} members: an even count tolerates no more failures "
                        f"than {total - 1}; use an odd number")]
    return []


def check_raft_leader(view: ClusterView) -> list[Finding]:
    """The members that answer agree on one raft leader."""
    if not view.answered:
        return []
    leaders = {s.leader for s in view.answered.values()}
    leaders.discard(0)
    if not leaders:
        return [Finding("fail", "etcd leader", "no member knows a raft leader (no quorum?)")]
    if len(leaders) > 1:
        return [Finding("warn", "etcd leader",
                        "members disagree on the raft leader (an election is under way?)")]
    leader = next(iter(leaders))
    alone = sorted(view.names.get(i, f"{i:x}") for i, s in view.answered.items()
                   if s.leader == 0)
    if alone:
        # it answers clients but hears no leader while the others do: cut off from its
        # peers (a partition between members), or just electing
        return [Finding("warn", "etcd leader",
                        f"{', '.join(alone)} answer{'s' if len(alone) == 1 else ''} but "
                        f"know{'s' if len(alone) == 1 else ''} no raft leader while the others "
                        f"follow {view.names.get(leader, f'{leader:x}')}: cut off from "
                        "the other members? Workers sent there are refused and move on")]
    term = max(s.raft_term for s in view.answered.values())
    return [Finding("ok", "etcd leader", f"{view.names.get(leader, f'{leader:x}')} leads "
                                         f"(raft term {term})")]


def check_raft_lag(view: ClusterView) -> list[Finding]:
    """No member far behind the others in the raft log."""
    indexes = [s.raft_index for s in view.answered.values()]
    if len(indexes) > 1 and max(indexes) - min(indexes) > RAFT_LAG_WARNING:
        return [Finding("warn", "etcd leader",
                        f"a member lags {max(indexes) - min(indexes)} raft entries behind")]
    return []


def check_alarms(client: EtcdClient, view: ClusterView) -> list[Finding]:
    """No alarm raised (a NOSPACE alarm stops every write)."""
    try:
        alarms = client.alarms()
    except EtcdAuthError as exc:
        return [Finding("warn", "etcd alarms", f"not readable with these credentials: {exc}")]
    if not alarms:
        return [Finding("ok", "etcd alarms", "none")]
    out = []
    for alarm in alarms:
        hint = ("etcd refuses writes until it is compacted, defragmented and the alarm "
                "disarmed (`etcdctl alarm disarm`); see docs/operations.md"
                if alarm.kind == "NOSPACE" else "the member's data is corrupt: replace it")
        out.append(Finding("fail", "etcd alarms",
                           f"{alarm.kind} on member "
                           f"{view.names.get(alarm.member_id, alarm.member_id)}: {hint}"))
    return out


def check_db_size(view: ClusterView, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> list[Finding]:
    """The largest member database well under the quota."""
    if not view.answered:
        return []
    largest_id, largest = max(((mid, s.db_size) for mid, s in view.answered.items()),
                              key=lambda item: item[1])
    share = largest / quota_bytes if quota_bytes else 0.0
    message = (f"largest database {size(largest)} on {view.names.get(largest_id)} of a "
               f"{size(quota_bytes)} quota ({share:.0%})")
    if share >= 0.9:
        return [Finding("fail", "etcd db size",
                        message + ": compact and defragment now, or raise the quota")]
    if share >= 0.7:
        return [Finding("warn", "etcd db size",
                        message + ": plan compaction and defragmentation")]
    return [Finding("ok", "etcd db size", message)]


def check_cluster(client: EtcdClient, *, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> list[Finding]:
    """Members answer, one leader, quorum, no alarm, database size under the quota."""
    view = read_cluster(client)
    return [
        *check_members_answer(view),
        *check_member_count(view),
        *check_raft_leader(view),
        *check_raft_lag(view),
        *check_alarms(client, view),
        *check_db_size(view, quota_bytes),
    ]


def oldest_revision(client: EtcdClient, key: str, current: int) -> int:
    """The oldest revision etcd can still read (its compaction point, or 1), by
    bisection over count-only reads: about log2(revision) tiny requests."""
    def readable(revision: int) -> bool:
        try:
            client.range(key, prefix=True, revision=revision, count_only=True)
        except EtcdCompacted:
            return False
        except EtcdError as exc:
            if "compacted" in str(exc):
                return False
            raise
        return True

    if readable(1):
        return 1
    low, high = 1, current  # not readable at low, readable at high
    while high - low > 1:
        middle = (low + high) // 2
        if readable(middle):
            high = middle
        else:
            low = middle
    return high


def check_history(client: EtcdClient, keys: Keys) -> list[Finding]:
    """Is etcd compacting its history? ``dispatchctl history`` and ``verify`` read it,
    and without compaction it grows until the quota stops every write."""
    _, current = client.range(keys.namespace + "/", prefix=True, count_only=True)
    oldest = oldest_revision(client, keys.namespace + "/", current)
    kept = current - oldest + 1
    if oldest == 1 and current > UNCOMPACTED_REVISIONS_WARNING:
        return [Finding("warn", "etcd history",
                        f"never compacted: all {current} revisions are kept and the database "
                        "only grows; set --auto-compaction-mode/--auto-compaction-retention "
                        "(docs/operations.md, Retention)")]
    if oldest == 1:
        return [Finding("ok", "etcd history",
                        f"revisions 1..{current} kept (not compacted yet)")]
    return [Finding("ok", "etcd history",
                    f"revisions {oldest}..{current} kept ({kept} revisions); `dispatchctl "
                    f"history` and `verify` reach back to revision {oldest}")]
