"""``dispatch-worker``: run dispatch for a share of the cities until told to stop.

Signals: the first SIGTERM or SIGINT is a warm shutdown (finish ticks in flight, resign
every city so its next candidate takes over at once, revoke the lease); a second one
stops at once.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import click

from coordinator import __version__
from coordinator.cli.common import connect, etcd_options, parse_pairs, run_cli
from coordinator.errors import EtcdAuthError, EtcdError
from coordinator.keys import Keys, check_worker_id
from coordinator.logs import setup_logging
from coordinator.worker import Worker, WorkerConfig, default_worker_id

log = logging.getLogger("coordinator.cli.worker")


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@etcd_options
@click.option("--worker-id", envvar="DISPATCH_WORKER_ID", default=None, metavar="ID",
              help="This worker's id in etcd and in every decision it writes. "
                   "[default: <hostname>-<pid>]")
@click.option("--lease-ttl", envvar="DISPATCH_LEASE_TTL", default=5, show_default=True,
              type=click.IntRange(1, 600), metavar="SECONDS",
              help="Lease TTL: how long after this worker dies or is cut off its cities "
                   "move to another worker.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              envvar="DISPATCH_LABELS",
              help="A label describing this worker (e.g. zone=eu-west-1a); repeatable. "
                   "From the environment: space-separated.")
@click.option("--capacity", envvar="DISPATCH_CAPACITY", default=1.0, show_default=True,
              type=click.FloatRange(min=0.0, min_open=True),
              help="Relative weight of this worker when sharing cities.")
@click.option("--tick-threads", envvar="DISPATCH_TICK_THREADS", default=8, show_default=True,
              type=click.IntRange(1, 512), help="Threads running city ticks in parallel.")
@click.option("--tick-slack", envvar="DISPATCH_TICK_SLACK", default=0.1, show_default=True,
              type=click.FloatRange(0.0, 1.0), metavar="SECONDS",
              help="Cities' ticks are phased onto a grid whose step is at most this "
                   "long (a whole fraction of each city's period), so ticks due together "
                   "run as one burst: fewer thread wake-ups, shared etcd transactions. A "
                   "city keeps its exact spacing; a retry waits up to one step. 0: no grid.")
@click.option("--standbys", envvar="DISPATCH_STANDBYS", default=1, show_default=True,
              type=click.IntRange(0, 16),
              help="Hot standby candidates each city keeps queued on other workers.")
@click.option("--solve-isolation", envvar="DISPATCH_SOLVE_ISOLATION", default="process",
              show_default=True, type=click.Choice(["process", "thread"]),
              help="process: solves run in a pool of solver processes, so a solver that "
                   "holds the GIL, eats a core or hangs cannot delay the lease keep-alive "
                   "or other cities (a hung one is killed); small cities of a solver "
                   "that declares inline_max_pairs (greedy) are solved on the tick's own "
                   "thread. thread: in this process (the same small cities on the tick's "
                   "thread); cheaper, for solvers that release the GIL.")
@click.option("--solve-processes", envvar="DISPATCH_SOLVE_PROCESSES", default=None,
              type=click.IntRange(1, 256), metavar="N",
              help="Size of the solver process pool. [default: CPU count, at most 4]")
@click.option("--placement", envvar="DISPATCH_PLACEMENT", default="cost", show_default=True,
              type=click.Choice(["cost", "count"]),
              help="cost: share cities by their measured cost (CPU seconds per second of "
                   "their ticks, published under <namespace>/load/), so a worker holding a "
                   "capital takes fewer towns. count: every worker the same number of "
                   "cities (to compare the two). Every worker of a fleet must use the same.")
@click.option("--tolerance", envvar="DISPATCH_TOLERANCE", default=0.10, show_default=True,
              type=click.FloatRange(0.0, 1.0),
              help="Placing by cost: a worker carries at most (1 + tolerance) x its share "
                   "of the fleet's load, and no city moves while none is over that "
                   "bound.")
@click.option("--moves-per-minute", envvar="DISPATCH_MOVES_PER_MINUTE", default=60.0,
              show_default=True, type=click.FloatRange(min=0.0, min_open=True),
              help="Churn budget: planned moves (graceful handovers) per minute across the "
                   "fleet; each worker hands over at most its share of them. A dead "
                   "worker's cities are taken at once, outside the budget.")
@click.option("--move-cooldown", envvar="DISPATCH_MOVE_COOLDOWN", default=15.0,
              show_default=True, type=click.FloatRange(min=0.0), metavar="SECONDS",
              help="A city taken over is not handed over again for this long.")
@click.option("--rebalance-delay", envvar="DISPATCH_REBALANCE_DELAY", default=30.0,
              show_default=True, type=click.FloatRange(min=0.0), metavar="SECONDS",
              help="Placing by cost: how long a worker must stay beyond the tolerance "
                   "before cities move to correct it, so that a passing wobble of the "
                   "measured costs moves nothing. A worker joining, leaving or drained "
                   "is planned for at once.")
@click.option("--metrics-port", envvar="DISPATCH_METRICS_PORT", default=None,
              type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve Prometheus metrics on this port (off when not given).")
@click.option("--admin-port", envvar="DISPATCH_ADMIN_PORT", default=None,
              type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve the gRPC health service (grpc.health.v1; SERVING while the "
                   "worker holds its lease) and the admin service (status, drain, undrain) "
                   "on this port (off when not given).")
@click.option("--state-postgres-url", envvar="DISPATCH_STATE_POSTGRES_URL", default="",
              metavar="URL",
              help="PostgreSQL database (libpq URL) the postgres state source reads cities' "
                   "orders and couriers from, over a pool shared by this worker's cities. "
                   "Prefer the environment (or ~/.pgpass) for a password.")
@click.option("--state-http-url", envvar="DISPATCH_STATE_HTTP_URL", default="",
              metavar="TEMPLATE",
              help="URL the http state source GETs a city's StateSnapshot JSON from; "
                   "{city} is replaced by the city's name (a city's url parameter wins), "
                   "e.g. http://orders.internal/dispatch/{city}/state.")
@click.option("--archive-url", envvar="DISPATCH_ARCHIVE_URL", default=None,
              metavar="POSTGRES_URL",
              help="The state archive: the postgres sink's database (tables from "
                   "`dispatch-relay --init`). Cities with archiveState on (`dispatchctl city "
                   "set CITY --archive-state`) store each tick's state there before the "
                   "decision is committed, for `dispatchctl replay`; without it, or while "
                   "it is unreachable, their ticks fail and back off.")
@click.option("--log-format", envvar="DISPATCH_LOG_FORMAT", default="text",
              show_default=True, type=click.Choice(["text", "json"]),
              help="text for people, json (one object a line) for log pipelines.")
@click.option("--log-level", envvar="DISPATCH_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.version_option(__version__, prog_name="dispatch-worker")
def command(**options: Any) -> None:
    """Run a dispatch worker.

    The worker holds one etcd lease, registers under <namespace>/workers/, stands in the
    election of every enabled city under <namespace>/election/<city>/ and, for each city
    it leads, ticks every period: load the state, run the city's solver, validate the
    result, and commit it to <namespace>/decisions/<city> with a fenced transaction.
    """
    worker_id = check_worker_id(options["worker_id"] or default_worker_id())
    setup_logging(options["log_format"], options["log_level"], worker=worker_id)
    Keys(options["namespace"])  # validate early: a one-line error, not a traceback
    config = WorkerConfig(
        worker_id=worker_id,
        namespace=options["namespace"],
        lease_ttl=options["lease_ttl"],
        labels=parse_pairs(tuple(options["labels"]), "--label"),
        capacity=options["capacity"],
        tick_threads=options["tick_threads"],
        tick_slack=options["tick_slack"],
        standbys=options["standbys"],
        solve_isolation=options["solve_isolation"],
        solve_processes=options["solve_processes"],
        metrics_port=options["metrics_port"],
        admin_port=options["admin_port"],
        state_postgres_url=options["state_postgres_url"],
        state_http_url=options["state_http_url"],
        archive_url=options["archive_url"],
        placement=options["placement"],
        tolerance=options["tolerance"],
        moves_per_minute=options["moves_per_minute"],
        move_cooldown=options["move_cooldown"],
        rebalance_delay=options["rebalance_delay"],
    )
    client = connect(options)
    try:
        # Wrong credentials or a missing permission will not fix themselves: say so and
        # exit. An unreachable etcd may come back: the worker keeps retrying.
        client.range(Keys(options["namespace"]).cities, prefix=True, count_only=True)
    except EtcdAuthError:
        client.close()
        raise
    except EtcdError as exc:
        log.warning("etcd not reachable yet (%s); retrying in the background", exc)
    worker = Worker(client, config)
    worker.start_servers()  # here, so that a busy port is a one-line error
    # The process is the worker's alone, and what it has loaded by now (modules,
    # solvers, state sources) lives as long as it: frozen out of the collector's sight,
    # a full collection scans only what the cities made since. Unfrozen, each paused a
    # busy worker for 50-190 ms every half minute or so (docs/worker.md).
    worker.plugins.preload()
    gc.collect()
    gc.freeze()
    signals = {"count": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            log.info("%s: stopping gracefully (send again to stop at once)",
                     signal.Signals(signum).name)
            worker.request_stop()
        else:
            log.warning("%s again: stopping at once", signal.Signals(signum).name)
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner = threading.Thread(target=worker.run, name="control", daemon=True)
    runner.start()
    while runner.is_alive():
        runner.join(0.5)
    client.close()


def main() -> None:
    run_cli(command, "dispatch-worker")


if __name__ == "__main__":
    main()
