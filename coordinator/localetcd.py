"""Real etcd servers on loopback, for the test suite and the demo: one member or a cluster.

Each server gets free ports and a temporary data directory, runs the ``etcd`` binary
from Debian's ``etcd-server`` package, and can be stopped, killed, paused (SIGSTOP) and
resumed — the faults the coordinator must survive.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EtcdMember:
    name: str
    data_dir: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", initial_cluster,
                "--initial-cluster-state", state,
                "--initial-cluster-token", self.data_dir.parent.name,
                "--heartbeat-interval", "100", "--election-timeout", "1000",
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
    """``size`` members on loopback. ``endpoints`` is the comma-separated client URL list."""

    def __init__(self, size: int = 1, *, extra_args: list[str] | None = None,
                 scheme: str = "http", base: Path | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="etcd-test-", dir=base))
        self.members = [
            EtcdMember(f"m{i}", self.base / f"m{i}", extra_args=list(extra_args or []),
                       scheme=scheme)
            for i in range(size)
        ]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        return ",".join(m.client_url for m in self.members)

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for member in self.members:
            member.start(self.initial_cluster)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_port_open(m.client_port) for m in self.members if m.running()) and \
                    self.etcdctl("endpoint", "health", check=False).returncode == 0:
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
