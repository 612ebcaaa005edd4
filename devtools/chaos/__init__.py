"""Proof under faults: a chaos harness for the dispatch coordinator.

``python -m devtools.chaos --duration 600 --seed 7 --workers 4 --cities 50`` (or
``make chaos``) runs a 3-member etcd cluster on loopback and ``--workers`` real
``dispatch-worker`` processes, each talking to etcd through its own loopback TCP proxies
(``devtools.proxy``), over ``--cities`` cities, and ``--relays`` real ``dispatch-relay``
processes carrying the decisions into a local PostgreSQL, each through a proxy of its
own. Fault lanes run side by side, each injecting one fault at a time from a schedule
drawn from the seed:

- workers: ``kill9`` (then restart), ``sigterm`` (then restart), ``sigstop`` (longer
  than the lease TTL, then SIGCONT), ``cut`` (the worker's connections to etcd closed
  and refused, then restored), ``net-stall`` (its connections silently stop moving
  bytes, then flow again), ``net-delay`` (every chunk of bytes held 30-250 ms);
- etcd: ``member-kill`` and ``leader-kill`` (then restart), ``member-pause``
  (SIGSTOP/SIGCONT), ``quorum-loss`` (two members stopped, then brought back; these
  windows are recorded and left out of availability), and what operators do on
  purpose: ``member-restart`` (SIGTERM, then started on its data), ``rolling-restart``
  (every member so, in turn, healthy between: an upgrade), ``member-replace``
  (``member remove``, ``member add``, an empty data directory);
- solvers: ``slow-solve`` (a ``test-slow`` city's solver made to stall past its period
  for a few seconds, through its settings), ``solver-kill`` (one of a worker's solver
  processes killed, perhaps mid-solve);
- the sink: ``relay-kill9`` (then restart), ``relay-sigstop`` (past the relay's lease, then
  SIGCONT), ``relay-cut`` (its connection to PostgreSQL closed and refused, then
  restored), ``pg-restart`` (PostgreSQL stopped or killed, then started on the same port).

By default a fault strikes a whole worker or etcd about every 45 s (``--pace`` scales
it; ``--pace 20`` is a storm), each given the lease TTL and a second to recover before
the next; etcd runs with a 500 ms election timeout and the workers with 1 s leases.

Afterwards it heals everything, lets the fleet settle, replays etcd's whole history with
``coordinator.ops.verify``, lets the relays catch up with etcd's newest decision and
checks the database against etcd's history with the independent ``devtools.pgcheck``,
and reports faults by kind, decisions checked, violations and sink findings (the run
fails on any), availability overall and per city, the longest decision gap per fault
kind, and what each worker holds (threads, descriptors, solver processes) before and
after. See ``docs/safety.md``.

The modules, each one idea, each importing only modules below it in this list:
``__main__`` (the command), ``harness`` (the fleet and the phases of a run; it
implements ``target.ChaosTarget``), ``report`` (printing and JSON), ``analysis`` (gaps,
availability, holdings), ``config`` (settings, defaults, the command line, the cities),
``faults`` (the lanes and what each kind of fault does, through ``target`` alone),
``target`` (the protocol between faults and harness), ``sink`` (PostgreSQL and the relay
slots), ``fleet`` (worker slots, the etcd cluster's members), ``process`` (a restartable
process slot), ``view`` (the fleet as etcd shows it), ``console`` (live output).
"""

from devtools.chaos.analysis import ChaosResult
from devtools.chaos.config import ChaosConfig
from devtools.chaos.harness import run
from devtools.chaos.target import ChaosTarget

__all__ = ["ChaosConfig", "ChaosResult", "ChaosTarget", "run"]
