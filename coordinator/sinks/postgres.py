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
from collections.abc import Sequence
from functools import cached_property
from typing import Any, NamedTuple

import psycopg

from coordinator.codec import encode
from coordinator.sinks.contract import Applied, Delivery, Sink
from coordinator.sinks.pgconn import PgConnection

__all__ = ["SCHEMA", "PostgresSink", "run_rounds"]

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

#: One round of a batch (at most one delivery per city): the conditional upserts, and
#: the audit rows of each delivery whose upsert wrote, expanded by the server from the
#: decision's JSON (its details, else its bare assignments with no ETA; protobuf's
#: canonical JSON leaves a field at its default out, hence the COALESCEs). Parameter: one
#: JSON array of ``[city, token, revision, decision]``, the decision in the worker's form
#: as etcd holds it (a ``decidedAt`` of 9 fractional digits is cut to the microsecond,
#: as protobuf's ``ToDatetime`` cuts it): the client only joins text, adapting nothing.
#: The CTEs ``written`` and ``audit``; see ``_ROUND``.
_UPSERT = """
d AS (
  SELECT e->>0 AS city, (e->>1)::bigint AS token, (e->>2)::bigint AS revision, e->3 AS j, n
  FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS d(e, n)),
written AS (
  INSERT INTO dispatch_decisions (city, token, revision, worker_id, solver, decided_at,
                                  decision)
  SELECT city, token, revision, coalesce(j->>'workerId', ''), coalesce(j->>'solver', ''),
         coalesce((CASE WHEN length(j->>'decidedAt') = 30
                        THEN left(j->>'decidedAt', 26) || 'Z'
                        ELSE j->>'decidedAt' END)::timestamptz, 'epoch'), j
  FROM d
  ORDER BY n
  ON CONFLICT (city) DO UPDATE SET
    token = EXCLUDED.token, revision = EXCLUDED.revision, worker_id = EXCLUDED.worker_id,
    solver = EXCLUDED.solver, decided_at = EXCLUDED.decided_at, decision = EXCLUDED.decision
  WHERE dispatch_decisions.revision < EXCLUDED.revision
  RETURNING revision, city, token, decided_at, worker_id, solver, decision),
audit AS (
  INSERT INTO dispatch_assignments (revision, city, token, order_id, courier_id,
                                    pickup_eta_seconds, decided_at, worker_id, solver)
  SELECT w.revision, w.city, w.token, a.order_id, a.courier_id, a.eta, w.decided_at,
         w.worker_id, w.solver
  FROM written w CROSS JOIN LATERAL (
    SELECT coalesce(x.e->>'orderId', ''), coalesce(x.e->>'courierId', ''),
           coalesce((x.e->>'pickupEtaSeconds')::double precision, 0)
    FROM jsonb_array_elements(w.decision->'details') AS x(e)
    UNION ALL
    SELECT y.o, y.c, NULL FROM jsonb_each_text(w.decision->'assignments') AS y(o, c)
    WHERE coalesce(jsonb_array_length(w.decision->'details'), 0) = 0
  ) AS a(order_id, courier_id, eta))
"""

_ADVANCE = """
INSERT INTO dispatch_sink_cursor (namespace, revision) VALUES (%s, %s)
ON CONFLICT (namespace) DO UPDATE
SET revision = GREATEST(dispatch_sink_cursor.revision, EXCLUDED.revision)
RETURNING revision
"""

#: A round and the cursor in one statement (one statement is one transaction): how many
#: deliveries wrote, and the cursor after it. Parameters: the round's, namespace, revision.
_ROUND = """
WITH {upsert},
advanced AS ({advance})
SELECT (SELECT count(*) FROM written), (SELECT revision FROM advanced)
"""

_CURSOR = "SELECT revision FROM dispatch_sink_cursor WHERE namespace = %s"

class PostgresSink(Sink):
    """Decisions into PostgreSQL over one connection, reopened after a failure."""

    name = "postgres"
    #: the fenced statements (the raw psycopg baseline of ``bench/relay.py`` writes them
    #: too, with :meth:`row`); the test suite's deliberately broken sink replaces them
    upsert_sql = _UPSERT
    advance_sql = _ADVANCE

    def __init__(self, url: str, *, namespace: str) -> None:
        # A round's plan does not depend on its arrays: planning it afresh for every batch
        # (PostgreSQL's choice here) doubled the server's CPU for a batch of one.
        self._pg = PgConnection(url, role="postgres sink", application_name="dispatch-relay",
                                setup=("SET plan_cache_mode = force_generic_plan",))
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
        """The delivery's upsert parameters, built on the follower's thread."""
        return delivery.with_prepared(self.row(delivery))

    @staticmethod
    def row(d: Delivery) -> _Row:
        """A delivery's element of ``upsert_sql``'s JSON array: the stored JSON as it is,
        if the follower checked it is in the worker's form (the server reads its fields),
        else the message's."""
        decision = (d.value if d.stored else encode(d.decision)).decode()
        return _Row(d.city, f"[{json.dumps(d.city)},{d.token},{d.revision},{decision}]")

    @staticmethod
    def rounds(rows: Sequence[_Row]) -> list[str]:
        """``upsert_sql``'s parameter for a batch's rows (sorted by city): one per round,
        round k holding the k-th delivery of each city, so that no statement touches a
        row twice and each city's deliveries still go in the order given."""
        rounds: list[list[str]] = []
        seen: dict[str, int] = {}
        for row in rows:
            k = seen[row.city] = seen.get(row.city, -1) + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(row.element)
        return ["[" + ",".join(part) + "]" for part in rounds]

    def apply(self, batch: Sequence[Delivery]) -> Applied:
        """One transaction: the conditional upserts (each adding its audit rows if it
        wrote), the cursor. Upserts go city by city (each city's deliveries in the order
        given, one round per repeat of a city): two relays' transactions then lock rows
        in the same order and cannot deadlock. One statement, or with repeats one
        statement per round, pipelined: one round trip."""
        if not batch:
            return Applied(applied=0, refused=0, cursor=self.cursor())
        rows = [d.prepared if isinstance(d.prepared, _Row) else self.row(d)
                for d in sorted(batch, key=lambda d: d.city)]  # stable: keeps order
        params = self.statements(rows, self.namespace, max(d.revision for d in batch))
        with self._boundary("apply a batch") as conn:
            written, cursor = run_rounds(conn, self.round_sql, params)
        return Applied(applied=written, refused=len(batch) - written, cursor=cursor)

    @cached_property
    def round_sql(self) -> str:
        """The statement of one round: ``upsert_sql`` and ``advance_sql`` together."""
        return _ROUND.format(upsert=self.upsert_sql.strip(), advance=self.advance_sql.strip())

    @classmethod
    def statements(cls, rows: Sequence[_Row], namespace: str,
                   revision: int) -> list[tuple[Any, ...]]:
        """``round_sql``'s parameters for a batch's rows: a set per round, each moving
        the cursor to ``revision``."""
        return [(elements, namespace, revision) for elements in cls.rounds(rows)]

    def close(self) -> None:
        self._pg.close()


# ---------------------------------------------------------------------- rows


def run_rounds(conn: psycopg.Connection[Any], statement: str,
               params: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
    """Run a batch's rounds in one transaction, in one round trip (autocommit: a lone
    round is a transaction of its own); how many deliveries wrote, and the cursor."""
    if len(params) == 1:
        results = [conn.execute(statement, params[0]).fetchone()]
    else:
        with conn.pipeline(), conn.cursor() as cur:
            with conn.transaction():
                cur.executemany(statement, params, returning=True)
            results = [result.fetchone() for result in cur.results()]
    counts = [row for row in results if row is not None]
    assert len(counts) == len(params)  # each round answers one row
    return sum(int(row[0]) for row in counts), max(int(row[1]) for row in counts)


class _Row(NamedTuple):
    """A delivery as the sink writes it (``Delivery.prepared``)."""

    city: str
    #: ``[city, token, revision, decision]``, JSON (see ``_UPSERT``)
    element: str

