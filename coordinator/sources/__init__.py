"""State sources: where a city's state comes from at the start of each tick.

The contract is :class:`coordinator.sources.contract.StateSource`; built-ins are
registered in ``dispatch.state_sources`` (``coordinator.plugins.STATE_SOURCES``) like
any third party's:

``simulated``
    :mod:`coordinator.sources.simulated`, a deterministic synthetic city.
``etcd``
    :mod:`coordinator.sources.etcd`, a ``StateSnapshot`` JSON at ``<ns>/state/<city>``.
``postgres``
    :mod:`coordinator.sources.postgres`, open orders and available couriers read from
    PostgreSQL by two queries (a default schema, or the city's own queries).
``http``
    :mod:`coordinator.sources.http`, a ``StateSnapshot`` JSON fetched with GET.
"""

from coordinator.sources.contract import SourceContext, StateSource, int_param
from coordinator.sources.snapshot import state_from_snapshot

__all__ = ["SourceContext", "StateSource", "int_param", "state_from_snapshot"]
