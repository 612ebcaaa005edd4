"""Finding solvers and state sources by entry-point name, with stevedore.

The built-ins register through the project's own ``pyproject.toml`` exactly as a third
party would, so there is one code path for both. Loading is fail-fast (stevedore's
``DriverManager``): an unknown name, a plugin whose import fails or a class that breaks
the contract becomes a one-line ``PluginError`` naming the plugin, its package and the
cause — that line is what an operator reads on the city's status.

A name that is not found is looked up again on the next request, so a package
installed while the worker runs is picked up without a restart.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from stevedore import _cache as stevedore_cache
from stevedore import driver
from stevedore.exception import NoMatches

from coordinator.errors import PluginError
from solvers.contract import NAMESPACE as SOLVERS
from solvers.contract import Solver

__all__ = ["SOLVERS", "STATE_SOURCES", "PluginInfo", "PluginLoader", "installed"]

log = logging.getLogger(__name__)

STATE_SOURCES = "dispatch.state_sources"

T = TypeVar("T")


@dataclass(frozen=True)
class PluginInfo:
    name: str
    target: str
    package: str
    description: str


def _entry_points(namespace: str) -> list[metadata.EntryPoint]:
    importlib.invalidate_caches()
    return sorted(metadata.entry_points(group=namespace), key=lambda ep: ep.name)


def _package(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "?"


def installed(namespace: str, *, describe: bool = True) -> list[PluginInfo]:
    """Every plugin registered in ``namespace``, with its one-line description."""
    infos = []
    for ep in _entry_points(namespace):
        description = ""
        if describe:
            try:
                description = str(getattr(ep.load(), "description", "") or "")
            except Exception as exc:
                description = f"(fails to import: {type(exc).__name__}: {exc})"
        infos.append(PluginInfo(ep.name, ep.value, _package(ep), description.strip()))
    return infos


class _Registry(Generic[T]):
    def __init__(self, namespace: str, kind: str, base: type[T],
                 invoke_args: tuple[Any, ...] = ()) -> None:
        self._namespace = namespace
        self._kind = kind
        self._base = base
        self._args = invoke_args
        self._loaded: dict[str, T] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> T:
        with self._lock:
            plugin = self._loaded.get(name)
        if plugin is None:
            plugin = self._load(name)
            with self._lock:
                plugin = self._loaded.setdefault(name, plugin)
        return plugin

    def _load(self, name: str) -> T:
        # A package installed since we last looked must be found: drop import caches.
        importlib.invalidate_caches()
        failures: list[str] = []

        def on_failure(_manager: Any, ep: Any, exc: BaseException) -> None:
            failures.append(
                f"{self._kind} {name!r} from {_package(ep)} failed to load: "
                f"{type(exc).__name__}: {exc}"
            )

        def manager() -> driver.DriverManager[Any]:
            return driver.DriverManager(
                self._namespace, name, invoke_on_load=False,
                on_load_failure_callback=on_failure,
                on_missing_entrypoints_callback=lambda _names: None,
            )

        try:
            try:
                found = manager()
            except NoMatches:
                if failures or name not in {ep.name for ep in _entry_points(self._namespace)}:
                    raise
                # Installed since stevedore first scanned: its per-process entry-point
                # caches never expire, so drop them (private attributes, hence guarded).
                internal = getattr(getattr(stevedore_cache, "_c", None), "_internal", None)
                if isinstance(internal, dict):
                    internal.clear()
                cache = getattr(driver.DriverManager, "ENTRY_POINT_CACHE", None)
                if isinstance(cache, dict):
                    cache.pop(self._namespace, None)
                found = manager()
        except NoMatches:
            if failures:
                raise PluginError(failures[0]) from None
            known = ", ".join(ep.name for ep in _entry_points(self._namespace)) or "none"
            raise PluginError(
                f"no {self._kind} named {name!r} is installed (installed: {known})"
            ) from None
        except Exception as exc:  # stevedore raises plain exceptions for duplicates
            raise PluginError(f"{self._kind} {name!r}: {exc}") from exc
        cls = found.driver
        if not (isinstance(cls, type) and issubclass(cls, self._base)):
            raise PluginError(
                f"{self._kind} {name!r} ({found.extensions[0].entry_point.value}) is not a "
                f"subclass of {self._base.__module__}.{self._base.__qualname__}"
            )
        try:
            instance = cls(*self._args)
        except Exception as exc:
            raise PluginError(
                f"{self._kind} {name!r} could not be created: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("loaded %s %r from %s", self._kind, name, found.extensions[0].entry_point.value)
        return instance


class PluginLoader:
    """Solvers and state sources of one worker, loaded once and shared by all cities."""

    def __init__(self, source_context: Any) -> None:
        from coordinator.sources import StateSource

        self._solvers: _Registry[Solver] = _Registry(
            SOLVERS, "solver", Solver  # type: ignore[type-abstract]
        )
        self._sources: _Registry[StateSource] = _Registry(
            STATE_SOURCES, "state source", StateSource,  # type: ignore[type-abstract]
            (source_context,),
        )
        self._preloaded = False

    def preload(self) -> None:
        """Import every installed solver and state source now, so that the first tick
        of a city taken over mid-flight does not pay for imports (scipy, OR-Tools).
        Once: the worker command preloads before freezing the collector, and the
        worker's run does again (a broken plugin's warning would come twice)."""
        if self._preloaded:
            return
        self._preloaded = True
        for info in installed(SOLVERS, describe=False):
            with contextlib.suppress(PluginError):
                self._solvers.get(info.name)
        for info in installed(STATE_SOURCES, describe=False):
            with contextlib.suppress(PluginError):
                self._sources.get(info.name)

    def solver(self, name: str) -> Solver:
        return self._solvers.get(name)

    def source(self, name: str) -> Any:
        return self._sources.get(name)
