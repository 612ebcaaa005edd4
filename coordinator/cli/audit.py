"""``dispatchctl audit``: which decisions sent which courier to which order, from the sink.

etcd keeps a city's decisions only back to its last compaction; the ``postgres`` sink
keeps every assignment of every accepted decision in ``dispatch_assignments``
(append-only, keyed by the decision's etcd revision). This command reads that table:
for an order, every decision that assigned it (to whom, when, by which worker, solver
and token) and every reassignment; for a courier, every order it was given.

This module is the boundary to psycopg for the command: its errors become one line here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from coordinator.cli.context import CONTEXT
from coordinator.cli.render import print_json, print_table
from coordinator.errors import ConfigError, SinkError, SinkUnavailable

__all__ = ["AuditRow", "audit", "parse_since", "read_audit"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


@dataclass(frozen=True)
class AuditRow:
    """One assignment of one accepted decision; ``previous`` is the courier the same
    order had in the decision before it that assigned it (None: its first assignment)."""

    revision: int
    decided_at: datetime
    city: str
    order_id: str
    courier_id: str
    previous: str | None
    pickup_eta_seconds: float | None
    token: int
    worker_id: str
    solver: str

    @property
    def change(self) -> str:
        if self.previous is None:
            return "assigned"
        return "same" if self.previous == self.courier_id else "reassigned"

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "decidedAt": _stamp(self.decided_at),
                "city": self.city, "orderId": self.order_id, "courierId": self.courier_id,
                "change": self.change, "previousCourierId": self.previous,
                "pickupEtaSeconds": self.pickup_eta_seconds, "token": self.token,
                "workerId": self.worker_id, "solver": self.solver}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time (UTC unless it says otherwise) or a duration back
    from ``now`` (``90s``, ``10m``, ``2h``, ``1d``, ``1w``)."""
    text = text.strip()
    match = _DURATION.fullmatch(text)
    if match:
        now = datetime.now(UTC) if now is None else now
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected an ISO time such as "
                          "2026-12-02T09:30:00Z or a duration such as 10m, 2h, 1d") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# The order's whole history is windowed (so ``previous`` is right whatever --since cuts
# off), then filtered; the (order_id, revision) index serves both the order and the
# courier query.
_QUERY = """
WITH history AS (
  SELECT revision, decided_at, city, order_id, courier_id,
         lag(courier_id) OVER (PARTITION BY city, order_id ORDER BY revision) AS previous,
         pickup_eta_seconds, token, worker_id, solver
  FROM dispatch_assignments
  WHERE {orders}
)
SELECT revision, decided_at, city, order_id, courier_id, previous, pickup_eta_seconds,
       token, worker_id, solver
FROM history
WHERE {filters}
ORDER BY revision DESC, order_id DESC
LIMIT %(limit)s
"""


def read_audit(url: str, *, order: str | None = None, courier: str | None = None,
               since: datetime | None = None, changes: bool = False,
               limit: int = 1000) -> list[AuditRow]:
    """The newest ``limit`` assignments of ``order`` (or to ``courier``) at or after
    ``since``, oldest first; with ``changes``, only first assignments and reassignments."""
    if (order is None) == (courier is None):
        raise ConfigError("audit: give exactly one of --order and --courier")
    orders = ("order_id = %(order)s" if order is not None else
              "order_id IN (SELECT order_id FROM dispatch_assignments "
              "WHERE courier_id = %(courier)s)")
    filters = ["courier_id = %(courier)s" if courier is not None else "TRUE"]
    if since is not None:
        filters.append("decided_at >= %(since)s")
    if changes:
        filters.append("previous IS DISTINCT FROM courier_id")
    query = _QUERY.format(orders=orders, filters=" AND ".join(filters))
    params = {"order": order, "courier": courier, "since": since, "limit": limit}
    records = _fetch(url, query, params)
    return [AuditRow(revision=int(r[0]), decided_at=r[1], city=r[2], order_id=r[3],
                     courier_id=r[4], previous=r[5], pickup_eta_seconds=r[6],
                     token=int(r[7]), worker_id=r[8], solver=r[9])
            for r in reversed(records)]


def _fetch(url: str, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run one read-only query; every psycopg error becomes a one-line ``SinkError``.

    psycopg is imported here, not at the top: it takes a third of a second to load, and
    every other ``dispatchctl`` command would pay for it.
    """
    import psycopg
    import psycopg.conninfo

    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"--sink-url is not a PostgreSQL URL: {_first_line(exc)}") from exc
    where = _where(info)
    if "connect_timeout" not in info:
        url = psycopg.conninfo.make_conninfo(url, connect_timeout=5)
    try:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.read_only = True
            return connection.execute(query, params).fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise SinkError(f"the audit database {where} has no dispatch_assignments table: "
                        "run `dispatch-relay --sink postgres --init` against it first "
                        "(or check search_path in --sink-url)") from exc
    except psycopg.OperationalError as exc:
        raise SinkUnavailable(f"cannot reach the audit database {where}: "
                              f"{_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise SinkError(f"audit query on {where} failed: {_first_line(exc)}") from exc


def _where(info: dict[str, Any]) -> str:
    """``host:port/db`` of a connection, never its password."""
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    database = f"/{info['dbname']}" if info.get("dbname") else ""
    return f"{host}:{info.get('port') or 5432}{database}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.removeprefix("connection failed: ")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _table(rows: list[AuditRow]) -> list[list[str]]:
    table = [["REVISION", "DECIDED AT (UTC)", "CITY", "ORDER", "COURIER", "CHANGE", "ETA",
              "TOKEN", "WORKER", "SOLVER"]]
    for r in rows:
        change = {"assigned": "assigned", "same": "",
                  "reassigned": f"reassigned from {r.previous}"}[r.change]
        eta = "-" if r.pickup_eta_seconds is None else f"{r.pickup_eta_seconds:.0f}s"
        table.append([str(r.revision), _stamp(r.decided_at), r.city, r.order_id,
                      r.courier_id, change, eta, str(r.token), r.worker_id, r.solver])
    return table


@click.command(context_settings=CONTEXT)
@click.option("--order", "order_id", metavar="ID", help="Every assignment of this order.")
@click.option("--courier", "courier_id", metavar="ID",
              help="Every order this courier was assigned.")
@click.option("--since", metavar="TIME",
              help="Only decisions made at or after TIME: ISO 8601 (UTC unless it has an "
                   "offset) or a duration back from now: 90s, 10m, 2h, 1d.")
@click.option("--changes", is_flag=True,
              help="Only first assignments and reassignments, not the decisions that kept "
                   "the same courier.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 10_000_000),
              help="Show at most the newest N rows.")
@click.option("--sink-url", envvar="DISPATCH_SINK_URL", required=True, metavar="URL",
              help="The postgres sink's database, a libpq URL "
                   "(postgresql://user@host:5432/db; env DISPATCH_SINK_URL).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per row).")
def audit(order_id: str | None, courier_id: str | None, since: str | None, changes: bool,
          limit: int, sink_url: str, as_json: bool) -> None:
    """Which decisions assigned an order (to whom, when, by which worker, solver and
    token) and every reassignment, or every order given to a courier, oldest first.

    Read from the postgres sink's append-only audit (dispatch_assignments), which
    reaches back past etcd's compaction.
    """
    if (order_id is None) == (courier_id is None):
        raise click.UsageError("give exactly one of --order ID and --courier ID")
    start = parse_since(since) if since is not None else None
    rows = read_audit(sink_url, order=order_id, courier=courier_id, since=start,
                      changes=changes, limit=limit)
    subject = f"order {order_id}" if order_id is not None else f"courier {courier_id}"
    more = (f"showing the newest {limit} rows of {subject}; narrow with --since or raise "
            "--limit" if len(rows) == limit else "")
    if as_json:
        print_json([r.to_json() for r in rows])
        if more:
            click.echo(more, err=True)
        return
    if not rows:
        raise ConfigError(f"no assignment of {subject} in the audit sink"
                          + (f" since {_stamp(start)}" if start is not None else ""))
    print_table(_table(rows))
    if more:
        click.echo(more)
