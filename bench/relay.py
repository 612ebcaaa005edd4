"""Decisions out: the relay against raw psycopg writes of the same rows, etcd-commit-to-row
latency at 1,000 decisions/s, and the relay's CPU per decision.

    python -m bench.relay            # full (~8 minutes)
    python -m bench.relay --quick    # ~1–2 minutes

One etcd member (``devtools.localetcd``, no compaction) and one PostgreSQL server
(``devtools.localpg``: fsync off, commits still wait for their WAL write) on loopback.
Every decision is a worker's (greedy on a simulated 30 × 20 city: up to 20 assignments,
each an audit row), one per etcd revision, over ``--cities`` cities.

The relay is ``dispatch-relay``, a subprocess, as operators run it: its CPU is the whole
process's (gRPC's C-core threads included, which a relay inside this process could not
tell apart from the benchmark's own), and it shares no interpreter lock with the
benchmark's writers, watch and baseline, which would otherwise slow it down and inflate
its latency. Its start (imports, lease, election) is left out: the clock runs from its
first committed batch.

(a) **throughput** — ``--decisions`` decisions preloaded under one namespace; each
    repeat drains them into a fresh database twice, alternating: the relay, then the
    baseline, raw psycopg from this process writing the same rows with the sink's own
    statements (the conditional upserts, each adding its audit rows server-side from the
    decision's JSON if it wrote, and the cursor, one transaction and one round trip per
    batch, parameters built before the clock starts) in the very batches the relay made
    just before (read back from the database: rows of one transaction share its
    ``xmin``). Both rates count the decisions after the first batch, from its commit to
    the last one's; both databases must then hold the same rows. Target: relay ≥ 0.8 ×
    raw.
(b) **latency** — for each of ``--rates``, a relay follows a fresh namespace while this
    process puts decisions at that rate, paced, cycling over the cities, from
    ``--writers`` threads (one thread alone is held to one put per round trip, an fsync
    of etcd's WAL), keeping the time each put's answer arrived (its revision committed).
    Each database has a trigger that sends ``NOTIFY`` with the cursor when it moves: the
    cursor commits with the rows, and a notification leaves when its transaction commits,
    so revision r is visible by the time a cursor ≥ r arrives on this process's
    listening connection. Latency = that arrival − the put's answer. LISTEN rather than
    polling: polls every millisecond took a real share of a core the relay needs. What
    the watch costs (its thread's CPU and its backend's; the trigger runs inside the
    relay's transactions, in both arms of (a) alike) is measured and reported. Target:
    p99 ≤ 50 ms at 1,000/s; the second, lower rate shows the latency when the relay
    keeps up.
(c) **CPU** — the relay process's CPU (``psutil``) ÷ decisions applied, while draining
    (from the moment it waits, started, on a lock the benchmark holds on the sink's
    cursor table, so that its read-ahead before the first commit counts too) and at the
    paced rate; beside it the raw baseline's client CPU and the server's
    (the watch's backend taken out), and at the paced rate etcd's, the load generator's
    (this process's writer threads, the watch's thread taken out) and how many cores the
    whole machine kept busy (every process, anyone's): what the latency had to share.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import ROOT, etcd, host, output, processes, rawpg, stats
from bench.output import log
from bench.rawpg import CursorWatch, Written
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.sinks.postgres import PostgresSink
from devtools.localetcd import EtcdCluster
from devtools.localpg import LocalPostgres

DRAIN, LIVE = "/bench-relay-drain", "/bench-relay-live"
ORDERS, COURIERS = 30, 20
TARGET_RATIO, TARGET_P99_MS, TARGET_RATE = 0.8, 50.0, 1000.0


class RelayProcess:
    """``dispatch-relay`` (``python -m coordinator.cli.relay``) in a session of its own."""

    def __init__(self, endpoints: str, namespace: str, url: str, logs: Path,
                 batch_max: int) -> None:
        with open(logs / "relay.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "coordinator.cli.relay", "--etcd", endpoints,
                 "--namespace", namespace, "--sink", "postgres", "--sink-url", url,
                 "--relay-id", "bench", "--batch-max", str(batch_max),
                 "--log-level", "warning"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})

    def cpu(self) -> float:
        return processes.process_tree_usage(self.proc.pid)[1]

    def close(self) -> None:
        """SIGTERM (it resigns), then SIGKILL if it is still there after 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextlib.contextmanager
def relay_running(*args: Any) -> Iterator[RelayProcess]:
    relay = RelayProcess(*args)
    try:
        yield relay
    finally:
        relay.close()


@contextlib.contextmanager
def database(pg: LocalPostgres, name: str, namespace: str) -> Iterator[str]:
    """A fresh database with the sink's own schema and the cursor's notification trigger
    (both arms have it); dropped on the way out."""
    url = pg.create_database(name)
    sink = PostgresSink(url, namespace=namespace)
    sink.init_schema()
    sink.close()
    rawpg.install_notify(url)
    try:
        yield url
    finally:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


def server_cpu(pg: LocalPostgres) -> float:
    """CPU seconds of the server and all its processes so far."""
    assert pg.process is not None
    return processes.process_tree_usage(pg.process.pid)[1]


def in_threads(work: Callable[[int, threading.Event], None], threads: int,
               name: str) -> None:
    """``work(t, stop)`` on ``threads`` daemon threads; the first error is raised here.
    Leaving early (Ctrl-C, SIGTERM) sets ``stop``, and a failure of a stopped thread is
    not reported: the clients it used are being closed."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            work(t, stop)
        except Exception as exc:
            if not stop.is_set():
                errors.append(exc)
                stop.set()

    pool = [threading.Thread(target=run, args=(t,), name=f"{name} {t}", daemon=True)
            for t in range(threads)]
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        stop.set()
    if errors:
        raise errors[0]


def preload(client: EtcdClient, keys: Keys, values: dict[str, bytes], n: int,
            threads: int = 4) -> list[Written]:
    """``n`` decisions cycling over the cities, one put each, sorted by revision; each
    thread owns a share of the cities, so every city's decisions are in order."""
    names = list(values)
    out: list[Written] = []
    lock = threading.Lock()

    def put(t: int, stop: threading.Event) -> None:
        for k in range(n):
            city = names[k % len(names)]
            if k % len(names) % threads != t:
                continue
            if stop.is_set():
                return
            written = Written(city, client.put(keys.decision(city), values[city]), values[city])
            with lock:
                out.append(written)

    in_threads(put, threads, "preload")
    return sorted(out, key=lambda w: w.revision)


# -- (a) throughput ------------------------------------------------------------------------

def drain_relay(endpoints: str, pg: LocalPostgres, written: Sequence[Written],
                batch_max: int, index: int, logs: Path) -> dict[str, Any]:
    """The relay drains the preloaded decisions into a fresh database.

    It starts with the sink's cursor table locked, so that it waits, its start done, on
    its first read of the cursor: its CPU is taken from there (every decision's reading
    and writing, the read-ahead before the first commit included) to the end."""
    last = written[-1].revision
    with database(pg, f"relay_{index}", DRAIN) as url:
        watch = CursorWatch(url).start()
        hold = psycopg.connect(url)
        try:
            hold.execute("LOCK TABLE dispatch_sink_cursor IN ACCESS EXCLUSIVE MODE")
            with relay_running(endpoints, DRAIN, url, logs, batch_max) as relay:
                started = settled_cpu(relay)
                hold.rollback()
                t0, first = watch.wait_for(1, timeout=120)
                pg0, (_, _, watch0) = server_cpu(pg), watch.cost()
                t1, _ = watch.wait_for(last, timeout=120 + len(written) / 100)
                cpu1, pg1, (_, _, watch1) = relay.cpu(), server_cpu(pg), watch.cost()
        finally:
            hold.close()
            watch.stop()
        n = sum(1 for w in written if w.revision > first)
        sizes = rawpg.batch_sizes(url)
        held = rawpg.contents(url, DRAIN)
    return {"decisions": n, "seconds": t1 - t0, "rate": n / (t1 - t0), "batches": len(sizes),
            "mean_batch": sum(sizes) / max(len(sizes), 1), "batch_sizes": sizes,
            "relay_cpu_us_per_decision": (cpu1 - started) / len(written) * 1e6,
            "postgres_cpu_us_per_decision": (pg1 - pg0 - (watch1 - watch0)) / n * 1e6,
            "contents": held}


def settled_cpu(relay: RelayProcess, timeout: float = 60.0) -> float:
    """The relay's CPU seconds once they stop growing (it has started and waits)."""
    deadline = time.monotonic() + timeout
    before = relay.cpu()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = relay.cpu()
        if now - before < 0.01:
            return now
        before = now
    raise RuntimeError(f"the relay kept using CPU for {timeout:.0f}s while it should wait")


def drain_raw(pg: LocalPostgres, prepared: Sequence[rawpg.Prepared], sizes: Sequence[int],
              batch_max: int, index: int) -> dict[str, Any]:
    """The baseline writes the same rows in the batches the relay made (in batches of
    ``batch_max`` should they not add up: then ``same_batches`` is false)."""
    same = sum(sizes) == len(prepared)
    if not same:
        sizes = [batch_max] * (len(prepared) // batch_max) + [len(prepared) % batch_max]
    with database(pg, f"raw_{index}", DRAIN) as url:
        batches = rawpg.split(prepared, [size for size in sizes if size], DRAIN)
        run: dict[str, Any] = rawpg.write_raw(url, DRAIN, batches, lambda: server_cpu(pg))
        run["contents"] = rawpg.contents(url, DRAIN)
    run["mean_batch"] = len(prepared) / max(run["batches"], 1)
    run["same_batches"] = same
    return run


# -- (b) latency ---------------------------------------------------------------------------

def paced_puts(client: EtcdClient, keys: list[str], values: list[bytes], start: int,
               count: int, rate: float, writers: int) -> dict[str, list[float]]:
    """``count`` puts at ``rate`` per second from now, cycling over the cities, put k sent
    by thread k mod ``writers`` (as a worker's tick threads commit side by side; one
    thread alone waits out every put's round trip): each put's revision, the time its
    answer arrived, how late it was sent, its round trip."""
    out = {name: [0.0] * count for name in ("revisions", "acks", "late", "rtt")}
    t0 = time.perf_counter() + 0.005

    def send(thread: int, stop: threading.Event) -> None:
        for k in range(thread, count, writers):
            due = t0 + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if stop.is_set():
                return
            sent = time.perf_counter()
            i = (start + k) % len(keys)
            out["revisions"][k] = float(client.put(keys[i], values[i]))
            out["acks"][k] = time.perf_counter()
            out["late"][k], out["rtt"][k] = sent - due, out["acks"][k] - sent

    in_threads(send, writers, "writer")
    return out


def measure_live(cluster: EtcdCluster, pg: LocalPostgres, values: dict[str, bytes],
                 rate: float, seconds: float, warmup: float, writers: int, batch_max: int,
                 logs: Path) -> dict[str, Any]:
    """A relay following a fresh namespace while decisions are put at ``rate``."""
    namespace = f"{LIVE}-{rate:.0f}"
    keys = Keys(namespace)
    names = list(values)
    decision_keys, payloads = [keys.decision(c) for c in names], [values[c] for c in names]
    client = etcd.client_for(cluster.endpoints)
    with database(pg, f"live_{rate:.0f}", namespace) as url:
        watch = CursorWatch(url).start()
        try:
            with relay_running(cluster.endpoints, namespace, url, logs, batch_max) as relay:
                watch.wait_for(client.put(decision_keys[0], payloads[0]), timeout=120)
                paced_puts(client, decision_keys, payloads, 1, int(rate * warmup), rate,
                           writers)
                meter = etcd.EtcdMeter(cluster.members[0].client_url)
                cpu0, pg0, cost0 = relay.cpu(), server_cpu(pg), watch.cost()
                load0, busy0 = time.process_time(), host.busy_cpu_seconds()
                t0 = time.perf_counter()
                puts = paced_puts(client, decision_keys, payloads, 1 + int(rate * warmup),
                                  int(rate * seconds), rate, writers)
                elapsed = time.perf_counter() - t0
                last = int(max(puts["revisions"]))
                watch.wait_for(last, timeout=120 + rate * seconds / 50)
                cpu1, pg1, cost1 = relay.cpu(), server_cpu(pg), watch.cost()
                load1, busy1 = time.process_time(), host.busy_cpu_seconds()
                spent = meter.delta()
        finally:
            watch.stop()
            client.close()
        latencies = [(watch.seen(int(r)) - a) * 1e3
                     for r, a in zip(puts["revisions"], puts["acks"], strict=True)]
        sizes = rawpg.batch_sizes(url)
    n = len(latencies)
    notes, watch_cpu, backend_cpu = (b - a for a, b in zip(cost0, cost1, strict=True))
    drained = watch.seen(last) - t0
    behind = watch.seen(last) - max(puts["acks"])
    summary = stats.summary(latencies)
    return {
        "rate_asked": rate, "rate_achieved": n / elapsed, "seconds": seconds,
        "warmup_seconds": warmup, "cities": len(names), "writers": writers, "samples": n,
        "behind_at_end_s": behind,
        **{f"{k}_ms": v for k, v in summary.items() if k != "n"},
        "target_p99_ms": TARGET_P99_MS, "target_met": summary["p99"] <= TARGET_P99_MS,
        "put_rtt_p50_ms": stats.percentile(puts["rtt"], 50) * 1e3,
        "put_rtt_p99_ms": stats.percentile(puts["rtt"], 99) * 1e3,
        "writer_late_p99_ms": stats.percentile(puts["late"], 99) * 1e3,
        "decisions_per_transaction": sum(sizes) / max(len(sizes), 1),
        "relay_cpu_us_per_decision": (cpu1 - cpu0) / n * 1e6,
        "relay_cores": (cpu1 - cpu0) / drained,
        "postgres_cpu_us_per_decision": (pg1 - pg0 - backend_cpu) / n * 1e6,
        "etcd_cpu_us_per_decision": spent.cpu_seconds / n * 1e6,
        "load_cpu_us_per_decision": (load1 - load0 - watch_cpu) / n * 1e6,
        "machine_busy_cores": (busy1 - busy0) / drained,
        "watch": {"notifications_per_second": notes / drained,
                  "client_cpu_us_per_notification": watch_cpu / max(notes, 1) * 1e6,
                  "backend_cpu_us_per_notification": backend_cpu / max(notes, 1) * 1e6,
                  "cores": (watch_cpu + backend_cpu) / drained},
    }


# -- the run -------------------------------------------------------------------------------

def summarise(relay_runs: list[dict[str, Any]], raw_runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(runs: list[dict[str, Any]], key: str) -> float:
        return stats.percentile([r[key] for r in runs], 50)

    relay, raw = (stats.median_and_range([r["rate"] for r in rs]) for rs in (relay_runs, raw_runs))
    ratio = relay["median"] / raw["median"]
    same = all(a["contents"] == b["contents"] for a, b in zip(relay_runs, raw_runs, strict=True))
    for run in relay_runs:
        sizes = run.pop("batch_sizes")
        run["batch_min"], run["batch_max"] = min(sizes, default=0), max(sizes, default=0)
    return {"relay_rate_median": relay["median"], "relay_rate_min": relay["min"],
            "relay_rate_max": relay["max"], "raw_rate_median": raw["median"],
            "raw_rate_min": raw["min"], "raw_rate_max": raw["max"], "ratio_to_raw": ratio,
            "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
            "rows_match": same,
            "relay_mean_batch": med(relay_runs, "mean_batch"),
            "relay_cpu_us_per_decision": med(relay_runs, "relay_cpu_us_per_decision"),
            "relay_postgres_cpu_us_per_decision": med(relay_runs, "postgres_cpu_us_per_decision"),
            "raw_client_cpu_us_per_decision": med(raw_runs, "client_cpu_us_per_decision"),
            "raw_postgres_cpu_us_per_decision": med(raw_runs, "postgres_cpu_us_per_decision"),
            "relay_runs": relay_runs, "raw_runs": raw_runs}


def show(results: dict[str, Any]) -> None:
    t = results["throughput"]
    print(f"\nDraining {results['decisions']:,} preloaded decisions into PostgreSQL "
          f"({results['repeats']} runs each, alternating; rows match: {t['rows_match']})\n")
    print(output.console_table(
        ["arm", "decisions/s (median)", "min", "max", "× raw", "mean batch",
         "CPU µs/decision (relay; raw client)", "postgres CPU µs/decision", "target"],
        [["dispatch-relay", t["relay_rate_median"], t["relay_rate_min"], t["relay_rate_max"],
          t["ratio_to_raw"], t["relay_mean_batch"], t["relay_cpu_us_per_decision"],
          t["relay_postgres_cpu_us_per_decision"],
          f"≥{TARGET_RATIO} " + ("met" if t["target_met"] else "MISSED")],
         ["raw psycopg (baseline)", t["raw_rate_median"], t["raw_rate_min"], t["raw_rate_max"],
          1.0, t["relay_mean_batch"], t["raw_client_cpu_us_per_decision"],
          t["raw_postgres_cpu_us_per_decision"], "-"]]))
    runs = results["latency"]
    print(f"\netcd commit → row visible (LISTEN on the cursor), {runs[0]['cities']} cities, "
          f"{runs[0]['writers']} writer threads\n")
    print(output.console_table(
        ["asked/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "behind at end s",
         "decisions/txn", "relay CPU µs/decision", "relay cores", "postgres CPU µs/decision",
         "etcd CPU µs/decision", "put rtt p50 ms", "target"],
        [[r["rate_asked"], r["rate_achieved"], r["p50_ms"], r["p90_ms"], r["p99_ms"],
          r["max_ms"], r["behind_at_end_s"], r["decisions_per_transaction"],
          r["relay_cpu_us_per_decision"], r["relay_cores"], r["postgres_cpu_us_per_decision"],
          r["etcd_cpu_us_per_decision"], r["put_rtt_p50_ms"],
          (f"p99≤{TARGET_P99_MS:g} " + ("met" if r["target_met"] else "MISSED"))
          if r["rate_asked"] == TARGET_RATE else "-"] for r in runs]))
    for r in runs:
        parts = {k: r[f"{k}_cpu_us_per_decision"] * r["rate_achieved"] / 1e6
                 for k in ("relay", "postgres", "etcd", "load")}
        print(f"cores at {r['rate_achieved']:,.0f}/s: " + " + ".join(
            f"{k} {v:.2f}" for k, v in parts.items()) + f" = {sum(parts.values()):.2f}; the "
            f"machine was {r['machine_busy_cores']:.2f} cores busy (everything on it)")
    for r in runs:
        w = r["watch"]
        print(f"the watch at {r['rate_asked']:,.0f}/s: {w['notifications_per_second']:,.0f} "
              f"notifications/s, {w['client_cpu_us_per_notification']:.0f} µs here + "
              f"{w['backend_cpu_us_per_notification']:.0f} µs in its backend each = "
              f"{w['cores']:.3f} cores")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--decisions", type=int, default=None,
                        help="preloaded for the throughput runs (default 20,000; quick 3,000)")
    parser.add_argument("--repeats", type=int, default=None, help="default 5; quick 2")
    parser.add_argument("--cities", type=int, default=500)
    parser.add_argument("--rates", default="1000,250", metavar="R,R",
                        help="decisions/s of the latency runs (default 1000,250: the target's "
                             "rate, and one the relay keeps up with)")
    parser.add_argument("--writers", type=int, default=16,
                        help="threads putting decisions (default 16)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="latency window (default 60; quick 10), after a warm-up")
    parser.add_argument("--batch-max", type=int, default=500, help="the relay's --batch-max")
    args = parser.parse_args(argv)
    processes.require_psutil()
    n = args.decisions or (3000 if args.quick else 20000)
    repeats = args.repeats or (2 if args.quick else 5)
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    warmup = 2.0 if args.quick else 5.0
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    logs = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    results: dict[str, Any] = {
        "machine": host.describe(), "mode": "quick" if args.quick else "full",
        "relay": "dispatch-relay subprocess", "decisions": n, "cities": args.cities,
        "repeats": repeats, "batch_max": args.batch_max,
        "postgres": "devtools.localpg (fsync off), loopback"}
    with contextlib.ExitStack() as stack:
        cluster = EtcdCluster(1, extra_args=["--quota-backend-bytes", str(8 * 1024**3)])
        stack.callback(cluster.close)
        cluster.start()
        pg = stack.enter_context(LocalPostgres())
        log(f"building a decision for each of {args.cities} cities")
        values = rawpg.city_values(etcd.city_names(args.cities), ORDERS, COURIERS)
        client = etcd.client_for(cluster.endpoints)
        log(f"preloading {n:,} decisions over {args.cities} cities")
        written = preload(client, Keys(DRAIN), values, n, args.writers)
        client.close()
        prepared = rawpg.prepare(written)
        results["decision_bytes"] = len(written[0].value)
        results["assignments_per_decision"] = sum(p.rows for p in prepared) / n
        relay_runs, raw_runs = [], []
        for r in range(repeats):
            relay_runs.append(drain_relay(cluster.endpoints, pg, written, args.batch_max,
                                          r, logs))
            raw_runs.append(drain_raw(pg, prepared, relay_runs[-1]["batch_sizes"],
                                      args.batch_max, r))
            log(f"  repeat {r + 1}: relay {relay_runs[-1]['rate']:,.0f}/s "
                f"(batches of {relay_runs[-1]['mean_batch']:.0f}), raw "
                f"{raw_runs[-1]['rate']:,.0f}/s")
        results["throughput"] = summarise(relay_runs, raw_runs)
        results["latency"] = []
        for rate in rates:
            log(f"latency: {rate:,.0f} decisions/s for {warmup:g} + {seconds:g} s")
            results["latency"].append(measure_live(cluster, pg, values, rate, seconds, warmup,
                                                   args.writers, args.batch_max, logs))
            log(f"  p99 {results['latency'][-1]['p99_ms']:,.1f} ms")
    show(results)
    path = output.write_results("relay", results)
    print(f"\nwritten to {path.relative_to(ROOT)} (relay logs in {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
