"""What resuming a quiet watch costs etcd: replayed from its last event, against read
again (what ``PrefixWatch`` does beyond ``REPLAY_LIMIT``), against opened at the present.

    python -m bench.watchresume            # 12,000 revisions of history, 5 trials each
    python -m bench.watchresume --quick    # 3,000 revisions, 3 trials

A worker's quiet prefixes (candidates, settings, members) change rarely while decisions
write ~40 revisions a second, each a transaction of ~25 decisions of ~2 KB. A watch on
such a prefix, resumed after its stream broke (the worker paused, cut off, its member
restarted), asked etcd for every event since its last one: etcd then reads every
revision since, of every key, to find the prefix's few, under a lock its writes wait on.

Here: a quiet prefix of 2,000 small keys, then a history of decision-like transactions
(retention's worth by default: the worst a watch can be behind), then three ways of
opening ``--watches`` watches on the quiet prefix together, each ``--trials`` times,
while a probe puts a key every 10 ms and times it. The baseline, same run: the watches
opened at the present (``watch`` from the current revision + 1). Figures: the longest
put during the resume, the median put, and how long until every watch delivered a
marker written just after opening.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import ROOT, etcd, host, output, stats
from bench.output import log
from coordinator.etcd import EtcdClient, WatchStream

QUIET, BUSY, PROBE = "/quiet/", "/busy/", "/probe"
#: decisions per transaction and bytes per decision, as 1,000 cities at 1 s write them
PER_REVISION, DECISION_BYTES = 25, 2_000
QUIET_KEYS = 2_000
#: seconds the probe runs before opening the watches, and after they all synced
LEAD, TAIL = 1.0, 1.0
HEADERS = ["opened", "longest put (ms, median of trials)", "× baseline", "median put (ms)",
           "all synced after (s)"]


def write_history(client: EtcdClient, revisions: int) -> int:
    """The quiet prefix, then ``revisions`` decision-like transactions after it; returns
    the quiet prefix's last revision."""
    for start in range(0, QUIET_KEYS, 100):
        client.txn([], [client.op_put(f"{QUIET}{i:05d}", b"w" * 40)
                        for i in range(start, min(start + 100, QUIET_KEYS))])
    _, quiet_at = client.get_prefix(QUIET, count_only=True)
    value = b"d" * DECISION_BYTES

    def one(i: int) -> None:
        client.txn([], [client.op_put(f"{BUSY}c{(i * PER_REVISION + j) % 1000:04d}", value)
                        for j in range(PER_REVISION)])

    with ThreadPoolExecutor(8) as pool:
        for done, _ in enumerate(pool.map(one, range(revisions)), 1):
            if done % 2_000 == 0:
                log(f"  history: {done:,} of {revisions:,} revisions")
    return quiet_at


class Probe:
    """Puts one key every 10 ms and keeps how long each took."""

    def __init__(self, client: EtcdClient) -> None:
        self._client = client
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()
            self._client.put(PROBE, b"p")
            self.latencies.append(time.monotonic() - asked)
            self._stop.wait(0.01)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def synced(streams: list[WatchStream], marker: str) -> None:
    """Wait until every stream has delivered the put of ``marker``."""
    for stream in streams:
        for batch in stream:
            if any(e.kv.key == marker for e in batch.events):
                break


def trial(client: EtcdClient, how: str, quiet_at: int, watches: int,
          number: int) -> dict[str, Any]:
    """Open ``watches`` watches on the quiet prefix the ``how`` way, under the probe."""
    with Probe(client) as probe:
        time.sleep(LEAD)
        before = len(probe.latencies)
        opened = time.monotonic()
        streams = []
        for _ in range(watches):
            if how == "replayed":
                start = quiet_at + 1
            else:  # where etcd is (a count), as PrefixWatch asks; "read again" then reads
                _, now = client.get_prefix(QUIET, count_only=True)
                if how == "read again":
                    _, now = client.get_prefix(QUIET)
                start = now + 1
            streams.append(client.watch_stream(QUIET, start))
        marker = f"{QUIET}marker-{how}-{number}"
        client.put(marker, b"m")
        try:
            synced(streams, marker)
            took = time.monotonic() - opened
        finally:
            for stream in streams:
                stream.close()
        time.sleep(TAIL)
        during = probe.latencies[before:]
    client.delete(marker)
    return {"longest_put_ms": 1e3 * max(during),
            "median_put_ms": 1e3 * stats.percentile(during, 50),
            "synced_s": took}


def summarise(trials: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out = {how: {key: stats.percentile([t[key] for t in ts], 50) for key in ts[0]}
           for how, ts in trials.items()}
    base = out["present"]["longest_put_ms"]
    for figures in out.values():
        figures["longest_put_over_baseline"] = figures["longest_put_ms"] / base
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watchresume", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="3,000 revisions of history, 3 trials")
    parser.add_argument("--revisions", type=int, default=None,
                        help="decision transactions between the quiet prefix's last change "
                             "and the resume (default 12,000: the steady benchmark's "
                             "retention; quick 3,000)")
    parser.add_argument("--watches", type=int, default=3,
                        help="watches opened together (default 3: three workers resuming)")
    parser.add_argument("--trials", type=int, default=None, help="default 5 (quick 3)")
    parser.add_argument("--results", default="watchresume",
                        help="results file name in bench/results/ (default watchresume)")
    args = parser.parse_args(argv)
    revisions = args.revisions or (3_000 if args.quick else 12_000)
    trials = args.trials or (3 if args.quick else 5)
    with etcd.cluster(1, etcd.server_args(retention=10 * revisions)) as cluster:
        client = etcd.client_for(cluster.endpoints, timeout=30.0)
        log(f"writing {QUIET_KEYS:,} quiet keys, then {revisions:,} revisions of "
            f"{PER_REVISION} × {DECISION_BYTES:,} B")
        quiet_at = write_history(client, revisions)
        runs: dict[str, list[dict[str, Any]]] = {"present": [], "read again": [],
                                                 "replayed": []}
        for number in range(trials):
            for how, kept in runs.items():
                kept.append(trial(client, how, quiet_at, args.watches, number))
                log(f"  trial {number + 1}, {how}: longest put "
                    f"{kept[-1]['longest_put_ms']:.0f} ms, synced in {kept[-1]['synced_s']:.2f} s")
        client.close()
    summary = summarise(runs)
    results = {"machine": host.describe(), "mode": "quick" if args.quick else "full",
               "revisions_behind": revisions, "per_revision": PER_REVISION,
               "decision_bytes": DECISION_BYTES, "quiet_keys": QUIET_KEYS,
               "watches": args.watches, "trials": trials, "runs": runs, "summary": summary}
    print(f"\n{args.watches} watches on a quiet prefix of {QUIET_KEYS:,} keys, "
          f"{revisions:,} revisions behind, opened together (median of {trials} trials):\n")
    print(output.console_table(HEADERS, [
        [how, f["longest_put_ms"], f"{f['longest_put_over_baseline']:.1f}",
         f["median_put_ms"], f["synced_s"]] for how, f in summary.items()]))
    path = output.write_results(args.results, results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
