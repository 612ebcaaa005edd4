"""The sink contract: what a relay hands a sink, and what the sink promises back.

The ordering key is the mod revision of ``<ns>/decisions/<city>``. Only a fenced commit
gets into that key, and etcd gives each one a revision that grows across leaders, so a
sink that applies a decision only when its revision is newer than the one it holds for
the city is safe against stale leaders, duplicates and reordering, with no clock and no
lock. The token travels with it (it tells leader changes apart).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.codec import decode
from protos import dispatch_pb2 as pb

__all__ = ["SINKS_NAMESPACE", "Applied", "Delivery", "Sink"]

#: the entry-point group sinks register under (built-ins and third parties alike)
SINKS_NAMESPACE = "dispatch.sinks"


@dataclass(frozen=True)
class Delivery:
    """One accepted decision, as the relay delivers it."""

    city: str
    #: mod revision of ``<ns>/decisions/<city>``: the ordering key
    revision: int
    #: fencing token of the leader that committed it (its candidate key's create revision)
    token: int
    decision: pb.Decision
    #: the decision's JSON as etcd holds it (empty when not read from etcd): a sink that
    #: stores JSON writes it as is rather than encoding ``decision`` again
    value: bytes = b""
    #: what the sink's :meth:`Sink.prepare` made of it ahead of ``apply`` (its own use)
    prepared: Any = field(default=None, compare=False, repr=False)
    #: ``value`` is a decision in the exact form the worker writes (checked by
    #: :func:`coordinator.codec.stored_decision`): a sink may read or store it as it is
    stored: bool = field(default=False, compare=False)

    @classmethod
    def of_stored(cls, city: str, revision: int, token: int, value: bytes) -> Delivery:
        """A delivery of a checked stored ``value`` whose ``decision`` is decoded only
        when first read: a sink that stores the JSON never pays for the message."""
        delivery = object.__new__(cls)
        for name, given in (("city", city), ("revision", revision), ("token", token),
                            ("value", value), ("prepared", None), ("stored", True)):
            object.__setattr__(delivery, name, given)
        return delivery

    def __getattr__(self, name: str) -> pb.Decision:
        """Only an attribute not yet set comes here: a delivery made by :meth:`of_stored`
        decodes its ``decision`` on first use (the value was checked: it decodes)."""
        if name != "decision" or "value" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        decision = decode(pb.Decision, self.value, what="decision")
        object.__setattr__(self, "decision", decision)
        return decision

    def with_prepared(self, prepared: Any) -> Delivery:
        """A copy with ``prepared`` set (``dataclasses.replace`` would decode a lazy
        ``decision``)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        object.__setattr__(copy, "prepared", prepared)
        return copy


@dataclass(frozen=True)
class Applied:
    """What a sink did with one batch."""

    #: decisions written (newer than what the sink held for their city)
    applied: int
    #: decisions refused, without error, as not newer
    refused: int
    #: the sink's cursor after the batch (see :meth:`Sink.cursor`)
    cursor: int


class Sink(abc.ABC):
    """A system of record that accepted decisions are carried into.

    A sink is made from its URL (``--sink-url``) and the namespace whose decisions it
    holds (one etcd revision sequence): ``SinkClass(url, namespace=...)``. Every method
    raises a :class:`coordinator.errors.SinkError` subclass on failure (its own errors
    translated at its own boundary); the relay retries with backoff.

    The promises, which :mod:`coordinator.sinks.conformance` checks:

    - :meth:`apply` writes each delivery whose revision is newer than the one the sink
      holds for its city and refuses the rest without error; a batch is applied whole or
      not at all, together with the new cursor.
    - :meth:`cursor` is the highest revision of any delivery the sink has been given
      and has kept (applied or refused), read back from the sink itself: a relay that
      starts, or takes over from a dead one, continues from there.
    """

    #: the entry-point name (``--sink NAME``)
    name: str = ""

    @abc.abstractmethod
    def __init__(self, url: str, *, namespace: str) -> None:
        """Parse ``url`` and remember where to connect; a bad URL is a ``ConfigError``.
        Connecting may wait for the first call."""

    @abc.abstractmethod
    def init_schema(self) -> None:
        """Create what the sink needs (tables, indexes); idempotent (``--init``)."""

    @abc.abstractmethod
    def cursor(self) -> int:
        """The highest revision the sink has kept; 0 when it holds nothing yet."""

    @abc.abstractmethod
    def apply(self, batch: Sequence[Delivery]) -> Applied:
        """Apply a batch in revision order (the relay delivers it sorted)."""

    def prepare(self, delivery: Delivery) -> Delivery:
        """Per-decision work done ahead of :meth:`apply`, on the follower's thread as
        decisions arrive, so that it overlaps the previous batch's write (rows, encoding);
        return the delivery with ``prepared`` set (:meth:`Delivery.with_prepared`, which
        leaves an undecoded ``decision`` undecoded). It must not touch the sink's store.
        The default does nothing."""
        return delivery

    def close(self) -> None:  # noqa: B027 - optional hook: most sinks hold a connection
        """Release connections; the sink is not used again."""
