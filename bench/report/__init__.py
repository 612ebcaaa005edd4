"""docs/benchmarks.md from the benchmarks' results (``python -m bench.report``).

``format`` turns untrusted JSON values into Markdown cells and tables, ``parts`` holds a
section and the targets it checks, one module per benchmark renders its section
(``coordination``, ``tickcost``, ``scale``, ``failover``, ``leaselock``, ``relay``,
``solvers``; ``other`` for a results file no renderer knows), and ``page`` puts them
together.
Standard library only: it runs without the benchmarks' dependencies and never starts etcd.
"""
