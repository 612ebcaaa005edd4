"""The solver contract: what a dispatch model receives and what it must return.

A solver is a pure function of one city's state. It is stateless between ticks, never
mutates its input, never touches etcd, and depends on nothing in ``coordinator``. A
third-party solver needs this module (and numpy) and nothing else of ours.

Units: positions are metres on a local plane, speeds are metres per second, times are
seconds. ``ready_in`` and ``pickup_eta`` are relative to ``CityState.taken_at``.

Output is given as index arrays into the state's arrays rather than as id strings:
it keeps large cities vectorised and makes validation a few numpy operations. An order
that does not appear in ``Solution.orders`` is unassigned.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = ["NAMESPACE", "CityState", "Solution", "Solver"]

#: The stevedore / entry-point namespace solvers register in.
NAMESPACE = "dispatch.solvers"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
StrArray = npt.NDArray[np.str_]


@dataclass(frozen=True, eq=False)
class CityState:
    """One city at one instant: open orders and available couriers.

    Orders (length ``n``):
      ``order_ids`` (str), ``pickup`` and ``dropoff`` (n×2 float, metres),
      ``ready_in`` (float seconds until the order can be collected, ≥ 0),
      ``size`` (int ≥ 1, capacity units the order takes).
    Couriers (length ``m``):
      ``courier_ids`` (str), ``position`` (m×2 float, metres),
      ``speed`` (float m/s, > 0), ``capacity`` (int ≥ 0, free capacity units now),
      ``vehicle`` (str, e.g. ``bike``, ``scooter``, ``car``).
    """

    city: str
    taken_at: float
    order_ids: StrArray
    pickup: FloatArray
    dropoff: FloatArray
    ready_in: FloatArray
    size: IntArray
    courier_ids: StrArray
    position: FloatArray
    speed: FloatArray
    capacity: IntArray
    vehicle: StrArray

    @property
    def n_orders(self) -> int:
        return int(self.order_ids.shape[0])

    @property
    def n_couriers(self) -> int:
        return int(self.courier_ids.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field by name (used to check that a solver mutated nothing)."""
        return {
            name: getattr(self, name)
            for name in (
                "order_ids", "pickup", "dropoff", "ready_in", "size",
                "courier_ids", "position", "speed", "capacity", "vehicle",
            )
        }

    def freeze(self) -> CityState:
        """Mark every array read-only, so an in-place write by a solver raises."""
        for array in self.arrays().values():
            array.setflags(write=False)
        return self


@dataclass(frozen=True, eq=False)
class Solution:
    """A solver's answer.

    ``orders[i]`` (index into ``state.order_ids``) goes to ``couriers[i]`` (index into
    ``state.courier_ids``), collected an estimated ``pickup_eta[i]`` seconds after
    ``state.taken_at``. A courier may appear several times (bundled orders) as long as
    the sizes of its orders fit its free capacity. Orders not listed are unassigned.
    """

    orders: IntArray
    couriers: IntArray
    pickup_eta: FloatArray
    #: Free-form figures a solver wants recorded (iterations, gap, ...); numbers only.
    stats: Mapping[str, float] = field(default_factory=dict)

    @staticmethod
    def empty() -> Solution:
        return Solution(
            orders=np.zeros(0, dtype=np.int64),
            couriers=np.zeros(0, dtype=np.int64),
            pickup_eta=np.zeros(0, dtype=np.float64),
        )


class Solver(abc.ABC):
    """Base class of every dispatch model.

    Subclasses are registered as entry points in :data:`NAMESPACE` and instantiated with
    no arguments. ``solve`` must be deterministic for identical input, must not mutate
    ``state``, and should return within ``budget`` seconds (the coordinator abandons a
    solve that runs far past it). Raise ``ValueError`` for parameters it cannot accept.
    """

    #: One-line description shown by ``dispatchctl solvers``.
    description: ClassVar[str] = ""

    #: Cities with at most this many order × courier pairs may be solved on a thread of
    #: the worker even under process isolation (0: never). Sending a city to a solver
    #: process and back costs the worker about half a millisecond of CPU, more than a
    #: small greedy solve itself. Raise it only for a solver that on such cities returns
    #: in well under a millisecond, cannot hang and holds the GIL for no longer.
    inline_max_pairs: ClassVar[int] = 0

    @abc.abstractmethod
    def solve(self, state: CityState, params: Mapping[str, Any], budget: float) -> Solution:
        """Assign orders to couriers for one tick."""
