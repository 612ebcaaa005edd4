"""What both commands share: etcd options, configuration files, error reporting.

Precedence, highest first: command-line flags, environment variables (``DISPATCH_…``),
the TOML file given with ``--config`` (or ``DISPATCH_CONFIG``), built-in defaults.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from coordinator.errors import ConfigError, DispatchError
from coordinator.etcd import EtcdClient, EtcdConfig

F = TypeVar("F", bound=Callable[..., Any])


def _load_config(ctx: click.Context, _param: click.Parameter, path: str | None) -> str | None:
    if not path:
        return path
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path} is not valid TOML: {exc}") from exc
    defaults = {key.replace("-", "_"): value for key, value in data.items()}
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


def etcd_options(func: F) -> F:
    """The options every command uses to reach etcd."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     envvar="DISPATCH_CONFIG", is_eager=True, expose_value=False,
                     callback=_load_config,
                     help="TOML file with defaults for any option (keys are option names, "
                          "e.g. etcd = \"http://10.0.0.1:2379\"). Flags and DISPATCH_* "
                          "variables override it."),
        click.option("--etcd", envvar="DISPATCH_ETCD", default="http://127.0.0.1:2379",
                     show_default=True, metavar="URL[,URL...]",
                     help="etcd endpoints; requests fail over between them."),
        click.option("--namespace", envvar="DISPATCH_NAMESPACE", default="/dispatch",
                     show_default=True, metavar="PREFIX",
                     help="Key prefix all of this deployment's keys live under."),
        click.option("--etcd-timeout", envvar="DISPATCH_ETCD_TIMEOUT", default=5.0,
                     show_default=True, type=click.FloatRange(min=0.1),
                     help="Seconds before an etcd request is given up."),
        click.option("--etcd-ca", envvar="DISPATCH_ETCD_CA", type=click.Path(dir_okay=False),
                     help="CA certificate to verify etcd's TLS certificate (https:// endpoints)."),
        click.option("--etcd-cert", envvar="DISPATCH_ETCD_CERT",
                     type=click.Path(dir_okay=False),
                     help="Client certificate for etcd TLS client authentication."),
        click.option("--etcd-key", envvar="DISPATCH_ETCD_KEY", type=click.Path(dir_okay=False),
                     help="Private key of --etcd-cert."),
        click.option("--etcd-user", envvar="DISPATCH_ETCD_USER",
                     help="etcd user name (etcd authentication)."),
        click.option("--etcd-password", envvar="DISPATCH_ETCD_PASSWORD",
                     help="etcd password; prefer the DISPATCH_ETCD_PASSWORD variable so it "
                          "does not show in the process list. Never logged."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def etcd_config(options: dict[str, Any]) -> EtcdConfig:
    return EtcdConfig(
        endpoints=EtcdConfig.parse_endpoints(options["etcd"]),
        timeout=options["etcd_timeout"],
        ca_cert=options.get("etcd_ca"),
        cert=options.get("etcd_cert"),
        key=options.get("etcd_key"),
        user=options.get("etcd_user"),
        password=options.get("etcd_password"),
    )


def connect(options: dict[str, Any]) -> EtcdClient:
    return EtcdClient(etcd_config(options))


def parse_pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {value!r}: expected KEY=VALUE")
        out[key] = val
    return out


def fail(prog: str, message: str, code: int = 1) -> NoReturn:
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(code)


def run_cli(command: click.Command, prog: str, args: list[str] | None = None) -> None:
    """Run a click command so that every error is one line and a non-zero exit."""
    try:
        command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        fail(prog, "aborted", 130)
    except click.UsageError as exc:
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        fail(prog, exc.format_message() + hint, 2)
    except click.ClickException as exc:
        fail(prog, exc.format_message(), exc.exit_code)
    except DispatchError as exc:
        fail(prog, str(exc))
    except KeyboardInterrupt:
        fail(prog, "interrupted", 130)
