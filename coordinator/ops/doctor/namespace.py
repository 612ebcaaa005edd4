"""Checks of a namespace: its workers, its cities and keys left over.

:func:`read_namespace` reads the overview and the key list once; each check turns that
picture into its own findings, so ``check_namespace`` is their sum in a fixed order.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from coordinator.balancer import CityNeeds, Member, plan
from coordinator.errors import CitySettingsError
from coordinator.etcd import EtcdClient, KeyValue
from coordinator.keys import Keys
from coordinator.ops.doctor.findings import MAX_NAMES, Finding, Level, names
from coordinator.ops.overview import CityView, Overview, read_overview
from coordinator.settings import parse_settings

__all__ = [
    "NamespaceView",
    "check_cities_fine",
    "check_city_settings",
    "check_failing_cities",
    "check_late_cities",
    "check_leftover_cities",
    "check_malformed_workers",
    "check_namespace",
    "check_no_city",
    "check_serving_workers",
    "check_stale_drains",
    "check_standbys",
    "check_unknown_keys",
    "check_unowned_cities",
    "read_namespace",
]

_ROOTS = ("cities", "workers", "election", "decisions", "status", "state", "drain", "load")


@dataclass(frozen=True)
class NamespaceView:
    """An overview of the namespace and every key under it (keys only)."""

    client: EtcdClient
    keys: Keys
    overview: Overview
    kvs: list[KeyValue]

    @property
    def live(self) -> set[str]:
        return set(self.overview.workers)

    @property
    def serving(self) -> set[str]:
        return self.live - self.overview.drained

    @property
    def enabled(self) -> list[CityView]:
        """Enabled cities whose settings are readable."""
        return [v for v in self.overview.cities if v.enabled and not v.settings_error]

    def unowned(self) -> list[str]:
        return [v.city for v in self.enabled if not v.owner]

    def late(self) -> list[CityView]:
        return [v for v in self.enabled if v.owner and v.late and v.state != "failing"]

    def failing(self) -> list[CityView]:
        return [v for v in self.enabled if v.state == "failing"]


def read_namespace(client: EtcdClient, keys: Keys, *, overview: Overview | None = None,
                   now: float | None = None) -> NamespaceView:
    now = time.time() if now is None else now
    ov = overview if overview is not None else read_overview(client, keys, now=now)
    kvs, _ = client.get_prefix(keys.namespace + "/", keys_only=True)
    return NamespaceView(client, keys, ov, kvs)


# -- workers ------------------------------------------------------------------------------


def check_serving_workers(ns: NamespaceView) -> list[Finding]:
    """Some live worker is not drained (fail when an enabled city needs one)."""
    level: Level = "fail" if ns.enabled else "warn"
    if not ns.live:
        return [Finding(level, "workers", f"no live worker under {ns.keys.workers}")]
    if not ns.serving:
        return [Finding(level, "workers",
                        f"all {len(ns.live)} live workers are drained: nobody takes a city "
                        "(`dispatchctl undrain WORKER`)")]
    drained = sorted(ns.live & ns.overview.drained)
    extra = f", {len(drained)} drained ({names(drained)})" if drained else ""
    return [Finding("ok", "workers", f"{len(ns.live)} live{extra}")]


def check_stale_drains(ns: NamespaceView) -> list[Finding]:
    """No drain mark for a worker that is not running."""
    stale = sorted(ns.overview.drained - ns.live)
    if not stale:
        return []
    return [Finding("warn", "workers",
                    f"drain marks for workers that are not running: {names(stale)} "
                    "(they apply when such a worker starts; `dispatchctl undrain` "
                    "removes them)")]


def check_malformed_workers(ns: NamespaceView) -> list[Finding]:
    """Every membership value decodes (the overview skips those that do not)."""
    workers = ns.keys.workers
    malformed = sorted(
        Keys.tail(kv.key, workers) for kv in ns.kvs
        if kv.key.startswith(workers) and Keys.tail(kv.key, workers) not in ns.live
    )
    if not malformed:
        return []
    return [Finding("warn", "workers",
                    f"membership values that are not WorkerInfo JSON: {names(malformed)}")]


# -- cities -------------------------------------------------------------------------------


def check_no_city(ns: NamespaceView) -> list[Finding]:
    if ns.overview.cities:
        return []
    return [Finding("warn", "cities", f"no city under {ns.keys.cities}")]


def check_city_settings(ns: NamespaceView) -> list[Finding]:
    """Every city's settings are readable."""
    return [Finding("fail", "cities", f"{v.city}: {v.settings_error}")
            for v in ns.overview.cities if v.settings_error]


def check_unowned_cities(ns: NamespaceView) -> list[Finding]:
    """Every enabled city has an owner; if not, whether any worker may own it."""
    unowned = ns.unowned()
    if not unowned:
        return []
    return [Finding("fail", "cities", f"{len(unowned)} enabled cities have no owner: "
                                      f"{names(unowned)}" + _why_unowned(ns, unowned))]


def check_late_cities(ns: NamespaceView) -> list[Finding]:
    """Every owned city decided within the last 3 periods."""
    late = ns.late()
    if not late:
        return []
    details = [f"{v.city} ({'never' if v.decision_age is None else f'{v.decision_age:.1f}s'}"
               f" ago, period {v.period:g}s)" for v in late]
    return [Finding("fail", "cities", f"{len(late)} cities decided longer than 3 periods "
                                      f"ago: {names(details)}")]


def check_failing_cities(ns: NamespaceView) -> list[Finding]:
    """No city reports its ticks failing."""
    failing = ns.failing()
    out = [Finding("fail", "cities", f"{v.city} is failing on {v.owner or '?'}: "
                                     f"{v.last_error or 'no error recorded'}")
           for v in failing[:MAX_NAMES]]
    if len(failing) > MAX_NAMES:
        out.append(Finding("fail", "cities", f"and {len(failing) - MAX_NAMES} more failing "
                                             "cities (`dispatchctl status`)"))
    return out


def check_standbys(ns: NamespaceView) -> list[Finding]:
    """With two workers or more serving, every owned city has a hot standby queued."""
    if len(ns.serving) < 2:
        return []
    alone = [v.city for v in ns.enabled if v.owner and not v.standbys]
    if not alone:
        return []
    return [Finding("warn", "cities",
                    f"{len(alone)} cities have no hot standby queued: "
                    f"{names(alone)} (a failover waits for a new campaign)")]


def check_cities_fine(ns: NamespaceView) -> list[Finding]:
    """The all-clear: enabled cities, all owned, none late, none failing."""
    if not ns.enabled or ns.unowned() or ns.late() or ns.failing():
        return []
    cities = ns.overview.cities
    bad = sum(1 for v in cities if v.settings_error)
    disabled = len(cities) - len(ns.enabled) - bad
    note = f" ({disabled} disabled)" if disabled else ""
    return [Finding("ok", "cities", f"{len(ns.enabled)} enabled cities, all owned and "
                                    f"deciding on time{note}")]


def _why_unowned(ns: NamespaceView, cities: list[str]) -> str:
    """Explain unowned cities the balancer cannot place (required labels nobody has)."""
    needs: dict[str, CityNeeds] = {}
    kvs, _ = ns.client.get_prefix(ns.keys.cities)
    for kv in kvs:
        city = Keys.tail(kv.key, ns.keys.cities)
        if city not in cities:
            continue
        try:
            config = parse_settings(city, kv.value)
        except CitySettingsError:
            continue
        needs[city] = CityNeeds(config.require_labels, config.prefer_labels)
    ov = ns.overview
    members = [Member(w, info.capacity or 1.0, dict(info.labels), w in ov.drained)
               for w, info in ov.workers.items()]
    if not needs or not members:
        return ""
    orphans = sorted(plan(needs, members, standbys=0).orphans)
    if not orphans:
        return ""
    return (f"; no live, undrained worker carries the labels required by "
            f"{names(orphans)}")


# -- leftovers ----------------------------------------------------------------------------


def check_leftover_cities(ns: NamespaceView) -> list[Finding]:
    """No decision, status, state or election key of a city that has no settings."""
    cities = {v.city for v in ns.overview.cities}
    orphans: dict[str, set[str]] = defaultdict(set)
    for root, tail in _layout(ns):
        if root in ("decisions", "status", "state") and tail not in cities:
            orphans[tail].add(root)
        elif root == "election":
            city = tail.partition("/")[0]
            if city not in cities:
                orphans[city].add("election")
    if not orphans:
        return []
    found = sorted(orphans)
    described = [f"{c} ({'/'.join(sorted(orphans[c]))})" for c in found]
    return [Finding("warn", "leftovers",
                    f"keys of {len(found)} cities that have no settings: {names(described)}"
                    " — left by `city remove` without --purge, or written before the "
                    "city was added")]


def check_unknown_keys(ns: NamespaceView) -> list[Finding]:
    """No key outside the documented layout."""
    unknown = [kv.key for kv in ns.kvs if _root(ns, kv) is None]
    if not unknown:
        return []
    return [Finding("warn", "leftovers", f"{len(unknown)} keys outside the documented "
                                         f"layout: {names(sorted(unknown))}")]


def _root(ns: NamespaceView, kv: KeyValue) -> tuple[str, str] | None:
    """(root, rest) of a key in the documented layout, ``None`` for any other key."""
    root, _, tail = Keys.tail(kv.key, ns.keys.namespace + "/").partition("/")
    return (root, tail) if root in _ROOTS and tail else None


def _layout(ns: NamespaceView) -> list[tuple[str, str]]:
    return [parsed for kv in ns.kvs if (parsed := _root(ns, kv)) is not None]


def check_namespace(client: EtcdClient, keys: Keys, *, overview: Overview | None = None,
                    now: float | None = None) -> list[Finding]:
    """Cities and workers: settings readable, every enabled city owned and deciding on
    time, no city failing, nothing left over from removed cities or workers."""
    ns = read_namespace(client, keys, overview=overview, now=now)
    return [
        *check_serving_workers(ns),
        *check_stale_drains(ns),
        *check_malformed_workers(ns),
        *check_no_city(ns),
        *check_city_settings(ns),
        *check_unowned_cities(ns),
        *check_late_cities(ns),
        *check_failing_cities(ns),
        *check_standbys(ns),
        *check_cities_fine(ns),
        *check_leftover_cities(ns),
        *check_unknown_keys(ns),
    ]
