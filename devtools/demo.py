"""``make demo``: a local 3-member etcd cluster, three workers, a dozen simulated cities
and one fed from PostgreSQL, two relays carrying the decisions into a throwaway
PostgreSQL, and a live view. After a while one worker is killed with SIGKILL and its
cities fail over; later it is restarted. Then the active relay is killed and the
standby takes over the sink; then the PostgreSQL city's producer stops for a while and
the city refuses its stale state until it is back. Ctrl-C (or ``--duration``) stops
everything and prints a summary checked against etcd's own history, the sink checked
against etcd, one ``dispatchctl audit`` answer and one ``dispatchctl replay`` of the
PostgreSQL city's decision on its archived state.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.overview import Overview, read_overview, read_relays
from coordinator.ops.verify import Report, verify
from coordinator.settings import CityConfig
from devtools.demo_sink import RELAYS, SinkSide
from devtools.demo_state import StateProducer
from devtools.localetcd import EtcdCluster
from devtools.localpg import PostgresMissing

NAMESPACE = "/dispatch"
CITIES = [
    ("amsterdam", "greedy"), ("berlin", "hungarian"), ("lisbon", "bundle"),
    ("madrid", "greedy"), ("milan", "hungarian"), ("oslo", "bundle"),
    ("paris", "hungarian"), ("prague", "greedy"), ("rome", "bundle"),
    ("vienna", "hungarian"), ("warsaw", "greedy"), ("zurich", "bundle"),
]
#: the city read from PostgreSQL (``devtools.demo_state`` is its order service), whose
#: state is archived for replay and refused when older than ``STATE_MAX_AGE``
STATE_CITY, STATE_SOLVER, STATE_MAX_AGE = "copenhagen", "hungarian", 4.0
WORKERS = ["worker-a", "worker-b", "worker-c"]
TTL = 3
PERIOD = 1.0

GREEN, YELLOW, RED, DIM, BOLD, RESET = (
    "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[1m", "\033[0m"
)


@dataclass
class Failover:
    city: str
    from_worker: str
    to_worker: str
    seconds: float


@dataclass
class Scene:
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    killed: dict[str, float] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    failovers: list[Failover] = field(default_factory=list)
    #: a decision of the PostgreSQL city to replay at the end (its etcd revision)
    replay_revision: int = 0

    def note(self, text: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:6.1f}s  {text}")


def start_worker(worker_id: str, endpoints: str, logs: Path,
                 pg_url: str) -> subprocess.Popen[bytes]:
    log = open(logs / f"{worker_id}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli.worker", "--etcd", endpoints,
         "--namespace", NAMESPACE, "--worker-id", worker_id, "--lease-ttl", str(TTL),
         "--state-postgres-url", pg_url, "--archive-url", pg_url],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def track(scene: Scene, overview: Overview) -> None:
    """Note ownership changes, and time failovers from the kill to the new decision."""
    for view in overview.cities:
        before = scene.owners.get(view.city)
        writer = view.decision_worker
        if writer and before and writer != before:
            killed_at = scene.killed.get(before)
            if killed_at is not None:
                took = time.monotonic() - killed_at
                scene.failovers.append(Failover(view.city, before, writer, took))
                scene.note(f"{view.city}: {before} -> {writer} "
                           f"(first decision {took:.1f}s after the kill)")
            else:
                scene.note(f"{view.city}: {before} -> {writer}")
        if writer:
            scene.owners[view.city] = writer


def render(scene: Scene, overview: Overview, workers: dict[str, subprocess.Popen[bytes]],
           remaining: float | None, sink_lines: list[str]) -> str:
    lines = [f"{BOLD}dispatch coordinator demo{RESET}  etcd revision {overview.revision}"
             f"   {DIM}Ctrl-C to stop"
             + (f", ending in {remaining:.0f}s" if remaining is not None else "") + RESET, ""]
    lines.append(f"{'CITY':<11}{'OWNER':<11}{'TOKEN':>7}  {'STANDBYS':<22}{'SOLVER':<11}"
                 f"{'LAST DECISION':<14}STATE")
    for v in overview.cities:
        age = "never" if v.decision_age is None else f"{v.decision_age:.1f}s ago"
        colour = RED if v.state == "failing" else (YELLOW if v.late else GREEN)
        state = v.state or ("late" if v.late else "ok")
        lines.append(f"{v.city:<11}{v.owner or '-':<11}{v.token or '-':>7}  "
                     f"{','.join(v.standbys)[:21]:<22}{v.solver:<11}{age:<14}"
                     f"{colour}{state}{RESET}")
    lines.append("")
    owned: dict[str, int] = {}
    for v in overview.cities:
        if v.owner:
            owned[v.owner] = owned.get(v.owner, 0) + 1
    for worker_id, proc in workers.items():
        alive = proc.poll() is None
        mark = f"{GREEN}running{RESET}" if alive else f"{RED}dead{RESET}"
        lines.append(f"  {worker_id:<10} {mark}  owns {owned.get(worker_id, 0)} cities")
    lines += ["", *sink_lines, ""]
    lines.extend(f"  {DIM}{e}{RESET}" for e in scene.events[-8:])
    return "\033[H\033[2J" + "\n".join(lines)


@dataclass
class Demo:
    """Everything the demo started, the faults it injects and its live frames."""

    args: argparse.Namespace
    root: Path
    cluster: EtcdCluster
    client: EtcdClient
    keys: Keys
    sink: SinkSide
    producer: StateProducer
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    scene: Scene = field(default_factory=Scene)
    relay_killed: bool = False
    producer_stopped: bool = False
    ran: float = 0.0  # seconds until the stop, without the wind-down

    def faults(self, elapsed: float) -> None:
        """kill -9 a worker (once it decides for a city: a slow start does not leave
        nothing to fail over), then the active relay; restart each a while later."""
        args, scene, victim = self.args, self.scene, WORKERS[1]
        if victim not in scene.killed and elapsed >= args.kill_after and \
                victim in scene.owners.values():
            os.kill(self.workers[victim].pid, signal.SIGKILL)
            scene.killed[victim] = time.monotonic()
            scene.note(f"{RED}kill -9 {victim}{RESET}: its cities move after the "
                       f"{TTL}s lease TTL")
        if victim in scene.killed and self.workers[victim].poll() is not None and \
                elapsed >= args.kill_after + args.restart_after:
            self.workers[victim] = start_worker(victim, self.cluster.endpoints, self.root,
                                                self.sink.url)
            scene.note(f"{GREEN}restarted {victim}{RESET}")
        if not self.relay_killed and elapsed >= args.relay_kill_after:
            self.relay_killed = self.sink.kill_active(scene.note)
        if self.relay_killed and elapsed >= args.relay_kill_after + args.restart_after:
            self.sink.restart_killed(scene.note)
        self._producer_fault(elapsed)

    def _producer_fault(self, elapsed: float) -> None:
        """Stop the PostgreSQL city's producer for ``--state-pause`` seconds: the city
        refuses the stale state (its status says how old) until it writes again."""
        args, producer = self.args, self.producer
        start, end = args.state_pause_after, args.state_pause_after + args.state_pause
        if start <= elapsed < end and not self.producer_stopped:
            self.producer_stopped = True
            producer.pause()
            self.scene.note(f"{RED}the order service of {STATE_CITY} stops writing{RESET}: "
                            f"its state gets older than {STATE_MAX_AGE:g}s")
        elif elapsed >= end and producer.paused:
            producer.resume()
            self.scene.note(f"{GREEN}the order service of {STATE_CITY} writes again{RESET}")

    def frame(self, remaining: float | None) -> str | None:
        """One redraw of the live view; None when etcd could not be read."""
        sink_view = self.sink.read()  # before etcd: the lag is then never negative
        try:
            overview = read_overview(self.client, self.keys)
            relays = read_relays(self.client, self.keys)
        except Exception as exc:  # keep the view alive through etcd hiccups
            self.scene.note(f"etcd read failed: {exc}")
            return None
        track(self.scene, overview)
        self._pick_replay(overview)
        latest = max((v.decision_revision for v in overview.cities), default=0)
        lag = 0 if sink_view.error else max(0, latest - sink_view.cursor)
        self.sink.observe(relays, lag, self.scene.note)
        return render(self.scene, overview, self.workers, remaining,
                      self.sink.render(sink_view, relays, latest))

    def _pick_replay(self, overview: Overview) -> None:
        """Keep one decision of the PostgreSQL city from early on, to replay at the end."""
        if self.scene.replay_revision:
            return
        for view in overview.cities:
            if view.city == STATE_CITY and view.decision_revision and \
                    time.monotonic() - self.scene.started >= 10.0:
                self.scene.replay_revision = view.decision_revision

    def replay(self) -> list[str]:
        """``dispatchctl replay``'s answer for the kept decision, verbatim."""
        revision = self.scene.replay_revision
        if not revision:
            return [f"  no decision of {STATE_CITY} to replay"]
        args = ["replay", STATE_CITY, "--revision", str(revision), "--solver", "greedy",
                "--archive-url", self.sink.url]
        shown = f"$ dispatchctl replay {' '.join(args[1:])}"
        done = subprocess.run(
            [sys.executable, "-m", "coordinator.cli.ctl", "--etcd", self.cluster.endpoints,
             "--namespace", NAMESPACE, *args], capture_output=True, text=True, timeout=60,
            check=False)
        out = (done.stdout + done.stderr).strip().splitlines()
        return [f"  {BOLD}a decision of {STATE_CITY} replayed on its archived state{RESET}",
                f"  {shown}", *(f"  {line}" for line in out)]

    def wind_down(self) -> tuple[Report | None, dict[str, int]]:
        """Stop the workers, let the relays deliver etcd's last decisions (``heads``:
        city -> revision of its latest decision), stop them, check etcd's history."""
        print("\nstopping workers (SIGTERM: they hand their cities over) ...", flush=True)
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        heads: dict[str, int] = {}
        try:
            kvs, _ = self.client.get_prefix(self.keys.decisions)
            heads = {Keys.tail(kv.key, self.keys.decisions): kv.mod_revision for kv in kvs}
        except Exception as exc:
            print(f"etcd's latest decisions could not be read: {exc}")
        print("letting the relays deliver the last decisions ...", flush=True)
        if not self.sink.catch_up(heads):
            print("the sink did not reach etcd's last decision within 15s")
        self.sink.stop_relays()
        report = None
        try:
            report = verify(self.client, self.keys, start_revision=1)
        except Exception as exc:
            print(f"history check failed to run: {exc}")
        return report, heads


def start(args: argparse.Namespace) -> Demo:
    """PostgreSQL first (it fails early when missing), etcd, the cities, the relays, the
    workers."""
    root = Path(".demo").resolve()
    root.mkdir(exist_ok=True)
    sink = SinkSide(NAMESPACE, root, ttl=TTL)
    print("starting a 3-member etcd cluster on loopback ...", flush=True)
    cluster = EtcdCluster(3, base=root).start()
    client = EtcdClient(EtcdConfig(endpoints=tuple(cluster.endpoints.split(","))))
    keys = Keys(NAMESPACE)
    producer: StateProducer | None = None
    try:
        for city, solver in CITIES:
            params = {"orders": 60, "couriers": 40, "seed": len(city)}
            client.put(keys.city(city), CityConfig(city, solver, PERIOD,
                                                   params=params).encode())
        print("starting PostgreSQL, its schema (dispatch-relay --init) and two relays ...",
              flush=True)
        sink.start(cluster.endpoints)
        producer = StateProducer(sink.url, STATE_CITY, orders=40, couriers=25).start()
        client.put(keys.city(STATE_CITY), CityConfig(
            STATE_CITY, STATE_SOLVER, PERIOD, state_source="postgres",
            max_state_age=STATE_MAX_AGE, archive_state=True).encode())
    except BaseException:
        if producer is not None:
            producer.stop()
        sink.close()
        client.close()
        cluster.close()
        raise
    demo = Demo(args, root, cluster, client, keys, sink, producer)
    demo.workers = {w: start_worker(w, cluster.endpoints, root, sink.url) for w in WORKERS}
    demo.scene.note(f"etcd {cluster.endpoints}; {len(CITIES) + 1} cities; workers "
                    f"{', '.join(WORKERS)} (lease TTL {TTL}s); logs in {root}")
    demo.scene.note(f"relays {', '.join(RELAYS)} into {sink.url}; {STATE_CITY}'s state "
                    "read from there (the postgres source), archived for replay")
    return demo


def summary(demo: Demo, report: Report | None, sink_lines: list[str],
            replay_lines: list[str]) -> None:
    scene = demo.scene
    print(f"\n{BOLD}summary{RESET}")
    print(f"  ran {demo.ran:.0f}s with {len(CITIES) + 1} cities, "
          f"{len(WORKERS)} workers and {len(RELAYS)} relays")
    if report is not None:
        print(f"  decisions accepted by etcd: {report.decisions}")
        verdict = f"{GREEN}0 violations{RESET}" if report.ok else \
            f"{RED}{len(report.violations)} violations{RESET}"
        print(f"  history check (every decision from the leader of its time): {verdict}")
        for v in report.violations[:10]:
            print(f"    {v}")
    if scene.failovers:
        took = sorted(f.seconds for f in scene.failovers)
        print(f"  failovers after kill -9: {len(took)} cities, first decision by the new "
              f"owner after {took[0]:.1f}-{took[-1]:.1f}s (lease TTL {TTL}s)")
    else:
        print("  failovers: none seen")
    print("\n".join(sink_lines))
    print("\n".join(["", *replay_lines]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=0,
                        help="stop by itself after this many seconds (0: run until Ctrl-C)")
    parser.add_argument("--kill-after", type=float, default=20.0,
                        help="seconds before one worker is killed with SIGKILL")
    parser.add_argument("--relay-kill-after", type=float, default=30.0,
                        help="seconds before the active relay is killed with SIGKILL")
    parser.add_argument("--restart-after", type=float, default=20.0,
                        help="seconds after a kill before the worker or relay is restarted")
    parser.add_argument("--state-pause-after", type=float, default=45.0,
                        help=f"seconds before {STATE_CITY}'s order service stops writing")
    parser.add_argument("--state-pause", type=float, default=10.0,
                        help="seconds it stays stopped")
    args = parser.parse_args(argv)
    try:
        demo = start(args)
    except PostgresMissing as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 2
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__("now", True))
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    try:
        while not stop["now"]:
            elapsed = time.monotonic() - demo.scene.started
            if args.duration and elapsed >= args.duration:
                break
            demo.faults(elapsed)
            shown = demo.frame(args.duration - elapsed if args.duration else None)
            if shown is not None:
                print(shown, flush=True)
            time.sleep(0.5)
    finally:
        demo.ran = time.monotonic() - demo.scene.started
        replay_lines: list[str] = []
        try:
            report, heads = demo.wind_down()
            accepted = report.decisions if report is not None else None
            sink_lines, sink_ok = demo.sink.summary(heads, accepted)
            replay_lines = demo.replay()
        finally:
            demo.producer.stop()
            demo.sink.close()
            demo.client.close()
            demo.cluster.close()
    summary(demo, report, sink_lines, replay_lines)
    return 0 if (report is None or report.ok) and sink_ok else 1


if __name__ == "__main__":
    sys.exit(main())
