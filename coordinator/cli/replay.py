"""``dispatchctl replay``: a past decision re-run on the exact state it saw.

``--revision R`` replays one decision: its own solver again (the assignment must be
identical for a deterministic solver: exit 1 when it is not, with the orders that
differ) and any ``--solver`` beside it, cost, unassigned and solve time side by side.
``--since T --solver X`` replays every decision since T with the candidates, a row per
tick and a summary (``--plot FILE`` draws the costs). The logic is
:mod:`coordinator.ops.replay`.
"""

from __future__ import annotations

import math
from typing import Any

import click
from google.protobuf import json_format

from coordinator.cli.audit import parse_since
from coordinator.cli.context import CONTEXT, Ctl, pass_ctl
from coordinator.cli.plot import write_plot
from coordinator.cli.render import print_json, print_table
from coordinator.codec import assigned
from coordinator.errors import ConfigError
from coordinator.keys import check_city_name
from coordinator.ops.replay import (
    Outcome,
    Recorded,
    Replay,
    Replayer,
    Walk,
    identical_to,
    mean,
    recorded_outcome,
)
from protos import dispatch_pb2 as pb

__all__ = ["replay"]


@click.command(context_settings=CONTEXT)
@click.argument("city_name", metavar="CITY")
@click.option("--revision", type=click.IntRange(min=1), metavar="R",
              help="Replay the decision written at this etcd revision (`dispatchctl "
                   "history CITY` lists them; a revision in between means the decision "
                   "current then).")
@click.option("--since", metavar="TIME",
              help="Replay every decision since TIME (ISO 8601, or a duration back from "
                   "now: 10m, 2h) with the --solver candidates.")
@click.option("--solver", "solvers", multiple=True, metavar="NAME",
              help="A solver to run on the same state (an installed dispatch.solvers "
                   "entry point). Repeatable.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="With --since: replay at most this many decisions (the newest).")
@click.option("--plot", metavar="FILE", type=click.Path(dir_okay=False),
              help="With --since: draw each solver's cost per tick into FILE (.svg needs "
                   "nothing; .png needs matplotlib, the 'bench' extra).")
@click.option("--archive-url", envvar=["DISPATCH_ARCHIVE_URL", "DISPATCH_SINK_URL"],
              metavar="POSTGRES_URL",
              help="The state archive (the postgres sink's database), for decisions of "
                   "cities with archiveState. [env: DISPATCH_ARCHIVE_URL or "
                   "DISPATCH_SINK_URL]")
@click.option("--show", default=20, show_default=True, type=click.IntRange(0, 100_000),
              help="With --revision: how many differing orders to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctl
def replay(ctl: Ctl, /, city_name: str, revision: int | None, since: str | None,
           solvers: tuple[str, ...], limit: int, plot: str | None, archive_url: str | None,
           show: int, as_json: bool) -> None:
    """Re-run a past decision on the exact state it was made on.

    Every decision records how to read its state back: the etcd revision of the state
    key (etcd source, until etcd compacts it), the seed and tick (simulated), or an
    archived snapshot (cities with --archive-state). A state that is gone is said in
    one line, with exit status 1; so is a --revision replay whose own solver does not
    give the identical assignment (the orders that differ are listed).

    \b
      dispatchctl replay paris --revision 1234                     # identical?
      dispatchctl replay paris --revision 1234 --solver hungarian  # side by side
      dispatchctl replay paris --since 2h --solver bundle --plot cost.svg
    """
    check_city_name(city_name)
    if (revision is None) == (since is None):
        raise click.UsageError("give exactly one of --revision and --since")
    if plot and since is None:
        raise click.UsageError("--plot goes with --since")
    replayer = Replayer(ctl.client, ctl.keys, archive_url=archive_url)
    try:
        if revision is not None:
            result = replayer.replay(city_name, revision, solvers)
            _print_one(city_name, result, show, as_json)
            if not result.identical:
                raise SystemExit(1)
            return
        assert since is not None
        if not solvers:
            raise click.UsageError("--since needs at least one --solver (the candidates)")
        start = parse_since(since)
        walk = replayer.walk(city_name, start, solvers, limit=limit, progress=_progress)
    finally:
        replayer.close()
    if not walk.ticks:
        raise ConfigError(f"no decision of {city_name} since {start.isoformat()} in etcd's "
                          "history" + (f" (compacted up to revision {walk.compacted_at})"
                                       if walk.compacted_at else ""))
    _print_walk(city_name, start.isoformat(), walk, solvers, as_json)
    if plot:
        series: dict[str, list[float | None]] = {"recorded": [
            r.decision.cost for r, _ in walk.ticks]}
        for i, name in enumerate(solvers):
            series[name] = [None if o is None or o[i].error else o[i].cost
                            for _, o in walk.ticks]
        write_plot(plot, f"{city_name}: cost per tick since {start:%Y-%m-%d %H:%M:%S}Z",
                   series)
        click.echo(f"plot written to {plot}", err=True)


def _progress(done: int, total: int) -> None:
    if total >= 20 and (done % 25 == 0 or done == total):
        click.echo(f"replayed {done}/{total} decisions", err=True)


def describe_ref(ref: pb.StateRef) -> str:
    """Where a decision's state comes back from, in words."""
    parts = [f"source {ref.source or '?'}"]
    if ref.revision:
        parts.append(f"etcd revision {ref.revision}")
    if ref.source == "simulated":
        parts.append(f"seed {ref.seed}, tick {ref.tick}, {ref.orders} orders x "
                     f"{ref.couriers} couriers")
    if ref.archive_id:
        parts.append(f"archived as {ref.archive_id}")
    return ", ".join(parts)


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{1000 * seconds:.1f} ms"


def _row(label: str, o: Outcome, base: float) -> list[str]:
    if o.error:
        return [label, "-", "", "-", "-", "-", o.error[:80]]
    vs = f"{100 * (o.cost / base - 1):+.1f}%" if base and label != "recorded" else ""
    return [label, f"{o.cost:.1f}", vs, str(o.assigned), str(o.unassigned), _ms(o.seconds), ""]


def _print_one(city: str, result: Replay, show: int, as_json: bool) -> None:
    d = result.recorded.decision
    recorded = recorded_outcome(d)
    if as_json:
        print_json({"city": city, "revision": result.recorded.revision,
                    "decidedAt": d.decided_at.ToJsonString(), "solver": d.solver,
                    "stateRef": json_format.MessageToDict(d.state_ref),
                    "state": describe_ref(d.state_ref), "identical": result.identical,
                    "differences": result.differences, "recorded": recorded.to_json(),
                    "replayed": [o.to_json() for o in result.outcomes]})
        return
    click.echo(f"{city}: decision at revision {result.recorded.revision} "
               f"({d.decided_at.ToJsonString()}, {d.solver}, token {d.token}, "
               f"worker {d.worker_id})")
    click.echo(f"state: {describe_ref(d.state_ref)}; {result.state.n_orders} orders x "
               f"{result.state.n_couriers} couriers")
    if result.identical:
        click.echo(f"replay of {d.solver}: identical ({len(assigned(d))} assignments, "
                   f"{len(d.unassigned)} unassigned)")
    else:
        click.echo(f"replay of {d.solver}: DIFFERS in {len(result.differences)} orders")
        for line in result.differences[:show]:
            click.echo(f"  {line}")
        if len(result.differences) > show:
            click.echo(f"  ... and {len(result.differences) - show} more (--show N)")
    table = [["SOLVER", "COST", "VS RECORDED", "ASSIGNED", "UNASSIGNED", "SOLVE", "ERROR"],
             _row("recorded", recorded, d.cost)]
    table += [_row(o.solver, o, d.cost) for o in result.outcomes]
    print_table(table)


def _summary(walk: Walk, solvers: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    replayed = [(r, o) for r, o in walk.ticks if o is not None]
    base = mean([r.decision.cost for r, _ in replayed])
    rows.append({"solver": "recorded", "ticks": len(replayed), "meanCost": base,
                 "meanUnassigned": mean([len(r.decision.unassigned) for r, _ in replayed]),
                 "meanSolveMs": 1000 * mean([r.decision.solve_seconds for r, _ in replayed]),
                 "errors": 0, "identical": None, "sameSolver": None})
    for i, name in enumerate(solvers):
        ok = [(r, o[i]) for r, o in replayed if not o[i].error]
        same = [(r, o) for r, o in ok if r.decision.solver == name]
        rows.append({
            "solver": name, "ticks": len(replayed),
            "meanCost": mean([o.cost for _, o in ok]),
            "vsRecorded": mean([o.cost for _, o in ok]) / base - 1 if base else None,
            "meanUnassigned": mean([o.unassigned for _, o in ok]),
            "meanSolveMs": 1000 * mean([o.seconds for _, o in ok]),
            "errors": len(replayed) - len(ok),
            "identical": sum(identical_to(r.decision, o) for r, o in same),
            "sameSolver": len([r for r, o in replayed if r.decision.solver == name])})
    return rows


def _tick_json(recorded: Recorded, outcomes: list[Outcome] | None) -> dict[str, Any]:
    d = recorded.decision
    return {"revision": recorded.revision, "decidedAt": d.decided_at.ToJsonString(),
            "recorded": recorded_outcome(d).to_json(),
            "replayed": None if outcomes is None else [o.to_json() for o in outcomes]}


def _print_walk(city: str, since: str, walk: Walk, solvers: tuple[str, ...],
                as_json: bool) -> None:
    summary = _summary(walk, solvers)
    if as_json:
        print_json({"city": city, "since": since, "compactedAt": walk.compacted_at,
                    "gone": walk.gone, "goneReason": walk.gone_reason,
                    "ticks": [_tick_json(r, o) for r, o in walk.ticks],
                    "summary": [{k: None if isinstance(v, float) and math.isnan(v) else v
                                 for k, v in s.items()} for s in summary]})
        return
    first, last = walk.ticks[0][0], walk.ticks[-1][0]
    click.echo(f"{city}: {len(walk.ticks)} decisions since {since}, revisions "
               f"{first.revision}..{last.revision}")
    if walk.compacted_at:
        click.echo(f"history stops at revision {walk.compacted_at}: etcd compacted what "
                   "came before")
    if walk.gone:
        click.echo(f"{walk.gone} decisions not replayed, their state is gone: "
                   f"{walk.gone_reason}")
    header = ["REVISION", "DECIDED AT", "RECORDED", "COST"]
    for name in solvers:
        header += [f"{name} COST", "UNASSIGNED", "SOLVE"]
    table = [header]
    for recorded, outcomes in walk.ticks:
        d = recorded.decision
        row = [str(recorded.revision), d.decided_at.ToJsonString(), d.solver, f"{d.cost:.1f}"]
        for i in range(len(solvers)):
            o = None if outcomes is None else outcomes[i]
            row += (["gone", "", ""] if o is None else ["error", "", ""] if o.error
                    else [f"{o.cost:.1f}", str(o.unassigned), _ms(o.seconds)])
        table.append(row)
    print_table(table)
    click.echo("")
    rows = [["SOLVER", "TICKS", "MEAN COST", "VS RECORDED", "MEAN UNASSIGNED", "MEAN SOLVE",
             "ERRORS", "IDENTICAL"]]
    for s in summary:
        vs = s.get("vsRecorded")
        rows.append([s["solver"], str(s["ticks"]), f"{s['meanCost']:.1f}",
                     "" if vs is None or math.isnan(vs) else f"{100 * vs:+.1f}%",
                     f"{s['meanUnassigned']:.1f}", f"{s['meanSolveMs']:.1f} ms",
                     str(s["errors"]),
                     f"{s['identical']}/{s['sameSolver']}" if s["sameSolver"] else "-"])
    print_table(rows)

