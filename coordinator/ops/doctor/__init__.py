"""``dispatchctl doctor``: look at etcd and the namespace and say, in plain words,
what is wrong.

Each check produces :class:`Finding` lines at one of three levels: ``ok``, ``warn``
(worth a look, nothing is broken yet) and ``fail`` (dispatch is or will soon be
affected). The command exits non-zero when any check fails. The checks of etcd itself
are in :mod:`~coordinator.ops.doctor.cluster`, those of the namespace in
:mod:`~coordinator.ops.doctor.namespace`, the worker clocks in
:mod:`~coordinator.ops.doctor.clocks`; each check function yields one kind of finding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from coordinator.errors import DispatchError
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.ops.doctor.clocks import check_clocks
from coordinator.ops.doctor.cluster import DEFAULT_QUOTA_BYTES, check_cluster, check_history
from coordinator.ops.doctor.findings import Finding, Level, Report
from coordinator.ops.doctor.namespace import check_namespace
from coordinator.ops.overview import Overview, read_overview

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "Finding",
    "Level",
    "Report",
    "check_clocks",
    "check_cluster",
    "check_history",
    "check_namespace",
    "diagnose",
]


def diagnose(client: EtcdClient, keys: Keys, *, quota_bytes: int = DEFAULT_QUOTA_BYTES,
             skew_sample: float = 3.0, skew_tolerance: float = 1.0,
             on_finding: Callable[[Finding], None] | None = None) -> Report:
    """Run every check; findings are also handed to ``on_finding`` as they come, so a
    terminal shows progress while the clock check samples."""
    report = Report()

    def add(findings: Iterable[Finding]) -> None:
        for finding in findings:
            report.findings.append(finding)
            if on_finding is not None:
                on_finding(finding)

    def guarded(check: str, run: Callable[[], list[Finding]]) -> bool:
        try:
            add(run())
        except DispatchError as exc:
            add([Finding("fail", check, f"could not check: {exc}")])
            return False
        return True

    if not guarded("etcd members", lambda: check_cluster(client, quota_bytes=quota_bytes)):
        return report  # etcd cannot be reached: every other check would fail the same way
    guarded("etcd history", lambda: check_history(client, keys))
    overview: list[Overview] = []

    def namespace() -> list[Finding]:
        overview.append(read_overview(client, keys))
        return check_namespace(client, keys, overview=overview[0])

    if guarded("namespace", namespace) and skew_sample > 0:
        guarded("clocks", lambda: check_clocks(client, keys, overview=overview[0],
                                               sample_seconds=skew_sample,
                                               tolerance=skew_tolerance))
    return report
