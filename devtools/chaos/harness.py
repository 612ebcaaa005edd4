"""The chaos harness: the fleet under faults, and the run from setup to verdict.

:class:`Harness` starts a 3-member etcd cluster on loopback, one
``devtools.proxy.ProxyGroup`` and one ``dispatch-worker`` per worker, the cities, and
with ``--relays`` PostgreSQL and the relays (``sink.SinkFleet``); it watches the fleet,
runs the fault lanes (``devtools.chaos.faults``) against itself as their
:class:`~devtools.chaos.target.ChaosTarget`, heals, settles and tears down. :func:`run`
drives those phases, checks etcd's whole history, lets the relays catch up and checks
the database against that history (``devtools.pgcheck``), and hands the findings to
``analysis`` and ``report``.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from coordinator.errors import EtcdError
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.verify import Report, verify
from coordinator.recipes.election import leader_of
from coordinator.settings import CityConfig
from devtools.chaos.analysis import ChaosResult, SinkOutcome, analyse, grew
from devtools.chaos.config import (
    LANES,
    NAMESPACE,
    RECOVERY_MARGIN,
    SLOW_SOLVER,
    ChaosConfig,
    draw_cities,
    replay_command,
)
from devtools.chaos.console import Console
from devtools.chaos.faults import Lane
from devtools.chaos.fleet import Etcd, Resources, WorkerSlot
from devtools.chaos.process import ProcessSlot
from devtools.chaos.report import dump, explain, print_report
from devtools.chaos.sink import SINK, RelaySlot, SinkFleet
from devtools.chaos.view import FleetView
from devtools.localetcd import ETCDCTL, EtcdCluster
from devtools.localpg import LocalPostgres
from devtools.pgcheck import CheckError
from devtools.pgcheck import check as check_sink
from devtools.proxy import ProxyGroup

__all__ = ["Harness", "run"]


class Harness:
    """One chaos run's fleet — etcd cluster, proxies, workers, cities — and its phases.

    It implements :class:`~devtools.chaos.target.ChaosTarget` for the fault lanes.
    """

    def __init__(self, config: ChaosConfig, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.seed = config.seed if config.seed is not None else random.randrange(1, 10**6)
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
        self.base = Path(tempfile.mkdtemp(prefix="chaos-", dir=config.base))
        self.console = Console(out, self.base / "events.log", progress=(
            config.progress if config.progress is not None else out.isatty()))
        self.cluster: EtcdCluster | None = None
        self.sink: SinkFleet | None = None
        self.etcd: Etcd
        self.client: EtcdClient
        self.watcher: EtcdClient
        self.view: FleetView

    @property
    def started(self) -> float:
        """When the faults began (seconds since the epoch; 0 before)."""
        return self.console.started

    @started.setter
    def started(self, when: float) -> None:
        self.console.started = when

    @property
    def ttl(self) -> int:
        return self.config.ttl

    @property
    def relays(self) -> list[RelaySlot]:
        return self.sink.relays if self.sink is not None else []

    @property
    def postgres(self) -> LocalPostgres | None:
        return self.sink.postgres if self.sink is not None else None

    def active_relay(self) -> RelaySlot | None:
        if self.sink is None:
            return None
        try:
            leader = leader_of(self.watcher, self.keys.relay_election(SINK))
        except EtcdError:
            return None
        return self.sink.relay(leader.value.decode(errors="replace")) if leader else None

    def slots(self) -> list[ProcessSlot]:
        """Every process the harness runs: workers, then relays."""
        return [*self.workers, *self.relays]

    # -- output -------------------------------------------------------------------------

    def emit(self, message: str) -> None:
        self.console.emit(message)

    def problem(self, message: str) -> None:
        self.problems.append(message)
        self.emit(f"PROBLEM: {message}")

    # -- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.config
        self.emit(f"chaos: seed {self.seed} (replay: {replay_command(cfg, self.seed)}); "
                  f"logs and etcd data in {self.base}")
        self.cluster = EtcdCluster(3, base=self.base, election_ms=cfg.etcd_election_ms,
                                   peer_links=True).start()
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
            slot = WorkerSlot(worker_id, proxies, NAMESPACE, cfg.ttl, extra,
                              list(cfg.worker_command),
                              log_path=self.base / f"{worker_id}.log")
            self.workers.append(slot)
        self.view = FleetView(self.watcher, self.keys, self.cities,
                              [w.worker_id for w in self.workers])
        for slot in self.workers:
            slot.start()
        self.emit(f"etcd {self.cluster.endpoints}; {len(self.cities)} cities "
                  f"({len(self.slow_cities)} on {SLOW_SOLVER}); workers "
                  f"{', '.join(w.worker_id for w in self.workers)} (lease TTL {cfg.ttl}s), "
                  "each behind its own proxies")
        if cfg.relays:
            self.sink = SinkFleet(self.base, self.cluster.endpoints, NAMESPACE, cfg.relays,
                                  cfg.ttl).start()
            self.emit(f"postgres {self.sink.url}; relays "
                      f"{', '.join(r.relay_id for r in self.relays)} (sink {SINK}, lease "
                      f"TTL {cfg.ttl}s), each through its own proxy to it")

    def _make_cities(self) -> None:
        cfg = self.config
        slow = cfg.slow_share > 0 and _slow_solver_installed()
        if cfg.slow_share > 0 and not slow:
            self.emit(f"{SLOW_SOLVER} is not installed (tests/plugins/dispatch-testsolvers):"
                      " no slow cities, no slow-solve faults")
        for config in draw_cities(cfg, self.seed, slow=slow):
            if config.solver == SLOW_SOLVER:
                self.slow_cities.append(config)
            self.cities[config.city] = config
            self.client.put(self.keys.city(config.city), config.encode())

    # -- watching -----------------------------------------------------------------------

    def check_workers(self) -> None:
        """A worker or relay that exits without the harness stopping it has crashed: note
        it and start it again."""
        for slot in self.slots():
            if slot.crashed():
                code = slot.process.returncode if slot.process else None
                self.problem(f"{slot.name} exited by itself with status {code} "
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
                decided, leaders = self.view.snapshot()
                stale = self.view.stale(decided, now)
                owners = self.view.owners(leaders)
                health = (f"fresh {len(self.cities) - len(stale)}/{len(self.cities)} · "
                          "owners " + " ".join(f"{w}:{n}" for w, n in owners.items()))
            except EtcdError:
                health = "etcd not answering"
            active = [lane.current.describe() for lane in self.lanes if lane.current]
            faults = sum(len(lane.faults) for lane in self.lanes)
            clock = f"{now - self.started:5.0f}s/{self.config.duration:.0f}s" \
                if label == "chaos" else label
            self.console.status(f"[{clock}] faults {faults} · {health}"
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
                decided, leaders = self.view.snapshot()
                ready["ok"] = not self.view.stale(decided, time.time()) and \
                    all(n > 0 for n in self.view.owners(leaders).values())
            return ready["ok"]

        self.monitor(done, "warming up")
        self.console.end_status()
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
            if name == "sink" and not self.relays:
                enabled = ()
            if enabled:
                self.lanes.append(Lane(name, enabled, self.seed, (low / pace, high / pace),
                                       self, self.stop))
        for lane in self.lanes:
            plan = ", ".join(f"{d.kind}" for d in lane.schedule(6))
            self.emit(f"lane {lane.name}: {', '.join(lane.kinds)}; first faults: {plan}, ...")
        for lane in self.lanes:
            lane.start()
        self.monitor(lambda: self.stop.is_set(), "chaos")
        self.console.end_status()
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
        if self.sink is not None:
            self.sink.heal()

    def put_settings(self, config: CityConfig) -> None:
        deadline = time.monotonic() + 60.0
        while True:
            try:
                self.client.put(self.keys.city(config.city), config.encode())
                return
            except EtcdError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def record_no_quorum(self, lost: float, regained: float) -> None:
        self.no_quorum.append((lost, regained))

    def settle(self) -> tuple[dict[str, int], list[str]]:
        """Wait until every city decides and every worker owns cities again."""
        self.etcd.wait_healthy(60.0)
        deadline = time.monotonic() + self.config.settle_timeout
        result: dict[str, object] = {"owners": {}, "stale": list(self.cities)}
        calm_since: list[float] = []

        def done() -> bool:
            try:
                decided, leaders = self.view.snapshot()
            except EtcdError:
                return time.monotonic() > deadline
            owners = self.view.owners(leaders)
            stale = self.view.stale(decided, time.time())
            result["owners"], result["stale"] = owners, stale
            if stale or not all(n > 0 for n in owners.values()):
                calm_since.clear()
            elif not calm_since:
                calm_since.append(time.monotonic())
            # calm for 3 s in a row: settled
            return bool(calm_since and time.monotonic() - calm_since[0] >= 3.0) or \
                time.monotonic() > deadline

        self.monitor(done, "settling")
        self.console.end_status()
        return result["owners"], result["stale"]  # type: ignore[return-value]

    def finish_sink(self) -> SinkOutcome | None:
        """Once the workers have stopped: wait until the relays carried etcd's newest
        decision into PostgreSQL, stop them, and check the database against etcd's
        history."""
        if self.sink is None:
            return None
        sink = self.sink
        stopped = time.monotonic()
        kvs, _ = self.client.range(self.keys.decisions, prefix=True, sort="mod",
                                   descending=True, limit=1, keys_only=True)
        latest = kvs[0].mod_revision if kvs else 0
        deadline = stopped + self.config.settle_timeout
        cursor = sink.cursor()
        while (cursor is None or cursor < latest) and time.monotonic() < deadline:
            self.check_workers()
            time.sleep(0.2)
            cursor = sink.cursor()
        caught_up_in = time.monotonic() - stopped if cursor is not None and \
            cursor >= latest else None
        if caught_up_in is None:
            self.problem(f"the relays did not carry etcd's newest decision (revision "
                         f"{latest}) into postgres within {self.config.settle_timeout:.0f}s:"
                         f" the sink's cursor is {cursor}")
        for slot in sink.relays:
            slot.expected_down = True
            if slot.terminate(20.0) and slot.process is not None \
                    and slot.process.returncode != 0:
                self.problem(f"{slot.relay_id} exited with status "
                             f"{slot.process.returncode} after SIGTERM")
        error = ""
        try:
            checked = check_sink(self.cluster.endpoints if self.cluster else "", NAMESPACE,
                                 sink.url, etcdctl=ETCDCTL)
        except CheckError as exc:
            checked, error = None, str(exc)
            self.problem(f"the postgres check could not run: {exc}")
        return SinkOutcome(relays=len(sink.relays), latest=latest, cursor=cursor,
                           caught_up_in=caught_up_in,
                           starts=sum(slot.starts for slot in sink.relays),
                           check=checked, error=error)

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

    def close(self, *, keep: bool) -> None:
        for slot in self.workers:
            with contextlib.suppress(Exception):
                slot.close()
            slot.proxies.close()
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink.close(keep=keep)
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
        self.console.close()
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)


def _slow_solver_installed() -> bool:
    from coordinator.plugins import SOLVERS as NS
    from coordinator.plugins import installed

    return any(info.name == SLOW_SOLVER for info in installed(NS, describe=False))


def run(config: ChaosConfig, out: TextIO = sys.stdout) -> ChaosResult:
    """Set up, warm up, inject faults, heal, settle, verify etcd's history, check the
    sink against it, report.

    Logs and etcd's data are kept (and their directory printed) when the run fails, has
    problems or tracebacks, is interrupted, or ``config.keep`` asks for them.
    """
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
        harness.emit("settled; stopping workers (SIGTERM)" + (
            ", letting the relays catch up, checking postgres against etcd's history"
            if harness.sink is not None else "") + " and checking etcd's whole history")
        for slot in harness.workers:
            slot.expected_down = True
            slot.terminate(20.0)
        sink = harness.finish_sink()
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
        result = analyse(
            config, harness.seed, (harness.started, ended), report,
            [f for lane in harness.lanes for f in lane.faults],
            no_quorum=harness.no_quorum, unwritable=harness.etcd.unwritable,
            periods={c: cfg.period for c, cfg in harness.cities.items()},
            slow_cities=[c.city for c in harness.slow_cities], owners=owners, stale=stale,
            resources=resources, problems=harness.problems,
            logs=[slot.log_path for slot in harness.slots()], base=harness.base, sink=sink)
        if result.exit_code != 0 or result.problems or result.tracebacks:
            keep = True
        if keep:
            dump(result, harness.base / "run.json")
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
