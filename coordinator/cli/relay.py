"""``dispatch-relay``: carry accepted decisions from etcd into a sink until told to stop.

Signals: the first SIGTERM or SIGINT resigns (a standby takes over at once) and revokes
the lease; a second one stops at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import click

from coordinator import __version__
from coordinator.cli.common import connect, etcd_options, run_cli
from coordinator.errors import ConfigError, EtcdAuthError, EtcdError
from coordinator.keys import Keys, check_worker_id
from coordinator.logs import setup_logging
from coordinator.relay import Relay, RelayConfig
from coordinator.sinks.loader import load_sink
from coordinator.worker.config import default_worker_id

log = logging.getLogger("coordinator.cli.relay")


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@etcd_options
@click.option("--sink", "sink_name", envvar="DISPATCH_SINK", default="postgres",
              show_default=True, metavar="NAME",
              help="The sink plugin (entry point in dispatch.sinks): postgres, webhook, ...")
@click.option("--sink-url", envvar="DISPATCH_SINK_URL", required=True, metavar="URL",
              help="Where the sink writes, e.g. postgresql://dispatch@db:5432/dispatch "
                   "or https://orders.internal/dispatch.")
@click.option("--relay-id", envvar="DISPATCH_RELAY_ID", default=None, metavar="ID",
              help="This relay's id in its status key. [default: <hostname>-<pid>]")
@click.option("--lease-ttl", envvar="DISPATCH_LEASE_TTL", default=5, show_default=True,
              type=click.IntRange(1, 600), metavar="SECONDS",
              help="How long after this relay dies a standby takes over.")
@click.option("--batch-max", envvar="DISPATCH_BATCH_MAX", default=500, show_default=True,
              type=click.IntRange(1, 100_000),
              help="Decisions merged into one sink write when more are waiting.")
@click.option("--metrics-port", envvar="DISPATCH_METRICS_PORT", default=None,
              type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve Prometheus metrics (dispatch_relay_*) on this port.")
@click.option("--admin-port", envvar="DISPATCH_ADMIN_PORT", default=None,
              type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve gRPC health (SERVING while the lease is live and the sink "
                   "answers) on this port.")
@click.option("--init", "init_only", is_flag=True,
              help="Create the sink's schema (tables, indexes) and exit; idempotent.")
@click.option("--log-format", envvar="DISPATCH_LOG_FORMAT", default="text",
              show_default=True, type=click.Choice(["text", "json"]))
@click.option("--log-level", envvar="DISPATCH_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.version_option(__version__, prog_name="dispatch-relay")
def command(**options: Any) -> None:
    """Carry accepted decisions from etcd into a system of record.

    \b
    Only fenced commits reach <namespace>/decisions/<city>, so that key's etcd revision
    grows with every accepted decision, across leaders. The sink applies a city's
    decision only when its revision is newer than the one it holds, and keeps its own
    cursor (the highest revision it holds): a relay resumes from there, and crashes,
    repeats and even two active relays apply nothing twice, with no clock.

    \b
    Run two or more: one is active (it leads <namespace>/relays/<sink>/election), the
    others stand by and take over within --lease-ttl when it dies. Each publishes a
    RelayStatus at <namespace>/relays/<sink>/status/<relay-id>.

    \b
    Example:
      dispatch-relay --sink postgres --init \\
          --sink-url postgresql://dispatch@db:5432/dispatch
      dispatch-relay --etcd http://10.0.0.1:2379 --sink postgres \\
          --sink-url postgresql://dispatch@db:5432/dispatch --metrics-port 9102
    """
    relay_id = check_worker_id(options["relay_id"] or default_worker_id())
    setup_logging(options["log_format"], options["log_level"], worker=relay_id)
    keys = Keys(options["namespace"])  # validate early: a one-line error
    sink = load_sink(options["sink_name"], options["sink_url"], namespace=keys.namespace)
    if options["init_only"]:
        sink.init_schema()
        sink.close()
        click.echo(f"dispatch-relay: schema of sink {options['sink_name']} is ready")
        return
    config = RelayConfig(sink_name=options["sink_name"], relay_id=relay_id,
                         namespace=keys.namespace, lease_ttl=options["lease_ttl"],
                         batch_max=options["batch_max"],
                         metrics_port=options["metrics_port"],
                         admin_port=options["admin_port"])
    client = connect(options)
    try:
        client.range(keys.relays, prefix=True, count_only=True)
    except EtcdAuthError:
        client.close()
        raise
    except EtcdError as exc:
        log.warning("etcd not reachable yet (%s); retrying in the background", exc)
    relay = Relay(client, config, sink)
    try:
        relay.start_servers()
    except OSError as exc:
        raise ConfigError(f"cannot listen for metrics or health: {exc.strerror or exc}") \
            from exc
    signals = {"count": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            log.info("%s: resigning and stopping (send again to stop at once)",
                     signal.Signals(signum).name)
            relay.request_stop()
        else:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner = threading.Thread(target=relay.run, name="relay", daemon=True)
    runner.start()
    while runner.is_alive():
        runner.join(0.5)
    client.close()


def main() -> None:
    run_cli(command, "dispatch-relay")


if __name__ == "__main__":
    main()
