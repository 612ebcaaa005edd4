"""``dispatchctl watch``, ``workers``, ``drain``/``undrain`` and ``doctor``, on real etcd
with real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.codec import encode
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.doctor import check_clocks, check_history
from coordinator.ops.overview import read_overview
from protos import dispatch_pb2 as pb
from tests.conftest import WorkerProcess, wait_until
from tests.etcd_server import EtcdCluster

Spawn = Callable[..., WorkerProcess]

def _command() -> list[str]:
    """``dispatchctl`` as this interpreter runs it (its ``python -m`` entry point)."""
    return [sys.executable, "-m", "coordinator.cli.ctl"]


def ctl(etcd: EtcdCluster | str, namespace: str, *args: str,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    endpoints = etcd if isinstance(etcd, str) else etcd.endpoints
    return subprocess.run([*_command(), "--etcd", endpoints, "--namespace", namespace, *args],
                          capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


def add_cities(etcd: EtcdCluster, namespace: str, *cities: str, period: float = 0.3) -> None:
    for city in cities:
        ok(ctl(etcd, namespace, "city", "add", city, "--solver", "greedy",
               "--period", str(period), "--param", "orders=20", "--param", "couriers=10"))


def owners(client: EtcdClient, keys: Keys) -> dict[str, str]:
    return {v.city: v.owner for v in read_overview(client, keys).cities}


def verify(etcd: EtcdCluster, namespace: str) -> None:
    out = ok(ctl(etcd, namespace, "verify"))
    assert " 0 violations" in out, out
    assert "availability " in out and "% of periods" in out, out


# -- workers ------------------------------------------------------------------------------


def test_workers_shows_leases_versions_and_ownership(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys,
        spawn_worker: Spawn) -> None:
    add_cities(etcd, namespace, "paris", "lyon", "nice", "lille")
    spawn_worker("w1", "--label", "zone=a", "--capacity", "2", ttl=3)
    spawn_worker("w2", ttl=3)
    wait_until(lambda: set(owners(client, keys).values()) == {"w1", "w2"}, timeout=20,
               message="both workers owning cities")

    rows = {r["workerId"]: r for r in json.loads(ok(ctl(etcd, namespace, "workers",
                                                        "--json")))}
    assert set(rows) == {"w1", "w2"}
    assert rows["w1"]["labels"] == {"zone": "a"} and rows["w1"]["capacity"] == 2
    assert rows["w1"]["version"] and rows["w1"]["pid"] > 0
    for row in rows.values():
        assert row["leaseTtl"] == 3 and 0 <= row["leaseTtlLeft"] <= 3
        assert len(row["leaseId"]) > 4 and not row["drained"] and row["running"]
    assert rows["w1"]["owns"] + rows["w2"]["owns"] == 4

    text = ok(ctl(etcd, namespace, "workers"))
    header, *lines = text.splitlines()
    assert header.split()[:3] == ["WORKER", "HOST", "PID"] and "TTL LEFT" in header
    assert [line.split()[0] for line in lines] == ["w1", "w2"]
    assert "zone=a" in text
    verify(etcd, namespace)


def test_workers_with_none_running(etcd: EtcdCluster, namespace: str) -> None:
    assert "no live worker" in ok(ctl(etcd, namespace, "workers"))


# -- drain ----------------------------------------------------------------------------------


def test_drain_hands_cities_over_and_undrain_takes_them_back(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys,
        spawn_worker: Spawn) -> None:
    add_cities(etcd, namespace, "paris", "lyon", "nice", "lille")
    spawn_worker("w1", ttl=3)
    spawn_worker("w2", ttl=3)
    wait_until(lambda: set(owners(client, keys).values()) == {"w1", "w2"}, timeout=20,
               message="both workers owning cities")

    out = ok(ctl(etcd, namespace, "drain", "w1", "--wait", "20"))
    assert out.startswith("drained w1: it hands over the ") and "undrain w1" in out
    assert "w1 owns no city now" in out
    assert "w1" not in set(owners(client, keys).values())
    assert client.get(keys.drain("w1")) is not None
    wait_until(lambda: owners(client, keys) == dict.fromkeys(
        ("paris", "lyon", "nice", "lille"), "w2"), timeout=10, message="w2 owning all")
    rows = {r["workerId"]: r for r in json.loads(ok(ctl(etcd, namespace, "workers",
                                                        "--json")))}
    assert rows["w1"]["drained"] and rows["w1"]["owns"] == 0 and rows["w2"]["owns"] == 4

    assert "undrained w1" in ok(ctl(etcd, namespace, "undrain", "w1"))
    assert client.get(keys.drain("w1")) is None
    wait_until(lambda: set(owners(client, keys).values()) == {"w1", "w2"}, timeout=20,
               message="w1 taking cities again")
    verify(etcd, namespace)


def test_drain_of_an_unknown_worker_warns_and_is_kept(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys) -> None:
    result = ctl(etcd, namespace, "drain", "ghost")
    assert result.returncode == 0, result.stderr
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: no live worker named ghost")
    assert result.stdout.startswith("drained ghost")
    assert client.get(keys.drain("ghost")) is not None
    assert "undrained ghost" in ok(ctl(etcd, namespace, "undrain", "ghost"))
    assert "ghost was not drained" in ok(ctl(etcd, namespace, "undrain", "ghost"))


@pytest.mark.parametrize("args", [["drain", "a/b"], ["undrain", "bad id"], ["drain"]])
def test_drain_rejects_bad_input_in_one_line(etcd: EtcdCluster, namespace: str,
                                             args: list[str]) -> None:
    result = ctl(etcd, namespace, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dispatchctl: error: "), result.stderr


def test_drain_wait_fails_when_nobody_can_take_over(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys,
        spawn_worker: Spawn) -> None:
    """A lone drained worker keeps leading (no gap without a successor): --wait says so."""
    add_cities(etcd, namespace, "paris")
    spawn_worker("w1", ttl=3)
    wait_until(lambda: owners(client, keys).get("paris") == "w1", timeout=20,
               message="w1 owning paris")
    result = ctl(etcd, namespace, "drain", "w1", "--wait", "1.5")
    assert result.returncode == 1
    assert "still owns 1 cities" in result.stderr and len(result.stderr.splitlines()) == 1


# -- watch ----------------------------------------------------------------------------------


def _candidate(client: EtcdClient, keys: Keys, city: str, worker: str) -> int:
    """Stand ``worker`` in ``city``'s election as `etcdctl elect` would; returns the lease."""
    lease, _ = client.lease_grant(30)
    client.put(f"{keys.election(city)}/{lease:x}", worker, lease=lease)
    return lease


def test_watch_once_colours_late_and_failing_cities(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys) -> None:
    add_cities(etcd, namespace, "lyon", "paris")
    client.put(keys.city("broken"), b"{not json")
    # lyon: a leader that never decides (late); paris: nobody (unowned); broken: malformed
    lease = _candidate(client, keys, "lyon", "sleepy")
    try:
        coloured = ok(ctl(etcd, namespace, "watch", "--once", "--color"))
        plain = ok(ctl(etcd, namespace, "watch", "--once", "--no-color"))
    finally:
        client.lease_revoke(lease)
    assert "\x1b[" not in plain
    header, table_header, *rows = plain.splitlines()
    assert header.startswith(namespace) and "cities 3" in header and "workers 0" in header
    assert table_header.split()[:2] == ["CITY", "OWNER"]
    by_city = {row.split()[0]: row for row in rows}
    assert by_city["lyon"].split()[1] == "sleepy" and "late" in by_city["lyon"]

    lyon = next(line for line in coloured.splitlines() if "lyon" in line)
    paris = next(line for line in coloured.splitlines() if "paris" in line)
    broken = next(line for line in coloured.splitlines() if "broken" in line)
    assert lyon.startswith("\x1b[33m"), repr(lyon)      # yellow: late
    assert paris.startswith("\x1b[31m"), repr(paris)    # red: no owner
    assert broken.startswith("\x1b[31m"), repr(broken)  # red: malformed settings
    assert "1 late" in coloured.splitlines()[0] and "2 failing or unowned" in coloured


def test_watch_redraws_on_etcd_events_and_stops_cleanly_on_ctrl_c(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys) -> None:
    add_cities(etcd, namespace, "paris")
    # --interval 30: a frame that shows a change within seconds came from the watch
    process = subprocess.Popen(
        [*_command(), "--etcd", etcd.endpoints, "--namespace", namespace, "watch",
         "--interval", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C as at a terminal, however the suite was started: a suite run in the
        # background (`cmd &` without job control) ignores SIGINT, its children inherit
        # that, and Python then installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[str] = []
    lock = threading.Lock()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with lock:
                seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def text() -> str:
        with lock:
            return "".join(seen)

    try:
        wait_until(lambda: "paris" in text(), timeout=15, message="the first frame")
        started = time.monotonic()
        add_cities(etcd, namespace, "lyon")
        wait_until(lambda: "lyon" in text(), timeout=10, message="a frame showing lyon")
        assert time.monotonic() - started < 10
        process.send_signal(signal.SIGINT)
        code = process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr and "Ctrl-C to stop" in text()


# -- doctor ---------------------------------------------------------------------------------


def _levels(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"OK": [], "WARN": [], "FAIL": []}
    for line in out.splitlines():
        level = line.split(" ", 1)[0]
        if level in found:
            found[level].append(line)
    return found


def test_doctor_passes_on_a_healthy_namespace(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys,
        spawn_worker: Spawn) -> None:
    add_cities(etcd, namespace, "paris", "lyon")
    spawn_worker("w1", ttl=3)
    wait_until(lambda: all(v.owner and v.decision_age is not None and not v.late
                           for v in read_overview(client, keys).cities),
               timeout=20, message="both cities deciding")
    result = ctl(etcd, namespace, "doctor", "--skew-sample", "2")
    out = ok(result)
    levels = _levels(out)
    assert not levels["FAIL"], out
    joined = "\n".join(levels["OK"])
    for check in ("etcd members:", "etcd leader:", "etcd alarms: none", "etcd db size:",
                  "etcd history:", "workers: 1 live", "cities: 2 enabled cities, all owned",
                  "clocks: 1 worker within 1s"):
        assert check in joined, out
    # the shared test etcd has one member: worth a warning, not a failure
    assert any("single member" in line for line in levels["WARN"]), out
    assert out.strip().splitlines()[-1].startswith("0 problems")
    strict = ctl(etcd, namespace, "doctor", "--skew-sample", "0", "--strict")
    assert strict.returncode == 1


def test_doctor_names_what_is_wrong_and_exits_non_zero(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys) -> None:
    add_cities(etcd, namespace, "paris")
    client.put(keys.city("broken"), b'{"solver": 3}')
    client.put(keys.decision("gone"), b"{}")               # a removed city's leftovers
    client.put(keys.state("gone"), b"{}")
    client.put(keys.drain("ghost"), "1")                   # a drain mark nobody uses
    client.put(f"{keys.namespace}/stray", "x")            # outside the documented layout
    result = ctl(etcd, namespace, "doctor", "--skew-sample", "0", "--quota-bytes", "4096")
    assert result.returncode == 1, result.stdout
    levels = _levels(result.stdout)
    fails, warns = "\n".join(levels["FAIL"]), "\n".join(levels["WARN"])
    assert "etcd db size:" in fails and "compact and defragment now" in fails
    assert f"workers: no live worker under {keys.workers}" in fails
    assert "cities: broken: settings of city broken" in fails
    assert "enabled cities have no owner: paris" in fails
    assert "drain marks for workers that are not running: ghost" in warns
    assert "gone (decisions/state)" in warns
    assert f"{keys.namespace}/stray" in warns
    assert result.stdout.strip().splitlines()[-1].endswith(" warnings")

    as_json = json.loads(ctl(etcd, namespace, "doctor", "--skew-sample", "0",
                             "--json").stdout)
    assert {f["level"] for f in as_json} == {"ok", "warn", "fail"}
    assert all(set(f) == {"level", "check", "message"} for f in as_json)


def test_doctor_explains_cities_no_worker_may_own(
        etcd: EtcdCluster, namespace: str, client: EtcdClient, keys: Keys,
        spawn_worker: Spawn) -> None:
    ok(ctl(etcd, namespace, "city", "add", "paris", "--solver", "greedy", "--period", "0.5",
           "--require-label", "zone=mars"))
    spawn_worker("w1", "--label", "zone=earth", ttl=3)
    wait_until(lambda: read_overview(client, keys).workers, timeout=15,
               message="w1 registered")
    result = ctl(etcd, namespace, "doctor", "--skew-sample", "0")
    assert result.returncode == 1
    assert "no live, undrained worker carries the labels required by paris" in result.stdout


def test_doctor_against_an_unreachable_etcd_is_short() -> None:
    result = ctl("http://127.0.0.1:1", "/x", "--etcd-timeout", "1", "doctor")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("FAIL  etcd members: could not check:"), result.stdout
    assert lines[-1] == "1 problem, 0 warnings"


@pytest.mark.cluster
def test_doctor_reports_a_member_down_and_keeps_going(cluster3: EtcdCluster,
                                                      namespace: str) -> None:
    cluster3.members[2].kill()
    endpoints = ",".join(m.client_url for m in cluster3.members[:2])
    # if m2 led, the other two elect a new leader first
    wait_until(lambda: cluster3.etcdctl("endpoint", "health", check=False).returncode == 0,
               timeout=20, interval=0.2, message="the remaining members to be healthy")
    result = ctl(endpoints, namespace, "--etcd-timeout", "2", "doctor", "--skew-sample", "0")
    levels = _levels(result.stdout)
    assert any("2 of 3 members answer; down or unreachable from here: m2" in line
               for line in levels["WARN"]), result.stdout
    assert any("etcd leader:" in line for line in levels["OK"]), result.stdout


def test_history_check_finds_the_compaction_point(tmp_path: Path) -> None:
    """On a private member: compacting the shared one would cut other tests' history."""
    cluster = EtcdCluster(1).start()
    try:
        with EtcdClient(EtcdConfig(endpoints=(cluster.endpoints,))) as client:
            keys = Keys("/hist")
            for i in range(40):
                client.put(keys.city(f"c{i % 3}"), str(i))
            (first,) = check_history(client, keys)
            assert first.level == "ok" and "not compacted yet" in first.message
            revision = client.put(keys.city("c0"), "x")
            client.compact(revision - 10)
            (after,) = check_history(client, keys)
            assert after.level == "ok"
            assert f"revisions {revision - 10}..{revision} kept" in after.message, after
    finally:
        cluster.close()


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


@pytest.mark.parametrize("offset, level, words", [
    (5.0, "fail", "s ahead of this host's"),  # decidedAt in our future: proven ahead
    (-5.0, "warn", "or its commits are that slow"),
    (0.0, "ok", "1 worker within 1s"),
])
def test_clock_check_compares_fresh_decisions_with_this_host(
        client: EtcdClient, keys: Keys, offset: float, level: str, words: str) -> None:
    """A 'worker' whose clock is off by ``offset`` writes decisions while the doctor
    samples (written directly: the check reads only what any worker writes)."""
    add = client.put(keys.city("paris"), b'{"solver": "greedy", "periodSeconds": 0.2}')
    assert add
    lease = _candidate(client, keys, "paris", "skewed")
    stop = threading.Event()

    def decide() -> None:
        tick = 0
        while not stop.wait(0.1):
            tick += 1
            client.put(keys.decision("paris"), encode(pb.Decision(
                city="paris", worker_id="skewed", token=1, tick=tick,
                decided_at=_stamp(time.time() + offset))))

    writer = threading.Thread(target=decide, daemon=True)
    writer.start()
    try:
        findings = check_clocks(client, keys, sample_seconds=3.0, tolerance=1.0)
    finally:
        stop.set()
        writer.join(5)
        client.lease_revoke(lease)
    assert [f.level for f in findings] == [level], findings
    assert "skewed" in findings[0].message or level == "ok"
    assert words in findings[0].message, findings


def test_verify_says_what_is_wrong_with_an_outage_window(etcd: EtcdCluster) -> None:
    result = ctl(etcd, "/verify-args", "verify", "--no-quorum", "20..10")
    assert result.returncode == 2, result
    assert "START..END" in result.stderr, result.stderr
    out = ok(ctl(etcd, "/verify-args", "verify", "--no-quorum", "10..20", "--on-time", "0"))
    assert " 0 violations" in out, out
