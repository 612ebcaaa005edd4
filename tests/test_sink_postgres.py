"""The postgres sink on a real server: the audit written once per applied decision and in
the same transaction, the schema, and the server going away (stopped, restarted,
killed) becoming ``SinkUnavailable`` and then recovery, with nothing lost or doubled."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from coordinator.codec import assigned, encode
from coordinator.errors import ConfigError, SinkError, SinkUnavailable
from coordinator.sinks.conformance import delivery
from coordinator.sinks.contract import Applied, Delivery
from coordinator.sinks.postgres import PostgresSink
from devtools.localpg import LocalPostgres
from protos import dispatch_pb2 as pb

NS = "/test-ns"


def rows(url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchall()


def audit_counts(url: str) -> dict[int, int]:
    return {int(str(r)): int(str(n)) for r, n in rows(
        url, "SELECT revision, count(*) FROM dispatch_assignments GROUP BY revision")}


@pytest.fixture
def sink(postgres_url: str) -> Iterator[PostgresSink]:
    s = PostgresSink(postgres_url, namespace=NS)
    s.init_schema()
    yield s
    s.close()


@pytest.fixture(scope="module")
def own_server() -> Iterator[LocalPostgres]:
    """A server of this module's own, for tests that stop, restart or kill it."""
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def own_url(own_server: LocalPostgres) -> Iterator[str]:
    if not own_server.running():
        own_server.restart()
    yield own_server.create_database(f"own_{uuid.uuid4().hex[:12]}")
    if not own_server.running():  # leave it running for the next test
        own_server.restart()


def test_audit_rows_once_per_applied_decision(sink: PostgresSink, postgres_url: str) -> None:
    a10, b11, a12 = delivery("a", 10, 5), delivery("b", 11, 5), delivery("a", 12, 9)
    assert sink.apply([a10, a10, b11]) == Applied(applied=2, refused=1, cursor=11)
    assert sink.apply([b11, a10]) == Applied(applied=0, refused=2, cursor=11)
    assert sink.apply([a12]) == Applied(applied=1, refused=0, cursor=12)

    assert audit_counts(postgres_url) == {d.revision: len(d.decision.details)
                                          for d in (a10, b11, a12)}
    audit = rows(postgres_url, "SELECT order_id, courier_id, pickup_eta_seconds, city, token,"
                 " worker_id, solver, decided_at FROM dispatch_assignments WHERE revision = 12"
                 " ORDER BY order_id")
    want = sorted((x.order_id, x.courier_id, x.pickup_eta_seconds) for x in a12.decision.details)
    assert [r[:3] for r in audit] == want
    at = a12.decision.decided_at.ToDatetime().replace(tzinfo=None)
    assert {r[3:7] for r in audit} == {("a", 9, "w-9", "greedy")}
    assert {r[7].replace(tzinfo=None) for r in audit} == {at}  # type: ignore[attr-defined]

    (city, token, revision, worker, solver, decided_at, decision), = rows(
        postgres_url, "SELECT * FROM dispatch_decisions WHERE city = 'a'")
    assert (city, token, revision, worker, solver) == ("a", 9, 12, "w-9", "greedy")
    assert decided_at.replace(tzinfo=None) == at  # type: ignore[attr-defined]
    assert decision == json.loads(encode(a12.decision))  # the canonical JSON, as jsonb
    assert sink.cursor() == 12


def test_decision_without_details_is_audited_from_its_assignments(
        sink: PostgresSink, postgres_url: str) -> None:
    d = delivery("a", 10, 5)  # as decisions were written before details alone held them
    d.decision.assignments.update(assigned(d.decision))
    del d.decision.details[:]
    sink.apply([d])
    audit = rows(postgres_url, "SELECT order_id, courier_id, pickup_eta_seconds"
                 " FROM dispatch_assignments ORDER BY order_id")
    assert audit == sorted((o, c, None) for o, c in d.decision.assignments.items())


def test_audit_rows_keep_every_value_exactly(sink: PostgresSink, postgres_url: str) -> None:
    """The audit rows travel as JSON: floats come back bit for bit, a non-finite ETA as
    itself, odd ids as given, and the decision time to the microsecond (as
    ``Timestamp.ToDatetime`` truncates it)."""
    d = delivery("a", 10, 5)
    d.decision.decided_at.FromNanoseconds(1_800_000_000_123_456_789)
    etas = [math.inf, -math.inf, 1 / 3, 5e-324, 1.7976931348623157e308]
    for a, eta in zip(d.decision.details, etas, strict=False):
        a.pickup_eta_seconds = eta
    d.decision.details[0].order_id = 'o "quoted" \\ back\tslash, ünï'
    sink.apply([d])
    got = rows(postgres_url, "SELECT order_id, courier_id, pickup_eta_seconds, decided_at"
               " FROM dispatch_assignments")
    want = {(a.order_id, a.courier_id, a.pickup_eta_seconds) for a in d.decision.details}
    assert {r[:3] for r in got} == want
    at = d.decision.decided_at.ToDatetime().replace(tzinfo=None)
    assert at.microsecond == 123456
    assert {r[3].replace(tzinfo=None) for r in got} == {at}  # type: ignore[attr-defined]


def test_prepared_and_unprepared_deliveries_write_the_same_rows(
        postgres_server: LocalPostgres) -> None:
    """The relay hands over deliveries the sink prepared on the follower's thread; any
    other caller may not: the tables come out the same."""
    batch = [delivery("a", 10, 5), delivery("b", 11, 5), delivery("a", 12, 9)]
    held = []
    for name, prepare in (("unprepared", False), ("prepared", True)):
        url = postgres_server.create_database(f"prep_{name}_{uuid.uuid4().hex[:8]}")
        sink = PostgresSink(url, namespace="/ns")
        sink.init_schema()
        sink.apply([sink.prepare(d) for d in batch] if prepare else batch)
        sink.close()
        held.append((rows(url, "SELECT * FROM dispatch_assignments ORDER BY 1, 2, 4"),
                     rows(url, "SELECT * FROM dispatch_decisions ORDER BY 1")))
    assert held[0] == held[1] and len(held[0][0]) > 0


def test_a_batch_is_one_transaction(sink: PostgresSink, postgres_url: str) -> None:
    """An audit row the database rejects (one order twice in a decision) fails the whole
    batch: the decisions before it in the batch and the cursor are not written either."""
    sink.apply([delivery("a", 10, 5)])
    bad = delivery("b", 12, 5)
    bad.decision.details.append(pb.Assignment(order_id=bad.decision.details[0].order_id,
                                              courier_id="someone-else"))
    with pytest.raises(SinkError, match="duplicate key") as caught:
        sink.apply([delivery("a", 11, 5), bad, delivery("c", 13, 5)])
    assert not isinstance(caught.value, SinkUnavailable)
    assert isinstance(caught.value.__cause__, psycopg.Error)
    assert rows(postgres_url, "SELECT city, revision FROM dispatch_decisions") == [("a", 10)]
    assert sink.cursor() == 10 and set(audit_counts(postgres_url)) == {10}
    # the connection is still good: the next batch goes through
    assert sink.apply([delivery("a", 11, 5)]) == Applied(1, 0, 11)


def test_init_is_idempotent(postgres_url: str) -> None:
    first = PostgresSink(postgres_url, namespace=NS)
    first.init_schema()
    first.apply([delivery("a", 10, 5)])
    again = PostgresSink(postgres_url, namespace=NS)
    again.init_schema()
    again.init_schema()
    assert again.cursor() == 10 and again.apply([delivery("a", 10, 5)]).refused == 1
    first.close()
    again.close()


def test_missing_tables_say_how_to_create_them(postgres_url: str) -> None:
    sink = PostgresSink(postgres_url, namespace=NS)
    for call in (sink.cursor, lambda: sink.apply([delivery("a", 10, 5)])):
        with pytest.raises(SinkError, match=r"does not exist.*dispatch-relay --init") as caught:
            call()
        assert not isinstance(caught.value, SinkUnavailable)
    sink.init_schema()
    assert sink.cursor() == 0  # the same sink, once the tables exist
    sink.close()


def test_tables_in_a_schema_given_by_the_url(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA dispatch")
    sink = PostgresSink(f"{postgres_url}?options=-csearch_path%3Ddispatch", namespace=NS)
    sink.init_schema()
    sink.apply([delivery("a", 10, 5)])
    sink.close()
    assert rows(postgres_url, "SELECT revision FROM dispatch.dispatch_decisions") == [(10,)]
    assert rows(postgres_url, "SELECT to_regclass('public.dispatch_decisions')") == [(None,)]


@pytest.mark.parametrize("url, reason", [
    ("", "empty"),
    ("http://example.com/hook", "bad --sink-url"),
    ("postgresql://u@h:notaport/db", "port 'notaport' is not a number"),
    ("postgresql://u@h/db?bogus=1", "bogus"),
])
def test_bad_url_is_a_config_error(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        PostgresSink(url, namespace=NS)


def test_unknown_database_is_a_sink_error(postgres_server: LocalPostgres) -> None:
    sink = PostgresSink(postgres_server.url("no_such_db"), namespace=NS)
    with pytest.raises(SinkError, match="no_such_db") as caught:
        sink.cursor()
    assert not isinstance(caught.value, SinkUnavailable)


def test_stopped_server_is_unavailable(own_server: LocalPostgres, own_url: str) -> None:
    sink = PostgresSink(own_url, namespace=NS)
    sink.init_schema()
    sink.apply([delivery("a", 10, 5)])
    own_server.stop()
    where = f"127.0.0.1:{own_server.port}/"
    for call in (sink.cursor, lambda: sink.apply([delivery("a", 11, 5)])):
        with pytest.raises(SinkUnavailable, match=f"postgres at {where}.* is unavailable"
                           ) as caught:
            call()
        assert isinstance(caught.value.__cause__, psycopg.Error)
        assert "\n" not in str(caught.value)
    fresh = PostgresSink(own_url, namespace=NS)  # never connected: connection refused
    with pytest.raises(SinkUnavailable, match="unavailable"):
        fresh.cursor()
    own_server.restart()
    assert sink.cursor() == 10 and fresh.cursor() == 10
    sink.close()
    fresh.close()


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_server_gone_between_batches_then_recovery(own_server: LocalPostgres, own_url: str,
                                                   how: str) -> None:
    sink = PostgresSink(own_url, namespace=NS)
    sink.init_schema()
    first = [delivery("a", 10, 5), delivery("b", 11, 5)]
    assert sink.apply(first).applied == 2
    if how == "kill":
        own_server.kill()
    own_server.restart()
    second = [delivery("b", 11, 5), delivery("a", 12, 5), delivery("c", 13, 5)]
    with pytest.raises(SinkUnavailable):  # its connection died with the server
        sink.apply(second)
    assert sink.cursor() == 11  # reconnected; the committed batch survived
    assert sink.apply(second) == Applied(applied=2, refused=1, cursor=13)
    assert sink.apply(second) == Applied(applied=0, refused=3, cursor=13)
    counts = audit_counts(own_url)
    assert set(counts) == {10, 11, 12, 13}
    assert counts[12] == len(second[1].decision.details)
    sink.close()


def test_the_server_reads_a_stored_decision_as_the_message_says(
        postgres_server: LocalPostgres) -> None:
    """The audit rows and the decision's columns come from its JSON, expanded by the
    server: a delivery of the stored value as it is (what the relay hands over) writes
    the same rows as one of the decoded message, details or bare assignments alike."""
    detailed = delivery("a", 10, 5)
    detailed.decision.decided_at.FromNanoseconds(1_800_000_000_123_456_789)
    detailed.decision.details[1].pickup_eta_seconds = 0.0  # left out of the JSON
    bare = pb.Decision(city="b", token=5, worker_id="w2", assignments={"o1": "c1", "o2": "c2"})
    made = [(detailed.city, detailed.decision), ("b", bare)]
    held = []
    for name, stored in (("message", False), ("stored", True)):
        database = f"stored_{name}_{uuid.uuid4().hex[:8]}"
        url = postgres_server.create_database(database)
        with psycopg.connect(url, autocommit=True) as conn:  # a server not on UTC
            conn.execute(f"ALTER DATABASE {database} SET timezone TO 'America/New_York'")
        sink = PostgresSink(url, namespace="/ns")
        sink.init_schema()
        sink.apply([Delivery.of_stored(c, 10 + i, 5, encode(d)) if stored
                    else Delivery(c, 10 + i, 5, d) for i, (c, d) in enumerate(made)])
        sink.close()
        held.append((rows(url, "SELECT * FROM dispatch_assignments ORDER BY 1, 2, 4"),
                     rows(url, "SELECT * FROM dispatch_decisions ORDER BY 1")))
    assert held[0] == held[1]
    audit, decisions = held[0]
    assert [(r[1], r[3], r[4], r[5]) for r in audit if r[1] == "b"] == [
        ("b", "o1", "c1", None), ("b", "o2", "c2", None)]
    assert {(r[3], r[5]) for r in audit if r[1] == "a"} == {
        (a.order_id, a.pickup_eta_seconds) for a in detailed.decision.details}
    assert [(r[0], r[3], r[4]) for r in decisions] == [("a", "w-5", "greedy"),
                                                       ("b", "w2", "")]
    at = detailed.decision.decided_at.ToDatetime(tzinfo=UTC)  # to the microsecond
    assert [r[5] for r in decisions] == [at, datetime.fromtimestamp(0, UTC)]
    assert {r[6] for r in audit if r[1] == "a"} == {at}
