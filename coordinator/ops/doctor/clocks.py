"""Worker clocks compared with this host's, from fresh decisions.

Clock skew, honestly. etcd has no API that tells its wall-clock time, and it does not
need one: leases count elapsed time on the etcd leader, so a skewed clock cannot
expire a lease early or late. Clocks matter for the *workers*: every decision carries
its writer's ``decidedAt``, which consumers and ``dispatchctl status`` compare with
their own clock. We measure that soundly by watching fresh decisions arrive: a
decision is stamped just before its commit, so for each one
``received_here - decidedAt = delay - offset`` where ``delay >= 0`` (commit and watch
delivery) and ``offset`` is the worker's clock minus ours. Hence:

- ``received_here - decidedAt < -tolerance`` for any decision **proves** the worker's
  clock is ahead of ours by more than the tolerance (fail);
- a minimum over several decisions above ``tolerance`` means its clock is behind ours,
  *or* every commit took that long (warn: we cannot tell the two apart, and both are
  worth a look);
- otherwise the worker is within the tolerance of this host's clock, up to the latency
  of its fastest commit.

So keep the host running the doctor on NTP, like the workers.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.codec import decode
from coordinator.errors import DispatchError
from coordinator.etcd import EtcdClient, WatchStream
from coordinator.keys import Keys
from coordinator.ops.doctor.findings import Finding, names, plural
from coordinator.ops.overview import Overview, read_overview
from protos import dispatch_pb2 as pb

__all__ = ["check_clocks"]


@dataclass
class _Samples:
    minimum: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def check_clocks(client: EtcdClient, keys: Keys, *, overview: Overview | None = None,
                 sample_seconds: float = 3.0, tolerance: float = 1.0,
                 clock: Callable[[], float] = time.time) -> list[Finding]:
    """Compare each deciding worker's clock with this host's (see the module doc)."""
    if sample_seconds <= 0:
        return []
    ov = overview if overview is not None else read_overview(client, keys)
    owners = {v.owner for v in ov.cities if v.owner and v.enabled}
    if not owners:
        return [Finding("ok", "clocks", "no worker is deciding: worker clocks not measured")]
    samples = _Samples()
    enough = threading.Event()
    stream: WatchStream = client.watch_stream(keys.decisions, ov.revision + 1)

    def read() -> None:
        try:
            for batch in stream:
                received = clock()
                for event in batch.events:
                    if event.kind != "put":
                        continue
                    try:
                        decision = decode(pb.Decision, event.kv.value)
                    except ValueError:
                        continue
                    stamped = decision.decided_at.ToNanoseconds() / 1e9
                    if not decision.worker_id or stamped <= 0:
                        continue
                    gap = received - stamped
                    worker = decision.worker_id
                    samples.minimum[worker] = min(samples.minimum.get(worker, gap), gap)
                    samples.count[worker] += 1
                if all(samples.count.get(w, 0) >= 3 for w in owners):
                    enough.set()
                    return
        except DispatchError:
            pass
        finally:
            enough.set()

    reader = threading.Thread(target=read, name="doctor clocks", daemon=True)
    reader.start()
    enough.wait(sample_seconds)
    stream.close()
    reader.join(2)

    out: list[Finding] = []
    measured = dict(samples.minimum)
    ahead = {w: -gap for w, gap in measured.items() if gap < -tolerance}
    behind = {w: gap for w, gap in measured.items() if gap > tolerance}
    for worker, seconds in sorted(ahead.items()):
        out.append(Finding("fail", "clocks",
                           f"{worker}'s clock is at least {seconds:.1f}s ahead of this host's "
                           "(its decisions carry a decidedAt in our future): fix NTP there"))
    for worker, seconds in sorted(behind.items()):
        out.append(Finding("warn", "clocks",
                           f"{worker}'s decisions arrive {seconds:.1f}s or more after their "
                           "decidedAt: its clock is behind this host's by up to that much, or "
                           "its commits are that slow"))
    fine = sorted(set(measured) - set(ahead) - set(behind))
    unmeasured = sorted(owners - set(measured))
    if fine:
        total = sum(samples.count[w] for w in fine)
        out.append(Finding("ok", "clocks",
                           f"{plural(len(fine), 'worker')} within {tolerance:g}s of this "
                           f"host's clock (from {total} fresh decisions)"))
    if unmeasured:
        out.append(Finding("warn", "clocks",
                           f"no decision from {names(unmeasured)} in {sample_seconds:g}s: "
                           "their clocks were not measured"))
    return out
