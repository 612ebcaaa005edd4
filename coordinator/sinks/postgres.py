"""The PostgreSQL sink: the latest decision per city, plus an append-only audit.

``dispatch_decisions`` holds one row per city; a delivery replaces it only through a
conditional upsert (``... ON CONFLICT (city) DO UPDATE ... WHERE revision <
EXCLUDED.revision``), so the fence is checked by the database, under the row's lock,
whoever writes: a stale or repeated delivery, or a second relay overlapping this one,
changes nothing. Only a delivery that wrote adds its assignments to
``dispatch_assignments``, and the namespace's cursor advances with ``GREATEST``; the three
happen in one transaction. The tables are documented in ``docs/`` and created by
:meth:`PostgresSink.init_schema` (``dispatch-relay --init``).

psycopg's errors stop at :mod:`coordinator.sinks.pgconn` (shared with the state
archive): connection trouble becomes :class:`~coordinator.errors.SinkUnavailable`,
anything else :class:`~coordinator.errors.SinkError`, with the original as
``__cause__``.

``dispatch_states`` belongs to the state archive (:mod:`coordinator.sinks.archive`):
workers write the states of cities with ``archiveState`` there, ``dispatchctl replay``
reads them back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from coordinator.codec import encode
from coordinator.sinks.contract import Applied, Delivery, Sink
from coordinator.sinks.pgconn import PgConnection
from protos import dispatch_pb2 as pb

__all__ = ["SCHEMA", "PostgresSink", "audit_params"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS dispatch_decisions (
  city text PRIMARY KEY, token bigint NOT NULL, revision bigint NOT NULL,
  worker_id text NOT NULL, solver text NOT NULL, decided_at timestamptz NOT NULL,
  decision jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS dispatch_assignments (
  revision bigint NOT NULL, city text NOT NULL, token bigint NOT NULL,
  order_id text NOT NULL, courier_id text NOT NULL, pickup_eta_seconds double precision,
  decided_at timestamptz NOT NULL, worker_id text NOT NULL, solver text NOT NULL,
  -- one revision can carry many cities (a batched commit), whose order ids may repeat
  PRIMARY KEY (revision, city, order_id));
CREATE INDEX IF NOT EXISTS dispatch_assignments_by_order
  ON dispatch_assignments (order_id, revision);
CREATE INDEX IF NOT EXISTS dispatch_assignments_by_courier
  ON dispatch_assignments (courier_id, revision);
CREATE TABLE IF NOT EXISTS dispatch_sink_cursor (
  namespace text PRIMARY KEY, revision bigint NOT NULL);
-- the state archive (coordinator/sinks/archive.py): a city's StateSnapshot per tick,
-- for cities with archiveState on; archive_id is a hash of city and content
CREATE TABLE IF NOT EXISTS dispatch_states (
  archive_id text PRIMARY KEY, city text NOT NULL, taken_at timestamptz NOT NULL,
  archived_at timestamptz NOT NULL DEFAULT now(), snapshot jsonb NOT NULL);
CREATE INDEX IF NOT EXISTS dispatch_states_by_city ON dispatch_states (city, taken_at);
"""

_UPSERT = """
INSERT INTO dispatch_decisions (city, token, revision, worker_id, solver, decided_at, decision)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (city) DO UPDATE SET
  token = EXCLUDED.token, revision = EXCLUDED.revision, worker_id = EXCLUDED.worker_id,
  solver = EXCLUDED.solver, decided_at = EXCLUDED.decided_at, decision = EXCLUDED.decision
WHERE dispatch_decisions.revision < EXCLUDED.revision
RETURNING revision
"""

_AUDIT = """
WITH written AS (
  SELECT d.e->>0 AS city, (d.e->>1)::bigint AS revision, (d.e->>2)::bigint AS token,
         d.e->>3 AS worker_id, d.e->>4 AS solver, (d.e->>5)::timestamptz AS decided_at,
         d.e->6 AS assignments
  FROM jsonb_array_elements(%(decisions)s::jsonb) AS d(e))
INSERT INTO dispatch_assignments (revision, city, token, order_id, courier_id,
                                  pickup_eta_seconds, decided_at, worker_id, solver)
SELECT w.revision, w.city, w.token, a.e->>0, a.e->>1, (a.e->>2)::double precision,
       w.decided_at, w.worker_id, w.solver
FROM written w CROSS JOIN LATERAL jsonb_array_elements(w.assignments) AS a(e)
"""

_ADVANCE = """
INSERT INTO dispatch_sink_cursor (namespace, revision) VALUES (%s, %s)
ON CONFLICT (namespace) DO UPDATE
SET revision = GREATEST(dispatch_sink_cursor.revision, EXCLUDED.revision)
RETURNING revision
"""

_CURSOR = "SELECT revision FROM dispatch_sink_cursor WHERE namespace = %s"

class PostgresSink(Sink):
    """Decisions into PostgreSQL over one connection, reopened after a failure."""

    name = "postgres"
    #: the fenced statements; the test suite's deliberately broken sink replaces them
    upsert_sql = _UPSERT
    advance_sql = _ADVANCE
    #: the audit rows, from :func:`audit_params` (the raw psycopg baseline of
    #: ``bench/relay.py`` uses it too)
    audit_sql = _AUDIT

    def __init__(self, url: str, *, namespace: str) -> None:
        self._pg = PgConnection(url, role="postgres sink", application_name="dispatch-relay")
        self.namespace = namespace
        self.where = self._pg.where
        self._boundary = self._pg.boundary

    # ------------------------------------------------------------------ the contract

    def init_schema(self) -> None:
        with self._boundary("create the schema") as conn, conn.transaction():
            conn.execute(SCHEMA)

    def cursor(self) -> int:
        with self._boundary("read the cursor") as conn:
            row = conn.execute(_CURSOR, (self.namespace,)).fetchone()
        return int(row[0]) if row else 0

    def prepare(self, delivery: Delivery) -> Delivery:
        """The delivery's upsert row and its audit JSON, built on the follower's thread."""
        return replace(delivery, prepared=_Rows(_row(delivery), _audit_json(delivery)))

    def apply(self, batch: Sequence[Delivery]) -> Applied:
        """One transaction: the conditional upserts, the audit rows of those that wrote,
        the cursor. Upserts go city by city (each city's deliveries in the order given):
        two relays' transactions then lock rows in the same order and cannot deadlock.

        Pipelined, in two round trips: the upserts (which of them wrote decides the audit
        rows), then the audit rows, the cursor and the commit. The audit rows travel as
        one JSON parameter that the server expands, not row by row.
        """
        if not batch:
            return Applied(applied=0, refused=0, cursor=self.cursor())
        ordered = [d if isinstance(d.prepared, _Rows) else self.prepare(d)
                   for d in sorted(batch, key=lambda d: d.city)]  # stable: keeps order
        with self._boundary("apply a batch") as conn, conn.pipeline(), \
                conn.cursor() as cur:
            with conn.transaction():
                cur.executemany(self.upsert_sql, [d.prepared.upsert for d in ordered],
                                returning=True)
                written = [d for d, result in zip(ordered, cur.results(), strict=True)
                           if result.fetchone() is not None]
                if written:
                    cur.execute(self.audit_sql, audit_params(written))
                cur.execute(self.advance_sql,
                            (self.namespace, max(d.revision for d in batch)))
            advanced = cur.fetchone()
        assert advanced is not None  # an upsert with RETURNING returns its row
        return Applied(applied=len(written), refused=len(batch) - len(written),
                       cursor=int(advanced[0]))

    def close(self) -> None:
        self._pg.close()

# ---------------------------------------------------------------------- rows


def _row(d: Delivery) -> tuple[object, ...]:
    decision = d.decision
    return (d.city, d.token, d.revision, decision.worker_id, decision.solver,
            _decided_at(decision), (d.value or encode(decision)).decode())


@dataclass(frozen=True)
class _Rows:
    """A delivery as the sink writes it (``Delivery.prepared``)."""

    upsert: tuple[object, ...]
    #: the decision's columns and its audit rows, one JSON array (see ``_AUDIT``)
    audit: str


def _audit_json(d: Delivery) -> str:
    """``[city, revision, token, worker, solver, decided_at, [[order, courier, eta],
    ...]]``: its details, else its bare assignments with no ETA. JSON floats round-trip
    exactly; the rare non-finite ETA goes as the text PostgreSQL reads it."""
    decision = d.decision
    if decision.details:
        rows: list[tuple[str, str, float | str | None]] = [
            (a.order_id, a.courier_id, a.pickup_eta_seconds) for a in decision.details]
    else:
        rows = [(order, courier, None) for order, courier in decision.assignments.items()]
    head = (d.city, d.revision, d.token, decision.worker_id, decision.solver,
            _decided_at(decision).isoformat())
    try:
        return json.dumps((*head, rows), allow_nan=False)
    except ValueError:
        rows = [r if not isinstance(r[2], float) or math.isfinite(r[2])
                else (r[0], r[1], str(r[2])) for r in rows]
        return json.dumps((*head, rows))


def audit_params(written: Sequence[Delivery]) -> dict[str, str]:
    """The parameters of ``audit_sql`` for the deliveries that wrote (prepared or not)."""
    return {"decisions": "[" + ",".join(
        d.prepared.audit if isinstance(d.prepared, _Rows) else _audit_json(d)
        for d in written) + "]"}


def _decided_at(decision: pb.Decision) -> datetime:
    at: datetime = decision.decided_at.ToDatetime(tzinfo=UTC)
    return at
