"""Coordination overhead: what fencing costs next to a bare etcd transaction, and how many
round trips a tick makes.

    python -m bench.coordination            # full (~4 minutes)
    python -m bench.coordination --quick    # ~1 minute

Against one etcd member on loopback, with the same number of threads (N, default 8 =
the worker's default ``--tick-threads``), it measures:

(a) **raw** — from this process, with ``coordinator.etcd.EtcdClient``, transactions of the
    fenced commit's shape (compare ``create_revision(candidate) == rev``, put a
    decision-sized value) as fast as N threads can send them: the baseline;
(b) **store** — ``DecisionStore.commit`` with ``LeaderKey``s won in real elections
    (``Election.campaign``), N threads: the fence plus encoding the protobuf Decision;
    and the same through the worker's ``CommitBatcher`` (many cities' fenced commits in
    one etcd transaction, each under its own nested compare), where the code has one;
    **worker** — the rate of fenced commits one ``Worker`` sustains owning many cities
    with a no-op solver (``test-noop``: the first ten pairs of a 10 × 10 city, on the
    tick's own thread, as any solver that vouches for its speed with
    ``inline_max_pairs`` is run) and a
    100 ms period (500 cities: 5,000 ticks/s asked, more than etcd takes), so that
    the tick pipeline, not the period, is the limit: in this process with
    ``solve_isolation="thread"`` (commits counted by the worker), and as a
    ``dispatch-worker`` subprocess with the default ``process`` isolation and with
    ``thread`` (commits counted by etcd: ``etcd_mvcc_put_total``); and once more in
    this process with ``test-slow`` at ``sleep=0`` (the same answer from a solver that
    could hang, so it runs on a solve thread): what that hand-off costs;
(c) **round trips per tick** — a worker owning 50 cities at a 0.5 s period, every
    ``EtcdClient.call`` counted by request type (and etcd's own /metrics as a
    cross-check), for the ``simulated`` state source (target: 1, the fenced commit) and
    the ``etcd`` state source (target: 2, read the state + commit). With the commit
    batcher a tick can cost less than one round trip: the table shows decisions per
    transaction;
(d) where a tick's CPU goes: each step of ``TickPipeline.prepare``, measured alone.

(a) and (b) alternate, ``--repeats`` times each, so that load from other processes on
the machine hits both alike; the table shows the median and the spread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import ROOT, etcd, host, output, processes, samples, stats
from bench.output import log
from coordinator.codec import encode
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.recipes.election import Election
from coordinator.recipes.session import Session
from coordinator.recipes.store import DecisionStore
from coordinator.worker import Worker, WorkerConfig
from protos import dispatch_pb2 as pb


def run_threads(threads: int, seconds: float, work: Any,
                etcd_url: str | None = None) -> dict[str, float]:
    """Call ``work(thread_index, i)`` in a loop on ``threads`` threads for ``seconds``;
    the rate and the latency of one call."""
    stop = threading.Event()
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def loop(t: int) -> None:
        i = 0
        lat = latencies[t]
        try:
            while not stop.is_set():
                started = time.perf_counter()
                work(t, i)
                lat.append(time.perf_counter() - started)
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        counts[t] = i

    pool = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(threads)]
    meter = etcd.EtcdMeter(etcd_url) if etcd_url else None
    cpu0 = time.process_time()
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    if errors:
        raise errors[0]
    every = [x for lat in latencies for x in lat]
    calls = sum(counts)
    out = {"rate": calls / elapsed, "calls": calls,
           "latency_p50_ms": stats.percentile(every, 50) * 1e3,
           "latency_p99_ms": stats.percentile(every, 99) * 1e3,
           "client_cpu_us_per_op": cpu / calls * 1e6}
    if meter is not None:
        out["etcd_cpu_us_per_op"] = meter.delta().cpu_seconds / calls * 1e6
    return out


class Fixture:
    """Candidate keys won in real elections, one per city, on one session."""

    def __init__(self, client: EtcdClient, namespace: str, cities: int, url: str) -> None:
        self.client = client
        self.url = url
        self.keys = Keys(namespace)
        self.session = Session(client, 30)
        self.names = etcd.city_names(cities)
        self.leaders = [Election(client, self.session, self.keys.election(c)).campaign("bench")
                        for c in self.names]
        self.decision_keys = [self.keys.decision(c) for c in self.names]

    def close(self) -> None:
        self.session.close()


def city_of(thread: int, i: int, threads: int, cities: int) -> int:
    """Thread ``thread``'s ``i``-th city: each thread cycles through its own cities, as
    the worker's ticks never commit for one city twice at once."""
    return (thread + i * threads) % cities if cities >= threads else i % cities


def make_batcher(client: EtcdClient) -> Any:
    """The worker's ``CommitBatcher`` (coordinator/batcher.py), where this version has one."""
    try:
        from coordinator.recipes.batcher import CommitBatcher
    except ImportError:
        return None
    return CommitBatcher(client)


def measure_raw(fx: Fixture, threads: int, seconds: float, value: bytes) -> dict[str, float]:
    client = fx.client
    n = len(fx.names)

    def work(t: int, i: int) -> None:
        k = city_of(t, i, threads, n)
        leader = fx.leaders[k]
        result = client.txn([client.cmp_create_revision(leader.key, leader.token)],
                            [client.op_put(fx.decision_keys[k], value)])
        assert result.succeeded

    return run_threads(threads, seconds, work, fx.url)


def measure_store(fx: Fixture, threads: int, seconds: float,
                  decision: pb.Decision, batcher: Any = None) -> dict[str, float]:
    store = DecisionStore(fx.client, fx.keys, batcher) if batcher is not None \
        else DecisionStore(fx.client, fx.keys)
    n = len(fx.names)

    def work(t: int, i: int) -> None:
        k = city_of(t, i, threads, n)
        store.commit(fx.names[k], fx.leaders[k], decision)

    return run_threads(threads, seconds, work, fx.url)


# -- a whole worker ---------------------------------------------------------------------------

class CallCounter:
    """Counts every ``EtcdClient.call`` made in this process, by request type."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._original = EtcdClient.call

    def __enter__(self) -> CallCounter:
        original, counts, lock = self._original, self.counts, self._lock

        def call(client: EtcdClient, method: Any, request: Any, **kw: Any) -> Any:
            with lock:
                counts[type(request).__name__] += 1
            return original(client, method, request, **kw)

        EtcdClient.call = call  # type: ignore[method-assign, assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        EtcdClient.call = self._original  # type: ignore[method-assign]

    def take(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


def ticks_of(worker: Worker) -> int:
    return worker.decisions_composed()


def start_worker(endpoints: str, namespace: str, **options: Any) -> tuple[Worker, Any]:
    client = etcd.client_for(endpoints)
    worker = Worker(client, WorkerConfig(worker_id="bench-w1", namespace=namespace,
                                         lease_ttl=5, **options))
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    return worker, thread


def stop_worker(worker: Worker, thread: threading.Thread) -> None:
    worker.request_stop()
    thread.join(30)
    worker.client.close()


def wait_leading(worker: Worker, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(worker.ticker.cities()) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker leads {len(worker.ticker.cities())} of {n} cities "
                               f"after {timeout:.0f}s")
        time.sleep(0.2)


#: the worker runs' no-op solver, and the same answer from a solver run on a solve thread
NOOP, NOOP_THREADED = "test-noop", "test-slow"


def measure_worker_inprocess(cluster: Any, namespace: str, cities: int, period: float,
                             seconds: float, repeats: int,
                             solver: str = NOOP) -> list[dict[str, float]]:
    client = etcd.client_for(cluster.endpoints)
    keys = Keys(namespace)
    etcd.put_cities(client, keys, etcd.city_names(cities), solver=solver,
                    period=period, params={"sleep": 0, "orders": 10, "couriers": 10})
    worker, thread = start_worker(cluster.endpoints, namespace, solve_isolation="thread")
    out = []
    try:
        wait_leading(worker, cities, 120)
        time.sleep(2)
        for _ in range(repeats):
            meter = etcd.EtcdMeter(cluster.members[0].client_url)
            t0, c0, cpu0 = time.perf_counter(), ticks_of(worker), time.process_time()
            time.sleep(seconds)
            ticks, elapsed = ticks_of(worker) - c0, time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            delta = meter.delta()
            out.append({"rate": ticks / elapsed, "txn_rate":
                        delta.requests.get("Txn", 0) / delta.seconds,
                        "commits_per_txn": delta.mvcc["etcd_mvcc_put_total"]
                        / max(delta.requests.get("Txn", 0), 1),
                        "client_cpu_us_per_op": cpu / ticks * 1e6,
                        "etcd_cpu_us_per_op": delta.cpu_seconds / ticks * 1e6,
                        "fenced_out": worker.fenced_out})
    finally:
        stop_worker(worker, thread)
        client.delete(namespace + "/", prefix=True)
        client.close()
    return out


def measure_worker_subprocess(cluster: Any, namespace: str, cities: int, period: float,
                              seconds: float, repeats: int, isolation: str,
                              logs: Path) -> list[dict[str, float]]:
    client = etcd.client_for(cluster.endpoints)
    keys = Keys(namespace)
    etcd.put_cities(client, keys, etcd.city_names(cities), solver=NOOP,
                    period=period, params={"sleep": 0, "orders": 10, "couriers": 10})
    workers = processes.Workers(cluster.endpoints, namespace, logs,
                                extra=["--solve-isolation", isolation])
    workers.start("bench-sub")
    out = []
    try:
        deadline = time.monotonic() + 120
        while len(client.get_prefix(keys.decisions, keys_only=True)[0]) < cities:
            if time.monotonic() > deadline:
                raise RuntimeError("subprocess worker did not take its cities")
            time.sleep(0.5)
        time.sleep(3)
        url = cluster.members[0].client_url
        pid = workers.procs["bench-sub"].pid
        for _ in range(repeats):
            meter = etcd.EtcdMeter(url)
            cpu0 = processes.process_tree_usage(pid)[1]
            time.sleep(seconds)
            cpu = processes.process_tree_usage(pid)[1] - cpu0
            delta = meter.delta()
            # in steady state every put is a fenced decision (a status put, rarely, when
            # a city's health changes); the worker may batch many commits in one Txn
            commits = delta.mvcc["etcd_mvcc_put_total"]
            txns = delta.requests.get("Txn", 0)
            out.append({"rate": commits / delta.seconds, "txn_rate": txns / delta.seconds,
                        "commits_per_txn": commits / max(txns, 1),
                        "client_cpu_us_per_op": cpu / max(commits, 1) * 1e6,
                        "etcd_cpu_us_per_op": delta.cpu_seconds / max(commits, 1) * 1e6})
    finally:
        workers.close()
        client.delete(namespace + "/", prefix=True)
        client.close()
    return out


def snapshot_of(city: str, n_orders: int, n_couriers: int) -> bytes:
    from google.protobuf.timestamp_pb2 import Timestamp

    from solvers.generate import simulated_state

    state = simulated_state(city, 1, n_orders=n_orders, n_couriers=n_couriers, seed=0,
                            taken_at=time.time())
    taken = Timestamp()
    taken.FromNanoseconds(int(state.taken_at * 1e9))
    snap = pb.StateSnapshot(taken_at=taken)
    for i in range(state.n_orders):
        snap.orders.add(id=str(state.order_ids[i]),
                        pickup=pb.Point(x=state.pickup[i, 0], y=state.pickup[i, 1]),
                        dropoff=pb.Point(x=state.dropoff[i, 0], y=state.dropoff[i, 1]),
                        ready_in_seconds=float(state.ready_in[i]), size=int(state.size[i]))
    for j in range(state.n_couriers):
        snap.couriers.add(id=str(state.courier_ids[j]),
                          position=pb.Point(x=state.position[j, 0], y=state.position[j, 1]),
                          speed=float(state.speed[j]), capacity=int(state.capacity[j]),
                          vehicle=str(state.vehicle[j]))
    return encode(snap)


def measure_round_trips(cluster: Any, namespace: str, source: str, cities: int,
                        period: float, seconds: float) -> dict[str, Any]:
    client = etcd.client_for(cluster.endpoints)
    keys = Keys(namespace)
    names = etcd.city_names(cities)
    if source == "etcd":
        client.txn([], [client.op_put(keys.state(c), snapshot_of(c, 30, 20)) for c in names])
    etcd.put_cities(client, keys, names, solver="greedy", period=period,
                    params={"orders": 30, "couriers": 20}, state_source=source)
    with CallCounter() as counter:
        worker, thread = start_worker(cluster.endpoints, namespace, solve_isolation="thread")
        try:
            wait_leading(worker, cities, 120)
            time.sleep(2 * period + 1)
            meter = etcd.EtcdMeter(cluster.members[0].client_url)
            c0, t0 = counter.take(), ticks_of(worker)
            time.sleep(seconds)
            calls = counter.take() - c0
            ticks = ticks_of(worker) - t0
            delta = meter.delta()
        finally:
            stop_worker(worker, thread)
    client.delete(namespace + "/", prefix=True)
    client.close()
    background = {"LeaseKeepAliveRequest"}
    per_tick = sum(v for k, v in calls.items() if k not in background) / ticks
    server = {k: v for k, v in delta.requests.items()}
    server_unary = sum(v for k, v in server.items() if k not in ("Watch", "LeaseKeepAlive"))
    puts = delta.mvcc["etcd_mvcc_put_total"]
    return {
        "source": source, "cities": cities, "period": period, "seconds": seconds,
        "ticks": ticks, "client_calls": dict(calls), "round_trips_per_tick": per_tick,
        "puts_per_tick": puts / ticks, "commits_per_txn": puts / max(server.get("Txn", 0), 1),
        "etcd_requests": server, "etcd_unary_per_tick": server_unary / ticks,
        "background_calls_per_second": sum(calls[k] for k in background) / seconds,
        "etcd_watch_messages_per_second": server.get("Watch", 0) / delta.seconds,
    }


def tick_breakdown(orders: int, couriers: int, solver_name: str,
                   loops: int) -> dict[str, float]:
    """CPU microseconds of each step of ``TickPipeline.prepare`` for one city, measured alone
    (one thread, best of 3 × ``loops``): where a tick's CPU goes besides the commit."""
    from coordinator.plugins import PluginLoader
    from coordinator.settings import CityConfig
    from coordinator.sources import SourceContext
    from coordinator.sources.simulated import SimulatedSource
    from coordinator.worker.runner import ThreadSolveRunner
    from solvers.cost import solution_cost
    from solvers.validate import check_solution

    loader = PluginLoader(None)
    solver = loader.solver(solver_name)
    params = {"sleep": 0, "orders": orders, "couriers": couriers}
    config = CityConfig(city="c00001", solver=solver_name, period=1.0, params=params)
    source = SimulatedSource(SourceContext(None, Keys("/x")))  # type: ignore[arg-type]
    runner = ThreadSolveRunner()
    state = source.load(config, time.time())
    solution = solver.solve(state, params, 1.0)
    message = samples.decision_message(state, solution, token=1, worker="w", cost=1.0, pb=pb)

    def cost(fn: Any) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            for _ in range(loops):
                fn()
            best = min(best, (time.process_time() - t0) / loops)
        return best * 1e6

    return {
        "state: SimulatedSource.load": cost(lambda: source.load(config, time.time())),
        "solve: the solver, called directly": cost(lambda: solver.solve(state, params, 1.0)),
        "solve: ThreadSolveRunner overhead (" + (
            "on the calling thread" if runner.runs_inline(solver, state)
            else "thread per solve") + ")":
            cost(lambda: runner.solve(solver_name, solver, state, params, budget=1.0,
                                      deadline=2.0)) - cost(lambda: solver.solve(state, params,
                                                                                 1.0)),
        "check_solution": cost(lambda: check_solution(state, solution)),
        "solution_cost": cost(lambda: solution_cost(state, solution)),
        "build the Decision message": cost(lambda: samples.decision_message(
            state, solution, token=1, worker="w", cost=1.0, pb=pb)),
        "encode (json_format.MessageToJson)": cost(lambda: encode(message)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coordination", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--threads", type=int, default=8,
                        help="N: threads sending (the worker's --tick-threads default)")
    parser.add_argument("--cities", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=None, help="per measurement")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    processes.require_psutil()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    repeats = args.repeats or (2 if args.quick else 5)
    value = samples.decision_value(30, 20)
    decision = pb.Decision()
    from google.protobuf import json_format
    json_format.Parse(value.decode(), decision)
    results: dict[str, Any] = {"machine": host.describe(), "mode": "quick" if args.quick
                               else "full", "threads": args.threads, "cities": args.cities,
                               "seconds_per_measurement": seconds, "repeats": repeats,
                               "decision_bytes": len(value)}
    logs = Path(tempfile.mkdtemp(prefix="bench-coordination-"))
    with etcd.cluster(1) as cluster:
        client = etcd.client_for(cluster.endpoints)
        fx = Fixture(client, "/bench-coord", args.cities, cluster.members[0].client_url)
        try:
            log(f"(a)/(b) raw txn vs DecisionStore.commit, {args.threads} threads, "
                f"{repeats} × {seconds:.0f}s each, alternating")
            measure_raw(fx, args.threads, 1.0, value)  # warm up the channel and etcd
            raw, store, raw1, store1, batched = [], [], [], [], []
            batcher = make_batcher(client)
            for r in range(repeats):
                raw.append(measure_raw(fx, args.threads, seconds, value))
                store.append(measure_store(fx, args.threads, seconds, decision))
                if batcher is not None:
                    batched.append(measure_store(fx, args.threads, seconds, decision,
                                                 batcher))
                log(f"  repeat {r + 1}: raw {raw[-1]['rate']:.0f}/s, "
                    f"store {store[-1]['rate']:.0f}/s"
                    + (f", store + batcher {batched[-1]['rate']:.0f}/s" if batched else ""))
            if batcher is not None:
                batcher.close()
            for _ in range(max(1, repeats // 2)):
                raw1.append(measure_raw(fx, 1, seconds, value))
                store1.append(measure_store(fx, 1, seconds, decision))
        finally:
            fx.close()
            client.delete("/bench-coord/", prefix=True)
            client.close()
        wcities, wperiod = args.cities, 0.1
        log(f"(b) in-process worker: {wcities} cities, period {wperiod}s, {NOOP}, "
            "thread isolation")
        worker_thread = measure_worker_inprocess(cluster, "/bench-worker-t", wcities, wperiod,
                                                 seconds, repeats)
        log(f"  {[round(x['rate']) for x in worker_thread]}")
        log(f"(b) in-process worker, {NOOP_THREADED} sleep=0: solved on a solve thread")
        worker_solve_thread = measure_worker_inprocess(
            cluster, "/bench-worker-u", wcities, wperiod, seconds, repeats, NOOP_THREADED)
        log(f"  {[round(x['rate']) for x in worker_solve_thread]}")
        log("(b) dispatch-worker subprocess, process isolation (the default)")
        worker_proc = measure_worker_subprocess(cluster, "/bench-worker-p", wcities, wperiod,
                                                seconds, repeats, "process", logs)
        log(f"  {[round(x['rate']) for x in worker_proc]}")
        log("(b) dispatch-worker subprocess, thread isolation")
        worker_sub_t = measure_worker_subprocess(cluster, "/bench-worker-s", wcities, wperiod,
                                                 seconds, repeats, "thread", logs)
        log(f"  {[round(x['rate']) for x in worker_sub_t]}")
        log("(d) CPU of a tick's steps, measured alone")
        loops = 50 if args.quick else 200
        breakdown = {f"{NOOP} 10x10": tick_breakdown(10, 10, NOOP, loops),
                     "greedy 30x20": tick_breakdown(30, 20, "greedy", loops)}
        rt_seconds = 5.0 if args.quick else 15.0
        log("(c) round trips per tick, simulated source")
        rt_sim = measure_round_trips(cluster, "/bench-rt-sim", "simulated", 50, 0.5, rt_seconds)
        log("(c) round trips per tick, etcd source")
        rt_etcd = measure_round_trips(cluster, "/bench-rt-etcd", "etcd", 50, 0.5, rt_seconds)

    def rates(rows: list[dict[str, float]]) -> list[float]:
        return [r["rate"] for r in rows]

    base = stats.median_and_range(rates(raw))["median"]
    base1 = stats.median_and_range(rates(raw1))["median"]
    rows = []

    def add(name: str, runs: list[dict[str, float]], baseline: float, threads: Any,
            target: float | None) -> None:
        s = stats.median_and_range(rates(runs))
        ratio = s["median"] / baseline
        p50 = stats.percentile([r.get("latency_p50_ms", float("nan")) for r in runs], 50)
        p99 = stats.percentile([r.get("latency_p99_ms", float("nan")) for r in runs], 50)
        cpu = stats.percentile([r.get("client_cpu_us_per_op", float("nan")) for r in runs], 50)
        ecpu = stats.percentile([r.get("etcd_cpu_us_per_op", float("nan")) for r in runs], 50)
        rows.append({"what": name, "threads": threads, "rate_median": s["median"],
                     "client_cpu_us_per_commit": cpu, "etcd_cpu_us_per_commit": ecpu,
                     "rate_min": s["min"], "rate_max": s["max"], "runs": s["n"],
                     "ratio_to_raw": ratio, "latency_p50_ms": p50, "latency_p99_ms": p99,
                     "target_ratio": target,
                     "target_met": None if target is None else ratio >= target})

    add("raw txn (baseline)", raw, base, args.threads, None)
    add("DecisionStore.commit", store, base, args.threads, 0.8)
    if batched:
        add("DecisionStore.commit + CommitBatcher", batched, base, args.threads, 0.8)
    add("Worker, in-process, thread isolation", worker_thread, base, "8 tick threads", 0.8)
    add("dispatch-worker, process isolation", worker_proc, base, "8 tick threads", 0.8)
    add("dispatch-worker, thread isolation", worker_sub_t, base, "8 tick threads", 0.8)
    add(f"Worker, in-process, {NOOP_THREADED} on a solve thread", worker_solve_thread, base,
        "8 tick threads", None)
    add("raw txn, 1 thread", raw1, base1, 1, None)
    add("DecisionStore.commit, 1 thread", store1, base1, 1, 0.8)
    results["throughput"] = rows
    results["raw_runs"] = raw
    results["store_runs"] = store
    results["store_batched_runs"] = batched
    results["worker_runs"] = {"inprocess_thread": worker_thread,
                              "inprocess_solve_thread": worker_solve_thread,
                              "subprocess_process": worker_proc,
                              "subprocess_thread": worker_sub_t}
    results["round_trips"] = [rt_sim, rt_etcd]
    results["tick_cpu_breakdown_us"] = breakdown
    for rt, target in ((rt_sim, 1), (rt_etcd, 2)):
        rt["target"] = target
        rt["target_met"] = round(rt["round_trips_per_tick"], 2) <= target

    print(f"\nFenced commits vs raw transactions ({args.threads} threads unless noted, "
          f"{repeats} runs of {seconds:.0f}s; one etcd member; decision {len(value)} B)\n")
    print(output.console_table(
        ["what", "threads", "commits/s (median)", "min", "max", "× raw", "p50 ms", "p99 ms",
         "client CPU µs/commit", "etcd CPU µs/commit", "target"],
        [[r["what"], r["threads"], r["rate_median"], r["rate_min"], r["rate_max"],
          r["ratio_to_raw"], r["latency_p50_ms"], r["latency_p99_ms"],
          r["client_cpu_us_per_commit"], r["etcd_cpu_us_per_commit"],
          "-" if r["target_ratio"] is None else
          (f"≥{r['target_ratio']} " + ("met" if r["target_met"] else "MISSED"))]
         for r in rows]))
    print("\nRound trips to etcd per tick (50 cities, period 0.5 s, greedy 30×20)\n")
    print(output.console_table(
        ["state source", "ticks", "calls/tick (client)", "unary/tick (etcd)", "by type",
         "decisions/Txn", "keep-alives/s", "target"],
        [[rt["source"], rt["ticks"], rt["round_trips_per_tick"], rt["etcd_unary_per_tick"],
          " ".join(f"{k.replace('Request', '')}={v}" for k, v in
                   sorted(rt["client_calls"].items())),
          rt["commits_per_txn"], rt["background_calls_per_second"],
          f"{rt['target']} " + ("met" if rt["target_met"] else "MISSED")]
         for rt in (rt_sim, rt_etcd)]))
    raw_cpu = rows[0]["client_cpu_us_per_commit"]
    print(f"\nCPU of a tick's steps besides the commit, µs, one thread, measured alone "
          f"(raw txn client CPU: {raw_cpu:.0f} µs/commit at {args.threads} threads)\n")
    names = list(breakdown)
    steps = list(breakdown[names[0]])
    print(output.console_table(["step", *names],
                               [[step, *(breakdown[n][step] for n in names)] for step in steps]
                               + [["total", *(sum(breakdown[n].values()) for n in names)]]))
    path = output.write_results("coordination", results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
