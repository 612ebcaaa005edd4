"""An independent check of the postgres sink against etcd's own history of decisions.

``python -m devtools.pgcheck --etcd HOST:PORT --namespace NS --pg URL`` prints one line
per finding and a summary, and exits 0 when clean, 1 with findings, 2 when it cannot
check; :func:`check` returns the same as a :class:`PgCheckResult`. It shares no code with
the coordinator, so a bug there cannot hide itself here: etcd is read with ``etcdctl -w
json`` (a watch of ``<ns>/decisions/`` from revision 1, or, when etcd answers that it
compacted its history, the decisions live at the compaction point and a watch from
there), decision values as protobuf's canonical JSON of ``protos/dispatch.proto``'s
``Decision``, PostgreSQL with psycopg in one repeatable-read transaction, read before
etcd so that etcd's history covers everything it holds.

What must hold, in the postgres sink's tables (``dispatch_assignments``,
``dispatch_decisions``, ``dispatch_sink_cursor``; one namespace per database):

- every assignment row belongs to a decision etcd accepted: the same revision, city and
  token, and an order→courier pair that decision made; nothing lies beyond the cursor;
- every accepted decision the cursor has passed has each of its assignments once;
- ``dispatch_decisions`` holds each city's latest accepted decision at or below the
  cursor, and no row is older than an assignment applied for its city (applied
  revisions only go up).

Compaction erases history: a city's history is complete only from its value at the
compaction point, so rows older than that are counted as unverifiable, not reported.
"""

from __future__ import annotations

from devtools.pgcheck.history import normal_namespace, read_history
from devtools.pgcheck.model import (
    CheckError,
    Finding,
    History,
    PgCheckResult,
    SinkState,
    compare,
)
from devtools.pgcheck.tables import read_sink

__all__ = ["CheckError", "Finding", "History", "PgCheckResult", "SinkState", "check",
           "compare", "read_history", "read_sink"]


def check(etcd: str, namespace: str, pg: str, *, etcdctl: str | None = None,
          timeout: float = 60.0) -> PgCheckResult:
    """Check the sink at ``pg`` against etcd at ``etcd`` (``host:port``, comma-separated);
    :class:`CheckError` when either cannot be read."""
    sink = read_sink(pg, namespace)  # first: etcd's history then covers all it holds
    history = read_history(etcd, namespace, etcdctl=etcdctl, timeout=timeout)
    return compare(history, sink, normal_namespace(namespace))
