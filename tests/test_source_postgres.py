"""The postgres state source on a real server: the default schema and per-city queries,
rows checked and a bad one named, the observed time, the pool reused across ticks, and
an unreachable or slow database becoming ``StateUnavailable``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from coordinator.errors import StateError, StateUnavailable
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from coordinator.sources.contract import SourceContext
from coordinator.sources.options import SourceOptions
from coordinator.sources.postgres import SCHEMA, PostgresSource
from devtools.localpg import LocalPostgres


def execute(url: str, sql: str, *args: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, args or None)  # type: ignore[arg-type]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def source_for(url: str) -> PostgresSource:
    return PostgresSource(SourceContext(None, Keys("/t"),  # type: ignore[arg-type]
                                        SourceOptions(postgres_url=url)))


def city(name: str = "rome", **params: object) -> CityConfig:
    return CityConfig(name, "greedy", 1.0, state_source="postgres", params=params)


@pytest.fixture
def db(postgres_url: str) -> str:
    execute(postgres_url, SCHEMA)
    execute(postgres_url, """
        INSERT INTO dispatch_orders (city, id, pickup_x, pickup_y, dropoff_x, dropoff_y,
                                     ready_in_seconds, size, status)
        VALUES ('rome', 'o-1', 0, 0, 5, 5, 30, 2, 'open'),
               ('rome', 'o-2', 1, 1, 6, 6, 0, 1, 'delivered'),
               ('oslo', 'o-3', 2, 2, 7, 7, 0, 1, 'open');
        INSERT INTO dispatch_couriers (city, id, x, y, speed, capacity, vehicle, available)
        VALUES ('rome', 'c-1', 1, 0, 5, 3, 'car', true),
               ('rome', 'c-2', 9, 9, 4, 1, 'bike', false);
    """)
    return postgres_url


@pytest.fixture
def source(db: str) -> Iterator[PostgresSource]:
    s = source_for(db)
    yield s
    s.close()


def test_the_default_views_give_open_orders_and_available_couriers(source: PostgresSource,
                                                                   db: str) -> None:
    state = source.load(city(), time.time())
    assert list(state.order_ids) == ["o-1"]
    assert state.pickup.tolist() == [[0.0, 0.0]] and state.dropoff.tolist() == [[5.0, 5.0]]
    assert state.ready_in.tolist() == [30.0] and state.size.tolist() == [2]
    assert list(state.courier_ids) == ["c-1"]
    assert state.position.tolist() == [[1.0, 0.0]] and state.speed.tolist() == [5.0]
    assert state.capacity.tolist() == [3] and list(state.vehicle) == ["car"]
    execute(db, "UPDATE dispatch_couriers SET available = true WHERE id = 'c-2'")
    assert list(source.load(city(), time.time()).courier_ids) == ["c-1", "c-2"]


def test_observed_at_is_the_producer_heartbeat_or_the_newest_row(source: PostgresSource,
                                                                 db: str) -> None:
    execute(db, "UPDATE dispatch_orders SET updated_at = now() - interval '1 hour'")
    execute(db, "UPDATE dispatch_couriers SET updated_at = now() - interval '2 hours'")
    state = source.load(city(), time.time())
    assert state.taken_at == pytest.approx(time.time() - 3600, abs=5)
    execute(db, "INSERT INTO dispatch_state_observed VALUES ('rome', now() - interval '10 s')")
    assert source.load(city(), time.time()).taken_at == pytest.approx(time.time() - 10, abs=5)
    empty = source.load(city("nowhere"), time.time())  # no rows, no heartbeat: read time
    assert empty.n_orders == 0 and empty.taken_at == pytest.approx(time.time(), abs=5)


def test_a_city_may_bring_its_own_queries_with_a_city_parameter(source: PostgresSource,
                                                                db: str) -> None:
    execute(db, "CREATE TABLE jobs (town text, ref text, ax float8, ay float8, bx float8,"
                " by_ float8)")
    execute(db, "INSERT INTO jobs VALUES ('oslo', 'j-9', 1, 2, 3, 4), ('rome', 'j-1', 0,0,0,0)")
    config = city("oslo", ordersQuery="SELECT ref AS id, ax AS pickup_x, ay AS pickup_y,"
                  " bx AS dropoff_x, by_ AS dropoff_y FROM jobs WHERE town = %(city)s",
                  couriersQuery="SELECT 'c' || n AS id, n AS x, 0 AS y, 3.5 AS speed"
                  " FROM generate_series(1, 2) n WHERE %(city)s = 'oslo'",
                  observedQuery="SELECT now()")
    state = source.load(config, time.time())
    assert list(state.order_ids) == ["j-9"] and state.pickup.tolist() == [[1.0, 2.0]]
    assert list(state.courier_ids) == ["c1", "c2"] and state.capacity.tolist() == [1, 1]
    # The city is a parameter, never pasted into the text: a quote in it is harmless.
    assert source.load(city("o'slo", **dict(config.params)), time.time()).n_orders == 0


@pytest.mark.parametrize(("sql", "expected"), [
    ("UPDATE dispatch_orders SET pickup_x = 'NaN' WHERE id = 'o-1'",
     "order 'o-1': pickup_x is nan, not a number"),
    ("UPDATE dispatch_couriers SET speed = 0 WHERE id = 'c-1'",
     "courier c-1 speed 0.0 must be positive"),
    ("UPDATE dispatch_orders SET size = -1 WHERE id = 'o-1'",
     "order 'o-1': size is -1, not a whole number"),
    ("INSERT INTO dispatch_orders (city, id, pickup_x, pickup_y, dropoff_x, dropoff_y) "
     "VALUES ('rome', '', 0, 0, 0, 0)", "order in row 1 of ordersQuery: id is ''"),
])
def test_a_bad_row_is_named_by_its_id_and_column(source: PostgresSource, db: str, sql: str,
                                                 expected: str) -> None:
    execute(db, sql)
    with pytest.raises(StateError) as info:
        source.load(city(), time.time())
    assert expected in str(info.value)


@pytest.mark.parametrize(("params", "expected"), [
    ({"ordersQuery": "SELECT id, NULL::float8 AS pickup_x, 0 AS pickup_y, 0 AS dropoff_x,"
      " 0 AS dropoff_y FROM dispatch_orders WHERE city = %(city)s"},
     "order 'o-1': pickup_x is NULL"),
    ({"ordersQuery": "SELECT id, pickup_x, pickup_y, dropoff_x, dropoff_y, 1 AS colour"
      " FROM dispatch_orders WHERE city = %(city)s"},
     "ordersQuery returns unknown column 'colour'"),
    ({"couriersQuery": "SELECT id, x, y FROM dispatch_couriers WHERE city = %(city)s"},
     "couriersQuery returns no column 'speed'"),
    ({"couriersQuery": "SELECT id, x, y, speed, colour FROM dispatch_couriers"
      " WHERE city = %(city)s"}, 'could not run its couriersQuery: column "colour" does'),
    ({"ordersQuery": "SELECT * FROM missing_table"},
     'relation "missing_table" does not exist; create the default tables'),
    ({"couriersQuery": "SELECT id, x::text AS x, y, speed FROM dispatch_couriers"
      " WHERE city = %(city)s"}, "courier 'c-1': x is '1', not a number"),
    ({"observedQuery": "SELECT now()::timestamp"},
     "observedQuery returned datetime.datetime("),
])
def test_a_bad_query_or_column_is_named(source: PostgresSource, params: dict[str, object],
                                        expected: str) -> None:
    with pytest.raises(StateError) as info:
        source.load(city(**params), time.time())
    assert expected in str(info.value)
    assert not isinstance(info.value, StateUnavailable)


def test_a_city_query_cannot_write(source: PostgresSource, db: str) -> None:
    # City settings live in etcd: whoever may write them must not be able to change the
    # dispatch team's tables through a query.
    deleting = city(ordersQuery="DELETE FROM dispatch_orders RETURNING id, pickup_x,"
                    " pickup_y, dropoff_x, dropoff_y")
    with pytest.raises(StateError, match="cannot execute DELETE in a read-only transaction"):
        source.load(deleting, time.time())
    assert source.load(city(), time.time()).n_orders == 1


def test_connections_are_pooled_across_ticks_and_cities(source: PostgresSource) -> None:
    for _ in range(5):
        source.load(city("rome"), time.time())
        source.load(city("oslo"), time.time())
    assert source.opened == 1


def test_a_query_slower_than_the_tick_budget_is_cancelled(source: PostgresSource) -> None:
    slow = city(ordersQuery="SELECT id, pickup_x, pickup_y, dropoff_x, dropoff_y FROM"
                " dispatch_orders, pg_sleep(5) WHERE city = %(city)s", timeoutSeconds=0.3)
    started = time.monotonic()
    with pytest.raises(StateUnavailable, match=r"within the tick's 0\.30s time budget"):
        source.load(slow, time.time())
    assert time.monotonic() - started < 2
    assert source.load(city(), time.time()).n_orders == 1  # and the pool still works


def test_a_paused_database_is_cut_at_the_tick_budget_and_the_pool_recovers(
        postgres_server: LocalPostgres, db: str) -> None:
    # db is on the session's server; pause the postmaster and every backend (SIGSTOP;
    # backends run in sessions of their own): nothing answers, no server timeout fires.
    source = source_for(db)
    config = city(timeoutSeconds=0.4)
    assert source.load(config, time.time()).n_orders == 1  # a pooled connection
    server = postgres_server.process.pid
    pids = [server, *children(server)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match=r"no answer within the tick's 0\.40s time "
                                                   r"budget \(could not .*\); connection cut"):
            source.load(config, time.time())
        assert time.monotonic() - started < 1.5  # cut at 1.25 × 0.4 + 0.1 s
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert source.load(config, time.time()).n_orders == 1
    source.close()


def test_no_url_and_an_unreachable_database_are_said_so() -> None:
    with pytest.raises(StateError, match="needs the worker's --state-postgres-url"):
        source_for("").load(city(), time.time())
    down = source_for("postgresql://nobody@127.0.0.1:9/none")
    with pytest.raises(StateUnavailable, match=r"postgres state at 127.0.0.1:9/none is "
                                               r"unavailable \(could not connect\)"):
        down.load(city(), time.time())


def test_the_schema_is_printed_for_psql() -> None:
    out = subprocess.run([sys.executable, "-m", "coordinator.sources.postgres"],
                         capture_output=True, text=True, check=True).stdout
    assert out == SCHEMA
