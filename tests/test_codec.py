"""The stored JSON: the fast decision encoder writes what protobuf's own mapping writes."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.codec import decode, encode, stored_decision
from protos import dispatch_pb2 as pb

text = st.text(max_size=12)
doubles = st.floats(allow_nan=True, allow_infinity=True)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
nanos = st.integers(min_value=-62135596800 * 10**9, max_value=253402300799 * 10**9)


@st.composite
def decisions(draw: st.DrawFn, doubles: st.SearchStrategy[float] = doubles,
              int64: st.SearchStrategy[int] = int64) -> pb.Decision:
    d = pb.Decision(
        city=draw(text), token=draw(int64), worker_id=draw(text), solver=draw(text),
        assignments=draw(st.dictionaries(text, text, max_size=5)),
        unassigned=draw(st.lists(text, max_size=5)), solve_seconds=draw(doubles),
        tick=draw(int64), cost=draw(doubles), lease_id=draw(text),
        details=[pb.Assignment(order_id=o, courier_id=c, pickup_eta_seconds=e)
                 for o, c, e in draw(st.lists(st.tuples(text, text, doubles), max_size=4))],
        shadows=[pb.ShadowResult(solver=n, cost=c, solve_seconds=s, assigned=a,
                                 unassigned=u, error=e)
                 for n, c, s, a, u, e in draw(st.lists(
                     st.tuples(text, doubles, doubles, int32, int32, text), max_size=3))],
    )
    for field in ("state_read_at", "decided_at"):
        value = draw(st.none() | nanos)
        if value is not None:
            getattr(d, field).FromNanoseconds(value)
    if draw(st.booleans()):
        d.state_ref.SetInParent()
        d.state_ref.MergeFrom(pb.StateRef(
            source=draw(text), revision=draw(int64), seed=draw(int64), tick=draw(int64),
            orders=draw(int32), couriers=draw(int32), archive_id=draw(text),
            budget_seconds=draw(doubles)))
    return d


#: decisions as workers write them (tokens and ticks count up, costs are finite): the
#: form the fast path reads, so that changing one field tries it rather than the fallback
usual_decisions = decisions(doubles=st.floats(allow_nan=False, allow_infinity=False),
                            int64=st.integers(min_value=0, max_value=10**15))


def _same(a: object, b: object) -> bool:
    # NaN != NaN: compare the JSON text of each value instead
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(decisions())
def test_a_decision_is_encoded_as_protobufs_json_mapping_encodes_it(d: pb.Decision) -> None:
    ours = json.loads(encode(d))
    reference = json.loads(json_format.MessageToJson(d, indent=None))
    assert _same(ours, reference)


def test_every_decision_field_is_covered() -> None:
    """A field added to the proto must be added to the fast encoder too."""
    d = pb.Decision(city="c", token=1, worker_id="w", solver="s", assignments={"o": "c"},
                    unassigned=["o2"], solve_seconds=0.5, tick=2, cost=3.0, lease_id="a",
                    details=[pb.Assignment(order_id="o", courier_id="c",
                                           pickup_eta_seconds=1.0)],
                    shadows=[pb.ShadowResult(solver="x", cost=1.0, solve_seconds=0.1,
                                             assigned=1, unassigned=1, error="e")],
                    state_ref=pb.StateRef(source="etcd", revision=1, seed=2, tick=3, orders=4,
                                          couriers=5, archive_id="a", budget_seconds=0.5))
    d.state_read_at.FromNanoseconds(1)
    d.decided_at.FromNanoseconds(2)
    assert {f.name for f, _ in d.ListFields()} == {f.name for f in d.DESCRIPTOR.fields}
    ours = json.loads(encode(d))
    assert ours == json.loads(json_format.MessageToJson(d, indent=None))
    assert decode(pb.Decision, encode(d)) == d
    for nested in (pb.Assignment, pb.ShadowResult):
        assert len(nested.DESCRIPTOR.fields) == len(ours["details" if nested is
                                                         pb.Assignment else "shadows"][0])
    assert len(pb.StateRef.DESCRIPTOR.fields) == len(ours["stateRef"])


def _parsed(data: bytes) -> pb.Decision | str:
    """What protobuf's own parser makes of ``data``: the message, or that it refused."""
    try:
        message = pb.Decision()
        json_format.Parse(data.decode(), message)
        return message
    except json_format.ParseError:
        return "refused"


def _decoded(data: bytes) -> pb.Decision | str:
    try:
        return decode(pb.Decision, data)
    except ValueError:
        return "refused"


def _same_message(a: pb.Decision | str, b: pb.Decision | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return _same(json.loads(encode(a)), json.loads(encode(b)))


@settings(max_examples=150, deadline=None)
@given(decisions() | usual_decisions)
def test_a_stored_decision_is_decoded_as_protobufs_own_parser_decodes_it(
        d: pb.Decision) -> None:
    data = encode(d)
    assert _same_message(_decoded(data), _parsed(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | doubles
    | st.text(max_size=8) | st.sampled_from(["1", "-3", "1e3", "NaN", "2026-12-02T10:00:00Z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6)
field_names = st.sampled_from([
    "city", "token", "workerId", "worker_id", "solver", "assignments", "unassigned",
    "stateReadAt", "solveSeconds", "decidedAt", "tick", "details", "cost", "leaseId",
    "shadows", "stateRef", "nosuchfield"])


@settings(max_examples=200, deadline=None)
@given(usual_decisions, st.dictionaries(field_names, json_values, max_size=3))
def test_an_odd_value_is_decoded_or_refused_exactly_as_protobufs_parser_would(
        d: pb.Decision, odd: dict[str, object]) -> None:
    """The fast path reads only the form ``encode`` writes; for anything else protobuf's
    parser decides, so a malformed value is refused the same way."""
    data = json.dumps(json.loads(encode(d)) | odd).encode()
    assert _same_message(_decoded(data), _parsed(data))


@pytest.mark.parametrize("stamp", [
    "2026-12-02T10:00:00Z", "2026-12-02T10:00:00.123Z", "2026-12-02T10:00:00.123456Z",
    "2026-12-02T10:00:00.123456789Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
    "1969-12-31T23:59:59.5Z", "2026-12-02T10:00:00.12Z", "2026-12-02T10:00:00.1234567890Z",
    "2026-02-30T10:00:00Z", "2026-13-01T10:00:00Z", "2026-12-02T24:00:00Z",
    "2026-12-02T10:60:00Z", "2016-12-31T23:59:60Z", "2026-12-02T10:00:00z",
    "2026-12-02T10:00:00+01:00", "2026-12-02t10:00:00Z", "0000-01-01T00:00:00Z",
    "2026-12-02T10:00:00", "\u0662026-12-02T10:00:00Z", " 2026-12-02T10:00:00Z"])
def test_a_timestamp_is_read_exactly_as_protobufs_parser_reads_it(stamp: str) -> None:
    data = json.dumps({"city": "paris", "decidedAt": stamp, "stateReadAt": stamp}).encode()
    assert _same_message(_decoded(data), _parsed(data))


def test_a_decision_in_the_stored_form_is_read_without_protobufs_parser(
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = pb.Decision(city="paris", token=7, worker_id="w1", solver="greedy",
                    assignments={"o1": "c1"}, tick=3, cost=1.5,
                    details=[pb.Assignment(order_id="o1", courier_id="c1",
                                           pickup_eta_seconds=60.0)])
    d.decided_at.FromNanoseconds(1_700_000_000_123_456_000)
    data = encode(d)

    def parse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the slow parser was used")

    monkeypatch.setattr(json_format, "Parse", parse)
    assert decode(pb.Decision, data) == d


@settings(max_examples=150, deadline=None)
@given(decisions() | usual_decisions)
def test_a_stored_decision_has_finite_numbers_and_decodes_as_protobuf_would(
        d: pb.Decision) -> None:
    """A sink may hand a stored decision to any JSON reader as it is: a non-finite double
    is written as a string, which ``stored_decision`` refuses (protobuf then decides)."""
    data = encode(d)
    numbers = [d.solve_seconds, d.cost, *(a.pickup_eta_seconds for a in d.details),
               *(x for r in d.shadows for x in (r.cost, r.solve_seconds))]
    checked = stored_decision(data)
    if checked is not None:
        assert all(math.isfinite(x) for x in numbers)
        assert checked == json.loads(data)
        assert _same_message(decode(pb.Decision, data), _parsed(data))


@settings(max_examples=100, deadline=None)
@given(usual_decisions)
def test_a_decision_as_workers_write_it_is_a_stored_decision(d: pb.Decision) -> None:
    assert stored_decision(encode(d)) == json.loads(encode(d))


@pytest.mark.parametrize("data", [
    b'{"cost": 1e400}', b'{"cost": NaN}', b'{"cost": -Infinity}', b'{"cost": "NaN"}',
    b'{"worker_id": "w1"}', b'{"token": 7}', b'["city"]', b'\xff', b'', b'{"details": [1]}'])
def test_anything_else_is_not_a_stored_decision(data: bytes) -> None:
    assert stored_decision(data) is None
