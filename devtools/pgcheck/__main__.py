"""``python -m devtools.pgcheck``: print the findings, exit 0 clean, 1 findings, 2 could
not check."""

from __future__ import annotations

import argparse
import sys

from devtools.pgcheck import CheckError, check


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m devtools.pgcheck",
        description="Check a postgres sink against etcd's history of accepted decisions. "
                    "Exit status: 0 clean, 1 findings, 2 could not check.")
    p.add_argument("--etcd", required=True, metavar="HOST:PORT",
                   help="etcd endpoints, comma-separated")
    p.add_argument("--namespace", default="/dispatch", help="(default /dispatch)")
    p.add_argument("--pg", required=True, metavar="URL",
                   help="the sink's database, e.g. postgresql://dispatch@db:5432/dispatch")
    p.add_argument("--etcdctl", default=None, help="the etcdctl binary (default: on PATH)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="for reading etcd's history (default 60)")
    p.add_argument("--show", type=int, default=20, metavar="N",
                   help="findings to print (default 20)")
    args = p.parse_args(argv)
    try:
        result = check(args.etcd, args.namespace, args.pg, etcdctl=args.etcdctl,
                       timeout=args.timeout)
    except CheckError as exc:
        print(f"pgcheck: cannot check: {exc}", file=sys.stderr)
        return 2
    for finding in result.findings[:args.show]:
        print(f"FINDING {finding}")
    if len(result.findings) > args.show:
        print(f"... and {len(result.findings) - args.show} more")
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
