"""Dispatch solvers: the contract, the shared cost model, built-in models, conformance kit.

Pure computation on numpy. Nothing here imports ``coordinator``, ``protos`` or etcd, so
a third-party solver package depends on this layer alone. The heavier pieces
(``solvers.cost``, ``solvers.validate``, the models, ``solvers.conformance``) are
imported from their own modules; only the contract is re-exported here.
"""

from solvers.contract import NAMESPACE, CityState, Solution, Solver

__all__ = ["NAMESPACE", "CityState", "Solution", "Solver"]
