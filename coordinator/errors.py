"""Every error the coordinator raises, under one root.

::

    DispatchError
    ├── EtcdError                 anything that went wrong talking to etcd
    │   ├── EtcdUnavailable       no endpoint answered (down, partitioned, no quorum)
    │   ├── EtcdTimeout           a request ran past its deadline
    │   ├── EtcdAuthError         wrong user/password, certificate or permission
    │   ├── EtcdCompacted         a revision asked for has been compacted away
    │   └── EtcdNoSpace           etcd's NOSPACE alarm: the database is over its quota
    ├── LeaseLost                 the session's lease expired or was revoked
    ├── NotLeader                 an election verb needs leadership we do not hold
    │   └── FencedOut             a fenced write was rejected: someone else leads
    ├── ConfigError               invalid settings or command-line input
    │   ├── CitySettingsError     a city's settings in etcd are malformed
    │   └── WorkerIdTaken         another live session holds this worker id
    ├── StateError                a city's state could not be loaded or is malformed
    │   ├── StateUnavailable      the state's store (database, HTTP service) cannot be reached
    │   ├── StaleState            the state is older than the city's --max-state-age
    │   └── StateGone             a past decision's state cannot be read back (replay)
    ├── PluginError               a solver or state source could not be loaded
    ├── SolverFailed              a solver raised, hung, or returned an invalid result
    ├── IncompleteHistory         a replay of etcd's history stopped short of its end
    └── SinkError                 a sink could not take a batch or report its cursor
        └── SinkUnavailable       the sink's store cannot be reached (down, restarting)

etcd and gRPC exceptions are translated in exactly one place, ``coordinator.etcd``; a
sink's database or HTTP errors in that sink's own module; the original is kept as
``__cause__``. A solver's own exception is wrapped in
``SolverFailed`` by the solve runner, so code above it never sees foreign types.
"""

from __future__ import annotations

__all__ = [
    "CitySettingsError",
    "ConfigError",
    "DispatchError",
    "EtcdAuthError",
    "EtcdCompacted",
    "EtcdError",
    "EtcdNoSpace",
    "EtcdTimeout",
    "EtcdUnavailable",
    "FencedOut",
    "IncompleteHistory",
    "LeaseLost",
    "NotLeader",
    "PluginError",
    "SinkError",
    "SinkUnavailable",
    "SolverFailed",
    "StaleState",
    "StateError",
    "StateGone",
    "StateUnavailable",
    "WorkerIdTaken",
]


class DispatchError(Exception):
    """Root of every error this project raises."""


class EtcdError(DispatchError):
    """A request to etcd failed."""


class EtcdUnavailable(EtcdError):
    """No etcd endpoint could serve the request."""


class EtcdTimeout(EtcdError):
    """An etcd request ran past its deadline (often: the cluster has no quorum)."""


class EtcdAuthError(EtcdError):
    """etcd refused our credentials or our permissions."""


class EtcdCompacted(EtcdError):
    """The revision asked for is older than etcd's compaction point."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class EtcdNoSpace(EtcdError):
    """etcd refused a write because its NOSPACE alarm is raised: the database reached
    its quota (``--quota-backend-bytes``). Every put, lease grant and campaign is refused
    (etcd 3.5 refuses read-only transactions too) until an operator compacts,
    defragments and disarms the alarm; reads and keep-alives still work. Retrying is
    right: writes succeed again the moment the alarm is disarmed."""


class LeaseLost(DispatchError):
    """The session's lease is gone: everything attached to it is gone too."""


class NotLeader(DispatchError):
    """The caller does not (or no longer) lead the election."""


class FencedOut(NotLeader):
    """A write guarded by a fencing token was rejected by etcd.

    Raised when the compare ``create_revision(candidate key) == token`` fails inside
    the write's transaction: the caller's leadership ended (lease expired, key deleted,
    a newer leader exists) and it must stop acting for the city at once.
    """

    def __init__(self, city: str, token: int, key: str) -> None:
        super().__init__(
            f"fenced out of {city}: candidate key {key} no longer has create revision {token}"
        )
        self.city = city
        self.token = token
        self.key = key


class ConfigError(DispatchError):
    """Invalid configuration or command-line input."""


class CitySettingsError(ConfigError):
    """A city's settings stored in etcd cannot be used."""


class WorkerIdTaken(ConfigError):
    """Another live session holds this worker id: a restarted worker waits for the old
    lease to expire rather than steal the id from a possibly live process."""


class StateError(DispatchError):
    """A city's state could not be loaded, or it is malformed."""


class StateUnavailable(StateError):
    """The store a city's state is read from (a database, an HTTP service) cannot be
    reached or did not answer within the tick's time budget; the city backs off and
    tries again."""


class StaleState(StateError):
    """The state was observed longer ago than the city's ``max_state_age`` allows: its
    producer has probably stopped, and deciding on it would dispatch from the past."""

    def __init__(self, city: str, age: float, limit: float) -> None:
        super().__init__(
            f"state of {city} is stale: observed {age:.1f}s ago, more than its "
            f"max state age of {limit:g}s (has its producer stopped?)"
        )
        self.city = city
        self.age = age
        self.limit = limit


class StateGone(StateError):
    """The state a past decision was made on cannot be read back: etcd compacted the
    revision it was read at and the city did not archive it, or the archive has no such
    snapshot. A replay of that decision is impossible, and says so in one line."""


class PluginError(DispatchError):
    """A solver or state source plugin could not be loaded or breaks the contract."""


class SolverFailed(DispatchError):
    """A solver raised, ran past its budget, or returned an invalid solution."""


class IncompleteHistory(DispatchError):
    """The replay of etcd's history stopped short of the revision it had to reach, so a
    verification over it would be incomplete."""


class SinkError(DispatchError):
    """A sink refused a batch for a reason other than "not newer", or failed."""


class SinkUnavailable(SinkError):
    """The sink's store cannot be reached right now; the relay retries with backoff."""
