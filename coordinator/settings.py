"""A city's settings: parsed, defaulted and checked once, where they are read.

Settings live in etcd as ``CitySettings`` JSON under ``<ns>/cities/<city>``. Anything
can be written there with ``etcdctl put``, so every worker validates what it reads and
turns a bad value into a ``CitySettingsError`` naming the field, rather than crashing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from coordinator.codec import decode, encode
from coordinator.errors import CitySettingsError
from protos import dispatch_pb2 as pb

__all__ = ["DEFAULT_PERIOD", "DEFAULT_STATE_SOURCE", "CityConfig", "parse_settings"]

DEFAULT_PERIOD = 2.0
DEFAULT_STATE_SOURCE = "simulated"
MIN_PERIOD = 0.05
MAX_PERIOD = 3600.0


@dataclass(frozen=True)
class CityConfig:
    """A city's validated settings, with defaults applied."""

    city: str
    solver: str
    period: float = DEFAULT_PERIOD
    enabled: bool = True
    state_source: str = DEFAULT_STATE_SOURCE
    params: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    shadow_solvers: tuple[str, ...] = ()
    require_labels: Mapping[str, str] = field(default_factory=dict)
    prefer_labels: Mapping[str, str] = field(default_factory=dict)
    #: refuse a state observed longer ago than this many seconds (0: no limit)
    max_state_age: float = 0.0
    #: archive every tick's state in the worker's ``--archive-url`` store (replay)
    archive_state: bool = False
    #: release each decision at a steady offset after its tick's due time (the city's
    #: recent 99th percentile of tick durations) rather than as soon as it is ready:
    #: steady gaps between decisions, for some latency (``coordinator.worker.pace``)
    steady_pace: bool = False

    def to_message(self) -> pb.CitySettings:
        message = pb.CitySettings(
            solver=self.solver, period_seconds=self.period, enabled=self.enabled,
            state_source=self.state_source, labels=dict(self.labels),
            shadow_solvers=list(self.shadow_solvers),
            require_labels=dict(self.require_labels), prefer_labels=dict(self.prefer_labels),
        )
        if self.archive_state:
            message.archive_state = True
        if self.steady_pace:
            message.steady_pace = True
        message.params.update(dict(self.params))
        if self.max_state_age:
            message.max_state_age_seconds = self.max_state_age
        return message

    def encode(self) -> bytes:
        return encode(self.to_message())


def parse_settings(city: str, raw: bytes) -> CityConfig:
    """Decode and check ``CitySettings`` JSON; raise ``CitySettingsError`` if unusable."""
    try:
        message = decode(pb.CitySettings, raw, what=f"settings of city {city}")
    except ValueError as exc:
        raise CitySettingsError(str(exc)) from exc
    return from_message(city, message)


def from_message(city: str, message: pb.CitySettings) -> CityConfig:
    if not message.solver:
        raise CitySettingsError(f"settings of city {city}: no solver given")
    period = message.period_seconds or DEFAULT_PERIOD
    if not math.isfinite(period) or not MIN_PERIOD <= period <= MAX_PERIOD:
        raise CitySettingsError(
            f"settings of city {city}: periodSeconds {message.period_seconds!r} is not "
            f"between {MIN_PERIOD} and {MAX_PERIOD}"
        )
    params = json_format.MessageToDict(message.params) if message.HasField("params") else {}
    max_state_age = message.max_state_age_seconds
    if not math.isfinite(max_state_age) or max_state_age < 0:
        raise CitySettingsError(
            f"settings of city {city}: maxStateAgeSeconds {max_state_age!r} must be a "
            "number of seconds, 0 or more (0: no limit)"
        )
    for name in message.shadow_solvers:
        if not name:
            raise CitySettingsError(f"settings of city {city}: empty shadow solver name")
    return CityConfig(
        city=city,
        solver=message.solver,
        period=period,
        enabled=message.enabled if message.HasField("enabled") else True,
        state_source=message.state_source or DEFAULT_STATE_SOURCE,
        params=params,
        labels=dict(message.labels),
        shadow_solvers=tuple(message.shadow_solvers),
        require_labels=dict(message.require_labels),
        prefer_labels=dict(message.prefer_labels),
        max_state_age=max_state_age,
        archive_state=message.archive_state,
        steady_pace=message.steady_pace,
    )
