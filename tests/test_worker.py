"""Workers as real processes: ownership, failover, pauses, graceful handover, live cities."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coordinator.codec import assigned
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.ops.verify import verify
from tests.conftest import WorkerProcess, wait_until
from tests.etcd_server import ETCDCTL, EtcdCluster, etcdctl_leader
from tests.helpers import decision, dispatchctl

Spawn = Callable[..., WorkerProcess]


def add_city(etcd: EtcdCluster, namespace: str, city: str, *extra: str,
             period: float = 0.3) -> None:
    dispatchctl(etcd.endpoints, namespace, "city", "add", city, "--solver", "greedy",
                "--period", str(period), *extra)


@contextmanager
def operator_leads(etcd: EtcdCluster, client: EtcdClient, keys: Keys,
                   city: str) -> Iterator[subprocess.Popen[bytes]]:
    """An operator holds ``city``'s election with ``etcdctl elect`` (SIGINT resigns)."""
    proc = subprocess.Popen([ETCDCTL, f"--endpoints={etcd.endpoints}", "elect",
                             keys.election(city), "operator"], stdout=subprocess.PIPE)
    try:
        wait_until(lambda: client.get_prefix(keys.election(city) + "/")[0],
                   message="etcdctl to stand")
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def owner(etcd: EtcdCluster, keys: Keys, city: str) -> str:
    return etcdctl_leader(etcd.endpoints, keys.election(city))


def settled_owner(client: EtcdClient, keys: Keys, city: str, candidates: int = 2) -> str:
    """The city's owner once the balancer is done moving it: every worker queued and the
    latest decision made by the current leader."""
    wait_until(lambda: decision(client, keys, city), message="a decision")
    wait_until(lambda: len(client.get_prefix(keys.election(city) + "/")[0]) == candidates,
               message="every worker to stand")

    def stable() -> str | None:
        kvs, _ = client.get_prefix(keys.election(city) + "/", sort="create", limit=1)
        d = decision(client, keys, city)
        if kvs and d and d.token == kvs[0].create_revision:
            return d.worker_id
        return None

    # The balancer may still hand the city over once (to the worker its hash prefers):
    # settled means the same owner a second apart.
    first = wait_until(stable, message="a settled owner")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = wait_until(stable, message="a settled owner")
        if now == first:
            return str(first)
        first = now
    raise AssertionError("ownership still moving after 30 s")


def test_the_leader_decides_with_its_token_and_etcdctl_shows_it(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        spawn_worker: Spawn) -> None:
    spawn_worker("w1")
    add_city(etcd, namespace, "paris")
    d = wait_until(lambda: decision(client, keys, "paris"), message="a decision")
    kvs, _ = client.get_prefix(keys.election("paris") + "/")
    assert d.worker_id == "w1" and d.token == kvs[0].create_revision  # type: ignore[union-attr]
    assert d is not None and assigned(d) and d.solver == "greedy"
    assert owner(etcd, keys, "paris") == "w1"
    assert verify(client, keys).ok


def test_kill_9_of_the_owner_moves_the_city_within_ttl_plus_2s(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        spawn_worker: Spawn) -> None:
    ttl = 2
    workers = {w: spawn_worker(w, ttl=ttl) for w in ("w1", "w2")}
    add_city(etcd, namespace, "paris")
    victim = settled_owner(client, keys, "paris")
    survivor = "w2" if victim == "w1" else "w1"

    killed_at = time.monotonic()
    workers[victim].kill()
    wait_until(lambda: (d := decision(client, keys, "paris")) and d.worker_id == survivor,
               timeout=ttl + 2, interval=0.02, message=f"a decision by {survivor}")
    took = time.monotonic() - killed_at
    assert took <= ttl + 2, took
    report = verify(client, keys)
    assert report.ok, report.violations


def test_a_paused_owner_is_fenced_out_when_it_wakes_and_steps_down(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        spawn_worker: Spawn) -> None:
    """SIGSTOP the owner for longer than its TTL, mid-solve: when it wakes, its tick in
    flight tries to commit with the old token. etcd must reject it, and it must step
    down — while the worker that took over keeps deciding."""
    ttl = 2
    workers = {w: spawn_worker(w, ttl=ttl) for w in ("w1", "w2")}
    # a slow solver keeps a tick in flight most of the time, so the pause lands mid-tick
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "test-slow",
                "--param", "sleep=0.35", "--period", "0.4")
    def pause_and_wake(paused: str, other: str) -> bool:
        """Whether etcd rejected a stale write from ``paused`` after it woke."""
        woken = workers[paused]
        fenced, steps = woken.log().count("fenced out"), woken.log().count("stepping down")
        woken.signal(signal.SIGSTOP)
        wait_until(lambda: (d := decision(client, keys, "paris")) and d.worker_id == other,
                   timeout=ttl + 3, message="the other worker to take over")
        time.sleep(1.0)  # paused for well over the TTL
        woken.signal(signal.SIGCONT)
        wait_until(lambda: woken.log().count("stepping down") > steps, timeout=10,
                   message="the woken worker to step down")
        # The woken worker stands again (the balancer may later hand the city back to
        # it, gracefully); no decision from its old leadership may ever have been
        # accepted.
        wait_until(lambda: len(client.get_prefix(keys.election("paris") + "/")[0]) == 2,
                   timeout=10, message="the woken worker to queue again")
        report = verify(client, keys)
        assert report.ok, report.violations
        return woken.log().count("fenced out") > fenced

    # A pause that lands while the commit itself is in flight lets that commit's deadline
    # pass: the woken worker then drops it unsent (also safe), and etcd sees no stale
    # write to reject. The pause lands mid-solve nearly always; try a few times.
    for _ in range(3):
        paused = settled_owner(client, keys, "paris")
        if pause_and_wake(paused, "w2" if paused == "w1" else "w1"):
            break
    assert "fenced out" in workers[paused].log(), "its stale write was not rejected by etcd"


def test_sigterm_hands_the_city_over_at_once_and_revokes_the_lease(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        spawn_worker: Spawn) -> None:
    workers = {w: spawn_worker(w, ttl=5) for w in ("w1", "w2")}
    add_city(etcd, namespace, "paris", period=0.3)
    leaving = settled_owner(client, keys, "paris")
    staying = "w2" if leaving == "w1" else "w1"

    started = time.monotonic()
    assert workers[leaving].terminate() == 0
    wait_until(lambda: (d := decision(client, keys, "paris")) and d.worker_id == staying,
               timeout=3, interval=0.02, message="the standby to take over")
    # far sooner than the 5 s TTL: the city was handed over, not abandoned
    assert time.monotonic() - started < 3
    assert client.get(keys.worker(leaving)) is None
    assert verify(client, keys).ok


def test_a_city_won_while_stopping_is_resigned_at_once_not_held_till_the_end(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        spawn_worker: Spawn) -> None:
    """A leaving worker waits for its ticks in flight before its lease goes. A city won
    meanwhile (its leader resigned to us) must not wait with it, unticked: the worker
    resigns it as it wins it, for the next in line."""
    with operator_leads(etcd, client, keys, "paris") as operator:
        leaving = spawn_worker("w1", ttl=10)
        add_city(etcd, namespace, "paris", period=0.3)
        # a tick of 3 s every 4 s: the worker's shutdown waits for the one in flight
        dispatchctl(etcd.endpoints, namespace, "city", "add", "slowtown", "--solver",
                    "test-slow", "--param", "sleep=3.0", "--period", "4")
        wait_until(lambda: len(client.get_prefix(keys.election("paris") + "/")[0]) == 2,
                   message="the worker to queue behind etcdctl")
        first = wait_until(lambda: decision(client, keys, "slowtown"), timeout=20,
                           message="slowtown's first decision")
        wait_until(lambda: (d := decision(client, keys, "slowtown")) and d != first,
                   timeout=10, interval=0.05, message="slowtown's next decision")
        time.sleep(1.4)  # its next tick started moments ago and runs 3 s
        leaving.signal(signal.SIGTERM)
        wait_until(lambda: "stopping: finishing ticks" in leaving.log(), timeout=5,
                   interval=0.05, message="the worker to begin stopping")
        operator.send_signal(signal.SIGINT)   # paris is handed over while w1 stops
        operator.wait(10)
        wait_until(lambda: not client.get_prefix(keys.election("paris") + "/")[0],
                   timeout=1, interval=0.05, message="paris left free for the next in line")
        assert leaving.process.poll() is None, "w1 stopped before the check could tell"
        assert leaving.process.wait(15) == 0


def test_cities_are_added_reconfigured_disabled_and_removed_live(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        spawn_worker: Spawn) -> None:
    spawn_worker("w1")
    add_city(etcd, namespace, "paris", period=0.2)
    wait_until(lambda: decision(client, keys, "paris"), message="a first decision")

    dispatchctl(etcd.endpoints, namespace, "city", "set", "paris", "--solver", "hungarian")
    wait_until(lambda: decision(client, keys, "paris").solver == "hungarian",  # type: ignore[union-attr]
               timeout=2, message="the new solver to be used")

    dispatchctl(etcd.endpoints, namespace, "city", "disable", "paris")
    wait_until(lambda: not client.get_prefix(keys.election("paris") + "/")[0],
               timeout=2, message="the owner to resign")
    frozen = client.get(keys.decision("paris"))
    time.sleep(0.6)
    assert client.get(keys.decision("paris")) == frozen, "a disabled city still got decisions"

    dispatchctl(etcd.endpoints, namespace, "city", "enable", "paris")
    wait_until(lambda: client.get(keys.decision("paris")) != frozen, timeout=3,
               message="decisions to resume")

    dispatchctl(etcd.endpoints, namespace, "city", "remove", "paris")
    wait_until(lambda: not client.get_prefix(keys.election("paris") + "/")[0],
               timeout=2, message="the owner to stop")
    assert verify(client, keys).ok


def test_an_etcdctl_candidate_holds_the_city_and_no_worker_decides(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        spawn_worker: Spawn) -> None:
    with operator_leads(etcd, client, keys, "paris") as operator:
        spawn_worker("w1")
        add_city(etcd, namespace, "paris", period=0.2)
        wait_until(lambda: len(client.get_prefix(keys.election("paris") + "/")[0]) == 2,
                   message="the worker to queue behind etcdctl")
        time.sleep(1.0)
        assert decision(client, keys, "paris") is None
        operator.send_signal(signal.SIGINT)
        operator.wait(10)
        wait_until(lambda: decision(client, keys, "paris"), timeout=5,
                   message="the worker to decide once etcdctl resigned")
        assert verify(client, keys).ok
