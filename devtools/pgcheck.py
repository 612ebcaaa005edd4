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

import argparse
import base64
import binascii
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors

__all__ = ["CheckError", "Finding", "History", "PgCheckResult", "SinkState", "check",
           "compare", "main", "read_history", "read_sink"]

#: seconds of silence that end the replay once it has passed the newest live decision:
#: what can still come is a decision key put and deleted since, which etcd sends along
QUIET = 0.5


class CheckError(RuntimeError):
    """The check could not run: etcd or PostgreSQL could not be read (not a finding)."""


class _Compacted(Exception):
    """etcd compacted past the revision being read (up to ``revision``, 0: unknown)."""

    def __init__(self, message: str, revision: int = 0) -> None:
        super().__init__(message)
        self.revision = revision


# ---------------------------------------------------------------------- what is compared


@dataclass(frozen=True)
class Accepted:
    """One decision etcd accepted: a put of ``<ns>/decisions/<city>`` at ``revision``."""

    city: str
    revision: int
    token: int
    #: order id -> courier id: its ``assignments`` (and ``details``, which repeat them)
    pairs: dict[str, str]


@dataclass(frozen=True)
class History:
    """etcd's retained history of a namespace's decisions, read at ``revision``."""

    revision: int
    #: the oldest revision etcd still serves (1: never compacted)
    compacted: int
    decisions: dict[tuple[int, str], Accepted]
    #: per city, the revision from which its history is complete: its value at the
    #: compaction point (older puts of it are gone); other cities: ``compacted``
    floors: dict[str, int]
    #: values under the prefix that are not a city's decision (ignored)
    malformed: int = 0

    def floor(self, city: str) -> int:
        return self.floors.get(city, self.compacted)


@dataclass(frozen=True)
class Row:
    """One ``dispatch_assignments`` row."""

    revision: int
    city: str
    token: int
    order: str
    courier: str


@dataclass(frozen=True)
class Held:
    """One ``dispatch_decisions`` row: the decision the sink holds for a city."""

    city: str
    revision: int
    token: int
    pairs: dict[str, str]


@dataclass(frozen=True)
class SinkState:
    """What the sink's tables hold for a namespace."""

    cursor: int
    held: dict[str, Held]
    rows: list[Row]


@dataclass(frozen=True)
class Finding:
    """One thing in PostgreSQL that etcd's history contradicts."""

    kind: str
    city: str
    revision: int
    detail: str

    def __str__(self) -> str:
        where = f"{self.city} @ revision {self.revision}" if self.city else \
            f"revision {self.revision}"
        return f"{self.kind}: {where}: {self.detail}"


@dataclass
class PgCheckResult:
    """The verdict, and how much of the sink it could check."""

    namespace: str
    cursor: int
    etcd_revision: int
    compacted: int
    #: decisions in etcd's retained history
    accepted: int
    #: of those, the ones at or below the cursor: expected in PostgreSQL
    checked: int
    rows: int
    #: rows (assignments and held decisions) older than a city's retained history
    unverifiable: int
    malformed: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        verdict = "clean" if self.ok else f"{len(self.findings)} findings"
        return (f"postgres check of {self.namespace}: {verdict}; cursor {self.cursor}, etcd "
                f"at revision {self.etcd_revision} with history from {self.compacted}; "
                f"{self.checked} of {self.accepted} accepted decisions at or below the "
                f"cursor, {self.rows} assignment rows, {self.unverifiable} older than the "
                "retained history (unverifiable)")


# ---------------------------------------------------------------------- the comparison


def compare(history: History, sink: SinkState, namespace: str) -> PgCheckResult:
    """The findings of ``sink`` against ``history`` (see the module's docstring)."""
    findings: list[Finding] = []
    cursor = sink.cursor
    if cursor > history.revision:
        findings.append(Finding("cursor", "", cursor, f"the cursor is ahead of etcd, which "
                                                      f"is at revision {history.revision}"))
    groups: dict[tuple[int, str], list[Row]] = defaultdict(list)
    for row in sink.rows:
        groups[(row.revision, row.city)].append(row)
    unverifiable = 0
    newest_applied: dict[str, int] = {}
    for (revision, city), rows in sorted(groups.items()):
        newest_applied[city] = max(newest_applied.get(city, 0), revision)
        if revision > cursor:
            findings.append(Finding("beyond-cursor", city, revision,
                                    f"{len(rows)} assignment rows beyond the cursor {cursor}"))
        if revision < history.floor(city):
            unverifiable += len(rows)
            continue
        accepted = history.decisions.get((revision, city))
        if accepted is None:
            findings.append(Finding("not-accepted", city, revision,
                                    f"{len(rows)} assignment rows, but etcd accepted no "
                                    "decision for the city at this revision"))
        else:
            findings += _row_findings(accepted, rows)
    checked = 0
    for (revision, city), accepted in sorted(history.decisions.items()):
        if revision > cursor or revision < history.floor(city):
            continue
        checked += 1
        if accepted.pairs and (revision, city) not in groups:
            findings.append(Finding("missing", city, revision,
                                    f"accepted decision (token {accepted.token}, "
                                    f"{len(accepted.pairs)} assignments) has no assignment "
                                    f"row, though the cursor {cursor} passed it"))
    held_findings, held_unverifiable = _held_findings(history, sink, newest_applied)
    return PgCheckResult(
        namespace=namespace, cursor=cursor, etcd_revision=history.revision,
        compacted=history.compacted, accepted=len(history.decisions), checked=checked,
        rows=len(sink.rows), unverifiable=unverifiable + held_unverifiable,
        malformed=history.malformed, findings=findings + held_findings)


def _row_findings(accepted: Accepted, rows: list[Row]) -> list[Finding]:
    """One accepted decision's assignment rows: its token, its pairs, each once, all."""
    found = []
    city, revision = accepted.city, accepted.revision

    def add(kind: str, detail: str) -> None:
        found.append(Finding(kind, city, revision, detail))

    orders = Counter(row.order for row in rows)
    twice = sorted(order for order, n in orders.items() if n > 1)
    if twice:
        add("duplicate", f"{len(twice)} orders have more than one row (e.g. {twice[0]})")
    tokens = sorted({row.token for row in rows} - {accepted.token})
    if tokens:
        add("token", f"rows carry token {tokens[0]}; etcd's decision carries "
                     f"{accepted.token}")
    wrong = [row for row in rows if accepted.pairs.get(row.order) != row.courier]
    if wrong:
        add("not-in-decision", f"{len(wrong)} rows pair an order with a courier the "
                               f"decision did not (e.g. {wrong[0].order} -> "
                               f"{wrong[0].courier})")
    missing = sorted(set(accepted.pairs) - set(orders))
    if missing:
        add("missing", f"{len(missing)} of the decision's {len(accepted.pairs)} "
                       f"assignments have no row (e.g. {missing[0]})")
    return found


def _held_findings(history: History, sink: SinkState,
                   newest_applied: dict[str, int]) -> tuple[list[Finding], int]:
    """``dispatch_decisions``: each city's latest accepted decision at or below the
    cursor, none older than what was applied for it; and the rows it cannot verify."""
    cursor = sink.cursor
    latest: dict[str, Accepted] = {}
    for accepted in history.decisions.values():
        known = latest.get(accepted.city)
        if accepted.revision <= cursor and (known is None or
                                            accepted.revision > known.revision):
            latest[accepted.city] = accepted
    found: list[Finding] = []
    unverifiable = 0
    for city in sorted(set(latest) | set(sink.held)):
        held, want = sink.held.get(city), latest.get(city)
        floor = history.floor(city)
        if held is not None and held.revision > cursor:
            found.append(Finding("beyond-cursor", city, held.revision,
                                 f"dispatch_decisions holds a revision beyond the cursor "
                                 f"{cursor}"))
        elif held is not None and (cursor < floor or (want is None and
                                                      held.revision < floor)):
            unverifiable += 1  # what the city held by then is compacted away
        elif want is None:
            if held is not None:
                found.append(Finding("not-accepted", city, held.revision,
                                     "dispatch_decisions holds a decision etcd never "
                                     "accepted for the city"))
        elif held is None:
            found.append(Finding("decision-missing", city, want.revision,
                                 f"dispatch_decisions has no row for the city; etcd's latest "
                                 f"accepted decision at or below the cursor {cursor} is "
                                 f"this one"))
        elif held.revision != want.revision:
            kind = "stale" if held.revision < want.revision else "not-accepted"
            found.append(Finding(kind, city, held.revision,
                                 f"dispatch_decisions holds this revision; etcd's latest "
                                 f"accepted decision at or below the cursor {cursor} is "
                                 f"revision {want.revision}"))
            continue
        elif held.token != want.token or held.pairs != want.pairs:
            found.append(Finding("decision-differs", city, held.revision,
                                 f"dispatch_decisions holds token {held.token} and "
                                 f"{len(held.pairs)} assignments; etcd's decision has token "
                                 f"{want.token} and {len(want.pairs)}"))
        applied = newest_applied.get(city, 0)
        if held is not None and held.revision < applied:
            found.append(Finding("went-back", city, held.revision,
                                 f"dispatch_decisions holds this revision, older than "
                                 f"revision {applied} whose assignments were applied for "
                                 "the city: a newer decision was overwritten"))
    return found, unverifiable


# ---------------------------------------------------------------------- decision values


def _pairs(decision: dict[str, Any]) -> dict[str, str]:
    """A decision's order -> courier pairs, from its canonical JSON."""
    pairs = {str(o): str(c) for o, c in (decision.get("assignments") or {}).items()}
    for detail in decision.get("details") or []:
        order = detail.get("orderId", detail.get("order_id"))
        courier = detail.get("courierId", detail.get("courier_id"))
        if order is not None and courier is not None:
            pairs.setdefault(str(order), str(courier))
    return pairs


def _accepted(city: str, revision: int, value: bytes) -> Accepted | None:
    """The decision in ``value``, or None when it is not one for ``city``."""
    try:
        decision = json.loads(value)
        if not isinstance(decision, dict) or decision.get("city", city) != city:
            return None
        return Accepted(city, revision, int(decision.get("token", 0)), _pairs(decision))
    except (ValueError, TypeError, AttributeError):
        return None


# ---------------------------------------------------------------------- etcd, by etcdctl


class _Etcdctl:
    """``etcdctl -w json`` against ``endpoints``."""

    def __init__(self, binary: str, endpoints: str, timeout: float) -> None:
        self.binary = binary
        self.endpoints = endpoints
        self.timeout = timeout
        self.env = {**os.environ, "ETCDCTL_API": "3"}

    def argv(self, *args: str) -> list[str]:
        return [self.binary, f"--endpoints={self.endpoints}",
                f"--command-timeout={max(1, round(self.timeout))}s", *args, "-w", "json"]

    def get(self, *args: str) -> dict[str, Any]:
        try:
            done = subprocess.run(self.argv("get", *args), capture_output=True, text=True,
                                  env=self.env, timeout=self.timeout + 5, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CheckError(f"etcdctl get {' '.join(args)}: {exc}") from exc
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["no message"])[-1]
            if "compacted" in message:
                raise _Compacted(message)
            raise CheckError(f"etcdctl get {' '.join(args)} at {self.endpoints}: {message}")
        try:
            answer: dict[str, Any] = json.loads(done.stdout)
        except ValueError as exc:
            raise CheckError(f"etcdctl printed no JSON: {done.stdout[:200]!r}") from exc
        return answer

    def watch(self, prefix: str, start: int, until: int, must_reach: int,
              deadline: float) -> Iterator[dict[str, Any]]:
        """The events under ``prefix`` from ``start`` through ``until``; once past
        ``must_reach`` (the newest live key), :data:`QUIET` seconds of silence end it."""
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(self.argv("watch", prefix, "--prefix", f"--rev={start}"),
                                stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env=self.env)
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, name="pgcheck etcdctl watch", daemon=True)
        reader.start()
        last = start - 1
        try:
            while last < until:
                reached = last >= must_reach
                wait = QUIET if reached else deadline - time.monotonic()
                try:
                    line = lines.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    if reached:
                        return
                    raise CheckError(f"the watch of {prefix} from revision {start} reached "
                                     f"only {last} of {must_reach} in time") from None
                if line is None:
                    stderr.seek(0)
                    message = stderr.read().decode(errors="replace").strip()
                    if "compacted" in message:
                        raise _Compacted(message)
                    raise CheckError(f"etcdctl watch ended at revision {last}: "
                                     f"{message or 'no message'}")
                try:
                    response = json.loads(line)
                except ValueError:
                    continue  # e.g. a progress notice
                if response.get("CompactRevision"):
                    compacted = int(response["CompactRevision"])
                    raise _Compacted(f"compacted up to {compacted}", compacted)
                for event in response.get("Events") or []:
                    revision = int(event["kv"].get("mod_revision", 0))
                    if revision > until:
                        return
                    last = revision
                    yield event
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            reader.join(5)
            stderr.close()


def _namespace(namespace: str) -> str:
    return "/" + namespace.strip("/")


def _key(kv: dict[str, Any]) -> tuple[str, bytes]:
    return base64.b64decode(kv["key"]).decode(errors="replace"), \
        base64.b64decode(kv.get("value", ""))


def read_history(etcd: str, namespace: str, *, etcdctl: str | None = None,
                 timeout: float = 60.0) -> History:
    """Every decision etcd still holds for ``namespace``: its values at the compaction
    point, then every put since, up to etcd's revision when this began."""
    prefix = _namespace(namespace) + "/decisions/"
    ctl = _Etcdctl(etcdctl or shutil.which("etcdctl") or "etcdctl", etcd, timeout)
    deadline = time.monotonic() + timeout
    for _ in range(3):
        try:
            return _replay(ctl, prefix, deadline)
        except _Compacted:
            continue  # compacted while being read: from the new compaction point
    raise CheckError(f"etcd compacted {prefix} three times while it was being read")


def _replay(ctl: _Etcdctl, prefix: str, deadline: float) -> History:
    newest = ctl.get(prefix, "--prefix", "--keys-only", "--sort-by=MODIFY",
                     "--order=DESCEND", "--limit=1")
    until = int(newest["header"]["revision"])
    kvs = newest.get("kvs") or []
    must_reach = int(kvs[0].get("mod_revision", 0)) if kvs else 0
    compacted, snapshot = 1, list[dict[str, Any]]()
    try:
        events = list(ctl.watch(prefix, 1, until, must_reach, deadline))
    except _Compacted as exc:  # etcd's answer says where its history begins
        if not exc.revision:
            raise
        compacted = exc.revision
        snapshot = ctl.get(prefix, "--prefix", f"--rev={compacted}").get("kvs") or []
        events = list(ctl.watch(prefix, compacted, until, must_reach, deadline))
    decisions: dict[tuple[int, str], Accepted] = {}
    floors: dict[str, int] = {}
    malformed = 0

    def take(kv: dict[str, Any]) -> str | None:
        nonlocal malformed
        key, value = _key(kv)
        city, revision = key[len(prefix):], int(kv.get("mod_revision", 0))
        accepted = _accepted(city, revision, value) if city and "/" not in city else None
        if accepted is None:
            malformed += 1
            return None
        decisions[(revision, city)] = accepted
        return city

    try:
        for kv in snapshot:  # each city's value at the compaction point
            city = take(kv)
            if city is not None:
                floors[city] = int(kv.get("mod_revision", 0))
        for event in events:
            if event.get("type", 0) == 0:  # a put (deletes say type 1)
                take(event["kv"])
    except (KeyError, ValueError, binascii.Error) as exc:
        raise CheckError(f"etcdctl printed something unexpected: {exc!r}") from exc
    return History(until, compacted, decisions, floors, malformed)


# ---------------------------------------------------------------------- PostgreSQL


def read_sink(url: str, namespace: str) -> SinkState:
    """The sink's cursor, held decisions and assignment rows, in one snapshot."""
    ns = _namespace(namespace)
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
                pairs = _pairs(decision) if isinstance(decision, dict) else {}
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


# ---------------------------------------------------------------------- entry points


def check(etcd: str, namespace: str, pg: str, *, etcdctl: str | None = None,
          timeout: float = 60.0) -> PgCheckResult:
    """Check the sink at ``pg`` against etcd at ``etcd`` (``host:port``, comma-separated);
    :class:`CheckError` when either cannot be read."""
    sink = read_sink(pg, namespace)  # first: etcd's history then covers all it holds
    history = read_history(etcd, namespace, etcdctl=etcdctl, timeout=timeout)
    return compare(history, sink, _namespace(namespace))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m devtools.pgcheck",
        description="Check a postgres sink against etcd's history of accepted decisions. "
                    "Exit status: 0 clean, 1 findings, 2 could not check.")
    p.add_argument("--etcd", required=True, metavar="HOST:PORT",
                   help="etcd endpoints, comma-separated")
    p.add_argument("--namespace", default="/dispatch", help="(default /dispatch)")
    p.add_argument("--pg", required=True, metavar="URL",
                   help="the sink's database, e.g. postgresql://dispatch@db:5432/dispatch")
    p.add_argument("--etcdctl", default=None, help="the etcdctl binary (default: on PATH)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="for reading etcd's history (default 60)")
    p.add_argument("--show", type=int, default=20, metavar="N",
                   help="findings to print (default 20)")
    args = p.parse_args(argv)
    try:
        result = check(args.etcd, args.namespace, args.pg, etcdctl=args.etcdctl,
                       timeout=args.timeout)
    except CheckError as exc:
        print(f"pgcheck: cannot check: {exc}", file=sys.stderr)
        return 2
    for finding in result.findings[:args.show]:
        print(f"FINDING {finding}")
    if len(result.findings) > args.show:
        print(f"... and {len(result.findings) - args.show} more")
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
