"""Finding a sink by its entry-point name (``--sink NAME``), with stevedore.

Fail-fast (``DriverManager``): an unknown name, a sink whose import fails or a class
that is not a :class:`~coordinator.sinks.contract.Sink` is a one-line ``PluginError``;
a bad URL is the sink's own ``ConfigError``. The built-ins (``postgres``, ``webhook``)
register through the project's ``pyproject.toml`` like any third-party sink.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from stevedore import driver
from stevedore.exception import NoMatches

from coordinator.errors import DispatchError, PluginError
from coordinator.sinks.contract import SINKS_NAMESPACE, Sink

__all__ = ["installed_sinks", "load_sink", "sink_class"]


def installed_sinks() -> list[str]:
    """The names registered under ``dispatch.sinks``, sorted."""
    return sorted({ep.name for ep in metadata.entry_points(group=SINKS_NAMESPACE)})


def sink_class(name: str) -> type[Sink]:
    """The class registered as ``name``; ``PluginError`` when it cannot be had."""
    failures: list[str] = []

    def on_failure(_manager: Any, ep: Any, exc: BaseException) -> None:
        failures.append(f"sink {name!r} ({ep.value}) failed to load: "
                        f"{type(exc).__name__}: {exc}")

    try:
        manager: driver.DriverManager[Any] = driver.DriverManager(
            SINKS_NAMESPACE, name, invoke_on_load=False,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=lambda _names: None,
            warn_on_missing_entrypoint=False,
        )
    except NoMatches:
        if failures:
            raise PluginError(failures[0]) from None
        known = ", ".join(installed_sinks()) or "none"
        raise PluginError(f"no sink named {name!r} (installed: {known})") from None
    except Exception as exc:  # stevedore raises plain exceptions for duplicates
        raise PluginError(f"sink {name!r}: {exc}") from exc
    cls = manager.driver
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise PluginError(f"sink {name!r} ({manager.extensions[0].entry_point.value}) is "
                          "not a subclass of coordinator.sinks.Sink")
    return cls


def load_sink(name: str, url: str, *, namespace: str) -> Sink:
    """``name``'s sink made from ``url`` for ``namespace`` (not connected yet)."""
    cls = sink_class(name)
    try:
        sink = cls(url, namespace=namespace)
    except DispatchError:
        raise  # ConfigError for a bad URL: the sink's own one-line message
    except Exception as exc:
        raise PluginError(f"sink {name!r} could not be created: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not sink.name:
        sink.name = name
    return sink
