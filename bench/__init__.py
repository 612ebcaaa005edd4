"""The benchmarks: one module each, run from the repository root as
``python -m bench.<name>`` (``coordination``, ``tickcost``, ``scale``, ``failover``,
``leaselock``, ``solvers``, ``relay``, ``fleet``, ``steady``, ``watchresume``,
``decisionsize``), and ``python -m bench.report``, which renders docs/benchmarks.md from
their results.

What the benchmarks share is split by idea: ``host`` (the machine measured), ``stats``,
``output`` (console tables, results files, plots, the log line), ``etcd`` (a private etcd,
its /metrics, cities in it), ``processes`` (worker processes, the sleeper baseline),
``decisionlog`` (decisions as a watch delivers them), ``samples`` (a decision as the
worker writes it), ``stall`` (etcd or workers stopped past the TTL, and the recovery read
from the samples) and ``rawpg`` (the relay benchmark's PostgreSQL side and raw psycopg
baseline). Not shipped in the wheel.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: where each benchmark writes ``<name>.json``, and the report reads them
RESULTS = ROOT / "bench" / "results"
#: where the plots go, beside the page that links them
IMAGES = ROOT / "docs" / "img"
