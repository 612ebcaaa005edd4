"""``python -m devtools.chaos``: see ``devtools.chaos``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from devtools.chaos.faults import KINDS
from devtools.chaos.run import ChaosConfig, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.chaos",
        description="Run workers and a 3-member etcd cluster under random faults, then "
                    "check etcd's history: every decision from the leader of its time. "
                    "Exit status: 0 pass, 1 safety violation, 3 not recovered.")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of faults (default 60), then heal, settle, verify")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the fault schedule and cities (default: random, "
                             "printed; pass it again to replay the same schedule)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--cities", type=int, default=50)
    parser.add_argument("--lease-ttl", type=int, default=1, dest="ttl", metavar="SECONDS",
                        help="the workers' lease TTL (default 1): how long a dead or cut-off "
                             "worker's cities wait")
    parser.add_argument("--etcd-election-ms", type=int, default=500, metavar="MS",
                        help="etcd's raft election timeout (default 500, for members on one "
                             "host; etcd's own default is 1000; the heartbeat is a tenth): "
                             "how long losing the raft leader stops writes. etcd refuses "
                             "lease TTLs under 1.5 election timeouts")
    parser.add_argument("--faults", default=",".join(KINDS),
                        help=f"fault kinds to inject, comma-separated (default: all: "
                             f"{','.join(KINDS)})")
    parser.add_argument("--pace", type=float, default=1.0,
                        help="fault frequency multiplier (default 1: a fault striking a "
                             "whole worker or etcd every ~45 s on average; 2: twice as "
                             "often; 20: the storm of earlier runs, one every ~4.5 s)")
    parser.add_argument("--overlap", action="store_true",
                        help="let worker and etcd faults overlap (by default they take "
                             "turns, so that each gap belongs to one fault)")
    parser.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every dispatch-worker (repeatable), e.g. "
                             "--worker-arg=--etcd-timeout=1")
    parser.add_argument("--solve-isolation", choices=["process", "thread"], default="process")
    parser.add_argument("--solve-processes", type=int, default=3,
                        help="solver processes per worker (default 3: two for the compute, "
                             "one for test-slow, which sleeps)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to put etcd data and logs (default: a temp directory)")
    parser.add_argument("--keep", action="store_true",
                        help="keep logs even when the run passes")
    parser.add_argument("--no-progress", action="store_true",
                        help="no live progress line (one status line every 10 s instead)")
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(unknown)}")
    if args.workers < 2 or args.cities < 1 or args.duration < 0 or args.ttl < 1:
        parser.error("need --workers >= 2, --cities >= 1, --duration >= 0, --lease-ttl >= 1")
    if args.etcd_election_ms < 10 or args.ttl * 1000 < 1.5 * args.etcd_election_ms:
        parser.error(f"etcd would stretch a lease TTL of {args.ttl}s to 1.5 election "
                     f"timeouts ({1.5 * args.etcd_election_ms / 1000:g}s): give a longer "
                     "--lease-ttl or a shorter --etcd-election-ms (at least 10)")
    config = ChaosConfig(
        duration=args.duration, seed=args.seed, workers=args.workers, cities=args.cities,
        ttl=args.ttl, etcd_election_ms=args.etcd_election_ms, kinds=kinds, pace=args.pace,
        overlap=args.overlap, base=args.dir,
        keep=args.keep, worker_args=tuple(args.worker_arg),
        solve_isolation=args.solve_isolation, solve_processes=args.solve_processes,
        progress=False if args.no_progress else None,
    )
    # SIGTERM behaves like Ctrl-C: stop, clean up, no orphaned workers or etcd servers
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = run(config)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
