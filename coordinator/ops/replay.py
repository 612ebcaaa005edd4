"""Replay a past decision on the exact state it saw: is the answer the same, and what
would other solvers have said?

A decision's ``stateRef`` says how to get its input back: the revision of the
``<ns>/state/<city>`` key it read (``etcd``: etcd's history holds it until compaction),
the seed, tick and sizes (``simulated``: regenerated), or the id of the snapshot in the
state archive (a city with ``archiveState``, any source). The solver parameters are the
city's settings at the decision's revision, also from etcd's history. The source's own
way is tried first; the archive when that state is gone. A state that is gone both ways
is a :class:`~coordinator.errors.StateGone`, said in one line.

Solvers run in this process, loaded through the plugin loader like a worker's, with
the budget the tick gave its solver.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from coordinator.codec import assigned, decode
from coordinator.errors import (
    CitySettingsError,
    ConfigError,
    EtcdCompacted,
    PluginError,
    StateGone,
)
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.plugins import PluginLoader
from coordinator.settings import parse_settings
from coordinator.sinks.archive import StateArchive
from coordinator.sources import SourceContext
from protos import dispatch_pb2 as pb
from solvers.contract import CityState
from solvers.cost import solution_cost
from solvers.validate import InvalidSolution, check_solution

__all__ = ["Outcome", "Recorded", "Replay", "Replayer", "Walk", "differences",
           "past_decisions"]

#: the budget of a replayed decision whose ref does not say (the worker's 0.8 × period
#: of the default 2 s period)
DEFAULT_BUDGET = 1.6


@dataclass(frozen=True)
class Recorded:
    """A decision as etcd's history holds it, at the revision that wrote it."""

    revision: int
    decision: pb.Decision


def past_decisions(client: EtcdClient, key: str, *, revision: int = 0) -> Iterator[Recorded]:
    """The decisions written to ``key``, newest first, from the one current at
    ``revision`` (0: the latest). Raises ``EtcdCompacted`` when the walk reaches etcd's
    compaction point; a value that does not decode is skipped."""
    while True:
        kv = client.get(key, revision=revision)
        if kv is None:
            return
        decision: pb.Decision | None = None
        with contextlib.suppress(ValueError):
            decision = decode(pb.Decision, kv.value)
        if decision is not None:
            yield Recorded(kv.mod_revision, decision)
        if kv.version <= 1:
            return
        revision = kv.mod_revision - 1


@dataclass(frozen=True)
class Outcome:
    """One solver's answer on a replayed state (``error``: why there is none)."""

    solver: str
    assignments: dict[str, str] = field(default_factory=dict)
    unassigned: int = 0
    cost: float = float("nan")
    seconds: float = float("nan")
    error: str = ""

    @property
    def assigned(self) -> int:
        return len(self.assignments)

    def to_json(self) -> dict[str, Any]:
        return {"solver": self.solver, "cost": None if self.error else self.cost,
                "assigned": self.assigned, "unassigned": self.unassigned,
                "solveSeconds": None if self.error else self.seconds, "error": self.error}


def recorded_outcome(decision: pb.Decision) -> Outcome:
    """The decision's own figures, as an :class:`Outcome` (its solve time as measured
    by the worker)."""
    return Outcome(decision.solver, assigned(decision), len(decision.unassigned),
                   decision.cost, decision.solve_seconds)


def differences(decision: pb.Decision, state: CityState, replayed: Outcome) -> list[str]:
    """How ``replayed`` differs from the recorded ``decision``, one line per order (first
    whether the state's orders are the decision's at all); empty when identical."""
    recorded = assigned(decision)
    orders = set(state.order_ids.tolist())
    decided = set(recorded) | set(decision.unassigned)
    if orders != decided:
        return [f"the state read back is not the decision's: {len(orders - decided)} orders "
                f"only in the state, {len(decided - orders)} only in the decision"]
    if replayed.error:
        return [f"{replayed.solver} failed on the replay: {replayed.error}"]
    out = []
    for order in sorted(orders):
        before, after = recorded.get(order), replayed.assignments.get(order)
        if before != after:
            out.append(f"{order}: {before or 'unassigned'} recorded, "
                       f"{after or 'unassigned'} replayed")
    return out


@dataclass(frozen=True)
class Replay:
    """A decision replayed: its state, the decision's solver again (first) and any
    others; ``differences`` of the first from the decision (empty: identical)."""

    recorded: Recorded
    state: CityState
    outcomes: list[Outcome]
    differences: list[str]

    @property
    def identical(self) -> bool:
        return not self.differences


@dataclass
class Walk:
    """Ticks replayed over a stretch of history, oldest first."""

    ticks: list[tuple[Recorded, list[Outcome] | None]] = field(default_factory=list)
    #: the oldest decision left in etcd's history, when compaction stopped the walk
    #: there before ``since`` (0: compacted past every decision)
    compacted_at: int | None = None
    #: ticks whose state is gone, with the reason of the first
    gone: int = 0
    gone_reason: str = ""


class Replayer:
    """Reads decisions and their states back and runs solvers on them."""

    def __init__(self, client: EtcdClient, keys: Keys, *,
                 archive_url: str | None = None) -> None:
        self._client = client
        self._keys = keys
        self._plugins = PluginLoader(SourceContext(client, keys))
        self._archive_url = archive_url
        self._archive: StateArchive | None = None

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()

    # -- reading back -------------------------------------------------------------------

    def decision_at(self, city: str, revision: int) -> Recorded:
        """The decision of ``city`` current at ``revision`` (the one written at it, when
        ``revision`` is a decision's, as ``dispatchctl history`` lists them)."""
        try:
            kv = self._client.get(self._keys.decision(city), revision=revision)
        except EtcdCompacted as exc:
            raise StateGone(f"the decision of {city} at revision {revision} is gone: etcd "
                            "compacted that revision away (the audit sink keeps its "
                            "assignments: `dispatchctl audit`)") from exc
        if kv is None:
            raise ConfigError(f"no decision of {city} at revision {revision} "
                              "(see `dispatchctl history`)")
        try:
            return Recorded(kv.mod_revision, decode(pb.Decision, kv.value))
        except ValueError as exc:
            raise ConfigError(f"the decision of {city} at revision {kv.mod_revision} "
                              f"cannot be read: {exc}") from exc

    def state_of(self, city: str, recorded: Recorded) -> CityState:
        """The exact state ``recorded`` was decided on; ``StateGone`` if unreadable."""
        decision = recorded.decision
        if not decision.HasField("state_ref"):
            raise StateGone(f"the decision of {city} at revision {recorded.revision} records "
                            "no state reference (made by a worker without replay)")
        ref = decision.state_ref
        taken_at = decision.state_read_at.ToNanoseconds() / 1e9
        try:
            source = self._plugins.source(ref.source)
        except PluginError as exc:
            if not ref.archive_id:
                raise
            gone: StateGone | PluginError = exc
        else:
            try:
                state: CityState = source.reload(city, ref, taken_at)
                return state
            except StateGone as exc:
                if not ref.archive_id:
                    raise
                gone = exc
        if self._archive_url is None:
            raise StateGone(f"{gone}; it is archived as {ref.archive_id}: give the "
                            "archive's --archive-url (or DISPATCH_ARCHIVE_URL)")
        if self._archive is None:
            self._archive = StateArchive(self._archive_url, application_name="dispatchctl")
        return self._archive.fetch(city, ref.archive_id, taken_at)

    def settings_at(self, city: str, revision: int) -> tuple[dict[str, Any], float]:
        """The city's solver parameters and period as they were at ``revision``."""
        kv = self._client.get(self._keys.city(city), revision=revision)
        if kv is None:
            return {}, DEFAULT_BUDGET / 0.8
        try:
            config = parse_settings(city, kv.value)
        except CitySettingsError:
            return {}, DEFAULT_BUDGET / 0.8
        return dict(config.params), config.period

    # -- solving ------------------------------------------------------------------------

    def solve(self, name: str, state: CityState, params: dict[str, Any],
              budget: float) -> Outcome:
        """``name`` on ``state``, in this process; a failure is recorded, not raised."""
        try:
            solver = self._plugins.solver(name)
            started = time.perf_counter()
            solution = solver.solve(state, params, budget)
            seconds = time.perf_counter() - started
            check_solution(state, solution)
        except (PluginError, InvalidSolution) as exc:
            return Outcome(name, error=str(exc))
        except Exception as exc:  # the solver's own: reported beside the others
            return Outcome(name, error=f"raised {type(exc).__name__}: {exc}")
        orders: list[str] = state.order_ids[solution.orders].tolist()
        couriers: list[str] = state.courier_ids[solution.couriers].tolist()
        return Outcome(name, dict(zip(orders, couriers, strict=True)),
                       state.n_orders - len(orders), float(solution_cost(state, solution)),
                       seconds)

    def _outcomes(self, city: str, recorded: Recorded, state: CityState,
                  solvers: Sequence[str]) -> list[Outcome]:
        params, period = self.settings_at(city, recorded.revision)
        ref = recorded.decision.state_ref
        budget = ref.budget_seconds or 0.8 * period
        return [self.solve(name, state, params, budget) for name in solvers]

    def replay(self, city: str, revision: int, solvers: Sequence[str] = ()) -> Replay:
        """The decision at ``revision`` replayed with its own solver, then ``solvers``."""
        recorded = self.decision_at(city, revision)
        state = self.state_of(city, recorded)
        names = [recorded.decision.solver, *(s for s in solvers
                                             if s != recorded.decision.solver)]
        outcomes = self._outcomes(city, recorded, state, names)
        return Replay(recorded, state, outcomes,
                      differences(recorded.decision, state, outcomes[0]))

    def walk(self, city: str, since: datetime, solvers: Sequence[str], *, limit: int,
             progress: Callable[[int, int], None] | None = None) -> Walk:
        """Every decision of ``city`` decided at or after ``since`` (at most the newest
        ``limit``), each replayed with ``solvers``; oldest first."""
        found: list[Recorded] = []
        walk = Walk()
        try:
            for recorded in past_decisions(self._client, self._keys.decision(city)):
                if recorded.decision.decided_at.ToDatetime(tzinfo=since.tzinfo) < since \
                        or len(found) == limit:
                    break
                found.append(recorded)
        except EtcdCompacted:
            walk.compacted_at = found[-1].revision if found else 0
        found.reverse()
        for i, recorded in enumerate(found):
            try:
                state = self.state_of(city, recorded)
            except StateGone as exc:
                walk.gone += 1
                walk.gone_reason = walk.gone_reason or str(exc)
                walk.ticks.append((recorded, None))
            else:
                walk.ticks.append((recorded, self._outcomes(city, recorded, state, solvers)))
            if progress is not None:
                progress(i + 1, len(found))
        return walk


def identical_to(decision: pb.Decision, outcome: Outcome) -> bool:
    """Whether ``outcome`` gives exactly the decision's assignments (its solver's)."""
    return not outcome.error and outcome.assignments == assigned(decision)


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
