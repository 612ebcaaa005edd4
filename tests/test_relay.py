"""The relay on real etcd: delivery in order from the sink's cursor, takeover by a
standby, two active relays, a PostgreSQL restart mid-stream, and the command line.

``MemorySink`` keeps the sink contract (conditional per city, cursor kept with the
batch) in memory, for properties that are not about PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg

from coordinator.codec import encode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.relay import Relay, RelayConfig
from coordinator.sinks import Applied, Delivery, Sink
from coordinator.sinks.postgres import PostgresSink
from devtools.localpg import LocalPostgres
from protos import dispatch_pb2 as pb
from tests.conftest import wait_until


class MemorySink(Sink):
    name = "memory"

    def __init__(self, url: str = "", *, namespace: str = "/dispatch") -> None:
        self.held: dict[str, int] = {}
        self.log: list[tuple[str, int]] = []  # every applied (city, revision)
        self.high = 0
        self._lock = threading.Lock()

    def init_schema(self) -> None:
        pass

    def cursor(self) -> int:
        return self.high

    def apply(self, batch: Sequence[Delivery]) -> Applied:
        applied = refused = 0
        with self._lock:
            for d in batch:
                if d.revision > self.held.get(d.city, 0):
                    self.held[d.city] = d.revision
                    self.log.append((d.city, d.revision))
                    applied += 1
                else:
                    refused += 1
                self.high = max(self.high, d.revision)
            return Applied(applied, refused, self.high)


def put(client: EtcdClient, keys: Keys, city: str, tick: int) -> int:
    decision = pb.Decision(city=city, token=5, worker_id="w", solver="greedy", tick=tick)
    decision.decided_at.GetCurrentTime()
    return client.put(keys.decision(city), encode(decision))


@contextmanager
def running(client: EtcdClient, keys: Keys, sink: Sink, relay_id: str,
            sink_name: str = "memory") -> Iterator[Relay]:
    relay = Relay(client, RelayConfig(sink_name=sink_name, relay_id=relay_id,
                                      namespace=keys.namespace, lease_ttl=2,
                                      status_every=0.2), sink)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.request_stop()
        thread.join(15)
        assert not thread.is_alive()


def no_repeats(log: list[tuple[str, int]]) -> bool:
    per_city: dict[str, list[int]] = {}
    for city, revision in log:
        per_city.setdefault(city, []).append(revision)
    return all(r == sorted(set(r)) for r in per_city.values())


def test_relay_delivers_in_order_from_the_sink_cursor(client: EtcdClient, keys: Keys) -> None:
    sink = MemorySink()
    old = put(client, keys, "paris", 0)
    sink.high = old  # the sink already holds everything up to here
    sink.held["paris"] = old
    written = [put(client, keys, c, n) for n, c in enumerate(["rome", "paris", "oslo"])]
    with running(client, keys, sink, "r1") as relay:
        wait_until(lambda: sink.high == written[-1], message="catch-up")
        written.append(put(client, keys, "rome", 9))
        wait_until(lambda: sink.high == written[-1], message="a live decision")
        assert [r for _, r in sink.log] == written
        assert relay.applied == 4 and relay.active
        status = wait_until(lambda: client.get(keys.relay_status("memory", "r1")))
        assert b'"active": true' in status.value  # type: ignore[attr-defined]


def test_a_standby_takes_over_when_the_active_relay_loses_its_lease(
        client: EtcdClient, keys: Keys) -> None:
    sink = MemorySink()
    with running(client, keys, sink, "a") as first, running(client, keys, sink, "b") as second:
        wait_until(lambda: first.active or second.active, message="one active relay")
        active, standby = (first, second) if first.active else (second, first)
        assert not standby.active
        put(client, keys, "paris", 1)
        assert active.session is not None
        client.lease_revoke(active.session.lease_id)  # as if it died: its lease is gone
        wait_until(lambda: standby.active, timeout=10, message="the standby takes over")
        last = put(client, keys, "paris", 2)
        wait_until(lambda: sink.held.get("paris") == last, message="delivery goes on")
        assert no_repeats(sink.log)


def test_two_active_relays_are_harmless(client: EtcdClient, keys: Keys) -> None:
    sink = MemorySink()
    # different election names: both lead at once, on one store
    with running(client, keys, sink, "a", "one"), running(client, keys, sink, "b", "two"):
        written = [put(client, keys, f"c{n % 3}", n) for n in range(30)]
        wait_until(lambda: sink.high == written[-1], message="both caught up")
    assert no_repeats(sink.log)
    assert sorted(r for _, r in sink.log) == written


def test_postgres_restarted_mid_stream_catches_up_in_order(client: EtcdClient,
                                                          keys: Keys) -> None:
    with LocalPostgres() as server:  # private: this test stops it
        url = server.create_database("relay")
        sink = PostgresSink(url, namespace=keys.namespace)
        sink.init_schema()
        written = [put(client, keys, "paris", 0)]
        with running(client, keys, sink, "r1", "postgres") as relay:
            wait_until(lambda: relay.cursor == written[-1], message="first decision")
            server.stop()
            written += [put(client, keys, f"c{n % 2}", n) for n in range(1, 6)]
            wait_until(lambda: not relay.sink_ok, message="the sink seen down")
            server.restart()
            wait_until(lambda: relay.cursor == written[-1], timeout=20, message="catch-up")
        with psycopg.connect(url) as db:
            rows = db.execute("SELECT city, revision FROM dispatch_decisions "
                              "ORDER BY city").fetchall()
        assert rows == [("c0", written[4]), ("c1", written[5]), ("paris", written[0])]


def test_cli_unknown_sink_and_help() -> None:
    run = [sys.executable, "-m", "coordinator.cli.relay"]
    bad = subprocess.run([*run, "--sink", "nope", "--sink-url", "x"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("dispatch-relay: error: no sink "
                                                          "named 'nope'")
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert "newer than the one it holds" in helped.stdout and "Example" in helped.stdout


def test_a_standby_process_takes_over_from_a_killed_one(client: EtcdClient, keys: Keys,
                                                        postgres_url: str,
                                                        tmp_path: object) -> None:
    from pathlib import Path

    from coordinator.recipes.election import leader_of

    run = [sys.executable, "-m", "coordinator.cli.relay", "--etcd", client.endpoint,
           "--namespace", keys.namespace, "--sink", "postgres", "--sink-url", postgres_url]
    subprocess.run([*run, "--init"], check=True, capture_output=True, timeout=60)
    logs = Path(str(tmp_path))
    procs = {rid: subprocess.Popen([*run, "--relay-id", rid, "--lease-ttl", "2"],
                                   stdout=open(logs / f"{rid}.log", "wb"),  # noqa: SIM115
                                   stderr=subprocess.STDOUT) for rid in ("a", "b")}
    try:
        prefix = keys.relay_election("postgres")
        first = wait_until(lambda: leader_of(client, prefix), timeout=20, message="a leader")
        active = first.value.decode()  # type: ignore[attr-defined]
        written = [put(client, keys, "paris", 1)]
        sink = PostgresSink(postgres_url, namespace=keys.namespace)
        wait_until(lambda: sink.cursor() == written[-1], timeout=20, message="delivered")
        procs[active].kill()  # SIGKILL: no resign, the lease must expire
        procs[active].wait(10)
        written.append(put(client, keys, "paris", 2))
        wait_until(lambda: sink.cursor() == written[-1], timeout=20, message="takeover")
        sink.close()
        standby = "b" if active == "a" else "a"
        procs[standby].terminate()
        assert procs[standby].wait(20) == 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
