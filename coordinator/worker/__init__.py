"""The worker: the recipes composed with placement, the ticker and the plugin loader.

Modules: ``config`` (WorkerConfig), ``lifecycle`` (Worker: session, registration, the
control loop, shutdown), ``ownership`` (plan, reconcile, hand over), ``pipeline`` (one
tick, or a group of them), ``failures`` (what a failed tick leaves behind), ``health``
(a city's counters and backoff), ``messages``, and the pieces they run on: ``ticker``,
``gate``, ``runner``, ``metrics``, ``admin``. docs/worker.md tells the why.
"""

from coordinator.worker.config import WorkerConfig, default_worker_id
from coordinator.worker.lifecycle import Worker

__all__ = ["Worker", "WorkerConfig", "default_worker_id"]
