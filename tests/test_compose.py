"""docker/compose.yaml and docker/Dockerfile, checked without Docker.

The file is parsed, its pieces are checked against each other (etcd members, worker
endpoints, ports, Prometheus targets, the image's entry point, the relays' sink, etcd and
start order), and then every worker service's exact command line and environment — the
image's ``ENV`` plus the service's ``environment`` — runs as a real ``dispatch-worker``
process against a real etcd, with only the etcd endpoint and the listening ports
rewritten. The one-shot ``cities`` job's ``dispatchctl`` lines run the same way, and so
do ``relay-init`` and the relays, against a real PostgreSQL (its host, port and database
rewritten too).
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
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from coordinator.codec import decode, encode
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.overview import read_overview, read_relays
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


def _environment_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {k: str(v) for k, v in environment.items()}


def relay_services() -> dict[str, dict[str, Any]]:
    """Services running ``dispatch-relay``: the relays and the ``--init`` job."""
    return {name: s for name, s in services().items()
            if s.get("entrypoint") == ["dispatch-relay"]}


def _relays() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in relay_services().items() if "--init" not in s["command"]}


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
        assert 0 < int(_flag(command, "--snapshot-count") or 0) <= 10000  # operations.md
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


def test_postgres_is_healthy_only_over_tcp_and_keeps_its_data_in_a_volume() -> None:
    postgres = services()["postgres"]
    assert str(postgres["image"]).startswith("postgres:")
    check = postgres["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"] and _flag(check, "-h") == "127.0.0.1"
    env = _environment_of(postgres)
    assert _flag(check, "-U") == env["POSTGRES_USER"]
    assert _flag(check, "-d") == env["POSTGRES_DB"]
    (volume,) = postgres["volumes"]
    name, target = volume.split(":")
    assert target == "/var/lib/postgresql/data" and name in compose()["volumes"]


def test_the_relays_share_one_sink_and_start_after_its_schema() -> None:
    relays = _relays()
    (init_name,) = set(relay_services()) - set(relays)
    assert len(relays) == 2
    postgres = _environment_of(services()["postgres"])
    members = etcd_services()
    workers = worker_services()
    urls = set()
    for name, service in relay_services().items():
        command = [str(a) for a in service["command"]]
        env = _environment_of(service)
        url = urlsplit(_flag(command, "--sink-url") or "")
        assert _flag(command, "--sink") == "postgres", name
        assert (url.hostname, url.port, url.username, url.password, url.path) == (
            "postgres", 5432, postgres["POSTGRES_USER"], None,
            "/" + postgres["POSTGRES_DB"]), f"{name}: password in the URL, or not our db"
        assert env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
        assert set(env["DISPATCH_ETCD"].split(",")) == {f"http://{m}:2379" for m in members}
        assert env["DISPATCH_NAMESPACE"] == workers[0].environment["DISPATCH_NAMESPACE"]
        assert service["image"] == IMAGE and "build" not in service
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        urls.add(url.geturl())
    init = services()[init_name]
    assert init["restart"] == "no" and init["healthcheck"] == {"disable": True}
    ids = set()
    for name, service in relays.items():
        command = [str(a) for a in service["command"]]
        ids.add(_flag(command, "--relay-id"))
        assert service["depends_on"][init_name] == {
            "condition": "service_completed_successfully"}
        for member in members:
            assert service["depends_on"][member] == {"condition": "service_healthy"}, name
        admin = _flag(command, "--admin-port")
        assert service["healthcheck"]["test"][-1] == f"127.0.0.1:{admin}"
        assert service["restart"] == "unless-stopped"
        assert int(service["stop_grace_period"].rstrip("s")) > int(
            _environment_of(service)["DISPATCH_LEASE_TTL"])
    assert len(ids) == len(relays) and None not in ids
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    scraped = {t for job in prometheus["scrape_configs"] if job["job_name"] == "dispatch-relay"
               for static in job["static_configs"] for t in static["targets"]}
    ports = {s["hostname"]: _flag([str(a) for a in s["command"]], "--metrics-port")
             for s in relays.values()}
    assert scraped == {f"{host}:{port}" for host, port in ports.items()}, "relays unscraped"
    ctl = _environment_of(services()["ctl"])
    assert urls == {ctl["DISPATCH_SINK_URL"]} and ctl["PGPASSWORD"] == postgres[
        "POSTGRES_PASSWORD"]


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


def _with_flags(args: list[str], values: dict[str, str]) -> list[str]:
    """``args`` with the value after each flag in ``values`` replaced."""
    return [values.get(previous, arg) for arg, previous in zip(args, ["", *args], strict=False)]


def _local_url(compose_url: str, target: str) -> str:
    """The compose file's sink URL on ``target``'s host, port and database."""
    ours, theirs = urlsplit(compose_url), urlsplit(target)
    netloc = f"{ours.username}@{theirs.hostname}:{theirs.port}"
    return urlunsplit((ours.scheme, netloc, theirs.path, ours.query, ""))


def _decision(city: str, order: str, courier: str) -> bytes:
    decision = pb.Decision(city=city, token=7, worker_id="worker-1", solver="greedy", tick=1,
                           assignments={order: courier},
                           details=[pb.Assignment(order_id=order, courier_id=courier,
                                                  pickup_eta_seconds=90.0)])
    decision.decided_at.GetCurrentTime()
    return encode(decision)


@pytest.mark.slow
def test_relay_init_and_the_relays_run_as_written(postgres_url: str, tmp_path: Path) -> None:
    """Their own etcd: the decisions put here come from no election."""
    relays = _relays()
    (init_name,) = set(relay_services()) - set(relays)
    cluster = EtcdCluster(1).start()
    processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        def run_args(service: dict[str, Any], admin_port: int = 0) -> list[str]:
            command = [str(a) for a in service["command"]]
            url = _local_url(_flag(command, "--sink-url") or "", postgres_url)
            ports = {"--admin-port": str(admin_port)}
            if "--metrics-port" in command:
                ports["--metrics-port"] = str(free_port())
            return _with_flags(command, {"--sink-url": url, **ports})

        init = services()[init_name]
        done = subprocess.run(
            [sys.executable, "-m", "coordinator.cli.relay", *run_args(init)],
            env=_environment(_environment_of(init), cluster.endpoints),
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "ready" in done.stdout, done.stderr
        for name, service in relays.items():
            admin_port = free_port()
            with open(tmp_path / f"{name}.log", "wb") as out:
                processes[name] = (subprocess.Popen(
                    [sys.executable, "-m", "coordinator.cli.relay",
                     *run_args(service, admin_port)],
                    env=_environment(_environment_of(service), cluster.endpoints),
                    stdout=out, stderr=subprocess.STDOUT), admin_port)

        keys = Keys(_environment_of(init)["DISPATCH_NAMESPACE"])
        with EtcdClient(EtcdConfig(endpoints=(cluster.endpoints,))) as client:
            wait_until(lambda: any(r.active for r in read_relays(client, keys)), timeout=30,
                       message="one compose relay active")
            heads = {city: client.put(keys.decision(city), _decision(city, "o-000001",
                                                                     f"c-000{i}"))
                     for i, city in enumerate(["paris", "london"])}
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                def delivered() -> bool:
                    rows = conn.execute("SELECT city, revision FROM dispatch_decisions")
                    return dict(rows.fetchall()) == heads
                wait_until(delivered, timeout=30, message="both decisions in postgres")
            ids = {_flag([str(a) for a in s["command"]], "--relay-id") for s in relays.values()}

            def one_active_one_standby() -> bool:  # each publishes its status every second
                views = read_relays(client, keys)
                return {v.relay_id for v in views} == ids and sum(v.active for v in views) == 1
            wait_until(one_active_one_standby, timeout=10,
                       message="both compose relays report, one of them active")

        for name, (_process, admin_port) in processes.items():
            probe = subprocess.run([sys.executable, "-m", "coordinator.cli.probe",
                                    f"127.0.0.1:{admin_port}"],
                                   capture_output=True, text=True, timeout=30)
            assert probe.returncode == 0, f"{name}: {probe.stderr}"
        ctl = _environment_of(services()["ctl"])
        ctl["DISPATCH_SINK_URL"] = _local_url(ctl["DISPATCH_SINK_URL"], postgres_url)
        audit = _run_ctl(["audit", "--order", "o-000001"],
                         _environment(ctl, cluster.endpoints))
        assert audit.returncode == 0 and "c-0000" in audit.stdout, audit.stderr
    finally:
        for process, _port in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        for name, (process, _port) in processes.items():
            try:
                codes[name] = process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        cluster.close()
    for name, code in codes.items():
        assert code == 0, f"{name} exited {code}:\n{(tmp_path / f'{name}.log').read_text()}"
