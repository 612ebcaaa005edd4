"""docker/compose.yaml and docker/Dockerfile, checked without Docker.

The file is parsed, its pieces are checked against each other (etcd members, worker
endpoints, ports, Prometheus targets, the image's entry point), and then every worker
service's exact command line and environment — the image's ``ENV`` plus the service's
``environment`` — runs as a real ``dispatch-worker`` process against a real etcd, with
only the etcd endpoint and the listening ports rewritten. The one-shot ``cities`` job's
``dispatchctl`` lines run the same way.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.codec import decode
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.overview import read_overview
from protos import dispatch_pb2 as pb
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster, free_port

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PROMETHEUS = ROOT / "docker" / "prometheus.yml"
IMAGE = "dispatch-coordinator:dev"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def dockerfile_env() -> dict[str, str]:
    """The image's ``ENV`` settings (``ENV A=1 \\`` continued lines)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, val = pair.partition("=")
                env[key] = val
    return env


def dockerfile_instruction(name: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line[len(name) + 1:].strip() for line in text.splitlines()
            if line.startswith(name + " ")]


@dataclass
class WorkerService:
    name: str
    command: list[str]
    environment: dict[str, str]

    @property
    def worker_id(self) -> str:
        worker_id = _flag(self.command, "--worker-id")
        assert worker_id, f"{self.name}: no --worker-id"
        return worker_id


def worker_services() -> list[WorkerService]:
    """Services running our image with its own entry point (dispatch-worker)."""
    out = []
    for name, service in services().items():
        if service.get("image") != IMAGE or "entrypoint" in service:
            continue
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        out.append(WorkerService(name, [str(a) for a in service.get("command", [])],
                                 {k: str(v) for k, v in environment.items()}))
    return out


def etcd_services() -> dict[str, list[str]]:
    return {name: [str(a) for a in s["command"]] for name, s in services().items()
            if str(s.get("image", "")).startswith("quay.io/coreos/etcd")}


def cities_job() -> list[list[str]]:
    """The `dispatchctl` argument lists of the `cities` job, one per script line."""
    job = services()["cities"]
    assert job["entrypoint"] == ["sh", "-c"]
    (script,) = job["command"]
    commands = []
    for line in script.splitlines():
        line = line.strip()
        if not line:
            continue
        line = re.sub(r"\s*\|\|\s*true$", "", line)
        argv = shlex.split(line)
        assert argv[0] == "dispatchctl", line
        commands.append(argv[1:])
    return commands


# -- consistency --------------------------------------------------------------------------


def test_the_etcd_members_form_one_cluster() -> None:
    members = etcd_services()
    assert len(members) == 3
    peers = {}
    for name, command in members.items():
        assert _flag(command, "--name") == name
        peers[name] = _flag(command, "--initial-advertise-peer-urls")
        assert _flag(command, "--advertise-client-urls") == f"http://{name}:2379"
        assert _flag(command, "--auto-compaction-mode") == "revision"
        assert int(_flag(command, "--auto-compaction-retention") or 0) > 0
        assert int(_flag(command, "--quota-backend-bytes") or 0) > 0
    expected = ",".join(f"{name}={url}" for name, url in sorted(peers.items()))
    for command in members.values():
        assert _flag(command, "--initial-cluster") == expected


def test_workers_ports_healthchecks_and_prometheus_agree() -> None:
    workers = worker_services()
    assert len(workers) == 3
    assert len({w.worker_id for w in workers}) == 3
    members = etcd_services()
    all_clients = {f"http://{name}:2379" for name in members}
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    targets = {t for job in prometheus["scrape_configs"] if job["job_name"] == "dispatch-worker"
               for static in job["static_configs"] for t in static["targets"]}
    exposed = " ".join(dockerfile_instruction("EXPOSE")).split()
    healthcheck = " ".join(dockerfile_instruction("HEALTHCHECK"))
    for worker in workers:
        service = services()[worker.name]
        assert set(worker.environment["DISPATCH_ETCD"].split(",")) == all_clients
        metrics = _flag(worker.command, "--metrics-port")
        admin = _flag(worker.command, "--admin-port")
        assert metrics and admin, worker.command
        assert f"{service['hostname']}:{metrics}" in targets
        assert metrics in exposed and admin in exposed
        assert service["healthcheck"]["test"][-1] == f"127.0.0.1:{admin}"
        assert f"127.0.0.1:{admin}" in healthcheck
        assert any(p.endswith(f":{admin}") for p in service["ports"])
        assert int(service["stop_grace_period"].rstrip("s")) > int(
            worker.environment["DISPATCH_LEASE_TTL"])
    assert len(targets) == len(workers)


def test_the_image_runs_dispatch_worker_as_a_non_root_user() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (entrypoint,) = dockerfile_instruction("ENTRYPOINT")
    assert entrypoint == '["dispatch-worker"]'
    assert "dispatch-worker" in project["scripts"]
    users = dockerfile_instruction("USER")
    assert users and not users[-1].startswith(("root", "0"))
    assert dockerfile_instruction("FROM")[0].startswith("python:3.11-slim")
    for copy in dockerfile_instruction("COPY"):
        parts = copy.split()
        if parts[0].startswith("--"):
            continue
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
    assert any("plugins/dispatch-ortools" in line for line in dockerfile_instruction("RUN"))


# -- running it ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_etcd() -> Iterator[EtcdCluster]:
    """A private etcd: the compose file's own namespace (/dispatch) is used unchanged."""
    cluster = EtcdCluster(1).start()
    yield cluster
    cluster.close()


def _environment(service_env: dict[str, str], endpoints: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env.update(dockerfile_env())
    env.update(service_env)
    env["DISPATCH_ETCD"] = endpoints  # the one rewrite of the environment
    return env


def _run_ctl(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.cli.ctl", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_cities_job_runs_as_written(compose_etcd: EtcdCluster) -> None:
    env = _environment(dict(services()["cities"]["environment"]), compose_etcd.endpoints)
    commands = cities_job()
    assert sum(1 for c in commands if c[:2] == ["city", "add"]) >= 5
    for args in commands:
        result = _run_ctl(args, env)
        assert result.returncode == 0 or "already exists" in result.stderr, (
            f"dispatchctl {' '.join(args)}: {result.stderr}")
    namespace = env["DISPATCH_NAMESPACE"]
    with EtcdClient(EtcdConfig(endpoints=(compose_etcd.endpoints,))) as client:
        views = read_overview(client, Keys(namespace)).cities
    added = {c[2] for c in commands if c[:2] == ["city", "add"]}
    assert {v.city for v in views} >= added
    assert not [v.city for v in views if v.settings_error]


def _worker_flags_supported() -> bool:
    result = subprocess.run([sys.executable, "-m", "coordinator.cli.worker", "--help"],
                            capture_output=True, text=True, timeout=30)
    return "--metrics-port" in result.stdout and "--admin-port" in result.stdout


@pytest.mark.slow
def test_the_workers_run_as_written_and_share_the_demo_cities(
        compose_etcd: EtcdCluster, tmp_path: Path) -> None:
    if not _worker_flags_supported():
        pytest.skip("dispatch-worker has no --metrics-port/--admin-port yet")
    workers = worker_services()
    processes: list[tuple[WorkerService, subprocess.Popen[bytes], Path, int, int]] = []
    namespace = workers[0].environment["DISPATCH_NAMESPACE"]
    keys = Keys(namespace)
    try:
        for worker in workers:
            metrics_port, admin_port = free_port(), free_port()
            args = []
            for arg, previous in zip(worker.command, ["", *worker.command], strict=False):
                if previous == "--metrics-port":
                    arg = str(metrics_port)
                elif previous == "--admin-port":
                    arg = str(admin_port)
                args.append(arg)
            log = tmp_path / f"{worker.name}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "coordinator.cli.worker", *args],
                    env=_environment(worker.environment, compose_etcd.endpoints),
                    stdout=out, stderr=subprocess.STDOUT,
                )
            processes.append((worker, process, log, metrics_port, admin_port))

        with EtcdClient(EtcdConfig(endpoints=(compose_etcd.endpoints,))) as client:
            def registered() -> bool:
                return all(client.get(keys.worker(w.worker_id)) is not None for w in workers)
            wait_until(registered, timeout=30, message="every compose worker registered")
            for worker, _process, _log, _metrics, admin_port in processes:
                kv = client.get(keys.worker(worker.worker_id))
                assert kv is not None
                info = decode(pb.WorkerInfo, kv.value)
                label = _flag(worker.command, "--label")
                assert label and dict([label.split("=", 1)]).items() <= info.labels.items()
                assert info.admin_address.endswith(f":{admin_port}")

            env = _environment(dict(services()["cities"]["environment"]),
                               compose_etcd.endpoints)
            for args in cities_job():
                _run_ctl(args, env)

            ids = {w.worker_id for w in workers}

            def all_deciding() -> bool:
                views = read_overview(client, keys).cities
                return bool(views) and all(v.owner in ids and v.decision_age is not None
                                           and not v.late for v in views)
            wait_until(all_deciding, timeout=60, interval=0.5,
                       message="every demo city owned and deciding")
            views = {v.city: v for v in read_overview(client, keys).cities}
            zone_b = {w.worker_id for w in workers if "zone=b" in w.command}
            assert views["amsterdam"].owner in zone_b  # --require-label zone=b

        for _worker, _process, _log, metrics_port, admin_port in processes:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=5) as response:
                assert b"dispatch_ticks_total" in response.read()
            probe = subprocess.run([sys.executable, "-m", "coordinator.worker.admin", "probe",
                                    f"127.0.0.1:{admin_port}"],
                                   capture_output=True, text=True, timeout=30)
            assert probe.returncode == 0, probe.stderr
    finally:
        for _worker, process, _log, _m, _a in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for worker, process, log, _m, _a in processes:
            try:
                code = process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = -9
            assert code == 0, f"{worker.name} exited {code}:\n{log.read_text()[-3000:]}"
    verify = subprocess.run(
        [sys.executable, "-m", "coordinator.cli.ctl", "--etcd", compose_etcd.endpoints,
         "--namespace", namespace, "verify"], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and " 0 violations" in verify.stdout, verify.stdout
