"""The sink conformance kit: does a sink keep the "only newer" promise on a real store?

Written for third-party sink authors, to run from their own test suite against their
real store. The author describes the sink with a :class:`SinkTarget`: its class, a way
to get the URL of a fresh, empty store, and a way to read back, by the author's own
means (not through the sink), which revision the store holds for a city::

    from coordinator.sinks.conformance import SinkTarget, assert_sink_conformant

    def test_my_sink_conforms(my_store_factory):
        assert_sink_conformant(SinkTarget(MySink, my_store_factory.new_url, held=read_held))

or one test per check::

    @pytest.mark.parametrize("check", sink_checks(), ids=str)
    def test_check(check, target):
        assert_check_passes(target, check)

Every check gets a fresh store and builds its sinks as the relay does,
``cls(url, namespace=...)`` then ``init_schema()``. It checks: a newer revision is
applied (same leader or a new one); a stale revision is refused without error, so is a
duplicate (across batches and inside one), so is an out-of-order one (inside a batch and
across batches); the cursor is the highest revision kept and survives a new sink object
made from the same URL while the old one was left as a crash leaves it, which then
accepts the rest and refuses the replay; cities are independent (a city's newer
decision is applied even when its revision is below the cursor); an empty batch changes
nothing; two relays applying the same stream at once, batched differently, apply every
revision at most once and leave each city at its newest. Each :class:`Applied` is
compared too, because the relay reports it. A sink's exceptions are captured as
problems, so one report lists every broken promise.

Decisions are real: greedy solutions of small generated cities.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.errors import ConfigError
from coordinator.sinks.contract import Applied, Delivery, Sink
from protos import dispatch_pb2 as pb
from solvers.generate import random_city, stable_seed
from solvers.greedy import GreedySolver

__all__ = [
    "SinkCheck",
    "SinkReport",
    "SinkTarget",
    "assert_check_passes",
    "assert_sink_conformant",
    "delivery",
    "run_check",
    "run_sink_conformance",
    "sink_checks",
]


@dataclass(frozen=True)
class SinkTarget:
    """The sink under test and the author's two hooks into its store."""

    sink_class: type[Sink]
    #: the URL of a fresh, empty store (a new database, a new endpoint, ...) each call
    new_store: Callable[[], str]
    #: ``held(url, city)``: the revision the store at ``url`` holds for ``city``, or None
    held: Callable[[str, str], int | None]
    namespace: str = "/conformance"
    #: a URL the sink must refuse at construction with ``ConfigError`` (optional)
    bad_url: str | None = None


def delivery(city: str, revision: int, token: int) -> Delivery:
    """A delivery of a real decision: the greedy solution of a small generated city."""
    state = random_city(city, 6, 5, seed=stable_seed("sink-conformance", city, revision))
    solution = GreedySolver().solve(state, {}, 1.0)
    orders: list[str] = state.order_ids[solution.orders].tolist()
    couriers: list[str] = state.courier_ids[solution.couriers].tolist()
    etas: list[float] = solution.pickup_eta.tolist()
    decided_at = Timestamp()
    decided_at.FromSeconds(1_800_000_000 + revision)
    decision = pb.Decision(
        city=city, token=token, worker_id=f"w-{token}", solver="greedy",
        unassigned=sorted(set(state.order_ids.tolist()) - set(orders)),
        decided_at=decided_at, tick=revision - token,
        details=[pb.Assignment(order_id=o, courier_id=c, pickup_eta_seconds=e)
                 for o, c, e in zip(orders, couriers, etas, strict=True)],
    )
    return Delivery(city=city, revision=revision, token=token, decision=decision)


class _Store:
    """One fresh store of a check, and the sinks opened on it (closed at the end)."""

    def __init__(self, target: SinkTarget) -> None:
        self.target = target
        self.url = target.new_store()
        self.sinks: list[Sink] = []

    def open(self, *, init: bool = True) -> Sink:
        sink = self.target.sink_class(self.url, namespace=self.target.namespace)
        self.sinks.append(sink)
        if init:
            sink.init_schema()
        return sink

    def apply(self, sink: Sink, batch: Sequence[Delivery], expect: tuple[int, int, int],
              what: str) -> None:
        got = sink.apply(batch)
        if not isinstance(got, Applied):
            raise AssertionError(f"{what}: apply returned {type(got).__name__}, not Applied")
        if (got.applied, got.refused, got.cursor) != expect:
            raise AssertionError(f"{what}: applied/refused/cursor {got.applied}/{got.refused}/"
                          f"{got.cursor}, expected {expect[0]}/{expect[1]}/{expect[2]}")

    def expect_held(self, **revisions: int | None) -> None:
        for city, want in revisions.items():
            held = self.target.held(self.url, city)
            if held != want:
                raise AssertionError(f"the store holds revision {held} for {city}, expected {want}")

    def expect_cursor(self, sink: Sink, want: int, what: str) -> None:
        got = sink.cursor()
        if got != want:
            raise AssertionError(f"{what}: cursor() is {got}, expected {want}")

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


D = delivery


def _newer_applied(s: _Store) -> None:
    sink = s.open()
    s.expect_cursor(sink, 0, "a fresh store")
    s.apply(sink, [D("a", 10, 5)], (1, 0, 10), "the first decision")
    s.apply(sink, [D("a", 20, 5)], (1, 0, 20), "the same leader's next decision")
    s.apply(sink, [D("a", 30, 25)], (1, 0, 30), "a new leader's decision")
    s.expect_held(a=30)


def _stale_refused(s: _Store) -> None:
    sink = s.open()
    s.apply(sink, [D("a", 40, 30)], (1, 0, 40), "a decision")
    s.apply(sink, [D("a", 35, 20)], (0, 1, 40), "an older leader's decision, late")
    s.expect_held(a=40)


def _duplicate_refused(s: _Store) -> None:
    sink = s.open()
    s.apply(sink, [D("a", 10, 5)], (1, 0, 10), "a decision")
    s.apply(sink, [D("a", 10, 5)], (0, 1, 10), "the same decision again")
    s.apply(sink, [D("b", 12, 5), D("b", 12, 5)], (1, 1, 12), "a decision twice in a batch")
    s.expect_held(a=10, b=12)


def _reordered_in_batch(s: _Store) -> None:
    sink = s.open()
    s.apply(sink, [D("a", 20, 5), D("a", 10, 5)], (1, 1, 20), "a batch newest first")
    s.expect_held(a=20)


def _reordered_across_batches(s: _Store) -> None:
    sink = s.open()
    s.apply(sink, [D("a", 10, 5), D("a", 30, 5)], (2, 0, 30), "two decisions")
    s.apply(sink, [D("a", 20, 5), D("b", 25, 5)], (1, 1, 30), "an older one, and another city")
    s.expect_held(a=30, b=25)


def _cursor_survives(s: _Store) -> None:
    first = s.open()
    s.apply(first, [D("a", 10, 5), D("b", 11, 5)], (2, 0, 11), "the batch before the crash")
    second = s.open(init=False)  # the first is left open, as a crashed relay leaves it
    s.expect_cursor(second, 11, "a new sink object on the same store")
    s.apply(second, [D("b", 11, 5), D("a", 12, 5), D("c", 13, 5)], (2, 1, 13),
            "the replay after the crash")
    second.close()
    s.expect_cursor(s.open(init=False), 13, "a sink object opened after a close")
    s.expect_held(a=12, b=11, c=13)


def _cursor_is_max(s: _Store) -> None:
    sink = s.open()
    s.apply(sink, [D("a", 50, 5)], (1, 0, 50), "a decision")
    s.apply(sink, [D("b", 40, 5)], (1, 0, 50), "another city's older revision")
    s.apply(sink, [D("a", 45, 5)], (0, 1, 50), "a stale decision")
    s.expect_cursor(sink, 50, "after a stale decision")


def _cities_independent(s: _Store) -> None:
    sink = s.open()
    # revisions are etcd's, global: a city's next decision has a higher one
    s.apply(sink, [D("a", 10, 5), D("b", 20, 5), D("c", 30, 5)], (3, 0, 30), "three cities")
    s.apply(sink, [D("b", 40, 5)], (1, 0, 40), "one city's next decision")
    s.apply(sink, [D("a", 35, 5)], (1, 0, 40), "a city's newer decision below the cursor")
    s.expect_held(a=35, b=40, c=30, d=None)


def _one_revision_many_cities(s: _Store) -> None:
    sink = s.open()
    # a worker commits a tick group in one transaction: several cities at one revision,
    # whose order ids may repeat from city to city
    batch = [D("a", 10, 5), D("b", 10, 5), D("c", 10, 7)]
    s.apply(sink, batch, (3, 0, 10), "three cities at one revision")
    s.apply(sink, batch[1:2], (0, 1, 10), "one of them again")
    s.apply(sink, [D("a", 12, 5), D("b", 12, 5)], (2, 0, 12), "two at the next revision")
    s.expect_held(a=12, b=12, c=10)


def _empty_batch(s: _Store) -> None:
    sink = s.open()
    s.apply(sink, [], (0, 0, 0), "an empty batch on a fresh store")
    s.apply(sink, [D("a", 10, 5)], (1, 0, 10), "a decision")
    s.apply(sink, [], (0, 0, 10), "an empty batch")
    s.expect_held(a=10)


def _overlapping_relays(s: _Store) -> None:
    stream = [D(city, 10 + 3 * i + k, 5) for i in range(10) for k, city in
              enumerate(("a", "b", "c"))]
    relays = [s.open(), s.open()]
    results: list[list[Applied]] = [[], []]
    errors: list[BaseException] = []

    def relay(index: int, size: int) -> None:
        try:
            for start in range(0, len(stream), size):
                results[index].append(relays[index].apply(stream[start:start + size]))
        except BaseException as exc:  # reported below, never lost on a thread
            errors.append(exc)

    threads = [threading.Thread(target=relay, args=(i, size), daemon=True)
               for i, size in enumerate((4, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if any(t.is_alive() for t in threads):
        raise AssertionError("two relays applying at once did not finish within 60s")
    if errors:
        raise errors[0]
    applied = sum(r.applied for rs in results for r in rs)
    refused = sum(r.refused for rs in results for r in rs)
    if applied > len(stream) or applied + refused != 2 * len(stream):
        raise AssertionError(f"two relays delivering the same {len(stream)} decisions at once: "
                      f"{applied} applied, {refused} refused (each at most once, "
                      f"{2 * len(stream)} in all)")
    last = stream[-3:]
    s.expect_held(**{d.city: d.revision for d in last})
    s.expect_cursor(relays[0], last[-1].revision, "after two relays")


def _bad_url(s: _Store) -> None:
    assert s.target.bad_url is not None
    try:
        s.target.sink_class(s.target.bad_url, namespace=s.target.namespace)
    except ConfigError:
        return
    raise AssertionError(f"constructing with the bad URL {s.target.bad_url!r} did not raise "
                  "ConfigError")


@dataclass(frozen=True)
class SinkCheck:
    """One promise, checked on a fresh store."""

    name: str
    run: Callable[[_Store], None]
    about: str = ""

    def __str__(self) -> str:
        return self.name


CHECKS: tuple[SinkCheck, ...] = (
    SinkCheck("newer-applied", _newer_applied, "newer revisions are applied"),
    SinkCheck("stale-refused", _stale_refused, "an older leader's late decision is refused"),
    SinkCheck("duplicate-refused", _duplicate_refused, "a repeat is refused, also in a batch"),
    SinkCheck("reordered-in-batch", _reordered_in_batch, "an older revision later in a batch"),
    SinkCheck("reordered-across-batches", _reordered_across_batches,
              "an older revision in a later batch"),
    SinkCheck("cursor-survives-crash", _cursor_survives,
              "a new sink object reports the cursor and takes the rest"),
    SinkCheck("cursor-is-max", _cursor_is_max, "the cursor never goes back"),
    SinkCheck("cities-independent", _cities_independent, "each city has its own revision"),
    SinkCheck("one-revision-many-cities", _one_revision_many_cities,
              "a batched commit: many cities, one revision"),
    SinkCheck("empty-batch", _empty_batch, "an empty batch changes nothing"),
    SinkCheck("overlapping-relays", _overlapping_relays,
              "two relays at once apply each revision at most once"),
    SinkCheck("bad-url", _bad_url, "a bad URL is a ConfigError (with SinkTarget.bad_url)"),
)


def sink_checks() -> list[SinkCheck]:
    """The checks, for ``pytest.mark.parametrize("check", sink_checks(), ids=str)``."""
    return list(CHECKS)


def run_check(target: SinkTarget, check: SinkCheck) -> list[str]:
    """The problems ``check`` finds (empty: it passed); never raises for the sink's faults."""
    if check.run is _bad_url and target.bad_url is None:
        return []
    problems: list[str] = []
    store: _Store | None = None
    try:
        store = _Store(target)
        check.run(store)
    except AssertionError as exc:  # a broken promise, in the check's own words
        problems.append(str(exc))
    except Exception as exc:  # the sink's fault, reported
        problems.append(_describe(exc))
    if store is not None:
        try:
            store.close()
        except Exception as exc:  # the sink's fault, reported
            problems.append(f"close() {_describe(exc)}")
    return problems


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"raised {type(exc).__name__}" + (f": {lines[0]}" if lines else "")


@dataclass
class SinkReport:
    """The outcome of :func:`run_sink_conformance`; problems read ``"check: problem"``."""

    sink: str
    problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def failed(self, check: str) -> bool:
        return any(p.startswith(f"{check}: ") for p in self.problems)

    def format(self) -> str:
        verdict = "OK" if self.ok else f"FAILED ({len(self.problems)} problems)"
        return "\n".join([f"sink conformance of {self.sink}: {verdict}",
                          *(f"  {p}" for p in self.problems)])


def run_sink_conformance(target: SinkTarget) -> SinkReport:
    """Run every check, each on a fresh store, and report."""
    report = SinkReport(target.sink_class.__name__)
    for check in CHECKS:
        if check.run is _bad_url and target.bad_url is None:
            continue
        problems = run_check(target, check)
        report.problems += [f"{check.name}: {p}" for p in problems]
        if not problems:
            report.passed.append(check.name)
    return report


def assert_sink_conformant(target: SinkTarget) -> SinkReport:
    """:func:`run_sink_conformance`, raising ``AssertionError`` with the report if it failed."""
    report = run_sink_conformance(target)
    if not report.ok:
        raise AssertionError(report.format())
    return report


def assert_check_passes(target: SinkTarget, check: SinkCheck) -> None:
    """:func:`run_check` for one parametrised check, raising ``AssertionError`` if it failed."""
    problems = run_check(target, check)
    if problems:
        raise AssertionError(f"{target.sink_class.__name__} fails {check.name}: "
                             + "; ".join(problems))
