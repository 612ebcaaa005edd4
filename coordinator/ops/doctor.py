"""``dispatchctl doctor``: look at etcd and the namespace and say, in plain words,
what is wrong.

Each check produces :class:`Finding` lines at one of three levels: ``ok``, ``warn``
(worth a look, nothing is broken yet) and ``fail`` (dispatch is or will soon be
affected). The command exits non-zero when any check fails.

Clock skew, honestly. etcd has no API that tells its wall-clock time, and it does not
need one: leases count elapsed time on the etcd leader, so a skewed clock cannot
expire a lease early or late. Clocks matter for the *workers*: every decision carries
its writer's ``decidedAt``, which consumers and ``dispatchctl status`` compare with
their own clock. We measure that soundly by watching fresh decisions arrive: a
decision is stamped just before its commit, so for each one
``received_here - decidedAt = delay - offset`` where ``delay >= 0`` (commit and watch
delivery) and ``offset`` is the worker's clock minus ours. Hence:

- ``received_here - decidedAt < -tolerance`` for any decision **proves** the worker's
  clock is ahead of ours by more than the tolerance (fail);
- a minimum over several decisions above ``tolerance`` means its clock is behind ours,
  *or* every commit took that long (warn: we cannot tell the two apart, and both are
  worth a look);
- otherwise the worker is within the tolerance of this host's clock, up to the latency
  of its fastest commit.

So keep the host running the doctor on NTP, like the workers.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from coordinator.balancer import CityNeeds, Member, plan
from coordinator.codec import decode
from coordinator.errors import (
    CitySettingsError,
    DispatchError,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
)
from coordinator.etcd import EtcdClient, WatchStream
from coordinator.keys import Keys
from coordinator.ops.overview import Overview, read_overview
from coordinator.settings import parse_settings
from protos import dispatch_pb2 as pb

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "Finding",
    "Level",
    "Report",
    "check_clocks",
    "check_cluster",
    "check_history",
    "check_namespace",
    "diagnose",
]

Level = Literal["ok", "warn", "fail"]

#: etcd's default ``--quota-backend-bytes`` (2 GiB).
DEFAULT_QUOTA_BYTES = 2 * 1024**3
#: revisions of history kept without any compaction before we suggest configuring it
UNCOMPACTED_REVISIONS_WARNING = 1_000_000
#: raft index gap between members worth a warning (a member that cannot keep up)
RAFT_LAG_WARNING = 5_000
#: how many names a finding lists before "and N more"
MAX_NAMES = 8

_ALARMS = {1: "NOSPACE", 2: "CORRUPT"}


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    message: str

    def line(self) -> str:
        return f"{self.level.upper():<5} {self.check}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, check: str, message: str) -> None:
        self.findings.append(Finding(level, check, message))

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    def count(self, level: Level) -> int:
        return sum(1 for f in self.findings if f.level == level)

    @property
    def ok(self) -> bool:
        return self.count("fail") == 0


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# -- etcd itself ------------------------------------------------------------------------


def _member_status(client: EtcdClient, url: str) -> object:
    """``Status`` of one member, through our client if it is one of our endpoints,
    else through a short-lived client with the same TLS and credentials (members
    advertise URLs we were not given, e.g. the other members of a cluster)."""
    if url in client.config.endpoints:
        return client.status(url)
    config = replace(client.config, endpoints=(url,), timeout=min(client.config.timeout, 3.0))
    with EtcdClient(config) as probe:
        return probe.status()


def check_cluster(client: EtcdClient, *, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> list[Finding]:
    """Members answer, one leader, quorum, no alarm, database size under the quota."""
    out: list[Finding] = []
    members = list(client.members())
    names = {m.ID: m.name or f"{m.ID:x}" for m in members}
    answered: dict[int, object] = {}
    down: list[str] = []
    for member in members:
        name = names[member.ID]
        if not member.clientURLs:
            down.append(f"{name} (added but never started)")
            continue
        errors = []
        for url in member.clientURLs:
            try:
                answered[member.ID] = _member_status(client, url)
                break
            except DispatchError as exc:
                errors.append(str(exc))
        else:
            down.append(f"{name} ({errors[-1] if errors else 'no answer'})")
    quorum = len(members) // 2 + 1
    if down:
        level: Level = "fail" if len(answered) < quorum else "warn"
        what = "no quorum: " if len(answered) < quorum else ""
        out.append(Finding(level, "etcd members",
                           f"{what}{len(answered)} of {len(members)} members answer; down or "
                           f"unreachable from here: {'; '.join(down)}"))
    else:
        versions = sorted({getattr(s, "version", "?") for s in answered.values()})
        who = "the only member answers" if len(members) == 1 else \
            f"all {len(members)} members answer"
        out.append(Finding("ok", "etcd members", f"{who} (etcd {', '.join(versions)})"))
    if len(members) == 1:
        out.append(Finding("warn", "etcd members",
                           "a single member: if it stops, every worker stops deciding; run 3 "
                           "or 5 members in production"))
    elif len(members) % 2 == 0:
        out.append(Finding("warn", "etcd members",
                           f"{len(members)} members: an even count tolerates no more failures "
                           f"than {len(members) - 1}; use an odd number"))

    leaders = {getattr(s, "leader", 0) for s in answered.values()}
    leaders.discard(0)
    if not answered:
        pass
    elif not leaders:
        out.append(Finding("fail", "etcd leader", "no member knows a raft leader (no quorum?)"))
    elif len(leaders) > 1:
        out.append(Finding("warn", "etcd leader",
                           "members disagree on the raft leader (an election is under way?)"))
    else:
        leader = next(iter(leaders))
        term = max(int(getattr(s, "raftTerm", 0)) for s in answered.values())
        out.append(Finding("ok", "etcd leader", f"{names.get(leader, f'{leader:x}')} leads "
                                                f"(raft term {term})"))
    indexes = [int(getattr(s, "raftIndex", 0)) for s in answered.values()]
    if len(indexes) > 1 and max(indexes) - min(indexes) > RAFT_LAG_WARNING:
        out.append(Finding("warn", "etcd leader",
                           f"a member lags {max(indexes) - min(indexes)} raft entries behind"))

    try:
        alarms = [a for a in client.alarms() if a.alarm != 0]
    except EtcdAuthError as exc:
        out.append(Finding("warn", "etcd alarms", f"not readable with these credentials: {exc}"))
        alarms = None
    if alarms is None:
        pass
    elif alarms:
        for alarm in alarms:
            kind = _ALARMS.get(int(alarm.alarm), str(alarm.alarm))
            hint = ("etcd refuses writes until it is compacted, defragmented and the alarm "
                    "disarmed (`etcdctl alarm disarm`); see docs/operations.md"
                    if kind == "NOSPACE" else "the member's data is corrupt: replace it")
            out.append(Finding("fail", "etcd alarms",
                               f"{kind} on member {names.get(alarm.memberID, alarm.memberID)}: "
                               f"{hint}"))
    else:
        out.append(Finding("ok", "etcd alarms", "none"))

    if answered:
        largest_id, largest = max(
            ((mid, int(getattr(s, "dbSize", 0))) for mid, s in answered.items()),
            key=lambda item: item[1],
        )
        share = largest / quota_bytes if quota_bytes else 0.0
        message = (f"largest database {_size(largest)} on {names.get(largest_id)} of a "
                   f"{_size(quota_bytes)} quota ({share:.0%})")
        if share >= 0.9:
            out.append(Finding("fail", "etcd db size", message + ": compact and defragment "
                                                                 "now, or raise the quota"))
        elif share >= 0.7:
            out.append(Finding("warn", "etcd db size", message + ": plan compaction and "
                                                                 "defragmentation"))
        else:
            out.append(Finding("ok", "etcd db size", message))
    return out


def _oldest_revision(client: EtcdClient, key: str, current: int) -> int:
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
    oldest = _oldest_revision(client, keys.namespace + "/", current)
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


# -- the namespace ------------------------------------------------------------------------

_ROOTS = ("cities", "workers", "election", "decisions", "status", "state", "drain")


def check_namespace(client: EtcdClient, keys: Keys, *, overview: Overview | None = None,
                    now: float | None = None) -> list[Finding]:
    """Cities and workers: settings readable, every enabled city owned and deciding on
    time, no city failing, nothing left over from removed cities or workers."""
    out: list[Finding] = []
    now = time.time() if now is None else now
    ov = overview if overview is not None else read_overview(client, keys, now=now)
    kvs, _ = client.get_prefix(keys.namespace + "/", keys_only=True)

    # workers
    live = set(ov.workers)
    serving = live - ov.drained
    enabled = [v for v in ov.cities if v.enabled and not v.settings_error]
    if not live:
        out.append(Finding("fail" if enabled else "warn", "workers",
                           f"no live worker under {keys.workers}"))
    elif not serving:
        out.append(Finding("fail" if enabled else "warn", "workers",
                           f"all {len(live)} live workers are drained: nobody takes a city "
                           "(`dispatchctl undrain WORKER`)"))
    else:
        drained = sorted(live & ov.drained)
        extra = f", {len(drained)} drained ({_names(drained)})" if drained else ""
        out.append(Finding("ok", "workers", f"{len(live)} live{extra}"))
    stale = sorted(ov.drained - live)
    if stale:
        out.append(Finding("warn", "workers",
                           f"drain marks for workers that are not running: {_names(stale)} "
                           "(they apply when such a worker starts; `dispatchctl undrain` "
                           "removes them)"))
    malformed_workers = sorted(
        Keys.tail(kv.key, keys.workers) for kv in kvs
        if kv.key.startswith(keys.workers) and Keys.tail(kv.key, keys.workers) not in live
    )
    if malformed_workers:
        out.append(Finding("warn", "workers", "membership values that are not WorkerInfo "
                                              f"JSON: {_names(malformed_workers)}"))

    # cities
    if not ov.cities:
        out.append(Finding("warn", "cities", f"no city under {keys.cities}"))
    bad = [v for v in ov.cities if v.settings_error]
    for view in bad:
        out.append(Finding("fail", "cities", f"{view.city}: {view.settings_error}"))
    unowned = [v.city for v in enabled if not v.owner]
    if unowned:
        out.append(Finding("fail", "cities", f"{len(unowned)} enabled cities have no owner: "
                                             f"{_names(unowned)}"
                                             + _why_unowned(client, keys, ov, unowned)))
    late = [v for v in enabled if v.owner and v.late and v.state != "failing"]
    if late:
        details = [f"{v.city} ({'never' if v.decision_age is None else f'{v.decision_age:.1f}s'}"
                   f" ago, period {v.period:g}s)" for v in late]
        out.append(Finding("fail", "cities", f"{len(late)} cities decided longer than 3 periods "
                                             f"ago: {_names(details)}"))
    failing = [v for v in enabled if v.state == "failing"]
    for view in failing[:MAX_NAMES]:
        out.append(Finding("fail", "cities", f"{view.city} is failing on {view.owner or '?'}: "
                                             f"{view.last_error or 'no error recorded'}"))
    if len(failing) > MAX_NAMES:
        out.append(Finding("fail", "cities", f"and {len(failing) - MAX_NAMES} more failing "
                                             "cities (`dispatchctl status`)"))
    if len(serving) >= 2:
        alone = [v.city for v in enabled if v.owner and not v.standbys]
        if alone:
            out.append(Finding("warn", "cities",
                               f"{len(alone)} cities have no hot standby queued: "
                               f"{_names(alone)} (a failover waits for a new campaign)"))
    if enabled and not (unowned or late or failing):
        disabled = len(ov.cities) - len(enabled) - len(bad)
        note = f" ({disabled} disabled)" if disabled else ""
        out.append(Finding("ok", "cities", f"{len(enabled)} enabled cities, all owned and "
                                           f"deciding on time{note}"))

    # leftovers
    cities = {v.city for v in ov.cities}
    orphans: dict[str, set[str]] = defaultdict(set)
    unknown: list[str] = []
    for kv in kvs:
        rest = Keys.tail(kv.key, keys.namespace + "/")
        root, _, tail = rest.partition("/")
        if root not in _ROOTS or not tail:
            unknown.append(kv.key)
        elif root in ("decisions", "status", "state") and tail not in cities:
            orphans[tail].add(root)
        elif root == "election":
            city = tail.partition("/")[0]
            if city not in cities:
                orphans[city].add("election")
    if orphans:
        names = sorted(orphans)
        described = [f"{c} ({'/'.join(sorted(orphans[c]))})" for c in names]
        out.append(Finding("warn", "leftovers",
                           f"keys of {len(names)} cities that have no settings: "
                           f"{_names(described)}"
                           " — left by `city remove` without --purge, or written before the "
                           "city was added"))
    if unknown:
        out.append(Finding("warn", "leftovers", f"{len(unknown)} keys outside the documented "
                                                f"layout: {_names(sorted(unknown))}"))
    return out


def _why_unowned(client: EtcdClient, keys: Keys, ov: Overview, cities: list[str]) -> str:
    """Explain unowned cities the balancer cannot place (required labels nobody has)."""
    needs: dict[str, CityNeeds] = {}
    kvs, _ = client.get_prefix(keys.cities)
    for kv in kvs:
        city = Keys.tail(kv.key, keys.cities)
        if city not in cities:
            continue
        try:
            config = parse_settings(city, kv.value)
        except CitySettingsError:
            continue
        needs[city] = CityNeeds(config.require_labels, config.prefer_labels)
    members = [Member(w, info.capacity or 1.0, dict(info.labels), w in ov.drained)
               for w, info in ov.workers.items()]
    if not needs or not members:
        return ""
    orphans = sorted(plan(needs, members, standbys=0).orphans)
    if not orphans:
        return ""
    return (f"; no live, undrained worker carries the labels required by "
            f"{_names(orphans)}")


# -- clocks -------------------------------------------------------------------------------


@dataclass
class _Samples:
    minimum: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def check_clocks(client: EtcdClient, keys: Keys, *, overview: Overview | None = None,
                 sample_seconds: float = 3.0, tolerance: float = 1.0,
                 clock: Callable[[], float] = time.time) -> list[Finding]:
    """Compare each deciding worker's clock with this host's (see the module doc)."""
    if sample_seconds <= 0:
        return []
    ov = overview if overview is not None else read_overview(client, keys)
    owners = {v.owner for v in ov.cities if v.owner and v.enabled}
    if not owners:
        return [Finding("ok", "clocks", "no worker is deciding: worker clocks not measured")]
    samples = _Samples()
    enough = threading.Event()
    stream: WatchStream = client.watch_stream(keys.decisions, ov.revision + 1)

    def read() -> None:
        try:
            for batch in stream:
                received = clock()
                for event in batch.events:
                    if event.kind != "put":
                        continue
                    try:
                        decision = decode(pb.Decision, event.kv.value)
                    except ValueError:
                        continue
                    stamped = decision.decided_at.ToNanoseconds() / 1e9
                    if not decision.worker_id or stamped <= 0:
                        continue
                    gap = received - stamped
                    worker = decision.worker_id
                    samples.minimum[worker] = min(samples.minimum.get(worker, gap), gap)
                    samples.count[worker] += 1
                if all(samples.count.get(w, 0) >= 3 for w in owners):
                    enough.set()
                    return
        except DispatchError:
            pass
        finally:
            enough.set()

    reader = threading.Thread(target=read, name="doctor clocks", daemon=True)
    reader.start()
    enough.wait(sample_seconds)
    stream.close()
    reader.join(2)

    out: list[Finding] = []
    measured = dict(samples.minimum)
    ahead = {w: -gap for w, gap in measured.items() if gap < -tolerance}
    behind = {w: gap for w, gap in measured.items() if gap > tolerance}
    for worker, seconds in sorted(ahead.items()):
        out.append(Finding("fail", "clocks",
                           f"{worker}'s clock is at least {seconds:.1f}s ahead of this host's "
                           "(its decisions carry a decidedAt in our future): fix NTP there"))
    for worker, seconds in sorted(behind.items()):
        out.append(Finding("warn", "clocks",
                           f"{worker}'s decisions arrive {seconds:.1f}s or more after their "
                           "decidedAt: its clock is behind this host's by up to that much, or "
                           "its commits are that slow"))
    fine = sorted(set(measured) - set(ahead) - set(behind))
    unmeasured = sorted(owners - set(measured))
    if fine:
        total = sum(samples.count[w] for w in fine)
        out.append(Finding("ok", "clocks",
                           f"{_plural(len(fine), 'worker')} within {tolerance:g}s of this "
                           f"host's clock (from {total} fresh decisions)"))
    if unmeasured:
        out.append(Finding("warn", "clocks",
                           f"no decision from {_names(unmeasured)} in {sample_seconds:g}s: "
                           "their clocks were not measured"))
    return out


# -- all of it ----------------------------------------------------------------------------


def diagnose(client: EtcdClient, keys: Keys, *, quota_bytes: int = DEFAULT_QUOTA_BYTES,
             skew_sample: float = 3.0, skew_tolerance: float = 1.0,
             on_finding: Callable[[Finding], None] | None = None) -> Report:
    """Run every check; findings are also handed to ``on_finding`` as they come, so a
    terminal shows progress while the clock check samples."""
    report = Report()

    def add(findings: Iterable[Finding]) -> None:
        for finding in findings:
            report.findings.append(finding)
            if on_finding is not None:
                on_finding(finding)

    def guarded(check: str, run: Callable[[], list[Finding]]) -> bool:
        try:
            add(run())
        except DispatchError as exc:
            add([Finding("fail", check, f"could not check: {exc}")])
            return False
        return True

    if not guarded("etcd members", lambda: check_cluster(client, quota_bytes=quota_bytes)):
        return report  # etcd cannot be reached: every other check would fail the same way
    guarded("etcd history", lambda: check_history(client, keys))
    overview: list[Overview] = []

    def namespace() -> list[Finding]:
        overview.append(read_overview(client, keys))
        return check_namespace(client, keys, overview=overview[0])

    if guarded("namespace", namespace) and skew_sample > 0:
        guarded("clocks", lambda: check_clocks(client, keys, overview=overview[0],
                                               sample_seconds=skew_sample,
                                               tolerance=skew_tolerance))
    return report
