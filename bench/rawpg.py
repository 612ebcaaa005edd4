"""The PostgreSQL side of the relay benchmark: the decisions it carries, the raw psycopg
baseline that writes the same rows, the relay's batches read back from the database, and
a watch that sees when a revision becomes visible.

The baseline is what the postgres sink promises, written by hand with psycopg and nothing
else: per batch one transaction holding the conditional upserts of ``dispatch_decisions``
(each adding its audit rows, which the server expands from the decision's JSON, if it
wrote) and the cursor moved with ``GREATEST``, the sink's own statements and parameters
(``PostgresSink.round_sql``, ``PostgresSink.row``), run as the sink runs them
(``run_rounds``: one statement, or one per round pipelined, in one round trip). Its
parameters are built before the clock starts, so it measures the database's share of the
work alone: no etcd, no protobuf, no JSON.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench import processes, samples
from coordinator.codec import decode
from coordinator.sinks.contract import Delivery
from coordinator.sinks.postgres import PostgresSink, run_rounds
from protos import dispatch_pb2 as pb

#: the postgres sink's own statements: the baseline writes what the sink writes
STATEMENT = PostgresSink("postgresql://", namespace="").round_sql
CURSOR = "SELECT revision FROM dispatch_sink_cursor WHERE namespace = %s"


# -- the decisions ------------------------------------------------------------------------

def city_values(cities: Sequence[str], orders: int, couriers: int) -> dict[str, bytes]:
    """A decision per city as the worker writes it (greedy on a simulated city: its
    details are the audit rows), encoded once: every decision of a city carries it."""
    from coordinator.codec import encode
    from solvers.cost import solution_cost
    from solvers.generate import simulated_state
    from solvers.greedy import GreedySolver

    out = {}
    for i, city in enumerate(cities):
        state = simulated_state(city, 1, n_orders=orders, n_couriers=couriers, seed=i,
                                taken_at=time.time()).freeze()
        solution = GreedySolver().solve(state, {}, 1.0)
        message = samples.decision_message(state, solution, token=1000 + i, worker="bench",
                                           cost=float(solution_cost(state, solution)), pb=pb)
        out[city] = encode(message)
    return out


@dataclass(frozen=True)
class Written:
    """One decision as it was put into etcd."""

    city: str
    revision: int
    value: bytes


@dataclass(frozen=True)
class Prepared:
    """One decision's parameters (the upsert, from which the server adds its audit rows)."""

    revision: int
    city: str
    upsert: Any  # PostgresSink.row
    #: its audit rows (as the sink writes them)
    rows: int


@dataclass(frozen=True)
class Batch:
    """One transaction's parameters, built before the clock starts."""

    #: ``round_sql``'s parameters, a set per round (``PostgresSink.statements``)
    params: list[tuple[Any, ...]]
    decisions: int


def prepare(written: Sequence[Written]) -> list[Prepared]:
    """The rows of every decision, decoded once per distinct value."""
    parsed: dict[bytes, pb.Decision] = {}
    out = []
    for w in written:
        d = parsed.get(w.value)
        if d is None:
            d = parsed[w.value] = decode(pb.Decision, w.value, what="decision")
        delivery = Delivery(w.city, w.revision, d.token, d, w.value, stored=True)
        out.append(Prepared(w.revision, w.city, PostgresSink.row(delivery),
                            len(d.details) or len(d.assignments)))
    return out


def split(items: Sequence[Prepared], sizes: Sequence[int], namespace: str) -> list[Batch]:
    """``items`` cut into consecutive batches of ``sizes``, each with its parameters
    (the upserts sorted by city, as the sink sends them; every decision writes, into a
    fresh database)."""
    out, at = [], 0
    for size in sizes:
        part = sorted(items[at:at + size], key=lambda p: p.city)
        out.append(Batch(PostgresSink.statements([p.upsert for p in part], namespace,
                                                 max(p.revision for p in part)), len(part)))
        at += size
    return out


# -- the raw baseline ---------------------------------------------------------------------

def write_raw(url: str, namespace: str, batches: Sequence[Batch],
              pg_cpu: Any) -> dict[str, float]:
    """Write the batches in order, one transaction each, as the sink does, and
    time them from the commit of the first to the commit of the last (connecting and the
    first batch left out, as the relay arm leaves out its start). ``pg_cpu()``: the
    server's CPU seconds so far."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")  # as the sink does
        t0 = cpu0 = pg0 = 0.0
        for i, batch in enumerate(batches):
            wrote, _ = run_rounds(conn, STATEMENT, batch.params)
            assert wrote == batch.decisions, "a fresh database takes every decision"
            if i == 0:
                cpu0, pg0 = time.process_time(), pg_cpu()
                t0 = time.perf_counter()
        elapsed = time.perf_counter() - t0
        cpu, pg = time.process_time() - cpu0, pg_cpu() - pg0
    n = sum(b.decisions for b in batches[1:])
    return {"decisions": n, "seconds": elapsed, "rate": n / elapsed, "batches": len(batches),
            "client_cpu_us_per_decision": cpu / n * 1e6,
            "postgres_cpu_us_per_decision": pg / n * 1e6}


# -- reading the database back ------------------------------------------------------------

def batch_sizes(url: str) -> list[int]:
    """Decisions per transaction, in revision order: rows committed by one transaction
    share its ``xmin``, so the audit table tells how a writer batched (every decision here
    has assignments)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT xmin::text AS tx, revision, city "
            "FROM dispatch_assignments) d GROUP BY tx ORDER BY min(revision)").fetchall()
    return [int(r[0]) for r in rows]


def contents(url: str, namespace: str) -> dict[str, int]:
    """What a database holds, to check that both arms wrote the same."""
    with psycopg.connect(url) as conn:
        decisions, revisions = conn.execute(
            "SELECT count(*), coalesce(sum(revision), 0) FROM dispatch_decisions").fetchone() \
            or (0, 0)
        assignments, audited = conn.execute(
            "SELECT count(*), coalesce(sum(revision), 0) FROM dispatch_assignments"
        ).fetchone() or (0, 0)
        cursor = conn.execute(CURSOR, (namespace,)).fetchone()
    return {"decisions": int(decisions), "decision_revisions": int(revisions),
            "assignments": int(assignments), "assignment_revisions": int(audited),
            "cursor": int(cursor[0]) if cursor else 0}


NOTIFY = """
CREATE FUNCTION bench_cursor_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_cursor', NEW.revision::text); RETURN NEW; END $$;
CREATE TRIGGER bench_cursor_notify AFTER INSERT OR UPDATE ON dispatch_sink_cursor
FOR EACH ROW EXECUTE FUNCTION bench_cursor_notify();
"""


def install_notify(url: str) -> None:
    """Make every move of the cursor send ``NOTIFY bench_cursor, '<revision>'``: one
    trigger call per transaction, delivered to listeners when it commits."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(NOTIFY)


@dataclass
class CursorWatch:
    """Listens for the cursor's notifications (:func:`install_notify`) on a connection of
    its own and keeps each new value with the time it arrived. The cursor is committed in
    the same transaction as the rows and a notification is sent when that transaction
    commits, so revision r is visible by the time a cursor ≥ r arrives.

    Its own cost is kept too: this thread's CPU and its server backend's."""

    url: str
    times: list[float] = field(default_factory=list)
    cursors: list[int] = field(default_factory=lambda: [0])
    received: int = 0
    backend_pid: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cpu: float = 0.0

    def start(self) -> CursorWatch:
        conn = psycopg.connect(self.url, autocommit=True)
        conn.execute("LISTEN bench_cursor")
        self.backend_pid = conn.info.backend_pid
        self.times.append(time.perf_counter())
        self._thread = threading.Thread(target=self._run, args=(conn,), name="cursor watch",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self, conn: psycopg.Connection[Any]) -> None:
        try:
            with conn:
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.2):
                        now, cursor = time.perf_counter(), int(note.payload)
                        with self._cond:
                            self._cpu = time.thread_time()
                            self.received += 1
                            if cursor > self.cursors[-1]:
                                self.times.append(now)
                                self.cursors.append(cursor)
                                self._cond.notify_all()
                    with self._cond:
                        self._cpu = time.thread_time()
        finally:
            with self._cond:
                self._stop.set()
                self._cond.notify_all()

    def cost(self) -> tuple[int, float, float]:
        """Notifications so far, this thread's CPU seconds (as of its last 0.2 s wake-up
        at most), its backend's CPU seconds."""
        with self._cond:
            received, cpu = self.received, self._cpu
        return received, cpu, processes.process_tree_usage(self.backend_pid)[0]

    def wait_for(self, revision: int, timeout: float) -> tuple[float, int]:
        """Wait until the cursor is ≥ ``revision``: when it was seen, and its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.cursors[-1] < revision:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    raise RuntimeError(f"sink cursor at {self.cursors[-1]}, not {revision}, "
                                       f"after {timeout:.0f}s")
                self._cond.wait(left)
            return self.times[-1], self.cursors[-1]

    def seen(self, revision: int) -> float:
        """When the cursor was first seen ≥ ``revision`` (it must have been)."""
        with self._cond:
            return self.times[bisect_left(self.cursors, revision)]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
