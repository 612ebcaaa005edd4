"""``dispatchctl audit`` on a real PostgreSQL, filled through the postgres sink itself; and
where dispatchctl points at the sinks (history past compaction, status's relays)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.cli.audit import parse_since
from coordinator.codec import encode
from coordinator.errors import ConfigError
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.sinks.contract import Delivery
from coordinator.sinks.postgres import PostgresSink
from protos import dispatch_pb2 as pb
from tests.etcd_server import EtcdCluster
from tests.helpers import dispatchctl

NOW = datetime.now(UTC).replace(microsecond=0)


def audit(url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"} | ({"DISPATCH_SINK_URL": url} if url else {})
    return subprocess.run([sys.executable, "-m", "coordinator.cli.ctl", "audit", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def decision(revision: int, token: int, worker: str, when: datetime,
             pairs: dict[str, str]) -> Delivery:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    d = pb.Decision(city="paris", token=token, worker_id=worker, solver="greedy",
                    assignments=pairs, decided_at=stamp,
                    details=[pb.Assignment(order_id=o, courier_id=c, pickup_eta_seconds=60.0)
                             for o, c in pairs.items()])
    return Delivery(city="paris", revision=revision, token=token, decision=d)


@pytest.fixture
def filled(postgres_url: str) -> str:
    """o1 goes to c1 at revision 10, stays at 11, is reassigned to c2 by a new leader at
    20; o2 goes to c1 at 20, two hours after everything else."""
    sink = PostgresSink(postgres_url, namespace="/audit")
    sink.init_schema()
    sink.apply([
        decision(10, 5, "w1", NOW - timedelta(hours=3), {"o1": "c1"}),
        decision(11, 5, "w1", NOW - timedelta(hours=3) + timedelta(seconds=2), {"o1": "c1"}),
        decision(20, 15, "w2", NOW - timedelta(minutes=30), {"o1": "c2", "o2": "c1"}),
    ])
    sink.close()
    return postgres_url


def test_an_order_every_assignment_in_revision_order(filled: str) -> None:
    rows = json.loads(audit(filled, "--order", "o1", "--json").stdout)
    assert [(r["revision"], r["courierId"], r["change"], r["workerId"], r["token"])
            for r in rows] == [(10, "c1", "assigned", "w1", 5), (11, "c1", "same", "w1", 5),
                               (20, "c2", "reassigned", "w2", 15)]
    assert rows[-1]["previousCourierId"] == "c1" and rows[-1]["solver"] == "greedy"
    table = audit(filled, "--order", "o1").stdout.splitlines()
    assert table[0].split()[:3] == ["REVISION", "DECIDED", "AT"]
    assert "reassigned from c1" in table[3] and table[3].startswith("20 ")
    changes = json.loads(audit(filled, "--order", "o1", "--changes", "--json").stdout)
    assert [r["revision"] for r in changes] == [10, 20]


def test_a_courier_every_order(filled: str) -> None:
    rows = json.loads(audit(filled, "--courier", "c1", "--json").stdout)
    assert [(r["revision"], r["orderId"]) for r in rows] == [(10, "o1"), (11, "o1"), (20, "o2")]


def test_since_iso_and_relative(filled: str) -> None:
    recent = json.loads(audit(filled, "--order", "o1", "--since", "1h", "--json").stdout)
    assert [(r["revision"], r["change"]) for r in recent] == [(20, "reassigned")]
    since = (NOW - timedelta(hours=3, seconds=-1)).isoformat()
    rows = json.loads(audit(filled, "--order", "o1", "--since", since, "--json").stdout)
    assert [r["revision"] for r in rows] == [11, 20]
    bad = audit(filled, "--order", "o1", "--since", "yesterday")
    assert bad.returncode != 0 and "--since 'yesterday'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_nothing_found_and_bad_usage_are_one_line(filled: str) -> None:
    none = audit(filled, "--order", "nope")
    assert none.returncode == 1 and "no assignment of order nope" in none.stderr
    both = audit(filled, "--order", "o1", "--courier", "c1")
    assert both.returncode == 2 and "exactly one of" in both.stderr
    assert json.loads(audit(filled, "--order", "nope", "--json").stdout) == []


def test_unreachable_database_and_missing_tables_are_one_line(postgres_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = audit(f"postgresql://dispatch:pw@127.0.0.1:{port}/x", "--order", "o1")
    assert down.returncode == 1
    assert down.stderr.startswith("dispatchctl: error: cannot reach the audit database "
                                  f"127.0.0.1:{port}/x")
    assert len(down.stderr.strip().splitlines()) == 1 and "pw" not in down.stderr
    empty = audit(postgres_url, "--order", "o1")
    assert empty.returncode == 1 and "dispatch-relay" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1
    missing = audit(None, "--order", "o1")
    assert missing.returncode == 2 and "--sink-url" in missing.stderr


def test_parse_since() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now=now) == datetime(2026, 12, 2, 11, 50, tzinfo=UTC)
    assert parse_since("2h", now=now) == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert parse_since("2026-12-01T08:00:00Z") == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert parse_since("2026-12-01T08:00:00").tzinfo is UTC
    with pytest.raises(ConfigError, match="--since"):
        parse_since("10 minutes")


# -- where dispatchctl points at the sinks: history past compaction, status's relays ------


def test_history_past_etcd_compaction_points_at_the_audit() -> None:
    cluster = EtcdCluster(1).start()  # private: compacting the shared one cuts others
    client = EtcdClient(EtcdConfig(endpoints=(cluster.endpoints,), timeout=5))
    keys = Keys("/audit-history")
    try:
        revisions = [client.put(keys.decision("paris"), encode(decision(0, 5, "w1", NOW, {
            "o1": f"c{i}"}).decision)) for i in range(4)]
        client.compact(revisions[2])
        out = dispatchctl(cluster.endpoints, keys.namespace, "history", "paris")
        lines = out.stdout.splitlines()
        assert [line.split()[0] for line in lines[1:3]] == [
            str(r) for r in reversed(revisions[2:])]
        assert "compacted" in lines[3] and "dispatchctl audit --order" in lines[3]
        as_json = dispatchctl(cluster.endpoints, keys.namespace, "history", "paris", "--json")
        assert len(json.loads(as_json.stdout)) == 2 and "dispatchctl audit" in as_json.stderr
    finally:
        client.close()
        cluster.close()


def test_status_shows_each_sinks_relays(etcd: EtcdCluster, client: EtcdClient, keys: Keys,
                                        namespace: str) -> None:
    stamp = Timestamp()
    stamp.FromDatetime(NOW)
    for relay_id, lease in (("r1", "a1"), ("r2", "b2")):
        client.put(f"{keys.relay_election('postgres')}/{lease}", relay_id)
        client.put(keys.relay_status("postgres", relay_id), encode(pb.RelayStatus(
            sink="postgres", relay_id=relay_id, active=True, cursor=120, lag_revisions=3,
            lag_seconds=0.5, last_error="" if relay_id == "r1" else "db down",
            updated_at=stamp)))
    relays = json.loads(dispatchctl(etcd.endpoints, namespace, "status", "--json").stdout)[
        "relays"]
    assert [(r["relay_id"], r["active"], r["cursor"], r["lag_revisions"], r["last_error"])
            for r in relays] == [("r1", True, 120, 3, ""), ("r2", False, 120, 3, "db down")]
    table = dispatchctl(etcd.endpoints, namespace, "status").stdout
    assert "SINK" in table and "standby" in table and "db down" in table
