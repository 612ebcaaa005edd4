"""The worker: the recipes composed with placement, the ticker and the plugin loader."""

from coordinator.worker.core import Worker, WorkerConfig, default_worker_id

__all__ = ["Worker", "WorkerConfig", "default_worker_id"]
