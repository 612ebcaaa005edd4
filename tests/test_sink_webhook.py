"""The webhook sink against a real HTTP receiver on loopback that keeps the documented
rule: apply only if Dispatch-Revision > the revision held for Dispatch-City, else 409."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from coordinator.codec import decode
from coordinator.errors import ConfigError, SinkError, SinkUnavailable
from coordinator.sinks.conformance import (
    SinkCheck,
    SinkTarget,
    assert_check_passes,
    delivery,
    sink_checks,
)
from coordinator.sinks.webhook import WebhookSink
from protos import dispatch_pb2 as pb


class Receiver(ThreadingHTTPServer):
    """A downstream service: the latest decision per city, its cursor, what it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.held: dict[str, int] = {}
        self.decisions: dict[str, pb.Decision] = {}
        self.cursor = 0
        self.requests: list[dict[str, str]] = []
        #: what to answer the next POSTs with: a status, or None for the rule
        self.fail_next: list[int | None] = []
        self.serves_cursor = True
        self.drop_idle = False  # close every connection after answering, unannounced
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/decisions"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the sink expects
    server: Receiver

    def log_message(self, *_args: object) -> None:
        pass

    def _answer(self, status: int, body: dict[str, object] | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.server.drop_idle:
            self.close_connection = True

    def do_GET(self) -> None:
        if not self.server.serves_cursor:
            self._answer(405, {"error": "no cursor here"})
            return
        with self.server.lock:
            self._answer(200, {"cursor": self.server.cursor})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests.append(dict(self.headers.items()))
            status = self.server.fail_next.pop(0) if self.server.fail_next else None
            if status is not None:
                self._answer(status, {"error": "try later"})
                return
            city = self.headers["Dispatch-City"]
            revision = int(self.headers["Dispatch-Revision"])
            self.server.cursor = max(self.server.cursor, revision)
            if revision <= self.server.held.get(city, 0):
                self._answer(409, {"held": self.server.held[city]})
                return
            self.server.held[city] = revision
            self.server.decisions[city] = decode(pb.Decision, body)
            self._answer(200, {"applied": revision})


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made: dict[str, Receiver] = {}
    yield made
    for receiver in made.values():
        receiver.close()


@pytest.fixture
def receiver(receivers: dict[str, Receiver]) -> Receiver:
    r = Receiver()
    receivers[r.url] = r
    return r


@pytest.mark.parametrize("check", sink_checks(), ids=str)
def test_webhook_sink_passes_the_conformance_kit(receivers: dict[str, Receiver],
                                                 check: SinkCheck) -> None:
    def new_store() -> str:
        r = Receiver()
        receivers[r.url] = r
        return r.url

    def held(url: str, city: str) -> int | None:
        return receivers[url].held.get(city)

    assert_check_passes(SinkTarget(WebhookSink, new_store, held,
                                   bad_url="ftp://example.com/x"), check)


def test_posts_canonical_json_with_the_dispatch_headers(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, namespace="/ns")
    d = delivery("paris", 40, 12)
    got = sink.apply([d])
    assert (got.applied, got.refused, got.cursor) == (1, 0, 40)
    headers = receiver.requests[-1]
    assert headers["Dispatch-City"] == "paris"
    assert headers["Dispatch-Revision"] == "40"
    assert headers["Dispatch-Token"] == "12"
    assert headers["Dispatch-Namespace"] == "/ns"
    assert headers["Content-Type"] == "application/json"
    assert receiver.decisions["paris"] == d.decision
    sink.close()


def test_409_counts_as_refused_and_moves_the_cursor(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, namespace="/ns")
    first = sink.apply([delivery("paris", 50, 1)])
    assert (first.applied, first.refused, first.cursor) == (1, 0, 50)
    again = sink.apply([delivery("paris", 50, 1), delivery("paris", 45, 1),
                        delivery("lyon", 51, 2)])
    assert (again.applied, again.refused, again.cursor) == (1, 2, 51)
    assert receiver.held == {"paris": 50, "lyon": 51}
    sink.close()


def test_500_is_an_error_and_a_retry_of_the_batch_is_harmless(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, namespace="/ns")
    batch = [delivery("paris", 60, 1), delivery("lyon", 61, 2), delivery("rome", 62, 3)]
    receiver.fail_next = [None, 500]  # paris lands, lyon is answered 500: the batch stops
    with pytest.raises(SinkUnavailable, match="answered 500 to the decision of lyon"):
        sink.apply(batch)
    assert receiver.held == {"paris": 60}
    retried = sink.apply(batch)  # what the relay does after its backoff
    assert (retried.applied, retried.refused, retried.cursor) == (2, 1, 62)
    assert receiver.held == {"paris": 60, "lyon": 61, "rome": 62}
    sink.close()


def test_a_4xx_other_than_409_is_a_sink_error(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, namespace="/ns")
    receiver.fail_next.append(400)
    with pytest.raises(SinkError, match="answered 400") as caught:
        sink.apply([delivery("paris", 5, 1)])
    assert not isinstance(caught.value, SinkUnavailable)
    sink.close()


def test_connection_refused_is_sink_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink(f"http://user:secret@127.0.0.1:{port}/hook?key=k", namespace="/ns",
                       timeout=2)
    with pytest.raises(SinkUnavailable, match="connection refused") as caught:
        sink.apply([delivery("paris", 5, 1)])
    assert "secret" not in str(caught.value) and "key=k" not in str(caught.value)
    with pytest.raises(SinkUnavailable):
        sink.cursor()


def test_a_receiver_without_a_cursor_reads_as_zero(receiver: Receiver) -> None:
    receiver.serves_cursor = False
    sink = WebhookSink(receiver.url, namespace="/ns")
    assert sink.cursor() == 0
    assert sink.apply([delivery("paris", 7, 1)]).cursor == 7
    sink.close()


def test_a_dropped_kept_alive_connection_is_reopened(receiver: Receiver) -> None:
    receiver.drop_idle = True  # as a receiver with a short keep-alive timeout does
    sink = WebhookSink(receiver.url, namespace="/ns")
    for revision in (8, 9, 10):
        assert sink.apply([delivery("paris", revision, 1)]).applied == 1
    assert receiver.held == {"paris": 10}
    sink.close()


@pytest.mark.parametrize("url", ["ftp://host/x", "http:///nohost", "http://host:99999/",
                                 "not a url"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="webhook URL"):
        WebhookSink(url, namespace="/ns")
