"""The postgres sink's tables, read with psycopg in one repeatable-read snapshot."""

from __future__ import annotations

import psycopg
import psycopg.errors

from devtools.pgcheck.history import normal_namespace
from devtools.pgcheck.model import CheckError, Held, Row, SinkState, pairs_of

# ---------------------------------------------------------------------- PostgreSQL


def read_sink(url: str, namespace: str) -> SinkState:
    """The sink's cursor, held decisions and assignment rows, in one snapshot."""
    ns = normal_namespace(namespace)
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            row = conn.execute("SELECT revision FROM dispatch_sink_cursor WHERE namespace = %s",
                               (ns,)).fetchone()
            cursor = int(row[0]) if row else 0
            held = {}
            for city, revision, token, decision in conn.execute(
                    "SELECT city, revision, token, decision FROM dispatch_decisions"):
                pairs = pairs_of(decision) if isinstance(decision, dict) else {}
                held[city] = Held(city, int(revision), int(token), pairs)
            rows = [Row(int(r), c, int(t), o, k) for r, c, t, o, k in conn.execute(
                "SELECT revision, city, token, order_id, courier_id FROM dispatch_assignments")]
    except psycopg.errors.UndefinedTable as exc:
        raise CheckError(f"the database has no sink tables ({_line(exc)}): create them with "
                         "`dispatch-relay --init`") from exc
    except psycopg.Error as exc:
        raise CheckError(f"postgres: {_line(exc)}") from exc
    return SinkState(cursor, held, rows)


def _line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
