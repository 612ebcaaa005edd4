"""A consistent picture of a namespace, read in one transaction.

``dispatchctl status`` (and anything else that shows ownership: ``watch``, ``workers``,
``doctor``, the worker's admin server) reads cities, election candidates, decisions,
statuses and members in a single read-only transaction, so every figure in one view
comes from the same etcd revision, in one round trip however many cities there are
(``EtcdClient.read_prefixes``: one range per prefix at one revision where etcd 3.5's
NOSPACE alarm refuses even a read-only transaction).
How a view is shown is :mod:`coordinator.cli.render`'s business, not this module's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from coordinator.codec import decode
from coordinator.errors import CitySettingsError
from coordinator.etcd import EtcdClient, KeyValue
from coordinator.keys import Keys
from coordinator.settings import CityConfig, parse_settings
from protos import dispatch_pb2 as pb

__all__ = ["CityView", "Overview", "RelayView", "read_overview", "read_relays"]


@dataclass
class CityView:
    """One city as of the overview's revision: settings, election queue, last decision
    and the status its owner reported."""

    city: str
    solver: str = ""
    enabled: bool = True
    period: float = 0.0
    owner: str = ""
    token: int = 0
    standbys: list[str] = field(default_factory=list)
    decision_age: float | None = None
    decision_token: int = 0
    decision_worker: str = ""
    decision_revision: int = 0
    state: str = ""
    last_error: str = ""
    settings_error: str = ""

    def holds_key_of(self, worker_id: str) -> bool:
        """Whether ``worker_id`` has a key in the city's election, leading or queued."""
        return self.owner == worker_id or worker_id in self.standbys

    @property
    def late(self) -> bool:
        """Enabled, well-formed, and no decision within three periods."""
        return self.enabled and not self.settings_error and (
            self.decision_age is None or self.decision_age > 3 * max(self.period, 0.1)
        )

    def to_json(self) -> dict[str, Any]:
        """The view as ``dispatchctl status --json`` prints it."""
        out = asdict(self)
        out["candidatesQueued"] = len(self.standbys)
        return out


@dataclass
class Overview:
    """Every city (sorted by name), the live workers' records and the drain marks, all
    read at ``revision``."""

    revision: int
    cities: list[CityView]
    workers: dict[str, pb.WorkerInfo]
    drained: set[str]


def _stamp_seconds(stamp: Any) -> float:
    return float(stamp.ToNanoseconds()) / 1e9


def read_overview(client: EtcdClient, keys: Keys, *, now: float | None = None) -> Overview:
    """Read the namespace at one revision; ``now`` (Unix seconds) dates decisions' ages.

    The owner is the candidate key created first; a status counts only if it carries the
    owner's token, or nobody owns the city (an old owner's status is stale). An enabled
    city nobody holds that no live, undrained worker may take (for its required labels)
    is marked ``unowned``.
    """
    now = time.time() if now is None else now
    roots = [keys.cities, keys.elections, keys.decisions, keys.statuses, keys.workers,
             keys.drains]
    ranges, revision = client.read_prefixes(roots)
    cities_kv, election_kv, decision_kv, status_kv, worker_kv, drain_kv = ranges

    queues: dict[str, list[KeyValue]] = {}
    for kv in election_kv:
        parsed = keys.candidate(kv.key)
        if parsed is not None:
            queues.setdefault(parsed[0], []).append(kv)
    decisions = {Keys.tail(kv.key, keys.decisions): kv for kv in decision_kv}
    statuses = {Keys.tail(kv.key, keys.statuses): kv for kv in status_kv}
    drained = {Keys.tail(kv.key, keys.drains) for kv in drain_kv}
    workers = {}
    for kv in worker_kv:
        try:
            workers[Keys.tail(kv.key, keys.workers)] = decode(pb.WorkerInfo, kv.value)
        except ValueError:
            continue

    views = []
    for kv in cities_kv:
        city = Keys.tail(kv.key, keys.cities)
        view = CityView(city)
        config: CityConfig | None = None
        try:
            config = parse_settings(city, kv.value)
            view.solver, view.enabled, view.period = config.solver, config.enabled, config.period
        except CitySettingsError as exc:
            view.settings_error = str(exc)
        queue = sorted(queues.get(city, []), key=lambda k: k.create_revision)
        if queue:
            view.owner = queue[0].value.decode(errors="replace")
            view.token = queue[0].create_revision
            view.standbys = [k.value.decode(errors="replace") for k in queue[1:]]
        if city in decisions:
            try:
                decision = decode(pb.Decision, decisions[city].value)
                view.decision_age = max(0.0, now - _stamp_seconds(decision.decided_at))
                view.decision_token = decision.token
                view.decision_worker = decision.worker_id
                view.decision_revision = decisions[city].mod_revision
            except ValueError:
                view.last_error = "decision value is malformed"
        if city in statuses:
            try:
                status = decode(pb.CityStatus, statuses[city].value)
                if status.token == view.token or not view.token:
                    view.state, view.last_error = status.state, status.last_error
            except ValueError:
                pass
        if view.settings_error:
            view.state, view.last_error = "failing", view.settings_error
        elif config is not None and config.enabled and not view.owner and not any(
            name not in drained and all(info.labels.get(k) == v
                                        for k, v in config.require_labels.items())
            for name, info in workers.items()
        ):
            wanted = ", ".join(f"{k}={v}" for k, v in config.require_labels.items())
            view.state = "unowned"
            view.last_error = (f"no live, undrained worker carries {wanted}" if wanted
                               else "no live, undrained worker")
        views.append(view)
    return Overview(revision, sorted(views, key=lambda v: v.city), workers, drained)


@dataclass
class RelayView:
    """One relay of one sink, as its status key says, with ``active`` taken from the
    sink's relay election (its leader), not from the relay's own word."""

    sink: str
    relay_id: str
    active: bool
    cursor: int
    lag_revisions: int
    lag_seconds: float
    last_error: str
    updated_age: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_relays(client: EtcdClient, keys: Keys, *, now: float | None = None) -> list[RelayView]:
    """Every relay's status under ``<ns>/relays/`` (one range, one revision), sorted by
    sink then relay id; malformed values are skipped."""
    now = time.time() if now is None else now
    kvs, _ = client.get_prefix(keys.relays)
    leaders: dict[str, KeyValue] = {}
    statuses: list[pb.RelayStatus] = []
    for kv in kvs:
        sink, _sep, rest = Keys.tail(kv.key, keys.relays).partition("/")
        kind, _sep, _name = rest.partition("/")
        if kind == "election":
            if sink not in leaders or kv.create_revision < leaders[sink].create_revision:
                leaders[sink] = kv
        elif kind == "status":
            try:
                statuses.append(decode(pb.RelayStatus, kv.value))
            except ValueError:
                continue
    views = []
    for st in statuses:
        leader = leaders.get(st.sink)
        active = leader is not None and leader.value.decode(errors="replace") == st.relay_id
        views.append(RelayView(
            sink=st.sink, relay_id=st.relay_id, active=active, cursor=st.cursor,
            lag_revisions=st.lag_revisions, lag_seconds=st.lag_seconds,
            last_error=st.last_error,
            updated_age=(max(0.0, now - _stamp_seconds(st.updated_at))
                         if st.HasField("updated_at") else None)))
    return sorted(views, key=lambda v: (v.sink, v.relay_id))
