"""What a chaos run is asked to do: its settings, their defaults and its command line.

:class:`ChaosConfig` holds the settings; :func:`parser` and :func:`from_args` are the
``python -m devtools.chaos`` command line over them, and :func:`replay_command` turns a
run's settings and seed back into the command that replays its fault schedule.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from coordinator.settings import CityConfig
from devtools.chaos.faults import ETCD_KINDS, KINDS, SINK_KINDS, SOLVER_KINDS, WORKER_KINDS

__all__ = ["DEFAULT", "LANES", "NAMESPACE", "RECOVERY_MARGIN", "SLOW_SOLVER", "SOLVERS",
           "ChaosConfig", "draw_cities", "from_args", "parser", "replay_command"]

NAMESPACE = "/chaos"
SOLVERS = ("greedy", "hungarian", "bundle")
SLOW_SOLVER = "test-slow"
#: a fault's after-effects (lease expiry, restart, rebalancing) count against it for
#: this long after it was undone, on top of the lease TTL
RECOVERY_MARGIN = 1.0
#: The fault lanes and the quiet time (seconds, drawn uniformly) a lane leaves after each
#: of its faults at ``pace`` 1, the default: a fault striking a whole worker or etcd
#: every ~45 s on average, each left to recover before the next (``docs/safety.md``,
#: "Results": what each kind of fault costs, and why availability is a budget that these
#: faults spend). ``--pace 20`` is the storm of earlier runs: one every ~4.5 s. The
#: sink's lane (relays and PostgreSQL, with ``--relays``) strikes about once a minute;
#: its faults cost no decision, so they need no turn.
LANES = (
    ("workers", WORKER_KINDS, (40.0, 120.0)),
    ("etcd", ETCD_KINDS, (60.0, 160.0)),
    ("solvers", SOLVER_KINDS, (80.0, 200.0)),
    ("sink", SINK_KINDS, (30.0, 90.0)),
)


@dataclass
class ChaosConfig:
    """The settings of one chaos run; the command line's defaults are these."""

    duration: float = 60.0
    seed: int | None = None
    workers: int = 4
    cities: int = 50
    #: ``dispatch-relay`` processes carrying decisions into a local PostgreSQL (one
    #: active, the others standing by); 0: no sink, no sink faults, no sink check
    relays: int = 2
    #: the workers' lease TTL: 1 s, the shortest etcd grants with a 500 ms election
    #: timeout (1.5 election timeouts, rounded up); how long a dead worker's cities wait
    ttl: int = 1
    #: etcd's raft election timeout in ms (heartbeat a tenth of it): 500, for members on
    #: one host (etcd's default, 1000, is for a network); how long losing the raft leader
    #: stops every write
    etcd_election_ms: int = 500
    #: fault kinds to inject (default: all)
    kinds: tuple[str, ...] = KINDS
    #: >1 injects faults more often, <1 less often
    pace: float = 1.0
    #: let worker and etcd faults overlap (harsher; gaps then belong to several faults)
    overlap: bool = False
    #: share of the cities whose solver is ``test-slow`` (target of ``slow-solve``)
    slow_share: float = 0.1
    warmup_timeout: float = 240.0
    settle_timeout: float = 120.0
    base: Path | None = None
    keep: bool = False
    solve_isolation: str = "process"
    #: solver processes per worker: two for the cities' compute (this machine's cores)
    #: and one more because ``test-slow`` *sleeps*, holding a process without computing;
    #: with two, the other cities' solves queued behind it and came late
    solve_processes: int | None = 3
    #: live progress line: None = when stdout is a terminal
    progress: bool | None = None
    #: how to start a worker (default: ``python -m coordinator.cli.worker``); for trying
    #: a patched worker under the same storm
    worker_command: tuple[str, ...] = ()
    #: extra arguments for every worker
    worker_args: tuple[str, ...] = ()


#: the settings of a run given no options
DEFAULT = ChaosConfig()


def parser() -> argparse.ArgumentParser:
    """The ``python -m devtools.chaos`` command line; its defaults are :data:`DEFAULT`'s."""
    d = DEFAULT
    p = argparse.ArgumentParser(
        prog="python -m devtools.chaos",
        description="Run workers, a 3-member etcd cluster and relays into PostgreSQL "
                    "under random faults, then check etcd's history (every decision from "
                    "the leader of its time) and the database against it. Exit status: "
                    "0 pass, 1 safety violation or sink finding, 3 not recovered.")
    p.add_argument("--duration", type=float, default=d.duration,
                   help=f"seconds of faults (default {d.duration:g}), then heal, settle, "
                        "verify")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the fault schedule and cities (default: random, "
                        "printed; pass it again to replay the same schedule)")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--cities", type=int, default=d.cities)
    p.add_argument("--relays", type=int, default=d.relays, metavar="N",
                   help=f"dispatch-relay processes carrying the decisions into a local "
                        f"PostgreSQL, each through its own proxy to it (default "
                        f"{d.relays}: one active, one standing by). Their faults: "
                        f"{', '.join(SINK_KINDS)}; afterwards the database is checked "
                        "against etcd's history (devtools.pgcheck). 0: no sink")
    p.add_argument("--lease-ttl", type=int, default=d.ttl, dest="ttl", metavar="SECONDS",
                   help=f"the workers' lease TTL (default {d.ttl}): how long a dead or "
                        "cut-off worker's cities wait")
    p.add_argument("--etcd-election-ms", type=int, default=d.etcd_election_ms, metavar="MS",
                   help=f"etcd's raft election timeout (default {d.etcd_election_ms}, for "
                        "members on one host; etcd's own default is 1000; the heartbeat "
                        "is a tenth): how long losing the raft leader stops writes. etcd "
                        "refuses lease TTLs under 1.5 election timeouts")
    p.add_argument("--faults", default=",".join(d.kinds),
                   help=f"fault kinds to inject, comma-separated (default: all: "
                        f"{','.join(KINDS)})")
    p.add_argument("--pace", type=float, default=d.pace,
                   help=f"fault frequency multiplier (default {d.pace:g}: a fault striking "
                        "a whole worker or etcd every ~45 s on average; 2: twice as "
                        "often; 20: the storm of earlier runs, one every ~4.5 s)")
    p.add_argument("--overlap", action="store_true",
                   help="let worker and etcd faults overlap (by default they take "
                        "turns, so that each gap belongs to one fault)")
    p.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every dispatch-worker (repeatable), e.g. "
                        "--worker-arg=--etcd-timeout=1")
    p.add_argument("--solve-isolation", choices=["process", "thread"],
                   default=d.solve_isolation)
    p.add_argument("--solve-processes", type=int, default=d.solve_processes,
                   help=f"solver processes per worker (default {d.solve_processes}: two "
                        "for the compute, one for test-slow, which sleeps)")
    p.add_argument("--dir", type=Path, default=None,
                   help="where to put etcd data and logs (default: a temp directory)")
    p.add_argument("--keep", action="store_true",
                   help="keep logs even when the run passes")
    p.add_argument("--no-progress", action="store_true",
                   help="no live progress line (one status line every 10 s instead)")
    return p


def from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> ChaosConfig:
    """The settings that parsed ``args`` ask for; ``p.error`` (exit 2) on a bad mix."""
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        p.error(f"unknown fault kinds: {', '.join(unknown)}")
    if args.workers < 2 or args.cities < 1 or args.duration < 0 or args.ttl < 1 \
            or args.relays < 0:
        p.error("need --workers >= 2, --cities >= 1, --duration >= 0, --lease-ttl >= 1, "
                "--relays >= 0")
    if args.etcd_election_ms < 10 or args.ttl * 1000 < 1.5 * args.etcd_election_ms:
        p.error(f"etcd would stretch a lease TTL of {args.ttl}s to 1.5 election "
                f"timeouts ({1.5 * args.etcd_election_ms / 1000:g}s): give a longer "
                "--lease-ttl or a shorter --etcd-election-ms (at least 10)")
    return ChaosConfig(
        duration=args.duration, seed=args.seed, workers=args.workers, cities=args.cities,
        relays=args.relays, ttl=args.ttl, etcd_election_ms=args.etcd_election_ms,
        kinds=kinds, pace=args.pace, overlap=args.overlap, base=args.dir,
        keep=args.keep, worker_args=tuple(args.worker_arg),
        solve_isolation=args.solve_isolation, solve_processes=args.solve_processes,
        progress=False if args.no_progress else None,
    )


def replay_command(cfg: ChaosConfig, seed: int) -> str:
    """The command line that replays this run's schedule."""
    replay = (f"python -m devtools.chaos --seed {seed} --duration {cfg.duration:g} "
              f"--workers {cfg.workers} --cities {cfg.cities}")
    if cfg.relays != DEFAULT.relays:
        replay += f" --relays {cfg.relays}"
    if cfg.ttl != DEFAULT.ttl:
        replay += f" --lease-ttl {cfg.ttl}"
    if cfg.etcd_election_ms != DEFAULT.etcd_election_ms:
        replay += f" --etcd-election-ms {cfg.etcd_election_ms}"
    if cfg.pace != DEFAULT.pace:
        replay += f" --pace {cfg.pace:g}"
    if cfg.overlap:
        replay += " --overlap"
    if set(cfg.kinds) != set(KINDS):
        replay += f" --faults {','.join(cfg.kinds)}"
    if cfg.solve_isolation != DEFAULT.solve_isolation:
        replay += f" --solve-isolation {cfg.solve_isolation}"
    if cfg.solve_processes != DEFAULT.solve_processes:
        replay += f" --solve-processes {cfg.solve_processes}"
    replay += "".join(f" --worker-arg={a}" for a in cfg.worker_args)
    return replay


def draw_cities(cfg: ChaosConfig, seed: int, *, slow: bool) -> list[CityConfig]:
    """The run's ``cfg.cities`` cities, drawn from ``seed``: periods of 0.5-1 s, solved in
    turn by :data:`SOLVERS`; with ``slow``, a ``cfg.slow_share`` of them on
    :data:`SLOW_SOLVER`, which sleeps 0.3 of a period on every tick."""
    rng = random.Random(f"{seed}:cities")
    every = max(1, round(1 / cfg.slow_share)) if slow else 0
    cities = []
    for i in range(cfg.cities):
        name = f"c{i:03d}"
        period = round(rng.uniform(0.5, 1.0), 2)
        orders, couriers = rng.randint(20, 50), rng.randint(10, 30)
        if every and i % every == every - 1:
            cities.append(CityConfig(name, SLOW_SOLVER, period,
                                     params={"orders": orders, "couriers": couriers,
                                             "seed": i, "sleep": round(0.3 * period, 3)}))
        else:
            cities.append(CityConfig(name, SOLVERS[i % len(SOLVERS)], period,
                                     params={"orders": orders, "couriers": couriers,
                                             "seed": i}))
    return cities
