"""A sink that breaks the "only newer" promise on purpose, so the conformance kit is
seen to catch it: the PostgreSQL sink without its fences (the upsert's ``WHERE`` and the
cursor's ``GREATEST``), the classic "last write wins" mistake. Never use it."""

from __future__ import annotations

from coordinator.sinks.postgres import PostgresSink

__all__ = ["UnconditionalSink"]


class UnconditionalSink(PostgresSink):
    """Writes every delivery over what it holds and moves the cursor to the last batch."""

    name = "test-unconditional"
    upsert_sql = """
INSERT INTO dispatch_decisions (city, token, revision, worker_id, solver, decided_at, decision)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (city) DO UPDATE SET
  token = EXCLUDED.token, revision = EXCLUDED.revision, worker_id = EXCLUDED.worker_id,
  solver = EXCLUDED.solver, decided_at = EXCLUDED.decided_at, decision = EXCLUDED.decision
RETURNING revision
"""
    advance_sql = """
INSERT INTO dispatch_sink_cursor (namespace, revision) VALUES (%s, %s)
ON CONFLICT (namespace) DO UPDATE SET revision = EXCLUDED.revision
RETURNING revision
"""
