"""Which cities this worker stands for, leads and ticks: plan, reconcile, hand over.

The control loop reconciles (:meth:`Ownership.reconcile`): it ranks the workers for
every city (``coordinator.balancer``; by measured cost, ``coordinator.placement``),
stands in the elections of the cities planned here, leaves the others, and hands a city
over gracefully once its planned owner is queued behind us, within the churn budget
(``churn``). Ticking follows leadership: a city is ticked from the moment it is
won (:meth:`Ownership.elected`) until it is lost, left or handed over.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Mapping

from coordinator.balancer import CityNeeds, Member, Plan, plan, rank
from coordinator.errors import DispatchError, EtcdError
from coordinator.logs import CityLog
from coordinator.plan_inputs import city_costs, city_needs
from coordinator.recipes.campaigns import Campaigns
from coordinator.recipes.election import LeaderKey
from coordinator.recipes.loads import Loads, merge_costs
from coordinator.recipes.membership import Members
from coordinator.recipes.registry import CityRegistry
from coordinator.recipes.store import DecisionStore
from coordinator.settings import CityConfig
from coordinator.worker.churn import ChurnBudget
from coordinator.worker.config import WorkerConfig
from coordinator.worker.health import HealthBook
from coordinator.worker.load import LoadMeter
from coordinator.worker.ticker import Ticker
from protos import dispatch_pb2 as pb

#: a tolerance no wobble of the costs leaves: the plan that keeps every current owner
HOLD = 1e9

__all__ = ["Ownership", "period_of"]

log = logging.getLogger("coordinator.worker")

#: the period of a city whose settings are unreadable or gone
FALLBACK_PERIOD = 2.0


def period_of(registry: CityRegistry, city: str) -> float:
    """How often ``city`` ticks, by its settings."""
    entry = registry.get(city)
    return entry.period if isinstance(entry, CityConfig) else FALLBACK_PERIOD


class Ownership:
    """Keeps this worker's elections and ticks in line with the ownership plan."""

    def __init__(self, *, config: WorkerConfig, registry: CityRegistry,
                 campaigns: Campaigns, members: Members, ticker: Ticker,
                 store: DecisionStore, healths: HealthBook, stopping: threading.Event,
                 dirty: threading.Event, loads: Loads | None = None,
                 meter: LoadMeter | None = None,
                 lease_alive: Callable[[str], bool] | None = None) -> None:
        self._config = config
        self._registry = registry
        self._campaigns = campaigns
        self._members = members
        self._ticker = ticker
        self._store = store
        self._healths = healths
        self._stopping = stopping
        self._dirty = dirty
        self._loads = loads
        self._meter = meter or LoadMeter()
        #: whether a lease (hex) is still granted: tells a failover from a handover;
        #: the leases found gone (they never come back: a failover of a whole worker
        #: asks once, not once per city)
        self._lease_alive = lease_alive or (lambda _lease: True)
        self._leases_gone: set[str] = set()
        self.churn = ChurnBudget(config.moves_per_minute, config.move_cooldown,
                                 forming=4 * config.lease_ttl)
        #: the latest plan reconciled to
        self.plan = Plan({}, [])
        self._plan_inputs: tuple[object, ...] | None = None
        #: the rendezvous ranking, and the (needs, members) it was made for
        self._ranked_for: tuple[object, ...] | None = None
        self._ranking = rank({}, [])
        #: placing by cost: the balanced plan and the one keeping every current owner,
        #: for the inputs above; whether the balanced one would move a city that has an
        #: eligible owner (a wobble, which waits) or one that has none (at once); since
        #: when it would; the members they were made for
        self._balanced = self._holding = self.plan
        self._moves = self._orphaned = False
        self._unbalanced_since: float | None = None
        self._passed_at: float | None = None  # since when the balanced plan moves nothing
        self._planned_members: list[Member] | None = None
        #: costs measured somewhere in the fleet, as last planned on
        self._measured: dict[str, float] = {}
        #: city -> why its planned move away from here waits
        self.held_back: dict[str, str] = {}
        #: seconds of imbalance so far, while the rebalance delay holds the plan
        self._delayed: float | None = None
        self._session_started = time.monotonic()
        #: city -> when we last stepped back in its queue (``_may_step_back``)
        self._stepped_back: dict[str, float] = {}

    def new_session(self) -> None:
        """A new lease: cities taken in its first moments are the fleet forming."""
        self._session_started = time.monotonic()
        self.churn.forget()

    # -- leadership as it comes and goes (the campaigns' callbacks) --------------------

    def elected(self, city: str, _leader: LeaderKey) -> None:
        """Start ticking a city the moment we win it (see ``Campaigns._claim_first``);
        while stopping, resign it at once for the next in line rather than hold it,
        unticked, until our lease goes (a missed tick at a leave: docs/operations.md)."""
        if self._stopping.is_set():
            log.info("stopping: resigning %s, won meanwhile, at once", city)
            self._resign(city)
            return
        if city in self._ticker.cities():
            return
        self._start_ticking(city)

    def lost(self, city: str, leader: LeaderKey, reason: str) -> None:
        """Stop acting for ``city`` at once."""
        self._ticker.remove(city)
        CityLog(log, city, leader.token).warning("stepping down from %s: %s", city, reason)
        self._dirty.set()

    def drop_all(self, reason: str) -> None:
        """Stop acting for every city led (the lease is gone)."""
        for city in list(self._campaigns.leaders()):
            self._campaigns.drop(city, reason)

    # -- reconciling --------------------------------------------------------------------

    def reconcile(self, *, registered: bool) -> None:
        """Stand for, lead and tick what the plan says (``registered``: our membership
        key is written, so the plan counts us even before the watch shows it)."""
        self.plan = self._make_plan(registered)
        me = self._config.worker_id
        enabled = self._registry.enabled()
        wanted = self.plan.wanted_by(me)
        leaders = self._campaigns.leaders()
        handover = []
        held_back = {}
        # the costliest first: what the budget allows should fix the most imbalance
        for city in sorted(leaders, key=lambda c: (-self.plan.costs.get(c, 0.0), c)):
            planned = self.plan.owner(city)
            if city not in enabled:
                continue  # disabled or removed: leave below
            if planned != me and planned is not None and self._next(city, planned):
                why = self._hold_back(city)
                if why is None:
                    # Graceful handover: the planned owner is queued, so resigning after
                    # the tick in flight hands the city over with no gap.
                    log.info("handing %s over to %s", city, planned)
                    handover.append(city)
                    continue
                held_back[city] = why
            wanted.add(city)  # keep leading until someone can take over
        for city in sorted(held_back.keys() - self.held_back.keys()):  # once, not per loop
            log.info("moving %s to %s waits: %s", city, self.plan.owner(city), held_back[city])
        self.held_back = held_back
        entered = self._campaigns.entered()
        self.hand_over(handover)
        self._leave(sorted(entered - wanted - set(handover)))
        for city in sorted(wanted - entered):
            self._campaigns.enter(city)
        for city in sorted(wanted & entered):
            if self._behind_owner(city, leaders) and self._may_step_back(city):
                # a standby queued before the planned owner would win the handover
                # instead of it, and the city would have to move again: step back
                log.info("stepping back in %s's queue: %s, planned for it, is behind us",
                         city, self.plan.owner(city))
                self._campaigns.leave(city)
                self._campaigns.enter(city)
            self._campaigns.evaluate(city)
        # ticking first: a city won in between (``elected``) must not look stale
        ticking = self._ticker.cities()
        leaders = self._campaigns.leaders()
        for city in ticking - set(leaders):
            self._ticker.remove(city)
        for city in sorted(set(leaders) - self._ticker.cities()):
            self._start_ticking(city)
        for city in set(leaders) & ticking:
            self._ticker.set_period(city, period_of(self._registry, city))

    def _hold_back(self, city: str) -> str | None:
        """Why a planned move of ``city`` away from here must wait (``None``: it may go
        now, and is counted). A drained worker empties out outside the budget: an
        operator asked for exactly these moves. Placing by count has no budget (the
        behaviour before placement by cost, kept to compare the two)."""
        if self._config.placement == "count" or \
                self._config.worker_id in self._members.drained():
            return None
        fleet = sum(1 for m in self._members.members() if not m.drained)
        return self.churn.take(city, fleet, to=self.plan.owner(city))

    def _costs(self, needs: dict[str, CityNeeds]) -> tuple[dict[str, float], dict[str, str]]:
        """Each planned city's cost (measured, else the prior from its settings) and its
        current owner."""
        owners = {c: w for c, w in self._campaigns.owners().items() if c in needs}
        measured = merge_costs(self._loads.by_worker().values(), owners) \
            if self._loads is not None else {}
        self._measured = measured
        return city_costs(self._registry.entries(), needs, measured), owners

    def _make_plan(self, registered: bool) -> Plan:
        needs = city_needs(self._registry.entries())
        members = self._members.members()
        me = self._config.worker_id
        if registered and not any(m.worker_id == me for m in members):
            # our own membership key may not have come back through the watch yet
            members.append(Member(me, self._config.capacity, self._config.labels,
                                  me in self._members.drained()))
        members.sort(key=lambda m: m.worker_id)
        # The control loop runs every half second; with a thousand cities the rendezvous
        # ranking is most of a plan's cost, and its inputs (needs and members) rarely
        # change. Costs change whenever a worker publishes its load, and every worker
        # then plans at once: ranked afresh each time, that was tens of milliseconds of
        # GIL in every worker together, and their ticks started late (docs/worker.md).
        if (needs, members) != self._ranked_for:
            self._ranked_for = (needs, members)
            self._ranking = rank(needs, members)
        ranking = self._ranking
        if self._config.placement == "count":
            inputs: tuple[object, ...] = (needs, members, self._config.standbys)
            if inputs != self._plan_inputs:
                self._plan_inputs = inputs
                return plan(needs, members, standbys=self._config.standbys, ranking=ranking)
            return self.plan
        costs, owners = self._costs(needs)
        inputs = (needs, members, self._config.standbys, costs, owners)
        if inputs != self._plan_inputs:
            self._plan_inputs = inputs
            self._balanced = plan(needs, members, standbys=self._config.standbys,
                                  costs=costs, current=owners,
                                  tolerance=self._config.tolerance, ranking=ranking)
            self._holding = plan(needs, members, standbys=self._config.standbys,
                                 costs=costs, current=owners, tolerance=HOLD,
                                 ranking=ranking)
            self._moves = any(self._balanced.owner(c) != self._holding.owner(c)
                              for c in self._holding.ranking)
            self._orphaned = any(self._holding.owner(c) != owners.get(c)
                                 for c in self._holding.ranking)
        return self._settled(members)

    def _settled(self, members: list[Member]) -> Plan:
        """The balanced plan, once the imbalance it corrects has lasted the rebalance
        delay (dips under half the delay long included); until then the plan that keeps
        every city where it is. Only a wobble of the costs waits: a city with no
        eligible owner (a worker gone or drained, a new city) or a change of members is
        planned at once."""
        now = time.monotonic()
        if members != self._planned_members:  # rebalance now, and until balanced
            self._planned_members = members
            self._unbalanced_since = -math.inf
        self._delayed = None
        if not self._moves:
            # A worker hovering at its bound dips under it now and then: a dip shorter
            # than half the delay does not restart the clock, or a lasting imbalance
            # that flickers would never be corrected.
            if self._passed_at is None:
                self._passed_at = now
            if self._unbalanced_since == -math.inf or \
                    now - self._passed_at >= self._config.rebalance_delay / 2:
                self._unbalanced_since = None  # (a change of members: once balanced)
            return self._balanced
        self._passed_at = None
        if self._orphaned:
            return self._balanced
        if self._unbalanced_since is None:
            self._unbalanced_since = now
            log.info("placement out of balance (%s): rebalancing in %.0fs unless it passes",
                     _busiest(self._holding), self._config.rebalance_delay)
        if now - self._unbalanced_since >= self._config.rebalance_delay:
            return self._balanced
        self._delayed = now - self._unbalanced_since
        return self._holding

    def waiting(self) -> dict[str, str]:
        """City -> why a move of it away from here, which the balanced plan wants, waits:
        what ``held_back`` holds, and the moves the rebalance delay holds back."""
        waiting = dict(self.held_back)
        delayed, me = self._delayed, self._config.worker_id
        if delayed is None or self.plan is not self._holding:
            return waiting
        for city in self._campaigns.leaders():
            if city not in waiting and self._balanced.owner(city) not in (me, None):
                waiting[city] = f"rebalance delay: out of balance for {delayed:.0f}s " \
                                f"(--rebalance-delay {self._config.rebalance_delay:g}s)"
        return waiting

    def _next(self, city: str, worker_id: str) -> bool:
        """Whether ``worker_id`` is next in line for ``city``: whom resigning hands it to."""
        queue = self._campaigns.queue(city)
        return len(queue) > 1 and queue[1].value.decode(errors="replace") == worker_id

    def _behind_owner(self, city: str, leaders: Mapping[str, LeaderKey]) -> bool:
        """Whether we stand for ``city`` only as its standby, yet queue before the worker
        the plan gives it to (who does not lead it yet). Our place is our own key's: a
        key of our worker id left by an earlier session is not us."""
        planned, me = self.plan.owner(city), self._config.worker_id
        if city in leaders or planned is None or planned == me:
            return False
        standing = self._campaigns.standing(city)
        if standing is None:
            return False
        ours, queue = standing
        order = [kv.value.decode(errors="replace") for kv in queue]
        return ours > 0 and planned in order[ours + 1:] and planned not in order[:ours]

    def _may_step_back(self, city: str) -> bool:
        """At most one step back per city per ``--move-cooldown``. Were two standbys'
        plans to disagree on a city's owner, each would step back behind the other, and
        each step back wakes the other's control loop at once: a loop of election writes
        as fast as etcd answers (docs/operations.md)."""
        now = time.monotonic()
        if now - self._stepped_back.get(city, -math.inf) < self._config.move_cooldown:
            return False
        self._stepped_back[city] = now
        return True

    # -- letting go ---------------------------------------------------------------------

    def hand_over(self, cities: list[str]) -> None:
        """Resign ``cities`` so that whoever is queued next keeps their rhythm.

        A city whose next tick is due soon ticks once more first (``Ticker.retire``):
        its successor ticks one period after our last decision, and needs that time to
        see the resignation and claim the city. Each city is resigned as soon as it is
        done here, the ones not due soon at once.
        """
        retiring: list[tuple[float, str, threading.Event]] = []
        for city in cities:
            period = period_of(self._registry, city)
            retired = self._ticker.retire(city, within=min(period / 2, max(0.2, period / 4)))
            if retired is not None:
                done, due = retired
                retiring.append((due, city, done))
            else:
                self._resign(city)
        for _due, city, done in sorted(retiring, key=lambda r: r[0]):
            if not done.wait(period_of(self._registry, city) + 1.0):
                log.warning("tick of %s still running at handover", city)
            self._resign(city)

    def _leave(self, cities: list[str]) -> None:
        """Stop ticking, let ticks in flight finish, then leave the election."""
        idles = [(city, self._ticker.remove(city)) for city in cities]
        for city, idle in idles:
            if idle is not None:
                idle.wait(period_of(self._registry, city) + 1.0)
            self._campaigns.leave(city)

    def _resign(self, city: str) -> None:
        try:
            self._campaigns.leave(city)
        except DispatchError as exc:
            log.warning("could not resign %s: %s", city, exc)

    # -- ticking ------------------------------------------------------------------------

    def _start_ticking(self, city: str) -> None:
        """Keep the city's rhythm across a handover: tick one period after the last
        decision (at once when it is older, as after a crash). A city that never
        decided ticks at once, then at a phase of its own (from its name): cities
        created together must not tick in lockstep, a burst per period on every worker.
        """
        period = period_of(self._registry, city)
        try:
            latest = self._store.latest(city)
        except (EtcdError, ValueError):
            latest = None
        measured = self._measured.get(city)
        if measured is not None:
            self._meter.seed(city, measured)
        if latest is None:
            if time.monotonic() - self._session_started < 2 * self._config.lease_ttl:
                self.churn.formed(city)  # nobody was there yet: the fleet forming
            phase = zlib.crc32(city.encode()) / 2**32 * period
            self._ticker.add(city, period, then_at_phase=phase)
            return
        previous = latest[0]
        # A move until etcd says the writer's lease is gone: that round trip comes after
        # the city ticks, not before (a handover's successor has a period to tick in,
        # and the survivor of a failover hands hundreds back at once).
        self.churn.arrived(city)
        self._ticker.add(city, period, first_in=self._first_tick_in(city, previous))
        if self._failed_over(city, previous):
            if previous.worker_id and previous.worker_id != self._config.worker_id:
                self.churn.failed_over(city, previous.worker_id)
            else:
                self.churn.formed(city)

    def _failed_over(self, city: str, previous: pb.Decision) -> bool:
        """Whether ``city`` came to us because the lease of its last writer is gone (its
        owner crashed, was cut off, or lost its lease while etcd stalled), not by a
        handover. Such a city was placed by the failure, not by the plan, so it is owed
        back to its writer free of the budget (``ChurnBudget.failed_over``): the survivor
        of a lease loss of most of the fleet would otherwise give the cities back a few a
        minute, overloaded meanwhile. A decision's age cannot tell: a slow solve leaves a
        live owner's last decision old, and a city given back to its previous owner finds
        its own. When etcd cannot say, a move (the cool-down holds it)."""
        lease = previous.lease_id
        if not lease:
            return False  # written before decisions named their writer's lease
        if lease in self._leases_gone:
            return True
        try:
            if self._lease_alive(lease):
                return False
        except (EtcdError, ValueError) as exc:
            log.debug("could not tell whether %s failed over: %s", city, exc)
            return False
        self._leases_gone.add(lease)
        return True

    def _first_tick_in(self, city: str, latest: pb.Decision) -> float:
        decided = latest.decided_at.ToNanoseconds() / 1e9
        self._healths.of(city).took_over(decided)
        period = period_of(self._registry, city)
        return float(max(0.0, min(decided + period - time.time(), period)))


def _busiest(held: Plan) -> str:
    """The worker furthest over its share in ``held`` (the plan keeping every owner), for
    the log: which worker's imbalance a rebalance waits on, and by how much."""
    ratios = {w: held.loads.get(w, 0.0) / share for w, share in held.shares.items() if share}
    if not ratios:
        return "a city to place"
    worker = max(ratios, key=lambda w: (ratios[w], w))
    return f"{worker} at {ratios[worker]:.2f} x its share"
