"""``dispatchctl replay`` against a real worker, etcd and PostgreSQL.

One worker (in this process) decides for three cities for the whole module: ``kiev``
reads its state from etcd (a producer rewrites ``<ns>/state/kiev`` every 0.1 s),
``sim`` is simulated, and ``oslo`` reads etcd through ``test-nohistory`` (a source that
says nothing of how to read a state back) with ``archiveState`` on, so only the archive
in PostgreSQL can replay it. The tests run in file order; the last one compacts the
module's own etcd.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from google.protobuf import json_format

from coordinator.cli.common import run_cli
from coordinator.cli.ctl import cli
from coordinator.codec import assigned, encode
from coordinator.errors import EtcdCompacted
from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from coordinator.ops.replay import past_decisions
from coordinator.settings import CityConfig
from coordinator.sinks.archive import archive_id
from coordinator.sinks.postgres import PostgresSink
from coordinator.sources.snapshot import snapshot_from_state
from devtools.localpg import LocalPostgres
from protos import dispatch_pb2 as pb
from solvers.generate import random_city
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import decision, running_worker


@dataclass
class Deployment:
    endpoints: str
    namespace: str
    keys: Keys
    client: EtcdClient
    archive_url: str
    started: datetime
    producing: threading.Event

    def ctl(self, *args: str, archive: bool = False) -> subprocess.CompletedProcess[str]:
        """``dispatchctl replay ARGS`` in this process (as ``main`` runs it: errors are
        one line and an exit status), or with ``real`` in a process of its own."""
        extra = ["--archive-url", self.archive_url] if archive else []
        argv = ["--etcd", self.endpoints, "--namespace", self.namespace, "replay", *args,
                *extra]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_cli(cli, "dispatchctl", argv)
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())

    def real_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coordinator.cli.ctl", "--etcd", self.endpoints,
             "--namespace", self.namespace, "replay", *args],
            capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")})

    def decisions(self, city: str) -> list[tuple[int, pb.Decision]]:
        """Every decision of ``city`` in etcd's history, newest first."""
        out = []
        with contextlib.suppress(EtcdCompacted):
            for r in past_decisions(self.client, self.keys.decision(city)):
                out.append((r.revision, r.decision))
        return out


def _produce(client: EtcdClient, keys: Keys, producing: threading.Event,
             stop: threading.Event) -> None:
    """A new state for kiev and oslo every 0.1 s while ``producing`` is set."""
    seed = 0
    while not stop.wait(0.1):
        if not producing.is_set():
            continue
        seed += 1
        for city in ("kiev", "oslo"):
            state = random_city(city, 25, 15, seed=seed)
            client.put(keys.state(city), encode(snapshot_from_state(state)))


@pytest.fixture(scope="module")
def own_etcd() -> Iterator[EtcdCluster]:
    """An etcd of this module's own: its last test compacts it, which the session's
    shared member must never be (every other test verifies its history from revision 1)."""
    cluster = EtcdCluster(1).start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def deployment(own_etcd: EtcdCluster, postgres_server: LocalPostgres) -> Iterator[Deployment]:
    etcd = own_etcd
    namespace = f"/test-{uuid.uuid4().hex[:10]}"
    keys = Keys(namespace)
    archive_url = postgres_server.create_database(f"test_{uuid.uuid4().hex[:12]}")
    sink = PostgresSink(archive_url, namespace=namespace)
    sink.init_schema()  # dispatch-relay --init: the archive's table among the sink's
    sink.close()
    client = EtcdClient(EtcdConfig(endpoints=tuple(etcd.endpoints.split(","))))
    producing, stop = threading.Event(), threading.Event()
    producing.set()
    producer = threading.Thread(target=_produce, args=(client, keys, producing, stop),
                                daemon=True)
    producer.start()
    wait_until(lambda: client.get(keys.state("oslo")), message="a first state")
    started = datetime.now(UTC)
    for config in (CityConfig("kiev", "greedy", 0.1, state_source="etcd"),
                   CityConfig("sim", "greedy", 0.05, params={"orders": 30, "couriers": 20}),
                   CityConfig("oslo", "greedy", 0.1, state_source="test-nohistory",
                              archive_state=True)):
        client.put(keys.city(config.city), config.encode())
    with running_worker(etcd.endpoints, namespace, lease_ttl=2, solve_isolation="thread",
                        archive_url=archive_url):
        yield Deployment(etcd.endpoints, namespace, keys, client, archive_url, started,
                         producing)
        stop.set()
    producer.join(5)
    client.close()


def _many_ticks_later(d: Deployment, city: str, ticks: int) -> tuple[int, pb.Decision]:
    """A decision of ``city``, once ``ticks`` more have been made after it."""
    first = wait_until(lambda: decision(d.client, d.keys, city), message=f"{city} decides")
    assert isinstance(first, pb.Decision)
    wait_until(lambda: (now := decision(d.client, d.keys, city)) and now.tick >= first.tick
               + ticks, timeout=30, message=f"{ticks} more decisions of {city}")
    revision, early = next((r, x) for r, x in reversed(d.decisions(city))
                           if x.tick == first.tick)
    return revision, early


def test_a_decision_on_etcd_state_replays_identically_after_the_state_moved_on(
        deployment: Deployment) -> None:
    d = deployment
    revision, early = _many_ticks_later(d, "kiev", 20)
    ref = early.state_ref
    assert ref.source == "etcd" and 0 < ref.revision < revision
    state_kv = d.client.get(d.keys.state("kiev"))
    assert state_kv is not None and state_kv.version > 5
    assert state_kv.mod_revision > ref.revision  # the state key was rewritten since
    latest = decision(d.client, d.keys, "kiev")
    assert latest is not None and assigned(latest) != assigned(early)

    result = d.ctl("kiev", "--revision", str(revision), "--solver", "hungarian")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"kiev: decision at revision {revision} (")
    assert lines[1].startswith(f"state: source etcd, etcd revision {ref.revision}; "
                               "25 orders x 15 couriers")
    assert lines[2] == (f"replay of greedy: identical ({len(assigned(early))} "
                        f"assignments, {len(early.unassigned)} unassigned)")
    assert [line.split()[0] for line in lines[3:]] == ["SOLVER", "recorded", "greedy",
                                                        "hungarian"]
    as_json = json.loads(d.ctl("kiev", "--revision", str(revision), "--json").stdout)
    assert as_json["identical"] is True and as_json["differences"] == []
    assert as_json["replayed"][0]["cost"] == pytest.approx(early.cost)


def test_a_simulated_decision_replays_identically(deployment: Deployment) -> None:
    d = deployment
    revision, early = _many_ticks_later(d, "sim", 20)
    ref = early.state_ref
    assert (ref.source, ref.orders, ref.couriers, ref.seed) == ("simulated", 30, 20, 0)
    assert ref.tick > 0 and ref.budget_seconds == pytest.approx(0.04)
    result = d.ctl("sim", "--revision", str(revision), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["identical"] is True and out["replayed"][0]["solver"] == "greedy"
    assert out["stateRef"] == {"source": "simulated", "tick": str(ref.tick), "orders": 30,
                               "couriers": 20, "budgetSeconds": pytest.approx(0.04)}
    assert out["state"] == (f"source simulated, seed 0, tick {ref.tick}, 30 orders x 20 "
                               "couriers")


def test_an_archived_city_replays_from_the_archive_and_only_from_it(
        deployment: Deployment) -> None:
    d = deployment
    revision, early = _many_ticks_later(d, "oslo", 10)
    ref = early.state_ref
    assert ref.source == "test-nohistory" and ref.revision == 0 and len(ref.archive_id) == 32
    # every decision of the city references a stored state (written before its commit)
    ids = {x.state_ref.archive_id for _, x in d.decisions("oslo")}
    with psycopg.connect(d.archive_url) as conn:
        rows = dict(conn.execute("SELECT archive_id, snapshot::text FROM dispatch_states "
                                 "WHERE city = 'oslo'").fetchall())
    assert ids <= set(rows)
    # the id is the content hash of what is stored
    stored = pb.StateSnapshot()
    json_format.Parse(rows[ref.archive_id], stored)
    assert archive_id("oslo", encode(stored)) == ref.archive_id

    result = d.ctl("oslo", "--revision", str(revision), archive=True)
    assert result.returncode == 0, result.stderr
    assert "replay of greedy: identical" in result.stdout
    assert f"archived as {ref.archive_id}" in result.stdout

    without = d.ctl("oslo", "--revision", str(revision))
    assert without.returncode == 1 and without.stdout == ""
    assert without.stderr.count("\n") == 1
    assert without.stderr.startswith("dispatchctl: error: state source 'test-nohistory' "
                                      "cannot read a past state of oslo back")
    assert without.stderr.rstrip().endswith(
        f"it is archived as {ref.archive_id}: give the archive's --archive-url (or "
        "DISPATCH_ARCHIVE_URL)")


def test_since_compares_two_solvers_over_a_hundred_recorded_ticks(
        deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    since = d.started.isoformat()
    wait_until(lambda: len([x for _, x in d.decisions("sim")]) >= 110, timeout=60,
               interval=0.5, message="110 decisions of sim")
    result = d.ctl("sim", "--since", since, "--solver", "greedy", "--solver", "hungarian",
                   "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    ticks = out["ticks"]
    assert len(ticks) >= 100 and out["gone"] == 0 and out["compactedAt"] is None
    assert [t["revision"] for t in ticks] == sorted(t["revision"] for t in ticks)
    recorded, greedy, hungarian = out["summary"]
    assert [recorded["solver"], greedy["solver"], hungarian["solver"]] == \
        ["recorded", "greedy", "hungarian"]
    assert greedy["identical"] == greedy["sameSolver"] == len(ticks)
    assert greedy["meanCost"] == pytest.approx(recorded["meanCost"])
    assert hungarian["errors"] == 0 and hungarian["sameSolver"] == 0
    assert all(t["replayed"][1]["cost"] is not None for t in ticks)
    assert "replayed 100/" in result.stderr or "replayed 25/" in result.stderr

    plot = tmp_path / "cost.svg"
    text = d.ctl("sim", "--since", since, "--solver", "hungarian", "--limit", "100",
                 "--plot", str(plot))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("sim: 100 decisions since ")
    assert lines[1].split()[:4] == ["REVISION", "DECIDED", "AT", "RECORDED"]
    summary = lines[lines.index("") + 1:]
    assert [row.split()[0] for row in summary] == ["SOLVER", "recorded", "hungarian"]
    svg = plot.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") >= 2 and "hungarian" in svg

    png = d.ctl("sim", "--since", since, "--solver", "greedy", "--limit", "5",
                "--plot", str(tmp_path / "cost.png"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert png.returncode == 1 and png.stderr.count("\n") == 1
        assert "pip install 'dispatch-coordinator[bench]'" in png.stderr
    else:
        assert png.returncode == 0 and (tmp_path / "cost.png").stat().st_size > 0


def test_a_replay_whose_state_etcd_compacted_says_so_in_one_line(
        deployment: Deployment) -> None:
    d = deployment
    d.producing.clear()  # the state key stays where it is: new decisions read it
    time.sleep(0.3)
    last_state = d.client.get(d.keys.state("kiev"))
    assert last_state is not None
    wait_until(lambda: (x := decision(d.client, d.keys, "kiev"))
               and x.state_ref.revision == last_state.mod_revision,
               message="a decision on the last state")
    wait_until(lambda: len(d.decisions("kiev")) > 5, message="a few decisions of kiev")
    history = d.decisions("kiev")
    revision, latest = history[0]
    older = history[5][0]
    d.client.compact(revision)
    assert latest.state_ref.revision < revision

    gone = d.real_ctl("kiev", "--revision", str(revision))
    assert gone.returncode == 1 and gone.stdout == ""
    assert gone.stderr == (f"dispatchctl: error: the state of kiev at revision "
                           f"{latest.state_ref.revision} is gone: etcd compacted that revision "
                           "away and the state was not archived\n")
    before = d.ctl("kiev", "--revision", str(older))
    assert before.returncode == 1 and before.stderr.count("\n") == 1
    assert before.stderr.startswith(f"dispatchctl: error: the decision of kiev at revision "
                                    f"{older} is gone: etcd compacted that revision away")
    since = d.ctl("kiev", "--since", d.started.isoformat(), "--solver", "greedy")
    assert since.returncode == 0, since.stderr
    assert f"history stops at revision {revision}: etcd compacted" in since.stdout
    assert "decisions not replayed, their state is gone" in since.stdout
    # the archive outlives etcd's compaction
    arc_revision = wait_until(lambda: (r := d.decisions("oslo")[0][0]) > revision and r,
                              message="an oslo decision after the compaction")
    assert isinstance(arc_revision, int)
    archived = d.ctl("oslo", "--revision", str(arc_revision), archive=True)
    assert archived.returncode == 0 and "identical" in archived.stdout, archived.stderr
