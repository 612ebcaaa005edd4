"""Sinks: where accepted decisions go after etcd (``dispatch.sinks`` entry points).

A sink applies a city's decision only when its etcd revision is newer than the one it
holds for that city, so relays may crash, repeat or overlap without harm. The contract
is :class:`coordinator.sinks.contract.Sink`; :mod:`coordinator.sinks.conformance` tells a
third-party sink that it keeps it.
"""

from coordinator.sinks.contract import SINKS_NAMESPACE, Applied, Delivery, Sink

__all__ = ["SINKS_NAMESPACE", "Applied", "Delivery", "Sink"]
