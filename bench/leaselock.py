"""The well-known alternative, measured beside ours: Kubernetes client-go's leader
election ``LeaseLock``, reimplemented minimally on etcd, against etcd-native elections
with fencing.

    python -m bench.leaselock            # full: 20 kill trials each (~15 minutes)
    python -m bench.leaselock --quick    # 3 trials each (~2 minutes)

The lock (``client-go/tools/leaderelection``) with its default timings: LeaseDuration
15 s, RenewDeadline 10 s, RetryPeriod 2 s. One key holds the lock record
(``holderIdentity``, ``acquireTime``, ``renewTime``, ``leaseDurationSeconds``,
``leaderTransitions``) and is updated only by compare-and-swap on its mod revision
(client-go's resourceVersion). As in client-go:

* a candidate tries to acquire every RetryPeriod × (1 + U(0, 1.2)) (``wait.JitterUntil``
  with ``JitterFactor`` 1.2);
* it takes the lock over only when LeaseDuration has passed since it last *observed
  the record change* (client-go compares its own ``observedTime``, not the record's
  ``renewTime``, to be immune to clock skew; on one host the two agree);
* the holder renews every RetryPeriod and steps down when renewing has failed for
  RenewDeadline;
* ``IsLeader()`` answers from the locally observed record.

Each holder writes a decision for one city every second (a plain put: the lock gives no
fencing token to carry), and every candidate runs in its own process so that it can be
killed with SIGKILL. The failover measurement is ``failover.py``'s, run in the same
invocation against real ``dispatch-worker`` processes (same period, same kill, same
decision watch).

It also runs a **pause** test, the safety difference: the holder is stopped (SIGSTOP)
for longer than its lease, another candidate takes over, the holder is continued
(SIGCONT). Counted: decisions the paused holder got accepted after the new holder's
first decision. With the LeaseLock nothing stops them; with our fenced commits etcd
rejects them (the worker logs "fenced out").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import IMAGES, RESULTS, ROOT, decisionlog, etcd, host, output, stats
from bench.output import log
from coordinator.errors import EtcdError
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys

LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
JITTER_FACTOR = 1.2
PERIOD = 1.0
NAMESPACE = "/leaselock"
CITY = "c00000"


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


# -- the lock (runs in each candidate process) ----------------------------------------------

class LeaseLock:
    """client-go's ``LeaderElector`` over a ``LeaseLock``, on an etcd key."""

    def __init__(self, client: EtcdClient, key: str, identity: str) -> None:
        self.client = client
        self.key = key
        self.identity = identity
        self.observed_raw: bytes | None = None
        self.observed_record: dict[str, Any] = {}
        self.observed_time = 0.0  # monotonic, when the record last changed for us
        self.stopped_leading = threading.Event()

    def is_leader(self) -> bool:
        return self.observed_record.get("holderIdentity") == self.identity

    def try_acquire_or_renew(self) -> bool:
        now = time.time()
        record = {"holderIdentity": self.identity, "leaseDurationSeconds": int(LEASE_DURATION),
                  "renewTime": rfc3339(now), "acquireTime": rfc3339(now),
                  "leaderTransitions": 0}
        try:
            kv = self.client.get(self.key)
            if kv is None:
                result = self.client.txn(
                    [self.client.cmp_create_revision(self.key, 0)],
                    [self.client.op_put(self.key, json.dumps(record))])
                if result.succeeded:
                    self._observe(json.dumps(record).encode(), record)
                return result.succeeded
            old = json.loads(kv.value)
            if kv.value != self.observed_raw:
                self._observe(kv.value, old)
            if old.get("holderIdentity") and \
                    self.observed_time + LEASE_DURATION > time.monotonic() and \
                    not self.is_leader():
                return False  # held by another and not expired (by our observation)
            if self.is_leader():
                record["acquireTime"] = old["acquireTime"]
                record["leaderTransitions"] = old["leaderTransitions"]
            else:
                record["leaderTransitions"] = old.get("leaderTransitions", 0) + 1
            raw = json.dumps(record)
            result = self.client.txn([self.client.cmp_mod_revision(self.key, kv.mod_revision)],
                                     [self.client.op_put(self.key, raw)])
            if result.succeeded:
                self._observe(raw.encode(), record)
            return result.succeeded
        except EtcdError:
            return False

    def _observe(self, raw: bytes, record: dict[str, Any]) -> None:
        self.observed_raw = raw
        self.observed_record = record
        self.observed_time = time.monotonic()

    def acquire(self) -> None:
        """``wait.JitterUntil(tryAcquireOrRenew, RetryPeriod, 1.2, sliding)``."""
        while not self.try_acquire_or_renew():
            time.sleep(RETRY_PERIOD * (1 + random.random() * JITTER_FACTOR))

    def renew(self) -> None:
        """Renew every RetryPeriod; give up after failing for RenewDeadline."""
        while True:
            deadline = time.monotonic() + RENEW_DEADLINE
            while not self.try_acquire_or_renew():
                if time.monotonic() >= deadline:
                    self.stopped_leading.set()
                    return
                time.sleep(RETRY_PERIOD)
            time.sleep(RETRY_PERIOD)


def candidate_main(endpoints: str, identity: str) -> None:
    client = etcd.client_for(endpoints, timeout=2.0)
    keys = Keys(NAMESPACE)
    lock = LeaseLock(client, f"{NAMESPACE}/lock", identity)
    lock.acquire()
    print(f"{identity} leads", flush=True)
    renewer = threading.Thread(target=lock.renew, daemon=True)
    renewer.start()
    tick = 0
    next_due = time.monotonic()
    # OnStartedLeading: decide every period while IsLeader(); a plain put, no fence.
    while not lock.stopped_leading.is_set():
        if lock.is_leader():
            tick += 1
            value = json.dumps({"city": CITY, "workerId": identity, "tick": tick,
                                "decidedAt": rfc3339(time.time())})
            with contextlib.suppress(EtcdError):
                client.put(keys.decision(CITY), value)
        next_due += PERIOD
        time.sleep(max(0.0, next_due - time.monotonic()))
    print(f"{identity} stopped leading", flush=True)
    os._exit(0)  # as client-go programs do (klog.Fatal / os.Exit in OnStoppedLeading)


# -- the bench --------------------------------------------------------------------------------

class LockBed:
    def __init__(self, candidates: int, logs: Path) -> None:
        self.cluster = etcd.start(1)
        self.client = etcd.client_for(self.cluster.endpoints)
        self.keys = Keys(NAMESPACE)
        self.decisions = decisionlog.DecisionLog(self.client, self.keys).start()
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._next = 0
        for _ in range(candidates):
            self.start()

    def start(self) -> str:
        self._next += 1
        identity = f"ll{self._next}"
        out = open(self.logs / f"{identity}.log", "ab")  # noqa: SIM115
        self.procs[identity] = subprocess.Popen(
            [sys.executable, "-m", "bench.leaselock", "--candidate", identity, "--etcd",
             self.cluster.endpoints], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        out.close()
        return identity

    def holder(self) -> str | None:
        writers = self.decisions.latest_writer()
        return writers.get(CITY)

    def wait_steady(self, timeout: float = 60.0, quiet: float = 5.0) -> str:
        """A holder has decided for ``quiet`` seconds and every other live candidate has
        had time to observe its renewals (a RetryPeriod with jitter: 4.4 s)."""
        deadline = time.monotonic() + timeout
        since, last = time.monotonic(), self.holder()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.holder()
            if now != last or now is None:
                since, last = time.monotonic(), now
            elif time.monotonic() - since >= quiet:
                return now
        raise RuntimeError("no steady LeaseLock holder")

    def kill(self, identity: str) -> float:
        proc = self.procs[identity]
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.time()
        proc.wait()
        return killed

    def close(self) -> None:
        self.decisions.stop()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.client.close()
        self.cluster.close()


def leaselock_kill_trials(trials: int, candidates: int, logs: Path) -> list[dict[str, Any]]:
    bed = LockBed(candidates, logs / "leaselock")
    out = []
    try:
        for trial in range(trials):
            holder = bed.wait_steady(quiet=5.0 + random.uniform(0, RETRY_PERIOD))
            killed = bed.kill(holder)
            ok = bed.decisions.wait(
                lambda d, h=holder, k=killed: d.first_after(CITY, k, not_worker=h) is not None,
                LEASE_DURATION + 3 * RETRY_PERIOD * (1 + JITTER_FACTOR) + 10)
            first = bed.decisions.first_after(CITY, killed, not_worker=holder)
            took = first.received - killed if first else math.nan
            out.append({"trial": trial, "victim": holder, "complete": ok, "failover_s": took,
                        "new_holder": first.worker if first else None})
            log(f"  LeaseLock kill {trial + 1}/{trials}: {holder} → "
                f"{first.worker if first else '?'} after {took:.2f}s")
            bed.start()
    finally:
        bed.close()
    return out


def leaselock_pause_trials(trials: int, candidates: int, logs: Path) -> list[dict[str, Any]]:
    """SIGSTOP the holder past its lease; count its decisions accepted after the new
    holder's first."""
    bed = LockBed(candidates, logs / "leaselock-pause")
    out = []
    try:
        for trial in range(trials):
            holder = bed.wait_steady(quiet=5.0)
            proc = bed.procs[holder]
            os.killpg(proc.pid, signal.SIGSTOP)
            stopped = time.time()
            bed.decisions.wait(lambda d, h=holder, s=stopped:
                               d.first_after(CITY, s, not_worker=h) is not None, 60)
            new = bed.decisions.first_after(CITY, stopped, not_worker=holder)
            time.sleep(2.0)
            os.killpg(proc.pid, signal.SIGCONT)
            resumed = time.time()
            time.sleep(RENEW_DEADLINE + 2 * RETRY_PERIOD)
            stale = _stale(bed.decisions, CITY, holder, new.received if new else resumed)
            out.append({"trial": trial, "paused_s": resumed - stopped, "stale_accepted": stale,
                        "new_holder": new.worker if new else None})
            log(f"  LeaseLock pause {trial + 1}/{trials}: {holder} paused "
                f"{resumed - stopped:.1f}s, {stale} decision(s) accepted after the new "
                f"holder took over")
            if proc.poll() is None:
                bed.kill(holder)
            bed.start()
    finally:
        bed.close()
    return out


def _stale(decisions: decisionlog.DecisionLog, city: str, old: str, since: float,
           token: int | None = None) -> int:
    """Decisions by ``old`` (with its old ``token``, when there is one) that etcd accepted
    after ``since``: written by a leader that had been replaced."""
    return sum(1 for s in decisions.snapshot().get(city, [])
               if s.worker == old and s.received > since
               and (token is None or s.token == token))


def election_pause_trials(trials: int, ttl: int, logs: Path) -> list[dict[str, Any]]:
    """The same pause against dispatch-worker processes (etcd election + fencing)."""
    from bench import failover

    bed = failover.Bed(1, 2, ttl, "thread", logs / "election-pause")
    out = []
    try:
        bed.settle(quiet=3.0, timeout=120)
        for trial in range(trials):
            holder = bed.writers()[CITY]
            token = bed.decisions.snapshot()[CITY][-1].token
            proc = bed.procs.procs[holder]
            os.killpg(proc.pid, signal.SIGSTOP)
            stopped = time.time()
            bed.decisions.wait(lambda d, h=holder, s=stopped:
                               d.first_after(CITY, s, not_worker=h) is not None, 60)
            new = bed.decisions.first_after(CITY, stopped, not_worker=holder)
            time.sleep(2.0)
            os.killpg(proc.pid, signal.SIGCONT)
            resumed = time.time()
            time.sleep(ttl + 3.0)
            # the paused worker may rejoin and be handed the city back under a new token:
            # only decisions under its old token are stale
            stale = _stale(bed.decisions, CITY, holder, new.received if new else resumed,
                           token)
            log_text = (bed.procs.logs / f"{holder}.log").read_text(errors="replace")
            lines = log_text.splitlines()
            # one line per rejected commit ("fenced out: ...; stepping down"), one per
            # lease the worker saw lost (not the per-city "stepping down" lines)
            fenced = sum(1 for line in lines if "fenced out: " in line)
            lost = sum(1 for line in lines if "WARNING lease " in line and " lost: " in line)
            out.append({"trial": trial, "paused_s": resumed - stopped, "stale_accepted": stale,
                        "fenced_out_logged": fenced, "stepped_down_on_lease_loss": lost,
                        "old_token": token, "new_holder": new.worker if new else None})
            log(f"  election pause {trial + 1}/{trials}: {holder} paused "
                f"{resumed - stopped:.1f}s, {stale} decision(s) accepted after the new "
                f"owner took over; 'fenced out' logged {fenced}×, lease loss noticed {lost}×")
            bed.procs.kill(holder)
            bed.start_worker()
            bed.settle(quiet=3.0, timeout=120)
    finally:
        bed.close()
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    plt = output.pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    series = [("etcd election + fencing (TTL 5 s)",
               [r["worst_s"] for r in results["election_kill"]]),
              ("client-go LeaseLock (15 s / 10 s / 2 s)",
               [r["failover_s"] for r in results["leaselock_kill"]])]
    for name, values in series:
        values = sorted(v for v in values if not math.isnan(v))
        if values:
            ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post",
                    label=f"{name}: p50 {stats.percentile(values, 50):.1f} s, "
                          f"p99 {stats.percentile(values, 99):.1f} s")
    ax.set_xlabel("kill -9 of the leader → first decision by the next (s)")
    ax.set_ylabel("share of trials")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    m = results["machine"]
    ax.set_title(f"failover: etcd election vs LeaseLock — {m['cores']} cores, etcd {m['etcd']}",
                 fontsize=10)
    output.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.leaselock", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--pause-trials", type=int, default=None)
    parser.add_argument("--ttl", type=int, default=5, help="our workers' lease TTL")
    parser.add_argument("--candidate", help=argparse.SUPPRESS)
    parser.add_argument("--etcd", help=argparse.SUPPRESS)
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args(argv)
    if args.candidate:
        candidate_main(args.etcd, args.candidate)
        return 0
    if args.plot_only:
        plot(json.loads((RESULTS / "leaselock.json").read_text()),
             IMAGES / "leaselock.png")
        return 0
    from bench import failover

    trials = args.trials or (3 if args.quick else 20)
    pauses = args.pause_trials if args.pause_trials is not None else (1 if args.quick else 3)
    logs = Path(tempfile.mkdtemp(prefix="bench-leaselock-"))
    results: dict[str, Any] = {
        "machine": host.describe(), "mode": "quick" if args.quick else "full",
        "leaselock": {"lease_duration_s": LEASE_DURATION, "renew_deadline_s": RENEW_DEADLINE,
                      "retry_period_s": RETRY_PERIOD, "jitter_factor": JITTER_FACTOR},
        "election": {"lease_ttl_s": args.ttl, "workers": 3, "cities": 6},
        "period": PERIOD, "worker_logs": str(logs),
    }
    log(f"etcd election + fencing: {trials} kill trials, TTL {args.ttl}s")
    results["election_kill"] = failover.kill_trials(args.ttl, trials, cities=6, workers=3,
                                                    isolation="thread", logs=logs,
                                                    quiet=2.0 if args.quick else 3.0)
    log(f"LeaseLock: {trials} kill trials")
    results["leaselock_kill"] = leaselock_kill_trials(trials, 3, logs)
    if pauses:
        log(f"pause (SIGSTOP past the lease, then SIGCONT): {pauses} trial(s) each")
        results["election_pause"] = election_pause_trials(pauses, args.ttl, logs)
        results["leaselock_pause"] = leaselock_pause_trials(pauses, 3, logs)

    ours = [r["worst_s"] for r in results["election_kill"]]
    theirs = [r["failover_s"] for r in results["leaselock_kill"] if not math.isnan(
        r["failover_s"])]
    s_ours, s_theirs = stats.summary(ours), stats.summary(theirs)
    results["summary"] = {
        "election": s_ours, "leaselock": s_theirs,
        "leaselock_over_election_p50": s_theirs["p50"] / s_ours["p50"],
        "leaselock_over_election_p99": s_theirs["p99"] / s_ours["p99"],
    }
    rows = [[f"etcd election + fencing (TTL {args.ttl} s)", s_ours["n"], s_ours["p50"],
             s_ours["p99"], s_ours["max"], 1.0, 1.0],
            ["client-go LeaseLock (15/10/2 s)", s_theirs["n"], s_theirs["p50"],
             s_theirs["p99"], s_theirs["max"], results["summary"]
             ["leaselock_over_election_p50"], results["summary"]
             ["leaselock_over_election_p99"]]]
    print("\nkill -9 of the leader → first decision by the next leader, same run, same "
          "machine\n")
    print(output.console_table(["mechanism", "trials", "p50 s", "p99 s", "max s", "p50 × ours",
                                "p99 × ours"], rows))
    if pauses:
        print("\nPause past the lease (SIGSTOP, new leader decides, SIGCONT): decisions of the "
              "old leader accepted after the new leader's first\n")
        prow = []
        for name, key in (("etcd election + fencing", "election_pause"),
                          ("client-go LeaseLock", "leaselock_pause")):
            recs = results[key]
            prow.append([name, len(recs), sum(r["stale_accepted"] for r in recs),
                         sum(r.get("fenced_out_logged", 0) for r in recs) if
                         key == "election_pause" else "-"])
        results["pause_summary"] = {r[0]: {"trials": r[1], "stale_accepted": r[2]}
                                    for r in prow}
        print(output.console_table(["mechanism", "trials", "stale decisions accepted",
                                    "rejected by the fence (logged)"], prow))
    path = output.write_results("leaselock", results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    plot(results, IMAGES / "leaselock.png")
    print(f"plot: {(IMAGES / 'leaselock.png').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
