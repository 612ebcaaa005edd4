"""A sink that breaks the "only newer" promise on purpose, so the conformance kit is
seen to catch it: the PostgreSQL sink without its fences (the upsert's ``WHERE`` and the
cursor's ``GREATEST``), the classic "last write wins" mistake. Never use it."""

from __future__ import annotations

from coordinator.sinks.postgres import PostgresSink

__all__ = ["UnconditionalSink"]


class UnconditionalSink(PostgresSink):
    """Writes every delivery over what it holds and moves the cursor to the last batch."""

    name = "test-unconditional"
    upsert_sql = PostgresSink.upsert_sql.replace(
        "  WHERE dispatch_decisions.revision < EXCLUDED.revision\n", "")
    assert upsert_sql != PostgresSink.upsert_sql, "the fence to take out has moved"
    advance_sql = """
INSERT INTO dispatch_sink_cursor (namespace, revision) VALUES (%s, %s)
ON CONFLICT (namespace) DO UPDATE SET revision = EXCLUDED.revision
RETURNING revision
"""
