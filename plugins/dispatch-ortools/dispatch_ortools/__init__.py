"""OR-Tools solver plugin for the dispatch coordinator (entry point ``ortools-flow``)."""

from dispatch_ortools.flow import MinCostFlowSolver

__all__ = ["MinCostFlowSolver"]
__version__ = "0.1.0"
