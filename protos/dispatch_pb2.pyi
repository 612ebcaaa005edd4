import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CitySettings(_message.Message):
    __slots__ = ("solver", "period_seconds", "enabled", "state_source", "params", "labels", "shadow_solvers", "require_labels", "prefer_labels", "max_state_age_seconds", "archive_state", "steady_pace")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RequireLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PreferLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    STATE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SOLVERS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_LABELS_FIELD_NUMBER: _ClassVar[int]
    PREFER_LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_STATE_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_STATE_FIELD_NUMBER: _ClassVar[int]
    STEADY_PACE_FIELD_NUMBER: _ClassVar[int]
    solver: str
    period_seconds: float
    enabled: bool
    state_source: str
    params: _struct_pb2.Struct
    labels: _containers.ScalarMap[str, str]
    shadow_solvers: _containers.RepeatedScalarFieldContainer[str]
    require_labels: _containers.ScalarMap[str, str]
    prefer_labels: _containers.ScalarMap[str, str]
    max_state_age_seconds: float
    archive_state: bool
    steady_pace: bool
    def __init__(self, solver: _Optional[str] = ..., period_seconds: _Optional[float] = ..., enabled: _Optional[bool] = ..., state_source: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., shadow_solvers: _Optional[_Iterable[str]] = ..., require_labels: _Optional[_Mapping[str, str]] = ..., prefer_labels: _Optional[_Mapping[str, str]] = ..., max_state_age_seconds: _Optional[float] = ..., archive_state: _Optional[bool] = ..., steady_pace: _Optional[bool] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "host", "pid", "version", "capacity", "labels", "admin_address", "lease_id", "started_at", "drained")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    host: str
    pid: int
    version: str
    capacity: float
    labels: _containers.ScalarMap[str, str]
    admin_address: str
    lease_id: str
    started_at: _timestamp_pb2.Timestamp
    drained: bool
    def __init__(self, worker_id: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., version: _Optional[str] = ..., capacity: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ..., admin_address: _Optional[str] = ..., lease_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., drained: _Optional[bool] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("order_id", "courier_id", "pickup_eta_seconds")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    COURIER_ID_FIELD_NUMBER: _ClassVar[int]
    PICKUP_ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    courier_id: str
    pickup_eta_seconds: float
    def __init__(self, order_id: _Optional[str] = ..., courier_id: _Optional[str] = ..., pickup_eta_seconds: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("city", "token", "worker_id", "solver", "assignments", "unassigned", "state_read_at", "solve_seconds", "decided_at", "tick", "details", "cost", "lease_id", "shadows", "state_ref")
    class AssignmentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CITY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    UNASSIGNED_FIELD_NUMBER: _ClassVar[int]
    STATE_READ_AT_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    STATE_REF_FIELD_NUMBER: _ClassVar[int]
    city: str
    token: int
    worker_id: str
    solver: str
    assignments: _containers.ScalarMap[str, str]
    unassigned: _containers.RepeatedScalarFieldContainer[str]
    state_read_at: _timestamp_pb2.Timestamp
    solve_seconds: float
    decided_at: _timestamp_pb2.Timestamp
    tick: int
    details: _containers.RepeatedCompositeFieldContainer[Assignment]
    cost: float
    lease_id: str
    shadows: _containers.RepeatedCompositeFieldContainer[ShadowResult]
    state_ref: StateRef
    def __init__(self, city: _Optional[str] = ..., token: _Optional[int] = ..., worker_id: _Optional[str] = ..., solver: _Optional[str] = ..., assignments: _Optional[_Mapping[str, str]] = ..., unassigned: _Optional[_Iterable[str]] = ..., state_read_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., solve_seconds: _Optional[float] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tick: _Optional[int] = ..., details: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., cost: _Optional[float] = ..., lease_id: _Optional[str] = ..., shadows: _Optional[_Iterable[_Union[ShadowResult, _Mapping]]] = ..., state_ref: _Optional[_Union[StateRef, _Mapping]] = ...) -> None: ...

class StateRef(_message.Message):
    __slots__ = ("source", "revision", "seed", "tick", "orders", "couriers", "archive_id", "budget_seconds")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    COURIERS_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    source: str
    revision: int
    seed: int
    tick: int
    orders: int
    couriers: int
    archive_id: str
    budget_seconds: float
    def __init__(self, source: _Optional[str] = ..., revision: _Optional[int] = ..., seed: _Optional[int] = ..., tick: _Optional[int] = ..., orders: _Optional[int] = ..., couriers: _Optional[int] = ..., archive_id: _Optional[str] = ..., budget_seconds: _Optional[float] = ...) -> None: ...

class ShadowResult(_message.Message):
    __slots__ = ("solver", "cost", "solve_seconds", "assigned", "unassigned", "error")
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    UNASSIGNED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    solver: str
    cost: float
    solve_seconds: float
    assigned: int
    unassigned: int
    error: str
    def __init__(self, solver: _Optional[str] = ..., cost: _Optional[float] = ..., solve_seconds: _Optional[float] = ..., assigned: _Optional[int] = ..., unassigned: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class CityStatus(_message.Message):
    __slots__ = ("city", "worker_id", "token", "state", "last_error", "error_since", "consecutive_failures", "updated_at", "retry_in_seconds")
    CITY_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_SINCE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    RETRY_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    city: str
    worker_id: str
    token: int
    state: str
    last_error: str
    error_since: _timestamp_pb2.Timestamp
    consecutive_failures: int
    updated_at: _timestamp_pb2.Timestamp
    retry_in_seconds: float
    def __init__(self, city: _Optional[str] = ..., worker_id: _Optional[str] = ..., token: _Optional[int] = ..., state: _Optional[str] = ..., last_error: _Optional[str] = ..., error_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consecutive_failures: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retry_in_seconds: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("id", "pickup", "dropoff", "ready_in_seconds", "size")
    ID_FIELD_NUMBER: _ClassVar[int]
    PICKUP_FIELD_NUMBER: _ClassVar[int]
    DROPOFF_FIELD_NUMBER: _ClassVar[int]
    READY_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    id: str
    pickup: Point
    dropoff: Point
    ready_in_seconds: float
    size: int
    def __init__(self, id: _Optional[str] = ..., pickup: _Optional[_Union[Point, _Mapping]] = ..., dropoff: _Optional[_Union[Point, _Mapping]] = ..., ready_in_seconds: _Optional[float] = ..., size: _Optional[int] = ...) -> None: ...

class Courier(_message.Message):
    __slots__ = ("id", "position", "speed", "capacity", "vehicle")
    ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    position: Point
    speed: float
    capacity: int
    vehicle: str
    def __init__(self, id: _Optional[str] = ..., position: _Optional[_Union[Point, _Mapping]] = ..., speed: _Optional[float] = ..., capacity: _Optional[int] = ..., vehicle: _Optional[str] = ...) -> None: ...

class StateSnapshot(_message.Message):
    __slots__ = ("orders", "couriers", "taken_at")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    COURIERS_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[Order]
    couriers: _containers.RepeatedCompositeFieldContainer[Courier]
    taken_at: _timestamp_pb2.Timestamp
    def __init__(self, orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., couriers: _Optional[_Iterable[_Union[Courier, _Mapping]]] = ..., taken_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RelayStatus(_message.Message):
    __slots__ = ("sink", "relay_id", "active", "cursor", "lag_revisions", "lag_seconds", "applied", "refused", "gaps", "last_error", "updated_at", "host", "pid")
    SINK_FIELD_NUMBER: _ClassVar[int]
    RELAY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LAG_REVISIONS_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    sink: str
    relay_id: str
    active: bool
    cursor: int
    lag_revisions: int
    lag_seconds: float
    applied: int
    refused: int
    gaps: int
    last_error: str
    updated_at: _timestamp_pb2.Timestamp
    host: str
    pid: int
    def __init__(self, sink: _Optional[str] = ..., relay_id: _Optional[str] = ..., active: _Optional[bool] = ..., cursor: _Optional[int] = ..., lag_revisions: _Optional[int] = ..., lag_seconds: _Optional[float] = ..., applied: _Optional[int] = ..., refused: _Optional[int] = ..., gaps: _Optional[int] = ..., last_error: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class WorkerLoad(_message.Message):
    __slots__ = ("worker_id", "cities", "total", "measured_at", "waiting")
    class CitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class WaitingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CITIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    cities: _containers.ScalarMap[str, float]
    total: float
    measured_at: _timestamp_pb2.Timestamp
    waiting: _containers.ScalarMap[str, str]
    def __init__(self, worker_id: _Optional[str] = ..., cities: _Optional[_Mapping[str, float]] = ..., total: _Optional[float] = ..., measured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., waiting: _Optional[_Mapping[str, str]] = ...) -> None: ...
