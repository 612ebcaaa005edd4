"""The stored JSON: the fast decision encoder writes what protobuf's own mapping writes."""

from __future__ import annotations

import json

from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.codec import decode, encode
from protos import dispatch_pb2 as pb

text = st.text(max_size=12)
doubles = st.floats(allow_nan=True, allow_infinity=True)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
nanos = st.integers(min_value=-62135596800 * 10**9, max_value=253402300799 * 10**9)


@st.composite
def decisions(draw: st.DrawFn) -> pb.Decision:
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
    return d


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
                                             assigned=1, unassigned=1, error="e")])
    d.state_read_at.FromNanoseconds(1)
    d.decided_at.FromNanoseconds(2)
    assert {f.name for f, _ in d.ListFields()} == {f.name for f in d.DESCRIPTOR.fields}
    ours = json.loads(encode(d))
    assert ours == json.loads(json_format.MessageToJson(d, indent=None))
    assert decode(pb.Decision, encode(d)) == d
    for nested in (pb.Assignment, pb.ShadowResult):
        assert len(nested.DESCRIPTOR.fields) == len(ours["details" if nested is
                                                         pb.Assignment else "shadows"][0])
