"""The page: every benchmark's section in a fixed order (a results file of another name
gets a generic one), preceded by how to reproduce the figures and the targets at a glance.

A surprise in one results file costs that file's section, never the page.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import (
    coordination,
    decisionsize,
    failover,
    fleet,
    leaselock,
    other,
    relay,
    scale,
    solvers,
    steady,
    tickcost,
    watchresume,
)
from bench.report.format import DASH, markdown_table, slug, verdict
from bench.report.parts import Context, Section

#: seconds between attempts at reading a results file a benchmark may be rewriting
RETRY_DELAY = 0.5
#: the order of the sections; a results file with another name gets a generic section
ORDER = ("coordination", "tickcost", "scale", "failover", "leaselock", "relay", "solvers",
         "fleet", "steady", "steady-stall", "steady-survivor", "watchresume",
         "decisionsize")
#: the intro's table of commands: what each benchmark measures, and its baseline
COMMANDS = {
    "coordination": ("fenced commits/s (`DecisionStore.commit`, a whole worker), CPU per "
                     "commit, round trips per tick",
                     "raw etcd transactions of the same shape, same client"),
    "solvers": ("solver speed and cost", "`scipy.optimize.linear_sum_assignment`"),
    "tickcost": ("a busy worker's CPU per tick, thread by thread, in situ",
                 "one raw etcd call; the same ticks run in a row on one thread"),
    "failover": ("kill -9 failover (TTL 2 s, 5 s), graceful handover gaps (SIGTERM, drain, "
                 "undrain, join), a joiner's fair share", "the lease TTL and the period"),
    "leaselock": ("client-go's LeaseLock (15/10/2 s) against our election: kill -9 "
                  "failover, stale writes after a pause", "our election, same run"),
    "relay": ("decisions drained from etcd into PostgreSQL by `dispatch-relay`, "
              "etcd-commit-to-row latency at 1,000 decisions/s, the relay's CPU per decision",
              "raw psycopg writes of the same rows in the same batches"),
    "scale": ("1,000 cities × 4 workers at 1 s: ticks on time, lateness, CPU, RSS, etcd "
              "load; city and worker sweeps", "a process that only sleeps (scheduling delay)"),
    "fleet": ("a heavy-tailed mix of cities over 4 workers placed by measured cost: busiest "
              "worker's CPU ÷ mean, on time per size class, moves per hour, etcd bytes "
              "written", "placement by count, same run"),
    "steady": ("an hour of 1,000 cities at 1 s over 4 workers with revision compaction: "
               "etcd database in use, worker RSS and threads, on time, history readable, "
               "against time", "minute 10 of the same run; the machine's own speed and stalls, "
               "sampled beside it by a real-time probe"),
    "steady-stall": ("the same work with etcd stopped (SIGSTOP) past the lease TTL: how "
                     "long on time takes to come back over 99.5 %",
                     "the samples before the stall, same run"),
    "steady-survivor": ("the same work with every worker but one stopped past the lease "
                        "TTL: how long the survivor takes to give the cities back",
                        "the samples before the stall, same run"),
    "watchresume": ("etcd's longest put while 3 watches on a quiet prefix resume 12,000 "
                    "revisions behind: replayed, or the prefix read again",
                    "the same watches opened at the present, same run"),
    "decisionsize": ("bytes of one stored decision against the city's size (10 × 5 to "
                     "1,500 × 1,000), fixed part and per pair",
                     "the same decision in the form written before the trim"),
}

#: how to run a benchmark whose results file is not named after its module
RUN = {"steady-stall": "python -m bench.steady --minutes 20 --stall-etcd 8:12 "
                       "--sample-seconds 10 --baseline-minute 2 --no-baseline-defrag "
                       "--results steady-stall",
       "steady-survivor": "python -m bench.steady --minutes 15 --stall-workers 6:12 "
                          "--sample-seconds 10 --baseline-minute 2 --no-baseline-defrag "
                          "--results steady-survivor"}


def command(name: str) -> str:
    """The command that writes ``bench/results/<name>.json``."""
    return RUN.get(name, f"python -m bench.{name}")


RENDERERS: dict[str, Callable[[dict[str, Any], Context], Section]] = {
    "coordination": coordination.render, "tickcost": tickcost.render, "scale": scale.render,
    "failover": failover.render, "leaselock": leaselock.render, "relay": relay.render,
    "solvers": solvers.render, "fleet": fleet.render, "steady": steady.render,
    "steady-stall": steady.render_stall, "steady-survivor": steady.render_survivor,
    "watchresume": watchresume.render, "decisionsize": decisionsize.render,
}
TITLES = {"coordination": "Coordination overhead", "tickcost": "CPU per tick, in situ",
          "scale": "Scale",
          "failover": "Failover and handover",
          "leaselock": "Comparison with client-go's LeaseLock",
          "relay": "Decisions out: the relay", "solvers": "Solvers",
          "fleet": "Placement by cost: a realistic fleet",
          "steady": "An hour of steady work",
          "steady-stall": steady.TITLES["etcd"],
          "steady-survivor": steady.TITLES["workers"],
          "watchresume": "Resuming a quiet watch",
          "decisionsize": "What a decision costs"}


def load_results(directory: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every ``*.json`` in ``directory`` that reads as an object, and what went wrong with
    the others. A benchmark may be rewriting a file while we read it: retry briefly."""
    found: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        error = ""
        for attempt in range(3):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt < 2:
                    time.sleep(RETRY_DELAY)
                continue
            if isinstance(data, dict):
                found[path.stem] = data
                error = ""
            else:
                error = f"not a JSON object but {type(data).__name__}"
            break
        if error:
            problems[path.stem] = error
    return found, problems


def intro(results_dir: str) -> list[str]:
    lines = [
        "# Benchmarks", "",
        "<!-- Generated by `python -m bench.report` from bench/results/*.json: do not edit "
        "by hand; run `make bench-report` after a benchmark. -->", "",
        f"Every figure on this page comes from the results files in `{results_dir}`, "
        "written by the benchmarks in `bench/` together with the machine they ran on. Each "
        "benchmark measures its baseline in the same run, on the same machine, so the "
        "ratios to it travel better than the absolute figures, the more so on a busy "
        "machine: see each section's load average against its cores.", "",
        "## Reproducing", "",
        "- `make bench` runs every benchmark (about an hour on 2 cores), then regenerates "
        "this page; `make bench BENCH_ARGS=--quick` runs the short versions (a minute or "
        "two each).",
        "- `make bench-report` (or `python -m bench.report`) only regenerates this page "
        "from the results present; `python -m bench.report --help` for its options.",
        "- One benchmark at a time: each starts its own etcd on loopback (`etcd` from "
        "Debian's `etcd-server`) and its own workers, prints its tables and writes "
        "`bench/results/<name>.json`; `--quick` runs the short version, `--help` explains "
        "the options. The plots need the `bench` extra (`pip install -e '.[bench]'`).", "",
    ]
    lines += markdown_table(["command", "measures", "baseline, same run"],
                            [[f"`{command(name)}`", what, base]
                             for name, (what, base) in COMMANDS.items()])
    return lines


def render(results: dict[str, dict[str, Any]], problems: dict[str, str], ctx: Context,
           results_dir: str = "bench/results") -> str:
    names = list(ORDER) + sorted(n for n in results if n not in ORDER)
    sections: list[Section] = []
    for name in names:
        title = TITLES.get(name, f"Other results: {name}")
        if name in results:
            try:
                renderer = RENDERERS.get(name)
                section = renderer(results[name], ctx) if renderer \
                    else other.render(name, results[name], ctx)
            except Exception as exc:  # a surprise in one file must not lose the others
                print(f"report: {name}.json: {type(exc).__name__}: {exc}", file=sys.stderr)
                section = Section(name, title, [
                    f"The results in `{name}.json` could not be rendered "
                    f"({type(exc).__name__}: {exc}).", ""])
        elif name in problems:
            section = Section(name, title, [f"`{name}.json` could not be read: "
                                            f"{problems[name]}.", ""])
        else:
            section = Section(name, title, [f"No results yet: run `{command(name)}`.", ""])
        sections.append(section)

    lines = intro(results_dir)
    lines += ["## Targets at a glance", "",
              "The targets set in the issues, against the latest results; details and the "
              "baselines in each section. *missed* means the run did not reach the target.", ""]
    glance = []
    for sec in sections:
        mode = results.get(sec.name, {}).get("mode")
        where = f"[{sec.name}](#{slug(sec.title)})" + (" (quick run)" if mode == "quick" else "")
        for c in sec.checks:
            result = verdict(c.met) if c.met is not None else (c.note or DASH)
            if c.met is not None and c.note:
                result += f" ({c.note})"
            glance.append([where, c.target, c.measured, result])
    lines += markdown_table(["benchmark", "target", "measured", "result"], glance) or [
        "No results with targets yet.", ""]
    lines += ["## Contents", ""]
    lines += [f"- [{sec.title}](#{slug(sec.title)})" for sec in sections] + [""]
    for sec in sections:
        lines += [f"## {sec.title}", "", *sec.lines]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
