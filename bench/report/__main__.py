"""Render docs/benchmarks.md from the benchmarks' results.

    python -m bench.report                          # bench/results/*.json → docs/benchmarks.md
    python -m bench.report --results DIR --out FILE

Reads every ``<name>.json`` in the results directory (``coordination``, ``tickcost``,
``scale``, ``failover``, ``leaselock``, ``relay``, ``solvers``; any other name gets a
short section of its own) and writes one Markdown page: how to reproduce the figures, the
targets from the issues and whether each is met, then a section per benchmark with the
machine it ran on, its tables (absolute figures beside the baseline measured in the same
run, and the ratio to it) and its plots (``docs/img/<name>.png``, linked only if the file
exists).

Every figure on the page comes from the results files; a key a file lacks drops that
cell, row or table instead of failing, so results from older or ``--quick`` runs render
too. Standard library only: it runs without the benchmarks' dependencies and never
starts etcd. ``make bench`` runs it last; ``make bench-report`` runs only it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import IMAGES, RESULTS, ROOT
from bench.report.page import load_results, render
from bench.report.parts import Context

OUT = ROOT / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="DIR",
                        help="directory of <name>.json results (default: bench/results)")
    parser.add_argument("--out", type=Path, default=OUT, metavar="FILE",
                        help="Markdown file to write (default: docs/benchmarks.md)")
    parser.add_argument("--images", type=Path, default=IMAGES, metavar="DIR",
                        help="where the plots are; linked relative to --out, and only if "
                             "present (default: docs/img)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"no results directory: {args.results}")
    results, problems = load_results(args.results)
    for name, problem in problems.items():
        print(f"report: skipped {name}.json: {problem}", file=sys.stderr)
    try:
        shown = args.results.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        shown = str(args.results)
    page = render(results, problems, Context(out=args.out.resolve(),
                                             images=args.images.resolve()), shown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out} from {len(results)} results file(s) in {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
