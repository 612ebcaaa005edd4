"""The tickcost benchmark's section: a busy worker's CPU per tick, thread by
thread, beside a raw etcd call and the same ticks run in a row on one thread."""

from __future__ import annotations

from typing import Any

from bench.report.format import count, mapping, markdown_table, num, number, ratio, text
from bench.report.parts import Context, Section, machine_lines


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("tickcost", "CPU per tick, in situ")
    s.lines += machine_lines(d)
    setup = [f"{count(d.get('cities'))} cities" if num(d.get("cities")) is not None else "",
             f"period {number(d.get('period'), 'g')} s" if num(d.get("period")) is not None else "",
             f"`{text(d.get('solver'))}`" if d.get("solver") else "",
             f"{count(d.get('tick_threads'))} tick threads"
             if num(d.get("tick_threads")) is not None else ""]
    s.lines += ["Setup: one `Worker` in the benchmark's process (`thread` isolation) "
                "ticking " + ", ".join(x for x in setup if x) + " on one etcd member; each "
                "thread's CPU from `/proc`, grouped by the Python thread's name, divided by "
                "the ticks committed. Baselines from the same process in the same run: one "
                "raw unary etcd call, and the same cities ticked one after another on one "
                "thread with each pass's commits sent together (no ticker, no pools, no "
                "round trip per tick). No target: this explains the whole-worker and scale "
                "figures.", ""]
    body = [[text(name), number(us, ",.0f")]
            for name, us in mapping(d.get("cpu_us_per_tick_by_thread")).items()
            if num(us) is not None]
    body += [["**worker, all threads**",
              f"**{number(d.get('worker_cpu_us_per_tick'), ',.0f')}**"],
             ["one-thread pass (baseline)",
              number(d.get("one_thread_pass_cpu_us_per_tick"), ",.0f")],
             ["one raw etcd call, client CPU (baseline)",
              number(d.get("raw_call_client_cpu_us"), ",.0f")]]
    s.lines += markdown_table(["where", "µs CPU per tick"], body)
    s.lines += [f"Worker ÷ one-thread pass: {ratio(d.get('worker_vs_one_thread_pass'))}; "
                f"{number(d.get('commits_per_batch'), '.2f')} commits per etcd transaction; "
                f"{number(d.get('cores'), '.2f')} cores at "
                f"{number(d.get('ticks_per_second'), ',.0f')} ticks/s.", ""]
    return s
