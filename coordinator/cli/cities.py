"""``dispatchctl city``: add, change, enable, disable, remove and list cities.

A city's settings are one key. ``add`` creates it only if absent; ``set``, ``enable`` and
``disable`` read, modify and write it back only if nobody wrote in between (retried), so
two operators never overwrite each other. Solver and state-source names are checked
against the plugins installed here unless ``--force`` says the workers have them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from coordinator.cli.common import parse_pairs
from coordinator.cli.context import CONTEXT, Ctl, pass_ctl
from coordinator.cli.render import print_json, print_table
from coordinator.codec import encode
from coordinator.errors import ConfigError
from coordinator.keys import Keys, check_city_name
from coordinator.plugins import SOLVERS, STATE_SOURCES, installed
from coordinator.settings import (
    DEFAULT_PERIOD,
    DEFAULT_STATE_SOURCE,
    MAX_PERIOD,
    MIN_PERIOD,
    from_message,
    parse_settings,
)
from protos import dispatch_pb2 as pb

__all__ = ["city"]


@click.group(context_settings=CONTEXT)
def city() -> None:
    """Add, change, enable, disable, remove and list cities."""


def _parse_param(value: str) -> tuple[str, Any]:
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise ConfigError(f"--param {value!r}: expected KEY=VALUE")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw  # plain strings need no quotes
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise ConfigError(f"--param {value!r}: the value must be finite")
    return key, parsed


def city_options(func: Any) -> Any:
    options = [
        click.option("--solver", metavar="NAME",
                     help="Solver (an entry point in dispatch.solvers; see `dispatchctl "
                          "solvers`)."),
        click.option("--period", type=float, metavar="SECONDS",
                     help=f"Seconds between ticks [default for new cities: {DEFAULT_PERIOD}]."),
        click.option("--state-source", metavar="NAME",
                     help="Where state comes from (dispatch.state_sources entry point) "
                          f"[default for new cities: {DEFAULT_STATE_SOURCE}]."),
        click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="Solver/state-source parameter; VALUE is parsed as JSON when it "
                          "can be (numbers, true, lists), else kept as text. Repeatable."),
        click.option("--unset-param", "unset_params", multiple=True, metavar="KEY",
                     help="Remove a parameter. Repeatable."),
        click.option("--shadow", "shadows", multiple=True, metavar="NAME",
                     help="A shadow solver, run beside the active one and recorded, never "
                          "published. Repeatable; --shadow '' clears the list."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="A free-form label on the city. Repeatable."),
        click.option("--require-label", "require", multiple=True, metavar="KEY=VALUE",
                     help="Only workers carrying this label may own the city. Repeatable."),
        click.option("--prefer-label", "prefer", multiple=True, metavar="KEY=VALUE",
                     help="Workers carrying this label are preferred owners. Repeatable."),
        click.option("--max-state-age", type=float, metavar="SECONDS",
                     help="Refuse (and report on the city's status) a state observed longer "
                          "ago than this, e.g. when its producer stopped, instead of "
                          "deciding on it. 0 removes the limit [default: no limit]."),
        click.option("--archive-state/--no-archive-state", "archive_state", default=None,
                     help="Archive every tick's state in the postgres sink's database "
                          "(the workers' --archive-url), so that any decision can be "
                          "replayed (`dispatchctl replay`) whatever its state source and "
                          "after etcd's compaction. A tick whose state cannot be archived "
                          "fails."),
        click.option("--steady-pace/--no-steady-pace", "steady_pace", default=None,
                     help="Release each decision at a steady offset after its tick's start "
                          "(the city's recent 99th percentile of tick durations) instead of "
                          "as soon as it is ready: even gaps between decisions for a city "
                          "whose solve time varies, at the cost of some latency "
                          "[default: off]."),
        click.option("--force", is_flag=True,
                     help="Accept solver or state-source names not installed here."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _check_plugin(namespace: str, kind: str, name: str, force: bool) -> None:
    if force:
        return
    names = [p.name for p in installed(namespace, describe=False)]
    if name not in names:
        raise ConfigError(
            f"no {kind} named {name!r} is installed here (installed: "
            f"{', '.join(names) or 'none'}); install it on the workers first, or pass --force"
        )


def _apply(message: pb.CitySettings, opts: dict[str, Any]) -> None:
    if opts["solver"] is not None:
        message.solver = opts["solver"]
    if opts["period"] is not None:
        period = opts["period"]
        if not (math.isfinite(period) and MIN_PERIOD <= period <= MAX_PERIOD):
            raise ConfigError(f"--period {period}: must be between {MIN_PERIOD} and {MAX_PERIOD}")
        message.period_seconds = period
    if opts["state_source"] is not None:
        message.state_source = opts["state_source"]
    if opts["max_state_age"] is not None:
        age = opts["max_state_age"]
        if not (math.isfinite(age) and age >= 0):
            raise ConfigError(f"--max-state-age {age}: must be a number of seconds, 0 or more")
        if age:
            message.max_state_age_seconds = age
        else:
            message.ClearField("max_state_age_seconds")
    for value in opts["params"]:
        key, parsed = _parse_param(value)
        message.params.update({key: parsed})
    for key in opts["unset_params"]:
        if key in message.params.fields:
            del message.params.fields[key]
    if opts["shadows"]:
        del message.shadow_solvers[:]
        message.shadow_solvers.extend(s for s in opts["shadows"] if s)
    message.labels.update(parse_pairs(opts["labels"], "--label"))
    message.require_labels.update(parse_pairs(opts["require"], "--require-label"))
    message.prefer_labels.update(parse_pairs(opts["prefer"], "--prefer-label"))
    if opts["archive_state"] is not None:
        if opts["archive_state"]:
            message.archive_state = True
        else:
            message.ClearField("archive_state")
    if opts["steady_pace"] is not None:
        if opts["steady_pace"]:
            message.steady_pace = True
        else:
            message.ClearField("steady_pace")


def _validate(city_name: str, message: pb.CitySettings, force: bool) -> None:
    config = from_message(city_name, message)  # raises CitySettingsError with the field
    for name in (config.solver, *config.shadow_solvers):
        _check_plugin(SOLVERS, "solver", name, force)
    _check_plugin(STATE_SOURCES, "state source", config.state_source, force)


@city.command("add", context_settings=CONTEXT)
@click.argument("name")
@city_options
@pass_ctl
def city_add(ctl: Ctl, /, name: str, **opts: Any) -> None:
    """Create a city (enabled). Requires --solver."""
    check_city_name(name)
    if not opts["solver"]:
        raise click.UsageError("city add needs --solver NAME")
    message = pb.CitySettings(period_seconds=DEFAULT_PERIOD, enabled=True,
                              state_source=DEFAULT_STATE_SOURCE)
    _apply(message, opts)
    _validate(name, message, opts["force"])
    key = ctl.keys.city(name)
    client = ctl.client
    result = client.txn([client.cmp_create_revision(key, 0)], [client.op_put(key, encode(message))])
    if not result.succeeded:
        raise ConfigError(f"city {name} already exists (use `dispatchctl city set {name}`)")
    click.echo(f"added city {name} (solver {message.solver}, period {message.period_seconds}s)")


def _update(ctl: Ctl, /, name: str, change: Any, *, force: bool = True) -> pb.CitySettings:
    """Read-modify-write a city's settings, retried if someone else wrote in between."""
    check_city_name(name)
    key = ctl.keys.city(name)
    client = ctl.client
    for _ in range(10):
        kv = client.get(key)
        if kv is None:
            raise ConfigError(f"no city named {name} (see `dispatchctl city list`)")
        try:
            message = parse_settings(name, kv.value).to_message()
        except ConfigError:
            message = pb.CitySettings()  # malformed: rebuild it from the options given
        change(message)
        _validate(name, message, force)
        result = client.txn([client.cmp_mod_revision(key, kv.mod_revision)],
                            [client.op_put(key, encode(message))])
        if result.succeeded:
            return message
    raise ConfigError(f"city {name} keeps changing under us; try again")


@city.command("set", context_settings=CONTEXT)
@click.argument("name")
@city_options
@pass_ctl
def city_set(ctl: Ctl, /, name: str, **opts: Any) -> None:
    """Change a city's settings; only the options given change."""
    message = _update(ctl, name, lambda m: _apply(m, opts), force=opts["force"])
    click.echo(f"updated city {name} (solver {message.solver}, period "
               f"{message.period_seconds}s); workers apply it on the next tick")


@city.command("enable", context_settings=CONTEXT)
@click.argument("name")
@pass_ctl
def city_enable(ctl: Ctl, /, name: str) -> None:
    """Let workers own and tick the city again."""
    _update(ctl, name, lambda m: setattr(m, "enabled", True))
    click.echo(f"enabled city {name}")


@city.command("disable", context_settings=CONTEXT)
@click.argument("name")
@pass_ctl
def city_disable(ctl: Ctl, /, name: str) -> None:
    """Stop ticking the city; its owner resigns. Settings are kept."""
    _update(ctl, name, lambda m: setattr(m, "enabled", False))
    click.echo(f"disabled city {name}")


@city.command("remove", context_settings=CONTEXT)
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete its decision, status and state keys.")
@pass_ctl
def city_remove(ctl: Ctl, /, name: str, purge: bool) -> None:
    """Delete a city's settings; its owner stops at once."""
    check_city_name(name)
    client = ctl.client
    if not client.delete(ctl.keys.city(name)):
        raise ConfigError(f"no city named {name}")
    if purge:
        for key in (ctl.keys.decision(name), ctl.keys.status(name), ctl.keys.state(name)):
            client.delete(key)
    click.echo(f"removed city {name}")


@city.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctl
def city_list(ctl: Ctl, /, as_json: bool) -> None:
    """List cities and their settings."""
    kvs, _ = ctl.client.get_prefix(ctl.keys.cities)
    rows: list[dict[str, Any]] = []
    for kv in kvs:
        name = Keys.tail(kv.key, ctl.keys.cities)
        try:
            config = parse_settings(name, kv.value)
            rows.append({"city": name, "solver": config.solver, "period": config.period,
                         "enabled": config.enabled, "stateSource": config.state_source,
                         "params": dict(config.params),
                         "shadowSolvers": list(config.shadow_solvers),
                         "maxStateAge": config.max_state_age, "error": ""})
        except ConfigError as exc:
            rows.append({"city": name, "solver": "", "period": 0, "enabled": False,
                         "stateSource": "", "params": {}, "shadowSolvers": [],
                         "maxStateAge": 0.0, "error": str(exc)})
    if as_json:
        print_json(rows)
        return
    table = [["CITY", "SOLVER", "PERIOD", "ENABLED", "SOURCE", "PARAMS"]]
    for row in rows:
        params = " ".join(f"{k}={json.dumps(v)}" for k, v in row["params"].items())
        table.append([row["city"], row["solver"] or "?", f"{row['period']:g}s",
                      "yes" if row["enabled"] else "no",
                      row["stateSource"] + (f" (max age {row['maxStateAge']:g}s)"
                                            if row["maxStateAge"] else ""),
                      row["error"] or params])
    print_table(table)
