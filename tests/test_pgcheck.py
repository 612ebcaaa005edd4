"""The independent postgres checker (``devtools.pgcheck``) on a real etcd and PostgreSQL.

It passes once a real relay has carried decisions, tick groups (many cities at one
revision) included; it catches the deliberately unconditional sink when a relay wakes
up with a stale batch, a replay that the postgres sink shrugs off; it names each kind of
damage done to the tables by hand; it counts what etcd compacted away as unverifiable
rather than failing; and it shares no code with the coordinator it checks.

Decisions are put straight into ``<ns>/decisions/<city>``, as fenced commits leave them
(the fence is ``verify``'s business, not the sink's). Order ids repeat across cities, as
the simulator's do.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from dispatch_testsolvers.sinks import UnconditionalSink

from coordinator.codec import encode
from coordinator.errors import SinkError
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.relay import Relay, RelayConfig
from coordinator.sinks import Delivery
from coordinator.sinks.postgres import PostgresSink
from devtools import pgcheck
from devtools.localetcd import EtcdCluster
from protos import dispatch_pb2 as pb
from tests.conftest import wait_until


def decision(city: str, token: int, tick: int, couriers: int = 3) -> pb.Decision:
    """Four orders (``o-000000``...: the same ids in every city), as many assigned as
    there are couriers; ``couriers=0`` is a quiet moment: a decision that assigns none."""
    orders = [f"o-{i:06d}" for i in range(4)]
    pairs = {o: f"c-{(i + tick) % couriers:04d}" for i, o in enumerate(orders[:couriers])} \
        if couriers else {}
    made = pb.Decision(
        city=city, token=token, worker_id=f"w-{token}", solver="greedy", tick=tick,
        assignments=pairs, unassigned=[o for o in orders if o not in pairs],
        details=[pb.Assignment(order_id=o, courier_id=c, pickup_eta_seconds=60.0)
                 for o, c in pairs.items()])
    made.decided_at.GetCurrentTime()
    return made


class History:
    """Decisions written into etcd, kept as the deliveries a relay would make of them."""

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self.deliveries: list[Delivery] = []

    def put(self, city: str, token: int, tick: int, couriers: int = 3) -> Delivery:
        made = decision(city, token, tick, couriers)
        revision = self.client.put(self.keys.decision(city), encode(made))
        self.deliveries.append(Delivery(city, revision, token, made))
        return self.deliveries[-1]

    def group(self, cities: Sequence[str], token: int, tick: int) -> list[Delivery]:
        """A tick group's commit: several cities' decisions in one transaction, so at
        one revision."""
        made = {city: decision(city, token, tick) for city in cities}
        revision = self.client.txn([], [self.client.op_put(self.keys.decision(c), encode(d))
                                        for c, d in made.items()]).revision
        group = [Delivery(c, revision, token, d) for c, d in made.items()]
        self.deliveries += group
        return group

    @property
    def last(self) -> int:
        return self.deliveries[-1].revision

    def rows(self) -> int:
        return sum(len(d.decision.assignments) for d in self.deliveries)


def some_history(client: EtcdClient, keys: Keys) -> History:
    """Two leaders of paris, rome alongside, oslo quiet, and a tick group of all three."""
    h = History(client, keys)
    h.put("paris", 10, 1)
    h.put("rome", 11, 1)
    h.put("oslo", 12, 1, couriers=0)
    h.put("paris", 10, 2)
    h.group(["paris", "rome", "oslo"], 20, 3)
    h.put("paris", 30, 1)  # a new leader
    h.put("rome", 11, 4, couriers=2)
    return h


def fresh_sink(cls: type[PostgresSink], url: str, keys: Keys) -> PostgresSink:
    sink = cls(url, namespace=keys.namespace)
    sink.init_schema()
    return sink


def check(client: EtcdClient, keys: Keys, url: str) -> pgcheck.PgCheckResult:
    return pgcheck.check(client.endpoint, keys.namespace, url)


@contextmanager
def relay(client: EtcdClient, keys: Keys, sink: PostgresSink) -> Iterator[Relay]:
    running = Relay(client, RelayConfig(sink_name="postgres", relay_id="r1",
                                        namespace=keys.namespace, lease_ttl=2,
                                        status_every=0.2), sink)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.request_stop()
        thread.join(15)


def test_the_check_passes_after_a_real_relay_carried_the_decisions(
        client: EtcdClient, keys: Keys, postgres_url: str) -> None:
    h = some_history(client, keys)
    with relay(client, keys, fresh_sink(PostgresSink, postgres_url, keys)) as active:
        wait_until(lambda: active.cursor == h.last, timeout=20, message="the relay to catch up")
        h.put("oslo", 12, 2)  # and one live, while it follows
        wait_until(lambda: active.cursor == h.last, timeout=20, message="a live decision")
    result = check(client, keys, postgres_url)
    assert result.ok, "\n".join(map(str, result.findings))
    assert result.cursor == h.last and result.unverifiable == 0
    assert result.checked == result.accepted == len(h.deliveries) == 10
    assert result.rows == h.rows() == 26
    assert "clean" in result.summary()


def _replay(sink: PostgresSink, batches: list[list[Delivery]]) -> list[str]:
    """Apply each batch as a relay would; a batch the sink refuses with an error is
    what a relay retries later: noted, and the replay goes on."""
    errors = []
    for batch in batches:
        try:
            sink.apply(batch)
        except SinkError as exc:
            errors.append(str(exc))
    return errors


@pytest.mark.parametrize("sink_class", [PostgresSink, UnconditionalSink],
                         ids=["postgres", "unconditional"])
def test_a_relay_waking_with_a_stale_batch_is_caught_only_without_the_fence(
        client: EtcdClient, keys: Keys, postgres_url: str,
        sink_class: type[PostgresSink]) -> None:
    """Relay A delivers everything; relay B, paused past its lease while it held oslo's
    quiet decision and the paris decision after it, wakes up and delivers them again.
    The postgres sink refuses both and stays clean. The unconditional one takes oslo's
    (no assignment row stops it), and its cursor goes back past paris's rows."""
    h = History(client, keys)
    h.put("paris", 10, 1)
    stale = [h.put("oslo", 12, 1, couriers=0), h.put("paris", 10, 2)]
    h.put("paris", 10, 3)
    h.put("oslo", 12, 2, couriers=0)
    sink = fresh_sink(sink_class, postgres_url, keys)
    errors = _replay(sink, [h.deliveries[:2], h.deliveries[2:]] + [[d] for d in stale])
    sink.close()
    result = check(client, keys, postgres_url)
    if sink_class is PostgresSink:
        assert not errors and result.ok, "\n".join(map(str, result.findings))
        return
    assert len(errors) == 1 and "duplicate key" in errors[0]  # the audit's key held paris
    assert result.cursor == stale[0].revision, result.summary()  # gone back
    found = [(f.kind, f.city, f.revision) for f in result.findings]
    after = [d.revision for d in h.deliveries[2:4]]  # paris's rows past the cursor now
    assert sorted(found) == [("beyond-cursor", "paris", after[0]),
                             ("beyond-cursor", "paris", after[1]),  # its rows
                             ("beyond-cursor", "paris", after[1])], found  # the decision


def test_each_kind_of_damage_to_the_tables_is_named(client: EtcdClient, keys: Keys,
                                                    postgres_url: str) -> None:
    h = some_history(client, keys)
    sink = fresh_sink(PostgresSink, postgres_url, keys)
    sink.apply(h.deliveries)
    sink.close()
    command = [sys.executable, "-m", "devtools.pgcheck", "--etcd", client.endpoint,
               "--namespace", keys.namespace, "--pg", postgres_url]
    clean = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0 and "clean" in clean.stdout, clean.stdout + clean.stderr
    first, group = h.deliveries[0], h.deliveries[4]  # paris's first; paris in the group
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DELETE FROM dispatch_assignments WHERE revision = %s AND city = 'rome' "
                   "AND order_id = 'o-000000'", (h.deliveries[1].revision,))
        db.execute("UPDATE dispatch_assignments SET courier_id = 'c-9999' "
                   "WHERE revision = %s AND city = 'paris' AND order_id = 'o-000001'",
                   (first.revision,))
        db.execute("UPDATE dispatch_assignments SET token = 7 WHERE revision = %s "
                   "AND city = 'paris'", (group.revision,))
        db.execute("INSERT INTO dispatch_assignments SELECT revision + 1, city, token, "
                   "order_id, courier_id, pickup_eta_seconds, decided_at, worker_id, solver "
                   "FROM dispatch_assignments WHERE revision = %s AND city = 'paris'",
                   (first.revision,))
        db.execute("UPDATE dispatch_decisions SET revision = %s WHERE city = 'oslo'",
                   (h.deliveries[2].revision,))
    result = check(client, keys, postgres_url)
    found = {(f.kind, f.city, f.revision) for f in result.findings}
    assert found == {
        ("missing", "rome", h.deliveries[1].revision),
        ("not-in-decision", "paris", first.revision),
        ("token", "paris", group.revision),
        ("not-accepted", "paris", first.revision + 1),  # rome's revision, not paris's
        ("stale", "oslo", h.deliveries[2].revision),
    }, "\n".join(map(str, result.findings))
    damaged = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert damaged.stdout.count("FINDING ") == 5 and "5 findings" in damaged.stdout
    unreachable = subprocess.run(
        [*command[:-1], "postgresql://nobody@127.0.0.1:1/none"], capture_output=True,
        text=True, timeout=60)
    assert unreachable.returncode == 2 and "cannot check" in unreachable.stderr


def test_history_compacted_away_is_unverifiable_not_a_finding(postgres_url: str,
                                                              tmp_path: Path) -> None:
    """etcd of its own (compacting the suite's shared one would cut other tests' history)."""
    keys = Keys("/compacted")
    etcd = EtcdCluster(1, base=tmp_path).start()
    client = EtcdClient(EtcdConfig(endpoints=(etcd.members[0].client_url,)))
    try:
        h = History(client, keys)
        gone = h.put("paris", 10, 1)
        kept = h.put("paris", 10, 2)  # paris's value when etcd compacts: still known
        h.put("rome", 11, 1)
        sink = fresh_sink(PostgresSink, postgres_url, keys)
        sink.apply(h.deliveries)
        point = h.put("oslo", 12, 1).revision
        client.compact(point)
        h.put("paris", 10, 3)
        sink.apply(h.deliveries[-2:])
        sink.close()
        result = check(client, keys, postgres_url)
    finally:
        client.close()
        etcd.close()
    assert result.ok, "\n".join(map(str, result.findings))
    assert result.compacted == point
    assert result.unverifiable == len(gone.decision.assignments)
    assert result.accepted == len(h.deliveries) - 1  # all but the compacted one
    assert kept.revision < point and result.checked == result.accepted


def test_the_checker_shares_no_code_with_the_coordinator() -> None:
    imported: set[str] = set()
    for path in Path(pgcheck.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names}
        imported |= {n.module for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module}
    assert "psycopg" in imported, imported  # (the files were read)
    ours = {m for m in imported if m.split(".")[0] in ("coordinator", "solvers", "devtools")}
    assert ours <= {"devtools.pgcheck", "devtools.pgcheck.model", "devtools.pgcheck.history",
                    "devtools.pgcheck.tables"}, ours
