"""A worker deciding a city from PostgreSQL tables that a producer updates: decisions
follow the tables; a stopped producer makes the city refuse its stale state (named on
its status) while another city keeps deciding; a database that goes down is named and
the city recovers when it returns. Plus the ``max_state_age`` setting itself."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from coordinator.codec import assigned
from coordinator.errors import CitySettingsError, StaleState
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig, parse_settings
from coordinator.sources.freshness import check_fresh
from coordinator.sources.postgres import SCHEMA
from devtools.localpg import LocalPostgres
from solvers.generate import simulated_state
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import decision, dispatchctl, running_worker, status


def execute(url: str, sql: str, *args: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, args or None)  # type: ignore[arg-type]


class Producer:
    """The system of record's sync job: stamps the city's heartbeat until stopped."""

    def __init__(self, url: str, city: str) -> None:
        self.url, self.city = url, city
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            with contextlib.suppress(psycopg.OperationalError):  # down: no sync either
                execute(self.url, "INSERT INTO dispatch_state_observed VALUES (%s, now()) "
                        "ON CONFLICT (city) DO UPDATE SET observed_at = now()", self.city)

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def own_server() -> Iterator[LocalPostgres]:
    """A server of this module's own, which the test stops and restarts."""
    with LocalPostgres() as server:
        yield server


def assignments(client: EtcdClient, keys: Keys, city: str) -> dict[str, str]:
    d = decision(client, keys, city)
    return {} if d is None else assigned(d)


def ticks(client: EtcdClient, keys: Keys, city: str) -> int:
    d = decision(client, keys, city)
    return 0 if d is None else d.tick


def test_a_city_follows_its_tables_and_refuses_state_its_producer_stopped_updating(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str,
        own_server: LocalPostgres) -> None:
    url = own_server.create_database(f"state_{uuid.uuid4().hex[:12]}")
    execute(url, SCHEMA)
    execute(url, """
        INSERT INTO dispatch_orders (city, id, pickup_x, pickup_y, dropoff_x, dropoff_y)
        VALUES ('pg', 'o-1', 0, 0, 100, 100);
        INSERT INTO dispatch_couriers (city, id, x, y, speed) VALUES ('pg', 'c-a', 10, 0, 5);
    """)
    producer = Producer(url, "pg")
    client.put(keys.city("pg"), CityConfig("pg", "greedy", 0.2, state_source="postgres",
                                           max_state_age=1.0).encode())
    client.put(keys.city("sim"), CityConfig("sim", "greedy", 0.2).encode())
    with running_worker(etcd.endpoints, namespace, state_postgres_url=url, max_backoff=0.5):
        wait_until(lambda: assignments(client, keys, "pg") == {"o-1": "c-a"}, 20,
                   message="a decision from the tables")
        # The dispatch team's system changes its tables; the next ticks follow.
        execute(url, """
            UPDATE dispatch_couriers SET available = false, updated_at = now() WHERE id = 'c-a';
            INSERT INTO dispatch_couriers (city, id, x, y, speed) VALUES ('pg', 'c-b', 0, 5, 5);
            INSERT INTO dispatch_orders (city, id, pickup_x, pickup_y, dropoff_x, dropoff_y)
            VALUES ('pg', 'o-2', 50, 50, 0, 0);
            UPDATE dispatch_orders SET status = 'delivered' WHERE id = 'o-1';
        """)
        wait_until(lambda: assignments(client, keys, "pg") == {"o-2": "c-b"}, 10,
                   message="the decision following the tables")

        # The producer stops: once the state is older than a second it is refused.
        producer.halt()
        stale = wait_until(lambda: (s := status(client, keys, "pg")) is not None
                           and s.state == "failing" and s.last_error, 10,
                           message="the city failing")
        assert "state of pg is stale: observed" in str(stale)
        assert "more than its max state age of 1s" in str(stale)
        held, sim = ticks(client, keys, "pg"), ticks(client, keys, "sim")
        wait_until(lambda: ticks(client, keys, "sim") >= sim + 3, 10,
                   message="the other city deciding meanwhile")
        assert ticks(client, keys, "pg") == held  # nothing decided on the stale state

        # The producer resumes; then the database goes down and comes back.
        producer = Producer(url, "pg")
        wait_until(lambda: ticks(client, keys, "pg") > held, 10, message="recovery")
        own_server.stop()
        down = wait_until(lambda: (s := status(client, keys, "pg")) is not None
                          and s.state == "failing" and s.last_error, 10,
                          message="the city failing with the database down")
        assert "is unavailable" in str(down) and "postgres state at 127.0.0.1:" in str(down)
        sim = ticks(client, keys, "sim")
        wait_until(lambda: ticks(client, keys, "sim") >= sim + 3, 10,
                   message="the other city deciding while the database is down")
        own_server.restart()
        held = ticks(client, keys, "pg")
        wait_until(lambda: ticks(client, keys, "pg") > held, 20,
                   message="decisions again once the database is back")
        assert status(client, keys, "pg").state == "ok"  # type: ignore[union-attr]
    producer.halt()


def test_max_state_age_is_a_checked_setting_and_dispatchctl_sets_it(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str) -> None:
    assert parse_settings("x", b'{"solver": "greedy"}').max_state_age == 0.0
    assert parse_settings("x", b'{"solver": "greedy", "maxStateAgeSeconds": 2.5}') \
        .max_state_age == 2.5
    with pytest.raises(CitySettingsError, match=r"maxStateAgeSeconds -1\.0 must be"):
        parse_settings("x", b'{"solver": "greedy", "maxStateAgeSeconds": -1}')
    dispatchctl(etcd.endpoints, namespace, "city", "add", "lima", "--solver", "greedy",
                "--max-state-age", "30")
    assert parse_settings("lima", client.get(keys.city("lima")).value  # type: ignore[union-attr]
                          ).max_state_age == 30.0
    listed = dispatchctl(etcd.endpoints, namespace, "city", "list").stdout
    assert "simulated (max age 30s)" in listed
    dispatchctl(etcd.endpoints, namespace, "city", "set", "lima", "--max-state-age", "0")
    raw = client.get(keys.city("lima")).value  # type: ignore[union-attr]
    assert parse_settings("lima", raw).max_state_age == 0.0 and b"maxStateAge" not in raw
    bad = dispatchctl(etcd.endpoints, namespace, "city", "set", "lima", "--max-state-age",
                      "-3", check=False)
    assert bad.returncode != 0 and "--max-state-age -3.0: must be" in bad.stderr


def test_check_fresh_refuses_only_past_the_limit() -> None:
    state = simulated_state("x", 0, n_orders=1, n_couriers=1, seed=0, taken_at=100.0)
    check_fresh(CityConfig("x", "greedy"), state, 10_000.0)  # no limit
    check_fresh(CityConfig("x", "greedy", max_state_age=5.0), state, 105.0)
    with pytest.raises(StaleState, match=r"observed 5.5s ago, more than its max state age"):
        check_fresh(CityConfig("x", "greedy", max_state_age=5.0), state, 105.5)
    assert np.isfinite(state.taken_at)
