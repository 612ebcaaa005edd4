"""What the coordination benchmarks share: the machine's description, a private etcd,
its /metrics, worker processes, a watch on decisions, statistics, tables and results.

Not a benchmark itself; ``bench/coordination.py``, ``scale.py``, ``failover.py`` and
``leaselock.py`` import it (each puts the repository root first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
IMAGES = ROOT / "docs" / "img"

from coordinator.etcd import EtcdClient, EtcdConfig  # noqa: E402
from coordinator.keys import Keys  # noqa: E402
from coordinator.settings import CityConfig  # noqa: E402
from devtools.localetcd import ETCD, EtcdCluster  # noqa: E402

# etcd for benchmarks: keep history bounded (decisions are rewritten every second), and
# leave room so a long run never trips the space quota.
ETCD_ARGS = ["--auto-compaction-mode", "revision", "--auto-compaction-retention", "20000",
             "--quota-backend-bytes", str(8 * 1024**3)]


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP end a benchmark like Ctrl-C does: through its ``finally`` blocks,
    which stop its worker processes and etcd servers. Without this, ``kill <pid>`` or
    ``timeout`` left them running (each worker in a session of its own)."""
    raise SystemExit(128 + signum)


if threading.current_thread() is threading.main_thread():
    for _signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(_signum) in (signal.SIG_DFL, None):
            signal.signal(_signum, _exit_on_signal)


# -- the machine ----------------------------------------------------------------------------

def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def etcd_version() -> str:
    try:
        out = subprocess.run([ETCD, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"etcd Version:\s*(\S+)", out)
    return match.group(1) if match else out.strip().splitlines()[0]


def code_version() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (the work tree of a
    shared checkout can change while a benchmark runs: each worker process imports the
    code as it is when it starts)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()
             if line[3:].startswith(("coordinator/", "solvers/", "protos/"))]
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "subject": git("log", "-1", "--format=%s"), "modified": dirty}


def machine() -> dict[str, Any]:
    """The machine and the software measured, recorded with every result."""
    return {
        "code": code_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "etcd": etcd_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# -- statistics -----------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return float(data[low] + (data[high] - data[low]) * (pos - low))


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": percentile(values, 50), "min": min(values), "max": max(values),
            "n": len(values)}


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else math.nan,
            "mean": sum(values) / len(values) if values else math.nan}


# -- output ---------------------------------------------------------------------------------

def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in cells]
    return "\n".join(out)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=False, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def save_figure(fig: Any, path: Path) -> None:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- etcd -----------------------------------------------------------------------------------

@contextlib.contextmanager
def etcd(members: int = 1) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(members, extra_args=ETCD_ARGS).start()
    try:
        yield cluster
    finally:
        cluster.close()


def client_for(endpoints: str, timeout: float = 5.0) -> EtcdClient:
    return EtcdClient(EtcdConfig(endpoints=tuple(endpoints.split(",")), timeout=timeout))


def scrape(url: str) -> dict[str, float]:
    """etcd's /metrics (served on its client URL) as ``{series: value}``."""
    text = urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def grpc_requests(metrics: dict[str, float]) -> dict[str, float]:
    """Requests etcd received, by method: unary calls handled plus stream messages
    (``LeaseKeepAlive``, ``Watch``) received."""
    out: dict[str, float] = defaultdict(float)
    for series, value in metrics.items():
        if series.startswith("grpc_server_handled_total{"):
            labels = dict(_LABEL.findall(series))
            if labels.get("grpc_type") == "unary":
                out[labels["grpc_method"]] += value
        elif series.startswith("grpc_server_msg_received_total{"):
            labels = dict(_LABEL.findall(series))
            if labels.get("grpc_type") == "bidi_stream":
                out[labels["grpc_method"]] += value
    return dict(out)


def metric(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


@dataclass
class MetricsDelta:
    """The change of etcd's counters between two scrapes."""

    seconds: float
    requests: dict[str, float]
    mvcc: dict[str, float]
    cpu_seconds: float

    @property
    def total_requests(self) -> float:
        return sum(v for k, v in self.requests.items() if k not in ("Watch",))

    def rate(self) -> float:
        return self.total_requests / self.seconds if self.seconds else math.nan


class EtcdMeter:
    """Scrape etcd's /metrics now and later; report what happened in between."""

    MVCC = ("etcd_mvcc_txn_total", "etcd_mvcc_put_total", "etcd_mvcc_range_total",
            "etcd_mvcc_delete_total", "etcd_server_proposals_committed_total",
            "etcd_disk_wal_fsync_duration_seconds_count")

    def __init__(self, url: str) -> None:
        self.url = url
        self._start = scrape(url)
        self._t0 = time.monotonic()

    def delta(self) -> MetricsDelta:
        end = scrape(self.url)
        seconds = time.monotonic() - self._t0
        a, b = grpc_requests(self._start), grpc_requests(end)
        requests = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
        requests = {k: v for k, v in requests.items() if v}
        mvcc = {k: metric(end, k) - metric(self._start, k) for k in self.MVCC}
        cpu = metric(end, "process_cpu_seconds_total") \
            - metric(self._start, "process_cpu_seconds_total")
        return MetricsDelta(seconds, requests, mvcc, cpu)


# -- cities ---------------------------------------------------------------------------------

def put_cities(client: EtcdClient, keys: Keys, names: Sequence[str], *, solver: str,
               period: float, params: dict[str, Any] | None = None,
               state_source: str = "simulated") -> None:
    """Create cities, as ``dispatchctl city add`` would (64 puts per transaction)."""
    ops = [client.op_put(keys.city(name), CityConfig(
        city=name, solver=solver, period=period, state_source=state_source,
        params=dict(params or {})).encode()) for name in names]
    for i in range(0, len(ops), 64):
        client.txn([], ops[i:i + 64])


def city_names(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


# -- decisions, watched ---------------------------------------------------------------------

_DECIDED = re.compile(rb'"decidedAt":\s*"([^"]+)"')
_WORKER = re.compile(rb'"workerId":\s*"([^"]+)"')
_TOKEN = re.compile(rb'"token":\s*"?(\d+)')


def parse_rfc3339(text: str) -> float:
    """protobuf's Timestamp JSON (``2024-01-01T00:00:00.123456Z``) → epoch seconds."""
    import calendar

    main, _, frac = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + frac) if frac else 0.0)


@dataclass
class Seen:
    """One decision as the watch delivered it."""

    city: str
    received: float      # time.time() when the watch delivered it
    decided: float       # its decidedAt (the writer's clock; same host here)
    worker: str
    token: int
    revision: int


@dataclass
class DecisionLog:
    """Every decision of a namespace, from one watch stream on ``<ns>/decisions/``.

    Parses only the three fields it needs (a regular expression, not the protobuf JSON
    parser), so watching 1,000 decisions a second costs the benchmark process little.
    """

    client: EtcdClient
    keys: Keys
    by_city: dict[str, list[Seen]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _stream: Any = None

    def start(self) -> DecisionLog:
        _, revision = self.client.get_prefix(self.keys.decisions, count_only=True)
        self._stream = self.client.watch_stream(self.keys.decisions, revision + 1)
        self._thread = threading.Thread(target=self._run, name="decision log", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        root = self.keys.decisions
        with contextlib.suppress(Exception):
            for batch in self._stream:
                now = time.time()
                seen = []
                for event in batch.events:
                    if event.kind != "put":
                        continue
                    value = event.kv.value
                    decided = _DECIDED.search(value)
                    worker = _WORKER.search(value)
                    token = _TOKEN.search(value)
                    seen.append(Seen(
                        event.kv.key[len(root):], now,
                        parse_rfc3339(decided.group(1).decode()) if decided else now,
                        worker.group(1).decode() if worker else "",
                        int(token.group(1)) if token else 0, event.kv.mod_revision))
                with self._cond:
                    for s in seen:
                        self.by_city[s.city].append(s)
                    self.count += len(seen)
                    self._cond.notify_all()
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.close()

    def wait(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (checked on every delivered batch)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def snapshot(self) -> dict[str, list[Seen]]:
        with self._cond:
            return {city: list(items) for city, items in self.by_city.items()}

    def latest_writer(self) -> dict[str, str]:
        with self._cond:
            return {city: items[-1].worker for city, items in self.by_city.items() if items}

    def first_after(self, city: str, since: float, *, not_worker: str | None = None,
                    worker: str | None = None) -> Seen | None:
        with self._cond:
            for s in self.by_city.get(city, ()):
                if s.received >= since and (not_worker is None or s.worker != not_worker) \
                        and (worker is None or s.worker == worker):
                    return s
        return None


def gaps(seen: Sequence[Seen], start: float, end: float, *,
         clock: str = "decided") -> list[float]:
    """Intervals between consecutive decisions of one city whose later decision falls
    in [start, end) (by the chosen clock: ``decided`` or ``received``)."""
    times = [getattr(s, clock) for s in seen]
    return [b - a for a, b in itertools.pairwise(times) if start <= b < end]


# -- worker processes -----------------------------------------------------------------------

class Workers:
    """``dispatch-worker`` subprocesses (``python -m coordinator.cli.worker``), each in its
    own process group so a kill reaches its solver processes too."""

    def __init__(self, endpoints: str, namespace: str, logs: Path, *,
                 extra: Sequence[str] = ()) -> None:
        self.endpoints = endpoints
        self.namespace = namespace
        self.logs = logs
        self.extra = list(extra)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, worker_id: str, *args: str) -> subprocess.Popen[bytes]:
        out = open(self.logs / f"{worker_id}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli.worker", "--etcd", self.endpoints,
             "--namespace", self.namespace, "--worker-id", worker_id,
             "--log-level", "warning", *self.extra, *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
        out.close()
        self.procs[worker_id] = proc
        self.started_at[worker_id] = time.time()
        return proc

    def alive(self) -> list[str]:
        return [w for w, p in self.procs.items() if p.poll() is None]

    def kill(self, worker_id: str) -> float:
        """SIGKILL the worker and its solver processes; returns the time of the kill."""
        proc = self.procs[worker_id]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        killed = time.time()
        proc.wait()
        return killed

    def terminate(self, worker_id: str) -> float:
        proc = self.procs[worker_id]
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        return time.time()

    def wait(self, worker_id: str, timeout: float = 30.0) -> None:
        proc = self.procs[worker_id]
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(worker_id)

    def close(self) -> None:
        for worker_id, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            _ = worker_id


_PROBE = """
import sys, time
interval, seconds = float(sys.argv[1]), float(sys.argv[2])
late = []
end = time.monotonic() + seconds
due = time.monotonic() + interval
while due < end:
    time.sleep(max(0.0, due - time.monotonic()))
    late.append(time.monotonic() - due)
    due += interval
print(" ".join(f"{x:.6f}" for x in late))
"""


class JitterProbe:
    """The baseline for lateness, measured in the same run: a tiny Python process that
    only sleeps to a 10 ms grid and records how late it wakes up. On a machine shared
    with other work, this is the scheduling delay any process sees."""

    def __init__(self, seconds: float, interval: float = 0.01) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _PROBE, str(interval),
                                      str(seconds)], stdout=subprocess.PIPE, text=True)

    def result(self) -> dict[str, float]:
        out, _ = self.proc.communicate(timeout=600)
        late = [float(x) for x in out.split()]
        return {"n": len(late), "p50_ms": percentile(late, 50) * 1e3,
                "p99_ms": percentile(late, 99) * 1e3,
                "max_ms": (max(late) if late else math.nan) * 1e3}


def process_tree_usage(pid: int) -> tuple[float, float, float, int]:
    """(CPU seconds of the process, CPU seconds of it and its children, RSS of the process
    in MiB, RSS of it and its children in MiB)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        cpu = sum(proc.cpu_times()[:2])
        rss = proc.memory_info().rss
        total_cpu, total_rss = cpu, rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total_cpu += sum(child.cpu_times()[:2])
                total_rss += child.memory_info().rss
    except psutil.Error:
        return math.nan, math.nan, math.nan, 0
    return cpu, total_cpu, rss / 2**20, total_rss / 2**20  # type: ignore[return-value]


def etcd_pid(cluster: EtcdCluster, index: int = 0) -> int:
    process = cluster.members[index].process
    assert process is not None
    return process.pid


def owners_from_elections(client: EtcdClient, keys: Keys) -> dict[str, str]:
    """city -> the worker id of its leader (the oldest candidate key), read from etcd."""
    kvs, _ = client.get_prefix(keys.elections)
    best: dict[str, tuple[int, str]] = {}
    for kv in kvs:
        parsed = keys.candidate(kv.key)
        if parsed is None:
            continue
        city = parsed[0]
        if city not in best or kv.create_revision < best[city][0]:
            best[city] = (kv.create_revision, kv.value.decode(errors="replace"))
    return {city: worker for city, (_, worker) in best.items()}


def sample_decision_value(n_orders: int = 30, n_couriers: int = 20) -> bytes:
    """A decision as the worker writes it for a simulated city of this size (greedy)."""
    from coordinator.codec import encode
    from protos import dispatch_pb2 as pb
    from solvers.cost import solution_cost
    from solvers.generate import simulated_state
    from solvers.greedy import GreedySolver

    now = time.time()
    state = simulated_state("c00000", 1, n_orders=n_orders, n_couriers=n_couriers, seed=0,
                            taken_at=now).freeze()
    solution = GreedySolver().solve(state, {}, 1.0)
    return encode(decision_message(state, solution, token=123456, worker="bench",
                                   cost=float(solution_cost(state, solution)), pb=pb))


def decision_message(state: Any, solution: Any, *, token: int, worker: str, cost: float,
                     pb: Any) -> Any:
    """The same message ``Worker._decide`` builds (field for field)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    def stamp(seconds: float) -> Timestamp:
        t = Timestamp()
        t.FromNanoseconds(int(seconds * 1e9))
        return t

    orders = state.order_ids[solution.orders]
    couriers = state.courier_ids[solution.couriers]
    assigned = set(solution.orders.tolist())
    return pb.Decision(
        city=state.city, token=token, worker_id=worker, solver="greedy", lease_id="abc123",
        assignments={str(o): str(c) for o, c in zip(orders, couriers, strict=True)},
        unassigned=[str(state.order_ids[i]) for i in range(state.n_orders) if i not in assigned],
        state_read_at=stamp(state.taken_at), solve_seconds=0.001, decided_at=stamp(time.time()),
        tick=1,
        details=[pb.Assignment(order_id=str(o), courier_id=str(c), pickup_eta_seconds=e)
                 for o, c, e in zip(orders, couriers, solution.pickup_eta.tolist(), strict=True)],
        cost=cost,
    )
