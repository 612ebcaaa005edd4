"""Proof under faults: a short seeded chaos run, and focused fault tests.

``test_a_short_seeded_chaos_run_is_safe_and_recovers`` runs the harness of ``make
chaos`` (``devtools.chaos``) for a minute and a half of faults: 4 worker
processes behind their own proxies, a 3-member etcd cluster, 50 cities, 2 relays into a
local PostgreSQL, every fault kind. It asserts what must hold whatever the machine's
load: no safety violation in etcd's whole history, every worker owning cities again
afterwards with nobody's help, no worker or relay exiting by itself, the relays caught
up and the database clean against etcd's history (``devtools.pgcheck``). Availability
and gaps are asserted against bounds this 2-core machine meets with room to spare (see
``docs/safety.md`` for the figures of longer runs and what limits them).

The focused tests below pin down bugs the harness found (all fixed; each test failed
before its fix): a session given up during an etcd leader election, every worker
sitting out together after a quorum loss, and a watch resuming past events it had not
yet received. See docs/safety.md.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.etcd import EtcdClient, EtcdConfig, KeyValue, WatchBatch
from coordinator.keys import Keys
from coordinator.ops.verify import Report, merged, verify
from coordinator.recipes.watch import PrefixWatch
from coordinator.settings import CityConfig
from devtools.chaos import ChaosConfig, run
from devtools.chaos.faults import KINDS, MEMBERSHIP_KINDS, PARTITION_KINDS, SINK_KINDS
from devtools.chaos.fleet import Etcd
from devtools.proxy import Proxy
from tests.conftest import WorkerProcess, wait_until
from tests.etcd_server import EtcdCluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SEED = 20241123
TTL = 2
#: Lowest acceptable availability of the short run (share of periods with a decision,
#: no-quorum windows excluded). A fault that touches every city strikes every few
#: seconds; before the fixes pinned by the focused tests below, each etcd leader change
#: or quorum loss cost every city 5-15 s (short runs measured 56-77 % here).
AVAILABILITY_FLOOR = 0.50
#: Tracebacks a worker log may hold without failing the run: a solver process whose
#: worker died while it was still starting dies on its broken pipe and says so
#: (harmless; docs/safety.md, issue 4).
TOLERATED_TRACEBACKS = {"BrokenPipeError: [Errno 32] Broken pipe"}


def test_a_short_seeded_chaos_run_is_safe_and_recovers(tmp_path: Path) -> None:
    out = io.StringIO()
    # the storm (--pace 20): a worker or etcd fault every few seconds, so that 90 s see
    # every kind; etcd's own default election timeout, and a 2 s lease. The operators'
    # membership changes (restarts, replacement) and the partitions between members
    # would not all fit in 90 s beside the rest: `make chaos` runs them with every other
    # kind, and
    # test_cluster.py::test_a_rolling_restart_and_a_member_replacement_cost_the_worker_nothing
    # and test_partition.py put them to the suite.
    kinds = tuple(k for k in KINDS if k not in MEMBERSHIP_KINDS + PARTITION_KINDS)
    result = run(ChaosConfig(duration=90, seed=SEED, workers=4, cities=50, relays=2,
                             ttl=TTL, etcd_election_ms=1000, pace=20.0, base=tmp_path,
                             keep=True, progress=False, kinds=kinds), out=out)
    report = result.report
    text = out.getvalue()
    print(text)  # shown by pytest when the test fails (and with -s)
    assert report is not None and report.ok, "\n".join(map(str, report.violations[:20]))
    assert report.decisions > 2000, text
    assert not result.problems, result.problems  # resource growth included
    assert set(result.tracebacks) <= TOLERATED_TRACEBACKS, result.tracebacks
    # every kind of fault was injected, the relays' and PostgreSQL's among them
    assert set(result.by_kind()) == set(kinds), result.by_kind()
    assert all(result.by_kind()[kind] >= 1 for kind in SINK_KINDS), result.by_kind()
    # the relays carried every decision into PostgreSQL, and the independent checker
    # finds the database true to etcd's history: each accepted decision once, nothing
    # else, each city holding its latest
    sink = result.sink
    assert sink is not None and sink.check is not None, text
    assert sink.check.ok, "\n".join(map(str, sink.check.findings[:20]))
    assert sink.caught_up and sink.check.cursor >= sink.latest, text
    assert sink.check.checked == sink.check.accepted == report.decisions, text
    assert sink.check.rows > 0 and sink.check.unverifiable == 0, text
    # recovered without a human: every worker leads cities, every city decides
    assert result.recovered, (result.owners, result.stale_decisions)
    assert result.exit_code == 0
    av = report.availability
    assert av is not None and len(av.cities) == 50
    assert av.overall >= AVAILABILITY_FLOOR, av.summary()
    # The write probe saw etcd's own outages: every lost quorum overlaps a window in
    # which no member recognised a live leader, and leaving those windows out as well
    # can only raise the figure.
    wav = result.writable_availability
    assert result.unwritable and wav is not None, text
    for lost, regained in result.no_quorum:
        assert any(a < regained and b > lost for a, b in result.unwritable), \
            (lost, regained, result.unwritable)
    assert wav.overall >= av.overall, (wav.summary(), av.summary())
    # A worker crash, pause or cut moves its cities within the lease TTL plus a little,
    # and SIGTERM hands them over sooner than a crash would: judged on each fault's worst
    # gap (median over the faults of a kind; a fault striking before the fleet has
    # recovered from the previous one can do worse). A handover should miss hardly a
    # tick; the bound leaves room for this machine's load.
    for kind, bound in (("kill9", TTL + 4.0), ("sigstop", TTL + 4.0), ("cut", TTL + 4.0),
                        ("sigterm", TTL + 1.0)):
        stat = result.gaps.get(kind)
        assert stat is None or stat.typical <= bound, (kind, stat.worst_per_fault)


# -- focused: an etcd leader change -----------------------------------------------------


def _gaps_around(client: EtcdClient, keys: Keys, since: float) -> dict[str, float]:
    """Each city's longest time between decisions decided after ``since``."""
    report = verify(client, keys)
    gaps = {}
    for city, history in report.decisions_by_city.items():
        moments = [d.decided_at.ToNanoseconds() / 1e9 for _, d in history]
        moments = [t for t in moments if t >= since]
        gaps[city] = max((b - a for a, b in itertools.pairwise(moments)),
                         default=0.0)
    assert report.ok, report.violations
    return gaps


def test_an_etcd_leader_change_does_not_cost_the_workers_their_leases(
        cluster3: EtcdCluster, tmp_path: Path) -> None:
    """etcd extends every lease when a new leader takes over, so a leader change (one to
    two election timeouts here: 1-2 s) should cost no worker its lease and no city more
    than the lease TTL plus a little."""
    keys = Keys("/leader")
    client = EtcdClient(EtcdConfig(endpoints=tuple(cluster3.endpoints.split(",")),
                                   timeout=3))
    cities = [f"c{i}" for i in range(6)]
    for city in cities:
        client.put(keys.city(city), CityConfig(city, "greedy", 0.3).encode())
    workers = [WorkerProcess(cluster3.endpoints, "/leader", f"w{i}", tmp_path, ttl=TTL)
               for i in range(2)]
    try:
        wait_until(lambda: all(client.get(keys.decision(c)) for c in cities), timeout=60,
                   message="every city to decide")
        time.sleep(2.0)
        since = time.time()
        leader = cluster3.leader()
        leader.kill()
        time.sleep(4.0)
        cluster3.restart(leader)
        cluster3.wait_ready()
        time.sleep(3.0)
        gaps = _gaps_around(client, keys, since)
        lost = [w.worker_id for w in workers if "lost: no keep-alive" in w.log()]
        assert not lost, f"workers that gave up their lease: {lost}; gaps {gaps}"
        assert max(gaps.values()) <= TTL + 1.0, gaps
    finally:
        for w in workers:
            w.close()
        client.close()


# -- focused: a watch resuming with a backlog -------------------------------------------


@dataclass
class Cutoff:
    """A client through a proxy the test cuts and restores, one straight to etcd, and a
    prefix of the test's own (deleted after it)."""

    proxy: Proxy
    proxied: EtcdClient
    direct: EtcdClient
    root: str

    @contextmanager
    def watch(self, prefix: str, snapshot: Callable[[list[KeyValue], int], None],
              events: Callable[[WatchBatch], None]) -> Iterator[PrefixWatch]:
        watch = PrefixWatch(self.proxied, prefix, on_snapshot=snapshot,
                            on_events=events).start()
        try:
            assert watch.synced.wait(10)
            yield watch
        finally:
            watch.stop()


@pytest.fixture
def cutoff(etcd: EtcdCluster) -> Iterator[Cutoff]:
    member = etcd.members[0].client_url
    proxy = Proxy(member).start()
    proxied = EtcdClient(EtcdConfig(endpoints=(proxy.url,), timeout=5))
    direct = EtcdClient(EtcdConfig(endpoints=(member,)))
    root = f"/cutoff-{time.time_ns()}/"
    try:
        yield Cutoff(proxy, proxied, direct, root)
    finally:
        proxy.close()
        proxied.close()
        direct.delete(root, prefix=True)
        direct.close()


def test_a_watch_resumed_with_a_long_backlog_loses_no_event(cutoff: Cutoff) -> None:
    """A PrefixWatch through a proxy: cut it off, write a backlog of 16,000 revisions,
    restore it, and cut it again if it is catching up. Every key written must reach the
    listener. (Written for the replay, which took etcd over a second; since a backlog
    over ``REPLAY_LIMIT`` is read again instead, it holds the read to the same bar.)"""
    from concurrent.futures import ThreadPoolExecutor

    prefix = cutoff.root
    direct, proxy = cutoff.direct, cutoff.proxy
    seen: set[str] = set()
    delivered = [0]
    lock = threading.Lock()

    def snapshot(kvs: list[KeyValue], revision: int) -> None:
        with lock:
            seen.update(kv.key for kv in kvs)
            delivered[0] = revision

    def events(batch: WatchBatch) -> None:
        with lock:
            seen.update(e.kv.key for e in batch.events if e.kind == "put")
            delivered[0] = batch.events[-1].kv.mod_revision

    with cutoff.watch(prefix, snapshot, events) as watch:
        proxy.cut()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: direct.put(f"{prefix}{i}", b"x"), range(16_000)))
        _, final = direct.get_prefix(prefix, count_only=True)
        proxy.restore()
        # wait until the watch claims to be further than what it has delivered
        deadline = time.monotonic() + 30
        ahead = False
        while time.monotonic() < deadline:
            with lock:
                if delivered[0] >= final:
                    break
                if watch.revision > delivered[0]:
                    ahead = True
                    break
            time.sleep(0.005)
        if ahead:
            proxy.cut()  # the stream breaks mid catch-up: it resumes from watch.revision
            time.sleep(0.3)
            proxy.restore()
        wait_until(lambda: len(seen) >= 16_000, timeout=30,
                   message=f"all 16000 keys to reach the listener (watch claimed revision "
                           f"{watch.revision} while delivered {delivered[0]})")


def test_a_quiet_watch_resumes_from_the_present_and_loses_no_change(cutoff: Cutoff) -> None:
    """A PrefixWatch on a quiet prefix, through a proxy: cut it off, change the prefix,
    then write a history longer than ``REPLAY_LIMIT`` elsewhere (as decisions do), and
    restore it. The watch must come back at the present, by a read, not ask etcd to
    replay the history since its last event (etcd reads every key's revisions to do so,
    and stalls its writes); and the listener must hold exactly what etcd holds."""
    from concurrent.futures import ThreadPoolExecutor

    quiet, busy = f"{cutoff.root}quiet/", f"{cutoff.root}busy/"
    direct, proxy = cutoff.direct, cutoff.proxy
    held: dict[str, bytes] = {}
    snapshots = [0]
    lock = threading.Lock()

    def snapshot(kvs: list[KeyValue], _revision: int) -> None:
        with lock:
            held.clear()
            held.update((kv.key, kv.value) for kv in kvs)
            snapshots[0] += 1

    def events(batch: WatchBatch) -> None:
        with lock:
            for e in batch.events:
                if e.kind == "put":
                    held[e.kv.key] = e.kv.value
                else:
                    held.pop(e.kv.key, None)

    direct.put(f"{quiet}a", b"1")
    with cutoff.watch(quiet, snapshot, events) as watch:
        proxy.cut()
        direct.put(f"{quiet}b", b"2")
        direct.delete(f"{quiet}a")
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: direct.put(f"{busy}{i % 100}", b"x" * 1000), range(2000)))
        _, history_end = direct.get_prefix(busy, count_only=True)
        proxy.restore()
        wait_until(lambda: watch.revision >= history_end, timeout=30,
                   message=f"the watch back at the present (revision {history_end}), "
                           f"not replaying from its last event")
        with lock:
            assert held == {f"{quiet}b": b"2"}
            assert snapshots[0] >= 2, "resumed by replaying events, not by a read"


def test_a_watch_a_few_revisions_behind_replays_every_event(cutoff: Cutoff) -> None:
    """Cut off for a moment, a watch near the present resumes by replay: a key created
    and deleted meanwhile reaches the listener as two events, which a read would skip
    (a decision log counts every decision)."""
    prefix = cutoff.root
    direct, proxy = cutoff.direct, cutoff.proxy
    seen: list[tuple[str, str]] = []
    snapshots = [0]

    def snapshot(_kvs: list[KeyValue], _revision: int) -> None:
        snapshots[0] += 1

    def events(batch: WatchBatch) -> None:
        seen.extend((e.kind, e.kv.key) for e in batch.events)

    with cutoff.watch(prefix, snapshot, events):
        proxy.cut()
        direct.put(f"{prefix}brief", b"1")
        direct.delete(f"{prefix}brief")
        direct.put(f"{prefix}marker", b"1")
        proxy.restore()
        wait_until(lambda: ("put", f"{prefix}marker") in seen, timeout=30,
                   message="the watch resumed")
        assert seen == [("put", f"{prefix}brief"), ("delete", f"{prefix}brief"),
                        ("put", f"{prefix}marker")]
        assert snapshots[0] == 1, "read again though only three revisions behind"


# -- focused: etcd out of reach, again and again ------------------------------------------


def test_cities_decide_soon_after_etcd_is_back_again_and_again(
        etcd: EtcdCluster, tmp_path: Path) -> None:
    """A worker cut off etcd for longer than the lease TTL, four times in a minute —
    what a quorum loss or a network outage does to every worker at once. Once etcd is
    reachable again the cities should decide within the lease TTL plus a little: sitting
    out to stop ownership bouncing between workers helps nobody when there is no other
    worker to own them."""
    namespace = f"/outage-{time.time_ns()}"
    keys = Keys(namespace)
    member = etcd.members[0].client_url
    client = EtcdClient(EtcdConfig(endpoints=(member,), timeout=2))
    cities = [f"c{i}" for i in range(4)]
    for city in cities:
        client.put(keys.city(city), CityConfig(city, "greedy", 0.3).encode())
    proxy = Proxy(member, name="w0").start()
    worker = WorkerProcess(proxy.url, namespace, "w0", tmp_path, "--solve-isolation",
                           "thread", ttl=TTL)
    recovery = []
    try:
        wait_until(lambda: all(client.get(keys.decision(c)) for c in cities), timeout=60,
                   message="every city to decide")
        for _ in range(4):
            proxy.cut()
            time.sleep(TTL + 1.5)  # the lease expires in etcd
            proxy.restore()
            back = time.time()

            def all_decided(since: float = back) -> bool:
                return all(_decided_since(client, keys, c, since) for c in cities)

            wait_until(all_decided, timeout=90, interval=0.1,
                       message="every city to decide again")
            recovery.append(time.time() - back)
            time.sleep(1.0)
        print("recovery", recovery)
        assert max(recovery) <= TTL + 3.0, f"seconds from etcd back to decisions: {recovery}"
    finally:
        worker.close()
        proxy.close()
        client.close()


def test_a_city_with_a_long_period_decides_moments_after_etcd_is_back(
        etcd: EtcdCluster, tmp_path: Path) -> None:
    """A tick that cannot reach etcd is tried again within moments, not a period later:
    a one-second blip must not cost a city with a 6 s period six seconds. Afterwards the
    city returns to its own phase (cities retried together must not stay in step)."""
    namespace = f"/blip-{time.time_ns()}"
    keys = Keys(namespace)
    member = etcd.members[0].client_url
    client = EtcdClient(EtcdConfig(endpoints=(member,), timeout=2))
    period = 6.0
    client.put(keys.city("oslo"), CityConfig("oslo", "greedy", period).encode())
    proxy = Proxy(member, name="w0").start()
    worker = WorkerProcess(proxy.url, namespace, "w0", tmp_path, "--solve-isolation",
                           "thread", ttl=5)
    try:
        wait_until(lambda: _decision_times(client, keys, "oslo") >= 2, timeout=60,
                   message="two decisions")  # past the first tick, on its own phase
        last = _latest_decided(client, keys, "oslo")
        due = last + period
        time.sleep(max(0.0, due - 0.5 - time.time()))
        proxy.cut()  # the tick due next cannot reach etcd
        time.sleep(max(0.0, due + 1.0 - time.time()))
        proxy.restore()
        back = time.time()
        wait_until(lambda: _decided_since(client, keys, "oslo", back), timeout=15,
                   interval=0.05, message="a decision after etcd is back")
        recovered = time.time() - back
        # without the quick retry the next attempt is the next tick, ~5 s from here
        assert recovered < 3.0, f"{recovered:.2f}s from etcd back to a decision"
        wait_until(lambda: _decided_since(client, keys, "oslo", due + period - 1.0),
                   timeout=15, interval=0.05, message="the tick after")
        phase_error = _latest_decided(client, keys, "oslo") - (due + period)
        assert abs(phase_error) < 0.5, f"{phase_error:+.2f}s off its phase"
    finally:
        worker.close()
        proxy.close()
        client.close()


def _latest_decided(client: EtcdClient, keys: Keys, city: str) -> float:
    from coordinator.codec import decode
    from protos import dispatch_pb2 as pb

    kv = client.get(keys.decision(city))
    assert kv is not None
    return decode(pb.Decision, kv.value).decided_at.ToNanoseconds() / 1e9


def _decision_times(client: EtcdClient, keys: Keys, city: str) -> int:
    kv = client.get(keys.decision(city))
    return 0 if kv is None else kv.version


def _decided_since(client: EtcdClient, keys: Keys, city: str, since: float) -> bool:
    from coordinator.codec import decode
    from coordinator.errors import EtcdError
    from protos import dispatch_pb2 as pb

    try:
        kv = client.get(keys.decision(city))
    except EtcdError:
        return False
    return kv is not None and \
        decode(pb.Decision, kv.value).decided_at.ToNanoseconds() / 1e9 > since


def test_the_harness_explains_a_violation_with_etcds_own_history(
        client: EtcdClient, keys: Keys) -> None:
    """When a run finds a violation, the harness prints the city's history from etcd."""
    from coordinator.codec import encode
    from coordinator.recipes.election import Election
    from coordinator.recipes.session import Session
    from coordinator.recipes.store import DecisionStore
    from devtools.chaos.report import explain
    from protos import dispatch_pb2 as pb

    first, second = Session(client, ttl=5), Session(client, ttl=5)
    old = Election(client, first, keys.election("x")).campaign("w1")
    DecisionStore(client, keys).commit("x", old, pb.Decision(city="x", token=old.token,
                                                             worker_id="w1"))
    waiting = Election(client, second, keys.election("x"))
    waiting.enter("w2")
    first.close()
    waiting.campaign("w2")
    rogue = client.put(keys.decision("x"),
                       encode(pb.Decision(city="x", token=old.token, worker_id="w1")))
    report = verify(client, keys)
    out = io.StringIO()
    explain(client, keys, report, out)
    text = out.getvalue()
    assert f"first violation: x @ revision {rogue}" in text
    assert "created (token" in text and "deleted" in text
    assert f"{rogue}  decision token {old.token} by 'w1'" in text
    second.close()


# -- focused: a solve queued for a process --------------------------------------------------


def test_a_solve_that_waited_for_a_process_is_not_killed_as_hung() -> None:
    """After a pause or a burst of due ticks, solves queue for the worker's solver
    processes. A solve that waited must still get its deadline for *running*: killing
    it (and its process, which then needs seconds to warm up again) as if it had hung
    shrinks the pool exactly when it is busiest — the cascade of "no solver process was
    free" seen in chaos runs after a worker wakes from SIGSTOP."""
    from coordinator.errors import SolverFailed
    from coordinator.worker.runner import ProcessSolveRunner, SolveResult
    from solvers.generate import random_city

    runner = ProcessSolveRunner(1)
    try:
        wait_until(runner.ready, timeout=120, message="a warm solver process")
        state = random_city("queue", 5, 3, 1).freeze()
        results: dict[str, SolveResult | SolverFailed] = {}

        def solve(tag: str, sleep: float) -> None:
            try:
                results[tag] = runner.solve("test-slow", None, state,  # type: ignore[arg-type]
                                            {"sleep": sleep}, budget=0.5, deadline=1.0)
            except SolverFailed as exc:
                results[tag] = exc

        first = threading.Thread(target=solve, args=("first", 0.8))
        first.start()
        time.sleep(0.1)
        second = threading.Thread(target=solve, args=("second", 0.4))  # waits ~0.7 s
        second.start()
        first.join(10)
        second.join(10)
        assert isinstance(results["first"], SolveResult), results["first"]
        # 0.4 s of solving is well within its 1 s deadline; the wait was not its doing
        assert isinstance(results["second"], SolveResult), results["second"]
        assert runner.abandoned == 0
    finally:
        runner.close()


# -- the write probe: etcd's own outages, measured from outside ---------------------------


def test_the_write_probe_measures_the_election_after_a_leader_kill(
        cluster3: EtcdCluster) -> None:
    """Availability may leave out the time etcd itself could not take a write; the
    probe that finds those windows must see a raft election, and only while it lasts."""
    etcd = Etcd(cluster3, "/probe")
    stop = threading.Event()
    prober = threading.Thread(target=etcd.probe_writes, args=(stop,), daemon=True)
    prober.start()
    try:
        time.sleep(1.0)
        assert not etcd.unwritable  # a healthy cluster: no window
        leader = etcd.leader()
        assert leader is not None
        killed = time.time()
        etcd.kill(leader)
        wait_until(lambda: etcd.unwritable, timeout=15, message="the election to end")
        etcd.restart(leader)
        cluster3.wait_ready()
    finally:
        stop.set()
        prober.join(5)
        etcd.close()
    (start, end), *_ = etcd.unwritable
    # etcd's election timeout is 1 s, randomised up to 2 s; the probe asks every 0.1 s
    assert killed - 0.2 <= start <= killed + 0.5 and 0.5 <= end - start <= 5.0, \
        (killed, etcd.unwritable)


def test_overlapping_windows_are_merged_before_they_are_left_out() -> None:
    assert merged([(5.0, 6.0), (1.0, 3.0), (2.0, 4.0), (6.0, 7.0)]) == [(1.0, 4.0),
                                                                         (5.0, 7.0)]


@pytest.mark.parametrize("etcd_fault", ["quorum-loss", "leader-kill"])
def test_a_worker_fault_is_not_charged_the_etcd_outage_that_follows_it(
        etcd_fault: str) -> None:
    """A cut heals, and etcd stops taking writes just as the cut's span ends (its quorum
    lost, or a long election): the city the cut worker was deciding waits out the outage
    too. The cut is charged the gap without the outage, which is etcd's fault's."""
    from devtools.chaos.analysis import gap_stats
    from devtools.chaos.faults import Fault
    from tests.test_verify import make_decision

    # c1 (w3's) decides at 0.5 s steps until 34.5 s, then once etcd takes writes again
    history = [(0, make_decision("c1", 1, "w3", 0.5 * k)) for k in range(1, 70)]
    history.append((0, make_decision("c1", 1, "w3", 44.4)))
    report = Report(start_revision=1, end_revision=2, decisions_by_city={"c1": history})
    cut = Fault("cut", "w3", started=29.0, healed=32.2)  # its span ends at 35.2 (TTL 2)
    outage = Fault(etcd_fault, "m0+m2", started=35.2, healed=44.4)
    stopped = [(35.2, 44.4)]
    stats = gap_stats(report, [cut, outage], {"c1": 0.5}, (0.0, 50.0), ttl=2.0,
                      no_quorum=stopped if etcd_fault == "quorum-loss" else [],
                      unwritable=stopped)  # the probe sees a lost quorum as well
    assert stats["cut"].worst_per_fault == [pytest.approx(9.9 - 9.2)]
    assert not stats[etcd_fault].worst_per_fault  # the gap began before it


def test_a_slowed_proxy_delays_every_round_trip_and_loses_nothing() -> None:
    """``net-delay``: each chunk waits the delay in each direction, none is dropped, and
    ``slow(0)`` gives full speed back."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    with Proxy(f"127.0.0.1:{server.getsockname()[1]}") as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:

        def round_trip(payload: bytes) -> float:
            began = time.monotonic()
            client.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += client.recv(65536)
            assert got == payload
            return time.monotonic() - began

        assert round_trip(b"warm") < 0.1
        proxy.slow(0.15)
        assert round_trip(b"x" * 100_000) >= 0.3
        proxy.slow(0.0)
        assert round_trip(b"fast again") < 0.1
    server.close()


def test_a_worker_that_holds_more_after_the_run_is_flagged() -> None:
    """The chaos run compares each worker's threads, descriptors and solver processes
    once warm and once settled; growth beyond a tick's worth is reported as a problem
    (and fails the short run above)."""
    from devtools.chaos.analysis import grew
    from devtools.chaos.fleet import Resources

    warm = Resources(threads=27, fds=15, solvers=3)
    assert not grew(warm, Resources(33, 20, 3))  # the tick pool filled up
    assert not grew(warm, None) and not grew(None, warm)
    assert grew(warm, Resources(45, 15, 3))  # threads
    assert grew(warm, Resources(27, 30, 3))  # descriptors
    assert grew(warm, Resources(27, 15, 4))  # a solver process too many


def test_the_chaos_modules_import_one_another_without_a_circle() -> None:
    """The faults reach the harness through ``ChaosTarget`` alone: no module of
    ``devtools.chaos`` imports itself back, type-checking imports included, and the faults
    import neither the harness nor the fleet it runs."""
    import ast
    import graphlib

    import devtools.chaos

    package = Path(devtools.chaos.__file__).parent
    imports: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found |= {n.rsplit(".", 1)[-1] for n in names
                      if n.startswith("devtools.chaos.") and n.count(".") == 2}
        imports[path.stem] = found - {path.stem}
    order = list(graphlib.TopologicalSorter(imports).static_order())  # CycleError: a circle
    assert {"harness", "faults", "target"} <= set(order)

    def reached(module: str) -> set[str]:
        seen, todo = set(), [module]
        while todo:
            for m in imports.get(todo.pop(), set()) - seen:
                seen.add(m)
                todo.append(m)
        return seen

    assert reached("faults") == {"target"}, reached("faults")

