"""Operator commands of ``dispatchctl``: ``watch``, ``workers``, ``drain``, ``undrain``,
``doctor``.

They live apart from ``coordinator/cli/ctl.py`` and are attached to its group with
:func:`register` (called once, at the bottom of ``ctl.py``)::

    from coordinator.cli.ops import register
    register(cli)

Why the commands use ``click.pass_obj`` instead of ``ctl.pass_ctl``: ``dispatchctl`` is
also run as ``python -m coordinator.cli.ctl``, where the group's module is
``__main__`` and importing ``coordinator.cli.ctl`` from here would load a *second*
copy with a second ``Ctl`` class. ``pass_ctl`` finds its object by class, so it would
not find the ``__main__`` one. ``pass_obj`` takes whatever object the group made,
and :class:`CtlLike` says what we use of it. For the same reason nothing from
``ctl`` is imported at module level; ``status_rows`` is imported where it is used.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import click

from coordinator.errors import ConfigError, DispatchError
from coordinator.etcd import EtcdClient, KeyValue, WatchBatch
from coordinator.keys import Keys, check_worker_id
from coordinator.ops.doctor import DEFAULT_QUOTA_BYTES, Finding, diagnose
from coordinator.ops.overview import CityView, Overview, read_overview
from coordinator.recipes.watch import PrefixWatch

__all__ = ["CtlLike", "register", "render_watch"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CtlLike(Protocol):
    """What these commands use of ``dispatchctl``'s context object (``ctl.Ctl``)."""

    @property
    def client(self) -> EtcdClient: ...

    @property
    def keys(self) -> Keys: ...


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _ttl(seconds: int) -> str:
    return "expired" if seconds < 0 else f"{seconds}s"


# -- watch --------------------------------------------------------------------------------


def _colour(view: CityView) -> str | None:
    """Failing (or unowned) cities red, late ones yellow, disabled ones dim."""
    if not view.enabled:
        return "bright_black"
    if view.settings_error or view.state == "failing" or view.last_error or not view.owner:
        return "red"
    if view.late:
        return "yellow"
    return None


def render_watch(overview: Overview, namespace: str, *, now: float | None = None) -> list[str]:
    """The lines of one ``dispatchctl watch`` frame, with ANSI colours (``click.style``);
    ``click.echo`` drops the colours when the output is not a terminal."""
    from coordinator.cli.ctl import status_rows  # see the module docstring

    now = time.time() if now is None else now
    views = overview.cities
    late = sum(1 for v in views if _colour(v) == "yellow")
    failing = sum(1 for v in views if _colour(v) == "red")
    drained = len(set(overview.workers) & overview.drained)
    header = (f"{namespace}  revision {overview.revision}  "
              f"{time.strftime('%H:%M:%S', time.localtime(now))}  "
              f"workers {len(overview.workers)}"
              + (f" ({drained} drained)" if drained else "")
              + f"  cities {len(views)}")
    summary = []
    if late:
        summary.append(click.style(f"{late} late", fg="yellow"))
    if failing:
        summary.append(click.style(f"{failing} failing or unowned", fg="red"))
    lines = [click.style(header, bold=True) + ("  " + ", ".join(summary) if summary else "")]
    if not views:
        lines.append(f"no cities under {namespace} (add one with `dispatchctl city add`)")
        return lines
    table = _table(status_rows(views))
    lines.append(click.style(table[0], bold=True))
    for view, line in zip(views, table[1:], strict=True):
        colour = _colour(view)
        lines.append(click.style(line, fg=colour) if colour else line)
    return lines


class _Changes:
    """One watch per prefix whose changes alter the table; sets ``event`` on any change.

    Decisions are deliberately not watched: their values are large and arrive every
    period for every city, while the table only shows their age, which the periodic
    redraw refreshes anyway.
    """

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        self.event = threading.Event()
        self._watches: list[PrefixWatch] = []
        for prefix in (keys.cities, keys.elections, keys.workers, keys.drains, keys.statuses):
            watch = PrefixWatch(client, prefix, on_snapshot=self._snapshot,
                                on_events=self._events, name=f"watch {prefix}")
            self._watches.append(watch)

    def _snapshot(self, _kvs: list[KeyValue], _revision: int) -> None:
        self.event.set()

    def _events(self, _batch: WatchBatch) -> None:
        self.event.set()

    def start(self) -> None:
        for watch in self._watches:
            watch.start()

    def stop(self) -> None:
        for watch in self._watches:
            watch.stop()


def _watch(ctl: CtlLike, interval: float, once: bool, colour: bool | None) -> None:
    client, keys = ctl.client, ctl.keys
    overview = read_overview(client, keys)
    if once:
        for line in render_watch(overview, keys.namespace):
            click.echo(line, color=colour)
        return
    tty = sys.stdout.isatty()
    changes = _Changes(client, keys)
    changes.start()
    error = ""
    try:
        while True:
            if tty:
                click.clear()
            else:
                click.echo("")
            for line in render_watch(overview, keys.namespace):
                click.echo(line, color=colour)
            if error:
                click.echo(click.style(f"etcd: {error} (showing the last good view)",
                                       fg="red"), color=colour)
            click.echo(click.style("Ctrl-C to stop", dim=True), color=colour)
            if changes.event.wait(interval):
                time.sleep(0.1)  # let a burst of events (a failover) land in one frame
            changes.event.clear()
            try:
                overview, error = read_overview(client, keys), ""
            except DispatchError as exc:
                error = str(exc)
    except KeyboardInterrupt:
        click.echo("")
    finally:
        changes.stop()


# -- workers ------------------------------------------------------------------------------


def _worker_rows(ctl: CtlLike) -> list[dict[str, Any]]:
    client, keys = ctl.client, ctl.keys
    overview = read_overview(client, keys)
    owned: dict[str, int] = {}
    standby: dict[str, int] = {}
    for view in overview.cities:
        if view.owner:
            owned[view.owner] = owned.get(view.owner, 0) + 1
        for worker in view.standbys:
            standby[worker] = standby.get(worker, 0) + 1
    rows: list[dict[str, Any]] = []
    for worker_id, info in sorted(overview.workers.items()):
        ttl_left, granted = -1, 0
        if info.lease_id:
            with contextlib.suppress(ValueError):  # a lease id that is not hex
                ttl_left, granted = client.lease_time_to_live(int(info.lease_id, 16))
        rows.append({
            "workerId": worker_id, "host": info.host, "pid": info.pid,
            "version": info.version, "capacity": info.capacity or 1.0,
            "labels": dict(info.labels), "adminAddress": info.admin_address,
            "leaseId": info.lease_id, "leaseTtlLeft": ttl_left, "leaseTtl": granted,
            "drained": worker_id in overview.drained,
            "owns": owned.get(worker_id, 0), "standbyFor": standby.get(worker_id, 0),
            "running": True,
        })
    for worker_id in sorted(overview.drained - set(overview.workers)):
        rows.append({"workerId": worker_id, "host": "", "pid": 0, "version": "",
                     "capacity": 0.0, "labels": {}, "adminAddress": "", "leaseId": "",
                     "leaseTtlLeft": -1, "leaseTtl": 0, "drained": True, "owns": 0,
                     "standbyFor": 0, "running": False})
    return rows


# -- drain --------------------------------------------------------------------------------


def _live_workers(ctl: CtlLike) -> set[str]:
    kvs, _ = ctl.client.get_prefix(ctl.keys.workers, keys_only=True)
    return {Keys.tail(kv.key, ctl.keys.workers) for kv in kvs}


def _owned_by(ctl: CtlLike, worker_id: str) -> list[str]:
    return [v.city for v in read_overview(ctl.client, ctl.keys).cities
            if v.owner == worker_id]


def _standing_for(ctl: CtlLike, worker_id: str) -> tuple[list[str], list[str]]:
    """(cities ``worker_id`` owns, cities whose election holds a key of it, leading or
    queued): a queued key can still be handed a city by a peer that has not seen the
    drain mark yet."""
    cities = read_overview(ctl.client, ctl.keys).cities
    return ([v.city for v in cities if v.owner == worker_id],
            [v.city for v in cities if v.holds_key_of(worker_id)])


# -- registration -------------------------------------------------------------------------


def register(cli: click.Group) -> None:
    """Add ``watch``, ``workers``, ``drain``, ``undrain`` and ``doctor`` to ``cli``.

    ``cli``'s callback must set ``ctx.obj`` to an object with ``client`` and ``keys``
    (:class:`CtlLike`), as ``dispatchctl``'s group does.
    """

    @cli.command(context_settings=CONTEXT)
    @click.option("--interval", default=1.0, show_default=True,
                  type=click.FloatRange(0.1, 60), metavar="SECONDS",
                  help="Redraw at least this often (ages move on); changes in etcd "
                       "redraw at once.")
    @click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
    @click.option("--color/--no-color", "colour", default=None,
                  help="Force colours on or off [default: on for a terminal].")
    @click.pass_obj
    def watch(ctl: CtlLike, /, interval: float, once: bool, colour: bool | None) -> None:
        """Live `status`: redraws when ownership, settings, statuses or members change
        in etcd, and at least every --interval. Late cities (last decision older than
        three periods) are yellow; failing or unowned ones red. Ctrl-C stops."""
        _watch(ctl, interval, once, colour)

    @cli.command(context_settings=CONTEXT)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_obj
    def workers(ctl: CtlLike, /, as_json: bool) -> None:
        """Live workers: lease and time left on it, version, capacity, labels, drained,
        and how many cities each owns and stands by for."""
        rows = _worker_rows(ctl)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            click.echo(f"no live worker under {ctl.keys.workers}")
            return
        table = [["WORKER", "HOST", "PID", "VERSION", "CAPACITY", "LEASE", "TTL LEFT",
                  "DRAINED", "OWNS", "STANDBY", "LABELS"]]
        for r in rows:
            if not r["running"]:
                table.append([r["workerId"], "-", "-", "-", "-", "-", "-", "yes (not running)",
                              "0", "0", ""])
                continue
            table.append([
                r["workerId"], r["host"], str(r["pid"]), r["version"], f"{r['capacity']:g}",
                r["leaseId"] or "-", f"{_ttl(r['leaseTtlLeft'])}/{r['leaseTtl']}s",
                "yes" if r["drained"] else "no", str(r["owns"]), str(r["standbyFor"]),
                " ".join(f"{k}={v}" for k, v in sorted(r["labels"].items())),
            ])
        for line in _table(table):
            click.echo(line)

    @cli.command(context_settings=CONTEXT)
    @click.argument("worker_id", metavar="WORKER")
    @click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=0,
                  metavar="SECONDS",
                  help="Wait until the worker owns no city and stands by for none (at most "
                       "this long); exit 1 if it still owns some then.")
    @click.pass_obj
    def drain(ctl: CtlLike, /, worker_id: str, wait_seconds: float) -> None:
        """Drain a worker: it hands its cities over (gracefully, no missed tick) and
        takes no new ones until `dispatchctl undrain`. The mark is a key in etcd, so it
        outlives restarts of the worker."""
        check_worker_id(worker_id)
        client, keys = ctl.client, ctl.keys
        live = _live_workers(ctl)
        client.put(keys.drain(worker_id), "1")
        if worker_id not in live:
            click.echo(f"warning: no live worker named {worker_id} under {keys.workers}; "
                       "the mark applies when it starts", err=True)
            click.echo(f"drained {worker_id} (undo with `dispatchctl undrain {worker_id}`)")
            return
        owned = _owned_by(ctl, worker_id)
        click.echo(f"drained {worker_id}: it hands over the {len(owned)} cities it owns and "
                   f"takes no new ones (undo with `dispatchctl undrain {worker_id}`)")
        if wait_seconds <= 0:
            return
        deadline = time.monotonic() + wait_seconds
        owned, standing = _standing_for(ctl, worker_id)
        while standing and time.monotonic() < deadline:
            time.sleep(0.2)
            owned, standing = _standing_for(ctl, worker_id)
        if owned:
            raise ConfigError(f"{worker_id} still owns {len(owned)} cities after "
                              f"{wait_seconds:g}s: {', '.join(owned[:8])} (is another "
                              "worker able to take them? see `dispatchctl doctor`)")
        click.echo(f"{worker_id} owns no city now")

    @cli.command(context_settings=CONTEXT)
    @click.argument("worker_id", metavar="WORKER")
    @click.pass_obj
    def undrain(ctl: CtlLike, /, worker_id: str) -> None:
        """Remove a worker's drain mark: it takes its fair share of cities again."""
        check_worker_id(worker_id)
        if ctl.client.delete(ctl.keys.drain(worker_id)):
            click.echo(f"undrained {worker_id}: it takes its share of cities again")
        else:
            click.echo(f"{worker_id} was not drained")

    @cli.command(context_settings=CONTEXT)
    @click.option("--quota-bytes", default=DEFAULT_QUOTA_BYTES, show_default=True,
                  type=click.IntRange(min=1),
                  help="etcd's --quota-backend-bytes, to compare database sizes with.")
    @click.option("--skew-sample", default=3.0, show_default=True,
                  type=click.FloatRange(min=0), metavar="SECONDS",
                  help="How long to watch fresh decisions to compare workers' clocks with "
                       "this host's; 0 skips the clock check.")
    @click.option("--skew-tolerance", default=1.0, show_default=True,
                  type=click.FloatRange(min=0), metavar="SECONDS",
                  help="Clock difference that counts as a problem.")
    @click.option("--strict", is_flag=True, help="Exit non-zero on warnings too.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of findings).")
    @click.pass_obj
    def doctor(ctl: CtlLike, /, quota_bytes: int, skew_sample: float, skew_tolerance: float,
               strict: bool, as_json: bool) -> None:
        """Check etcd (members, leader, alarms, database size, compaction), the
        workers' clocks, and the namespace (malformed settings, unowned, late or failing
        cities, leftovers). Prints one plain line per finding; exits 1 if anything
        fails (with --strict, also on warnings)."""
        show: Callable[[Finding], None] | None = None
        if not as_json:
            colours = {"ok": "green", "warn": "yellow", "fail": "red"}

            def show(finding: Finding) -> None:
                click.echo(click.style(f"{finding.level.upper():<5}", fg=colours[finding.level])
                           + finding.line()[5:])

        report = diagnose(ctl.client, ctl.keys, quota_bytes=quota_bytes,
                          skew_sample=skew_sample, skew_tolerance=skew_tolerance,
                          on_finding=show)
        failed = report.count("fail") or (strict and report.count("warn"))
        if as_json:
            click.echo(json.dumps([{"level": f.level, "check": f.check, "message": f.message}
                                   for f in report.findings], indent=2))
        else:
            fails, warns = report.count("fail"), report.count("warn")
            click.echo(f"{fails} problem{'' if fails == 1 else 's'}, "
                       f"{warns} warning{'' if warns == 1 else 's'}")
        if failed:
            raise SystemExit(1)
