"""The chaos run: set up, warm up, inject faults, heal, settle, verify, report."""

from __future__ import annotations

import contextlib
import itertools
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from coordinator.codec import decode
from coordinator.errors import EtcdError
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.verify import Availability, Report, availability, missed_periods, verify
from coordinator.settings import CityConfig
from devtools.chaos.faults import ETCD_KINDS, KINDS, SOLVER_KINDS, WORKER_KINDS, Fault, Lane
from devtools.chaos.fleet import Etcd, Resources, WorkerSlot
from devtools.localetcd import EtcdCluster
from devtools.proxy import ProxyGroup
from protos import dispatch_pb2 as pb

__all__ = ["ChaosConfig", "ChaosResult", "GapStat", "Harness", "run"]

NAMESPACE = "/chaos"
SOLVERS = ("greedy", "hungarian", "bundle")
SLOW_SOLVER = "test-slow"
#: a fault's after-effects (lease expiry, restart, rebalancing) count against it for
#: this long after it was undone, on top of the lease TTL
RECOVERY_MARGIN = 1.0
#: The fault lanes and the quiet time (seconds, drawn uniformly) a lane leaves after each
#: of its faults at ``pace`` 1, the default: a fault striking a whole worker or etcd
#: every ~45 s on average, each left to recover before the next (``docs/safety.md``,
#: "Results": what each kind of fault costs, and why availability is a budget that these
#: faults spend). ``--pace 20`` is the storm of earlier runs: one every ~4.5 s.
LANES = (
    ("workers", WORKER_KINDS, (40.0, 120.0)),
    ("etcd", ETCD_KINDS, (60.0, 160.0)),
    ("solvers", SOLVER_KINDS, (80.0, 200.0)),
)


@dataclass
class ChaosConfig:
    duration: float = 60.0
    seed: int | None = None
    workers: int = 4
    cities: int = 50
    #: the workers' lease TTL: 1 s, the shortest etcd grants with a 500 ms election
    #: timeout (1.5 election timeouts, rounded up); how long a dead worker's cities wait
    ttl: int = 1
    #: etcd's raft election timeout in ms (heartbeat a tenth of it): 500, for members on
    #: one host (etcd's default, 1000, is for a network); how long losing the raft leader
    #: stops every write
    etcd_election_ms: int = 500
    #: fault kinds to inject (default: all)
    kinds: tuple[str, ...] = KINDS
    #: >1 injects faults more often, <1 less often
    pace: float = 1.0
    #: let worker and etcd faults overlap (harsher; gaps then belong to several faults)
    overlap: bool = False
    #: share of the cities whose solver is ``test-slow`` (target of ``slow-solve``)
    slow_share: float = 0.1
    warmup_timeout: float = 240.0
    settle_timeout: float = 120.0
    base: Path | None = None
    keep: bool = False
    solve_isolation: str = "process"
    #: solver processes per worker: two for the cities' compute (this machine's cores)
    #: and one more because ``test-slow`` *sleeps*, holding a process without computing;
    #: with two, the other cities' solves queued behind it and came late
    solve_processes: int | None = 3
    #: live progress line: None = when stdout is a terminal
    progress: bool | None = None
    #: how to start a worker (default: ``python -m coordinator.cli.worker``); for trying
    #: a patched worker under the same storm
    worker_command: tuple[str, ...] = ()
    #: extra arguments for every worker
    worker_args: tuple[str, ...] = ()


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

    @property
    def violations(self) -> int:
        return len(self.report.violations) if self.report is not None else -1

    @property
    def recovered(self) -> bool:
        return (bool(self.owners) and all(n > 0 for n in self.owners.values())
                and not self.stale_decisions)

    @property
    def exit_code(self) -> int:
        if self.report is None or not self.report.ok:
            return 1
        return 0 if self.recovered else 3

    def by_kind(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)


class Harness:
    def __init__(self, config: ChaosConfig, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.seed = config.seed if config.seed is not None else random.randrange(1, 10**6)
        self.out = out
        self.keys = Keys(NAMESPACE)
        self.stop = threading.Event()
        #: held by a lane while it injects a fault that concerns every city (the lanes
        #: take turns unless ``overlap``)
        self.turn: threading.Lock | None = None if config.overlap else threading.Lock()
        self.recovery_margin = RECOVERY_MARGIN
        self.lanes: list[Lane] = []
        self.workers: list[WorkerSlot] = []
        self.no_quorum: list[tuple[float, float]] = []
        self.problems: list[str] = []
        self.cities: dict[str, CityConfig] = {}
        self.slow_cities: list[CityConfig] = []
        self._print_lock = threading.Lock()
        self._status_line = ""
        self._last_progress_print = 0.0
        self.progress = config.progress if config.progress is not None else out.isatty()
        self.base = Path(tempfile.mkdtemp(prefix="chaos-", dir=config.base))
        self._events = open(self.base / "events.log", "a")  # noqa: SIM115
        self.cluster: EtcdCluster | None = None
        self.etcd: Etcd
        self.client: EtcdClient
        self.watcher: EtcdClient
        self.started = 0.0

    # -- output -------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        with self._print_lock:
            if self.progress and self._status_line:
                self.out.write("\r\033[K" + text + "\n" + self._status_line)
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def emit(self, message: str) -> None:
        elapsed = time.time() - self.started if self.started else 0.0
        line = f"{elapsed:7.1f}s  {message}"
        self._events.write(f"{time.time():.3f} {message}\n")
        self._events.flush()
        self._write(line)

    def problem(self, message: str) -> None:
        self.problems.append(message)
        self.emit(f"PROBLEM: {message}")

    def status(self, line: str) -> None:
        with self._print_lock:
            self._status_line = line
            if self.progress:
                self.out.write("\r\033[K" + line)
                self.out.flush()
                return
        now = time.monotonic()
        if now - self._last_progress_print >= 10.0:
            self._last_progress_print = now
            self._write(line)

    def end_status(self) -> None:
        with self._print_lock:
            if self.progress and self._status_line:
                self.out.write("\r\033[K")
                self.out.flush()
            self._status_line = ""

    # -- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.config
        self.emit(f"chaos: seed {self.seed} (replay: {replay_command(cfg, self.seed)}); "
                  f"logs and etcd data in {self.base}")
        self.cluster = EtcdCluster(3, base=self.base,
                                   election_ms=cfg.etcd_election_ms).start()
        dead = [m.name for m in self.cluster.members if not m.running()]
        if dead:
            raise RuntimeError(f"etcd members {dead} did not start (port taken?); logs in "
                               f"{self.cluster.base}")
        endpoints = tuple(self.cluster.endpoints.split(","))
        self.client = EtcdClient(EtcdConfig(endpoints=endpoints, timeout=5.0))
        self.watcher = EtcdClient(EtcdConfig(endpoints=endpoints, timeout=1.0))
        self.etcd = Etcd(self.cluster, NAMESPACE)
        self.cluster_id = self.etcd.identity()
        self.check_identity()
        self._make_cities()
        extra = ["--solve-isolation", cfg.solve_isolation, *cfg.worker_args]
        if cfg.solve_processes:
            extra += ["--solve-processes", str(cfg.solve_processes)]
        for i in range(cfg.workers):
            worker_id = f"w{i}"
            proxies = ProxyGroup([m.client_url for m in self.cluster.members],
                                 name=worker_id).start()
            slot = WorkerSlot(worker_id, proxies, self.base / f"{worker_id}.log", NAMESPACE,
                              cfg.ttl, extra, command=list(cfg.worker_command))
            self.workers.append(slot)
        for slot in self.workers:
            slot.start()
        self.emit(f"etcd {self.cluster.endpoints}; {len(self.cities)} cities "
                  f"({len(self.slow_cities)} on {SLOW_SOLVER}); workers "
                  f"{', '.join(w.worker_id for w in self.workers)} (lease TTL {cfg.ttl}s), "
                  "each behind its own proxies")

    def _slow_solver_installed(self) -> bool:
        from coordinator.plugins import SOLVERS as NS
        from coordinator.plugins import installed

        return any(info.name == SLOW_SOLVER for info in installed(NS, describe=False))

    def _make_cities(self) -> None:
        cfg = self.config
        rng = random.Random(f"{self.seed}:cities")
        slow_ok = cfg.slow_share > 0 and self._slow_solver_installed()
        if cfg.slow_share > 0 and not slow_ok:
            self.emit(f"{SLOW_SOLVER} is not installed (tests/plugins/dispatch-testsolvers):"
                      " no slow cities, no slow-solve faults")
        every = max(1, round(1 / cfg.slow_share)) if slow_ok else 0
        for i in range(cfg.cities):
            name = f"c{i:03d}"
            period = round(rng.uniform(0.5, 1.0), 2)
            orders, couriers = rng.randint(20, 50), rng.randint(10, 30)
            if every and i % every == every - 1:
                config = CityConfig(name, SLOW_SOLVER, period,
                                    params={"orders": orders, "couriers": couriers,
                                            "seed": i, "sleep": round(0.3 * period, 3)})
                self.slow_cities.append(config)
            else:
                config = CityConfig(name, SOLVERS[i % len(SOLVERS)], period,
                                    params={"orders": orders, "couriers": couriers,
                                            "seed": i})
            self.cities[name] = config
            self.client.put(self.keys.city(name), config.encode())

    # -- watching -----------------------------------------------------------------------

    def snapshot(self) -> tuple[dict[str, float], dict[str, str]]:
        """(city -> decidedAt of its latest decision, city -> leading worker)."""
        decided: dict[str, float] = {}
        kvs, _ = self.watcher.get_prefix(self.keys.decisions)
        for kv in kvs:
            with contextlib.suppress(ValueError):
                d = decode(pb.Decision, kv.value)
                decided[Keys.tail(kv.key, self.keys.decisions)] = \
                    d.decided_at.ToNanoseconds() / 1e9
        leaders: dict[str, tuple[int, str]] = {}
        kvs, _ = self.watcher.get_prefix(self.keys.elections)
        for kv in kvs:
            parsed = self.keys.candidate(kv.key)
            if parsed is None:
                continue
            city = parsed[0]
            if city not in leaders or kv.create_revision < leaders[city][0]:
                leaders[city] = (kv.create_revision, kv.value.decode(errors="replace"))
        return decided, {city: worker for city, (_, worker) in leaders.items()}

    def stale(self, decided: dict[str, float], now: float) -> list[str]:
        """Cities without a decision in the last two periods (+ 1 s)."""
        return sorted(city for city, config in self.cities.items()
                      if now - decided.get(city, 0.0) > 2 * config.period + 1.0)

    def owners(self, leaders: dict[str, str]) -> dict[str, int]:
        counts = {w.worker_id: 0 for w in self.workers}
        for worker in leaders.values():
            if worker in counts:
                counts[worker] += 1
        return counts

    def check_workers(self) -> None:
        """A worker that exits without the harness stopping it has crashed: note it and
        start it again."""
        for slot in self.workers:
            with slot.lock:
                crashed = not slot.expected_down and slot.process is not None \
                    and slot.process.poll() is not None
            if crashed:
                code = slot.process.returncode if slot.process else None
                self.problem(f"{slot.worker_id} exited by itself with status {code} "
                             f"(see {slot.log_path}); restarting it")
                slot.start()

    def check_identity(self) -> None:
        """Every member port and every worker proxy must lead to our cluster. On a shared
        machine a port freed by a killed member can be taken by another process's etcd;
        a run that talked to a stranger proves nothing, so it is flagged."""
        urls = [m.client_url for m in self.etcd.members]
        urls += [p.url for slot in self.workers for p in slot.proxies.proxies]
        for stranger in self.etcd.strangers(self.cluster_id, urls):
            self.problem(f"port collision, the run is not valid: {stranger}")

    def monitor(self, until: Callable[[], bool], label: str) -> None:
        """Show the progress line every second until ``until()``."""
        end = self.started + self.config.duration
        ticks = 0
        while not until():
            self.check_workers()
            ticks += 1
            if ticks % 5 == 0:
                self.check_identity()
            now = time.time()
            try:
                decided, leaders = self.snapshot()
                stale = self.stale(decided, now)
                owners = self.owners(leaders)
                health = (f"fresh {len(self.cities) - len(stale)}/{len(self.cities)} · "
                          "owners " + " ".join(f"{w}:{n}" for w, n in owners.items()))
            except EtcdError:
                health = "etcd not answering"
            active = [lane.current.describe() for lane in self.lanes if lane.current]
            faults = sum(len(lane.faults) for lane in self.lanes)
            clock = f"{now - self.started:5.0f}s/{self.config.duration:.0f}s" \
                if label == "chaos" else label
            self.status(f"[{clock}] faults {faults} · {health}"
                        + (f" · now: {', '.join(active)}" if active else ""))
            if label == "chaos" and now >= end:
                return
            self.stop.wait(1.0)

    # -- phases -------------------------------------------------------------------------

    def warm_up(self) -> None:
        deadline = time.monotonic() + self.config.warmup_timeout
        ready = {"ok": False}

        def done() -> bool:
            if time.monotonic() > deadline:
                return True
            with contextlib.suppress(EtcdError):
                decided, leaders = self.snapshot()
                ready["ok"] = not self.stale(decided, time.time()) and \
                    all(n > 0 for n in self.owners(leaders).values())
            return ready["ok"]

        self.monitor(done, "warming up")
        self.end_status()
        if not ready["ok"]:
            raise RuntimeError(f"the fleet did not warm up in {self.config.warmup_timeout:.0f}s"
                               f" (logs in {self.base})")

    def inject(self) -> None:
        cfg = self.config
        pace = max(cfg.pace, 0.01)
        for name, kinds, (low, high) in LANES:
            enabled = tuple(k for k in kinds if k in cfg.kinds)
            if name == "solvers" and not self.slow_cities:
                enabled = tuple(k for k in enabled if k != "slow-solve")
            if enabled:
                self.lanes.append(Lane(name, enabled, self.seed, (low / pace, high / pace),
                                       self, self.stop))
        for lane in self.lanes:
            plan = ", ".join(f"{d.kind}" for d in lane.schedule(6))
            self.emit(f"lane {lane.name}: {', '.join(lane.kinds)}; first faults: {plan}, ...")
        for lane in self.lanes:
            lane.start()
        self.monitor(lambda: self.stop.is_set(), "chaos")
        self.end_status()
        self.stop.set()
        for lane in self.lanes:
            lane.join(120.0)
        self.emit("faults stopped")

    def heal(self) -> None:
        """Undo anything a lane may have left behind."""
        self.etcd.heal()
        for slot in self.workers:
            slot.proxies.restore()
            slot.proxies.unstall()
            slot.resume()
            if not slot.alive():
                slot.start()
            slot.expected_down = False
        for config in self.slow_cities:
            with contextlib.suppress(EtcdError):
                self.client.put(self.keys.city(config.city), config.encode())

    def settle(self) -> tuple[dict[str, int], list[str]]:
        """Wait until every city decides and every worker owns cities again."""
        self.etcd.wait_healthy(60.0)
        deadline = time.monotonic() + self.config.settle_timeout
        result: dict[str, object] = {"owners": {}, "stale": list(self.cities)}
        calm_since: list[float] = []

        def done() -> bool:
            try:
                decided, leaders = self.snapshot()
            except EtcdError:
                return time.monotonic() > deadline
            owners = self.owners(leaders)
            stale = self.stale(decided, time.time())
            result["owners"], result["stale"] = owners, stale
            if stale or not all(n > 0 for n in owners.values()):
                calm_since.clear()
            elif not calm_since:
                calm_since.append(time.monotonic())
            # calm for 3 s in a row: settled
            return bool(calm_since and time.monotonic() - calm_since[0] >= 3.0) or \
                time.monotonic() > deadline

        self.monitor(done, "settling")
        self.end_status()
        return result["owners"], result["stale"]  # type: ignore[return-value]

    def resources(self, samples: int = 5) -> dict[str, Resources | None]:
        """Each worker's steady holdings: the least of a few samples 0.2 s apart, so that
        a tick thread or connection of the moment is not taken for a leak."""
        seen: dict[str, list[Resources]] = {slot.worker_id: [] for slot in self.workers}
        for i in range(samples):
            if i:
                time.sleep(0.2)
            for slot in self.workers:
                got = slot.resources()
                if got is not None:
                    seen[slot.worker_id].append(got)
        return {w: Resources(min(r.threads for r in rs), min(r.fds for r in rs),
                             min(r.solvers for r in rs)) if rs else None
                for w, rs in seen.items()}

    def fenced_out(self) -> int:
        """Stale writes etcd refused during the run, as the workers logged them."""
        count = 0
        for slot in self.workers:
            with contextlib.suppress(OSError):
                count += slot.log_path.read_text(errors="replace").count("fenced out:")
        return count

    def log_errors(self) -> list[str]:
        """Tracebacks in worker logs: unexpected errors, whatever the outcome."""
        found = []
        for slot in self.workers:
            with contextlib.suppress(OSError):
                lines = slot.log_path.read_text(errors="replace").splitlines()
                for i, line in enumerate(lines):
                    if line.startswith("Traceback"):
                        tail = next((x for x in lines[i + 1:] if x and not x.startswith(" ")),
                                    "")
                        found.append(tail)
        return found

    def dump(self, result: ChaosResult) -> None:
        """Decision times, faults and windows as JSON, for a look after the run."""
        import json

        report = result.report
        data = {
            "seed": result.seed, "started": result.started, "ended": result.ended,
            "periods": result.periods, "noQuorum": result.no_quorum,
            "unwritable": result.unwritable,
            "faults": [vars(f) for f in result.faults],
            "decisions": {
                city: [[r, d.decided_at.ToNanoseconds() / 1e9, d.worker_id, d.token]
                       for r, d in history]
                for city, history in (report.decisions_by_city.items() if report else [])
            },
        }
        (self.base / "run.json").write_text(json.dumps(data))

    def close(self, *, keep: bool) -> None:
        for slot in self.workers:
            with contextlib.suppress(Exception):
                slot.close()
            slot.proxies.close()
        for client in ("client", "watcher"):
            with contextlib.suppress(Exception):
                getattr(self, client).close()
        with contextlib.suppress(Exception):
            self.etcd.close()
        if self.cluster is not None:
            if keep:  # keep the data directories: ``etcd --data-dir`` them to look back
                for m in self.cluster.members:
                    with contextlib.suppress(Exception):
                        if m.running():
                            m.resume()
                        m.kill()
            else:
                self.cluster.close()  # removes the etcd data directories
        self._events.close()
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)


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


def _holdings(r: Resources | None) -> str:
    return "-" if r is None else f"{r.threads}, {r.fds}, {r.solvers}"


def gap_stats(report: Report, faults: list[Fault], periods: dict[str, float],
              window: tuple[float, float], ttl: float,
              no_quorum: list[tuple[float, float]] | None = None) -> dict[str, GapStat]:
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
    gaps are its own doing (``GapStat.isolated``).
    """
    start, end = window
    quorumless = no_quorum or []
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
            if period > 0:
                lost = gap - sum(max(0.0, min(b, q1) - max(a, q0)) for q0, q1 in quorumless)
                missed = missed_periods(lost, period)  # as availability counts it
                kinds = {spans[i][0].kind for i in hit} or {"(none)"}
                for kind in kinds:
                    stats[kind].missed += missed / len(kinds)
            stalled = any(spans[i][0].kind == "slow-solve" for i in hit)
            for i in hit:
                worst[i] = max(worst.get(i, 0.0), gap)
                if not stalled or spans[i][0].kind == "slow-solve":
                    clean[i] = max(clean.get(i, 0.0), gap)
            for stat in [stats[spans[i][0].kind] for i in hit] or [stats["(none)"]]:
                if gap > stat.longest:
                    stat.longest, stat.city, stat.at = gap, city, b
                    stat.period = periods.get(city, 0.0)
    for i, gap in worst.items():
        stat = stats[spans[i][0].kind]
        stat.worst_per_fault.append(gap)
        if i in isolated and i in clean:
            stat.isolated.append(clean[i])
    return stats


def run(config: ChaosConfig, out: TextIO = sys.stdout) -> ChaosResult:
    harness = Harness(config, out)
    report: Report | None = None
    owners: dict[str, int] = {}
    stale: list[str] = []
    keep = config.keep
    try:
        harness.setup()
        harness.warm_up()
        warm = harness.resources()
        harness.started = time.time()
        harness.emit(f"warm: every city decided, every worker owns cities; {config.duration:.0f}s"
                     " of faults begin")
        probing = threading.Event()
        prober = threading.Thread(target=harness.etcd.probe_writes, args=(probing,),
                                  name="write probe", daemon=True)
        prober.start()
        try:
            harness.inject()
            harness.heal()
            harness.emit("healed everything; settling")
            owners, stale = harness.settle()
            ended = time.time()
            settled = harness.resources()
        finally:
            probing.set()
            prober.join(5)
        harness.emit("settled; stopping workers (SIGTERM) and checking etcd's whole history")
        for slot in harness.workers:
            slot.expected_down = True
            slot.terminate(20.0)
        report = verify(harness.client, harness.keys, start_revision=1,
                        window=(harness.started, ended), no_quorum=harness.no_quorum)
        agree, hashes = harness.etcd.replicas_agree(report.end_revision)
        if not agree:
            harness.problem(f"etcd members disagree on the history up to revision "
                            f"{report.end_revision}: {hashes}")
        if report.violations:
            explain(harness.client, harness.keys, report, out)
        resources = {w: (warm.get(w), settled.get(w)) for w in settled}
        for worker, (before, after) in resources.items():
            if grew(before, after):
                harness.problem(f"{worker} holds more after the run than before it: "
                                f"{before} -> {after}")
        faults = [f for lane in harness.lanes for f in lane.faults]
        faults.sort(key=lambda f: f.started)
        periods = {c: cfg.period for c, cfg in harness.cities.items()}
        result = ChaosResult(
            config=config, seed=harness.seed, started=harness.started, ended=ended,
            faults=faults, no_quorum=list(harness.no_quorum), report=report,
            gaps=gap_stats(report, faults, periods, (harness.started, ended), config.ttl,
                           harness.no_quorum),
            owners=owners, stale_decisions=stale, resources=resources,
            problems=harness.problems, tracebacks=Counter(harness.log_errors()),
            fenced_out=harness.fenced_out(), base=harness.base, periods=periods,
            slow_cities=[c.city for c in harness.slow_cities],
            unwritable=list(harness.etcd.unwritable),
            writable_availability=availability(
                report.decisions_by_city, report.settings, window=(harness.started, ended),
                no_quorum=[*harness.no_quorum, *harness.etcd.unwritable]),
            strict_availability=availability(
                report.decisions_by_city, report.settings, window=(harness.started, ended),
                no_quorum=harness.no_quorum, tolerance=0.0),
        )
        if result.exit_code != 0 or result.problems or result.tracebacks:
            keep = True
        if keep:
            harness.dump(result)
        print_report(result, out)
        return result
    except BaseException:
        keep = True
        raise
    finally:
        harness.stop.set()
        harness.close(keep=keep)
        if keep:
            out.write(f"logs kept in {harness.base}\n")


def explain(client: EtcdClient, keys: Keys, report: Report, out: TextIO,
            before: int = 40) -> None:
    """Print etcd's history of the first violation's city around it: every candidate
    key created or deleted, every decision written — the evidence, straight from etcd."""
    from coordinator.ops.verify import replay

    first = report.violations[0]
    city = first.city
    start = max(1, first.revision - before * 20)
    out.write(f"\n==== first violation: {first}\n")
    out.write(f"history of {keys.election(city)}/ and {keys.decision(city)} from revision "
              f"{start}:\n")
    lines = []
    for event in replay(client, keys.namespace + "/", start,
                        min(first.revision + 5, report.end_revision)):
        key = event.kv.key
        parsed = keys.candidate(key)
        if parsed is not None and parsed[0] == city:
            who = event.kv.value.decode(errors="replace")
            if event.kind == "delete":
                what = f"candidate {parsed[1]} deleted"
            elif event.kv.version == 1:
                what = (f"candidate {parsed[1]} created (token {event.kv.create_revision}) "
                        f"by {who!r}")
            else:
                what = f"candidate {parsed[1]} rewritten (version {event.kv.version}) by {who!r}"
        elif key == keys.decision(city) and event.kind == "put":
            try:
                d = decode(pb.Decision, event.kv.value)
                what = f"decision token {d.token} by {d.worker_id!r} (lease {d.lease_id})"
            except ValueError:
                what = "decision (undecodable)"
        else:
            continue
        lines.append(f"  {event.kv.mod_revision:>8}  {what}")
    for line in lines[-before:]:
        out.write(line + "\n")


def replay_command(cfg: ChaosConfig, seed: int) -> str:
    """The command line that replays this run's schedule."""
    replay = (f"python -m devtools.chaos --seed {seed} --duration {cfg.duration:g} "
              f"--workers {cfg.workers} --cities {cfg.cities}")
    if cfg.ttl != 1:
        replay += f" --lease-ttl {cfg.ttl}"
    if cfg.etcd_election_ms != 500:
        replay += f" --etcd-election-ms {cfg.etcd_election_ms}"
    if cfg.pace != 1.0:
        replay += f" --pace {cfg.pace:g}"
    if cfg.overlap:
        replay += " --overlap"
    if set(cfg.kinds) != set(KINDS):
        replay += f" --faults {','.join(cfg.kinds)}"
    if cfg.solve_isolation != "process":
        replay += f" --solve-isolation {cfg.solve_isolation}"
    if cfg.solve_processes != 3:
        replay += f" --solve-processes {cfg.solve_processes}"
    replay += "".join(f" --worker-arg={a}" for a in cfg.worker_args)
    return replay


def print_report(result: ChaosResult, out: TextIO) -> None:
    cfg = result.config
    report = result.report
    w = out.write
    span = result.ended - result.started
    w("\n==== chaos report\n")
    w(f"seed {result.seed}: {span:.0f}s of faults (+ settling), {cfg.workers} workers, "
      f"{cfg.cities} cities, lease TTL {cfg.ttl}s"
      + (", faults overlapping" if cfg.overlap else ", one worker/etcd fault at a time")
      + "\n")
    replay = replay_command(cfg, result.seed)
    w(f"replay: {replay}\n")
    kinds = result.by_kind()
    w(f"faults injected: {sum(kinds.values())} — "
      + ", ".join(f"{k} {kinds[k]}" for k in KINDS if kinds[k]) + "\n")
    if result.no_quorum:
        total = sum(b - a for a, b in result.no_quorum)
        w(f"no-quorum windows: {len(result.no_quorum)}, {total:.1f}s in all\n")
    if report is None:
        w("history check did not run\n")
        return
    w(f"decisions checked: {report.decisions} (revisions {report.start_revision}.."
      f"{report.end_revision}, {len(report.cities)} cities)\n")
    w(f"violations: {len(report.violations)}\n")
    w("etcd replicas agree on that history (hashkv): "
      + ("no" if any("disagree" in p for p in result.problems) else "yes") + "\n")
    for v in report.violations[:20]:
        w(f"  VIOLATION {v}\n")
    av = report.availability
    if av is not None:
        w(f"{av.summary()}\n")
        steady = [c for c in av.cities.values() if c.city not in result.slow_cities]
        if steady and len(steady) != len(av.cities):
            exp = sum(c.expected for c in steady)
            missed = sum(c.missed for c in steady)
            low = min(steady, key=lambda c: c.fraction)
            w(f"  cities whose solver never stalls: {100 * (1 - missed / exp):.2f}% overall, "
              f"lowest {low.city} {100 * low.fraction:.2f}%\n")
        strict = result.strict_availability
        if strict is not None:
            w(f"  counting every millisecond of lateness (no on-time tolerance): "
              f"{100 * strict.overall:.2f}%\n")
    wav = result.writable_availability
    if wav is not None and result.unwritable:
        total = sum(b - a for a, b in result.unwritable)
        lowest = wav.lowest()
        w(f"  with etcd's leaderless windows also left out ({len(result.unwritable)} "
          f"windows, {total:.1f}s in all, probed every 0.1s): {100 * wav.overall:.2f}% "
          f"of periods" + (f", lowest {lowest.city} {100 * lowest.fraction:.2f}%"
                           if lowest else "")
          + ": what the coordinator made of the time etcd could take a write\n")
    w(f"longest decision gap by the fault in effect when it began (from injection to "
      f"healing + TTL + {RECOVERY_MARGIN:g}s):\n")
    total_missed = sum(stat.missed for stat in result.gaps.values()) or 1.0
    w(f"  {'kind':<13}{'faults':>7}{'longest':>10}  {'city (period)':<18}{'median':>9}"
      f"{'alone':>7}{'longest alone':>15}{'missed':>9}{'per fault':>11}\n")
    for kind in [*KINDS, "(none)"]:
        stat = result.gaps.get(kind)
        if stat is None:
            continue
        where = f"{stat.city} ({stat.period:g}s)" if stat.city else "-"
        count = str(stat.faults) if kind != "(none)" else "-"
        median = f"{stat.typical:.2f}s" if stat.worst_per_fault else "-"
        alone = f"{max(stat.isolated):.2f}s" if stat.isolated else "-"
        share = f"{100 * stat.missed / total_missed:.0f}%"
        per_fault = f"{stat.missed / stat.faults:.1f}" if stat.faults else "-"
        w(f"  {kind:<13}{count:>7}{stat.longest:>9.2f}s  {where:<18}{median:>9}"
          f"{len(stat.isolated) if kind != '(none)' else '-':>7}{alone:>15}{share:>9}"
          f"{per_fault:>11}\n")
    w("  (median: of each fault's longest gap; alone: faults that overlapped no other "
      "fault affecting every city;\n   missed: share of all missed periods, no-quorum "
      "time left out; per fault: city-periods missed per fault of the kind)\n")
    if av is not None and av.expected > 0:
        none = result.gaps.get("(none)")
        lost = none.missed if none is not None else 0.0
        w(f"periods missed with no fault in effect: {lost:.1f} of {av.expected:.0f} "
          f"({100 * lost / av.expected:.2f}%): the rest is the faults' own cost, which "
          "grows with how often they strike (--pace)\n")
    if result.resources:
        w("held by each worker once warm -> settled after the faults (threads, open "
          "fds, solver processes):\n")
        for worker, (before, after) in result.resources.items():
            w(f"  {worker}: {_holdings(before)} -> {_holdings(after)}"
              + ("  GREW" if grew(before, after) else "") + "\n")
    w(f"stale writes refused by the fence (workers' 'fenced out' log lines): "
      f"{result.fenced_out}\n")
    owners = " ".join(f"{k}:{v}" for k, v in result.owners.items())
    if result.recovered:
        w(f"recovered without a human: every worker owns cities again ({owners}); every "
          "city decided within its last two periods\n")
    else:
        w(f"NOT RECOVERED: owners {owners}; cities without a recent decision: "
          f"{', '.join(result.stale_decisions) or 'none'}\n")
    w(f"problems: {len(result.problems)}\n")
    for p in result.problems[:20]:
        w(f"  {p}\n")
    if result.tracebacks:
        w(f"tracebacks in worker logs: {sum(result.tracebacks.values())}\n")
        for line, times in result.tracebacks.most_common(10):
            w(f"  {times} x {line}\n")
    w(f"result: {'PASS' if result.exit_code == 0 else 'FAIL'} (exit {result.exit_code})\n")
    out.flush()
