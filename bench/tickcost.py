"""Where a busy worker's CPU goes, thread by thread, per tick — in situ, not step by step.

    python -m bench.tickcost            # 250 cities, 20 s (~1 minute)
    python -m bench.tickcost --quick    # 100 cities, 8 s

``bench/coordination.py`` times each step of a tick alone on one thread. This benchmark
measures the same work where it really runs: one ``Worker`` in this process (``thread``
isolation, the worker's own tick threads), owning ``--cities`` simulated cities
(``greedy``, 30 orders × 20 couriers, 1 s period, the scale benchmark's cities) on one
etcd member. Over the window it reads each thread's CPU time from
``/proc/self/task/<tid>/stat``, grouped by the Python thread's name (``tick``,
``solve``, ``commit batcher``, ``ticker``, ...; what no Python thread owns is gRPC's
C-core), and divides by the ticks committed.

Baselines, measured in the same run from the same process:

* **raw etcd call** — the client CPU of one unary ``Txn`` of a decision's size, sent
  2,000 times in a row through ``coordinator.etcd.EtcdClient``: what a round trip costs
  the caller, whatever it carries;
* **one-thread pass** — the same cities' ticks (state, solve, validation, cost, the
  Decision message, encoding, a fenced commit through the worker's batcher) run one
  after another on a single thread, with every commit of the pass in flight together:
  the work without the ticker, the pools, the per-tick round trip and the bookkeeping.

The gap between the worker and the one-thread pass is what scheduling, thread hand-offs
and round trips still cost; tick groups (cities due together ticked on one thread and
committed in one transaction, ``TickPipeline.tick_group``) are what closed most of it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import etcd, host, output, samples
from bench.output import log
from coordinator.codec import encode
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from coordinator.worker import Worker, WorkerConfig
from protos import dispatch_pb2 as pb
from solvers.cost import solution_cost
from solvers.validate import check_solution

NAMESPACE = "/tickcost"
PARAMS = {"orders": 30, "couriers": 20}
_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's Python threads so far, by thread name without its
    number (``tick_3`` and ``tick_5`` are both ``tick``)."""
    out: dict[str, float] = defaultdict(float)
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = thread.name.split(" (")[0].rstrip("0123456789_-") or thread.name
        out[name] += (int(fields[11]) + int(fields[12])) / _TICK
    return out


def process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def raw_call_cpu(client: EtcdClient, keys: Keys, calls: int) -> float:
    """Client CPU (µs) of one unary Txn of a decision's size."""
    key = keys.decision("raw")
    ops = [client.op_put(key, samples.decision_value(*PARAMS.values()))]
    for _ in range(100):
        client.txn([], ops)
    started = process_cpu()
    for _ in range(calls):
        client.txn([], ops)
    return (process_cpu() - started) / calls * 1e6


def one_thread_pass(worker: Worker, keys: Keys, cities: list[str], seconds: float) -> float:
    """CPU (µs, whole process) per tick of ticking every city in a row on one thread,
    each pass's commits in flight together."""
    solver = worker.plugins.solver("greedy")
    source = worker.plugins.source("simulated")
    leaders = {c: worker.campaigns.leader(c) for c in cities}
    started, ticks, until = process_cpu(), 0, time.monotonic() + seconds
    while time.monotonic() < until:
        pass_started = time.monotonic()
        pending = []
        for city, leader in leaders.items():
            entry = worker.registry.get(city)
            if leader is None or not isinstance(entry, CityConfig):
                continue
            state = source.load(entry, time.time())
            solution = solver.solve(state, entry.params, 0.5)
            check_solution(state, solution)
            decision = samples.decision_message(
                state, solution, token=leader.token, worker="bench",
                cost=float(solution_cost(state, solution)), pb=pb)
            pending.append(worker.batcher.submit(
                [leader.compare()], [worker.client.op_put(keys.decision(city),
                                                          encode(decision))]))
            ticks += 1
        for future in pending:
            future.result()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - pass_started)))
    return (process_cpu() - started) / max(ticks, 1) * 1e6


def measure(cities: int, seconds: float, tick_threads: int, raw_calls: int,
            isolation: str = "thread") -> dict[str, Any]:
    with etcd.cluster(1) as cluster:
        setup = etcd.client_for(cluster.endpoints)
        keys = Keys(NAMESPACE)
        names = etcd.city_names(cities)
        etcd.put_cities(setup, keys, names, solver="greedy", period=1.0, params=PARAMS)
        client = EtcdClient(EtcdConfig(endpoints=(cluster.endpoints,)))
        worker = Worker(client, WorkerConfig(worker_id="bench", namespace=NAMESPACE,
                                             lease_ttl=5, solve_isolation=isolation,
                                             tick_threads=tick_threads))
        control = threading.Thread(target=worker.run, name="control", daemon=True)
        control.start()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and \
                    sum(1 for c in names if worker.campaigns.leader(c)) < cities:
                time.sleep(0.5)
            time.sleep(3.0)  # every city past its first tick and onto its phase
            log(f"worker leads {sum(1 for c in names if worker.campaigns.leader(c))} "
                f"of {cities} cities; measuring {seconds:.0f}s")
            threads0, cpu0 = thread_cpu(), process_cpu()
            commits0, batches0 = worker.batcher.commits, worker.batcher.batches
            time.sleep(seconds)
            threads1, cpu1 = thread_cpu(), process_cpu()
            ticks = worker.batcher.commits - commits0
            batches = worker.batcher.batches - batches0
            per_thread = {name: (threads1[name] - threads0.get(name, 0.0)) / max(ticks, 1) * 1e6
                          for name in threads1}
            total = (cpu1 - cpu0) / max(ticks, 1) * 1e6
            per_thread = {k: v for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1])
                          if v >= 1.0}
            per_thread["(gRPC C-core and other native threads)"] = \
                total - sum(per_thread.values())
            log(f"worker: {ticks / seconds:.0f} ticks/s, {total:.0f} µs CPU per tick")
            worker.ticker.stop(wait=True)  # the one-thread pass ticks the same cities now
            time.sleep(1.0)
            single = one_thread_pass(worker, keys, names, seconds)
            log(f"one-thread pass: {single:.0f} µs CPU per tick")
            raw = raw_call_cpu(client, keys, raw_calls)
            log(f"raw etcd call: {raw:.0f} µs client CPU")
        finally:
            worker.request_stop()
            control.join(10)
            client.close()
            setup.close()
    return {
        "cities": cities, "isolation": isolation, "period": 1.0, "params": PARAMS,
        "solver": "greedy",
        "tick_threads": tick_threads, "window_s": seconds,
        "ticks_per_second": ticks / seconds, "commits_per_batch": ticks / max(batches, 1),
        "worker_cpu_us_per_tick": total, "cores": (cpu1 - cpu0) / seconds,
        "cpu_us_per_tick_by_thread": per_thread,
        "one_thread_pass_cpu_us_per_tick": single,
        "raw_call_client_cpu_us": raw,
        "worker_vs_one_thread_pass": total / single if single else None,
        "raw_calls_per_tick_equivalent": total / raw if raw else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tickcost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 cities, 8 s")
    parser.add_argument("--cities", type=int, default=None, help="default 250")
    parser.add_argument("--seconds", type=float, default=None, help="window, default 20")
    parser.add_argument("--tick-threads", type=int, default=8)
    parser.add_argument("--isolation", choices=["thread", "process"], default="thread",
                        help="the worker's --solve-isolation (default thread; with process "
                             "the solver processes' CPU is not counted)")
    args = parser.parse_args(argv)
    # the worker's own warnings (its watches closing at the end) are not results
    logging.getLogger("coordinator").setLevel(logging.ERROR)
    cities = args.cities or (100 if args.quick else 250)
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    result = measure(cities, seconds, args.tick_threads, 500 if args.quick else 2000,
                     args.isolation)
    rows = [[name, f"{us:,.0f}"] for name, us in
            result["cpu_us_per_tick_by_thread"].items()]
    rows += [["**worker, all threads**", f"{result['worker_cpu_us_per_tick']:,.0f}"],
             ["one-thread pass (baseline)", f"{result['one_thread_pass_cpu_us_per_tick']:,.0f}"],
             ["raw etcd call, client CPU (baseline)", f"{result['raw_call_client_cpu_us']:,.0f}"]]
    print(output.console_table(["where", "µs CPU per tick"], rows))
    print(f"worker ÷ one-thread pass: {result['worker_vs_one_thread_pass']:.2f}×; "
          f"{result['commits_per_batch']:.2f} commits per etcd transaction")
    data = {"machine": host.describe(), "mode": "quick" if args.quick else "full", **result}
    log(f"wrote {output.write_results('tickcost', data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
