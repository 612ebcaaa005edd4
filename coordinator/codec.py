"""Protobuf messages to and from the JSON stored in etcd.

Values use protobuf's canonical JSON mapping, so ``etcdctl get`` prints them readably
and any language can decode them. Decoding errors become one-line messages that name
the field, because they end up on a city's status for an operator to read.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from protos import dispatch_pb2 as pb

__all__ = ["assigned", "decode", "encode", "stored_decision"]

M = TypeVar("M", bound=Message)


def assigned(decision: pb.Decision) -> dict[str, str]:
    """Order id -> courier id of a decision, whichever version wrote it: the pairs of
    its ``details``, or, for a decision written before the pairs stopped being repeated
    there, its ``assignments`` map."""
    if decision.details:
        return {a.order_id: a.courier_id for a in decision.details}
    return dict(decision.assignments)


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
    if d.HasField("state_ref"):
        out["stateRef"] = _state_ref(d.state_ref)
    return out


def _state_ref(r: pb.StateRef) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.source:
        out["source"] = r.source
    if r.revision:
        out["revision"] = str(r.revision)
    if r.seed:
        out["seed"] = str(r.seed)
    if r.tick:
        out["tick"] = str(r.tick)
    if r.orders:
        out["orders"] = r.orders
    if r.couriers:
        out["couriers"] = r.couriers
    if r.archive_id:
        out["archiveId"] = r.archive_id
    if _set(r.budget_seconds):
        out["budgetSeconds"] = _double(r.budget_seconds)
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


# --- and back: the message a relay reads for every accepted decision --------------------
#
# ``json_format.Parse`` walks a message field by field in Python: most of a relay's CPU
# (docs/benchmarks.md). A decision in the exact form :func:`_decision` writes is read
# with ``json.loads`` and built field by field; anything else (an unknown or misspelt
# field, another type, a value ``json_format`` would reject or read differently) falls
# back to ``json_format``, which gives the same message or the same error as before.

_STRINGS = {"city": "city", "workerId": "worker_id", "solver": "solver",
            "leaseId": "lease_id"}
_INT64S = {"token": "token", "tick": "tick"}
_DOUBLES = {"solveSeconds": "solve_seconds", "cost": "cost"}
_TIMESTAMPS = {"stateReadAt": "state_read_at", "decidedAt": "decided_at"}
_ASSIGNMENT = {"orderId", "courierId", "pickupEtaSeconds"}
_SHADOW_STRINGS = {"solver": "solver", "error": "error"}
_SHADOW_DOUBLES = {"cost": "cost", "solveSeconds": "solve_seconds"}
_SHADOW_INT32S = {"assigned": "assigned", "unassigned": "unassigned"}
_REF_INT64S = {"revision": "revision", "seed": "seed", "tick": "tick"}
_REF_INT32S = {"orders": "orders", "couriers": "couriers"}
#: why the fast path let go (never shown: ``json_format`` then reads the value)
_UNUSUAL = "not in the stored form"


def _str(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(_UNUSUAL)
    return value


def _int64(value: Any) -> int:
    # what _decision writes: a decimal string of an int64, no sign games or spaces
    if type(value) is not str or not value.isdigit() or len(value) > 18:
        raise ValueError(_UNUSUAL)
    return int(value)


def _float(value: Any) -> float:
    # a bare NaN or 1e400 (inf) is Python's JSON: json_format refuses it, PostgreSQL too
    if (type(value) is float and math.isfinite(value)) or (
            type(value) is int and abs(value) < 2**53):
        return float(value)
    raise ValueError(_UNUSUAL)


#: what ``Timestamp.ToJsonString`` writes: UTC, "Z", 0, 3, 6 or 9 fractional digits
_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{3}|\d{6}|\d{9}))?Z",
                    re.ASCII)
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def _stamp(value: Any) -> tuple[int, int]:
    """``Timestamp.FromJsonString`` for the form it writes, without ``strptime``: seconds
    and nanos; a date that is not one (``date`` refuses it) or any other form is a
    ``ValueError``."""
    match = _STAMP.fullmatch(_str(value))
    if match is None:
        raise ValueError(_UNUSUAL)
    year, month, day, hour, minute, second, fraction = match.groups()
    hh, mm, ss = int(hour), int(minute), int(second)
    if hh > 23 or mm > 59 or ss > 59:
        raise ValueError(_UNUSUAL)
    days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
    return days * 86400 + hh * 3600 + mm * 60 + ss, int(fraction.ljust(9, "0")) if fraction else 0


_ONLY_STR = frozenset({str})


def _check_decision(obj: Any) -> None:
    """``ValueError`` unless ``obj`` is a decision in the exact form :func:`_decision`
    writes (what :func:`_build_decision` may then read without a second look)."""
    if type(obj) is not dict:
        raise ValueError(_UNUSUAL)
    for key, value in obj.items():
        if key in _STRINGS:
            _str(value)
        elif key in _INT64S:
            _int64(value)
        elif key in _DOUBLES:
            _float(value)
        elif key in _TIMESTAMPS:
            _stamp(value)
        elif key == "assignments":
            if type(value) is not dict or not _ONLY_STR.issuperset(map(type, value.values())):
                raise ValueError(_UNUSUAL)
        elif key == "unassigned":
            if type(value) is not list or not _ONLY_STR.issuperset(map(type, value)):
                raise ValueError(_UNUSUAL)
        elif key == "details":  # the bulk of a decision: checked inline
            if type(value) is not list:
                raise ValueError(_UNUSUAL)
            for item in value:
                if (type(item) is not dict or not _ASSIGNMENT.issuperset(item)
                        or type(item.get("orderId", "")) is not str
                        or type(item.get("courierId", "")) is not str):
                    raise ValueError(_UNUSUAL)
                eta = item.get("pickupEtaSeconds", 0.0)
                if type(eta) is not float or not math.isfinite(eta):
                    _float(eta)
        elif key == "shadows":
            if type(value) is not list:
                raise ValueError(_UNUSUAL)
            for item in value:
                _check_shadow(item)
        elif key == "stateRef":
            _check_state_ref(value)
        else:
            raise ValueError(_UNUSUAL)


def _int32(value: Any) -> int:
    if type(value) is not int or not -(2**31) <= value < 2**31:
        raise ValueError(_UNUSUAL)
    return value


def _check_state_ref(obj: Any) -> None:
    if type(obj) is not dict:
        raise ValueError(_UNUSUAL)
    for key, value in obj.items():
        if key in ("source", "archiveId"):
            _str(value)
        elif key in _REF_INT64S:
            _int64(value)
        elif key in _REF_INT32S:
            _int32(value)
        elif key == "budgetSeconds":
            _float(value)
        else:
            raise ValueError(_UNUSUAL)


def _build_state_ref(r: pb.StateRef, obj: dict[str, Any]) -> None:
    """A state reference that passed :func:`_check_state_ref`."""
    r.SetInParent()  # present even when every field is at its default ({})
    for key, value in obj.items():
        if key == "source":
            r.source = value
        elif key == "archiveId":
            r.archive_id = value
        elif key in _REF_INT64S:
            setattr(r, _REF_INT64S[key], int(value))
        elif key in _REF_INT32S:
            setattr(r, _REF_INT32S[key], value)
        else:  # "budgetSeconds"
            r.budget_seconds = float(value)


def _check_shadow(obj: Any) -> None:
    if type(obj) is not dict:
        raise ValueError(_UNUSUAL)
    for key, value in obj.items():
        if key in _SHADOW_STRINGS:
            _str(value)
        elif key in _SHADOW_DOUBLES:
            _float(value)
        elif key in _SHADOW_INT32S:
            _int32(value)
        else:
            raise ValueError(_UNUSUAL)


#: a shadow result's JSON names and fields (all checked by ``_check_shadow``)
_SHADOW_FIELDS = {**_SHADOW_STRINGS, **_SHADOW_DOUBLES, **_SHADOW_INT32S}


def _build_decision(obj: dict[str, Any]) -> pb.Decision:
    """The message of a decision that passed :func:`_check_decision`."""
    d = pb.Decision()
    for key, value in obj.items():
        if key in _STRINGS:
            setattr(d, _STRINGS[key], value)
        elif key in _INT64S:
            setattr(d, _INT64S[key], int(value))
        elif key in _DOUBLES:
            setattr(d, _DOUBLES[key], float(value))
        elif key in _TIMESTAMPS:
            stamp = getattr(d, _TIMESTAMPS[key])
            stamp.seconds, stamp.nanos = _stamp(value)
        elif key == "assignments":
            d.assignments.update(value)
        elif key == "unassigned":
            d.unassigned.extend(value)
        elif key == "details":
            for item in value:
                d.details.add(order_id=item.get("orderId", ""),
                              courier_id=item.get("courierId", ""),
                              pickup_eta_seconds=float(item.get("pickupEtaSeconds", 0.0)))
        elif key == "stateRef":
            _build_state_ref(d.state_ref, value)
        else:  # "shadows"
            for item in value:
                d.shadows.add(**{_SHADOW_FIELDS[k]: v for k, v in item.items()})
    return d


def stored_decision(data: bytes) -> dict[str, Any] | None:
    """The JSON object of a decision stored in the exact form :func:`encode` writes, or
    None for anything else (not UTF-8, not JSON, another form, another type): a reader
    that needs only the decision's JSON (a sink that stores it) checks it this way, at a
    fraction of the cost of :func:`decode`, and decodes only what returns None."""
    try:
        obj = json.loads(data.decode("utf-8"))
        _check_decision(obj)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
        return None
    checked: dict[str, Any] = obj
    return checked


def decode(cls: type[M], data: bytes, *, what: str = "value") -> M:
    """Parse JSON into ``cls``; raise ``ValueError`` with a readable reason."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 text") from exc
    if not text.strip():
        raise ValueError(f"{what} is empty")
    if cls is pb.Decision:
        try:
            obj = json.loads(text)
            _check_decision(obj)
        except (ValueError, RecursionError):  # not in the stored form: protobuf decides
            pass
        else:
            fast: M = _build_decision(obj)
            return fast
    message = cls()
    try:
        json_format.Parse(text, message, ignore_unknown_fields=False)  # fills `message`
    except json_format.ParseError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not valid JSON"
        raise ValueError(f"{what} is malformed: {reason}") from exc
    result: M = message
    return result
