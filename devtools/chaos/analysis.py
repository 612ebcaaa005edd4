"""What a chaos run found: per-fault decision gaps, availability, what the workers hold.

Everything here works on what the harness recorded, on the report of
``coordinator.ops.verify`` (etcd's whole history replayed) and on the sink's check
(``devtools.pgcheck``, in a :class:`SinkOutcome`): :func:`analyse` gathers it into a
:class:`ChaosResult`, whose exit code is the run's verdict.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.ops.verify import Availability, Report, availability, merged, missed_periods
from devtools.chaos.config import RECOVERY_MARGIN, ChaosConfig
from devtools.chaos.faults import ETCD_KINDS, FLOORS, SINK_KINDS, SOLVER_KINDS, WORKER_KINDS, Fault
from devtools.chaos.fleet import Resources
from devtools.pgcheck import PgCheckResult

__all__ = ["FD_SLACK", "THREAD_SLACK", "ChaosResult", "GapStat", "SinkOutcome", "analyse",
           "fenced_out", "floor_per_fault", "gap_stats", "grew", "tracebacks"]


@dataclass
class GapStat:
    """Decision gaps laid at the door of one kind of fault (see :func:`gap_stats`)."""

    kind: str
    faults: int
    longest: float = 0.0
    city: str = ""
    period: float = 0.0
    at: float = 0.0
    #: each fault's own longest gap
    worst_per_fault: list[float] = field(default_factory=list)
    #: the same, for faults that overlapped no other fault concerning every city
    isolated: list[float] = field(default_factory=list)
    #: periods missed in the gaps laid at this kind's door (no-quorum time left out)
    missed: float = 0.0

    @property
    def typical(self) -> float:
        return statistics.median(self.worst_per_fault) if self.worst_per_fault else 0.0


def floor_per_fault(kind: str, config: ChaosConfig, periods: dict[str, float]) -> float:
    """The city-periods one fault of ``kind`` must cost (``faults.FLOORS``): its floor
    in seconds times the periods per second of the cities it stops, a worker's share
    of them for a worker's fault."""
    what, over = FLOORS.get(kind, ("none", "all"))
    seconds = {"ttl": float(config.ttl),
               "election": config.etcd_election_ms / 1000.0}.get(what, 0.0)
    rate = sum(1.0 / p for p in periods.values() if p > 0)
    return seconds * rate / (config.workers if over == "worker" else 1)


@dataclass
class SinkOutcome:
    """How the relays and PostgreSQL ended the run."""

    relays: int
    #: etcd's newest decision once the workers had stopped
    latest: int
    #: the sink's cursor when the harness stopped waiting (None: unreadable)
    cursor: int | None
    #: seconds from the workers' stop until the cursor reached ``latest`` (None: never)
    caught_up_in: float | None
    #: relay starts over the run, restarts after faults included
    starts: int
    #: the database against etcd's history (None: the check could not run)
    check: PgCheckResult | None
    #: why the check could not run
    error: str = ""

    @property
    def caught_up(self) -> bool:
        return self.caught_up_in is not None

    @property
    def ok(self) -> bool:
        return self.check is not None and self.check.ok


@dataclass
class ChaosResult:
    config: ChaosConfig
    seed: int
    started: float
    ended: float
    faults: list[Fault]
    no_quorum: list[tuple[float, float]]
    report: Report | None
    gaps: dict[str, GapStat]
    owners: dict[str, int]
    stale_decisions: list[str]
    problems: list[str]
    #: tracebacks in worker logs, by their last line
    tracebacks: Counter[str]
    fenced_out: int
    base: Path
    periods: dict[str, float]
    #: cities on the test-slow solver (targets of slow-solve)
    slow_cities: list[str] = field(default_factory=list)
    #: windows in which etcd had no leader that was up (``Etcd.probe_writes``)
    unwritable: list[tuple[float, float]] = field(default_factory=list)
    #: availability with those windows left out as well as the no-quorum ones: what
    #: the coordinator made of the time in which etcd could take a write
    writable_availability: Availability | None = None
    #: each worker's threads, descriptors and solver processes once warm and once
    #: settled after the faults (``None``: not running then)
    resources: dict[str, tuple[Resources | None, Resources | None]] = field(
        default_factory=dict)
    #: the headline figure counting every millisecond of lateness (no on-time tolerance)
    strict_availability: Availability | None = None
    #: the relays and their database (None: a run without a sink)
    sink: SinkOutcome | None = None

    @property
    def violations(self) -> int:
        return len(self.report.violations) if self.report is not None else -1

    @property
    def recovered(self) -> bool:
        return (bool(self.owners) and all(n > 0 for n in self.owners.values())
                and not self.stale_decisions
                and (self.sink is None or self.sink.caught_up))

    @property
    def exit_code(self) -> int:
        """1: a violation in etcd, a finding in the sink, or either check not run; 3:
        not recovered (the fleet, or the relays not caught up); else 0."""
        if self.report is None or not self.report.ok:
            return 1
        if self.sink is not None and not self.sink.ok:
            return 1
        return 0 if self.recovered else 3

    def by_kind(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)


#: Growth of a worker's holdings over the run that is not a leak. Threads: its pool of
#: tick threads (``WorkerConfig.tick_threads``, 8) starts with the 1-4 that spread-out
#: ticks need and grows under the bursts that faults cause (a pause, a failover's
#: cities arriving at once) up to its size, and a thread pool never shrinks; gRPC's
#: own threads come and go by a few with its connections. Every Python thread of a
#: worker once warm and after a storm, by name (``py-spy dump``): the same, but 3-4
#: ``tick_N`` against 8. Workers, the restarted ones too, settle at 32-33 threads,
#: from 23-28 once warm. Descriptors: a connection or a solver pipe being replaced.
#: (``tests/test_hygiene.py`` counts Python's and gRPC's threads apart for a single
#: worker under churn, with one tick thread.)
THREAD_SLACK = 12
FD_SLACK = 8


def grew(before: Resources | None, after: Resources | None) -> bool:
    """Whether a worker holds more after the run than it did once warm, beyond
    :data:`THREAD_SLACK` and :data:`FD_SLACK`; solver processes must not grow at all."""
    if before is None or after is None:
        return False
    return (after.threads > before.threads + THREAD_SLACK
            or after.fds > before.fds + FD_SLACK or after.solvers > before.solvers)


def gap_stats(report: Report, faults: list[Fault], periods: dict[str, float],
              window: tuple[float, float], ttl: float,
              no_quorum: list[tuple[float, float]] | None = None,
              unwritable: list[tuple[float, float]] | None = None) -> dict[str, GapStat]:
    """The longest decision gap of any city caused by each kind's faults; ``(none)``
    for gaps that began with no fault in effect.

    A gap is caused by the faults in effect when the city missed its first tick (one
    period after its last decision) or, if none was, its second: a tick in flight when a
    fault struck can hang as well. A fault is in effect from its injection to its
    healing + TTL + ``RECOVERY_MARGIN``. A ``slow-solve`` concerns its own city; a
    worker fault or a ``solver-kill``, the cities that worker was deciding; an etcd
    fault, every city. A gap counts as availability counts it: a decision late by at
    most a tenth of a period (``verify.missed_periods``) misses nothing. A
    fault is *isolated* when no other fault that concerns every city overlaps it: its
    gaps are its own doing (``GapStat.isolated``). The sink's faults are downstream of
    etcd and cost no decision: they are left out. A gap is charged to etcd's faults
    whole, and to any other without the time etcd could take no write (``no_quorum``,
    and ``unwritable``: no leader that was up): a cut that heals just as a quorum loss
    strikes is not charged the quorum's absence.
    """
    faults = [f for f in faults if f.kind not in SINK_KINDS]
    start, end = window
    quorumless = no_quorum or []
    stopped = merged([*quorumless, *(unwritable or [])])
    stats = {kind: GapStat(kind, sum(1 for f in faults if f.kind == kind))
             for kind in sorted({f.kind for f in faults})}
    stats["(none)"] = GapStat("(none)", 0)
    spans = [(f, f.started, (f.healed or end) + ttl + RECOVERY_MARGIN) for f in faults]
    overall = [(i, s, e) for i, (f, s, e) in enumerate(spans) if f.kind not in SOLVER_KINDS]
    isolated = {
        i for i, (_, s, e) in enumerate(spans)
        if not any(j != i and s2 < e and e2 > s for j, s2, e2 in overall)
    }
    worst: dict[int, float] = {}
    clean: dict[int, float] = {}  # leaving out gaps of a city whose solver was stalled
    for city, history in report.decisions_by_city.items():
        moments = sorted((d.decided_at.ToNanoseconds() / 1e9, d.worker_id) for _, d in history)
        moments = [m for m in moments if start <= m[0] <= end]
        for (a, owner), (b, _) in itertools.pairwise(moments):
            gap = b - a
            period = periods.get(city, 0.0)
            late = a + period
            if late >= b:
                continue  # on time

            def concerns(f: Fault, city: str = city, owner: str = owner) -> bool:
                if f.kind == "slow-solve":
                    return f.target == city
                if f.kind in WORKER_KINDS or f.kind in SOLVER_KINDS:
                    return f.target == owner  # the worker that was deciding the city
                return True

            hit = [i for i, (f, s, e) in enumerate(spans) if s <= late < e and concerns(f)]
            if not hit:
                hit = [i for i, (f, s, e) in enumerate(spans)
                       if s < late + period and e > late and concerns(f)]
            lost = gap - _overlap(a, b, quorumless)
            if period > 0:
                missed = missed_periods(lost, period)  # as availability counts it
                kinds = {spans[i][0].kind for i in hit} or {"(none)"}
                for kind in kinds:
                    stats[kind].missed += missed / len(kinds)
            own = gap - _overlap(a, b, stopped)  # what a fault outside etcd is charged
            length = {i: gap if spans[i][0].kind in ETCD_KINDS else own for i in hit}
            stalled = any(spans[i][0].kind == "slow-solve" for i in hit)
            for i, n in length.items():
                worst[i] = max(worst.get(i, 0.0), n)
                if not stalled or spans[i][0].kind == "slow-solve":
                    clean[i] = max(clean.get(i, 0.0), n)
            for stat, n in ([(stats[spans[i][0].kind], n) for i, n in length.items()]
                            or [(stats["(none)"], own)]):
                if n > stat.longest:
                    stat.longest, stat.city, stat.at = n, city, b
                    stat.period = periods.get(city, 0.0)
    for i, gap in worst.items():
        stat = stats[spans[i][0].kind]
        stat.worst_per_fault.append(gap)
        if i in isolated and i in clean:
            stat.isolated.append(clean[i])
    return stats


def _overlap(a: float, b: float, windows: list[tuple[float, float]]) -> float:
    """How much of ``[a, b]`` the (disjoint) ``windows`` cover."""
    return sum(max(0.0, min(b, w1) - max(a, w0)) for w0, w1 in windows)


def fenced_out(logs: Iterable[Path]) -> int:
    """Stale writes etcd refused during the run, as the workers logged them."""
    count = 0
    for path in logs:
        with contextlib.suppress(OSError):
            count += path.read_text(errors="replace").count("fenced out:")
    return count


def tracebacks(logs: Iterable[Path]) -> list[str]:
    """Tracebacks in worker logs, by their last line: unexpected errors, whatever the
    outcome."""
    found = []
    for path in logs:
        with contextlib.suppress(OSError):
            lines = path.read_text(errors="replace").splitlines()
            for i, line in enumerate(lines):
                if line.startswith("Traceback"):
                    tail = next((x for x in lines[i + 1:] if x and not x.startswith(" ")), "")
                    found.append(tail)
    return found


def analyse(config: ChaosConfig, seed: int, window: tuple[float, float], report: Report,
            faults: list[Fault], *, no_quorum: list[tuple[float, float]],
            unwritable: list[tuple[float, float]], periods: dict[str, float],
            slow_cities: list[str], owners: dict[str, int], stale: list[str],
            resources: dict[str, tuple[Resources | None, Resources | None]],
            problems: list[str], logs: list[Path], base: Path,
            sink: SinkOutcome | None = None) -> ChaosResult:
    """The result of a run whose faults filled ``window`` and whose history ``report``
    checked: faults in order, each kind's gaps, availability three ways (with the
    no-quorum windows left out; with etcd's leaderless windows left out as well; with no
    on-time tolerance), what the logs of workers and relays say, and the ``sink``."""
    started, ended = window
    faults = sorted(faults, key=lambda f: f.started)
    return ChaosResult(
        config=config, seed=seed, started=started, ended=ended,
        faults=faults, no_quorum=list(no_quorum), report=report,
        gaps=gap_stats(report, faults, periods, window, config.ttl, no_quorum, unwritable),
        owners=owners, stale_decisions=stale, resources=resources,
        problems=problems, tracebacks=Counter(tracebacks(logs)),
        fenced_out=fenced_out(logs), base=base, periods=periods,
        slow_cities=slow_cities, unwritable=list(unwritable),
        writable_availability=availability(
            report.decisions_by_city, report.settings, window=window,
            no_quorum=[*no_quorum, *unwritable]),
        strict_availability=availability(
            report.decisions_by_city, report.settings, window=window,
            no_quorum=no_quorum, tolerance=0.0),
        sink=sink,
    )
