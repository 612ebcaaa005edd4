"""The Postgres side of ``make demo``: a throwaway server, its schema, two relays.

Decisions leave etcd through ``dispatch-relay`` exactly as in production: the schema is
made by ``dispatch-relay --init``, then two relays campaign for the sink, one active and
one standby. The demo reads the sink's tables for its live view (rows, the sink's cursor
and how far it trails etcd's latest decision), kills the active relay so the standby is
seen taking over, and ends with the sink checked against etcd and one
``dispatchctl audit`` answer. :mod:`devtools.demo` drives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from coordinator.ops.overview import RelayView
from devtools.localpg import LocalPostgres

__all__ = ["RELAYS", "SINK", "SinkSide", "SinkView"]

SINK = "postgres"
RELAYS = ["relay-a", "relay-b"]

GREEN, YELLOW, RED, DIM, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[0m"

_COUNTS = """
SELECT (SELECT count(*) FROM dispatch_decisions),
       (SELECT count(*) FROM dispatch_assignments),
       (SELECT revision FROM dispatch_sink_cursor WHERE namespace = %s)
"""
# Decisions in the audit trail: one etcd transaction may commit several cities' decisions
# at one revision.
_DECIDED = "SELECT count(*) FROM (SELECT DISTINCT city, revision FROM dispatch_assignments) d"
# An order worth asking about: decided by two leaders of its city (a failover or a
# handover), reassigned if possible, with few rows; ids are unique within a city only.
_PICK_ORDER = """
SELECT order_id FROM dispatch_assignments GROUP BY order_id
HAVING count(DISTINCT city) = 1
ORDER BY count(DISTINCT token) > 1 DESC, count(DISTINCT courier_id) > 1 DESC,
         count(*), min(revision)
LIMIT 1
"""


@dataclass(frozen=True)
class SinkView:
    """What the sink's tables say at one moment (``error``: they could not be read)."""

    cities: int = 0
    assignments: int = 0
    cursor: int = 0
    error: str = ""


@dataclass
class _Takeover:
    killed: str
    by: str
    seconds: float


@dataclass
class _Relays:
    """Which relay leads, and the takeovers seen after a kill."""

    active: str = ""
    killed: dict[str, float] = field(default_factory=dict)
    takeovers: list[_Takeover] = field(default_factory=list)
    peak_lag: int = 0


class SinkSide:
    """``start()`` brings PostgreSQL, the schema and the relays up; ``close()`` ends all."""

    def __init__(self, namespace: str, logs: Path, *, ttl: int) -> None:
        self.endpoints = ""
        self.namespace = namespace
        self.logs = logs
        self.ttl = ttl
        self.server = LocalPostgres()  # PostgresMissing here, before anything started
        self.url = ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.relays = _Relays()
        self._conn: psycopg.Connection[Any] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, endpoints: str) -> SinkSide:
        self.endpoints = endpoints
        self.server.start()
        self.url = self.server.create_database("dispatch")
        init = subprocess.run([*self._relay_args("init"), "--init"], capture_output=True,
                              text=True, timeout=60, check=False)
        if init.returncode != 0:
            raise RuntimeError(f"dispatch-relay --init failed: {init.stderr.strip()}")
        for relay_id in RELAYS:
            self.start_relay(relay_id)
        return self

    def start_relay(self, relay_id: str) -> None:
        with open(self.logs / f"{relay_id}.log", "ab") as log:
            self.procs[relay_id] = subprocess.Popen(
                self._relay_args(relay_id), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def _relay_args(self, relay_id: str) -> list[str]:
        return [sys.executable, "-m", "coordinator.cli.relay", "--etcd", self.endpoints,
                "--namespace", self.namespace, "--sink", SINK, "--sink-url", self.url,
                "--relay-id", relay_id, "--lease-ttl", str(self.ttl)]

    def stop_relays(self) -> None:
        """SIGTERM: the active relay resigns and revokes its lease."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop_relays()
        if self._conn is not None:
            self._conn.close()
        self.server.close()

    # -- the live view --------------------------------------------------------------------

    def read(self) -> SinkView:
        """The sink's row counts and cursor; a failed read is shown, not raised."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
            row = self._conn.execute(_COUNTS, (self.namespace,)).fetchone()
        except psycopg.Error as exc:
            self._conn = None
            return SinkView(error=str(exc).strip().splitlines()[0])
        assert row is not None
        return SinkView(int(row[0]), int(row[1]), int(row[2] or 0))

    def observe(self, views: list[RelayView], lag: int, note: Callable[[str], None]) -> None:
        """Note a new active relay, timed from the kill of the one before."""
        ours = [v for v in views if v.sink == SINK]
        active = next((v.relay_id for v in ours if v.active), "")
        state = self.relays
        if state.killed:
            state.peak_lag = max(state.peak_lag, lag)
        if active and active != state.active:
            killed_at = state.killed.get(state.active)
            if killed_at is not None:
                took = time.monotonic() - killed_at
                state.takeovers.append(_Takeover(state.active, active, took))
                note(f"{GREEN}{active} took over the sink{RESET} {took:.1f}s after the "
                     f"kill of {state.active}")
            else:
                note(f"{active} is the active relay")
            state.active = active

    def kill_active(self, note: Callable[[str], None]) -> bool:
        """SIGKILL the active relay; False while no relay is known to lead yet."""
        victim = self.relays.active
        proc = self.procs.get(victim)
        if proc is None or proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        self.relays.killed[victim] = time.monotonic()
        note(f"{RED}kill -9 {victim}{RESET} (the active relay): the standby takes the "
             f"sink after the {self.ttl}s lease TTL")
        return True

    def restart_killed(self, note: Callable[[str], None]) -> None:
        for relay_id in self.relays.killed:
            if self.procs[relay_id].poll() is not None:
                self.start_relay(relay_id)
                note(f"{GREEN}restarted {relay_id}{RESET}: it stands by")

    def render(self, view: SinkView, relays: list[RelayView], latest: int) -> list[str]:
        """The live view's lines: the sink's tables, then each relay."""
        host = f"postgres 127.0.0.1:{self.server.port}/dispatch"
        if view.error:
            lines = [f"{host}  {RED}{view.error}{RESET}"]
        else:
            lag = max(0, latest - view.cursor)
            colour = GREEN if lag <= 2 * len(RELAYS) else YELLOW
            lines = [f"{host}  {view.cities} cities, {view.assignments:,} assignment rows; "
                     f"cursor {view.cursor}, etcd's latest decision {latest}: "
                     f"{colour}lag {lag} revision{'' if lag == 1 else 's'}{RESET}"]
        status = {v.relay_id: v for v in relays if v.sink == SINK}
        for relay_id, proc in self.procs.items():
            alive = f"{GREEN}running{RESET}" if proc.poll() is None else f"{RED}dead{RESET}"
            v = status.get(relay_id)
            role = "-" if v is None else ("active" if v.active else "standby")
            detail = "" if v is None else (
                (f"cursor {v.cursor}, lag {v.lag_revisions} ({v.lag_seconds:.1f}s)"
                 if v.active else "queued in the sink's election")
                + (f"  {RED}{v.last_error[:60]}{RESET}" if v.last_error else ""))
            lines.append(f"  {relay_id:<10} {alive}  {role:<8} {DIM}{detail}{RESET}")
        return lines

    # -- the end --------------------------------------------------------------------------

    def catch_up(self, heads: dict[str, int], timeout: float = 15.0) -> bool:
        """Wait until the sink's cursor reaches etcd's last decision (``heads``: city ->
        revision of its latest decision, read once the workers stopped)."""
        target = max(heads.values(), default=0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.read().cursor >= target:
                return True
            time.sleep(0.2)
        return False

    def summary(self, heads: dict[str, int],
                accepted: int | None) -> tuple[list[str], bool]:
        """The summary's lines about the sink, and whether it holds etcd's ``heads``
        (city -> revision of its latest decision) exactly."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                held = {str(city): int(revision) for city, revision in conn.execute(
                    "SELECT city, revision FROM dispatch_decisions").fetchall()}
                row = conn.execute(_DECIDED).fetchone()
                picked = conn.execute(_PICK_ORDER).fetchone()
        except psycopg.Error as exc:
            return [f"  postgres could not be read: {str(exc).strip().splitlines()[0]}"], False
        decided = int(row[0]) if row else 0
        view = self.read()
        target = max(heads.values(), default=0)
        of = f" (etcd accepted {accepted:,})" if accepted is not None else ""
        lines = [f"  postgres: {len(held)} cities in dispatch_decisions, {decided:,} "
                 f"decisions and {view.assignments:,} assignments in the audit trail{of}; "
                 f"cursor {view.cursor}, etcd's last decision {target}"]
        differ = sorted(c for c in heads.keys() | held.keys() if heads.get(c) != held.get(c))
        lines.append("  every city's latest decision in postgres is etcd's: "
                     + (f"{GREEN}yes{RESET}" if not differ else
                        f"{RED}no, {len(differ)} differ ({', '.join(differ[:5])}){RESET}"))
        lines += self._takeover_lines()
        if picked is not None:
            lines += ["", *self.audit(str(picked[0]))]
        return lines, not differ

    def _takeover_lines(self) -> list[str]:
        state = self.relays
        if not state.killed:
            return []
        if not state.takeovers:
            return [f"  relay takeover after kill -9 of {', '.join(state.killed)}: none seen"]
        return [f"  relay takeover after kill -9 of {t.killed}: {t.by} active after "
                f"{t.seconds:.1f}s (lease TTL {self.ttl}s); the sink trailed etcd by at "
                f"most {state.peak_lag} revisions, then caught up"
                for t in state.takeovers]

    def audit(self, order_id: str) -> list[str]:
        """``dispatchctl audit --order ORDER``'s answer, verbatim, under its command."""
        shown = f"$ dispatchctl audit --order {order_id} --sink-url {self.url}"
        done = subprocess.run(
            [sys.executable, "-m", "coordinator.cli.ctl", "audit", "--order", order_id,
             "--sink-url", self.url], capture_output=True, text=True, timeout=60,
            check=False)
        return [shown, *(done.stdout + done.stderr).rstrip("\n").splitlines()]
