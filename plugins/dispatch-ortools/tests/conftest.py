"""Make the core's ``solvers`` package importable when only this plugin is installed.

Normally the core (``dispatch-coordinator``) is installed and nothing happens here. In a
checkout where it is not, fall back to the repository this plugin sits in
(``<repo>/plugins/dispatch-ortools``), as ``PYTHONPATH=<repo>`` would.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import solvers.contract  # noqa: F401
except ImportError:  # pragma: no cover - core not installed
    _repo = Path(__file__).resolve().parents[3]
    if (_repo / "solvers" / "contract.py").is_file():
        sys.path.insert(0, str(_repo))
