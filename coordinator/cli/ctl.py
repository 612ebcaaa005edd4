"""``dispatchctl``: the operator's command line.

This module is the group, its options and ``main``; the commands live in one module per
idea (``cities``, ``status``, ``decisions``, ``ops``, ``audit``, ``replay``, ``plan``) and
are collected here. None of them imports this module, so running it as
``python -m coordinator.cli.ctl`` loads each command once (see
:mod:`coordinator.cli.context`).
"""

from __future__ import annotations

from typing import Any

import click

from coordinator import __version__
from coordinator.cli.audit import audit
from coordinator.cli.cities import city
from coordinator.cli.common import etcd_options, run_cli
from coordinator.cli.context import CONTEXT, Ctl
from coordinator.cli.decisions import compare, history, show, verify
from coordinator.cli.ops import doctor, drain, undrain, workers
from coordinator.cli.plan import plan
from coordinator.cli.render import print_table
from coordinator.cli.replay import replay
from coordinator.cli.status import status, watch
from coordinator.plugins import SOLVERS, STATE_SOURCES, installed

__all__ = ["cli", "main"]


@click.group(context_settings=CONTEXT)
@etcd_options
@click.version_option(__version__, prog_name="dispatchctl")
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """Inspect and steer a dispatch coordinator deployment in etcd.

    Cities are data: adding, disabling or reconfiguring one takes effect on every
    worker within a second, without a restart.
    """
    ctx.obj = Ctl(options)


@cli.command(context_settings=CONTEXT)
def solvers() -> None:
    """List installed solvers (and state sources) with their origin package."""
    for namespace, title in ((SOLVERS, "SOLVER"), (STATE_SOURCES, "STATE SOURCE")):
        rows = [[title, "PACKAGE", "DESCRIPTION"]]
        for info in installed(namespace):
            rows.append([info.name, info.package, info.description.splitlines()[0]
                         if info.description else ""])
        print_table(rows)
        click.echo("")


for _command in (city, status, watch, history, compare, show, verify, workers, drain,
                 undrain, doctor, audit, replay, plan):
    cli.add_command(_command)


def main() -> None:
    run_cli(cli, "dispatchctl")


if __name__ == "__main__":
    main()
