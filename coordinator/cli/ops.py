"""Operator commands of ``dispatchctl`` on workers and health: ``workers``, ``drain``,
``undrain``, ``doctor``.

A drain mark is a key in etcd, so it outlives restarts of the worker it names; ``doctor``
runs :func:`~coordinator.ops.doctor.diagnose` and prints its findings as they come.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import click

from coordinator.cli.context import CONTEXT, Ctl, pass_ctl
from coordinator.cli.render import print_json, print_table, ttl
from coordinator.errors import ConfigError
from coordinator.keys import Keys, check_worker_id
from coordinator.ops.doctor import DEFAULT_QUOTA_BYTES, Finding, diagnose
from coordinator.ops.overview import read_overview
from coordinator.ops.placement import read_loads

__all__ = ["doctor", "drain", "undrain", "workers"]


# -- workers ---------------------------------------------------------------------------------


def _worker_rows(ctl: Ctl) -> list[dict[str, Any]]:
    client, keys = ctl.client, ctl.keys
    overview = read_overview(client, keys)
    loads = read_loads(client, keys)
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
            "load": loads[worker_id].total if worker_id in loads else None,
        })
    for worker_id in sorted(overview.drained - set(overview.workers)):
        rows.append({"workerId": worker_id, "host": "", "pid": 0, "version": "",
                     "capacity": 0.0, "labels": {}, "adminAddress": "", "leaseId": "",
                     "leaseTtlLeft": -1, "leaseTtl": 0, "drained": True, "owns": 0,
                     "standbyFor": 0, "running": False, "load": None})
    return rows


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctl
def workers(ctl: Ctl, /, as_json: bool) -> None:
    """Live workers: lease and time left on it, version, capacity, labels, drained,
    how many cities each owns and stands by for, and its load (CPU seconds per second
    of its cities' ticks, as it last published it; `dispatchctl plan` for shares)."""
    rows = _worker_rows(ctl)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"no live worker under {ctl.keys.workers}")
        return
    table = [["WORKER", "HOST", "PID", "VERSION", "CAPACITY", "LEASE", "TTL LEFT",
              "DRAINED", "OWNS", "STANDBY", "LOAD", "LABELS"]]
    for r in rows:
        if not r["running"]:
            table.append([r["workerId"], "-", "-", "-", "-", "-", "-", "yes (not running)",
                          "0", "0", "-", ""])
            continue
        table.append([
            r["workerId"], r["host"], str(r["pid"]), r["version"], f"{r['capacity']:g}",
            r["leaseId"] or "-", f"{ttl(r['leaseTtlLeft'])}/{r['leaseTtl']}s",
            "yes" if r["drained"] else "no", str(r["owns"]), str(r["standbyFor"]),
            "-" if r["load"] is None else f"{r['load']:.4f}",
            " ".join(f"{k}={v}" for k, v in sorted(r["labels"].items())),
        ])
    print_table(table)


# -- drain -----------------------------------------------------------------------------------


def _live_workers(ctl: Ctl) -> set[str]:
    kvs, _ = ctl.client.get_prefix(ctl.keys.workers, keys_only=True)
    return {Keys.tail(kv.key, ctl.keys.workers) for kv in kvs}


def _owned_by(ctl: Ctl, worker_id: str) -> list[str]:
    return [v.city for v in read_overview(ctl.client, ctl.keys).cities
            if v.owner == worker_id]


def _standing_for(ctl: Ctl, worker_id: str) -> tuple[list[str], list[str]]:
    """(cities ``worker_id`` owns, cities whose election holds a key of it, leading or
    queued): a queued key can still be handed a city by a peer that has not seen the
    drain mark yet."""
    cities = read_overview(ctl.client, ctl.keys).cities
    return ([v.city for v in cities if v.owner == worker_id],
            [v.city for v in cities if v.holds_key_of(worker_id)])


@click.command(context_settings=CONTEXT)
@click.argument("worker_id", metavar="WORKER")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=0,
              metavar="SECONDS",
              help="Wait until the worker owns no city and stands by for none (at most "
                   "this long); exit 1 if it still owns some then.")
@pass_ctl
def drain(ctl: Ctl, /, worker_id: str, wait_seconds: float) -> None:
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


@click.command(context_settings=CONTEXT)
@click.argument("worker_id", metavar="WORKER")
@pass_ctl
def undrain(ctl: Ctl, /, worker_id: str) -> None:
    """Remove a worker's drain mark: it takes its fair share of cities again."""
    check_worker_id(worker_id)
    if ctl.client.delete(ctl.keys.drain(worker_id)):
        click.echo(f"undrained {worker_id}: it takes its share of cities again")
    else:
        click.echo(f"{worker_id} was not drained")


# -- doctor ----------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
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
@pass_ctl
def doctor(ctl: Ctl, /, quota_bytes: int, skew_sample: float, skew_tolerance: float,
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
        print_json([{"level": f.level, "check": f.check, "message": f.message}
                    for f in report.findings])
    else:
        fails, warns = report.count("fail"), report.count("warn")
        click.echo(f"{fails} problem{'' if fails == 1 else 's'}, "
                   f"{warns} warning{'' if warns == 1 else 's'}")
    if failed:
        raise SystemExit(1)
