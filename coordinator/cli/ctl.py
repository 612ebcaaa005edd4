"""``dispatchctl``: the operator's command line."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import click
from google.protobuf import json_format

from coordinator import __version__
from coordinator.cli.common import connect, etcd_options, parse_pairs, run_cli
from coordinator.cli.ops import register as register_ops
from coordinator.codec import decode, encode
from coordinator.errors import ConfigError, EtcdCompacted
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys, check_city_name
from coordinator.ops.overview import CityView, read_overview
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

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Ctl:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.keys = Keys(options["namespace"])
        self._client: EtcdClient | None = None

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            self._client = connect(self.options)
        return self._client


pass_ctl = click.make_pass_decorator(Ctl)


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


# -- cities ---------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT)
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
                         "shadowSolvers": list(config.shadow_solvers), "error": ""})
        except ConfigError as exc:
            rows.append({"city": name, "solver": "", "period": 0, "enabled": False,
                         "stateSource": "", "params": {}, "shadowSolvers": [],
                         "error": str(exc)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [["CITY", "SOLVER", "PERIOD", "ENABLED", "SOURCE", "PARAMS"]]
    for row in rows:
        params = " ".join(f"{k}={json.dumps(v)}" for k, v in row["params"].items())
        table.append([row["city"], row["solver"] or "?", f"{row['period']:g}s",
                      "yes" if row["enabled"] else "no", row["stateSource"],
                      row["error"] or params])
    _print_table(table)


# -- status ---------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def status_rows(views: list[CityView]) -> list[list[str]]:
    rows = [["CITY", "OWNER", "TOKEN", "QUEUED", "SOLVER", "LAST DECISION", "STATE", "LAST ERROR"]]
    for v in views:
        state = "disabled" if not v.enabled else (v.state or ("late" if v.late else "ok"))
        if v.enabled and v.late and state == "ok":
            state = "late"
        rows.append([v.city, v.owner or "-", str(v.token or "-"), str(len(v.standbys)),
                     v.solver or "?", _age(v.decision_age), state, v.last_error[:80]])
    return rows


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per city).")
@click.option("--watch", "live", is_flag=True,
              help="Keep a live table on screen, redrawn on etcd watch events (the same "
                   "as `dispatchctl watch`).")
@click.pass_context
def status(ctx: click.Context, /, as_json: bool, live: bool) -> None:
    """Per city: owner, fencing token, candidates queued, solver, age of the last
    decision, state and last error — all read at one etcd revision — and the drained
    workers."""
    if live:
        watch_command = cli.get_command(ctx, "watch")
        assert watch_command is not None
        ctx.invoke(watch_command)
        return
    ctl: Ctl = ctx.obj
    overview = read_overview(ctl.client, ctl.keys)
    if as_json:
        click.echo(json.dumps({"revision": overview.revision,
                               "cities": [v.to_json() for v in overview.cities],
                               "drainedWorkers": sorted(overview.drained)}, indent=2))
        return
    if not overview.cities:
        click.echo(f"no cities under {ctl.keys.namespace} (add one with `dispatchctl city add`)")
    else:
        _print_table(status_rows(overview.cities))
    if overview.drained:
        click.echo(f"\ndrained workers (own no city): {', '.join(sorted(overview.drained))}")


@cli.command(context_settings=CONTEXT)
@click.argument("city_name", metavar="CITY")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100_000),
              help="How many past decisions to list, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctl
def history(ctl: Ctl, /, city_name: str, limit: int, as_json: bool) -> None:
    """Past decisions of a city, read from etcd's revision history (newest first).

    History reaches back to etcd's last compaction; see the README on retention.
    """
    check_city_name(city_name)
    rows: list[dict[str, Any]] = [
        {"revision": revision, "decidedAt": d.decided_at.ToJsonString(), "token": d.token,
         "workerId": d.worker_id, "solver": d.solver, "assignments": len(d.assignments),
         "unassigned": len(d.unassigned), "cost": round(d.cost, 1)}
        for revision, d in _recent_decisions(ctl, city_name, limit)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        raise ConfigError(f"no decision of {city_name} in etcd's history")
    table = [["REVISION", "DECIDED AT", "TOKEN", "WORKER", "SOLVER", "ASSIGNED", "UNASSIGNED"]]
    for r in rows:
        table.append([str(r["revision"]), r["decidedAt"], str(r["token"]), r["workerId"],
                      r["solver"], str(r["assignments"]), str(r["unassigned"])])
    _print_table(table)


def _recent_decisions(ctl: Ctl, city_name: str, limit: int) -> list[tuple[int, pb.Decision]]:
    """Up to ``limit`` past decisions of a city, newest first, from etcd's history."""
    out: list[tuple[int, pb.Decision]] = []
    key = ctl.keys.decision(city_name)
    revision = 0
    while len(out) < limit:
        try:
            kv = ctl.client.get(key, revision=revision)
        except EtcdCompacted:
            break
        if kv is None:
            break
        with contextlib.suppress(ValueError):
            out.append((kv.mod_revision, decode(pb.Decision, kv.value)))
        if kv.version <= 1:
            break
        revision = kv.mod_revision - 1
    return out


@cli.command(context_settings=CONTEXT)
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
    decisions = _recent_decisions(ctl, city_name, ticks)
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
        click.echo(json.dumps({"city": city_name, "decisions": len(decisions), "solvers": rows},
                              indent=2))
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
    _print_table(table)


@cli.command(context_settings=CONTEXT)
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
    click.echo(json.dumps(out, indent=2))


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


@cli.command(context_settings=CONTEXT)
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
    from coordinator.ops.verify import verify as run_verify

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


@cli.command(context_settings=CONTEXT)
def solvers() -> None:
    """List installed solvers (and state sources) with their origin package."""
    for namespace, title in ((SOLVERS, "SOLVER"), (STATE_SOURCES, "STATE SOURCE")):
        rows = [[title, "PACKAGE", "DESCRIPTION"]]
        for info in installed(namespace):
            rows.append([info.name, info.package, info.description.splitlines()[0]
                         if info.description else ""])
        _print_table(rows)
        click.echo("")


register_ops(cli)


def main() -> None:
    run_cli(cli, "dispatchctl")


if __name__ == "__main__":
    main()
