"""Failover and handover: how long a city goes without decisions when its owner dies, and
whether a deploy (SIGTERM, drain, a worker joining) costs a tick.

    python -m bench.failover            # full (~20 minutes)
    python -m bench.failover --quick    # a few trials of each (~2 minutes)

Real ``dispatch-worker`` processes on one etcd member, cities with a 1 s period
(``greedy`` on a small simulated city), decisions read from a watch on
``<ns>/decisions/``.

(a) **kill -9 of an owner** (lease TTL 2 s and 5 s; ≥ 20 trials each): the owner of a
    city is killed with SIGKILL (its whole process group); for each city it owned, the
    time from the kill to the first decision by another worker, as the watch delivers
    it. The moment the dead worker's membership key disappears (polled every 20 ms)
    splits that into *detection* (etcd expiring the lease: up to a TTL after the last
    keep-alive, which the worker sends every TTL/3) and *takeover* (the standby seeing
    its predecessor's key go, confirming, ticking on the city's rhythm, committing).
    Target: p99 ≤ TTL + 0.5 s.
    A fresh worker replaces the dead one before the next trial.
(b) **graceful handover** (≥ 20 trials each): SIGTERM of an owner; ``dispatchctl
    drain`` (``<ns>/drain/<worker-id>`` = ``1``) and its undrain; a worker joining. For
    the cities that changed writer, the largest gap between consecutive decisions
    (``decidedAt``) around the event, as a ratio to the period. Target: p99 gap ≤
    period + 100 ms.
(c) **joining worker**: from the joiner's process start, the time until it makes its
    first decision and until it owns its fair share ⌊N/W⌋, and how many cities moved
    (ideal: N/W).

Distributions are plotted to ``docs/img/failover.png``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import IMAGES, RESULTS, ROOT, decisionlog, etcd, host, output, processes, stats
from bench.output import log
from coordinator.codec import decode
from coordinator.keys import Keys
from protos import dispatch_pb2 as pb

NAMESPACE = "/failover"
PERIOD = 1.0
PARAMS = {"orders": 10, "couriers": 10}
SLACK = 0.1


class Bed:
    """A test bed: one etcd member, cities, a decision watch, worker processes."""

    def __init__(self, cities: int, workers: int, ttl: int, isolation: str, logs: Path,
                 *, period: float = PERIOD) -> None:
        self.cluster = etcd.start(1)
        self.client = etcd.client_for(self.cluster.endpoints)
        self.keys = Keys(NAMESPACE)
        self.names = etcd.city_names(cities)
        self.period = period
        self.ttl = ttl
        etcd.put_cities(self.client, self.keys, self.names, solver="greedy", period=period,
                        params=PARAMS)
        self.decisions = decisionlog.DecisionLog(self.client, self.keys).start()
        self.procs = processes.Workers(self.cluster.endpoints, NAMESPACE,
                                       logs / f"ttl{ttl}-{int(time.time())}",
                                       extra=["--solve-isolation", isolation,
                                              "--lease-ttl", str(ttl)])
        self._next = 0
        for _ in range(workers):
            self.start_worker()

    def start_worker(self) -> str:
        self._next += 1
        worker_id = f"w{self._next}"
        self.procs.start(worker_id)
        return worker_id

    def close(self) -> None:
        self.decisions.stop()
        self.procs.close()
        self.client.close()
        self.cluster.close()

    def writers(self) -> dict[str, str]:
        return self.decisions.latest_writer()

    def settle(self, quiet: float = 3.0, timeout: float = 60.0,
               need: set[str] | None = None) -> float:
        """Wait until every city decides, no writer changed for ``quiet`` seconds and
        (optionally) each worker in ``need`` writes for some city; returns the time the
        last change was seen."""
        deadline = time.monotonic() + timeout
        last, since = self.writers(), time.time()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.writers()
            if now != last:
                last, since = now, time.time()
                continue
            complete = len(now) == len(self.names) and \
                all(s.received > time.time() - 2 * self.period - 0.5
                    for s in self._latest().values())
            if need and not need <= set(now.values()):
                continue
            if complete and time.time() - since >= quiet:
                return since
        raise RuntimeError(f"the cluster did not settle within {timeout:.0f}s: "
                           f"{sorted(set(self.writers().values()))}")

    def _latest(self) -> dict[str, decisionlog.Seen]:
        return {c: items[-1] for c, items in self.decisions.snapshot().items() if items}

    def lease_left(self, worker_id: str) -> float:
        kv = self.client.get(self.keys.worker(worker_id))
        if kv is None:
            return math.nan
        info = decode(pb.WorkerInfo, kv.value)
        left, _ = self.client.lease_time_to_live(int(info.lease_id, 16))
        return float(left)

    def wait_gone(self, key: str, timeout: float) -> float:
        """Poll (every 20 ms) until ``key`` is deleted; the time it was first seen gone.
        A dead worker's membership key goes when etcd expires its lease."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.get(key) is None:
                return time.time()
            time.sleep(0.02)
        return math.nan

    def max_gaps(self, start: float, end: float, cities: set[str]) -> dict[str, float]:
        seen = self.decisions.snapshot()
        out = {}
        for city in cities:
            g = decisionlog.gaps(seen.get(city, []), start, end, clock="decided")
            if g:
                out[city] = max(g)
        return out


# -- (a) kill -9 ------------------------------------------------------------------------------

def kill_trials(ttl: int, trials: int, *, cities: int, workers: int, isolation: str,
                logs: Path, quiet: float = 3.0) -> list[dict[str, Any]]:
    """``trials`` kill -9s of a city owner; one record per trial."""
    bed = Bed(cities, workers, ttl, isolation, logs)
    out = []
    try:
        bed.settle(quiet=quiet, timeout=120)
        for trial in range(trials):
            writers = bed.writers()
            target = bed.names[trial % len(bed.names)]
            victim = writers[target]
            owned = sorted(c for c, w in writers.items() if w == victim)
            left = bed.lease_left(victim)
            killed = bed.procs.kill(victim)
            expired = bed.wait_gone(bed.keys.worker(victim), ttl + 10) - killed
            ok = bed.decisions.wait(
                lambda d, v=victim, o=owned, k=killed: all(
                    d.first_after(c, k, not_worker=v) is not None for c in o),
                ttl + 30)
            times, decided = {}, {}
            for city in owned:
                first = bed.decisions.first_after(city, killed, not_worker=victim)
                if first is not None:
                    times[city] = first.received - killed
                    decided[city] = first.decided - killed
            record = {
                "trial": trial, "ttl": ttl, "victim": victim, "cities": len(owned),
                "complete": ok, "lease_left_at_kill": left, "lease_expired_after_s": expired,
                "failover_s": times, "failover_decided_s": decided,
                "worst_s": max(times.values()) if times else math.nan,
                "target_s": times.get(target, math.nan),
            }
            out.append(record)
            log(f"  kill {trial + 1}/{trials} (TTL {ttl}s): {victim} owned {len(owned)}, "
                f"lease expired after {expired:.2f}s, first decisions after "
                f"{record['worst_s']:.2f}s (worst city)")
            bed.start_worker()
            bed.settle(quiet=quiet, timeout=120)
    finally:
        bed.close()
    return out


def kill_summary(records: list[dict[str, Any]], ttl: int) -> dict[str, Any]:
    per_city = [t for r in records for t in r["failover_s"].values()]
    worst = [r["worst_s"] for r in records]
    target = [r["target_s"] for r in records if not math.isnan(r["target_s"])]
    detection = [r["lease_expired_after_s"] for r in records
                 if not math.isnan(r.get("lease_expired_after_s", math.nan))]
    takeover = [r["worst_s"] - r["lease_expired_after_s"] for r in records
                if not math.isnan(r.get("lease_expired_after_s", math.nan))]
    s = stats.summary(worst)
    return {
        "ttl": ttl, "trials": len(records), "samples_per_city": len(per_city),
        "per_trial_worst": s, "per_city": stats.summary(per_city),
        "target_city": stats.summary(target),
        "lease_expired_after_kill": stats.summary(detection),
        "takeover_after_lease_expiry": stats.summary(takeover),
        "target_p99_s": ttl + 0.5, "target_met": s["p99"] <= ttl + 0.5,
        "incomplete_trials": sum(1 for r in records if not r["complete"]),
    }


# -- (b), (c) graceful handover and joining -------------------------------------------------

def graceful_trials(trials: int, *, cities: int, workers: int, isolation: str, logs: Path,
                    quiet: float = 3.0) -> list[dict[str, Any]]:
    """Cycles of: SIGTERM an owner, a worker joins, drain an owner, undrain it."""
    bed = Bed(cities, workers, 5, isolation, logs)
    out: list[dict[str, Any]] = []
    rng = random.Random(7)
    try:
        bed.settle(quiet=quiet, timeout=120)

        def measure(kind: str, event: float, before: dict[str, str], **extra: Any) -> None:
            settled = bed.settle(quiet=quiet, timeout=90, need=extra.pop("need", None))
            after = bed.writers()
            moved = {c for c in bed.names if before.get(c) != after.get(c)}
            end = max(settled, event) + 2 * bed.period + 0.5
            gaps_moved = bed.max_gaps(event - 0.5, end, moved)
            gaps_all = bed.max_gaps(event - 0.5, end, set(bed.names))
            alive = len(set(after.values()))
            alive_before = len(set(before.values()))
            # a leaving worker's share is N/W before it left; a joiner's, N/W after
            ideal = len(bed.names) / (alive_before if kind in ("sigterm", "drain") else alive)
            worst = max(gaps_moved, key=gaps_moved.__getitem__) if gaps_moved else None
            record = {"kind": kind, "moved": len(moved), "workers_before": alive_before,
                      "workers_after": alive, "ideal_moved": ideal, "worst_city": worst,
                      "worst_city_gap_end": _gap_end(bed, worst, event - 0.5, end),
                      "max_gap_s": max(gaps_moved.values()) if gaps_moved else math.nan,
                      "max_gap_ratio": (max(gaps_moved.values()) / bed.period)
                      if gaps_moved else math.nan,
                      "max_gap_any_city_s": max(gaps_all.values()) if gaps_all else math.nan,
                      "late_cities": sum(1 for g in gaps_moved.values()
                                         if g > bed.period + SLACK),
                      **extra}
            out.append(record)
            log(f"  {kind:<8} moved {record['moved']:3d} cities, max gap "
                f"{record['max_gap_s']:.3f}s ({record['max_gap_ratio']:.2f}× period)")

        for cycle in range(trials):
            # SIGTERM of an owner
            before = bed.writers()
            victim = rng.choice(sorted(set(before.values())))
            event = bed.procs.terminate(victim)
            bed.procs.wait(victim, 30)
            measure("sigterm", event, before, victim=victim)
            # a worker joins (and reaches its share)
            before = bed.writers()
            joined_at = time.time()
            joiner = bed.start_worker()
            share, first, fair_at = _wait_fair_share(bed, joiner, joined_at, timeout=60)
            measure("join", joined_at, before, need={joiner}, joiner=joiner,
                    fair_share=share, first_decision_s=first, fair_share_s=fair_at)
            # drain an owner, then undrain it
            before = bed.writers()
            victim = rng.choice(sorted(set(before.values())))
            event = time.time()
            bed.client.put(bed.keys.drain(victim), "1")
            measure("drain", event, before, victim=victim)
            before = bed.writers()
            event = time.time()
            bed.client.delete(bed.keys.drain(victim))
            measure("undrain", event, before, victim=victim, need={victim})
            log(f"  cycle {cycle + 1}/{trials} done")
    finally:
        bed.close()
    return out


def _gap_end(bed: Bed, city: str | None, start: float, end: float) -> dict[str, Any] | None:
    """The decision that ended ``city``'s largest gap: who wrote it, and whether it was
    the writer's first for the city in the window (a new owner's first tick)."""
    if city is None:
        return None
    items = bed.decisions.snapshot().get(city, [])
    best, where = -1.0, None
    for i in range(1, len(items)):
        if start <= items[i].decided < end:
            gap = items[i].decided - items[i - 1].decided
            if gap > best:
                best, where = gap, i
    if where is None:
        return None
    after, before = items[where], items[where - 1]
    return {"writer": after.worker, "previous_writer": before.worker, "gap_s": best,
            "new_owner": after.worker != before.worker}


def _wait_fair_share(bed: Bed, joiner: str, started: float,
                     timeout: float) -> tuple[int, float, float]:
    """(⌊N/W⌋, seconds to the joiner's first decision, seconds until it writes for
    ⌊N/W⌋ cities), from its process start."""
    workers = len(set(bed.writers().values())) + 1
    share = len(bed.names) // workers
    first = fair = math.nan
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = sum(1 for w in bed.writers().values() if w == joiner)
        if owned and math.isnan(first):
            first = time.time() - started
        if owned >= share:
            fair = time.time() - started
            break
        time.sleep(0.05)
    return share, first, fair


def graceful_summary(records: list[dict[str, Any]], period: float) -> dict[str, Any]:
    out = {}
    for kind in ("sigterm", "drain", "undrain", "join"):
        rows = [r for r in records if r["kind"] == kind]
        gaps = [r["max_gap_s"] for r in rows if not math.isnan(r["max_gap_s"])]
        s = stats.summary(gaps)
        out[kind] = {"trials": len(rows), "max_gap_s": s,
                     "max_gap_ratio_p50": s["p50"] / period, "max_gap_ratio_p99": s["p99"]
                     / period, "max_gap_ratio_max": s["max"] / period,
                     "moved_mean": sum(r["moved"] for r in rows) / len(rows) if rows else 0,
                     "ideal_moved_mean": sum(r["ideal_moved"] for r in rows) / len(rows)
                     if rows else 0,
                     "trials_with_a_late_city": sum(1 for r in rows if r["late_cities"]),
                     "target_s": period + SLACK, "target_met": s["p99"] <= period + SLACK}
    joins = [r for r in records if r["kind"] == "join"]
    out["joining"] = {
        "first_decision_s": stats.summary([r["first_decision_s"] for r in joins
                                           if not math.isnan(r["first_decision_s"])]),
        "fair_share_s": stats.summary([r["fair_share_s"] for r in joins
                                       if not math.isnan(r["fair_share_s"])]),
        "moved": stats.summary([r["moved"] for r in joins]),
        "ideal_moved": stats.summary([r["ideal_moved"] for r in joins]),
        "never_reached_fair_share": sum(1 for r in joins if math.isnan(r["fair_share_s"])),
    }
    return out


# -- plot -------------------------------------------------------------------------------------

def plot(results: dict[str, Any], path: Path) -> None:
    plt = output.pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for ttl, records in sorted(results["kill"].items(), key=lambda kv: int(kv[0])):
        worst = sorted(r["worst_s"] for r in records)
        ys = [(i + 1) / len(worst) for i in range(len(worst))]
        line, = ax.step(worst, ys, where="post", label=f"TTL {ttl} s (worst city per kill)")
        ax.axvline(int(ttl) + 0.5, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("kill -9 → first decision by the new owner (s)")
    ax.set_ylabel("share of trials")
    ax.set_title("failover after kill -9 (dotted: target TTL + 0.5 s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1]
    kinds = ["sigterm", "drain", "undrain", "join"]
    data = [[r["max_gap_ratio"] for r in results["graceful"]
             if r["kind"] == k and not math.isnan(r["max_gap_ratio"])] for k in kinds]
    if any(data):
        ax.boxplot([d or [math.nan] for d in data], whis=(0, 100))
        ax.set_xticks(range(1, len(kinds) + 1), kinds)
        for i, d in enumerate(data, start=1):
            ax.plot([i + random.uniform(-0.15, 0.15) for _ in d], d, ".", alpha=0.5)
        ax.axhline(1 + SLACK / PERIOD, color="grey", ls=":", label="target: period + 100 ms")
        ax.set_ylabel("largest gap ÷ period (cities that moved)")
        ax.set_title("graceful handover")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes[2]
    joins = [r for r in results["graceful"] if r["kind"] == "join"]
    if joins:
        ax.plot([r["fair_share_s"] for r in joins], [r["moved"] for r in joins], "o",
                label="cities moved")
        ax.axhline(sum(r["ideal_moved"] for r in joins) / len(joins), color="grey", ls=":",
                   label="ideal N/W")
        ax.set_xlabel("joiner's process start → fair share (s)")
        ax.set_ylabel("cities moved")
        ax.set_title("a worker joins")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    m = results["machine"]
    fig.suptitle(f"dispatch coordinator failover — {m['cpu_model']}, {m['cores']} cores, "
                 f"etcd {m['etcd']}", fontsize=10)
    output.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=None, help="kill trials per TTL")
    parser.add_argument("--cycles", type=int, default=None,
                        help="graceful cycles (each: SIGTERM, join, drain, undrain)")
    parser.add_argument("--ttls", default="2,5")
    parser.add_argument("--isolation", default="thread", choices=["thread", "process"])
    parser.add_argument("--kill-cities", type=int, default=6)
    parser.add_argument("--graceful-cities", type=int, default=60)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args(argv)
    if args.plot_only:
        import json

        plot(json.loads((RESULTS / "failover.json").read_text()),
             IMAGES / "failover.png")
        return 0
    trials = args.trials or (4 if args.quick else 20)
    cycles = args.cycles or (2 if args.quick else 20)
    quiet = 2.0 if args.quick else 3.0
    logs = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    results: dict[str, Any] = {
        "machine": host.describe(), "mode": "quick" if args.quick else "full",
        "period": PERIOD, "isolation": args.isolation, "workers": args.workers,
        "kill_cities": args.kill_cities, "graceful_cities": args.graceful_cities,
        "kill": {}, "kill_summary": {}, "graceful": [], "worker_logs": str(logs),
    }
    for ttl in [int(x) for x in args.ttls.split(",")]:
        log(f"(a) kill -9, lease TTL {ttl}s, {trials} trials")
        records = kill_trials(ttl, trials, cities=args.kill_cities, workers=args.workers,
                              isolation=args.isolation, logs=logs, quiet=quiet)
        results["kill"][str(ttl)] = records
        results["kill_summary"][str(ttl)] = kill_summary(records, ttl)
    log(f"(b)/(c) graceful handover, {cycles} cycles of SIGTERM, join, drain, undrain")
    results["graceful"] = graceful_trials(cycles, cities=args.graceful_cities,
                                          workers=args.workers, isolation=args.isolation,
                                          logs=logs, quiet=quiet)
    results["graceful_summary"] = graceful_summary(results["graceful"], PERIOD)

    print(f"\n(a) kill -9 of an owner → first decision by the new owner "
          f"({args.workers} workers, {args.kill_cities} cities, period {PERIOD:.0f} s, "
          f"{args.isolation} isolation)\n")
    rows = []
    for ttl, s in results["kill_summary"].items():
        w, c = s["per_trial_worst"], s["per_city"]
        rows.append([ttl, s["trials"], w["p50"], w["p99"], w["max"], c["n"], c["p50"],
                     c["p99"], s["lease_expired_after_kill"]["p50"],
                     s["takeover_after_lease_expiry"]["p50"],
                     s["takeover_after_lease_expiry"]["p99"],
                     f"p99 ≤ {s['target_p99_s']} s: " + ("met" if s["target_met"]
                                                         else "MISSED")])
    print(output.console_table(["TTL s", "trials", "worst p50 s", "worst p99 s", "worst max s",
                                "city samples", "city p50 s", "city p99 s", "lease expiry p50 s",
                                "takeover p50 s", "takeover p99 s", "target"], rows))
    g = results["graceful_summary"]
    print(f"\n(b) graceful handover: largest gap between decisions of the cities that moved "
          f"({args.graceful_cities} cities, {args.workers} workers)\n")
    print(output.console_table(
        ["event", "trials", "gap p50 s", "gap p99 s", "gap max s", "p99 ÷ period",
         "cities moved (mean)", "ideal", "trials with a late city", "target"],
        [[k, g[k]["trials"], g[k]["max_gap_s"]["p50"], g[k]["max_gap_s"]["p99"],
          g[k]["max_gap_s"]["max"], g[k]["max_gap_ratio_p99"], g[k]["moved_mean"],
          g[k]["ideal_moved_mean"], g[k]["trials_with_a_late_city"],
          f"p99 ≤ {PERIOD + SLACK:.1f} s: " + ("met" if g[k]["target_met"] else "MISSED")]
         for k in ("sigterm", "drain", "undrain", "join")]))
    j = g["joining"]
    print(f"\n(c) a worker joins {args.workers}: first decision p50 "
          f"{j['first_decision_s']['p50']:.2f} s, fair share p50 {j['fair_share_s']['p50']:.2f}"
          f" s (p99 {j['fair_share_s']['p99']:.2f} s) after its process start; cities moved "
          f"mean {j['moved']['mean']:.1f} (ideal {j['ideal_moved']['mean']:.1f})")
    path = output.write_results("failover", results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    plot(results, IMAGES / "failover.png")
    print(f"plot: {(IMAGES / 'failover.png').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
