"""``dispatchctl`` over etcd's revision history: ``history``, ``compare`` and ``show`` read a
city's past decisions; ``verify`` replays elections and decisions to check the fence.

History reaches back to etcd's last compaction, no further; ``history`` says so when it
hits it, and points at the audit sink (``dispatchctl audit``), which keeps the rest.
"""

from __future__ import annotations

from typing import Any

import click
from google.protobuf import json_format

from coordinator.cli.context import CONTEXT, Ctl, pass_ctl
from coordinator.cli.render import print_json, print_table
from coordinator.codec import assigned, decode
from coordinator.errors import ConfigError, EtcdCompacted
from coordinator.keys import check_city_name
from coordinator.ops.replay import past_decisions
from coordinator.ops.verify import verify as run_verify
from protos import dispatch_pb2 as pb

__all__ = ["compare", "history", "show", "verify"]


@click.command(context_settings=CONTEXT)
@click.argument("city_name", metavar="CITY")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100_000),
              help="How many past decisions to list, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctl
def history(ctl: Ctl, /, city_name: str, limit: int, as_json: bool) -> None:
    """Past decisions of a city, read from etcd's revision history (newest first).

    History reaches back to etcd's last compaction (see the README on retention); older
    decisions are in the postgres sink's audit (`dispatchctl audit`).
    """
    check_city_name(city_name)
    decisions, compacted = _recent_decisions(ctl, city_name, limit)
    rows: list[dict[str, Any]] = [
        {"revision": revision, "decidedAt": d.decided_at.ToJsonString(), "token": d.token,
         "workerId": d.worker_id, "solver": d.solver, "assignments": len(assigned(d)),
         "unassigned": len(d.unassigned), "cost": round(d.cost, 1)}
        for revision, d in decisions
    ]
    hint = _COMPACTED_HINT if compacted else ""
    if as_json:
        print_json(rows)
        if hint:
            click.echo(hint, err=True)
        return
    if not rows:
        raise ConfigError(f"no decision of {city_name} in etcd's history"
                          + (f" ({hint})" if hint else ""))
    table = [["REVISION", "DECIDED AT", "TOKEN", "WORKER", "SOLVER", "ASSIGNED", "UNASSIGNED"]]
    for r in rows:
        table.append([str(r["revision"]), r["decidedAt"], str(r["token"]), r["workerId"],
                      r["solver"], str(r["assignments"]), str(r["unassigned"])])
    print_table(table)
    if hint:
        click.echo(hint)


#: what ``history`` says when etcd's compaction cut the city's history short
_COMPACTED_HINT = ("older decisions were compacted away in etcd; the postgres sink keeps "
                   "them: `dispatchctl audit --order ID` (every assignment) and the "
                   "dispatch_decisions table (the latest per city)")


def _recent_decisions(ctl: Ctl, city_name: str,
                      limit: int) -> tuple[list[tuple[int, pb.Decision]], bool]:
    """Up to ``limit`` past decisions of a city, newest first, from etcd's history, and
    whether etcd's compaction stopped the walk before ``limit`` or the city's first."""
    out: list[tuple[int, pb.Decision]] = []
    try:
        for recorded in past_decisions(ctl.client, ctl.keys.decision(city_name)):
            if len(out) == limit:
                break
            out.append((recorded.revision, recorded.decision))
    except EtcdCompacted:
        return out, True
    return out, False


@click.command(context_settings=CONTEXT)
@click.argument("city_name", metavar="CITY")
@click.option("--ticks", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="How many recent decisions to compare over.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctl
def compare(ctl: Ctl, /, city_name: str, ticks: int, as_json: bool) -> None:
    """Active solver versus shadow solvers over a city's recent ticks.

    Shadow solvers (``city set CITY --shadow NAME``) run on the same state as the active
    one every tick; their cost, unassigned orders and solve time are recorded beside
    the decision. Lower cost is better (sum of estimated pickup times plus a penalty per
    unassigned order).
    """
    check_city_name(city_name)
    decisions, _ = _recent_decisions(ctl, city_name, ticks)
    if not decisions:
        raise ConfigError(f"no decision of {city_name} in etcd's history")
    stats: dict[tuple[str, str], dict[str, float]] = {}

    def add(role: str, solver: str, cost: float, unassigned: float, seconds: float,
            error: bool) -> None:
        row = stats.setdefault((role, solver), {"n": 0, "cost": 0.0, "unassigned": 0.0,
                                                "seconds": 0.0, "errors": 0, "ok": 0})
        row["n"] += 1
        if error:
            row["errors"] += 1
            return
        row["ok"] += 1
        row["cost"] += cost
        row["unassigned"] += unassigned
        row["seconds"] += seconds

    for _, d in decisions:
        add("active", d.solver, d.cost, len(d.unassigned), d.solve_seconds, False)
        for shadow in d.shadows:
            add("shadow", shadow.solver, shadow.cost, shadow.unassigned, shadow.solve_seconds,
                bool(shadow.error))
    rows: list[dict[str, Any]] = []
    for (role, solver), row in stats.items():
        ok = row["ok"] or 1
        rows.append({"role": role, "solver": solver, "ticks": int(row["n"]),
                     "meanCost": row["cost"] / ok, "meanUnassigned": row["unassigned"] / ok,
                     "meanSolveMs": 1000 * row["seconds"] / ok, "errors": int(row["errors"])})
    rows.sort(key=lambda r: (r["role"] != "active", r["meanCost"]))
    if as_json:
        print_json({"city": city_name, "decisions": len(decisions), "solvers": rows})
        return
    table = [["ROLE", "SOLVER", "TICKS", "MEAN COST", "VS ACTIVE", "MEAN UNASSIGNED",
              "MEAN SOLVE", "ERRORS"]]
    active_cost = next((r["meanCost"] for r in rows if r["role"] == "active"), 0.0)
    for r in rows:
        delta = (f"{100 * (r['meanCost'] / active_cost - 1):+.1f}%"
                 if active_cost and r["role"] == "shadow" and r["ticks"] > r["errors"] else "")
        table.append([str(r["role"]), str(r["solver"]), str(r["ticks"]), f"{r['meanCost']:.0f}",
                      delta, f"{r['meanUnassigned']:.1f}", f"{r['meanSolveMs']:.1f} ms",
                      str(r["errors"])])
    click.echo(f"{city_name}: last {len(decisions)} decisions")
    print_table(table)


@click.command(context_settings=CONTEXT)
@click.argument("city_name", metavar="CITY")
@click.option("--revision", type=click.IntRange(min=1),
              help="Show the decision current at this etcd revision (see `history`).")
@pass_ctl
def show(ctl: Ctl, /, city_name: str, revision: int | None) -> None:
    """Print one decision in full (JSON): who made it, with which token, what it says."""
    check_city_name(city_name)
    kv = ctl.client.get(ctl.keys.decision(city_name), revision=revision or 0)
    if kv is None:
        raise ConfigError(f"no decision of {city_name}"
                          + (f" at revision {revision}" if revision else ""))
    d = decode(pb.Decision, kv.value)
    out = json_format.MessageToDict(d)
    out = {"revision": kv.mod_revision, **out}
    print_json(out)


def _window(text: str) -> tuple[float, float]:
    """``START..END`` in Unix seconds, START before END."""
    try:
        begin, end = map(float, text.split(".."))
    except ValueError:
        begin = end = 0.0
    if not begin < end:
        raise click.BadParameter(f"{text!r} is not START..END in Unix seconds with START "
                                 "before END", param_hint="--no-quorum")
    return begin, end


@click.command(context_settings=CONTEXT)
@click.option("--from", "start", default=1, show_default=True, type=click.IntRange(min=1),
              help="First etcd revision to check (history before it must not matter).")
@click.option("--on-time", "tolerance", default=0.1, show_default=True,
              type=click.FloatRange(min=0.0),
              help="For availability: lateness, in periods, a decision may have and still "
                   "count as on time (0 counts every millisecond late).")
@click.option("--no-quorum", "outages", multiple=True, metavar="START..END",
              callback=lambda _ctx, _param, values: [_window(v) for v in values],
              help="For availability: a window (Unix seconds) in which etcd had no quorum, "
                   "left out of it; repeatable.")
@pass_ctl
def verify(ctl: Ctl, /, start: int, tolerance: float,
           outages: list[tuple[float, float]]) -> None:
    """Check etcd's history: was every decision written by the leader of its time?

    Replays the election and decision keys from revision --from and checks, for every
    decision: its token is the create revision of the leading candidate key just
    before it was written, its workerId is that candidate's, and tokens never go down.
    Exits 1 and prints one line per violation if any. Also prints availability: the
    share of each city's periods (from its first to its last decision checked) that
    received a decision.
    """
    report = run_verify(ctl.client, ctl.keys, start_revision=start, tolerance=tolerance,
                        no_quorum=outages)
    for violation in report.violations:
        click.echo(f"VIOLATION {violation}")
    click.echo(f"checked {report.decisions} decisions of {len(report.cities)} cities, "
               f"revisions {report.start_revision}..{report.end_revision}: "
               f"{len(report.violations)} violations")
    if report.availability is not None and report.availability.cities:
        click.echo(report.availability.summary())
    if not report.ok:
        raise SystemExit(1)
