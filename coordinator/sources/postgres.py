"""``postgres``: a city's open orders and available couriers, read from PostgreSQL.

Each tick runs the city's queries in one read-only REPEATABLE READ transaction (so the
orders and couriers are of the same moment), over a connection pool shared by the
worker's cities, each query bounded by the tick's time budget (``statement_timeout``)
and the whole read cut by a watchdog soon after it (a paused server answers nothing).

The database is the worker's ``--state-postgres-url`` (``DISPATCH_STATE_POSTGRES_URL``);
the default schema is :data:`SCHEMA` (``python -m coordinator.sources.postgres`` prints
it). A city may replace the queries with its own (parameters ``ordersQuery``,
``couriersQuery``, ``observedQuery``), each taking the city as ``%(city)s`` and returning
the columns of :data:`ORDER_COLUMNS` / :data:`COURIER_COLUMNS`.

When the state was observed: the newest of the ``observedQuery`` time (the producer's
heartbeat, written even when nothing changed) and the rows' ``updated_at``; when the
database holds neither, the time of the read.

psycopg's errors stop here: unreachable or too slow becomes ``StateUnavailable``, any
other ``StateError`` naming the query; a bad row is named by its id and column.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict

from coordinator.errors import StateError, StateUnavailable
from coordinator.pgtext import describe, first_line, refused
from coordinator.settings import CityConfig
from coordinator.sources.contract import SourceContext, StateSource
from coordinator.sources.pool import Pool
from coordinator.sources.snapshot import state_from_snapshot
from coordinator.sources.watchdog import Watchdog, cut_after, shutdown_socket
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["COURIER_COLUMNS", "DEFAULT_QUERIES", "ORDER_COLUMNS", "SCHEMA", "PostgresSource"]

SCHEMA = """\
CREATE TABLE IF NOT EXISTS dispatch_orders (
  city text NOT NULL, id text NOT NULL,
  pickup_x double precision NOT NULL, pickup_y double precision NOT NULL,
  dropoff_x double precision NOT NULL, dropoff_y double precision NOT NULL,
  ready_in_seconds double precision NOT NULL DEFAULT 0,
  size integer NOT NULL DEFAULT 1,
  status text NOT NULL DEFAULT 'open',           -- only 'open' orders are dispatched
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (city, id));
CREATE TABLE IF NOT EXISTS dispatch_couriers (
  city text NOT NULL, id text NOT NULL,
  x double precision NOT NULL, y double precision NOT NULL,
  speed double precision NOT NULL,               -- metres per second, > 0
  capacity integer NOT NULL DEFAULT 1,           -- free capacity units
  vehicle text NOT NULL DEFAULT 'bike',
  available boolean NOT NULL DEFAULT true,       -- only available couriers are dispatched
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (city, id));
-- The producer's heartbeat: observed_at = now() each time it has synced the city, even
-- when nothing changed. A city with --max-state-age refuses a state older than that.
CREATE TABLE IF NOT EXISTS dispatch_state_observed (
  city text PRIMARY KEY, observed_at timestamptz NOT NULL);
CREATE OR REPLACE VIEW dispatch_open_orders AS
  SELECT city, id, pickup_x, pickup_y, dropoff_x, dropoff_y, ready_in_seconds, size,
         updated_at
  FROM dispatch_orders WHERE status = 'open';
CREATE OR REPLACE VIEW dispatch_available_couriers AS
  SELECT city, id, x, y, speed, capacity, vehicle, updated_at
  FROM dispatch_couriers WHERE available;
"""

DEFAULT_QUERIES = {
    "ordersQuery": "SELECT id, pickup_x, pickup_y, dropoff_x, dropoff_y, ready_in_seconds,"
                   " size, updated_at FROM dispatch_open_orders WHERE city = %(city)s"
                   " ORDER BY id",
    "couriersQuery": "SELECT id, x, y, speed, capacity, vehicle, updated_at"
                     " FROM dispatch_available_couriers WHERE city = %(city)s ORDER BY id",
    "observedQuery": "SELECT observed_at FROM dispatch_state_observed"
                     " WHERE city = %(city)s",
}

_NUMBER, _COUNT, _TEXT, _TIME = "number", "whole number", "text", "timestamp with time zone"

#: column -> (kind, required); ``city`` may be returned and is ignored
ORDER_COLUMNS: Mapping[str, tuple[str, bool]] = {
    "id": (_TEXT, True), "pickup_x": (_NUMBER, True), "pickup_y": (_NUMBER, True),
    "dropoff_x": (_NUMBER, True), "dropoff_y": (_NUMBER, True),
    "ready_in_seconds": (_NUMBER, False), "size": (_COUNT, False),
    "updated_at": (_TIME, False), "city": (_TEXT, False),
}
COURIER_COLUMNS: Mapping[str, tuple[str, bool]] = {
    "id": (_TEXT, True), "x": (_NUMBER, True), "y": (_NUMBER, True),
    "speed": (_NUMBER, True), "capacity": (_COUNT, False), "vehicle": (_TEXT, False),
    "updated_at": (_TIME, False), "city": (_TEXT, False),
}

Rows = tuple[list[str], list[tuple[Any, ...]]]


class PostgresSource(StateSource):
    description = "open orders and available couriers from PostgreSQL tables or queries"

    def __init__(self, context: SourceContext) -> None:
        super().__init__(context)
        self._url = context.options.postgres_url
        self._where = "?"
        self._pool: Pool[psycopg.Connection[Any]] | None = None
        self._watchdog = Watchdog()
        if self._url:
            try:
                self._where = describe(conninfo_to_dict(self._url))
            except psycopg.ProgrammingError as exc:
                raise StateError(f"bad --state-postgres-url: {first_line(exc)}") from exc
            self._pool = Pool(self._connect, lambda c: c.close(),
                              usable=lambda c: not (c.closed or c.broken))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()

    @property
    def opened(self) -> int:
        """Connections opened so far (the pool reuses them across ticks and cities)."""
        return 0 if self._pool is None else self._pool.opened

    def load(self, config: CityConfig, now: float) -> CityState:
        if self._pool is None:
            raise StateError("the postgres state source needs the worker's "
                             "--state-postgres-url (DISPATCH_STATE_POSTGRES_URL)")
        queries = {name: _query(config.params, name) for name in DEFAULT_QUERIES}
        budget = self.context.options.time_budget(config)
        orders, couriers, observed = self._read(config.city, queries, budget)
        snapshot = pb.StateSnapshot(
            orders=[_order(r) for r in _records("ordersQuery", "order", orders, ORDER_COLUMNS)],
            couriers=[_courier(r) for r in
                      _records("couriersQuery", "courier", couriers, COURIER_COLUMNS)],
        )
        times = [t for t in (*observed, *_column(orders, "updated_at"),
                             *_column(couriers, "updated_at")) if t is not None]
        taken_at = max(times).timestamp() if times else time.time()
        return state_from_snapshot(config.city, snapshot, taken_at).freeze()

    # -- the boundary -------------------------------------------------------------------

    def _read(self, city: str, queries: Mapping[str, str],
              budget: float) -> tuple[Rows, Rows, list[datetime | None]]:
        """The three queries' rows, in one transaction; a connection found dead after
        idling in the pool (the database restarted) is retried once on a fresh one."""
        assert self._pool is not None
        for attempt in (1, 2):
            doing, reused, alarm = "connect", False, None
            try:
                with self._pool.connection() as (conn, reused), \
                        self._watchdog.guard(cut_after(budget), lambda: _cut(conn)) as alarm, \
                        conn.transaction():
                    doing = "start its transaction"
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    conn.execute("SELECT set_config('statement_timeout', %s, true)",
                                 (str(max(1, int(budget * 1000))),))
                    args = {"city": city}
                    doing = "run its ordersQuery"
                    orders = _fetch(conn, queries["ordersQuery"], args)
                    doing = "run its couriersQuery"
                    couriers = _fetch(conn, queries["couriersQuery"], args)
                    doing = "run its observedQuery"
                    observed = _observed(conn, queries["observedQuery"], args)
                return orders, couriers, observed
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if alarm is not None and alarm.fired:
                    raise StateUnavailable(
                        f"postgres state at {self._where}: no answer within the tick's "
                        f"{budget:.2f}s time budget (could not {doing}); connection cut"
                    ) from exc
                if attempt == 1 and reused and not isinstance(exc, psycopg.errors.QueryCanceled):
                    continue
                raise self._translate(exc, doing, budget) from exc
            except psycopg.Error as exc:
                raise self._translate(exc, doing, budget) from exc
        raise AssertionError("unreachable")

    def _translate(self, exc: psycopg.Error, doing: str, budget: float) -> StateError:
        where = f"postgres state at {self._where}"
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return StateUnavailable(f"{where}: could not {doing} within the tick's "
                                    f"{budget:.2f}s time budget ({first_line(exc)})")
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return StateError(f"{where}: could not {doing}: {first_line(exc)}; create the "
                              "default tables (`python -m coordinator.sources.postgres | "
                              "psql URL`) or give the city its own queries")
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) \
                and not refused(exc):
            return StateUnavailable(f"{where} is unavailable (could not {doing}): "
                                    f"{first_line(exc)}")
        return StateError(f"{where}: could not {doing}: {first_line(exc)}")

    def _connect(self) -> psycopg.Connection[Any]:
        params = conninfo_to_dict(self._url)
        extra: dict[str, Any] = {"connect_timeout": 2, "application_name": "dispatch-worker"}
        for given in params.keys() & extra.keys():  # the URL's own win
            del extra[given]
        return psycopg.connect(self._url, autocommit=True, **extra)


def _cut(conn: psycopg.Connection[Any]) -> None:
    with suppress(psycopg.Error):  # closed already: nothing to cut
        shutdown_socket(conn.pgconn.socket)


def _query(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name, DEFAULT_QUERIES[name])
    if not isinstance(value, str) or not value.strip():
        raise StateError(f"parameter {name} must be an SQL query taking %(city)s")
    return value


def _fetch(conn: psycopg.Connection[Any], query: str, args: Mapping[str, str]) -> Rows:
    cursor = conn.execute(query, args)
    names = [d.name for d in cursor.description or ()]
    return names, list(cursor.fetchall())


def _observed(conn: psycopg.Connection[Any], query: str,
              args: Mapping[str, str]) -> list[datetime | None]:
    names, rows = _fetch(conn, query, args)
    if len(names) != 1:
        raise StateError(f"observedQuery must return one column, a timestamp (got "
                         f"{', '.join(names) or 'none'})")
    times = [row[0] for row in rows]
    for t in times:
        if t is not None and not (isinstance(t, datetime) and t.tzinfo is not None):
            raise StateError(f"observedQuery returned {t!r}, not a timestamp with time zone")
    return times


def _column(rows: Rows, name: str) -> Iterator[Any]:
    names, values = rows
    if name in names:
        at = names.index(name)
        yield from (row[at] for row in values)


def _records(query: str, kind: str, rows: Rows,
             columns: Mapping[str, tuple[str, bool]]) -> Iterator[dict[str, Any]]:
    """Each row as a dict of checked values; a bad one is named by its id and column."""
    names, values = rows
    for name in names:
        if name not in columns:
            raise StateError(f"{query} returns unknown column {name!r} (known: "
                             f"{', '.join(columns)})")
    missing = [n for n, (_, required) in columns.items() if required and n not in names]
    if missing:
        raise StateError(f"{query} returns no column {missing[0]!r} (it must return "
                         f"{', '.join(n for n, (_, r) in columns.items() if r)})")
    if len(set(names)) != len(names):
        raise StateError(f"{query} returns a column twice ({', '.join(names)})")
    for number, row in enumerate(values, 1):
        record = dict(zip(names, row, strict=True))
        ident = record["id"]
        if not isinstance(ident, str) or not ident:
            raise StateError(f"{kind} in row {number} of {query}: id is "
                             f"{'NULL' if ident is None else repr(ident)}, not a non-empty text")
        for name, value in record.items():
            if value is None:
                if columns[name][1]:
                    raise StateError(f"{kind} {ident!r}: {name} is NULL")
                continue
            check = _CHECKS[columns[name][0]]
            if not check(value):
                raise StateError(f"{kind} {ident!r}: {name} is {value!r}, not a "
                                 f"{columns[name][0]}")
        yield record


def _number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool) \
        and math.isfinite(value)


def _count(value: Any) -> bool:
    return _number(value) and float(value).is_integer() and 0 <= value < 2**31


_CHECKS: dict[str, Callable[[Any], bool]] = {
    _NUMBER: _number, _COUNT: _count, _TEXT: lambda v: isinstance(v, str),
    _TIME: lambda v: isinstance(v, datetime) and v.tzinfo is not None,
}


def _point(x: Any, y: Any) -> pb.Point:
    return pb.Point(x=float(x), y=float(y))


def _order(r: Mapping[str, Any]) -> pb.Order:
    return pb.Order(id=r["id"], pickup=_point(r["pickup_x"], r["pickup_y"]),
                    dropoff=_point(r["dropoff_x"], r["dropoff_y"]),
                    ready_in_seconds=float(r.get("ready_in_seconds") or 0),
                    size=int(r.get("size") or 1))


def _courier(r: Mapping[str, Any]) -> pb.Courier:
    return pb.Courier(id=r["id"], position=_point(r["x"], r["y"]), speed=float(r["speed"]),
                      capacity=int(r["capacity"]) if r.get("capacity") is not None else 1,
                      vehicle=r.get("vehicle") or "bike")


def main() -> None:
    """Print the default schema, for ``psql``."""
    print(SCHEMA, end="")


if __name__ == "__main__":
    main()
