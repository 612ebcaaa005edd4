"""The state source contract: where a city's state comes from at the start of each tick.

A state source is a plugin in ``dispatch.state_sources``; it is constructed once per
worker with a ``SourceContext`` and asked for a *fresh* state every tick (never a value
cached from an earlier tick). Malformed state raises ``StateError`` naming what is
wrong, which ends up on the city's status.

Replay (``dispatchctl replay``): a source that can read a past state back again says how
in a ``StateRef`` (:meth:`StateSource.load_with_ref`) and reads it back from one
(:meth:`StateSource.reload`). Both have defaults, so a source that only implements
``load`` keeps working: its decisions are replayable when the city archives its state
(``archiveState``), which any source's state can be.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from coordinator.errors import StateError, StateGone
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from coordinator.sources.options import SourceOptions
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["SourceContext", "StateSource", "int_param"]


@dataclass(frozen=True)
class SourceContext:
    client: EtcdClient
    keys: Keys
    #: the worker's settings for sources that reach outside etcd (connection URLs kept
    #: out of etcd, the tick's time budget)
    options: SourceOptions = field(default_factory=SourceOptions)


class StateSource(abc.ABC):
    #: ``load`` computes and never waits (no network, no disk): the worker then runs it
    #: inside its compute gate (``coordinator.worker.gate``). Leave it False for a source that
    #: reads over the network, or it would hold every other tick up while it waits.
    cpu_bound: ClassVar[bool] = False

    def __init__(self, context: SourceContext) -> None:
        self.context = context

    @abc.abstractmethod
    def load(self, config: CityConfig, now: float) -> CityState:
        """The city's state as of now. Raise ``StateError`` if it is unusable."""

    def load_with_ref(self, config: CityConfig, now: float
                      ) -> tuple[CityState, pb.StateRef | None]:
        """``load``, and how to read that exact state back later (the source-specific
        fields of a ``StateRef``; the worker fills in ``source``, the budget and any
        archive id), or ``None`` when this source cannot: then only an archived state
        (``archiveState``) makes the city's decisions replayable.

        Read the ref in the same request as the state (a revision read separately could
        belong to another state)."""
        return self.load(config, now), None

    def reload(self, city: str, ref: pb.StateRef, taken_at: float) -> CityState:
        """The exact state that ``ref`` (from :meth:`load_with_ref`) points at, with
        ``taken_at`` its time as the decision recorded it (``stateReadAt``) for a state
        that does not carry its own. Raise ``StateGone`` when it can no longer be read
        (compacted, deleted)."""
        raise StateGone(f"state source {ref.source!r} cannot read a past state of {city} "
                        "back and the state was not archived (`dispatchctl city set "
                        f"{city} --archive-state` makes later decisions replayable)")


def int_param(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """A whole-number parameter from a city's ``params``, checked against its range."""
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not float(value).is_integer() or not low <= value <= high:
        raise StateError(f"parameter {name}={value!r} must be an integer in [{low}, {high}]")
    return int(value)
