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

It also measures **availability**: the share of each city's periods in which it got a
decision (see :class:`Availability`). That part is a measurement, not a safety check:
it never adds a violation.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from coordinator.codec import decode
from coordinator.errors import CitySettingsError, EtcdCompacted, IncompleteHistory
from coordinator.etcd import EtcdClient, WatchEvent
from coordinator.keys import Keys
from coordinator.settings import parse_settings
from protos import dispatch_pb2 as pb

__all__ = ["Availability", "CityAvailability", "Report", "Violation", "availability", "merged",
           "missed_periods", "replay", "verify"]

#: Lateness (in periods) a decision may have and still be on time: a tenth of a period.
#: A decision 20 ms late on a 0.7 s period did arrive in its period; timer jitter is not
#: unavailability. A decision later than this counts *all* of its lateness.
DEFAULT_TOLERANCE = 0.1


def missed_periods(gap: float, period: float, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Periods without a decision in a ``gap`` of seconds between two decisions (see
    :class:`Availability`): ``gap / period - 1``, or none when that is at most
    ``tolerance``."""
    late = gap / period - 1.0
    return late if late > tolerance else 0.0


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
    #: how often each city got a decision (a measurement, never a violation)
    availability: Availability | None = None
    #: city -> [(revision, expected period or None)], as replayed: what
    #: :func:`availability` needs to measure again over other windows
    settings: dict[str, list[tuple[int, float | None]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class CityAvailability:
    """One city over the window: ``expected`` periods, of which ``missed`` passed with no
    decision. No-quorum time is taken out of both."""

    city: str
    period: float
    expected: float
    missed: float
    decisions: int
    #: longest time between two decisions (or a window edge and a decision), in seconds
    longest_gap: float
    #: when that gap ended (seconds since the epoch)
    longest_gap_at: float

    @property
    def fraction(self) -> float:
        if self.expected <= 0:
            return 1.0
        return max(0.0, 1.0 - self.missed / self.expected)


@dataclass
class Availability:
    """The fraction of periods in which each city received a decision.

    A city is expected to decide once per period (its ``periodSeconds``, as its settings
    said at the time) while it is enabled with usable settings. Cut the window into
    periods: availability is the share of them that contain a decision. So that the
    answer does not depend on where the cuts fall, it is averaged over every phase of
    the period grid: a gap of ``g`` seconds between two consecutive decisions (the
    window's edges count as decisions) holds ``max(0, g / period - 1)`` whole periods
    without a decision on average — none for a gap of one period, one for a skipped
    tick, 0.3 for a tick 30 % late. A decision at most ``tolerance`` periods late (a tenth
    by default) is on time and misses nothing: on the city's own schedule it still
    arrived within its period, and counting a timer's few milliseconds of jitter as lost
    periods would make the figure measure the machine's load rather than the
    coordinator. One later than that counts its whole lateness; ``tolerance=0`` counts
    every millisecond. Time in a no-quorum window is removed from gaps and from the expected
    count alike: without a quorum nobody can write anything.

    Times are the decisions' ``decidedAt``; the revisions of settings changes are placed
    in time by the next decision of any city.
    """

    start_time: float
    end_time: float
    tolerance: float
    excluded_seconds: float
    cities: dict[str, CityAvailability] = field(default_factory=dict)

    @property
    def expected(self) -> float:
        return sum(c.expected for c in self.cities.values())

    @property
    def missed(self) -> float:
        return sum(c.missed for c in self.cities.values())

    @property
    def overall(self) -> float:
        expected = self.expected
        return 1.0 if expected <= 0 else max(0.0, 1.0 - self.missed / expected)

    def lowest(self) -> CityAvailability | None:
        if not self.cities:
            return None
        return min(self.cities.values(), key=lambda c: (c.fraction, c.city))

    def summary(self) -> str:
        """One line, as ``dispatchctl verify`` prints it."""
        low = self.lowest()
        line = (f"availability {100 * self.overall:.2f}% of periods "
                f"({self.missed:.1f} missed of {self.expected:.0f}) over "
                f"{self.end_time - self.start_time:.1f}s, {len(self.cities)} cities")
        if self.tolerance:
            line += f" (on time within {self.tolerance:g} of a period)"
        if self.excluded_seconds:
            line += f", {self.excluded_seconds:.1f}s without quorum excluded"
        if low is not None:
            line += (f"; lowest {low.city} {100 * low.fraction:.2f}% (longest gap "
                     f"{low.longest_gap:.2f}s, period {low.period:g}s)")
        return line


def replay(client: EtcdClient, prefix: str, start_revision: int,
           end_revision: int) -> Iterator[WatchEvent]:
    """Every change under ``prefix`` from ``start_revision`` through ``end_revision``.

    A watch from an old revision catches up in chunks of 1,000 revisions, and etcd
    before 3.4.25 / 3.5.8 answers a progress request (``WatchStream`` sends one every
    second) with the *current* revision even while the watcher is still catching up.
    So an empty response is no proof that everything has been delivered: the replay
    first reads through the newest change of any key still present at
    ``end_revision``, and only then takes an empty response as the end (what can remain
    is deletions). Events of one revision always arrive in one response.
    """
    if end_revision < start_revision:
        return
    newest, _ = client.get_prefix(prefix, revision=end_revision, sort="mod",
                                  descending=True, limit=1, keys_only=True)
    must_reach = newest[0].mod_revision if newest else 0
    last = start_revision - 1
    stream = client.watch_stream(prefix, start_revision)
    try:
        for batch in stream:
            for event in batch.events:
                if event.kv.mod_revision > end_revision:
                    return
                last = event.kv.mod_revision
                yield event
            if last >= end_revision or (not batch.events and last >= must_reach):
                return
    finally:
        stream.close()
    raise IncompleteHistory(f"the watch on {prefix} ended at revision {last}, before "
                            f"revision {end_revision}")


def _settings_period(city: str, raw: bytes) -> float | None:
    """The period a city is expected to decide at, ``None`` if it is not expected to
    (disabled, or settings no worker can use)."""
    try:
        config = parse_settings(city, raw)
    except CitySettingsError:
        return None
    return config.period if config.enabled else None


def verify(client: EtcdClient, keys: Keys, *, start_revision: int = 1,
           end_revision: int | None = None,
           window: tuple[float, float] | None = None,
           no_quorum: Iterable[tuple[float, float]] = (),
           tolerance: float = DEFAULT_TOLERANCE) -> Report:
    """Check every decision from ``start_revision`` through ``end_revision`` (default:
    the current revision) and measure availability.

    Availability covers ``window`` (start, end in seconds since the epoch) if given,
    else the span of the decisions checked. ``no_quorum`` windows (start, end) are taken
    out of it.
    """
    if end_revision is None:
        _, end_revision = client.get_prefix(keys.namespace + "/", count_only=True)
    end = end_revision
    report = Report(start_revision, end)
    # city -> candidate key -> (create revision, value)
    candidates: dict[str, dict[str, tuple[int, str]]] = {}
    last_token: dict[str, int] = {}
    # city -> [(revision, period or None)]: when the city became expected to decide,
    # at which period, or stopped being expected
    settings: dict[str, list[tuple[int, float | None]]] = {}
    if start_revision > 1:
        kvs, _ = client.get_prefix(keys.elections, revision=start_revision - 1)
        for kv in kvs:
            parsed = keys.candidate(kv.key)
            if parsed:
                candidates.setdefault(parsed[0], {})[kv.key] = (
                    kv.create_revision, kv.value.decode(errors="replace"))
        kvs, _ = client.get_prefix(keys.cities, revision=start_revision - 1)
        for kv in kvs:
            city = Keys.tail(kv.key, keys.cities)
            settings[city] = [(start_revision, _settings_period(city, kv.value))]

    def events() -> Iterator[WatchEvent]:
        try:
            yield from replay(client, keys.namespace + "/", start_revision, end)
        except EtcdCompacted as exc:
            raise EtcdCompacted(
                f"history from revision {start_revision} has been compacted; verify from "
                f"a later revision (--from) or postpone compaction during the run",
                exc.compact_revision,
            ) from exc

    last_put: dict[str, int] = {}
    for event in events():
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
        if key.startswith(keys.cities):
            city = Keys.tail(key, keys.cities)
            period = None if event.kind == "delete" else _settings_period(city, event.kv.value)
            settings.setdefault(city, []).append((event.kv.mod_revision, period))
            continue
        if not key.startswith(keys.decisions) or event.kind != "put":
            continue
        city = Keys.tail(key, keys.decisions)
        revision = event.kv.mod_revision
        last_put[key] = revision
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
    # The replay must have seen the latest write of every decision key that exists at the
    # end: anything else means history was cut short, and the check would be hollow.
    live, _ = client.get_prefix(keys.decisions, revision=end, keys_only=True)
    for kv in live:
        if kv.mod_revision >= start_revision and last_put.get(kv.key) != kv.mod_revision:
            raise IncompleteHistory(
                f"the replay missed the write of {kv.key} at revision {kv.mod_revision}; "
                "run verify again")
    report.settings = settings
    report.availability = availability(report.decisions_by_city, settings, window=window,
                                       no_quorum=no_quorum, tolerance=tolerance)
    return report


def _decided_at(decision: pb.Decision) -> float:
    return float(decision.decided_at.ToNanoseconds()) / 1e9


def merged(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping (start, end) windows joined, in order: overlaps must not be left
    out twice."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _overlap(start: float, end: float, windows: Sequence[tuple[float, float]]) -> float:
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in windows)


def availability(decisions_by_city: dict[str, list[tuple[int, pb.Decision]]],
                 settings: dict[str, list[tuple[int, float | None]]], *,
                 window: tuple[float, float] | None = None,
                 no_quorum: Iterable[tuple[float, float]] = (),
                 tolerance: float = DEFAULT_TOLERANCE) -> Availability:
    """Availability of every city that was expected to decide during ``window``.

    ``settings`` gives, per city, the revisions at which its expected period changed
    (``None``: not expected to decide from then on), in revision order.
    """
    # revision -> time, from every decision: the clock of the revision's neighbourhood
    stamps = sorted((revision, _decided_at(d)) for history in decisions_by_city.values()
                    for revision, d in history)
    quorumless = merged([(float(a), float(b)) for a, b in no_quorum if b > a])
    if window is not None:
        start, stop = window
    elif stamps:
        start, stop = min(t for _, t in stamps), max(t for _, t in stamps)
    else:
        start = stop = time.time()
    result = Availability(start, stop, tolerance,
                          _overlap(start, stop, quorumless) if stop > start else 0.0)
    if stop <= start:
        return result
    revisions = [r for r, _ in stamps]
    times = [t for _, t in stamps]

    def time_of(revision: int) -> float:
        # the first decision at or after the revision (of any city) was made just after
        i = bisect_left(revisions, revision)
        return times[i] if i < len(times) else stop

    for city, changes in settings.items():
        # active segments (from, to, period) clipped to the window
        segments: list[tuple[float, float, float]] = []
        for i, (revision, period) in enumerate(changes):
            if period is None:
                continue
            seg_start = max(start, time_of(revision))
            seg_end = time_of(changes[i + 1][0]) if i + 1 < len(changes) else stop
            seg_end = min(seg_end, stop)
            if seg_end > seg_start:
                segments.append((seg_start, seg_end, period))
        if not segments:
            continue
        moments = sorted(_decided_at(d) for _, d in decisions_by_city.get(city, []))
        expected, missed, count, longest, longest_at = 0.0, 0.0, 0, 0.0, start
        for seg_start, seg_end, period in segments:
            inside = [t for t in moments if seg_start <= t <= seg_end]
            count += len(inside)
            points = [seg_start, *inside, seg_end]
            for a, b in itertools.pairwise(points):
                gap = b - a
                if gap > longest:
                    longest, longest_at = gap, b
                missed += missed_periods(gap - _overlap(a, b, quorumless), period, tolerance)
            expected += ((seg_end - seg_start) - _overlap(seg_start, seg_end, quorumless)) \
                / period
        result.cities[city] = CityAvailability(city, segments[-1][2], expected, missed,
                                               count, longest, longest_at)
    return result
