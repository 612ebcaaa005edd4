"""``dispatch-relay``: accepted decisions carried from etcd into a sink, in revision order.

Modules: ``relay`` (Relay, RelayConfig: election, delivery, status), ``metrics``
(``dispatch_relay_*``), ``health`` (gRPC health on the admin port). The ordered
follower it reads from is :mod:`coordinator.recipes.follow`.
"""

from coordinator.relay.relay import Relay, RelayConfig

__all__ = ["Relay", "RelayConfig"]
