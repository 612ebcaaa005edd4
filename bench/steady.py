"""An hour of steady work: 1,000 cities at 1 s over 4 workers on one etcd member with the
compaction settings docs/operations.md recommends, sampled against time.

    python -m bench.steady            # full: 1,000 cities, 60 minutes, a sample every 30 s
    python -m bench.steady --quick    # 200 cities, 4 minutes, a sample every 10 s

etcd runs with ``--auto-compaction-mode=revision --auto-compaction-retention=N``
(``--retention-revisions``; etcd compacts every 5 minutes to N revisions behind),
``--snapshot-count`` (10,000) and an 8 GiB quota. Cities use the ``simulated`` state
source (30 orders × 20 couriers) and the ``greedy`` solver, as in ``bench.scale``. After
a warm-up (every city has decided, no city changed writer for ``--settle`` seconds:
placement by cost moves cities once their costs are measured, and those moves are
``bench.fleet``'s to count) it samples, every ``--sample-seconds``:

* **on time**: gaps between a city's consecutive decisions (``decidedAt``) ≤ period +
  100 ms, as a share of the interval's gaps, and decisions delivered ÷ due. A streaming
  tally keeps only each city's last decision time, never the hour's decisions; the late
  gaps by the worker that ended them (one worker's trouble, or the whole fleet's);
* **workers**: RSS (with solver processes), threads (``/proc/<pid>/status``), CPU;
* **etcd**: database size and size in use, current and oldest readable revision,
  RSS; whether a decision key is readable at the oldest revision of the retention window;
* the benchmark's own CPU, and the machine's: the speed probe (``bench/machinespeed.py``)
  and the CPU time the host stole.

``--stall-etcd MINUTE:SECONDS`` stops etcd for longer than the lease TTL during the run
(every worker loses its session), ``--stall-workers MINUTE:SECONDS`` every worker but
``w1`` (which takes all their cities over, as when a stall of etcd cost most of the
fleet its leases), and the run reports how long on time took to come back over the
target.

``dbSizeInUse`` is what a defragmentation would leave; a real ``etcdctl defrag`` (which
blocks the one member) runs at the baseline minute (unless ``--no-baseline-defrag``) and at
the end, and gaps ending
while it runs (plus two periods) are left out of on time and counted apart. Plot:
``docs/img/steady.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import IMAGES, ROOT, decisionlog, etcd, host, output, processes
from bench.machinespeed import SpeedProbe
from bench.output import log
from bench.stall import ON_TIME_TARGET, Stall, minute_and_seconds, recovery
from bench.steadyfigures import COMPACTION_CADENCE_MIN, GROWTH_TARGET, plot, summarise
from coordinator.errors import EtcdCompacted, EtcdError
from coordinator.etcd import EtcdClient, KeyValue, WatchBatch
from coordinator.keys import Keys
from coordinator.ops.doctor.cluster import oldest_revision
from coordinator.recipes.watch import PrefixWatch

NAMESPACE = "/steady"
PARAMS = {"orders": 30, "couriers": 20}
ON_TIME_SLACK = 0.1


class Tally:
    """On-time counts per interval from one watch on ``<ns>/decisions/``: per city only
    the last ``decidedAt``; gaps ending inside an excluded time span are counted apart."""

    def __init__(self, client: EtcdClient, keys: Keys, period: float) -> None:
        self.period = period
        self.root = keys.decisions
        self.last: dict[str, float] = {}
        self.exclude = (math.inf, math.inf)
        self._lock = threading.Lock()
        self._reset()
        # resumed after a stream error: a defragmentation longer than the stream's
        # patience once ended the tally silently, and the run went on measuring nothing
        self._watch = PrefixWatch(client, self.root, name="tally", on_snapshot=self._seed,
                                  on_events=self._events).start()

    def _reset(self) -> None:
        self.counts = {"decisions": 0, "gaps": 0, "on_time": 0, "excluded": 0,
                       "value_bytes": 0}
        self.worst_gap = 0.0
        self.late_by_worker: dict[str, int] = {}

    def _seed(self, kvs: list[KeyValue], _revision: int) -> None:
        """Each city's latest decision, read at the start (and after falling behind a
        compaction): the next one's gap is measured from it."""
        with self._lock:
            self.last = {kv.key[len(self.root):]: decided for kv in kvs
                         if (decided := decisionlog.decided_at(kv.value)) is not None}

    def _events(self, batch: WatchBatch) -> None:
        deadline = self.period + ON_TIME_SLACK
        with self._lock:
            for event in batch.events:
                if event.kind != "put":
                    continue
                value = event.kv.value
                decided = decisionlog.decided_at(value)
                if decided is None:
                    continue
                city = event.kv.key[len(self.root):]
                c = self.counts
                c["decisions"] += 1
                c["value_bytes"] += len(value)
                before = self.last.get(city)
                self.last[city] = decided
                if before is None:
                    continue
                if self.exclude[0] <= decided < self.exclude[1]:
                    c["excluded"] += 1
                    continue
                gap = decided - before
                c["gaps"] += 1
                c["on_time"] += gap <= deadline
                self.worst_gap = max(self.worst_gap, gap)
                if gap > deadline:  # one worker's trouble or the whole fleet's?
                    writer = decisionlog.writer(value)
                    self.late_by_worker[writer] = self.late_by_worker.get(writer, 0) + 1

    def take(self) -> tuple[dict[str, int], float, dict[str, int]]:
        """The counts since the last call, the interval's longest gap, and its late gaps
        by the worker that ended them."""
        with self._lock:
            counts, worst, late = self.counts, self.worst_gap, self.late_by_worker
            self._reset()
        return counts, worst, late

    def stop(self) -> None:
        self._watch.stop()


def threads_of(pid: int) -> int:
    """The process's thread count (``Threads:`` in ``/proc/<pid>/status``), 0 if gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def readable(client: EtcdClient, key: str, revision: int) -> bool:
    try:
        client.range(key, revision=revision, count_only=True)
    except EtcdCompacted:
        return False
    return True


def etcd_figures(client: EtcdClient, url: str, keys: Keys, city: str,
                 retention: int) -> dict[str, Any]:
    """etcd's side of a sample: database size and size in use, current and oldest
    readable revision, and whether ``city``'s decision key is readable at the edge of
    the retention window. NaN (readable: ``None``) while etcd does not answer, as during
    ``--stall-etcd``: the sample still counts the workers' decisions."""
    try:
        db_size, in_use = db_sizes(client, url)
        _, current = client.get_prefix(keys.decisions, count_only=True)
        oldest = oldest_revision(client, keys.decisions, current)
        edge = max(1, current - retention + 1)
        return {"db_size": db_size, "db_size_in_use": in_use, "revision": current,
                "oldest_readable_revision": oldest, "history_edge_revision": edge,
                "history_readable": readable(client, keys.decision(city), edge)}
    except EtcdError as exc:
        log(f"  etcd did not answer the sample's reads: {exc}")
        return {"db_size": math.nan, "db_size_in_use": math.nan, "revision": math.nan,
                "oldest_readable_revision": math.nan, "history_edge_revision": math.nan,
                "history_readable": None}


def db_sizes(client: EtcdClient, url: str) -> tuple[int, int]:
    """etcd's database size and size in use: ``Status`` (``dbSizeInUse`` where our stubs
    know it), else /metrics' ``etcd_mvcc_db_total_size_in_use_in_bytes`` (etcd 3.4)."""
    status = client.status()
    in_use = status.db_size_in_use
    if in_use is None:
        in_use = int(etcd.metric(etcd.scrape(url), "etcd_mvcc_db_total_size_in_use_in_bytes"))
    return status.db_size, in_use


def defrag(endpoints: str, client: EtcdClient) -> dict[str, Any]:
    """``etcdctl defrag``, with the sizes before and after and the seconds it blocked."""
    url = endpoints.split(",")[0]
    before = db_sizes(client, url)
    t0 = time.time()
    done = subprocess.run(["etcdctl", "--endpoints", endpoints, "defrag",
                           "--command-timeout", "300s"], capture_output=True, text=True,
                          env={**os.environ, "ETCDCTL_API": "3"}, check=False)
    t1 = time.time()
    after = db_sizes(client, url)
    return {"at": t0, "seconds": t1 - t0, "ok": done.returncode == 0,
            "output": (done.stdout + done.stderr).strip()[-300:],
            "db_size_before": before[0], "db_size_after": after[0],
            "in_use_before": before[1], "in_use_after": after[1]}


def run(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    period = args.period
    with etcd.cluster(1, etcd.server_args(args.retention_revisions,
                                          args.snapshot_count)) as cluster:
        client = etcd.client_for(cluster.endpoints)
        keys = Keys(NAMESPACE)
        names = etcd.city_names(args.cities)
        etcd.put_cities(client, keys, names, solver="greedy", period=period, params=PARAMS)
        warmup = decisionlog.DecisionLog(client, keys).start()
        procs = processes.Workers(cluster.endpoints, NAMESPACE, logs, extra=[
            "--solve-isolation", args.isolation, "--lease-ttl", "5",
            "--log-level", args.worker_log_level])
        samples: list[dict[str, Any]] = []
        defrags: list[dict[str, Any]] = []
        tally: Tally | None = None
        probe: SpeedProbe | None = None
        stall: Stall | None = None
        try:
            started = time.time()
            ids = [f"w{i + 1}" for i in range(args.workers)]
            for worker_id in ids:
                procs.start(worker_id)
            warm = decisionlog.wait_settled(warmup, len(names), args.settle,
                                            max(300.0, 8 * args.settle))
            warmup.stop()
            warm_s = time.time() - started
            log(f"warm-up {'done' if warm else 'TIMED OUT'} after {warm_s:.0f}s")
            pids = {w: procs.procs[w].pid for w in ids}
            etcd_pid = etcd.pid(cluster)
            tally = Tally(client, keys, period)
            probe = SpeedProbe()
            t0 = last = time.time()
            usage = {w: processes.process_tree_usage(p) for w, p in pids.items()}
            etcd_cpu = processes.process_tree_usage(etcd_pid)[1]
            self_cpu = time.process_time()
            end = t0 + args.minutes * 60
            baseline_defrag_done = False
            if args.stall is not None:
                what, (minute, seconds) = args.stall
                stopped = {"etcd": etcd_pid} if what == "etcd" else \
                    {w: p for w, p in pids.items() if w != ids[0]}
                stall = Stall(stopped, t0 + 60 * minute, seconds)
            while last < end - 1e-3:
                time.sleep(max(0.0, min(last + args.sample_seconds, end) - time.time()))
                now = time.time()
                counts, worst, late = tally.take()
                usage1 = {w: processes.process_tree_usage(p) for w, p in pids.items()}
                cpu_self = time.process_time()
                etcd_cpu1 = processes.process_tree_usage(etcd_pid)[1]
                store = etcd_figures(client, cluster.members[0].client_url, keys,
                                     random.choice(names), args.retention_revisions)
                window = now - last
                due = args.cities * window / period
                sample = {
                    "minute": (now - t0) / 60, "seconds": window,
                    **counts, "due": due,
                    "on_time_share": counts["on_time"] / counts["gaps"]
                    if counts["gaps"] else math.nan,
                    "delivered_share": counts["decisions"] / due,
                    "worst_gap_s": worst,
                    "late_by_worker": late,
                    "worker_rss_mib": {w: usage1[w][3] for w in ids},
                    "worker_threads": {w: threads_of(p) for w, p in pids.items()},
                    "worker_cpu_cores": {w: (usage1[w][1] - usage[w][1]) / window
                                         for w in ids},
                    "bench_cpu_cores": (cpu_self - self_cpu) / window,
                    "etcd_cpu_cores": (etcd_cpu1 - etcd_cpu) / window,
                    **probe.take(),
                    **store,
                    "etcd_rss_mib": processes.process_tree_usage(etcd_pid)[2],
                }
                samples.append(sample)
                usage, self_cpu, etcd_cpu, last = usage1, cpu_self, etcd_cpu1, now
                log(f"  min {sample['minute']:5.1f}: on time {sample['on_time_share']:.2%}, "
                    f"delivered {sample['delivered_share']:.1%}, in use "
                    f"{store['db_size_in_use'] / 2**20:.1f} MiB of "
                    f"{store['db_size'] / 2**20:.1f}, RSS "
                    f"{sum(sample['worker_rss_mib'].values()):.0f} MiB, threads "
                    f"{sum(sample['worker_threads'].values())}, rev {store['revision']} "
                    f"(oldest readable {store['oldest_readable_revision']})")
                if args.baseline_defrag and not baseline_defrag_done and \
                        sample["minute"] >= args.baseline_minute:
                    baseline_defrag_done = True
                    defrags.append(_defrag(cluster.endpoints, client, tally, period))
            defrags.append(_defrag(cluster.endpoints, client, tally, period))
            excluded = tally.take()[0]["excluded"]
        finally:
            if stall is not None:
                stall.cancel()
            if tally is not None:
                tally.stop()
            if probe is not None:
                probe.stop()
            procs.close()
            client.close()
    for d in defrags:
        d["minute"] = (d.pop("at") - t0) / 60
    return {"warmed_up": warm, "warm_up_s": warm_s, "settle_s": args.settle,
            "speed_probe_realtime": probe.realtime if probe is not None else None,
            "samples": samples,
            "defrags": defrags, "excluded_after_end": excluded}


def _defrag(endpoints: str, client: EtcdClient, tally: Tally, period: float) -> dict[str, Any]:
    tally.exclude = (time.time(), math.inf)
    result = defrag(endpoints, client)
    tally.exclude = (tally.exclude[0], time.time() + 2 * period)
    log(f"  defrag: {result['seconds']:.1f}s, {result['db_size_before'] / 2**20:.1f} → "
        f"{result['db_size_after'] / 2**20:.1f} MiB ({'ok' if result['ok'] else 'FAILED'})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.steady", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="200 cities, 4 minutes, a sample every 10 s, baseline minute 1")
    parser.add_argument("--cities", type=int, default=None, help="default 1,000 (quick 200)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--period", type=float, default=1.0, help="every city's period (s)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="the measured window after the warm-up (default 60, quick 4)")
    parser.add_argument("--settle", type=float, default=None,
                        help="the warm-up ends once no city changed worker for this long "
                             "(default 90: three rebalance delays; quick 20)")
    parser.add_argument("--sample-seconds", type=float, default=None,
                        help="seconds between samples (default 30, quick 10)")
    parser.add_argument("--baseline-minute", type=float, default=None,
                        help="growth is measured from here to the end; a defrag runs here "
                             "(default 10, quick 1)")
    parser.add_argument("--no-baseline-defrag", dest="baseline_defrag", action="store_false",
                        help="no defrag at the baseline minute, only at the end: a defrag "
                             "blocks etcd for as long as it copies the database in use, "
                             "which may outlast the workers' 5 s leases")
    parser.add_argument("--window-minutes", type=float, default=None,
                        help="growth compares the peak of this many minutes from the "
                             "baseline with the peak of the last ones (default 5, etcd's "
                             "compaction cadence; quick 1)")
    parser.add_argument("--worker-log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="the workers' --log-level (their logs: see worker_logs in the "
                             "results; info shows every handover and every move held back)")
    parser.add_argument("--retention-revisions", type=int, default=None,
                        help="etcd's --auto-compaction-retention in revision mode (default "
                             "12,000: about 5 minutes of 1,000 cities at 1 s, whose ticks "
                             "due together share a transaction, ~40 revisions a second; "
                             "quick 6,000)")
    parser.add_argument("--snapshot-count", type=int, default=10000,
                        help="etcd's --snapshot-count, as docs/operations.md recommends: "
                             "the raft entries etcd keeps in memory between snapshots "
                             "(default 10,000; etcd's own default of 100,000 let its RSS "
                             "reach 12 GiB in the hour)")
    stalls = parser.add_mutually_exclusive_group()
    stalls.add_argument("--stall-etcd", type=minute_and_seconds, default=None,
                        metavar="MINUTE:SECONDS",
                        help="stop etcd (SIGSTOP) at this minute of the measured window "
                             "for this long, e.g. 8:12; past the lease TTL (5 s) the "
                             "workers lose their sessions, and the run reports how long "
                             "on time took to come back over the target after etcd went on")
    stalls.add_argument("--stall-workers", type=minute_and_seconds, default=None,
                        metavar="MINUTE:SECONDS",
                        help="the same, stopping every worker but w1, which takes their "
                             "cities over, and must give them back once they return")
    parser.add_argument("--isolation", default="process", choices=["thread", "process"],
                        help="the workers' --solve-isolation (default process)")
    parser.add_argument("--results", default="steady",
                        help="results file name in bench/results/ (default steady); plots "
                             "go to docs/img/<name>.png")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    processes.require_psutil()
    args.stall = ("etcd", args.stall_etcd) if args.stall_etcd is not None else \
        ("workers", args.stall_workers) if args.stall_workers is not None else None
    args.cities = args.cities or (200 if args.quick else 1000)
    args.minutes = args.minutes or (4.0 if args.quick else 60.0)
    args.retention_revisions = args.retention_revisions or (6000 if args.quick else 12000)
    args.sample_seconds = args.sample_seconds or (10.0 if args.quick else 30.0)
    args.settle = args.settle if args.settle is not None else (20.0 if args.quick else 90.0)
    baseline = args.baseline_minute if args.baseline_minute is not None \
        else (1.0 if args.quick else 10.0)
    args.baseline_minute = baseline
    width = args.window_minutes or (1.0 if args.quick else COMPACTION_CADENCE_MIN)
    logs = Path(tempfile.mkdtemp(prefix="bench-steady-"))
    log(f"steady: {args.cities} cities × {args.workers} workers for {args.minutes:g} min, "
        f"worker logs in {logs}")
    results: dict[str, Any] = {
        "machine": host.describe(), "mode": "quick" if args.quick else "full",
        "cities": args.cities, "workers": args.workers, "period": args.period,
        "params": PARAMS, "solver": "greedy", "isolation": args.isolation,
        "minutes": args.minutes, "sample_seconds": args.sample_seconds,
        "retention_revisions": args.retention_revisions,
        "snapshot_count": args.snapshot_count, "baseline_minute": baseline,
        "window_minutes": width,
        "on_time": f"gap <= period + {ON_TIME_SLACK * 1e3:.0f} ms; gaps ending during a "
                   "defrag (+ 2 periods) are left out and counted as 'excluded'",
        "targets": {"growth": GROWTH_TARGET, "on_time_share": ON_TIME_TARGET,
                    "history_readable": True},
    }
    results.update(run(args, logs))
    results["summary"] = summarise(results, baseline, width)
    if args.stall is not None:
        what, (minute, seconds) = args.stall
        results["stall"] = {"stopped": what, **recovery(results["samples"], minute, seconds)}
    results["worker_logs"] = str(logs)
    s = results["summary"]
    print(f"\n{args.cities} cities, {args.workers} workers ({args.isolation}), "
          f"{args.minutes:g} min; {s['compared']}\n")
    print(output.console_table(["figure", "measured", "target"], [
        ["in-use DB growth", f"{s['db_in_use_growth']:.1%}", "≤ 10 %"],
        ["worker RSS growth", f"{s['worker_rss_growth']:.1%}", "≤ 10 %"],
        ["worker threads growth", f"{s['worker_threads_growth']:.1%}", "≤ 10 %"],
        ["on time, worst interval", f"{s['on_time_min']:.2%}", "≥ 99.5 %"],
        ["on time, overall", f"{s['on_time_overall']:.2%}", "≥ 99.5 %"],
        ["history readable", "yes" if s["history_readable"] else "no", "yes"],
        ["bytes per decision", f"{s['bytes_per_decision']:.0f}", ""],
        *([["on time back after the stall (first minute ≥ 99.5 %)",
            f"{results['stall']['recovered_after_s']:.0f} s", "≤ 60 s"]]
          if "stall" in results else [])]))
    path = output.write_results(args.results, results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    if not args.no_plot:
        try:
            plot(results, IMAGES / f"{args.results}.png")
        except ImportError:
            log("matplotlib is absent: no plot (pip install -e '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
