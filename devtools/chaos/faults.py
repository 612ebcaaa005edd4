"""The faults, and the lanes that inject them one at a time from a seeded schedule.

Each lane draws its faults from its own ``random.Random`` seeded with ``"<seed>:<lane>"``
and always draws the same four numbers per fault (kind from a shuffled deck, target,
hold time, a spare), so the *schedule* — which faults, on whom, for how long, how far
apart — depends on the seed alone. What the system does in between (who leads, which
member is the raft leader when ``leader-kill`` strikes) does not, so a replay with the
same seed is the same storm, not the same weather.

A fault reaches the fleet only through :class:`~devtools.chaos.target.ChaosTarget`,
which the harness implements; nothing here imports the harness.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.settings import CityConfig
from devtools.chaos.target import ChaosTarget, RelayTarget, WorkerTarget
from devtools.localetcd import EtcdMember

__all__ = ["ETCD_KINDS", "FLOORS", "KINDS", "MEMBERSHIP_KINDS", "PARTITION_KINDS", "SINK_KINDS",
           "SOLVER_KINDS", "UNTURNED", "WORKER_KINDS", "Fault", "Lane"]

WORKER_KINDS = ("kill9", "sigterm", "sigstop", "cut", "net-stall", "net-delay")
#: ``member-restart``, ``rolling-restart`` and ``member-replace`` are what operators do
#: to etcd on purpose: a graceful restart, an upgrade-style restart of every member in
#: turn, a dead machine replaced by an empty one
MEMBERSHIP_KINDS = ("member-restart", "rolling-restart", "member-replace")
#: a member cut from its peers while it still answers clients (``devtools.peerlink``):
#: the raft leader from both followers, or one follower alone
PARTITION_KINDS = ("leader-partition", "follower-partition")
ETCD_KINDS = ("member-kill", "leader-kill", "member-pause", "quorum-loss", *MEMBERSHIP_KINDS,
              *PARTITION_KINDS)
#: faults of one city (``slow-solve``) or of one worker's solver processes
#: (``solver-kill``): they never wait for their turn with the faults of a whole worker
#: or of etcd
SOLVER_KINDS = ("slow-solve", "solver-kill")
#: faults downstream of etcd (with ``--relays``): a relay killed, paused past its lease
#: or cut off PostgreSQL, PostgreSQL restarted. They cost no decision in etcd, only
#: delivery to the sink, whose check (``devtools.pgcheck``) judges them
SINK_KINDS = ("relay-kill9", "relay-sigstop", "relay-cut", "pg-restart")
KINDS = WORKER_KINDS + ETCD_KINDS + SOLVER_KINDS + SINK_KINDS
#: What a fault of each kind must cost at least, whatever the coordinator does: the
#: seconds it stops deciding (``ttl``: a dead, paused or cut worker's lease must expire;
#: ``election``: etcd elects a raft leader; ``none``: a graceful handover, etcd's own
#: leadership transfer, or a fault that touches no decision) and over which cities
#: (``worker``: one worker's share; ``all``). The report sets each kind's cost against it.
FLOORS: dict[str, tuple[str, str]] = {
    "kill9": ("ttl", "worker"), "sigstop": ("ttl", "worker"), "cut": ("ttl", "worker"),
    "net-stall": ("ttl", "worker"), "sigterm": ("none", "worker"),
    "net-delay": ("none", "worker"),
    "member-kill": ("election", "all"), "leader-kill": ("election", "all"),
    "member-pause": ("election", "all"), "quorum-loss": ("election", "all"),
    "member-restart": ("none", "all"), "rolling-restart": ("none", "all"),
    "member-replace": ("election", "all"),
    "leader-partition": ("election", "all"), "follower-partition": ("none", "all"),
    **{kind: ("none", "all") for kind in SOLVER_KINDS + SINK_KINDS},
}
#: kinds that concern no whole worker and not etcd: they never wait for their turn
UNTURNED = SOLVER_KINDS + SINK_KINDS


@dataclass
class Fault:
    """One injected fault: what, on whom, and when (seconds since the epoch)."""

    kind: str
    target: str
    started: float
    #: when the fault was undone (process restarted or continued, member back,
    #: connection restored, quorum regained)
    healed: float = 0.0
    note: str = ""
    lane: str = ""

    def describe(self) -> str:
        took = f" for {self.healed - self.started:.1f}s" if self.healed else ""
        return f"{self.kind} {self.target}{took}" + (f" ({self.note})" if self.note else "")


@dataclass
class Draw:
    kind: str
    target: int
    hold: float
    spare: float


@dataclass
class Lane:
    """A thread injecting faults of ``kinds`` one after another until ``stop``."""

    name: str
    kinds: tuple[str, ...]
    seed: int
    quiet: tuple[float, float]
    target: ChaosTarget
    stop: threading.Event
    faults: list[Fault] = field(default_factory=list)
    current: Fault | None = None
    thread: threading.Thread | None = None

    def start(self) -> Lane:
        self.thread = threading.Thread(target=self._run, name=f"chaos lane {self.name}",
                                       daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def schedule(self, count: int) -> list[Draw]:
        """The first ``count`` faults this lane will inject (for printing a plan)."""
        rng = random.Random(f"{self.seed}:{self.name}")
        rng.uniform(*self.quiet)
        deck: list[str] = []
        out = []
        for _ in range(count):
            out.append(self._draw(rng, deck))
            rng.uniform(*self.quiet)
        return out

    def _draw(self, rng: random.Random, deck: list[str]) -> Draw:
        if not deck:
            deck.extend(self.kinds)
            rng.shuffle(deck)
        return Draw(deck.pop(), rng.randrange(1 << 30), rng.random(), rng.random())

    def _run(self) -> None:
        rng = random.Random(f"{self.seed}:{self.name}")
        deck: list[str] = []
        if self.stop.wait(rng.uniform(*self.quiet)):
            return
        while not self.stop.is_set():
            draw = self._draw(rng, deck)
            # Faults that touch every city take turns (unless the run allows overlap), so
            # each decision gap can be laid at one fault's door; slow-solve concerns one
            # city and the sink's faults none: they never wait.
            turn = self.target.turn if draw.kind not in UNTURNED else None
            try:
                if turn is not None:
                    turn.acquire()
                    if self.stop.is_set():
                        return
                INJECT[draw.kind](self, draw)
                if turn is not None:
                    # let the fleet recover before the next fault that concerns every
                    # city: the lease TTL plus the harness's recovery margin
                    self.stop.wait(self.target.ttl + self.target.recovery_margin)
            except Exception as exc:  # the harness must outlive a fault that misfires
                self.target.problem(f"[{self.name}] {draw.kind} misfired: "
                                    f"{type(exc).__name__}: {exc}; healing everything")
                try:
                    self.target.heal()
                except Exception as again:
                    self.target.problem(f"healing failed too: {again}")
            finally:
                self.current = None
                if turn is not None:
                    turn.release()
            self.stop.wait(rng.uniform(*self.quiet))

    # -- bookkeeping --------------------------------------------------------------------

    def begin(self, kind: str, target: str, note: str = "") -> Fault:
        fault = Fault(kind, target, time.time(), note=note, lane=self.name)
        self.current = fault
        self.faults.append(fault)
        self.target.emit(f"[{self.name}] {kind} {target}" + (f" ({note})" if note else ""))
        return fault

    def end(self, fault: Fault, note: str = "") -> None:
        fault.healed = time.time()
        if note:
            fault.note = f"{fault.note}; {note}" if fault.note else note
        self.target.emit(f"[{self.name}] healed: {fault.describe()}")

    def hold(self, seconds: float) -> None:
        """Keep the fault in place for ``seconds`` (cut short when the run stops)."""
        self.stop.wait(seconds)


def _between(low: float, high: float, u: float) -> float:
    return low + (high - low) * u


# -- workers ----------------------------------------------------------------------------


def _worker(lane: Lane, draw: Draw) -> WorkerTarget:
    workers = lane.target.workers
    return workers[draw.target % len(workers)]


def kill9(lane: Lane, draw: Draw) -> None:
    slot = _worker(lane, draw)
    slot.expected_down = True
    fault = lane.begin("kill9", slot.worker_id)
    slot.kill()
    lane.hold(_between(0.5, 3.0, draw.hold))
    slot.start()
    slot.expected_down = False
    lane.end(fault)


def sigterm(lane: Lane, draw: Draw) -> None:
    slot = _worker(lane, draw)
    slot.expected_down = True
    fault = lane.begin("sigterm", slot.worker_id)
    started = time.monotonic()
    graceful = slot.terminate(timeout=30.0)
    code = slot.process.returncode if slot.process is not None else None
    note = (f"left in {time.monotonic() - started:.1f}s, exit {code}" if graceful
            else "did not stop within 30s: killed")
    if graceful and code != 0:
        lane.target.problem(f"{slot.worker_id} exited with status {code} after SIGTERM")
    lane.hold(_between(0.5, 2.0, draw.hold))
    slot.start()
    slot.expected_down = False
    lane.end(fault, note)


def sigstop(lane: Lane, draw: Draw) -> None:
    slot = _worker(lane, draw)
    ttl = lane.target.ttl
    fault = lane.begin("sigstop", slot.worker_id)
    slot.pause()
    lane.hold(ttl + _between(0.5, 3.0, draw.hold))
    slot.resume()
    lane.end(fault)


def cut(lane: Lane, draw: Draw) -> None:
    slot = _worker(lane, draw)
    fault = lane.begin("cut", slot.worker_id)
    slot.proxies.cut()
    lane.hold(_between(0.5, 5.0, draw.hold))
    slot.proxies.restore()
    lane.end(fault)


def net_stall(lane: Lane, draw: Draw) -> None:
    slot = _worker(lane, draw)
    fault = lane.begin("net-stall", slot.worker_id)
    slot.proxies.stall()
    lane.hold(_between(1.0, 5.0, draw.hold))
    slot.proxies.unstall()
    lane.end(fault)


def net_delay(lane: Lane, draw: Draw) -> None:
    """A slow link: every chunk between the worker and etcd waits 30-250 ms."""
    slot = _worker(lane, draw)
    delay = _between(0.03, 0.25, draw.spare)
    fault = lane.begin("net-delay", slot.worker_id, f"{1000 * delay:.0f} ms per chunk")
    slot.proxies.slow(delay)
    lane.hold(_between(2.0, 6.0, draw.hold))
    slot.proxies.slow(0.0)
    lane.end(fault)


# -- etcd -------------------------------------------------------------------------------


def _settle_etcd(lane: Lane, fault: Fault) -> None:
    if not lane.target.etcd.wait_healthy(60.0):
        lane.target.problem(f"etcd not healthy 60s after {fault.describe()}")


def member_kill(lane: Lane, draw: Draw) -> None:
    etcd = lane.target.etcd
    member = etcd.member(draw.target)
    leader = etcd.leader()
    fault = lane.begin("member-kill", member.name,
                       "the leader" if leader is member else "a follower")
    etcd.kill(member)
    lane.hold(_between(1.0, 5.0, draw.hold))
    etcd.restart(member)
    lane.end(fault)
    _settle_etcd(lane, fault)


def leader_kill(lane: Lane, draw: Draw) -> None:
    etcd = lane.target.etcd
    leader = etcd.leader()
    if leader is None:
        etcd.wait_healthy(30.0, lane.stop)
        leader = etcd.leader()
        if leader is None:
            lane.target.emit(f"[{lane.name}] leader-kill skipped: no leader to kill")
            return
    fault = lane.begin("leader-kill", leader.name)
    etcd.kill(leader)
    lane.hold(_between(1.0, 5.0, draw.hold))
    etcd.restart(leader)
    lane.end(fault)
    _settle_etcd(lane, fault)


def member_pause(lane: Lane, draw: Draw) -> None:
    etcd = lane.target.etcd
    member = etcd.member(draw.target)
    leader = etcd.leader()
    fault = lane.begin("member-pause", member.name,
                       "the leader" if leader is member else "a follower")
    etcd.pause(member)
    lane.hold(_between(1.0, 5.0, draw.hold))
    etcd.resume(member)
    lane.end(fault)
    _settle_etcd(lane, fault)


def quorum_loss(lane: Lane, draw: Draw) -> None:
    target = lane.target
    etcd = target.etcd
    first = draw.target % len(etcd.members)
    pair = [etcd.member(first), etcd.member(first + 1)]
    how = "killed" if draw.spare < 0.5 else "paused"
    fault = lane.begin("quorum-loss", "+".join(m.name for m in pair), how)
    for member in pair:
        if how == "killed":
            etcd.kill(member)
        else:
            etcd.pause(member)
    lost_at = time.time()  # no majority from here: nothing can be written
    lane.hold(_between(2.0, 6.0, draw.hold))
    for member in pair:
        if how == "killed":
            etcd.restart(member)
        else:
            etcd.resume(member)
    deadline = time.monotonic() + 60.0
    while not etcd.has_quorum() and time.monotonic() < deadline:
        time.sleep(0.05)
    regained = time.time()
    target.record_no_quorum(lost_at, regained)
    lane.end(fault, f"no quorum for {regained - lost_at:.1f}s")
    _settle_etcd(lane, fault)


def member_restart(lane: Lane, draw: Draw) -> None:
    """SIGTERM to a member (a leader transfers its leadership first), then started
    again on its data directory 0.5-3 s later."""
    etcd = lane.target.etcd
    member = etcd.member(draw.target)
    leader = etcd.leader()
    fault = lane.begin("member-restart", member.name,
                       "the leader" if leader is member else "a follower")
    etcd.stop_member(member)
    lane.hold(_between(0.5, 3.0, draw.hold))
    etcd.start_member(member)
    lane.end(fault)
    _settle_etcd(lane, fault)


def rolling_restart(lane: Lane, draw: Draw) -> None:
    """Every member restarted gracefully in turn, followers first and the leader last,
    waiting for the cluster's health between two, as an upgrade does."""
    etcd = lane.target.etcd
    leader = etcd.leader()
    order = [m for m in etcd.members if m is not leader]
    order += [leader] if leader is not None else []
    fault = lane.begin("rolling-restart", "+".join(m.name for m in order),
                       "followers first, the leader last")
    for member in order:
        etcd.stop_member(member)
        lane.hold(_between(0.2, 1.0, draw.hold))
        etcd.start_member(member)
        if not etcd.wait_healthy(60.0):
            lane.target.problem(f"etcd not healthy 60s after restarting {member.name} in "
                                "a rolling restart")
            break
    lane.end(fault)
    _settle_etcd(lane, fault)


def member_replace(lane: Lane, draw: Draw) -> None:
    """A member's machine lost for good: the member removed from the cluster and a new
    one with an empty data directory added in its place (it catches up from the
    leader's snapshot or log)."""
    etcd = lane.target.etcd
    member = etcd.member(draw.target)
    leader = etcd.leader()
    fault = lane.begin("member-replace", member.name,
                       "the leader" if leader is member else "a follower")
    note = etcd.replace(member)
    lane.end(fault, note)
    _settle_etcd(lane, fault)


def leader_partition(lane: Lane, draw: Draw) -> None:
    """The raft leader cut from both followers for 2-6 s while it still answers clients:
    it steps down, the majority elects another, and the workers talking to it must go
    there; nothing the cut member accepts meanwhile may count."""
    etcd = lane.target.etcd
    leader = etcd.leader()
    if leader is None:
        lane.target.emit(f"[{lane.name}] leader-partition skipped: no leader to cut off")
        return
    _partition(lane, draw, "leader-partition", leader)


def follower_partition(lane: Lane, draw: Draw) -> None:
    """One follower cut from both other members for 2-6 s while it still answers
    clients (with etcd 3.4's default, no pre-vote, it comes back with a higher term)."""
    etcd = lane.target.etcd
    leader = etcd.leader()
    followers = [m for m in etcd.members if m is not leader]
    _partition(lane, draw, "follower-partition", followers[draw.target % len(followers)])


def _partition(lane: Lane, draw: Draw, kind: str, member: EtcdMember) -> None:
    etcd = lane.target.etcd
    fault = lane.begin(kind, member.name, "cut from its peers, still answering clients")
    etcd.isolate(member)
    lane.hold(_between(2.0, 6.0, draw.hold))
    etcd.heal_links()
    lane.end(fault)
    _settle_etcd(lane, fault)


# -- solvers ----------------------------------------------------------------------------


def slow_solve(lane: Lane, draw: Draw) -> None:
    slow = lane.target.slow_cities
    if not slow:
        return
    config = slow[draw.target % len(slow)]
    stall = config.period * _between(1.1, 1.5, draw.spare)
    fault = lane.begin("slow-solve", config.city,
                       f"solver sleeps {stall:.2f}s, period {config.period:g}s")
    stalled = CityConfig(config.city, config.solver, config.period,
                         params={**config.params, "sleep": round(stall, 3)})
    lane.target.put_settings(stalled)
    lane.hold(_between(2.0, 6.0, draw.hold))
    lane.target.put_settings(config)
    lane.end(fault)


def solver_kill(lane: Lane, draw: Draw) -> None:
    """kill -9 one of a worker's solver processes, perhaps in the middle of a solve."""
    slot = _worker(lane, draw)
    children = slot.solver_processes()
    if not children:
        lane.target.emit(f"[{lane.name}] solver-kill skipped: {slot.worker_id} has no "
                         "solver process")
        return
    pid = children[int(draw.spare * len(children)) % len(children)]
    fault = lane.begin("solver-kill", slot.worker_id, f"pid {pid}")
    slot.kill_child(pid)
    lane.end(fault)


# -- the sink: relays and PostgreSQL -----------------------------------------------------


def _relay(lane: Lane, draw: Draw) -> tuple[RelayTarget, str] | None:
    """Mostly the active relay (a standby's faults only delay a takeover), and whether
    it was the active one."""
    relays = lane.target.relays
    if not relays:
        return None
    active = lane.target.active_relay() if draw.spare < 0.75 else None
    slot = active or relays[draw.target % len(relays)]
    return slot, "active" if active is not None else "by lot"


def relay_kill9(lane: Lane, draw: Draw) -> None:
    picked = _relay(lane, draw)
    if picked is None:
        return
    slot, which = picked
    slot.expected_down = True
    fault = lane.begin("relay-kill9", slot.relay_id, which)
    slot.kill()
    lane.hold(_between(0.5, 3.0, draw.hold))
    slot.start()
    slot.expected_down = False
    lane.end(fault)


def relay_sigstop(lane: Lane, draw: Draw) -> None:
    """A relay paused past its lease: a standby takes over, and when it wakes up it may
    still deliver the batch it held, which the sink must refuse as not newer."""
    picked = _relay(lane, draw)
    if picked is None:
        return
    slot, which = picked
    fault = lane.begin("relay-sigstop", slot.relay_id, which)
    slot.pause()
    lane.hold(lane.target.ttl + _between(0.5, 3.0, draw.hold))
    slot.resume()
    lane.end(fault)


def relay_cut(lane: Lane, draw: Draw) -> None:
    """A relay's connection to PostgreSQL closed and refused (perhaps mid-transaction)."""
    picked = _relay(lane, draw)
    if picked is None:
        return
    slot, which = picked
    fault = lane.begin("relay-cut", slot.relay_id, which)
    slot.link.cut()
    lane.hold(_between(0.5, 5.0, draw.hold))
    slot.link.restore()
    lane.end(fault)


def pg_restart(lane: Lane, draw: Draw) -> None:
    """PostgreSQL stopped (fast shutdown, or SIGKILL as a crash) and started again on
    the same port 0.5-3 s later."""
    postgres = lane.target.postgres
    if postgres is None:
        return
    how = "crash" if draw.spare < 0.5 else "fast shutdown"
    fault = lane.begin("pg-restart", "postgres", how)
    if how == "crash":
        postgres.kill()
    else:
        postgres.stop()
    lane.hold(_between(0.5, 3.0, draw.hold))
    postgres.restart()
    lane.end(fault)


INJECT: dict[str, Callable[[Lane, Draw], None]] = {
    "kill9": kill9,
    "sigterm": sigterm,
    "sigstop": sigstop,
    "cut": cut,
    "net-stall": net_stall,
    "net-delay": net_delay,
    "member-kill": member_kill,
    "leader-kill": leader_kill,
    "member-pause": member_pause,
    "quorum-loss": quorum_loss,
    "member-restart": member_restart,
    "rolling-restart": rolling_restart,
    "member-replace": member_replace,
    "leader-partition": leader_partition,
    "follower-partition": follower_partition,
    "slow-solve": slow_solve,
    "solver-kill": solver_kill,
    "relay-kill9": relay_kill9,
    "relay-sigstop": relay_sigstop,
    "relay-cut": relay_cut,
    "pg-restart": pg_restart,
}
