"""``dispatchctl status`` and ``dispatchctl watch``: the ownership table, once or live.

Both show :func:`~coordinator.ops.overview.read_overview`'s one-revision picture as
:func:`~coordinator.cli.render.status_rows`; ``watch`` redraws it when etcd reports a
change, and at least every ``--interval``.
"""

from __future__ import annotations

import sys
import threading
import time

import click

from coordinator.cli.context import CONTEXT, Ctl, pass_ctl
from coordinator.cli.render import print_json, print_table, relay_rows, render_watch, status_rows
from coordinator.errors import DispatchError
from coordinator.etcd import EtcdClient, KeyValue, WatchBatch
from coordinator.keys import Keys
from coordinator.ops.overview import read_overview, read_relays
from coordinator.ops.placement import read_loads
from coordinator.recipes.watch import PrefixWatch

__all__ = ["status", "watch"]


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
            watch.close()
        for watch in self._watches:
            watch.stop()


def _watch(ctl: Ctl, interval: float, once: bool, colour: bool | None) -> None:
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


def _alarms(client: EtcdClient) -> list[str]:
    """The kinds of the alarms raised on any member (unreadable ones: none): a NOSPACE
    alarm freezes every city's status, which the table alone would not say."""
    try:
        return sorted({alarm.kind for alarm in client.alarms()})
    except DispatchError:
        return []


@click.command(context_settings=CONTEXT)
@click.option("--interval", default=1.0, show_default=True,
              type=click.FloatRange(0.1, 60), metavar="SECONDS",
              help="Redraw at least this often (ages move on); changes in etcd "
                   "redraw at once.")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@click.option("--color/--no-color", "colour", default=None,
              help="Force colours on or off [default: on for a terminal].")
@pass_ctl
def watch(ctl: Ctl, /, interval: float, once: bool, colour: bool | None) -> None:
    """Live `status`: redraws when ownership, settings, statuses or members change
    in etcd, and at least every --interval. Late cities (last decision older than
    three periods) are yellow; failing or unowned ones red. Ctrl-C stops."""
    _watch(ctl, interval, once, colour)


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per city).")
@click.option("--watch", "live", is_flag=True,
              help="Keep a live table on screen, redrawn on etcd watch events (the same "
                   "as `dispatchctl watch`).")
@click.pass_context
def status(ctx: click.Context, /, as_json: bool, live: bool) -> None:
    """Per city: owner, fencing token, candidates queued, solver, age of the last
    decision, state and last error — all read at one etcd revision — each worker's
    load, the drained workers, and each sink's relays (active, cursor, lag, last
    error)."""
    if live:
        ctx.invoke(watch)
        return
    ctl: Ctl = ctx.obj
    overview = read_overview(ctl.client, ctl.keys)
    relays = read_relays(ctl.client, ctl.keys)
    alarms = _alarms(ctl.client)
    loads = read_loads(ctl.client, ctl.keys)
    if as_json:
        print_json({"revision": overview.revision,
                    "cities": [v.to_json() for v in overview.cities],
                    "cityCosts": {c: cost for load in loads.values()
                                  for c, cost in load.cities.items()},
                    "workerLoads": {w: load.total for w, load in loads.items()},
                    "drainedWorkers": sorted(overview.drained),
                    "relays": [r.to_json() for r in relays],
                    "etcdAlarms": alarms})
        return
    for alarm in alarms:
        hint = (": etcd refuses every write (decisions, statuses, campaigns), so the "
                "statuses below are as they were; compact, defragment and `etcdctl alarm "
                "disarm`, and the workers resume by themselves" if alarm == "NOSPACE" else "")
        click.echo(f"etcd alarm {alarm}{hint}\n")
    if not overview.cities:
        click.echo(f"no cities under {ctl.keys.namespace} (add one with `dispatchctl city add`)")
    else:
        print_table(status_rows(overview.cities))
    if loads:
        click.echo("\nload per worker (CPU s/s; `dispatchctl plan` for shares): " + ", ".join(
            f"{w} {load.total:.4f}" for w, load in sorted(loads.items())))
    if overview.drained:
        click.echo(f"\ndrained workers (own no city): {', '.join(sorted(overview.drained))}")
    if relays:
        click.echo("")
        print_table(relay_rows(relays))
