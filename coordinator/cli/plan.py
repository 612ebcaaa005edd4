"""``dispatchctl plan``: where the cities are, where the workers' planner wants them,
each worker's load against its share, and the moves pending with their reasons."""

from __future__ import annotations

import click

from coordinator.cli.context import CONTEXT, Ctl, pass_ctl
from coordinator.cli.render import print_json, print_table
from coordinator.ops.placement import read_placement

__all__ = ["plan"]


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--placement", default="cost", show_default=True,
              type=click.Choice(["cost", "count"]),
              help="The placement the workers run with (their --placement).")
@click.option("--tolerance", default=0.10, show_default=True, type=click.FloatRange(0, 1),
              help="The workers' --tolerance.")
@click.option("--standbys", default=1, show_default=True, type=click.IntRange(0, 16),
              help="The workers' --standbys.")
@pass_ctl
def plan(ctl: Ctl, /, as_json: bool, placement: str, tolerance: float,
         standbys: int) -> None:
    """Current and target placement, computed as every worker computes it.

    LOAD is the measured cost (CPU seconds per second of the ticks) of the cities a
    worker leads now, PLANNED of those the plan gives it, SHARE its fair share; a city
    not measured yet counts at its prior (orders x couriers priced per solver). A move
    pending starts when its owner's churn budget, the city's cool-down and the rebalance
    delay allow; WAITS says which one holds it, as the owner last published.
    """
    view = read_placement(ctl.client, ctl.keys, placement=placement, tolerance=tolerance,
                          standbys=standbys)
    if as_json:
        print_json(view.to_json())
        return
    if not view.workers:
        click.echo(f"no live worker under {ctl.keys.workers}")
        return
    rows = [["WORKER", "CITIES", "LOAD", "PLANNED", "SHARE", "LOAD/SHARE", "PUBLISHED",
             "DRAINED"]]
    for w in view.workers:
        rows.append([w.worker_id, str(w.cities), f"{w.current:.4f}", f"{w.planned:.4f}",
                     f"{w.share:.4f}" if w.share else "-",
                     f"{w.current / w.share:.2f}" if w.share else "-",
                     f"{w.measured:.4f}", "yes" if w.drained else "no"])
    print_table(rows)
    unmeasured = len(view.plan.ranking) - len(view.measured)
    click.echo(f"\n{len(view.plan.ranking)} cities placed by {placement} "
               f"(tolerance {tolerance:.0%}); {len(view.measured)} measured, "
               f"{unmeasured} at their prior")
    if view.plan.orphans:
        click.echo(f"no worker may own: {', '.join(view.plan.orphans)}")
    if not view.moves:
        click.echo("no move pending: every city is where the plan wants it")
        return
    click.echo("")
    moves = [["CITY", "FROM", "TO", "COST", "WHY", "WAITS"]]
    for m in view.moves:
        moves.append([m.city, m.source or "-", m.target, f"{m.cost:.4f}", m.reason,
                      m.waits or "-"])
    print_table(moves)
