import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CityState(_message.Message):
    __slots__ = ("city", "role", "token", "last_error", "consecutive_failures", "last_decision_at")
    CITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_DECISION_AT_FIELD_NUMBER: _ClassVar[int]
    city: str
    role: str
    token: int
    last_error: str
    consecutive_failures: int
    last_decision_at: _timestamp_pb2.Timestamp
    def __init__(self, city: _Optional[str] = ..., role: _Optional[str] = ..., token: _Optional[int] = ..., last_error: _Optional[str] = ..., consecutive_failures: _Optional[int] = ..., last_decision_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("worker_id", "lease_id", "lease_ttl_remaining", "drained", "cities", "namespace", "version")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_REMAINING_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    CITIES_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    lease_id: str
    lease_ttl_remaining: float
    drained: bool
    cities: _containers.RepeatedCompositeFieldContainer[CityState]
    namespace: str
    version: str
    def __init__(self, worker_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., lease_ttl_remaining: _Optional[float] = ..., drained: _Optional[bool] = ..., cities: _Optional[_Iterable[_Union[CityState, _Mapping]]] = ..., namespace: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("wait_seconds",)
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    wait_seconds: float
    def __init__(self, wait_seconds: _Optional[float] = ...) -> None: ...

class UndrainRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainReply(_message.Message):
    __slots__ = ("worker_id", "drained", "cities_led", "message")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    CITIES_LED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    drained: bool
    cities_led: _containers.RepeatedScalarFieldContainer[str]
    message: str
    def __init__(self, worker_id: _Optional[str] = ..., drained: _Optional[bool] = ..., cities_led: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ...) -> None: ...
