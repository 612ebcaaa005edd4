"""Protobuf messages to and from the JSON stored in etcd.

Values use protobuf's canonical JSON mapping, so ``etcdctl get`` prints them readably
and any language can decode them. Decoding errors become one-line messages that name
the field, because they end up on a city's status for an operator to read.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from protos import dispatch_pb2 as pb

__all__ = ["decode", "encode"]

M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    if type(message) is pb.Decision:
        return json.dumps(_decision(message), separators=_SEPARATORS).encode()
    text: str = json_format.MessageToJson(message, indent=None, sort_keys=False)
    return text.encode()


# --- a fast path for the message written every tick ------------------------------------
#
# ``json_format`` walks a message field by field in Python; for a decision of 30 orders
# that was ~7 % of a worker's CPU per tick at 1,000 cities. This builds the same JSON
# object (protobuf's canonical mapping: lowerCamelCase names, fields at their default
# value left out, 64-bit integers as strings, Timestamps in RFC 3339, non-finite doubles
# as "NaN"/"Infinity"), which ``tests/test_codec.py`` checks against ``json_format`` on
# generated decisions. Add a field to ``Decision`` and that test fails until it is here.

_SEPARATORS = (", ", ": ")  # as MessageToJson(indent=None) writes


def _set(value: float) -> bool:
    """Whether a proto3 double differs from its default (``-0.0`` does)."""
    return value != 0 or math.copysign(1.0, value) < 0


def _double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _decision(d: pb.Decision) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if d.city:
        out["city"] = d.city
    if d.token:
        out["token"] = str(d.token)
    if d.worker_id:
        out["workerId"] = d.worker_id
    if d.solver:
        out["solver"] = d.solver
    if d.assignments:
        out["assignments"] = dict(d.assignments)
    if d.unassigned:
        out["unassigned"] = list(d.unassigned)
    if d.HasField("state_read_at"):
        out["stateReadAt"] = d.state_read_at.ToJsonString()
    if _set(d.solve_seconds):
        out["solveSeconds"] = _double(d.solve_seconds)
    if d.HasField("decided_at"):
        out["decidedAt"] = d.decided_at.ToJsonString()
    if d.tick:
        out["tick"] = str(d.tick)
    if d.details:
        out["details"] = [_assignment(a) for a in d.details]
    if _set(d.cost):
        out["cost"] = _double(d.cost)
    if d.lease_id:
        out["leaseId"] = d.lease_id
    if d.shadows:
        out["shadows"] = [_shadow(r) for r in d.shadows]
    return out


def _assignment(a: pb.Assignment) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.order_id:
        out["orderId"] = a.order_id
    if a.courier_id:
        out["courierId"] = a.courier_id
    if _set(a.pickup_eta_seconds):
        out["pickupEtaSeconds"] = _double(a.pickup_eta_seconds)
    return out


def _shadow(r: pb.ShadowResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.solver:
        out["solver"] = r.solver
    if _set(r.cost):
        out["cost"] = _double(r.cost)
    if _set(r.solve_seconds):
        out["solveSeconds"] = _double(r.solve_seconds)
    if r.assigned:
        out["assigned"] = r.assigned
    if r.unassigned:
        out["unassigned"] = r.unassigned
    if r.error:
        out["error"] = r.error
    return out


def decode(cls: type[M], data: bytes, *, what: str = "value") -> M:
    """Parse JSON into ``cls``; raise ``ValueError`` with a readable reason."""
    message = cls()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 text") from exc
    if not text.strip():
        raise ValueError(f"{what} is empty")
    try:
        json_format.Parse(text, message, ignore_unknown_fields=False)  # fills `message`
    except json_format.ParseError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not valid JSON"
        raise ValueError(f"{what} is malformed: {reason}") from exc
    result: M = message
    return result
