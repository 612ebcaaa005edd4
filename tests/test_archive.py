"""The state archive: snapshots that give their state back exactly, stored idempotently
in a real PostgreSQL, and what a city that asks for it gets when it cannot have it."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from coordinator.codec import decode, encode
from coordinator.errors import StateError, StateGone
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from coordinator.sinks.archive import StateArchive
from coordinator.sinks.postgres import PostgresSink
from coordinator.sources.snapshot import snapshot_from_state, state_from_snapshot
from protos import dispatch_pb2 as pb
from solvers.conformance import CASES
from solvers.contract import CityState
from solvers.generate import simulated_state
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import decision, running_worker, status

STATES = {case.name: case.build for case in CASES} | {
    "simulated": lambda: simulated_state("lima", 77, n_orders=60, n_couriers=40, seed=5,
                                         taken_at=1_765_000_000.123456)}


def _equal(a: CityState, b: CityState) -> bool:
    return a.city == b.city and all(
        x.shape == y.shape and np.array_equal(x, y)
        for x, y in zip(a.arrays().values(), b.arrays().values(), strict=True))


@pytest.mark.parametrize("name", list(STATES))
def test_a_snapshot_gives_its_state_back_exactly(name: str) -> None:
    state = STATES[name]()
    stored = decode(pb.StateSnapshot, encode(snapshot_from_state(state)))
    back = state_from_snapshot(state.city, stored, stored.taken_at.ToNanoseconds() / 1e9)
    assert _equal(state, back)
    assert back.taken_at == pytest.approx(state.taken_at, abs=1e-6)


def test_the_archive_keeps_a_state_once_and_gives_it_back(postgres_url: str) -> None:
    PostgresSink(postgres_url, namespace="/n").init_schema()
    archive = StateArchive(postgres_url)
    try:
        state = STATES["simulated"]()
        key = archive.keep("lima", state)
        assert archive.keep("lima", state) == key  # a retried tick: the same row
        assert _equal(archive.fetch("lima", key), state)
        with pytest.raises(StateGone, match="not in the archive"):
            archive.fetch("paris", key)  # another city's id is not this city's state
    finally:
        archive.close()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM dispatch_states").fetchone() == (1,)


def test_an_archive_without_its_table_says_how_to_create_it(postgres_url: str) -> None:
    archive = StateArchive(postgres_url)
    with pytest.raises(StateError) as caught:
        archive.keep("lima", STATES["simulated"]())
    archive.close()
    message = str(caught.value)
    assert message.startswith("cannot archive the state of lima (the city has archiveState "
                              "on): state archive at ")
    assert message.endswith("create the tables with `dispatch-relay --init`")


@pytest.mark.parametrize(("archive_url", "expected"), [
    (None, "city rome archives its state (archiveState) but this worker has no "
           "--archive-url (DISPATCH_ARCHIVE_URL)"),
    ("postgresql://dispatch@127.0.0.1:9/nowhere",
     "cannot archive the state of rome (the city has archiveState on): postgres at "
     "127.0.0.1:9/nowhere is unavailable (archive a state): "),
])
def test_a_city_whose_state_cannot_be_archived_fails_its_tick_and_backs_off(
        archive_url: str | None, expected: str, etcd: EtcdCluster, client: EtcdClient,
        keys: Keys, namespace: str) -> None:
    """The city asked for replayability: no decision without its state stored. Its
    status says why and it backs off; the other cities keep deciding."""
    for config in (CityConfig("rome", "greedy", 0.2, archive_state=True),
                   CityConfig("good", "greedy", 0.2)):
        client.put(keys.city(config.city), config.encode())
    with running_worker(etcd.endpoints, namespace, solve_isolation="thread",
                        archive_url=archive_url):
        failing = wait_until(lambda: (s := status(client, keys, "rome"))
                             and s.consecutive_failures >= 2 and s,
                             message="rome failing twice")
        assert isinstance(failing, pb.CityStatus)
        assert failing.state == "failing" and failing.last_error.startswith(expected)
        assert "\n" not in failing.last_error and failing.retry_in_seconds > 0.2
        assert decision(client, keys, "rome") is None
        assert wait_until(lambda: decision(client, keys, "good"), message="good decides")


def test_a_source_that_only_loads_keeps_working_and_is_replayable_only_archived() -> None:
    """A third party's source written before replay: ``load`` alone still serves ticks;
    its decisions carry no way back except the archive, and a replay says so."""
    from coordinator.sources.contract import SourceContext, StateSource

    class OnlyLoads(StateSource):
        def load(self, config: CityConfig, now: float) -> CityState:
            return STATES["simulated"]()

    source = OnlyLoads(SourceContext(None, Keys("/n")))  # type: ignore[arg-type]
    state, ref = source.load_with_ref(CityConfig("lima", "greedy"), 0.0)
    assert ref is None and _equal(state, STATES["simulated"]())
    with pytest.raises(StateGone, match=r"cannot read a past state of lima back and the "
                                        r"state was not archived \(`dispatchctl city set "
                                        r"lima --archive-state`"):
        source.reload("lima", pb.StateRef(source="only-loads"), 0.0)


def test_a_hung_archive_write_holds_up_one_tick_not_every_city(postgres_url: str) -> None:
    """A write blocked in the database (here: a table lock) keeps its own tick waiting;
    the next city's write gives up after its wait, with a clear error, instead of
    queueing every archiving city's tick thread behind it."""
    PostgresSink(postgres_url, namespace="/n").init_schema()
    archive = StateArchive(postgres_url)
    blocked: list[object] = []
    with psycopg.connect(postgres_url) as locker:
        locker.execute("LOCK TABLE dispatch_states IN ACCESS EXCLUSIVE MODE")
        first = threading.Thread(target=lambda: blocked.append(
            archive.keep("lima", STATES["simulated"]())))
        first.start()
        time.sleep(0.2)  # let it reach the database and block there
        started = time.monotonic()
        with pytest.raises(StateError, match=r"cannot archive the state of quito \(the city "
                                             r"has archiveState on\): the state archive at "
                                             r".* is still busy with another write after "
                                             r"0.30s"):
            archive.keep("quito", STATES["some-busy"](), wait=0.3)
        assert time.monotonic() - started < 1.0
        assert first.is_alive()
    first.join(5)  # the lock is gone with its transaction: the blocked write completes
    assert len(blocked) == 1 and isinstance(blocked[0], str)
    archive.close()
