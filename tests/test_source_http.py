"""The http state source against a real HTTP server on 127.0.0.1: the URL template, the
snapshot checked field by field, the observed time, kept-alive connections reused across
ticks, and a server that is down, slow or answers badly named on the error."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from coordinator.codec import assigned
from coordinator.errors import StateError, StateUnavailable
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys
from coordinator.settings import CityConfig
from coordinator.sources.contract import SourceContext
from coordinator.sources.http import HttpSource
from coordinator.sources.options import SourceOptions
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import decision, running_worker, status

SNAPSHOT = {
    "orders": [{"id": "o-1", "pickup": {"x": 0, "y": 0}, "dropoff": {"x": 5, "y": 5},
                "readyInSeconds": 30, "size": 2}],
    "couriers": [{"id": "c-1", "position": {"x": 1, "y": 0}, "speed": 5, "capacity": 3,
                  "vehicle": "car"}],
    "takenAt": "2026-01-02T03:04:05Z",
}


@dataclass
class Served:
    """What the server answers (per path) and what it saw."""

    bodies: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    delay: float = 0.0
    #: send the body a byte at a time, this long apart
    trickle: float = 0.0
    #: close each connection after its response, without saying so (as a server does
    #: when a kept-alive connection idles past its timeout)
    close_silently: bool = False
    paths: list[str] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_GET(self) -> None:
            served.paths.append(self.path)
            served.peers.add(self.client_address)
            time.sleep(served.delay)
            status, body, headers = served.bodies.get(self.path, (404, b"not here", {}))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(ConnectionError, OSError):  # a client that gave up
                if served.trickle:
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(served.trickle)
                else:
                    self.wfile.write(body)
            self.close_connection = self.close_connection or served.close_silently

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def make_source(base: str = "") -> HttpSource:
    return HttpSource(SourceContext(None, Keys("/t"),  # type: ignore[arg-type]
                                    SourceOptions(http_url=base)))


def city(name: str = "rome", period: float = 1.0, **params: object) -> CityConfig:
    return CityConfig(name, "greedy", period, state_source="http", params=params)


def serve(served: Served, path: str, body: object, status: int = 200,
          headers: dict[str, str] | None = None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    served.bodies[path] = (status, raw, headers or {})


def test_the_url_template_is_filled_and_the_snapshot_read(
        server: tuple[str, Served]) -> None:
    base, served = server
    serve(served, "/state/new%20york", SNAPSHOT)
    source = make_source(base + "/state/{city}")
    state = source.load(city("new york"), time.time())
    assert list(state.order_ids) == ["o-1"] and state.size.tolist() == [2]
    assert list(state.courier_ids) == ["c-1"] and list(state.vehicle) == ["car"]
    assert state.taken_at == 1767323045.0  # the snapshot's takenAt
    # A city's own url wins over the worker's template.
    serve(served, "/other/rome.json", {"orders": [], "couriers": []})
    own = city("rome", url=base + "/other/{city}.json")
    assert source.load(own, time.time()).n_orders == 0


def test_observed_at_falls_back_to_last_modified_then_arrival(
        server: tuple[str, Served]) -> None:
    base, served = server
    bare = {"orders": [], "couriers": []}
    serve(served, "/a", bare, headers={"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"})
    serve(served, "/b", bare)
    source = make_source()
    assert source.load(city(url=base + "/a"), 0).taken_at == 1445412480.0
    assert source.load(city(url=base + "/b"), 0).taken_at == pytest.approx(time.time(), abs=5)


def test_a_kept_alive_connection_is_reused_across_ticks_and_cities(
        server: tuple[str, Served]) -> None:
    base, served = server
    serve(served, "/rome", SNAPSHOT)
    serve(served, "/oslo", SNAPSHOT)
    source = make_source(base + "/{city}")
    for _ in range(5):
        source.load(city("rome"), time.time())
        source.load(city("oslo"), time.time())
    assert len(served.paths) == 10
    assert source.opened == 1 and len(served.peers) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_unseen(
        server: tuple[str, Served]) -> None:
    base, served = server
    serve(served, "/rome", SNAPSHOT)
    served.close_silently = True
    source = make_source(base + "/{city}")
    for _ in range(3):
        assert source.load(city("rome"), time.time()).n_orders == 1
    assert source.opened == 3 and len(served.paths) == 3


@pytest.mark.parametrize(("body", "status", "expected"), [
    (b"{not json", 200, "state from http://127.0.0.1:"),
    ({"orders": [{"id": "o-1", "colour": "red"}]}, 200, 'no field named "colour"'),
    ({"orders": [{"id": "o-1", "pickup": {"x": "NaN"}}]}, 200,
     "order o-1 pickup.x is not a finite number"),
    ({"couriers": [{"id": "c", "speed": -1}]}, 200, "courier c speed -1.0 must be positive"),
    ({"orders": [{"id": "x"}, {"id": "x"}]}, 200, "order id 'x' appears more than once"),
    (b"overloaded", 503, "HTTP 503 Service Unavailable"),
])
def test_a_bad_answer_is_named(server: tuple[str, Served], body: object, status: int,
                               expected: str) -> None:
    base, served = server
    serve(served, "/s", body, status)
    with pytest.raises(StateError) as info:
        make_source().load(city(url=base + "/s"), time.time())
    assert expected in str(info.value)
    assert not isinstance(info.value, StateUnavailable)


def test_a_slow_server_is_cut_at_the_tick_budget(server: tuple[str, Served]) -> None:
    base, served = server
    serve(served, "/s", SNAPSHOT)
    served.delay = 2.0
    started = time.monotonic()
    with pytest.raises(StateUnavailable, match=r"no answer within the tick's 0.40s"):
        make_source().load(city(period=0.5, url=base + "/s"), time.time())  # 0.5 × 0.8
    assert time.monotonic() - started < 1.5


def test_a_trickling_server_is_cut_soon_after_the_tick_budget(
        server: tuple[str, Served]) -> None:
    # Every byte comes within the socket timeout, so only the watchdog ends the read.
    base, served = server
    serve(served, "/s", SNAPSHOT)
    served.trickle = 0.05
    started = time.monotonic()
    with pytest.raises(StateUnavailable, match=r"no answer within the tick's 0\.40s"):
        make_source().load(city(period=0.5, url=base + "/s"), time.time())
    assert time.monotonic() - started < 1.0  # cut at 1.25 × 0.4 + 0.1 s


def test_unreachable_missing_and_credentialed_urls_are_said_so() -> None:
    with pytest.raises(StateUnavailable, match=r"GET http://127.0.0.1:9/x: ConnectionRefused"):
        make_source().load(city(url="http://127.0.0.1:9/x"), time.time())
    with pytest.raises(StateError, match="needs the city's url parameter or the worker's"):
        make_source().load(city(), time.time())
    with pytest.raises(StateError, match="without a password"):
        make_source().load(city(url="http://u:secret@127.0.0.1:9/x"), time.time())
    with pytest.raises(StateError, match="want http"):
        make_source().load(city(url="ftp://127.0.0.1/x"), time.time())


def test_a_worker_decides_from_http_and_names_a_stale_or_missing_state(
        server: tuple[str, Served], etcd: EtcdCluster, client: EtcdClient, keys: Keys,
        namespace: str) -> None:
    base, served = server

    def snapshot(courier: str, taken_at: float) -> dict[str, object]:
        stamp = datetime.fromtimestamp(taken_at, UTC).isoformat().replace("+00:00", "Z")
        first: dict[str, object] = SNAPSHOT["couriers"][0]  # type: ignore[index]
        return {**SNAPSHOT, "couriers": [{**first, "id": courier}], "takenAt": stamp}

    def failing() -> str:
        s = status(client, keys, "lyon")
        return s.last_error if s is not None and s.state == "failing" else ""

    def decided() -> dict[str, str]:
        d = decision(client, keys, "lyon")
        return {} if d is None else assigned(d)

    serve(served, "/lyon", snapshot("c-1", time.time()))
    client.put(keys.city("lyon"), CityConfig("lyon", "greedy", 0.2, state_source="http",
                                             max_state_age=5.0).encode())
    with running_worker(etcd.endpoints, namespace, state_http_url=base + "/{city}",
                        max_backoff=0.5):
        wait_until(lambda: decided() == {"o-1": "c-1"}, 20, message="a decision")
        serve(served, "/lyon", snapshot("c-2", time.time()))
        wait_until(lambda: decided() == {"o-1": "c-2"}, 10, message="the next state")
        serve(served, "/lyon", snapshot("c-3", time.time() - 60))
        assert "state of lyon is stale: observed 6" in str(
            wait_until(failing, 10, message="stale state refused"))
        served.bodies.pop("/lyon")
        assert f"GET {base}/lyon: HTTP 404 Not Found" in str(
            wait_until(lambda: "404" in failing() and failing(), 10, message="a 404"))
    assert decided() == {"o-1": "c-2"}  # nothing decided on the stale state


def test_network_sources_never_run_inside_the_compute_gate() -> None:
    from coordinator.plugins import STATE_SOURCES, installed

    names = {p.name for p in installed(STATE_SOURCES)}
    assert {"postgres", "http"} <= names  # registered like any third party's
    from coordinator.sources.postgres import PostgresSource

    assert not HttpSource.cpu_bound and not PostgresSource.cpu_bound
