"""The sink conformance kit on a real PostgreSQL: the postgres sink passes every check,
and a sink without the fence (last write wins) is caught by the checks it breaks."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from dispatch_testsolvers.sinks import UnconditionalSink

from coordinator.codec import assigned
from coordinator.sinks.conformance import (
    SinkCheck,
    SinkTarget,
    assert_check_passes,
    delivery,
    run_sink_conformance,
    sink_checks,
)
from coordinator.sinks.postgres import PostgresSink
from devtools.localpg import LocalPostgres


def held(url: str, city: str) -> int | None:
    """What the database holds for ``city``, read with psycopg, not through the sink."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT revision FROM dispatch_decisions WHERE city = %s",
                           (city,)).fetchone()
    return None if row is None else int(row[0])


def target(server: LocalPostgres, sink_class: type[PostgresSink]) -> SinkTarget:
    def new_store() -> str:
        return server.create_database(f"kit_{uuid.uuid4().hex[:12]}")

    return SinkTarget(sink_class, new_store, held, bad_url="http://not-a-libpq-url")


@pytest.mark.parametrize("check", sink_checks(), ids=str)
def test_postgres_sink_passes(postgres_server: LocalPostgres, check: SinkCheck) -> None:
    assert_check_passes(target(postgres_server, PostgresSink), check)


def test_the_kit_catches_a_sink_without_the_fence(postgres_server: LocalPostgres) -> None:
    report = run_sink_conformance(target(postgres_server, UnconditionalSink))
    assert not report.ok
    broken = {"stale-refused", "duplicate-refused", "reordered-in-batch",
              "reordered-across-batches", "cursor-survives-crash", "cursor-is-max",
              "overlapping-relays", "cities-independent",  # (its cursor goes back)
              "one-revision-many-cities"}
    assert {p.split(":")[0] for p in report.problems} == broken, report.format()
    # what still holds for it: newer decisions in order, no-op batches, the URL
    assert set(report.passed) == {"newer-applied", "empty-batch", "bad-url"}
    stale = next(p for p in report.problems if p.startswith("stale-refused"))
    assert "applied/refused/cursor 1/0/35, expected 0/1/40" in stale


def test_kit_decisions_are_real_solutions() -> None:
    d = delivery("kit-city", 42, 7)
    assert d.decision.city == "kit-city" and d.decision.token == 7
    assert d.decision.details and not d.decision.assignments  # each pair once, as workers
    assert set(assigned(d.decision)).isdisjoint(d.decision.unassigned)
    assert delivery("kit-city", 42, 7) == d  # the same input, the same decision
