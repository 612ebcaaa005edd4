"""What the harness breaks: worker processes (each behind its own proxies) and etcd."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.errors import EtcdError
from coordinator.etcd import EtcdClient, EtcdConfig
from devtools.chaos.process import ProcessSlot
from devtools.localetcd import EtcdCluster, EtcdMember
from devtools.proxy import ProxyGroup

__all__ = ["Etcd", "Resources", "WorkerSlot"]


@dataclass(frozen=True)
class Resources:
    """What a worker process holds: threads, open file descriptors, solver processes."""

    threads: int
    fds: int
    solvers: int

    def __str__(self) -> str:
        return f"{self.threads} threads, {self.fds} fds, {self.solvers} solver processes"


@dataclass
class WorkerSlot(ProcessSlot):
    """One ``dispatch-worker`` process slot: restarted under the same worker id, always
    behind the same proxies (so the harness can cut this worker alone off etcd)."""

    worker_id: str
    proxies: ProxyGroup
    namespace: str
    ttl: int
    extra: list[str] = field(default_factory=list)
    #: the worker program (default: ``python -m coordinator.cli.worker``)
    command: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.worker_id

    def argv(self) -> list[str]:
        return [*(self.command or [sys.executable, "-m", "coordinator.cli.worker"]),
                "--etcd", self.proxies.endpoints, "--namespace", self.namespace,
                "--worker-id", self.worker_id, "--lease-ttl", str(self.ttl), *self.extra]

    def solver_processes(self) -> list[int]:
        """Pids of the worker's solver processes (its children started by
        multiprocessing's spawn; not its resource tracker)."""
        if not self.alive() or self.paused:
            return []
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                if parent != self.process.pid:
                    continue
                command = (entry / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            if b"spawn_main" in command:
                found.append(int(entry.name))
        return sorted(found)

    def resources(self) -> Resources | None:
        """The running worker's threads, descriptors and solver processes (``None`` when
        it is not running)."""
        if not self.alive() or self.process is None:
            return None
        pid = self.process.pid
        try:
            threads = len(os.listdir(f"/proc/{pid}/task"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return None
        return Resources(threads, fds, len(self.solver_processes()))

    def kill_child(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Etcd:
    """The 3-member cluster, its members' state, and quick probes of its health."""

    def __init__(self, cluster: EtcdCluster, namespace: str) -> None:
        self.cluster = cluster
        self.probe_key = namespace + "/chaos-probe"
        self._lock = threading.Lock()
        self.paused: set[str] = set()
        self._clients = {
            m.name: EtcdClient(EtcdConfig(endpoints=(m.client_url,), timeout=1.0))
            for m in cluster.members
        }
        self.quorum_client = EtcdClient(EtcdConfig(
            endpoints=tuple(cluster.endpoints.split(",")), timeout=1.0))
        #: windows (start, end) in which no member that was up recognised a leader that
        #: was up, so nobody could write (see :meth:`probe_writes`)
        self.unwritable: list[tuple[float, float]] = []

    @property
    def members(self) -> list[EtcdMember]:
        return self.cluster.members

    def member(self, index: int) -> EtcdMember:
        return self.cluster.members[index % len(self.cluster.members)]

    def up(self, member: EtcdMember) -> bool:
        return member.running() and member.name not in self.paused

    def identity(self) -> int:
        """Our cluster's id, as every member that answers agrees (0: none answered)."""
        ids = set()
        for member in self.members:
            if not self.up(member):
                continue
            try:
                ids.add(int(self._clients[member.name].status().cluster_id))
            except EtcdError:
                continue
        if len(ids) > 1:
            raise RuntimeError(f"etcd members report different cluster ids: {ids}")
        return ids.pop() if ids else 0

    def strangers(self, cluster_id: int, urls: list[str]) -> list[str]:
        """Which of ``urls`` answer as an etcd of another cluster: a port of ours taken
        by someone else's server (free ports are only free until somebody binds them)."""
        found = []
        for url in urls:
            client = EtcdClient(EtcdConfig(endpoints=(url,), timeout=1.0))
            try:
                other = int(client.status().cluster_id)
            except EtcdError:
                continue  # down, paused or cut: not a stranger
            finally:
                client.close()
            if other != cluster_id:
                found.append(f"{url} answers for cluster {other:x}, not {cluster_id:x}")
        return found

    def replicas_agree(self, revision: int) -> tuple[bool, str]:
        """etcd's own check that the members hold the same history: the hash of the
        key-value store at ``revision`` (``etcdctl endpoint hashkv``) on every member."""
        import json

        result = self.cluster.etcdctl("endpoint", "hashkv", f"--rev={revision}", "-w", "json",
                                      check=False)
        try:
            entries = json.loads(result.stdout or "[]")
        except ValueError:
            return False, f"etcdctl endpoint hashkv said: {result.stderr.strip()[:200]}"
        hashes = {e["Endpoint"]: e["HashKV"]["hash"] for e in entries}
        if len(hashes) != len(self.members):
            return False, f"only {len(hashes)} members answered: {result.stderr.strip()[:200]}"
        same = len(set(hashes.values())) == 1
        return same, ", ".join(f"{url.rsplit(':', 1)[-1]}={h}" for url, h in hashes.items())

    def leader(self) -> EtcdMember | None:
        """The raft leader, as the members that answer say."""
        for member in self.members:
            if not self.up(member):
                continue
            try:
                status = self._clients[member.name].status()
            except EtcdError:
                continue
            if status.leader:
                for candidate in self.members:
                    if not self.up(candidate):
                        continue
                    try:
                        s = self._clients[candidate.name].status()
                    except EtcdError:
                        continue
                    if s.member_id == status.leader:
                        return candidate
        return None

    def kill(self, member: EtcdMember) -> None:
        self.resume(member)
        member.kill()

    def restart(self, member: EtcdMember) -> None:
        """Start a killed member again (or kill and start a running one)."""
        self.resume(member)
        self.cluster.restart(member)

    def stop_member(self, member: EtcdMember) -> None:
        """Stop a member gracefully (SIGTERM: a leader hands its leadership over first),
        as an operator's restart or upgrade does; it keeps its data directory."""
        self.resume(member)
        member.stop()

    def start_member(self, member: EtcdMember) -> None:
        """Start a stopped member on its data directory, joining the running cluster."""
        if not member.running():
            member.start(self.cluster.initial_cluster, state="existing")

    def replace(self, member: EtcdMember) -> str:
        """The machine behind ``member`` died for good: kill it, ``member remove`` it,
        ``member add`` a new member (same name and URLs: the replacement machine takes
        the old one's address, so the workers' endpoint lists stay right) and start it
        on an empty data directory with ``--initial-cluster-state existing``. Returns
        the old and new member ids."""
        import json
        import shutil

        self.kill(member)
        listed = json.loads(self._etcdctl("member", "list", "-w", "json"))
        old = next(m["ID"] for m in listed["members"] if m.get("name") == member.name
                   or member.peer_url in m.get("peerURLs", []))
        # the survivors may still be electing a leader (the lost member led): etcd
        # refuses a reconfiguration until one leads, so ask again for a while
        self._etcdctl("member", "remove", f"{old:x}")
        shutil.rmtree(member.data_dir, ignore_errors=True)
        added = self._etcdctl("member", "add", member.name, f"--peer-urls={member.peer_url}",
                              "-w", "json")
        new = json.loads(added)["member"]["ID"]
        member.start(self.cluster.initial_cluster, state="existing")
        return f"member {old:x} removed, {new:x} added with an empty data directory"

    def _etcdctl(self, *args: str, timeout: float = 30.0) -> str:
        """``etcdctl`` against the running members, asked again until it succeeds or
        ``timeout``; its output, or ``RuntimeError`` with what it said last."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.cluster.etcdctl(*args, check=False)
            if result.returncode == 0:
                return result.stdout
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcdctl {' '.join(args)}: {result.stderr.strip()[:300]}")
            time.sleep(0.3)

    def pause(self, member: EtcdMember) -> None:
        with self._lock:
            if member.running():
                member.pause()
                self.paused.add(member.name)

    def resume(self, member: EtcdMember) -> None:
        with self._lock:
            if member.name in self.paused:
                self.paused.discard(member.name)
                if member.running():
                    member.resume()

    def has_quorum(self) -> bool:
        """A linearizable read succeeds (it needs a leader with a live majority)."""
        try:
            self.quorum_client.get(self.probe_key)
        except EtcdError:
            return False
        return True

    def probe_writes(self, stop: threading.Event, every: float = 0.1) -> None:
        """Until ``stop``: every ``every`` seconds ask each running member for its
        status, and record in ``unwritable`` the windows in which no member that is up
        recognised a leader that is up.

        Such a window is a raft election (a leader killed or paused) or a lost quorum
        (a leader without a majority steps down): etcd itself could not accept a
        write, so no coordinator could have committed a decision. Status answers at
        once with or without a leader (a read would wait for one), so the windows are
        accurate to about ``every``.
        """
        probes = {m.name: EtcdClient(EtcdConfig(endpoints=(m.client_url,), timeout=0.25))
                  for m in self.members}
        ids: dict[str, int] = {}
        since: float | None = None
        try:
            while not stop.is_set():
                now = time.time()
                claimed: set[int] = set()
                up = [m for m in self.members if self.up(m)]
                for member in up:
                    try:
                        status = probes[member.name].status()
                    except EtcdError:
                        continue
                    ids[member.name] = status.member_id
                    claimed.add(status.leader)
                writable = any(ids.get(m.name) in claimed for m in up)
                if not writable and since is None:
                    since = now
                elif writable and since is not None:
                    self.unwritable.append((since, now))
                    since = None
                stop.wait(every)
            if since is not None:
                self.unwritable.append((since, time.time()))
        finally:
            for probe in probes.values():
                probe.close()

    def healthy(self) -> bool:
        """Every member up, answering, agreeing on one leader, and a quorum read works."""
        leaders = set()
        for member in self.members:
            if not self.up(member):
                return False
            try:
                leaders.add(self._clients[member.name].status().leader)
            except EtcdError:
                return False
        return len(leaders) == 1 and 0 not in leaders and self.has_quorum()

    def wait_healthy(self, timeout: float, stop: threading.Event | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            if stop is not None and stop.is_set():
                return False
            time.sleep(0.2)
        return False

    def isolate(self, member: EtcdMember) -> None:
        """Cut ``member``'s raft traffic to and from every other member; it keeps
        answering clients (the cluster runs with ``peer_links``)."""
        if self.cluster.links is None:
            raise RuntimeError("member partitions need the cluster's peer links "
                               "(EtcdCluster(peer_links=True))")
        self.cluster.links.isolate(member.name)

    def heal_links(self) -> None:
        """Every link between members open again."""
        if self.cluster.links is not None:
            self.cluster.links.heal()

    def heal(self) -> None:
        """Every member running and not paused, every link between them open."""
        self.heal_links()
        for member in self.members:
            self.resume(member)
            if not member.running():
                member.start(self.cluster.initial_cluster, state="existing")

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self.quorum_client.close()
