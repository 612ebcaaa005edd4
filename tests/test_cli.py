"""Command-line behaviour: helpful errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import dispatchctl, running_worker


def run(module: str, *args: str, env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, message", [
    (["city", "add"], "Missing argument"),
    (["city", "add", "paris"], "needs --solver"),
    (["city", "add", "paris", "--solver", "no-such-solver"], "no solver named 'no-such-solver'"),
    (["city", "add", "bad/name", "--solver", "greedy"], "invalid city name"),
    (["city", "add", "paris", "--solver", "greedy", "--period", "-1"], "--period"),
    (["city", "add", "paris", "--solver", "greedy", "--param", "novalue"], "KEY=VALUE"),
    (["city", "set", "nowhere", "--solver", "greedy"], "no city named nowhere"),
    (["--etcd", "ftp://x", "status"], "not an http(s)://host:port URL"),
    (["--namespace", "/", "status"], "invalid namespace"),
    (["no-such-command"], "No such command"),
])
def test_invalid_input_is_one_line_and_a_non_zero_exit(etcd: EtcdCluster, namespace: str,
                                                       args: list[str], message: str) -> None:
    result = run("coordinator.cli.ctl", "--etcd", etcd.endpoints, "--namespace", namespace,
                 *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_etcd_is_one_line() -> None:
    result = run("coordinator.cli.ctl", "--etcd", "http://127.0.0.1:1", "--etcd-timeout",
                 "1", "status")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "unavailable" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--lease-ttl", "0"], "--lease-ttl"),
    (["--worker-id", "a b"], "invalid worker id"),
    (["--label", "zone"], "KEY=VALUE"),
])
def test_worker_rejects_bad_flags_in_one_line(args: list[str], message: str) -> None:
    result = run("coordinator.cli.worker", *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize("module", ["coordinator.cli.ctl", "coordinator.cli.worker"])
def test_help_explains_the_options(module: str) -> None:
    result = run(module, "--help")
    assert result.returncode == 0
    for option in ("--etcd", "--namespace", "--config"):
        assert option in result.stdout


def test_settings_come_from_env_and_config_file_with_flags_winning(
        etcd: EtcdCluster, namespace: str, tmp_path: object) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "dispatch.toml"
    config.write_text(f'etcd = "{etcd.endpoints}"\nnamespace = "/from-file"\n')
    env = {"DISPATCH_NAMESPACE": namespace}
    added = run("coordinator.cli.ctl", "--config", str(config), "city", "add", "paris",
                "--solver", "greedy", env=env)
    assert added.returncode == 0, added.stderr
    listed = run("coordinator.cli.ctl", "--config", str(config), "--namespace", namespace,
                 "city", "list", "--json")
    assert [c["city"] for c in json.loads(listed.stdout)] == ["paris"]
    from_file = run("coordinator.cli.ctl", "--config", str(config), "city", "list", "--json")
    assert json.loads(from_file.stdout) == []


def test_status_shows_owner_token_queue_and_decision_age(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str) -> None:
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "greedy",
                "--period", "0.2")
    with running_worker(etcd.endpoints, namespace, "w1"), \
            running_worker(etcd.endpoints, namespace, "w2"):
        wait_until(lambda: len(client.get_prefix(keys.election("paris") + "/")[0]) == 2
                   and client.get(keys.decision("paris")), message="an owner and a standby")
        out = json.loads(dispatchctl(etcd.endpoints, namespace, "status", "--json").stdout)
        (paris,) = out["cities"]
        assert paris["owner"] in ("w1", "w2") and paris["candidatesQueued"] == 1
        assert paris["token"] > 0 and paris["decision_age"] < 2
        assert paris["solver"] == "greedy" and paris["last_error"] == ""
        table = dispatchctl(etcd.endpoints, namespace, "status").stdout
        assert "paris" in table and paris["owner"] in table and str(paris["token"]) in table


def test_history_lists_past_decisions_and_show_prints_one_by_revision(
        etcd: EtcdCluster, client: EtcdClient, keys: Keys, namespace: str) -> None:
    dispatchctl(etcd.endpoints, namespace, "city", "add", "paris", "--solver", "greedy",
                "--period", "0.2")
    with running_worker(etcd.endpoints, namespace, "w1"):
        wait_until(lambda: (kv := client.get(keys.decision("paris"))) and kv.version >= 4,
                   timeout=20, message="a few decisions")
    rows = json.loads(dispatchctl(etcd.endpoints, namespace, "history", "paris", "--limit",
                                  "3", "--json").stdout)
    assert len(rows) == 3 and rows[0]["revision"] > rows[1]["revision"] > rows[2]["revision"]
    assert all(r["workerId"] == "w1" and r["solver"] == "greedy" for r in rows)
    old = rows[2]["revision"]
    shown = json.loads(dispatchctl(etcd.endpoints, namespace, "show", "paris", "--revision",
                                   str(old)).stdout)
    assert shown["revision"] == old and shown["workerId"] == "w1" and shown["details"]
    table = dispatchctl(etcd.endpoints, namespace, "history", "paris").stdout
    assert "REVISION" in table and str(old) in table
