"""Many elections on one session, with one watch stream for all of them.

A worker may stand for hundreds of cities. Go's ``Campaign`` blocks a goroutine and
opens a watch per candidate; here one ``PrefixWatch`` on ``<ns>/election/`` keeps a
local view of every candidate key, and each change re-evaluates only the cities it
touched. The view decides *when* to look; leadership itself is only claimed after a
read from etcd confirms that our key, with the create revision we got, is the oldest
under the city's prefix (the view may lag, and a lease may have died meanwhile).

Leadership is lost — and reported at once — when the watch shows our key deleted, when
a fenced write is rejected, or when the session dies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from coordinator.errors import DispatchError
from coordinator.etcd import EtcdClient, KeyValue, WatchBatch
from coordinator.keys import Keys
from coordinator.recipes.election import Election, LeaderKey
from coordinator.recipes.session import Session
from coordinator.recipes.watch import PrefixWatch

__all__ = ["Campaigns", "Candidate"]

log = logging.getLogger(__name__)

#: claims confirmed at once (each is I/O: a read of the queue, then the city's start);
#: eight did no better than two at a leave (docs/operations.md, *Health checks*)
CLAIM_THREADS = 2


@dataclass
class Candidate:
    city: str
    election: Election
    revision: int
    leader: LeaderKey | None = None


class Campaigns:
    def __init__(self, client: EtcdClient, keys: Keys, value: str, *,
                 on_change: Callable[[set[str]], None],
                 on_lost: Callable[[str, LeaderKey, str], None],
                 on_elected: Callable[[str, LeaderKey], None] | None = None) -> None:
        self._on_elected = on_elected
        # Claims triggered by the watch run here, not on the watch thread (a claim is a
        # round trip) and not in the worker's control loop, which may be busy handing
        # other cities over: a standby whose predecessor resigned must lead at once.
        self._claims = ThreadPoolExecutor(max_workers=CLAIM_THREADS,
                                          thread_name_prefix="claim")
        self._client = client
        self._keys = keys
        self._value = value
        self._on_change = on_change
        self._on_lost = on_lost
        self._lock = threading.RLock()
        # city -> candidate key -> KeyValue, for every candidate of every city
        self._view: dict[str, dict[str, KeyValue]] = {}
        self._mine: dict[str, Candidate] = {}
        self._session: Session | None = None
        self._watch = PrefixWatch(client, keys.elections, on_snapshot=self._snapshot,
                                  on_events=self._events, name="watch elections")

    def start(self) -> Campaigns:
        self._watch.start()
        return self

    def stop(self) -> None:
        self._watch.stop()
        self._claims.shutdown(wait=False, cancel_futures=True)

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._watch.synced.wait(timeout)

    # -- what the worker asks -----------------------------------------------------------

    def bind(self, session: Session) -> None:
        """Use a new session; candidacies of the old one are forgotten (their keys die
        with its lease)."""
        with self._lock:
            self._session = session
            self._mine.clear()

    def entered(self) -> set[str]:
        with self._lock:
            return set(self._mine)

    def leaders(self) -> dict[str, LeaderKey]:
        with self._lock:
            return {c: cand.leader for c, cand in self._mine.items() if cand.leader}

    def leader(self, city: str) -> LeaderKey | None:
        with self._lock:
            candidate = self._mine.get(city)
            return candidate.leader if candidate else None

    def queue(self, city: str) -> list[KeyValue]:
        """Candidates of ``city`` in election order, as the watch last saw them."""
        with self._lock:
            return sorted(self._view.get(city, {}).values(), key=lambda kv: kv.create_revision)

    def owners(self) -> dict[str, str]:
        """City -> the worker id of its leader (the first candidate), every city."""
        with self._lock:
            return {city: min(kvs.values(), key=lambda kv: kv.create_revision)
                    .value.decode(errors="replace")
                    for city, kvs in self._view.items() if kvs}

    def standing(self, city: str) -> tuple[int, list[KeyValue]] | None:
        """Our place in the city's queue (0 = leader) and the queue, read together;
        ``None`` if we are not a candidate, or the view does not show our key yet."""
        with self._lock:
            candidate = self._mine.get(city)
            if candidate is None:
                return None
            queue = self.queue(city)
            ours = next((i for i, kv in enumerate(queue) if kv.key == candidate.election.key),
                        None)
            return None if ours is None else (ours, queue)

    def enter(self, city: str) -> None:
        """Stand for ``city`` (one create-if-absent transaction)."""
        with self._lock:
            session = self._session
            if session is None or city in self._mine:
                return
        election = Election(self._client, session, self._keys.election(city))
        revision = election.enter(self._value)
        with self._lock:
            if self._session is not session:
                return
            self._mine[city] = Candidate(city, election, revision)
            self._view.setdefault(city, {})[election.key] = KeyValue(
                election.key, self._value.encode(), revision, revision, 1, session.lease_id
            )
        self.evaluate(city)

    def leave(self, city: str) -> None:
        """Stop standing for ``city``: delete our candidate key, which resigns the city
        if we lead it and gives up our place in its queue if we do not."""
        with self._lock:
            candidate = self._mine.pop(city, None)
        if candidate is None:
            return
        if candidate.leader is not None:
            log.info("resigning %s (token %d)", city, candidate.leader.token)
        candidate.election.withdraw()

    def evaluate(self, city: str) -> LeaderKey | None:
        """Claim leadership of ``city`` if the view says we lead and etcd confirms it."""
        with self._lock:
            candidate = self._mine.get(city)
            if candidate is None or candidate.leader is not None:
                return candidate.leader if candidate else None
            queue = self.queue(city)
            if not queue or queue[0].key != candidate.election.key:
                return None
        leader = candidate.election.confirm(candidate.revision)
        if leader is None:
            return None
        with self._lock:
            if self._mine.get(city) is not candidate or candidate.leader is not None:
                return candidate.leader if self._mine.get(city) is candidate else None
            candidate.leader = leader
        log.info("elected for %s with token %d", city, leader.token)
        if self._on_elected is not None:
            self._on_elected(city, leader)
        return leader

    def drop(self, city: str, reason: str) -> None:
        """Forget leadership of ``city`` at once (fenced out, key gone)."""
        with self._lock:
            candidate = self._mine.pop(city, None)
        if candidate is not None and candidate.leader is not None:
            self._on_lost(city, candidate.leader, reason)

    # -- the watch ----------------------------------------------------------------------

    def _snapshot(self, kvs: list[KeyValue], revision: int) -> None:
        view: dict[str, dict[str, KeyValue]] = {}
        for kv in kvs:
            parsed = self._keys.candidate(kv.key)
            if parsed is not None:
                view.setdefault(parsed[0], {})[kv.key] = kv
        with self._lock:
            for city, candidate in self._mine.items():
                # entered after the read, which cannot show it yet (the watch will)
                ours = self._view.get(city, {}).get(candidate.election.key)
                if candidate.revision > revision and ours is not None:
                    view.setdefault(city, {})[ours.key] = ours
            cities = set(view) | set(self._view)
            self._view = view
        self._check_lost(cities)
        self._on_change(cities)

    def _events(self, batch: WatchBatch) -> None:
        cities = set()
        with self._lock:
            for event in batch.events:
                parsed = self._keys.candidate(event.kv.key)
                if parsed is None:
                    continue
                city = parsed[0]
                cities.add(city)
                held = self._view.get(city, {}).get(event.kv.key)
                if held is not None and held.mod_revision > event.kv.mod_revision:
                    # older than what we hold: our own key, re-entered (same lease, same
                    # key) before the watch brought its deletion; applied, it would
                    # look like our new candidacy was deleted
                    continue
                if event.kind == "delete":
                    self._view.get(city, {}).pop(event.kv.key, None)
                else:
                    self._view.setdefault(city, {})[event.kv.key] = event.kv
        self._check_lost(cities)
        self._claim_first(cities)
        self._on_change(cities)

    def _claim_first(self, cities: set[str]) -> None:
        """Confirm at once the cities where the watch shows our candidate first."""
        with self._lock:
            ready = [
                city for city in cities
                if (candidate := self._mine.get(city)) is not None and candidate.leader is None
                and (queue := self.queue(city)) and queue[0].key == candidate.election.key
            ]
        for city in ready:
            try:
                self._claims.submit(self._claim, city)
            except RuntimeError:
                return  # shutting down

    def _claim(self, city: str) -> None:
        try:
            self.evaluate(city)
        except DispatchError as exc:
            log.debug("claiming %s failed (the control loop will retry): %s", city, exc)

    def _check_lost(self, cities: set[str]) -> None:
        lost = []
        with self._lock:
            for city in cities:
                candidate = self._mine.get(city)
                if candidate is None:
                    continue
                kv = self._view.get(city, {}).get(candidate.election.key)
                if kv is None or kv.create_revision != candidate.revision:
                    lost.append(city)
        for city in lost:
            self.drop(city, "our candidate key was deleted")
            with self._lock:
                self._mine.pop(city, None)
