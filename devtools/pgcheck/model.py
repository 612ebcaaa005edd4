"""What the check compares — etcd's accepted decisions, the sink's rows — and the
comparison itself, which gives every finding (see the package's docstring for the rules)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


class CheckError(RuntimeError):
    """The check could not run: etcd or PostgreSQL could not be read (not a finding)."""


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


def pairs_of(decision: dict[str, Any]) -> dict[str, str]:
    """A decision's order -> courier pairs, from its canonical JSON."""
    pairs = {str(o): str(c) for o, c in (decision.get("assignments") or {}).items()}
    for detail in decision.get("details") or []:
        order = detail.get("orderId", detail.get("order_id"))
        courier = detail.get("courierId", detail.get("courier_id"))
        if order is not None and courier is not None:
            pairs.setdefault(str(order), str(courier))
    return pairs


def decision_of(city: str, revision: int, value: bytes) -> Accepted | None:
    """The decision in ``value``, or None when it is not one for ``city``."""
    try:
        decision = json.loads(value)
        if not isinstance(decision, dict) or decision.get("city", city) != city:
            return None
        return Accepted(city, revision, int(decision.get("token", 0)), pairs_of(decision))
    except (ValueError, TypeError, AttributeError):
        return None
